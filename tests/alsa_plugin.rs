//! The ALSA plugin (PCM type dmixrs, alsa-plugin/): real ALSA programs from Debian's
//! packages (aplay, speaker-test, gst-launch-1.0) play into dmix-serve through it. The
//! plugin is found through an ALSA configuration the test writes (never ~/.asoundrc).

use std::path::PathBuf;

use nix::sys::signal::Signal;

use crate::util::*;

/// The plugin as built. `cargo test` builds the plugin's unit tests but not the library
/// alsa-lib loads, so a library older than its sources (the plugin's, or the dmix library it
/// links) is refused: these tests would otherwise pass or fail on yesterday's code.
fn plugin_so() -> PathBuf {
    let so = bin("dmix-serve").with_file_name("libasound_module_pcm_dmixrs.so");
    let built = std::fs::metadata(&so)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: build the workspace (cargo build --workspace)", so.display()));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(newer) = newest_source(&[root.join("alsa-plugin/src"), root.join("src")]).filter(|(t, _)| *t > built) {
        panic!("{} is older than {}: build the workspace (cargo build --workspace)", so.display(), newer.1.display());
    }
    so
}

/// The most recently modified .rs file under `dirs` (src/bin aside).
fn newest_source(dirs: &[PathBuf]) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest = None;
    let mut todo = dirs.to_vec();
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                // The binaries' sources are not part of the library the plugin links.
                if !path.ends_with("src/bin") {
                    todo.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Ok(t) = entry.metadata().and_then(|m| m.modified())
                && newest.as_ref().is_none_or(|(n, _)| t > *n)
            {
                newest = Some((t, path));
            }
        }
    }
    newest
}

/// An environment whose ALSA configuration defines PCM type dmixrs and `pcm.dmixrs`.
fn plugin_env() -> Env {
    plugin_env_with("pcm.dmixrs { type dmixrs }")
}

/// An environment whose ALSA configuration defines PCM type dmixrs and then `pcms`.
pub fn plugin_env_with(pcms: &str) -> Env {
    let mut env = Env::new();
    let conf = env.path("asound.conf");
    std::fs::write(&conf, format!("pcm_type.dmixrs {{ lib \"{}\" }}\n{pcms}\n", plugin_so().display())).unwrap();
    env.set_env("ALSA_CONFIG_PATH", &format!("/usr/share/alsa/alsa.conf:{}", conf.display()));
    env
}

/// Starts an ALSA program from a Debian package (`tool` from `package`) in the test's
/// environment.
pub fn spawn_tool(env: &Env, tool: &str, package: &str, args: &[&str]) -> Proc {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    assert!(found, "{tool} is not installed: install the Debian package {package} (scripts/quickstart test does)");
    Proc::spawn(tool, env.program(tool).args(args).stdin(std::process::Stdio::null()))
}

/// Waits (bounded) for a program started by `spawn_tool`.
pub fn finish(mut p: Proc) -> Output {
    let status = p.wait_timeout(DEADLINE);
    let stderr = p.finished_stderr();
    Output { status, stderr, stdout: p.stdout(), stdout_bytes: p.stdout_bytes() }
}

fn run_tool(env: &Env, tool: &str, package: &str, args: &[&str]) -> Output {
    finish(spawn_tool(env, tool, package, args))
}

fn freewheel_server(env: &Env, clients: &str) -> Proc {
    env.serve(&["--sink", "wav:out.wav", "--freewheel", "--wait-clients", clients, "--exit-when-idle"])
}

/// `got` is `want` then silence: aplay pads its last chunk with silence to a whole period of
/// its own, and a render ends on a whole server period.
fn is_then_silence(got: &[i32], want: &[i32]) -> bool {
    got.len() >= want.len() && got[..want.len()] == *want && got[want.len()..].iter().all(|&v| v == 0)
}

/// Zero-padded to whole 256-frame periods, as a freewheel render ends.
fn padded(v: Vec<i32>, channels: usize) -> Vec<i32> {
    let mut v = v;
    let period = 256 * channels;
    v.resize(v.len().div_ceil(period) * period, 0);
    v
}

