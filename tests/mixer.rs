//! The live mixer through the real binaries: dmix-stat --volume/--mute/--forget on a
//! dmix-play, heard within two periods whatever its latency; the rule round(s * 10^(G/20));
//! volumes remembered by name across restarts and never in a freewheel render.

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

use crate::util::*;

const PERIOD: u64 = 256;
/// The ramp: 10 ms at 48 kHz.
const RAMP: u64 = 480;

/// The id of the one player of the server `name`.
fn player_id(env: &Env, name: &str) -> u32 {
    wait_for_clients(env, name, "play", 1).clients.iter().find(|c| c.role == "play").unwrap().id
}

/// `dmix-stat ARGS` must succeed with one line; returns it.
fn stat_line(env: &Env, args: &[&str]) -> String {
    let r = env.run("dmix-stat", args);
    assert!(r.status.success(), "dmix-stat {args:?}: {}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    r.stdout.trim_end().to_string()
}

/// The frame at which the player's first sample landed in `wav` (stereo): where the tone's
/// frames from 0.1 s on are found, exactly (at 0 dB), within the first two seconds. Its very
/// first frames may have been late (a paced server takes periods as the player starts).
fn offset_of(wav: &[i32], tone: &[i16], check: usize) -> usize {
    let probe: Vec<i32> = tone[9600..9600 + check * 2].iter().map(|&s| i32::from(s)).collect();
    (0..96000).find(|&o| wav.get((o + 4800) * 2..(o + 4800 + check) * 2) == Some(&probe[..])).unwrap_or_else(|| {
        let first = wav.iter().position(|&v| v != 0);
        panic!("the render ({} frames, first sound at {first:?}) does not hold the tone at 0 dB", wav.len() / 2)
    })
}

/// Starts a paced server rendering into out.wav, and a dmix-play with 500 ms queued of a
/// steady 8 s tone; returns them, the tone and the inspector.
fn paced_player(env: &Env, extra: &[&str]) -> (Proc, Proc, Vec<i16>, dmix::client::Connection) {
    let tone = signal(48000 * 8, 2, 440.0, 0.4, 3);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let out = format!("wav:{}", env.path("out.wav").display());
    let server = env.serve(&["--sink", &out, "--period", &PERIOD.to_string()]);
    let mut args = vec!["-q", "--latency", "500"];
    args.extend_from_slice(extra);
    args.push("tone.wav");
    let player = env.spawn("dmix-play", &args);
    let stat = stat_conn(env, "default");
    // Playing, with its window full.
    wait_for_snapshot(&stat, &env.socket("default"), "the player never queued 400 ms", |s| {
        s.clients.iter().any(|c| c.role == "play" && c.queued_ms.is_some_and(|q| q > 400.0))
    });
    // A second at 0 dB first: where the render holds the tone exactly (see `offset_of`).
    wait_frames(&stat, stat.ring().hw_ptr() + 48000);
    (server, player, tone, stat)
}

/// Waits until the server has taken `frames`.
fn wait_frames(stat: &dmix::client::Connection, frames: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat.ring().hw_ptr() < frames {
        assert!(Instant::now() < deadline, "the server stalled before frame {frames}");
        stat.ring().wait_hw_ptr(frames, Duration::from_millis(100));
    }
}

/// Stops the player (silently, retracting) and the server, and returns the render.
fn finish(env: &Env, mut server: Proc, mut player: Proc) -> Vec<i32> {
    player.signal(Signal::SIGINT);
    player.wait();
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.stderr());
    read_wav(&env.path("out.wav")).1
}

