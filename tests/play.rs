//! dmix-serve + dmix-play end to end: exact freewheel renders, clients dying or stopping
//! mid-stream, the paced clock, the ALSA sink through alsa-lib's file plugin.

use std::io::Write;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::util::*;

const RENDER: &[&str] = &["--freewheel", "--wait-clients", "2", "--exit-when-idle"];

fn clamp16(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// The mix of two S16 signals at the mix scale (24-bit), clamped there, padded with silence
/// to a whole number of 256-frame periods.
fn expected_mix24(a: &[i16], b: &[i16], channels: usize) -> Vec<i32> {
    let n = a.len().max(b.len());
    let mut v: Vec<i32> = (0..n)
        .map(|i| {
            let sum = (i32::from(*a.get(i).unwrap_or(&0)) << 8) + (i32::from(*b.get(i).unwrap_or(&0)) << 8);
            sum.clamp(-(1 << 23), (1 << 23) - 1)
        })
        .collect();
    let period = 256 * channels;
    v.resize(n.div_ceil(period) * period, 0);
    v
}

/// The expected S16 render: the clamped integer sum.
fn expected_sum16(a: &[i16], b: &[i16], channels: usize) -> Vec<i32> {
    let v: Vec<i32> = expected_mix24(a, b, channels).into_iter().map(|m| m >> 8).collect();
    // Cross-check the rule: at 16 bits it is the plain clamped sum.
    for (i, &x) in v.iter().enumerate().take(a.len().min(b.len())) {
        assert_eq!(x, clamp16(i32::from(a[i]) + i32::from(b[i])));
    }
    v
}

fn two_signals(env: &Env) -> (Vec<i16>, Vec<i16>) {
    // Loud enough that the sum clips in places: the clamp is part of what is checked.
    let a = signal(48000, 2, 440.0, 0.6, 1);
    let b = signal(30000, 2, 660.0, 0.6, 2);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    (a, b)
}

fn render_two(env: &Env, format: &str) {
    let out = env.path("out.wav");
    let out = format!("wav:{}", out.display());
    let mut server = env.serve(&[&["--sink", &out, "-f", format][..], RENDER].concat());
    let mut a = env.spawn("dmix-play", &["a.wav"]);
    let mut b = env.spawn("dmix-play", &["b.wav"]);
    assert!(a.wait().success(), "a: {}", a.finished_stderr());
    assert!(b.wait().success(), "b: {}", b.finished_stderr());
    assert!(server.wait().success(), "server: {}", server.finished_stderr());
}

#[test]
fn play_two_clients_sum_is_bit_exact() {
    let env = Env::new();
    let (a, b) = two_signals(&env);
    render_two(&env, "S16_LE");
    let (spec, got) = read_wav(&env.path("out.wav"));
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 48000, 16));
    let want = expected_sum16(&a, &b, 2);
    assert!(want.contains(&(i16::MAX as i32)), "the test signals should clip somewhere");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "render differs from the clamped sum");
}

