//! A sink that goes away: the server keeps its clients, runs on by the clock, reopens the
//! device, and moves between sinks in order of preference. Without a sound card the device
//! is the dmixrs plugin pointing at an upstream dmix-serve: killing the upstream is an
//! unplug (the plugin's writes fail with ENODEV), starting one again is the device coming
//! back. The server's device buffer is 8192 frames (170 ms, --device-buffer), so that a
//! loaded machine (the suite runs tests side by side) does not underrun the upstream: the
//! tests check the audio bit for bit.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::alsa_plugin::plugin_env_with;
use crate::util::*;

/// The server's device buffer in these tests, frames.
const DEVICE_BUFFER: &str = "8192";

/// Where `part` (at least 64 samples) starts in `whole`, found by its first 64 samples.
fn find(whole: &[i32], part: &[i32]) -> Option<usize> {
    whole.windows(64).position(|w| w == &part[..64])
}

/// The stretch of `tone` that `render` holds, bit-exact: (first frame, frames). The render
/// is silence, then one contiguous piece of the tone, then silence; anything else fails.
fn exact_piece(render: &[i32], tone: &[i32], what: &str) -> (usize, usize) {
    let at = render.iter().position(|&v| v != 0).unwrap_or_else(|| panic!("{what}: nothing of the tone arrived"));
    // Frame-aligned: the first non-zero sample may be the right channel.
    let at = at - at % 2;
    let from = find(tone, &render[at..]).unwrap_or_else(|| panic!("{what}: the audio is not the tone"));
    let len = render[at..].iter().zip(&tone[from..]).take_while(|(a, b)| a == b).count();
    let len = len - len % 2;
    assert!(
        render[at + len..].iter().all(|&v| v == 0),
        "{what}: the tone arrived with a break or garbage after {} frames (tone frame {})",
        len / 2,
        (from + len) / 2
    );
    (from / 2, len / 2)
}

fn snapshot(
    env: &Env,
    name: &str,
    what: &str,
    until: impl FnMut(&dmix::stat::Snapshot) -> bool,
) -> dmix::stat::Snapshot {
    wait_for_snapshot(&stat_conn(env, name), &env.socket(name), what, until)
}

fn playing_clients(s: &dmix::stat::Snapshot) -> usize {
    s.clients.iter().filter(|c| c.role == "play" && c.started == Some(true)).count()
}

/// The device goes away mid-stream: the server and its player live on (the sink shows as
/// lost in dmix-stat), and when the device is back the rest of the tone reaches it exactly.
#[test]
fn sinks_a_lost_device_keeps_the_clients_and_plays_on_when_it_is_back() {
    let env = plugin_env_with("pcm.up { type dmixrs server \"upstream\" }");
    let mut first = env.serve(&["--name", "upstream", "--sink", "null"]);
    let mut server = env.serve(&["--sink", "alsa:up", "--device-buffer", DEVICE_BUFFER]);
    let tone: Vec<i32> = signal(48000 * 3, 2, 440.0, 0.3, 71).into_iter().map(i32::from).collect();
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone.iter().map(|&v| v as i16).collect::<Vec<_>>());
    let mut player = env.spawn("dmix-play", &["-q", "tone.wav"]);
    let s = snapshot(&env, "default", "the player never started", |s| playing_clients(s) == 1);
    wait_hw_ptr(&env, "default", s.server.hw_ptr + 24000);
    // Unplugged.
    first.signal(Signal::SIGKILL);
    first.wait();
    let lost = snapshot(&env, "default", "the sink was never shown lost", |s| s.server.sink_state == "lost");
    assert_eq!(lost.server.sink, "alsa:up");
    assert_eq!(lost.server.sink_losses, 1);
    assert!(lost.server.sink_lost_s.is_some());
    assert_eq!(playing_clients(&lost), 1, "the player went with the device");
    assert!(player.exited().is_none(), "the player went with the device: {}", player.finished_stderr());
    // The clock paces the server while the device is gone.
    wait_hw_ptr(&env, "default", lost.server.hw_ptr + 4800);
    assert!(server.exited().is_none(), "{}", server.finished_stderr());
    // Plugged in again.
    let mut second = env.serve(&["--name", "upstream", "--sink", "wav:up.wav"]);
    let back = Instant::now();
    let running = snapshot(&env, "default", "the sink never came back", |s| s.server.sink_state == "running");
    let gap = back.elapsed();
    assert!(gap < Duration::from_millis(2500), "{gap:?} to reopen the device");
    assert_eq!(running.server.sink_lost_s, None);
    eprintln!("device back: playing again after {:.0} ms", gap.as_secs_f64() * 1000.0);
    let r = player.wait();
    assert!(r.success(), "{}", player.finished_stderr());
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let log = server.finished_stderr();
    // One line when it is lost (ENODEV or EIO, as the plugin's write or pointer callback
    // sees the server gone first), one when it is back, nothing between.
    let lines: Vec<&str> = log.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("dmix-serve: alsa:up: write: ") && lines[0].contains("sink lost"), "{log}");
    assert!(lines[1].starts_with("dmix-serve: playing on alsa:up after"), "{log}");
    second.signal(Signal::SIGTERM);
    assert!(second.wait().success(), "{}", second.finished_stderr());
    let (_, got) = read_wav(&env.path("up.wav"));
    let (from, len) = exact_piece(&got, &tone, "the device that came back");
    assert_eq!(from + len, tone.len() / 2, "the tone did not play to its end on the device that came back");
    assert!(from < tone.len() / 2, "nothing of the tone came after the device was back");
}