#[test]
fn alsa_plugin_aplay_s16_s32_float_are_exact() {
    let env = plugin_env();
    let s = signal(30000, 2, 440.0, 0.4, 31);
    write_wav_i16(&env.path("s16.wav"), 48000, 2, &s);
    let spec =
        |bits, sample_format| hound::WavSpec { channels: 2, sample_rate: 48000, bits_per_sample: bits, sample_format };
    let mut w = hound::WavWriter::create(env.path("s32.wav"), spec(32, hound::SampleFormat::Int)).unwrap();
    s.iter().for_each(|&v| w.write_sample(i32::from(v) << 16).unwrap());
    w.finalize().unwrap();
    let mut w = hound::WavWriter::create(env.path("f32.wav"), spec(32, hound::SampleFormat::Float)).unwrap();
    s.iter().for_each(|&v| w.write_sample(f32::from(v) / 32768.0).unwrap());
    w.finalize().unwrap();
    let want = padded(s.iter().map(|&v| i32::from(v)).collect(), 2);
    for file in ["s16.wav", "s32.wav", "f32.wav"] {
        let mut server = freewheel_server(&env, "1");
        let r = run_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", file]);
        assert!(r.status.success(), "aplay {file}: {}", r.stderr);
        assert!(server.wait().success(), "{}", server.finished_stderr());
        let (_, got) = read_wav(&env.path("out.wav"));
        assert!(
            is_then_silence(&got, &want),
            "{file}: the render is not the file ({} samples, want {})",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn alsa_plugin_plug_resamples_44100_to_the_right_length_and_pitch() {
    let env = plugin_env();
    let frames = 44100;
    let s: Vec<i16> = (0..frames)
        .flat_map(|i| {
            let v = (0.4 * 32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 44100.0).sin()) as i16;
            [v, v]
        })
        .collect();
    write_wav_i16(&env.path("a.wav"), 44100, 2, &s);
    let mut server = freewheel_server(&env, "1");
    let r = run_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "plug:dmixrs", "a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let mut left: Vec<i32> = got.iter().step_by(2).copied().collect();
    // aplay's last chunk is padded with silence.
    while left.last() == Some(&0) {
        left.pop();
    }
    // One second at 48 kHz, give or take the resampler's edges and the last period.
    assert!((47500..=48600).contains(&left.len()), "{} frames", left.len());
    // The pitch, over the middle half second (away from the resampler's edges).
    let middle = &left[12000..36000];
    let crossings = middle.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    assert!(
        (498..=502).contains(&crossings),
        "{crossings} cycles in half a second: not 1000 Hz ({} frames)",
        left.len()
    );
}

#[test]
fn alsa_plugin_two_aplays_and_a_dmix_play_mix_exactly() {
    let env = plugin_env();
    let a = signal(20000, 2, 300.0, 0.25, 32);
    let b = signal(25000, 2, 500.0, 0.25, 33);
    let c = signal(15000, 2, 700.0, 0.25, 34);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    write_wav_i16(&env.path("c.wav"), 48000, 2, &c);
    let mut server = freewheel_server(&env, "3");
    let pa = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "a.wav"]);
    let pb = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "b.wav"]);
    let rc = env.run("dmix-play", &["c.wav"]);
    assert!(rc.status.success(), "{}", rc.stderr);
    for p in [pa, pb] {
        let r = finish(p);
        assert!(r.status.success(), "{}", r.stderr);
    }
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let at = |s: &[i16], i: usize| i32::from(*s.get(i).unwrap_or(&0));
    let want = padded((0..b.len()).map(|i| (at(&a, i) + at(&b, i) + at(&c, i)).clamp(-32768, 32767)).collect(), 2);
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(is_then_silence(&got, &want), "differs at {first:?} ({} vs {})", got.len(), want.len());
}

/// GStreamer's alsasink (poll-driven, pauses at the end of the stream) on a paced server:
/// the render holds the 20 buffers of 1024 frames, contiguous.
#[test]
fn alsa_plugin_gstreamer_alsasink_plays_every_frame() {
    let env = plugin_env();
    let mut server = env.serve(&["--sink", "wav:out.wav"]);
    let pipeline = [
        "-q",
        "audiotestsrc",
        "num-buffers=20",
        "samplesperbuffer=1024",
        "!",
        "audio/x-raw,rate=48000,channels=2,format=S16LE",
        "!",
        "alsasink",
        "device=dmixrs",
    ];
    let r = run_tool(&env, "gst-launch-1.0", "gstreamer1.0-tools and gstreamer1.0-alsa", &pipeline);
    assert!(r.status.success(), "{}", r.stderr);
    server.signal(Signal::SIGINT);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let left: Vec<i32> = got.iter().step_by(2).copied().collect();
    let first = left.iter().position(|&v| v != 0).expect("nothing was played");
    let last = left.iter().rposition(|&v| v != 0).unwrap();
    // The sine starts on a zero: 20480 frames show as 20479 or 20480 from first to last.
    assert!((20479..=20480).contains(&(last - first + 1)), "{} frames played", last - first + 1);
    // A gap would show as a run of silence inside.
    let longest_zero_run = left[first..=last].split(|&v| v != 0).map(<[i32]>::len).max().unwrap_or(0);
    assert!(longest_zero_run < 4, "a gap of {longest_zero_run} frames");
}

