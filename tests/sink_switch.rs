//! `dmix-stat --sink SPEC` moves a running server to another sink: through the real binaries,
//! with servers playing into other servers through the ALSA plugin (a paced ALSA sink
//! without a sound card, as in alsa_plugin.rs), and in freewheel between two WAV files.

use nix::sys::signal::Signal;

use crate::alsa_plugin::plugin_env_with;
use crate::util::*;

/// The downstream server's device buffer, frames: deep enough (170 ms) that a loaded machine
/// (the suite runs tests side by side) does not underrun an upstream server, as in
/// sinks.rs: these tests check the audio bit for bit.
const DEVICE_BUFFER: &str = "8192";

/// Two upstream servers, each rendering to a WAV file, that a downstream server can play
/// into through the plugin (PCMs up1 and up2).
fn two_upstreams() -> (Env, Proc, Proc) {
    let env = plugin_env_with("pcm.up1 { type dmixrs server \"up1\" }\npcm.up2 { type dmixrs server \"up2\" }");
    let u1 = env.serve(&["--name", "up1", "--sink", "wav:up1.wav"]);
    let u2 = env.serve(&["--name", "up2", "--sink", "wav:up2.wav"]);
    (env, u1, u2)
}

/// Stops a server (SIGTERM) and checks it ended well.
fn stop(mut server: Proc) {
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
}

/// Where `part`, a render that heard a stretch of `want` and silence around it, heard it:
/// the stretch `want[from..to]` such that `part` is silence, then exactly that stretch, then
/// silence. `from` is given (where the previous part stopped); the stretch may begin with
/// zero samples of `want` that cannot be told from the silence before it.
fn heard_stretch(part: &[i32], want: &[i32], from: usize, what: &str) -> usize {
    let first = part.iter().position(|&v| v != 0).unwrap_or_else(|| panic!("{what} heard nothing"));
    let lead = want[from..].iter().position(|&v| v != 0).expect("the tone is not silent to its end");
    let start = from + lead;
    let last = part.iter().rposition(|&v| v != 0).expect("non-silent") + 1;
    let len = last - first;
    assert!(start + len <= want.len(), "{what} heard {len} samples from {start}: more than the tone holds");
    if let Some(i) = (0..len).find(|&i| part[first + i] != want[start + i]) {
        panic!("{what}: sample {i} of what it heard differs from the tone's sample {} ({} heard)", start + i, len);
    }
    start + len
}

/// The required switch: a downstream server playing a 3 s tone into U1 is moved to U2
/// half-way by `dmix-stat --sink alsa:up2`. dmix-stat prints one line and exits 0, the
/// player never notices and exits 0, the server now lists alsa:up2 first and plays on it;
/// U1 heard the tone's start and U2 the rest, each sample exactly once: the old device
/// played out what it held, the new one started where it stopped.
#[test]
fn sink_switch_moves_a_playing_server_to_another_device() {
    let (env, u1, u2) = two_upstreams();
    let down = env.serve(&["--name", "down", "--sink", "alsa:up1", "--device-buffer", DEVICE_BUFFER]);
    let tone = signal(3 * 48000, 2, 440.0, 0.3, 61);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let mut player = env.spawn("dmix-play", &["-D", "down", "tone.wav"]);
    wait_for_clients(&env, "down", "play", 1);
    // One second into the tone (the server's clock is U1's, through the plugin).
    let at = stat_conn(&env, "down").ring().hw_ptr() + 48000;
    wait_hw_ptr(&env, "down", at);
    let r = env.run("dmix-stat", &["-D", "down", "--sink", "alsa:up2"]);
    assert!(r.status.success(), "dmix-stat: {}", r.stderr);
    assert_eq!(r.stdout, "sink: alsa:up2 (was alsa:up1)\n");
    let stat = stat_conn(&env, "down");
    let s = dmix::stat::snapshot(&stat, &env.socket("down")).unwrap();
    assert_eq!((s.server.sink.as_str(), s.server.sink_state.as_str()), ("alsa:up2", "running"));
    let list: Vec<(&str, &str)> = s.server.sinks.iter().map(|e| (e.name.as_str(), e.state.as_str())).collect();
    assert_eq!(list, [("alsa:up2", "in use"), ("alsa:up1", "fallback")]);
    assert_eq!(s.server.sink_losses, 0, "a switch is not a loss");
    assert!(s.clients.iter().any(|c| c.role == "play"), "the player was dropped by the switch");
    // The player is still mid-tone: the switch came before its end.
    assert!(player.exited().is_none(), "the tone ended before the switch; the test did not switch mid-stream");
    let played = player.wait();
    assert!(played.success(), "dmix-play: {}", player.finished_stderr());
    drop(stat);
    stop(down);
    stop(u1);
    stop(u2);
    let want: Vec<i32> = tone.iter().map(|&v| i32::from(v)).collect();
    let (_, got1) = read_wav(&env.path("up1.wav"));
    let (_, got2) = read_wav(&env.path("up2.wav"));
    let split = heard_stretch(&got1, &want, 0, "U1");
    assert!(split >= 48000, "U1 heard only {split} samples, not the half second before the switch");
    assert!(split < want.len(), "U1 heard the whole tone: the switch did nothing");
    let end = heard_stretch(&got2, &want, split, "U2");
    assert_eq!(end, want.len(), "U2 did not hear the tone to its end");
}

