//! The live mixer through the ALSA plugin: aplay (Debian's alsa-utils) plays a steady tone
//! through PCM type dmixrs with a 500 ms buffer, so that it sits in poll() for long
//! stretches; `dmix-stat --mute` and `--volume` change it, and the paced server's WAV render
//! must follow within two server periods and the 10 ms ramp of the moment the command
//! returned, whatever aplay's buffer. The PCM's `volume` key starts a client at a volume.

use nix::sys::signal::Signal;

use crate::alsa_plugin::{finish, plugin_env_with, spawn_tool};
use crate::util::*;

/// The server's period, frames (dmix-serve's default, given explicitly).
const PERIOD: u64 = 256;
/// 10 ms at 48 kHz: a volume change's ramp.
const RAMP: u64 = 480;
/// aplay's buffer: 500 ms.
const BUFFER: u64 = 24_000;

/// What the render must hold from a change on.
#[derive(Clone, Copy, Debug)]
enum Heard {
    /// Exact silence (muted).
    Silence,
    /// The tone as written (0 dB adds nothing of its own).
    Exact,
    /// The tone halved (-6.0206 dB), within one step of rounding.
    Half,
}

/// One change: the dmix-stat arguments and what is heard after them.
struct Change<'a> {
    args: Vec<String>,
    heard: Heard,
    what: &'a str,
}

/// A window of the render: from `from` (the hw_ptr once a change's command returned, plus
/// two periods and the ramp) to `to` (the hw_ptr before the next change was asked for).
struct Window {
    from_cmd: u64,
    to: u64,
    heard: Heard,
    what: String,
}

/// A paced server and aplay of a 20 s tone with a 500 ms buffer; once aplay is playing
/// with its buffer full, each change in turn is made with dmix-stat, and the render is
/// checked window by window. Returns, per change, how many frames after the command's
/// hw_ptr the render first matched what it should be.
fn play_with_changes(pcm: &str, changes: &[Change<'_>]) -> Vec<u64> {
    let env = plugin_env_with(&format!("pcm.dmixrs {{ type dmixrs }}\n{pcm}"));
    let tone = signal(48000 * 20, 2, 440.0, 0.5, 71);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let mut server = env.serve(&["--sink", "wav:out.wav", "--period", &PERIOD.to_string()]);
    let mut aplay =
        spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "--buffer-time=500000", "tone.wav"]);
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    // Playing, with (nearly) its whole buffer queued: from here aplay sleeps in poll() for a
    // quarter of it at a time.
    let s = wait_for_snapshot(&stat, &sock, "aplay never filled its 500 ms buffer", |s| {
        s.clients.iter().any(|c| c.name == "aplay" && c.queued_ms.unwrap_or(0.0) > 350.0)
    });
    let id = s.clients.iter().find(|c| c.name == "aplay").map(|c| c.id).expect("aplay listed");
    let ring = stat.ring();
    let mut windows: Vec<Window> = Vec::new();
    for ch in changes {
        let before = ring.hw_ptr();
        if let Some(last) = windows.last_mut() {
            last.to = before;
        }
        let args: Vec<String> = ch.args.iter().map(|a| a.replace("ID", &id.to_string())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = env.run("dmix-stat", &args);
        assert!(r.status.success(), "dmix-stat {args:?}: {}", r.stderr);
        let from_cmd = ring.hw_ptr();
        windows.push(Window { from_cmd, to: 0, heard: ch.heard, what: format!("{} ({args:?})", ch.what) });
        // Most of a buffer: the whole queue aplay had when it changed has played, and more.
        let target = from_cmd + BUFFER + 4 * PERIOD;
        wait_hw_ptr(&env, "default", target);
    }
    if let Some(last) = windows.last_mut() {
        last.to = ring.hw_ptr();
    }
    let s = dmix::stat::snapshot(&stat, &sock).expect("snapshot");
    let underruns = s.clients.iter().find(|c| c.id == id).map(|c| c.underruns);
    assert_eq!(underruns, Some(0), "aplay underran: the render cannot be lined up with the tone");
    assert!(aplay.exited().is_none(), "aplay ended early: {}", aplay.stderr());
    aplay.signal(Signal::SIGKILL);
    let _ = finish(aplay);
    // SIGTERM finalizes the WAV.
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, render) = read_wav(&env.path("out.wav"));
    let frames = render.len() as u64 / 2;
    let at = |f: u64| [render[f as usize * 2], render[f as usize * 2 + 1]];
    // The ring frame of the tone's first frame: where the render starts with it, exactly
    // (aplay starts at 0 dB).
    let head: Vec<i32> = tone[..128].iter().map(|&v| i32::from(v)).collect();
    let base =
        render.chunks_exact(2).enumerate().position(|(f, _)| render[f * 2..].starts_with(&head)).map(|b| b as u64);
    let base = base.expect("the tone's first frames are not in the render");
    let want = |f: u64, heard: Heard| -> [i32; 2] {
        let i = (f - base) as usize * 2;
        let s = [i32::from(tone[i]), i32::from(tone[i + 1])];
        match heard {
            Heard::Silence => [0, 0],
            Heard::Exact => s,
            Heard::Half => s.map(|v| (f64::from(v) * 0.5).round() as i32),
        }
    };
    let matches = |f: u64, heard: Heard| {
        let (got, want) = (at(f), want(f, heard));
        got.iter().zip(want).all(|(&g, w)| if matches!(heard, Heard::Half) { (g - w).abs() <= 1 } else { g == w })
    };
    let mut settled = Vec::new();
    for w in &windows {
        let from = w.from_cmd + 2 * PERIOD + RAMP;
        assert!(w.to > from + PERIOD && w.to <= frames, "{}: window {from}..{} outside the render", w.what, w.to);
        if let Some(f) = (from..w.to).find(|&f| !matches(f, w.heard)) {
            panic!(
                "{}: frame {f} ({} after the command's hw_ptr) is {:?}, want {:?} ({:?})",
                w.what,
                f - w.from_cmd,
                at(f),
                want(f, w.heard),
                w.heard
            );
        }
        // Where it first matched for good: how long the change took to be heard.
        let first = (w.from_cmd..from).rev().find(|&f| !matches(f, w.heard)).map_or(w.from_cmd, |f| f + 1);
        eprintln!("{}: heard {} frames after the command's hw_ptr", w.what, first - w.from_cmd);
        settled.push(first - w.from_cmd);
    }
    settled
}