/// `--sink A --sink B`: when A goes, B plays within a second; when A is back, the server
/// moves back to it. Each device gets a contiguous, exact stretch of the tone, and the only
/// gap between them is the device buffer dropped at the move.
#[test]
fn sinks_fall_back_to_the_next_and_move_back_when_the_preferred_returns() {
    let env = plugin_env_with("pcm.upa { type dmixrs server \"a\" }\npcm.upb { type dmixrs server \"b\" }");
    let mut a = env.serve(&["--name", "a", "--sink", "null"]);
    let mut b = env.serve(&["--name", "b", "--sink", "wav:b.wav"]);
    let mut server = env.serve(&["--sink", "alsa:upa", "--sink", "alsa:upb", "--device-buffer", DEVICE_BUFFER]);
    let s = snapshot(&env, "default", "not on the preferred sink", |s| s.server.sink == "alsa:upa");
    let states: Vec<&str> = s.server.sinks.iter().map(|k| k.state.as_str()).collect();
    assert_eq!(states, ["in use", "fallback"]);
    let tone: Vec<i32> = signal(48000 * 5, 2, 330.0, 0.3, 72).into_iter().map(i32::from).collect();
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone.iter().map(|&v| v as i16).collect::<Vec<_>>());
    let mut player = env.spawn("dmix-play", &["-q", "tone.wav"]);
    let s = snapshot(&env, "default", "the player never started", |s| playing_clients(s) == 1);
    wait_hw_ptr(&env, "default", s.server.hw_ptr + 14400);
    a.signal(Signal::SIGKILL);
    a.wait();
    let gone = Instant::now();
    snapshot(&env, "b", "the fallback never played", |s| playing_clients(s) == 1);
    let fell_back = gone.elapsed();
    assert!(fell_back < Duration::from_secs(1), "{fell_back:?} to move to the fallback");
    let s = snapshot(&env, "default", "the fallback is not shown in use", |s| s.server.sink == "alsa:upb");
    let states: Vec<&str> = s.server.sinks.iter().map(|k| k.state.as_str()).collect();
    assert_eq!((s.server.sink_state.as_str(), states), ("running", vec!["waiting", "in use"]));
    wait_hw_ptr(&env, "default", s.server.hw_ptr + 24000);
    let mut a2 = env.serve(&["--name", "a", "--sink", "wav:a.wav"]);
    let back = Instant::now();
    snapshot(&env, "a", "never moved back to the preferred sink", |s| playing_clients(s) == 1);
    let moved_back = back.elapsed();
    assert!(moved_back < Duration::from_millis(2500), "{moved_back:?} to move back");
    snapshot(&env, "b", "the fallback was not let go", |s| playing_clients(s) == 0);
    eprintln!(
        "fallback playing {:.0} ms after the loss; back on the preferred {:.0} ms after it returned",
        fell_back.as_secs_f64() * 1000.0,
        moved_back.as_secs_f64() * 1000.0
    );
    assert!(player.wait().success(), "{}", player.finished_stderr());
    let s = snapshot(&env, "default", "", |_| true);
    assert_eq!((s.server.sink_losses, s.server.sink.as_str()), (1, "alsa:upa"));
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    for p in [&mut a2, &mut b] {
        p.signal(Signal::SIGTERM);
        assert!(p.wait().success(), "{}", p.finished_stderr());
    }
    let (_, on_b) = read_wav(&env.path("b.wav"));
    let (_, on_a) = read_wav(&env.path("a.wav"));
    let (b_from, b_len) = exact_piece(&on_b, &tone, "the fallback");
    let (a_from, a_len) = exact_piece(&on_a, &tone, "the preferred sink, back");
    assert!(b_len >= 12000, "the fallback played only {b_len} frames");
    assert_eq!(a_from + a_len, tone.len() / 2, "the tone did not play to its end");
    // What the fallback's device buffer held when the server left it is the only loss.
    let b_end = b_from + b_len;
    assert!(
        a_from >= b_end && a_from - b_end <= 8192 + 512,
        "fallback ended at {b_end}, preferred resumed at {a_from}"
    );
}

