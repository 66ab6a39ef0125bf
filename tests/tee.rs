//! dmix-tee: recordings of what the server plays.

use crate::util::*;

/// Starts a held freewheel render, attaches `tees` recorders, then two players; returns the
/// server's own output and each recording.
fn render_with_tees(env: &Env, tees: &[&str], format: &str) -> (Vec<i32>, Vec<Vec<i32>>) {
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(30000, 2, 440.0, 0.7, 1));
    write_wav_i16(&env.path("b.wav"), 48000, 2, &signal(20000, 2, 660.0, 0.7, 2));
    let out = env.path("server.wav");
    let mut server = env.serve(&[
        "--sink",
        &format!("wav:{}", out.display()),
        "-f",
        format,
        "--freewheel",
        "--wait-clients",
        "2",
        "--exit-when-idle",
    ]);
    let mut recorders: Vec<Proc> = tees.iter().map(|t| env.spawn("dmix-tee", &[t])).collect();
    // The recorders must be in before the render starts.
    wait_for_clients(env, "default", "tee", tees.len());
    let mut pa = env.spawn("dmix-play", &["a.wav"]);
    let mut pb = env.spawn("dmix-play", &["b.wav"]);
    assert!(pa.wait().success(), "{}", pa.finished_stderr());
    assert!(pb.wait().success(), "{}", pb.finished_stderr());
    assert!(server.wait().success(), "{}", server.finished_stderr());
    for r in &mut recorders {
        assert!(r.wait().success(), "tee: {}", r.finished_stderr());
        assert!(r.finished_stderr().is_empty(), "tee warned: {}", r.finished_stderr());
    }
    let (_, own) = read_wav(&out);
    let recs = tees.iter().map(|t| read_wav(&env.path(t)).1).collect();
    (own, recs)
}

#[test]
fn tee_of_a_freewheel_render_equals_the_wav_sink() {
    for format in ["S16_LE", "FLOAT_LE"] {
        let env = Env::new();
        let (own, recs) = render_with_tees(&env, &["rec.wav"], format);
        assert!(own.len() >= 30000 * 2);
        assert!(recs[0] == own, "{format}: the recording differs from the server's own output");
    }
}

#[test]
fn tee_two_recorders_get_identical_files() {
    let env = Env::new();
    let (own, recs) = render_with_tees(&env, &["one.wav", "two.wav"], "S16_LE");
    assert!(recs[0] == recs[1], "two recorders disagree");
    assert!(recs[0] == own);
}

#[test]
fn tee_duration_and_raw_stdout() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let r = env.run("dmix-tee", &["-d", "0.25", "quarter.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let (spec, v) = read_wav(&env.path("quarter.wav"));
    assert_eq!((spec.sample_rate, spec.channels, spec.bits_per_sample), (48000, 2, 16));
    assert_eq!(v.len(), 12000 * 2);
    let r = env.run("dmix-tee", &["-d", "0.1", "-t", "raw", "-f", "S32_LE", "-"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(r.stdout_bytes.len(), 4800 * 2 * 4);
}

#[test]
fn tee_records_until_the_server_goes_away_and_finalizes() {
    let env = Env::new();
    let mut s = env.serve(&["--sink", "null"]);
    let mut t = env.spawn("dmix-tee", &["rec.wav"]);
    wait_for_clients(&env, "default", "tee", 1);
    wait_hw_ptr(&env, "default", 4800);
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(s.wait().success());
    assert!(t.wait().success(), "{}", t.finished_stderr());
    let (_, v) = read_wav(&env.path("rec.wav"));
    assert!(!v.is_empty());
}

#[test]
fn tee_bad_arguments_are_one_line_errors() {
    let env = Env::new();
    for (args, why) in [
        (&["-d", "0", "x.wav"][..], "positive"),
        (&["-f", "U8", "x.wav"][..], "unknown sample format"),
        (&["-t", "raw", "x.wav"][..], "stdout only"),
        (&["/nonexistent-dir/x.wav"][..], "no server"),
    ] {
        let r = env.run("dmix-tee", args);
        assert!(!r.status.success(), "{args:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
    }
}

#[test]
fn tee_that_falls_behind_reports_lost_frames() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let mut t = env.spawn("dmix-tee", &["rec.wav"]);
    let snap = wait_for_clients(&env, "default", "tee", 1);
    let start = snap.server.hw_ptr;
    t.signal(nix::sys::signal::Signal::SIGSTOP);
    // The monitor keeps as much as the ring (a second in whole periods, 48128 frames): let
    // the paced server lap the stopped recorder, measured on the server's own pointer.
    wait_hw_ptr(&env, "default", start + 48128 + 9600);
    t.signal(nix::sys::signal::Signal::SIGCONT);
    let line = t.wait_for_stderr("frames lost");
    assert!(line.starts_with("dmix-tee: fell behind the server: "), "{line}");
    let snap = wait_for_clients(&env, "default", "tee", 1);
    let tee = snap.clients.iter().find(|c| c.role == "tee").unwrap();
    // The recorder started a period or so after `start`.
    assert!(tee.late_frames >= 9600 - 512, "stat shows {} lost frames", tee.late_frames);
    t.signal(nix::sys::signal::Signal::SIGINT);
    assert!(t.wait().success());
    read_wav(&env.path("rec.wav"));
}