fn change<'a>(args: &[&str], heard: Heard, what: &'a str) -> Change<'a> {
    Change { args: args.iter().map(|a| a.to_string()).collect(), heard, what }
}

/// `dmix-stat --mute ID` while aplay sits on a 500 ms buffer: the render is exactly silent
/// from the hw_ptr at which the command returned plus two periods and the ramp, until
/// `--mute ID=off`, after which the tone is back, exact, just as fast.
#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn plugin_mixer_mute_is_heard_within_two_periods_of_a_500ms_buffer() {
    play_with_changes(
        "",
        &[change(&["--mute", "ID"], Heard::Silence, "mute"), change(&["--mute", "ID=off"], Heard::Exact, "unmute")],
    );
}

/// `dmix-stat --volume ID=-6.0206` halves the tone (within one step of rounding) from two
/// periods and the ramp after the command; back at 0 dB it is exact again; and the same by
/// the client's name, as dmix-stat lists it (the plugin sends the program's name: aplay).
#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn plugin_mixer_volume_by_id_and_by_name_halves_the_tone() {
    play_with_changes(
        "",
        &[
            change(&["--volume", "ID=-6.0206"], Heard::Half, "volume by id"),
            change(&["--volume", "ID=0"], Heard::Exact, "back to 0 dB by id"),
            change(&["--volume", "aplay=-6.0206"], Heard::Half, "volume by name"),
        ],
    );
}

/// The PCM's `volume` key: a client of `pcm.quiet { type dmixrs volume -6 }` starts at
/// -6 dB (dmix-stat --json shows it); a value above +12 dB or not a number fails the open
/// with the plugin's one line.
#[test]
fn plugin_mixer_volume_key_is_the_initial_volume() {
    let env = plugin_env_with(
        "pcm.quiet { type dmixrs volume -6 }\n\
         pcm.loud { type dmixrs volume 13 }\n\
         pcm.words { type dmixrs volume \"loud\" }",
    );
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(4800, 2, 440.0, 0.3, 72));
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 20, 2, 440.0, 0.3, 73));
    let _server = env.serve(&["--sink", "null"]);
    for (pcm, why) in [
        ("loud", "dmixrs: volume 13 dB is above the most, +12 dB"),
        ("words", "dmixrs: volume loud: expected a number of dB"),
    ] {
        let r = finish(spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", pcm, "a.wav"]));
        assert!(!r.status.success(), "{pcm}: aplay opened it");
        assert!(r.stderr.contains(why), "{pcm}: {}", r.stderr);
    }
    let p = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "quiet", "long.wav"]);
    wait_for_clients(&env, "default", "play", 1);
    let r = env.run("dmix-stat", &["--json"]);
    assert!(r.status.success(), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    let c = v["clients"].as_array().unwrap().iter().find(|c| c["name"] == "aplay").cloned();
    let c = c.unwrap_or_else(|| panic!("aplay missing: {v}"));
    assert_eq!(c["volume_db"].as_f64(), Some(-6.0), "{c}");
    assert_eq!(c["muted"], false, "{c}");
    p.signal(Signal::SIGKILL);
    let _ = finish(p);
}
