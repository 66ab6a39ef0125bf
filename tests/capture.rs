//! Capture sharing: `dmix-serve --capture` and `dmix-tee --source capture`.

use crate::util::*;

/// 30,000 frames (not a whole number of periods) of stereo S16 as the shared input.
fn source(env: &Env) -> Vec<i32> {
    let s = signal(30000, 2, 523.0, 0.8, 7);
    write_wav_i16(&env.path("in.wav"), 48000, 2, &s);
    s.iter().map(|&v| i32::from(v)).collect()
}

#[test]
fn capture_from_a_wav_source_to_two_tees_gives_the_source_twice() {
    let env = Env::new();
    let want = source(&env);
    let _server = env.serve(&["--sink", "null", "--freewheel", "--capture", "wav:in.wav", "--wait-readers", "2"]);
    let mut one = env.spawn("dmix-tee", &["--source", "capture", "one.wav"]);
    let mut two = env.spawn("dmix-tee", &["--source", "capture", "two.wav"]);
    // Both end by themselves when the input ends.
    for t in [&mut one, &mut two] {
        assert!(t.wait().success(), "{}", t.finished_stderr());
        assert!(t.finished_stderr().is_empty(), "tee warned: {}", t.finished_stderr());
    }
    for f in ["one.wav", "two.wav"] {
        let (spec, got) = read_wav(&env.path(f));
        assert_eq!((spec.sample_rate, spec.channels), (48000, 2));
        assert_eq!(got.len(), want.len(), "{f}: length");
        assert!(got == want, "{f} differs from the source");
    }
    // dmix-stat shows the input and its end.
    let r = env.run("dmix-stat", &["--json"]);
    assert!(r.status.success(), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let c = &v["server"]["capture"];
    assert_eq!(c["source"], "wav:in.wav");
    assert_eq!(c["state"], "ended");
    assert_eq!(c["cap_ptr"], 30000);
    let r = env.run("dmix-stat", &[]);
    assert!(r.stdout.contains("capture  wav:in.wav, ended, 30000 frames captured"), "{}", r.stdout);
}

#[test]
fn capture_paced_readers_get_every_frame_and_show_in_stat() {
    let env = Env::new();
    let want = source(&env);
    let _server = env.serve(&["--sink", "null", "--capture", "wav:in.wav", "--wait-readers", "2"]);
    let mut one = env.spawn("dmix-tee", &["--source", "capture", "--name", "rec-one", "one.wav"]);
    let mut two = env.spawn("dmix-tee", &["-s", "capture", "-f", "S32_LE", "two.wav"]);
    let snap = wait_for_clients(&env, "default", "capture", 2);
    assert!(snap.clients.iter().any(|c| c.role == "capture" && c.name == "rec-one"));
    for t in [&mut one, &mut two] {
        assert!(t.wait().success(), "{}", t.finished_stderr());
    }
    let (_, a) = read_wav(&env.path("one.wav"));
    assert!(a == want, "a paced reader lost or changed frames");
    let (spec, b) = read_wav(&env.path("two.wav"));
    assert_eq!(spec.bits_per_sample, 32);
    assert!(b.iter().map(|&v| v >> 16).eq(want.iter().copied()), "S32 recording differs");
}

#[test]
fn capture_from_an_alsa_pcm() {
    // alsa-lib's file plugin over null, reading what it captures from `infile`: an ALSA
    // capture device that delivers known samples, then silence (as a device never ends).
    let mut env = Env::new();
    let want: Vec<i16> = signal(20000, 2, 700.0, 0.6, 3);
    let raw = env.path("in.raw");
    std::fs::write(&raw, want.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let conf = env.path("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "pcm.captest {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
            raw.display()
        ),
    )
    .unwrap();
    env.set_env("ALSA_CONFIG_PATH", &format!("/usr/share/alsa/alsa.conf:{}", conf.display()));
    let _server = env.serve(&["--sink", "null", "--freewheel", "--capture", "alsa:captest"]);
    // Half a second: 24,000 frames, the input's 20,000 and then silence.
    let r = env.run("dmix-tee", &["--source", "capture", "-d", "0.5", "rec.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let (_, got) = read_wav(&env.path("rec.wav"));
    assert_eq!(got.len(), 24000 * 2);
    assert!(got[..want.len()].iter().copied().eq(want.iter().map(|&v| i32::from(v))), "ALSA capture differs");
    let tail: Vec<i32> = got[want.len()..].iter().copied().filter(|&v| v != 0).take(20).collect();
    assert!(tail.is_empty(), "silence expected after the input, got {tail:?}");
}

#[test]
fn capture_errors_are_one_clear_line() {
    let env = Env::new();
    source(&env);
    for (args, why) in [
        (&["--sink", "null", "--capture", "wav:/nonexistent/in.wav"][..], "/nonexistent/in.wav"),
        (&["--sink", "null", "--capture", "mic"][..], "use alsa:PCM or wav:PATH"),
        (&["--sink", "null", "--wait-readers", "1"][..], "needs --capture"),
        (&["--sink", "null", "--capture", "alsa:no_such_pcm_xyz"][..], "cannot open"),
    ] {
        let r = env.run("dmix-serve", args);
        assert!(!r.status.success(), "{args:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
        assert!(!env.socket("default").exists(), "{args:?} left its socket");
    }
    let _server = env.serve(&["--sink", "null"]);
    let r = env.run("dmix-tee", &["--source", "capture", "x.wav"]);
    assert!(!r.status.success());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("shares no input"), "{}", r.stderr);
    let r = env.run("dmix-tee", &["--source", "mic", "x.wav"]);
    assert!(!r.status.success());
    assert!(r.stderr.contains("use monitor or capture"), "{}", r.stderr);
}