/// speaker-test -c 2 -l 1: one pass over the two channels, left then right, exit 0.
#[test]
fn alsa_plugin_speaker_test_plays_each_channel() {
    let env = plugin_env();
    let mut server = freewheel_server(&env, "1");
    let r = run_tool(&env, "speaker-test", "alsa-utils", &["-D", "dmixrs", "-c", "2", "-l", "1", "-t", "sine"]);
    assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let frames: Vec<&[i32]> = got.chunks_exact(2).collect();
    let left_only = frames.iter().filter(|f| f[0] != 0 && f[1] == 0).count();
    let right_only = frames.iter().filter(|f| f[0] == 0 && f[1] != 0).count();
    // Each channel sounds for about a second (speaker-test's default test length).
    assert!(left_only > 24000 && right_only > 24000, "left {left_only}, right {right_only} frames");
    let first_right = frames.iter().position(|f| f[1] != 0).unwrap();
    let last_left = frames.iter().rposition(|f| f[0] != 0).unwrap();
    assert!(last_left < first_right, "the channels overlap: left then right expected");
}

/// aplay stopped (SIGINT: it aborts and closes the PCM) while a third client holds a
/// freewheel render: what it had queued is taken back, bit-exact; the others are untouched.
#[test]
fn alsa_plugin_stopped_aplay_leaves_no_trace_of_its_queue() {
    const HELD: usize = 8192;
    let env = plugin_env();
    let b = signal(96000, 2, 550.0, 0.3, 35);
    let c = signal(20000, 2, 660.0, 0.3, 36);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    let mut server = freewheel_server(&env, "2");
    let mut pc = env.spawn("dmix-play", &["--name", "c", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-"]);
    let mut c_in = pc.stdin();
    let bytes = |s: &[i16]| s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    use std::io::Write;
    c_in.write_all(&bytes(&c[..HELD * 2])).unwrap();
    let pb = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "b.wav"]);
    wait_hw_ptr(&env, "default", HELD as u64);
    // Wait (bounded) until aplay has queued past the held frame.
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    wait_for_snapshot(&stat, &sock, "aplay never queued 100 ms ahead", |s| {
        assert_eq!(s.server.hw_ptr, HELD as u64, "C must hold the server");
        s.clients.iter().find(|x| x.name == "aplay").and_then(|x| x.queued_ms).unwrap_or(0.0) > 100.0
    });
    pb.signal(Signal::SIGINT);
    let _ = finish(pb);
    c_in.write_all(&bytes(&c[HELD * 2..])).unwrap();
    drop(c_in);
    assert!(pc.wait().success(), "{}", pc.finished_stderr());
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let at = |s: &[i16], i: usize| i32::from(*s.get(i).unwrap_or(&0));
    let want = padded((0..c.len()).map(|i| at(&c, i) + if i < HELD * 2 { at(&b, i) } else { 0 }).collect(), 2);
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(got == want, "render differs from C + B's first {HELD} frames at {first:?}");
}

/// The server killed mid-stream: aplay gets an error and exits, never hangs.
#[test]
fn alsa_plugin_server_killed_mid_stream_is_an_error_not_a_hang() {
    let env = plugin_env();
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.3, 37));
    let server = env.serve(&["--sink", "null"]);
    let p = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "long.wav"]);
    wait_for_clients(&env, "default", "play", 1);
    server.signal(Signal::SIGKILL);
    let r = finish(p);
    assert!(!r.status.success(), "aplay exited 0 after its server died");
}

/// A server that hangs up on every connection before its welcome (issue 14): aplay fails
/// to open the PCM with the plugin's one line, after the client's retries, never plays
/// "successfully" into nothing.
#[test]
fn alsa_plugin_a_server_that_hangs_up_at_once_fails_the_open() {
    let env = plugin_env();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(4800, 2, 440.0, 0.3, 14));
    let fake = HangUpServer::start(&env.socket("default"), None);
    let r = run_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "a.wav"]);
    assert!(!r.status.success(), "aplay exited 0 against a server that hangs up: {}", r.stderr);
    assert!(r.stderr.contains("dmixrs: the server went away"), "{}", r.stderr);
    assert!(fake.accepted() >= 2, "the plugin never tried again");
}