#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn mixer_mute_of_a_500ms_player_is_heard_within_two_periods_and_unmute_as_fast() {
    let env = Env::new();
    let (server, player, tone, stat) = paced_player(&env, &[]);
    let id = player_id(&env, "default").to_string();
    let muted = stat_line(&env, &["--mute", &id]);
    let hw_mute = stat.ring().hw_ptr();
    assert!(muted.ends_with(": 0.0 dB, muted"), "{muted}");
    wait_frames(&stat, hw_mute + 24000);
    let unmuted = stat_line(&env, &["--mute", &format!("{id}=off")]);
    let hw_unmute = stat.ring().hw_ptr();
    assert!(unmuted.ends_with(": 0.0 dB"), "{unmuted}");
    wait_frames(&stat, hw_unmute + 24000);
    let wav = finish(&env, server, player);
    let off = offset_of(&wav, &tone, 4800);
    let silent_from = (hw_mute + 2 * PERIOD + RAMP) as usize;
    let frame = |f: usize| &wav[f * 2..f * 2 + 2];
    // Silent from two periods and the ramp after the command returned, until the unmute.
    let loud_at = (silent_from..hw_unmute as usize).find(|&f| frame(f) != [0, 0]);
    assert_eq!(loud_at, None, "sound {} frames after the mute returned", loud_at.unwrap_or(0) as u64 - hw_mute);
    // Where silence began: the tone played up to a period or two before it.
    let first_silent = (0..silent_from).rev().find(|&f| frame(f) != [0, 0]).unwrap() + 1;
    eprintln!(
        "mute: silent {} frames after the command returned (bound {})",
        first_silent as i64 - hw_mute as i64,
        2 * PERIOD + RAMP
    );
    // Back at the tone itself, exactly, two periods and the ramp after the unmute returned.
    let back = (hw_unmute + 2 * PERIOD + RAMP) as usize;
    for f in back..back + 4800 {
        let t = &tone[(f - off) * 2..(f - off) * 2 + 2];
        assert_eq!(frame(f), [i32::from(t[0]), i32::from(t[1])], "frame {f} after the unmute");
    }
}

#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn mixer_volume_minus_6_0206_db_halves_within_one_lsb_after_the_ramp() {
    halves("id");
}

#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn mixer_volume_by_name_halves_as_fast() {
    halves("name");
}

#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn mixer_master_volume_halves_the_mix_as_fast() {
    halves("master");
}

/// `--volume TARGET=-6.0206` on a dmix-play with 500 ms queued, by its id, its name, or the
/// master: two periods and the ramp after the command returned, every sample is half,
/// within 1 LSB.
fn halves(by: &str) {
    let env = Env::new();
    let (server, player, tone, stat) = paced_player(&env, &["--name", "tone"]);
    let target = match by {
        "name" => "tone".to_string(),
        "master" => "master".to_string(),
        _ => player_id(&env, "default").to_string(),
    };
    let line = stat_line(&env, &["--volume", &format!("{target}=-6.0206")]);
    let hw = stat.ring().hw_ptr();
    assert!(line.contains(": -6.0 dB"), "{line}");
    wait_frames(&stat, hw + 24000);
    let wav = finish(&env, server, player);
    let off = offset_of(&wav, &tone, 4800);
    let from = (hw + 2 * PERIOD + RAMP) as usize;
    let mut worst = 0;
    for f in from..from + 19200 {
        for c in 0..2 {
            let want = (f64::from(tone[(f - off) * 2 + c]) * 0.5).round() as i32;
            worst = worst.max((wav[f * 2 + c] - want).abs());
        }
    }
    assert!(worst <= 1, "{worst} LSB from half the tone");
}