/// A sink that will not open changes nothing: dmix-stat exits 9 with one line naming the
/// sink and the one that plays on; the server keeps playing on the old sink (hw_ptr
/// advances, the status still names it first) and the player neither notices nor loses a
/// sample. A malformed spec, or one too long for the request, is exit 3 with one line, and
/// switching to the sink in use changes nothing.
#[test]
fn sink_switch_to_a_sink_that_will_not_open_leaves_the_old_one_playing() {
    let (env, u1, u2) = two_upstreams();
    let down = env.serve(&["--name", "down", "--sink", "alsa:up1", "--device-buffer", DEVICE_BUFFER]);
    let tone = signal(2 * 48000, 2, 440.0, 0.3, 62);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let mut player = env.spawn("dmix-play", &["-D", "down", "tone.wav"]);
    wait_for_clients(&env, "down", "play", 1);
    let stat = stat_conn(&env, "down");
    wait_hw_ptr(&env, "down", stat.ring().hw_ptr() + 4800);
    let r = env.run("dmix-stat", &["-D", "down", "--sink", "alsa:nosuchpcm"]);
    assert_eq!(r.status.code(), Some(9), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("dmix-stat: alsa:nosuchpcm: "), "{}", r.stderr);
    assert!(r.stderr.trim_end().ends_with("; alsa:up1 plays on"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    let hw = stat.ring().hw_ptr();
    wait_hw_ptr(&env, "down", hw + 4800);
    let long = format!("wav:/{}.wav", "x".repeat(200));
    for (spec, why) in [
        ("pulse:x", "sink 'pulse:x': use alsa:PCM, wav:PATH or null"),
        ("wav:", "no path after 'wav:'"),
        // The request holds 128 bytes: dmix-stat refuses more rather than cut a path short.
        (long.as_str(), "longer than 128 bytes"),
    ] {
        let r = env.run("dmix-stat", &["-D", "down", "--sink", spec]);
        assert_eq!(r.status.code(), Some(3), "{spec}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(why), "{spec}: {}", r.stderr);
    }
    let r = env.run("dmix-stat", &["-D", "down", "--sink", "alsa:up1"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout, "sink: alsa:up1 (already in use)\n");
    let s = dmix::stat::snapshot(&stat, &env.socket("down")).unwrap();
    assert_eq!((s.server.sink.as_str(), s.server.sink_state.as_str()), ("alsa:up1", "running"));
    assert_eq!(s.server.sinks.len(), 1, "{:?}", s.server.sinks);
    assert!(player.exited().is_none(), "the tone ended during the refusals; the test did not refuse mid-stream");
    let played = player.wait();
    assert!(played.success(), "dmix-play: {}", player.finished_stderr());
    drop(stat);
    stop(down);
    stop(u1);
    stop(u2);
    // The whole tone reached U1, exactly; U2 heard nothing.
    let want: Vec<i32> = tone.iter().map(|&v| i32::from(v)).collect();
    let (_, got1) = read_wav(&env.path("up1.wav"));
    assert_eq!(heard_stretch(&got1, &want, 0, "U1"), want.len(), "U1 did not hear the whole tone");
    let (_, got2) = read_wav(&env.path("up2.wav"));
    assert!(got2.iter().all(|&v| v == 0), "U2 heard something");
}

/// In freewheel a switch between two WAV files splits the render at a period boundary, bit
/// exact: the first file (finalized before dmix-stat returns: it reads whole while the
/// server runs) holds the tone's start, the second the rest, nothing lost or doubled. A
/// relative path is made absolute by dmix-stat, and a WAV file replaces the whole list.
#[test]
fn sink_switch_between_wav_files_in_freewheel_is_exact() {
    use std::io::Write;
    let env = Env::new();
    let a = env.path("a.wav");
    let mut server = env.serve(&[
        "--sink",
        &format!("wav:{}", a.display()),
        "--freewheel",
        "--period",
        "256",
        "--wait-clients",
        "1",
        "--exit-when-idle",
    ]);
    let tone = signal(96000, 2, 440.0, 0.3, 63);
    let bytes: Vec<u8> = tone.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut player = env.spawn("dmix-play", &["-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-"]);
    let mut stdin = player.stdin();
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    stdin.write_all(first).unwrap();
    // The render passes frame 24000 only once the player supplied it, and cannot pass
    // 48000 before the rest is written: the switch comes mid-stream.
    wait_hw_ptr(&env, "default", 24000);
    let r = env.run("dmix-stat", &["-D", "default", "--sink", "wav:b.wav"]);
    assert!(r.status.success(), "dmix-stat: {}", r.stderr);
    let b = env.path("b.wav");
    assert_eq!(r.stdout, format!("sink: wav:{} (was wav:{}, finalized)\n", b.display(), a.display()));
    let (_, got_a) = read_wav(&a);
    stdin.write_all(rest).unwrap();
    drop(stdin);
    assert!(player.wait().success(), "dmix-play: {}", player.finished_stderr());
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got_b) = read_wav(&b);
    let want: Vec<i32> = tone.iter().map(|&v| i32::from(v)).collect();
    assert!(!got_a.is_empty() && got_a.len() < want.len(), "a.wav holds {} samples", got_a.len());
    assert_eq!(got_a.len() % (2 * 256), 0, "the switch was not at a period boundary");
    let mut got = got_a.clone();
    got.extend_from_slice(&got_b);
    assert!(got.len() >= want.len(), "the render is shorter than the tone");
    assert!(got[..want.len()] == want[..], "the two files are not the tone, split");
    assert!(got[want.len()..].iter().all(|&v| v == 0), "something after the tone");
}

/// A switch while the sink in use is lost (its upstream server killed): the server plays on
/// the new sink at once ("was none"), a player then reaches it exactly, and the old sink,
/// now a fallback behind the one playing, is no longer retried: when its server is back,
/// the downstream server stays where it was moved (watched for longer than the 2 s retry).
#[test]
fn sink_switch_while_the_sink_is_lost_plays_on_the_new_one_and_stops_retrying_the_old() {
    let (env, mut u1, u2) = two_upstreams();
    let down = env.serve(&["--name", "down", "--sink", "alsa:up1", "--device-buffer", DEVICE_BUFFER]);
    let stat = stat_conn(&env, "down");
    let sock = env.socket("down");
    // The plugin's first writes into U1 have gone through before U1 goes.
    wait_for_snapshot(&stat, &sock, "never played on U1", |s| s.server.hw_ptr >= 9600);
    u1.signal(Signal::SIGKILL);
    u1.wait();
    wait_for_snapshot(&stat, &sock, "the sink was never shown lost", |s| s.server.sink_state == "lost");
    let r = env.run("dmix-stat", &["-D", "down", "--sink", "alsa:up2"]);
    assert!(r.status.success(), "dmix-stat: {}", r.stderr);
    assert_eq!(r.stdout, "sink: alsa:up2 (was none)\n");
    let s = dmix::stat::snapshot(&stat, &sock).unwrap();
    let list: Vec<(&str, &str)> = s.server.sinks.iter().map(|e| (e.name.as_str(), e.state.as_str())).collect();
    assert_eq!(
        (s.server.sink_state.as_str(), list),
        ("running", vec![("alsa:up2", "in use"), ("alsa:up1", "fallback")])
    );
    assert_eq!(s.server.sink_losses, 1);
    let tone = signal(48000, 2, 440.0, 0.3, 64);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let r = env.run("dmix-play", &["-D", "down", "tone.wav"]);
    assert!(r.status.success(), "dmix-play: {}", r.stderr);
    // U1 back: the downstream server, on its first preference, must not move to it.
    let u1b = env.serve(&["--name", "up1", "--sink", "wav:up1b.wav"]);
    let at = stat_conn(&env, "up1").ring().hw_ptr();
    wait_hw_ptr(&env, "up1", at + 3 * 48000);
    let s = dmix::stat::snapshot(&stat, &sock).unwrap();
    assert_eq!((s.server.sink.as_str(), s.server.sink_state.as_str()), ("alsa:up2", "running"));
    let on_u1 = dmix::stat::snapshot(&stat_conn(&env, "up1"), &env.socket("up1")).unwrap();
    assert!(!on_u1.clients.iter().any(|c| c.role == "play"), "the downstream server went back to U1");
    drop(stat);
    stop(down);
    stop(u1b);
    stop(u2);
    let want: Vec<i32> = tone.iter().map(|&v| i32::from(v)).collect();
    let (_, got2) = read_wav(&env.path("up2.wav"));
    assert_eq!(heard_stretch(&got2, &want, 0, "U2"), want.len(), "U2 did not hear the whole tone");
}