#[test]
fn play_s32_render_follows_the_conversion_rule() {
    let env = Env::new();
    let (a, b) = two_signals(&env);
    render_two(&env, "S32_LE");
    let (spec, got) = read_wav(&env.path("out.wav"));
    assert_eq!(spec.bits_per_sample, 32);
    // S16 in: mix = s << 8; S32 out = clamp24(sum) << 8.
    let want: Vec<i32> = expected_mix24(&a, &b, 2).into_iter().map(|m| m << 8).collect();
    if let Some(i) = (0..want.len()).find(|&i| got.get(i) != Some(&want[i])) {
        panic!("S32 render differs from the documented rule at {i}: got {:?}, want {}", got.get(i), want[i]);
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn play_float_render_follows_the_conversion_rule() {
    let env = Env::new();
    let (a, b) = two_signals(&env);
    render_two(&env, "FLOAT_LE");
    let (spec, got) = read_wav(&env.path("out.wav"));
    assert_eq!(spec.sample_format, hound::SampleFormat::Float);
    // FLOAT out = clamp24(sum) / 2^23, exact in an f32.
    let want: Vec<i32> =
        expected_mix24(&a, &b, 2).into_iter().map(|m| (m as f32 / 8_388_608.0).to_bits() as i32).collect();
    assert!(got == want, "FLOAT render differs from the documented rule");
}

/// Runs a render where client B plays from a pipe and is ended by `end_b` mid-stream, then
/// checks that the output is A plus a prefix of B and nothing else: B's part stops cleanly,
/// A's part is exact, the server survives and exits when A is done.
fn survivor_is_exact(end_b: Signal, b_exit_ok: impl Fn(std::process::ExitStatus) -> bool) {
    let env = Env::new();
    let a = signal(96000, 2, 440.0, 0.3, 3);
    let b = signal(96000, 2, 550.0, 0.3, 4);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let out = env.path("out.wav");
    let mut server = env.serve(&[&["--sink", &format!("wav:{}", out.display())][..], RENDER].concat());
    let mut pa = env.spawn("dmix-play", &["a.wav"]);
    let mut pb = env.spawn("dmix-play", &["-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-"]);
    let mut stdin = pb.stdin();
    let bytes: Vec<u8> = b.iter().flat_map(|s| s.to_le_bytes()).collect();
    // The writer may block on a full pipe; B's end makes its writes fail, which is fine.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    // The freewheel server only passes frame 9600 once B has supplied it: B is mid-stream.
    wait_hw_ptr(&env, "default", 9600);
    pb.signal(end_b);
    assert!(b_exit_ok(pb.wait()), "b: {}", pb.finished_stderr());
    writer.join().unwrap();
    assert!(pa.wait().success(), "a: {}", pa.finished_stderr());
    assert!(server.wait().success(), "server: {}", server.finished_stderr());
    let (_, got) = read_wav(&out);
    assert!(got.len() >= a.len(), "render shorter than the survivor's file");
    // got - a must be a prefix of b, then silence.
    let diff: Vec<i32> = got.iter().enumerate().map(|(i, &v)| v - i32::from(*a.get(i).unwrap_or(&0))).collect();
    let k = diff.iter().rposition(|&v| v != 0).map_or(0, |p| p + 1);
    assert!(k > 0, "B was never heard: the test did not exercise a mid-stream end");
    assert!(k <= 96000 * 2, "more of B was played than B was given");
    for i in 0..k {
        assert_eq!(diff[i], i32::from(b[i]), "sample {i}: B's part is not a clean prefix (k = {k})");
    }
}

#[test]
fn play_survivor_is_exact_when_the_other_client_is_killed() {
    survivor_is_exact(Signal::SIGKILL, |s| !s.success());
}

#[test]
fn play_sigint_stops_cleanly_and_releases_the_slot() {
    // 130 is the exit code of a stop by SIGINT.
    survivor_is_exact(Signal::SIGINT, |s| s.code() == Some(130));
}

#[test]
fn play_files_are_gapless_back_to_back() {
    let env = Env::new();
    let a = signal(10000, 2, 440.0, 0.3, 5);
    let b = signal(7001, 2, 880.0, 0.3, 6);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    let out = env.path("out.wav");
    let mut server = env.serve(&[
        "--sink",
        &format!("wav:{}", out.display()),
        "--freewheel",
        "--wait-clients",
        "1",
        "--exit-when-idle",
    ]);
    let r = env.run("dmix-play", &["a.wav", "b.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success());
    let (_, got) = read_wav(&out);
    let want: Vec<i32> = a.iter().chain(&b).map(|&s| i32::from(s)).collect();
    assert_eq!(&got[..want.len()], &want[..]);
    assert!(got[want.len()..].iter().all(|&v| v == 0));
}

#[test]
fn play_paced_null_sink_runs_in_real_time() {
    let env = Env::new();
    write_wav_i16(&env.path("two.wav"), 48000, 2, &signal(96000, 2, 440.0, 0.3, 7));
    let _server = env.serve(&["--sink", "null"]);
    let t = Instant::now();
    let r = env.run("dmix-play", &["two.wav"]);
    let secs = t.elapsed().as_secs_f64();
    assert!(r.status.success(), "{}", r.stderr);
    // A 2 s file takes about 2 s: not 0 (unpaced), not 4 (double-paced).
    assert!((1.8..3.0).contains(&secs), "a 2 s file took {secs:.2} s");
}

#[test]
fn play_alsa_sink_writes_the_mix_through_alsa_lib() {
    let mut env = Env::new();
    let (a, b) = two_signals(&env);
    let raw = env.path("alsa-out.raw");
    let conf = env.path("asound-test.conf");
    std::fs::write(
        &conf,
        format!(
            "pcm.dmixtest {{\n  type file\n  slave.pcm \"null\"\n  file \"{}\"\n  format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    env.set_env("ALSA_CONFIG_PATH", &format!("/usr/share/alsa/alsa.conf:{}", conf.display()));
    let mut server = env.serve(&[&["--sink", "alsa:dmixtest"][..], RENDER].concat());
    let mut pa = env.spawn("dmix-play", &["a.wav"]);
    let mut pb = env.spawn("dmix-play", &["b.wav"]);
    assert!(pa.wait().success(), "a: {}", pa.finished_stderr());
    assert!(pb.wait().success(), "b: {}", pb.finished_stderr());
    assert!(server.wait().success(), "server: {}", server.finished_stderr());
    let bytes = std::fs::read(&raw).unwrap();
    let got: Vec<i32> = bytes.chunks_exact(2).map(|c| i32::from(i16::from_le_bytes([c[0], c[1]]))).collect();
    let want = expected_sum16(&a, &b, 2);
    assert!(got.len() >= want.len(), "ALSA got {} samples, want {}", got.len(), want.len());
    assert!(got[..want.len()] == want[..], "ALSA output differs from the clamped sum");
    assert!(got[want.len()..].iter().all(|&v| v == 0), "ALSA output has trailing non-silence");
}

#[test]
fn play_resamples_a_44k_flac_and_reads_wav_from_stdin() {
    let env = Env::new();
    // 1 s of 1 kHz at 44.1 kHz, as FLAC, and the same as a WAV piped to stdin.
    let src: Vec<i16> = (0..44100 * 2)
        .map(|i| (0.4 * 32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * (i / 2) as f64 / 44100.0).sin()) as i16)
        .collect();
    write_wav_i16(&env.path("src.wav"), 44100, 2, &src);
    let status = std::process::Command::new("flac")
        .args(["-s", "-f", "-o"])
        .arg(env.path("src.flac"))
        .arg(env.path("src.wav"))
        .status()
        .expect("flac (Debian package flac) is needed to make the fixture");
    assert!(status.success());
    for input in ["src.flac", "-"] {
        let out = env.path("out.wav");
        let sink = format!("wav:{}", out.display());
        let mut server = env.serve(&["--sink", &sink, "--freewheel", "--wait-clients", "1", "--exit-when-idle"]);
        let mut p = env.spawn("dmix-play", &[input]);
        if input == "-" {
            let mut stdin = p.stdin();
            stdin.write_all(&std::fs::read(env.path("src.wav")).unwrap()).unwrap();
        }
        assert!(p.wait().success(), "{input}: {}", p.finished_stderr());
        assert!(server.wait().success());
        let (spec, got) = read_wav(&out);
        assert_eq!(spec.sample_rate, 48000);
        // 48000 frames of audio, padded to whole periods with silence.
        assert_eq!(got.len(), 48000usize.div_ceil(256) * 256 * 2, "{input}");
        let left: Vec<i32> = got[..96000].iter().step_by(2).copied().collect();
        let ups = left.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        assert!((999..=1000).contains(&ups), "{input}: {ups} cycles in 1 s");
    }
}

/// Issue 7: a stop retracts what the player queued but the server had not taken. B queues
/// far ahead while a third client C holds the freewheel server at frame 8192; B is then
/// stopped (SIGINT). The render must hold B up to frame 8192 and not one sample after, and
/// A and C exactly. Without the retraction, B's queued 20480 frames would play.
#[test]
fn play_sigint_retracts_what_was_queued_and_nothing_else() {
    const HELD: usize = 8192; // a whole number of raw read chunks (4096) and periods (256)
    let env = Env::new();
    let a = signal(48000, 2, 440.0, 0.3, 11);
    let b = signal(30000, 2, 550.0, 0.3, 12);
    let c = signal(40000, 2, 660.0, 0.3, 13);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let out = env.path("out.wav");
    let sink = format!("wav:{}", out.display());
    let mut server = env.serve(&["--sink", &sink, "--freewheel", "--wait-clients", "3", "--exit-when-idle"]);
    let raw = ["-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-"];
    let mut pa = env.spawn("dmix-play", &["a.wav"]);
    let mut pb = env.spawn("dmix-play", &[&["--name", "b"][..], &raw].concat());
    let mut pc = env.spawn("dmix-play", &[&["--name", "c"][..], &raw].concat());
    let bytes = |s: &[i16]| s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let mut c_in = pc.stdin();
    c_in.write_all(&bytes(&c[..HELD * 2])).unwrap();
    // B gets all of its signal but its stdin stays open: it queues whole 4096-frame chunks
    // (28672 frames) and then waits for the rest of a chunk that never comes.
    let mut b_in = pb.stdin();
    b_in.write_all(&bytes(&b)).unwrap();
    wait_hw_ptr(&env, "default", HELD as u64);
    let queued = 28672 - HELD;
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    wait_for_snapshot(&stat, &sock, &format!("B never queued its {queued} frames"), |s| {
        assert_eq!(s.server.hw_ptr, HELD as u64, "C must hold the server at frame {HELD}");
        let q = s.clients.iter().find(|c| c.name == "b").and_then(|c| c.queued_ms).unwrap_or(0.0);
        (q - queued as f64 / 48.0).abs() < 0.01
    });
    pb.signal(Signal::SIGINT);
    assert_eq!(pb.wait().code(), Some(130), "b: {}", pb.finished_stderr());
    drop(b_in);
    c_in.write_all(&bytes(&c[HELD * 2..])).unwrap();
    drop(c_in);
    assert!(pc.wait().success(), "c: {}", pc.finished_stderr());
    assert!(pa.wait().success(), "a: {}", pa.finished_stderr());
    assert!(server.wait().success(), "server: {}", server.finished_stderr());
    let (_, got) = read_wav(&out);
    let want: Vec<i32> = (0..got.len().max(a.len()))
        .map(|i| {
            let at = |s: &[i16]| i32::from(*s.get(i).unwrap_or(&0));
            clamp16(at(&a) + at(&c) + if i < HELD * 2 { at(&b) } else { 0 })
        })
        .collect();
    assert_eq!(got.len(), 48128 * 2, "render length (A's 48000 frames in whole periods)");
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(first.is_none(), "render differs from A + C + B's first {HELD} frames at sample {first:?}");
}

/// Issue 7: each player picks its latency on one paced server; dmix-stat reports it and
/// the real queue, which never exceeds it.
#[test]
fn play_latency_is_per_client_and_reported() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.1, 14));
    let _server = env.serve(&["--sink", "null", "--period", "64"]);
    let _slow = env.spawn("dmix-play", &["--latency", "500", "--name", "slow", "a.wav"]);
    let _fast = env.spawn("dmix-play", &["--latency", "10", "--name", "fast", "a.wav"]);
    let period_ms = 64.0 / 48.0;
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    let deadline = Instant::now() + DEADLINE;
    let mut seen = 0;
    let mut slow_max: f64 = 0.0;
    // 40 snapshots, one every 20 periods (about a second in all), once both have started.
    while seen < 40 {
        assert!(Instant::now() < deadline, "the players did not start");
        let s = dmix::stat::snapshot(&stat, &sock).unwrap();
        let find = |n: &str| s.clients.iter().find(|c| c.name == n).cloned();
        stat.ring().wait_hw_ptr(s.server.hw_ptr + 20 * 64, std::time::Duration::from_secs(1));
        let (Some(slow), Some(fast)) = (find("slow"), find("fast")) else { continue };
        // Admitted but not yet written: the queue is the first period, the latency not set.
        if [&slow, &fast].iter().any(|c| c.queued_ms.unwrap_or(0.0) <= period_ms) {
            continue;
        }
        seen += 1;
        // 500 ms is 375 periods of 64 frames; 10 ms is rounded up to 8 periods, 10.67 ms.
        let (sl, fl) = (slow.latency_ms.unwrap(), fast.latency_ms.unwrap());
        assert!((sl - 500.0).abs() <= period_ms, "slow latency {sl} ms");
        assert!((fl - 10.0).abs() <= period_ms, "fast latency {fl} ms");
        // hw_ptr and the client's position are read one after the other: allow two periods.
        let (sq, fq) = (slow.queued_ms.unwrap(), fast.queued_ms.unwrap());
        assert!(sq <= sl + 2.0 * period_ms, "slow queued {sq} ms over its latency {sl} ms");
        assert!(fq <= fl + 2.0 * period_ms, "fast queued {fq} ms over its latency {fl} ms");
        slow_max = slow_max.max(sq);
    }
    // The slow player does fill its 500 ms (it refills from half of it).
    assert!(slow_max > 250.0, "slow player never queued more than {slow_max} ms");
    let text = env.run("dmix-stat", &[]);
    assert!(text.stdout.contains("LATENCY") && text.stdout.contains("500.0 ms"), "{}", text.stdout);
}