/// The application's buffer is its latency: aplay --buffer-time=100000 shows as 100 ms in
/// dmix-stat, and its queue stays within it.
#[test]
fn alsa_plugin_buffer_size_is_the_clients_latency() {
    let env = plugin_env();
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.3, 38));
    let _server = env.serve(&["--sink", "null", "--period", "64"]);
    let p = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "--buffer-time=100000", "long.wav"]);
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = 0;
    while seen < 10 {
        assert!(std::time::Instant::now() < deadline, "aplay never showed its latency");
        let s = dmix::stat::snapshot(&stat, &sock).unwrap();
        stat.ring().wait_hw_ptr(s.server.hw_ptr + 20 * 64, std::time::Duration::from_secs(1));
        let Some(c) = s.clients.iter().find(|c| c.name == "aplay") else { continue };
        let (lat, q) = (c.latency_ms.unwrap_or(0.0), c.queued_ms.unwrap_or(0.0));
        if q <= 64.0 / 48.0 {
            continue;
        }
        seen += 1;
        assert!((lat - 100.0).abs() <= 64.0 / 48.0, "latency {lat} ms");
        assert!(q <= lat + 2.0 * 64.0 / 48.0, "queued {q} ms over the latency {lat} ms");
    }
    p.signal(Signal::SIGKILL);
    let _ = finish(p);
}