#[test]
fn mixer_volume_set_by_name_is_remembered_across_restarts_and_by_id_is_not() {
    let env = Env::new();
    let tone = signal(48000 * 30, 2, 440.0, 0.1, 4);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let json = |env: &Env| -> serde_json::Value {
        let r = env.run("dmix-stat", &["--json"]);
        assert!(r.status.success(), "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    // The volume of the (one) player named `name`.
    let volume_of = |env: &Env, name: &str| -> (f64, bool) {
        let v = json(env);
        let c = v["clients"].as_array().unwrap().iter().find(|c| c["name"] == name).expect("the player").clone();
        (c["volume_db"].as_f64().unwrap(), c["muted"].as_bool().unwrap())
    };
    let play = |env: &Env, name: &str| -> Proc {
        let p = env.spawn("dmix-play", &["-q", "--name", name, "tone.wav"]);
        wait_for_snapshot(&stat_conn(env, "default"), &env.socket("default"), "the player never joined", |s| {
            s.clients.iter().any(|c| c.name == name)
        });
        p
    };
    let mut server = env.serve(&["--sink", "null"]);
    let mut a = play(&env, "song");
    let id = player_id(&env, "default");
    // By id: that client only, forgotten when it goes.
    assert_eq!(
        stat_line(&env, &["--volume", &format!("{id}=-3")]),
        format!("client {id} (song, pid {}): -3.0 dB", a.pid())
    );
    assert_eq!(volume_of(&env, "song"), (-3.0, false));
    a.signal(Signal::SIGINT);
    a.wait();
    let mut b = play(&env, "song");
    assert_eq!(volume_of(&env, "song"), (0.0, false), "a volume set by id was remembered");
    // By name: every client of it now, and later ones.
    assert_eq!(stat_line(&env, &["--volume", "song=-10"]), "song (1 player): -10.0 dB; remembered");
    assert_eq!(volume_of(&env, "song"), (-10.0, false));
    assert_eq!(stat_line(&env, &["--mute", "song"]), "song (1 player): -10.0 dB, muted; remembered");
    assert_eq!(stat_line(&env, &["--volume", "master=1.5-"]), "master: -1.5 dB; remembered");
    b.signal(Signal::SIGINT);
    b.wait();
    let mut c = play(&env, "song");
    assert_eq!(volume_of(&env, "song"), (-10.0, true));
    c.signal(Signal::SIGINT);
    c.wait();
    // Across a restart, from $XDG_STATE_HOME/dmix/default.volumes.
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    let kept = std::fs::read_to_string(env.path("state/dmix/default.volumes")).unwrap();
    assert!(kept.contains("song\t-10\tmuted\n") && kept.contains("master\t-1.5\tunmuted\n"), "{kept}");
    let mut server = env.serve(&["--sink", "null"]);
    assert_eq!(json(&env)["server"]["master_volume_db"], -1.5);
    let mut d = play(&env, "song");
    assert_eq!(volume_of(&env, "song"), (-10.0, true));
    // dmix-play --volume wins over what is remembered.
    let mut e = env.spawn("dmix-play", &["-q", "--name", "song", "--volume", "-2", "tone.wav"]);
    wait_for_clients(&env, "default", "play", 2);
    let v = json(&env);
    let vols: Vec<f64> = v["clients"].as_array().unwrap().iter().filter_map(|c| c["volume_db"].as_f64()).collect();
    assert!(vols.contains(&-2.0) && vols.contains(&-10.0), "{vols:?}");
    // Forgotten: the next client of the name starts at 0 dB.
    assert_eq!(stat_line(&env, &["--forget", "song"]), "song: forgotten");
    let r = env.run("dmix-stat", &["--forget", "song"]);
    assert_eq!((r.status.code(), r.stderr.trim()), (Some(3), "dmix-stat: no volume is remembered for 'song'"));
    for p in [&mut d, &mut e] {
        p.signal(Signal::SIGINT);
        p.wait();
    }
    let mut f = play(&env, "song");
    assert_eq!(volume_of(&env, "song"), (0.0, false));
    f.signal(Signal::SIGINT);
    f.wait();
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    // --no-restore: the master and names are not given back.
    std::fs::write(env.path("state/dmix/default.volumes"), "song\t-7\tunmuted\nmaster\t-1\tunmuted\n").unwrap();
    let mut server = env.serve(&["--sink", "null", "--no-restore"]);
    assert_eq!(json(&env)["server"]["master_volume_db"], 0.0);
    let mut g = play(&env, "song");
    assert_eq!(volume_of(&env, "song"), (0.0, false));
    g.signal(Signal::SIGINT);
    g.wait();
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
}

#[test]
fn mixer_freewheel_render_is_exact_whatever_is_remembered_unless_restore() {
    let env = Env::new();
    let tone = signal(48000, 2, 440.0, 0.3, 5);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    std::fs::create_dir_all(env.path("state/dmix")).unwrap();
    std::fs::write(env.path("state/dmix/default.volumes"), "dmix-play\t-6\tunmuted\nmaster\t-3\tmuted\n").unwrap();
    let exact: Vec<i32> = tone.iter().map(|&s| i32::from(s)).collect();
    // Renders are whole periods: the tone, then silence.
    let (r, rendered) = render_one(&env, &["-q", "tone.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(rendered[..exact.len()] == exact[..], "a freewheel render at 0 dB is not bit-exact");
    assert!(rendered[exact.len()..].iter().all(|&v| v == 0));
    // With --restore the remembered master (muted) applies: a silent render.
    let out = env.path("out.wav");
    let sink = format!("wav:{}", out.display());
    let mut s = env.serve(&["--sink", &sink, "--freewheel", "--wait-clients", "1", "--exit-when-idle", "--restore"]);
    let r = env.run("dmix-play", &["-q", "tone.wav"]);
    assert!(r.status.success() && s.wait().success(), "{}", r.stderr);
    let muted = read_wav(&out).1;
    assert!(muted.len() >= exact.len());
    assert!(muted.iter().skip(RAMP as usize * 2).all(|&v| v == 0), "the remembered muted master did not apply");
    // And dmix-play --volume -6.0206 renders the rule exactly in freewheel.
    let (r, half) = render_one(&env, &["-q", "--volume", "-6.0206", "tone.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let factor = 10f64.powf(f64::from(-6.0206f32) / 20.0);
    // In the mix domain (24 bits), then to S16 as the sink writes it (the top 16 bits).
    use dmix::format::{mix_to_s16, s16_to_mix};
    let want: Vec<i32> =
        tone.iter().map(|&s| i32::from(mix_to_s16((f64::from(s16_to_mix(s)) * factor).round() as i32))).collect();
    assert!(half[..want.len()] == want[..], "round(s * 10^(G/20)) is not what was rendered");
}

#[test]
fn mixer_errors_are_one_line_with_their_exit_codes() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("state/dmix")).unwrap();
    std::fs::write(env.path("state/dmix/default.volumes"), "garbage\n").unwrap();
    let mut server = env.serve(&["--sink", "null"]);
    let warned = server.wait_for_stderr("volumes");
    assert!(warned.contains("line 1 is not NAME<TAB>DB<TAB>muted|unmuted; ignored"), "{warned}");
    for (args, code, says) in [
        (&["--volume", "42=-3"][..], 3, "dmix-stat: no client 42"),
        (&["--mute", "pid:1"][..], 3, "dmix-stat: no player of pid 1"),
        (&["--volume", "x=13"][..], 2, "volume 13 dB is above the most, +12 dB"),
        (&["--volume", "x=loud"][..], 2, "'loud' is not a number of dB"),
        (&["--mute", "x=maybe"][..], 2, "'maybe': mute is on, off or toggle"),
    ] {
        let r = env.run("dmix-stat", args);
        assert_eq!(r.status.code(), Some(code), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
}

/// A dmix-play reading a pipe that stalled sits in its read, not in its writing loop: its
/// follower thread still changes what it queued, within the same bound.
#[test]
#[ignore = "timing: the two-period bound needs the client scheduled within a period, so it runs alone after the suite (scripts/quickstart test)"]
fn mixer_mute_reaches_a_player_waiting_on_a_stalled_pipe() {
    use std::io::Write;
    let env = Env::new();
    let out = format!("wav:{}", env.path("out.wav").display());
    let mut server = env.serve(&["--sink", &out, "--period", &PERIOD.to_string()]);
    let mut player =
        env.spawn("dmix-play", &["-q", "--latency", "500", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-"]);
    // 0.45 s of tone, then nothing: the pipe stays open, the player waits on it.
    let tone = signal(21600, 2, 440.0, 0.4, 6);
    let bytes: Vec<u8> = tone.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut stdin = player.child.stdin.take().unwrap();
    stdin.write_all(&bytes).unwrap();
    stdin.flush().unwrap();
    let stat = stat_conn(&env, "default");
    let s = wait_for_snapshot(&stat, &env.socket("default"), "the player never queued 300 ms", |s| {
        s.clients.iter().any(|c| c.role == "play" && c.queued_ms.is_some_and(|q| q > 300.0))
    });
    let id = s.clients.iter().find(|c| c.role == "play").unwrap().id.to_string();
    let line = stat_line(&env, &["--mute", &id]);
    let hw_mute = stat.ring().hw_ptr();
    assert!(line.ends_with(", muted"), "{line}");
    wait_frames(&stat, hw_mute + 24000);
    drop(stdin);
    assert!(player.wait().success(), "{}", player.stderr());
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.stderr());
    let wav = read_wav(&env.path("out.wav")).1;
    let frame = |f: usize| &wav[f * 2..f * 2 + 2];
    assert!((0..hw_mute as usize).any(|f| frame(f) != [0, 0]), "the tone never played");
    let silent_from = (hw_mute + 2 * PERIOD + RAMP) as usize;
    let loud_at = (silent_from..(hw_mute + 24000) as usize).find(|&f| frame(f) != [0, 0]);
    assert_eq!(loud_at, None, "sound {} frames after the mute returned", loud_at.unwrap_or(0) as u64 - hw_mute);
}