/// A device missing at the start is one line and exit 9 (a typo in --sink must not leave a
/// server playing to nothing), unless --on-sink-loss wait is given: then the server serves
/// at once and plays on the device as soon as it appears.
#[test]
fn sinks_missing_at_start_is_an_error_unless_told_to_wait() {
    let env = plugin_env_with("pcm.up { type dmixrs server \"upstream\" }");
    let r = env.run("dmix-serve", &["--sink", "alsa:up"]);
    assert_eq!(r.status.code(), Some(9), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.starts_with("dmix-serve: alsa:up: cannot open"), "{}", r.stderr);
    let r = env.run("dmix-serve", &["--sink", "alsa:up", "--sink", "alsa:nothere"]);
    assert_eq!(r.status.code(), Some(9), "{}", r.stderr);
    assert!(
        r.stderr.contains("alsa:up: cannot open") && r.stderr.contains("alsa:nothere: cannot open"),
        "{}",
        r.stderr
    );
    // A WAV file cannot be one of several sinks: reopening it would overwrite it.
    let r = env.run("dmix-serve", &["--sink", "alsa:up", "--sink", "wav:x.wav"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("--sink wav:x.wav"), "{}", r.stderr);
    assert!(!env.path("x.wav").exists());

    let mut server = env.serve(&["--sink", "alsa:up", "--on-sink-loss", "wait", "--device-buffer", DEVICE_BUFFER]);
    assert!(server.stderr().contains("no sink open yet"), "{}", server.stderr());
    let s = snapshot(&env, "default", "", |_| true);
    assert_eq!((s.server.sink_state.as_str(), s.server.sink_losses), ("lost", 0));
    let tone: Vec<i32> = signal(24000, 2, 550.0, 0.3, 73).into_iter().map(i32::from).collect();
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone.iter().map(|&v| v as i16).collect::<Vec<_>>());
    let mut upstream = env.serve(&["--name", "upstream", "--sink", "wav:up.wav"]);
    snapshot(&env, "default", "the device never opened", |s| s.server.sink_state == "running");
    let r = env.run("dmix-play", &["-q", "tone.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    upstream.signal(Signal::SIGTERM);
    assert!(upstream.wait().success(), "{}", upstream.finished_stderr());
    let (_, got) = read_wav(&env.path("up.wav"));
    assert_eq!(exact_piece(&got, &tone, "the device that appeared"), (0, tone.len() / 2));
}

/// --on-sink-loss exit: the server ends with the device's error (exit 9) and its clients are
/// told (exit 10), as before the server learnt to wait.
#[test]
fn sinks_on_sink_loss_exit_stops_the_server_and_tells_the_clients() {
    let env = plugin_env_with("pcm.up { type dmixrs server \"upstream\" }");
    let mut upstream = env.serve(&["--name", "upstream", "--sink", "null"]);
    let mut server = env.serve(&["--sink", "alsa:up", "--on-sink-loss", "exit"]);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &signal(48000 * 5, 2, 440.0, 0.3, 74));
    let mut player = env.spawn("dmix-play", &["-q", "tone.wav"]);
    snapshot(&env, "default", "the player never started", |s| playing_clients(s) == 1);
    upstream.signal(Signal::SIGKILL);
    upstream.wait();
    assert_eq!(server.wait().code(), Some(9), "{}", server.finished_stderr());
    let log = server.finished_stderr();
    assert!(log.contains("dmix-serve: alsa:up: write: "), "{log}");
    assert_eq!(player.wait().code(), Some(10), "{}", player.finished_stderr());
}

/// A device that comes back unable to play the server's stream (here an upstream server of
/// one channel, which the plugin cannot give two) is named once with the reason, however
/// often it is retried, and the server waits on; the right device back, it plays.
#[test]
fn sinks_a_device_back_with_other_parameters_is_told_once() {
    let env = plugin_env_with("pcm.up { type dmixrs server \"upstream\" }");
    let mut first = env.serve(&["--name", "upstream", "--sink", "null"]);
    let mut server = env.serve(&["--sink", "alsa:up"]);
    first.signal(Signal::SIGKILL);
    first.wait();
    snapshot(&env, "default", "the sink was never shown lost", |s| s.server.sink_state == "lost");
    let mut mono = env.serve(&["--name", "upstream", "--sink", "null", "--channels", "1"]);
    let told = server.wait_for_stderr("cannot play this server's stream");
    assert!(told.starts_with("dmix-serve: alsa:up: "), "{told}");
    assert!(
        told.contains("the device is there but cannot play this server's stream (48000 Hz, 2 ch, S16_LE)"),
        "{told}"
    );
    // 2.5 s of the mono server's clock: the server retries at least every 2 s. Each attempt
    // is a connection to it (client ids count them), and none is told again.
    let first_id = stat_conn(&env, "upstream").client_id();
    wait_hw_ptr(&env, "upstream", stat_conn(&env, "upstream").ring().hw_ptr() + 120_000);
    let attempts = stat_conn(&env, "upstream").client_id() - first_id - 3;
    assert!(attempts >= 1, "the server stopped retrying");
    assert_eq!(server.stderr().matches("cannot play").count(), 1, "{}", server.stderr());
    assert_eq!(snapshot(&env, "default", "", |_| true).server.sink_state, "lost");
    mono.signal(Signal::SIGTERM);
    assert!(mono.wait().success(), "{}", mono.finished_stderr());
    let _second = env.serve(&["--name", "upstream", "--sink", "null"]);
    snapshot(&env, "default", "the right device never played", |s| s.server.sink_state == "running");
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
}

/// A server whose sink is the dmixrs plugin pointing back at itself (dmixrs made the default
/// device, the server left on alsa:default) says so at once and exits 9, naming the way out;
/// before, the plugin's hello waited out its 5 s timeout on a server that answers no one
/// until its sink is open, and the server said only "cannot open".
#[test]
fn sinks_a_server_whose_sink_is_itself_says_so() {
    let env = plugin_env_with("pcm.self { type dmixrs }");
    let r = env.run("dmix-serve", &["--sink", "alsa:self"]);
    assert_eq!(r.status.code(), Some(9), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("this is the dmixrs plugin pointing back at this server"), "{}", r.stderr);
    assert!(r.stderr.contains("--sink alsa:sysdefault"), "{}", r.stderr);
}