/// arecord -D dmixrs records what is played (the monitor), exactly, when started before
/// the render: a freewheel server does not run more than the recorder's buffer ahead of it.
#[test]
fn alsa_plugin_arecord_records_what_is_played() {
    let env = plugin_env();
    let a = signal(96000, 2, 440.0, 0.4, 39);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let mut server = freewheel_server(&env, "1");
    let rec = spawn_tool(
        &env,
        "arecord",
        "alsa-utils",
        &["-q", "-D", "dmixrs", "-f", "S16_LE", "-r", "48000", "-c", "2", "-s", "96000", "rec.wav"],
    );
    wait_for_clients(&env, "default", "tee", 1);
    let r = env.run("dmix-play", &["a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let r = finish(rec);
    assert!(r.status.success(), "arecord: {}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("rec.wav"));
    let want: Vec<i32> = a.iter().map(|&v| i32::from(v)).collect();
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(got == want, "the recording is not what was played (first difference at {first:?})");
}

/// With `source capture`, arecord records the server's shared input (dmix-serve
/// --capture), as dsnoop would, exactly.
#[test]
fn alsa_plugin_arecord_source_capture_records_the_shared_input() {
    let env = plugin_env_with("pcm.mic { type dmixrs source capture }");
    let input = signal(48000, 2, 330.0, 0.4, 40);
    write_wav_i16(&env.path("in.wav"), 48000, 2, &input);
    let _server = env.serve(&["--sink", "null", "--freewheel", "--capture", "wav:in.wav", "--wait-readers", "1"]);
    let r = run_tool(
        &env,
        "arecord",
        "alsa-utils",
        &["-q", "-D", "mic", "-f", "S16_LE", "-r", "48000", "-c", "2", "-s", "48000", "rec.wav"],
    );
    assert!(r.status.success(), "arecord: {}", r.stderr);
    let (_, got) = read_wav(&env.path("rec.wav"));
    let want: Vec<i32> = input.iter().map(|&v| i32::from(v)).collect();
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(got == want, "the recording is not the input (first difference at {first:?}, {} samples)", got.len());
}

/// Pause (aplay -i, driven in a terminal by tmux): paused, the PCM's queue is taken back
/// and stays empty while the server runs on; resumed, it plays again.
#[test]
fn alsa_plugin_pause_retracts_and_resume_plays_on() {
    let env = plugin_env();
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.3, 41));
    let _server = env.serve(&["--sink", "null"]);
    let t = Tmux::new("pause");
    let tmux = |args: &[&str]| t.run(args);
    let cmd = format!(
        "cd {} && XDG_RUNTIME_DIR={} ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:{} aplay -i -q -D dmixrs long.wav; exec cat",
        env.path("").display(),
        env.runtime_dir().display(),
        env.path("asound.conf").display()
    );
    let started = tmux(&["new-session", "-d", "-s", "p", "-x", "80", "-y", "10", &cmd]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    // Waits (bounded) until aplay's queue, over 20 periods of the server, satisfies `ok`.
    let wait_queue = |what: &str, ok: &dyn Fn(f64) -> bool| {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut streak = 0;
        while streak < 20 {
            assert!(std::time::Instant::now() < deadline, "aplay never {what}");
            let s = dmix::stat::snapshot(&stat, &sock).unwrap();
            let q = s.clients.iter().find(|c| c.name == "aplay").and_then(|c| c.queued_ms);
            streak = if q.is_some_and(ok) { streak + 1 } else { 0 };
            stat.ring().wait_hw_ptr(s.server.hw_ptr + 256, std::time::Duration::from_millis(100));
        }
    };
    wait_queue("played", &|q| q > 20.0);
    let snap = dmix::stat::snapshot(&stat, &sock).unwrap();
    let slot = snap.clients.iter().find(|c| c.name == "aplay").unwrap().slot as usize;
    let counters = stat.ring().counters(slot as usize);
    assert!(tmux(&["send-keys", "-t", "p", " "]).status.success());
    // Paused: the slot says "ended" where the server was when the queue was taken back, so
    // nothing of it plays on (without the retraction, the queue would drain for the
    // buffer's length, and the slot would not say so).
    let deadline = std::time::Instant::now() + DEADLINE;
    while counters.flags.load(std::sync::atomic::Ordering::Acquire) & dmix::ring::layout::CLIENT_DRAINING == 0 {
        assert!(std::time::Instant::now() < deadline, "aplay never paused");
        stat.ring().wait_any(std::time::Duration::from_millis(10));
    }
    let end = counters.end_ptr.load(std::sync::atomic::Ordering::Acquire);
    let hw = stat.ring().hw_ptr();
    assert!(end <= hw + 256, "paused with {} frames still queued", end.saturating_sub(hw));
    wait_queue("paused with an empty queue", &|q| q == 0.0);
    assert!(tmux(&["send-keys", "-t", "p", " "]).status.success());
    wait_queue("resumed", &|q| q > 20.0);
}

/// drain returns once the last frame was played, not when it was queued: aplay of one second
/// with a 900 ms buffer on a paced server writes all but 100 ms at once and then drains; the
/// server has taken at least the whole second between aplay's start and its exit. (A drain
/// that returned at once would leave it ~100 ms.)
#[test]
fn alsa_plugin_drain_returns_after_the_last_frame_played() {
    let env = plugin_env();
    write_wav_i16(&env.path("one.wav"), 48000, 2, &signal(48000, 2, 440.0, 0.3, 42));
    let _server = env.serve(&["--sink", "null"]);
    let stat = stat_conn(&env, "default");
    let before = stat.ring().hw_ptr();
    let r = run_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "--buffer-time=900000", "one.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let played = stat.ring().hw_ptr() - before;
    assert!(played >= 48000, "aplay returned from drain after only {played} frames of its 48000 were played");
}

/// The README's ALSA setup, as written: its `~/.asoundrc` lines (with the library named as it
/// says, since the test does not install it) make dmixrs the default device through plug, so
/// a plain `aplay FILE` plays into dmix-serve, exactly when the file is already in the
/// server's format, converted (rate, channels) when it is not.
#[test]
fn alsa_plugin_readme_setup_makes_it_the_default_device() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme.split("and in `~/.asoundrc`:").nth(1).expect("README: the ~/.asoundrc lines");
    let lines = after.split("```").nth(1).expect("README: a code block of ~/.asoundrc lines");
    let named =
        readme.split('`').find(|s| s.starts_with("pcm_type.dmixrs")).expect("README: pcm_type.dmixrs { lib ... }");
    let named = named.replace("/path/to/libasound_module_pcm_dmixrs.so", plugin_so().to_str().unwrap());
    assert!(named.contains(plugin_so().to_str().unwrap()), "README's pcm_type line does not say /path/to/...: {named}");
    let mut env = Env::new();
    // HOME is the test's directory: ~/.asoundrc is the test's own. The stock configuration
    // alone, as on a user's machine (it reads ~/.asoundrc), and no XDG asoundrc.
    std::fs::write(env.path(".asoundrc"), format!("{named}\n{lines}")).unwrap();
    env.set_env("ALSA_CONFIG_PATH", "/usr/share/alsa/alsa.conf");
    env.set_env("XDG_CONFIG_HOME", env.path("config").to_str().unwrap());
    let s = signal(30000, 2, 440.0, 0.4, 43);
    write_wav_i16(&env.path("s16.wav"), 48000, 2, &s);
    let mut server = freewheel_server(&env, "1");
    let r = run_tool(&env, "aplay", "alsa-utils", &["-q", "s16.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let want = padded(s.iter().map(|&v| i32::from(v)).collect(), 2);
    assert!(is_then_silence(&got, &want), "the default device did not play the file exactly");
    // 22050 Hz mono: plug converts the rate and gives the one channel to both.
    let m: Vec<i16> = signal(22050, 1, 440.0, 0.4, 44);
    write_wav_i16(&env.path("mono.wav"), 22050, 1, &m);
    let mut server = freewheel_server(&env, "1");
    let r = run_tool(&env, "aplay", "alsa-utils", &["-q", "mono.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let mut frames: Vec<&[i32]> = got.chunks(2).collect();
    while frames.last().is_some_and(|f| f == &[0, 0]) {
        frames.pop();
    }
    assert!((47500..=48600).contains(&frames.len()), "{} frames for one second at 22050 Hz", frames.len());
    assert!(frames.iter().all(|f| f[0] == f[1]), "mono did not reach both channels alike");
    assert!(frames.iter().any(|f| f[0].abs() > 8000), "silence instead of the tone");
}

/// What alsa-lib reports of the plugin's queue (examples/alsa_queue.rs, built by cargo test):
/// 4800 frames written into a server that holds (freewheel, waiting for a second client)
/// leave snd_pcm_avail = buffer - 4800 and snd_pcm_delay = 4800; under an ALSA sink the delay
/// adds the device's buffer, which the server keeps full: 4 periods by default,
/// --device-buffer otherwise, shown by dmix-stat. (Before, the device buffer was the whole
/// 1 s ring: every sound reached the speaker a second late.)
#[test]
fn alsa_plugin_avail_and_delay_count_the_queue_and_the_device_buffer() {
    let env = plugin_env_with("pcm.dmixrs { type dmixrs }\npcm.dev { type null }");
    let probe = bin("dmix-serve").parent().unwrap().join("examples/alsa_queue");
    assert!(probe.exists(), "{} is missing: cargo test builds the examples", probe.display());
    let r = env.run("dmix-serve", &["--sink", "null", "--device-buffer", "300"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("--device-buffer 300: at least two periods (512 frames)"), "{}", r.stderr);
    for (sink_args, device_buffer) in [
        (&["--sink", "null"][..], None),
        (&["--sink", "alsa:dev"][..], Some(1024)),
        (&["--sink", "alsa:dev", "--device-buffer", "2048"][..], Some(2048)),
    ] {
        let mut server = env.serve(&[sink_args, &["--freewheel", "--wait-clients", "2"]].concat());
        let shown = server.stderr();
        let r = env.run("dmix-stat", &["--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
        assert_eq!(v["server"]["device_buffer_frames"].as_u64(), device_buffer, "{sink_args:?}: {}", r.stdout);
        if let Some(d) = device_buffer {
            assert!(shown.contains(&format!("device buffer {d} frames")), "{sink_args:?}: {shown}");
        }
        let mut p = Proc::spawn("alsa_queue", env.program(&probe).args(["dmixrs", "9600", "4800"]));
        assert!(p.wait().success(), "{sink_args:?}: {}", p.finished_stderr());
        let line = p.stdout();
        let figures: Vec<i64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        let [buffer, avail, delay] = figures[..] else { panic!("{sink_args:?}: {line}") };
        assert_eq!(buffer, 9600, "{line}");
        assert_eq!(avail, buffer - 4800, "{sink_args:?}: {line}");
        assert_eq!(delay, 4800 + device_buffer.map_or(0, |d| d as i64), "{sink_args:?}: {line}");
        server.signal(Signal::SIGTERM);
        assert!(server.wait().success(), "{}", server.finished_stderr());
    }
}

/// A paced ALSA sink without a sound card: one dmix-serve playing into another through the
/// plugin (the upstream server's clock paces it, as a card would). A tone played into the
/// downstream server reaches the upstream render bit-exact, and dmix-play's drain returns
/// only once its last frame was heard, i.e. after the downstream device buffer (10240 frames,
/// --device-buffer) was played too: the upstream server has taken the tone's end by then,
/// give or take a period.
/// Returning when the downstream server took it would be 10240 frames early.
#[test]
fn alsa_plugin_a_server_playing_into_another_drains_when_heard() {
    let env = plugin_env_with("pcm.up { type dmixrs server \"upstream\" }");
    let mut upstream = env.serve(&["--name", "upstream", "--sink", "wav:up.wav"]);
    let mut downstream = env.serve(&["--sink", "alsa:up", "--device-buffer", "10240"]);
    let shown = downstream.stderr();
    let stat = stat_conn(&env, "default");
    let granted = stat.ring().device_buffer_frames();
    assert!((9984..=10240).contains(&granted), "device buffer {granted}: {shown}");
    let tone = signal(24000, 2, 440.0, 0.3, 45);
    write_wav_i16(&env.path("tone.wav"), 48000, 2, &tone);
    let up = stat_conn(&env, "upstream");
    let r = env.run("dmix-play", &["tone.wav"]);
    let taken_at_exit = up.ring().hw_ptr();
    assert!(r.status.success(), "{}", r.stderr);
    downstream.signal(Signal::SIGTERM);
    assert!(downstream.wait().success(), "{}", downstream.finished_stderr());
    drop(up);
    upstream.signal(Signal::SIGTERM);
    assert!(upstream.wait().success(), "{}", upstream.finished_stderr());
    let (_, got) = read_wav(&env.path("up.wav"));
    let want: Vec<i32> = tone.iter().map(|&v| i32::from(v)).collect();
    let lead = want.iter().position(|&v| v != 0).unwrap();
    let start = got.iter().position(|&v| v != 0).expect("the tone never reached the upstream server") - lead;
    assert!(got.len() >= start + want.len(), "the upstream render stops inside the tone");
    assert!(got[start..start + want.len()] == want[..], "the tone did not pass both servers exactly");
    let end = ((start + want.len()) / 2) as u64;
    // Within two periods (measured: 192 frames short, every run: the downstream server's
    // blocking write returns as soon as a period of the plugin's buffer is free).
    assert!(
        taken_at_exit + 512 >= end,
        "dmix-play returned when the upstream server was at frame {taken_at_exit}, before the tone's end at {end}"
    );
}

/// An underrun is an xrun: aplay stopped (SIGSTOP) until the server has played past all it
/// wrote gets -EPIPE when it resumes, says so, recovers with snd_pcm_prepare and plays on to
/// exit 0; its slot counts the underrun (dmix-stat's UNDERRUNS).
#[test]
fn alsa_plugin_underrun_is_an_xrun_that_aplay_recovers_from() {
    use std::sync::atomic::Ordering;
    let env = plugin_env();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000, 2, 440.0, 0.3, 46));
    let _server = env.serve(&["--sink", "null"]);
    let mut p = spawn_tool(&env, "aplay", "alsa-utils", &["-D", "dmixrs", "--buffer-time=100000", "a.wav"]);
    let snapshot = wait_for_clients(&env, "default", "play", 1);
    let slot = snapshot.clients.iter().find(|c| c.role == "play").unwrap().slot;
    let stat = stat_conn(&env, "default");
    let counters = stat.ring().counters(slot as usize);
    let deadline = std::time::Instant::now() + DEADLINE;
    // Started: something is queued ahead of the server.
    while counters.appl_ptr.load(Ordering::Acquire) <= stat.ring().hw_ptr() {
        assert!(std::time::Instant::now() < deadline, "aplay never started");
        stat.ring().wait_any(std::time::Duration::from_millis(50));
    }
    p.signal(Signal::SIGSTOP);
    let end = counters.appl_ptr.load(Ordering::Acquire);
    wait_hw_ptr(&env, "default", end + 512);
    assert_eq!(counters.underruns.load(Ordering::Relaxed), 0);
    p.signal(Signal::SIGCONT);
    while counters.underruns.load(Ordering::Relaxed) == 0 {
        assert!(p.exited().is_none(), "aplay ended without an xrun counted: {}", p.stderr());
        assert!(std::time::Instant::now() < deadline, "no xrun counted");
        stat.ring().wait_any(std::time::Duration::from_millis(50));
    }
    let r = finish(p);
    assert!(r.status.success(), "aplay did not recover: {}", r.stderr);
    assert!(r.stderr.contains("underrun"), "aplay saw no xrun: {}", r.stderr);
}

/// The PCM's keys: `server` as a socket path and `name` (what dmix-stat shows); a key the
/// plugin does not know, a bad `source` and a server that is not there are each one line
/// from the plugin and a failed open, never a hang.
#[test]
fn alsa_plugin_configuration_keys_and_their_errors() {
    // A socket path outside the runtime dir, in a directory of the test's own: 0700, as
    // dmix-serve requires of a socket's directory.
    let sockdir = tempfile::Builder::new().prefix("dmixrs-keys").tempdir().unwrap();
    std::fs::set_permissions(sockdir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let sock = sockdir.path().join("music.sock");
    let env = plugin_env_with(&format!(
        "pcm.music {{ type dmixrs server \"{}\" name \"music\" }}\n\
         pcm.unknown {{ type dmixrs colour blue }}\n\
         pcm.badsource {{ type dmixrs source mic }}\n\
         pcm.nobody {{ type dmixrs server \"nobody\" }}",
        sock.display()
    ));
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(4800, 2, 440.0, 0.3, 47));
    for (pcm, tool, why) in [
        ("unknown", "aplay", "dmixrs: unknown key colour (known: server, name, volume, source)"),
        ("badsource", "arecord", "dmixrs: source mic: expected monitor or capture"),
        ("nobody", "aplay", "dmixrs: no server at"),
    ] {
        let args =
            if tool == "aplay" { vec!["-q", "-D", pcm, "a.wav"] } else { vec!["-q", "-D", pcm, "-d", "1", "x.wav"] };
        let r = run_tool(&env, tool, "alsa-utils", &args);
        assert!(!r.status.success(), "{pcm}: {tool} opened it");
        assert!(r.stderr.contains(why), "{pcm}: {}", r.stderr);
    }
    let mut server = env.serve(&["--sink", "null", "--socket", sock.to_str().unwrap()]);
    let p = spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "music", "a.wav"]);
    let stat = dmix::client::Connection::open(sock.to_str().unwrap(), dmix::protocol::Role::Stat, "test", 0).unwrap();
    wait_for_snapshot(&stat, &sock, "no client named music", |s| {
        s.clients.iter().any(|c| c.role == "play" && c.name == "music")
    });
    let r = finish(p);
    assert!(r.status.success(), "{}", r.stderr);
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    assert!(!sock.exists(), "the server left its socket behind");
}

/// PortAudio lists devices by opening and closing each one (PyAudio() does, and so do many
/// GUI programs): those opens are not players. A server started with --exit-when-idle (as
/// socket activation starts it) is still there for the program's real stream, which plays
/// exactly. Uses Debian's python3-pyaudio (PortAudio's ALSA host).
#[test]
fn alsa_plugin_portaudio_device_probe_is_not_a_player() {
    let env = plugin_env();
    let mut server = env.serve(&["--sink", "wav:out.wav", "--exit-when-idle"]);
    let tone: Vec<i16> = signal(24000, 2, 440.0, 0.3, 82);
    std::fs::write(env.path("tone.raw"), tone.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let script = r#"
import sys
try:
    import pyaudio
except ImportError:
    sys.exit("install the Debian package python3-pyaudio")
pa = pyaudio.PyAudio()  # opens and closes every ALSA device to list it
names = [pa.get_device_info_by_index(i)["name"] for i in range(pa.get_device_count())]
stream = pa.open(format=pyaudio.paInt16, channels=2, rate=48000, output=True,
                 output_device_index=names.index("dmixrs"), frames_per_buffer=1024)
stream.write(open("tone.raw", "rb").read())
stream.stop_stream()
stream.close()
pa.terminate()
"#;
    std::fs::write(env.path("pa.py"), script).unwrap();
    // Debian's python3, which python3-pyaudio is built for (another python3 may come first
    // on PATH).
    let r = run_tool(&env, "/usr/bin/python3", "python3-pyaudio", &["pa.py"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let want: Vec<i32> = tone.iter().map(|&v| i32::from(v)).collect();
    let lead = got.iter().position(|&v| v != 0).expect("nothing was played");
    let lead = lead - lead % 2;
    // PortAudio stops a blocking stream with snd_pcm_drop (its ALSA host never drains: "tends
    // to lock up"), so what it had queued is dropped, as a card would drop its buffer: the
    // render is an exact prefix of the tone, cut cleanly, missing at most the stream's buffer.
    let n = got[lead..].iter().zip(&want).take_while(|(a, b)| a == b).count();
    assert!(
        got[lead + n..].iter().all(|&v| v == 0),
        "PortAudio's stream is not a clean prefix of the tone ({n} samples)"
    );
    assert!(n + 2 * 4096 >= want.len(), "only {} of {} frames of PortAudio's stream played", n / 2, want.len() / 2);
}

/// The shared input ends before the recording asked for does (arecord -s beyond a file
/// input): arecord reads all there was, exactly, then fails the read (EIO) and exits non-zero,
/// rather than waiting for ever. Before: poll said "not yet" for the last frames (fewer than
/// avail_min) while the waiter thread said "readable", and the two spun at 100 % of a core
/// for ever, deaf to SIGTERM; the same end of input, reached with the capture racing the
/// reader, made alsa_plugin_arecord_source_capture_records_the_shared_input hang about one
/// run in 200 under load.
#[test]
fn alsa_plugin_arecord_past_the_end_of_the_shared_input_is_an_error_not_a_hang() {
    let env = plugin_env_with("pcm.mic { type dmixrs source capture }");
    let input = signal(48000, 2, 330.0, 0.4, 83);
    write_wav_i16(&env.path("in.wav"), 48000, 2, &input);
    let _server = env.serve(&["--sink", "null", "--freewheel", "--capture", "wav:in.wav", "--wait-readers", "1"]);
    let r = run_tool(
        &env,
        "arecord",
        "alsa-utils",
        &["-q", "-D", "mic", "-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-s", "72000", "rec.raw"],
    );
    assert!(!r.status.success(), "arecord claimed 72000 frames of a 48000-frame input: {}", r.stderr);
    assert!(r.stderr.contains("read error"), "{}", r.stderr);
    let got = std::fs::read(env.path("rec.raw")).unwrap();
    let want: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert!(got == want, "the recording is not the input ({} of {} bytes)", got.len(), want.len());
}
