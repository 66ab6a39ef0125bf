//! dmix-share: sub-devices over channel subsets.

use nix::sys::signal::Signal;

use crate::util::*;

fn quad_render(env: &Env) -> Proc {
    let out = env.path("out.wav");
    env.serve(&[
        "-c",
        "4",
        "--sink",
        &format!("wav:{}", out.display()),
        "--freewheel",
        "--wait-clients",
        "1",
        "--exit-when-idle",
    ])
}

#[test]
fn share_stereo_into_rear_lands_in_channels_2_and_3() {
    let env = Env::new();
    let a = signal(12000, 2, 440.0, 0.5, 1);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let mut server = quad_render(&env);
    let mut sh = env.spawn("dmix-share", &["front=0,1", "rear=2,3"]);
    sh.wait_for_stderr("dmix-share: rear");
    assert!(env.socket("front").exists() && env.socket("rear").exists());
    let r = env.run("dmix-play", &["-D", "rear", "a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (spec, got) = read_wav(&env.path("out.wav"));
    assert_eq!(spec.channels, 4);
    for (f, frame) in got.chunks_exact(4).enumerate() {
        let (l, r) = (a.get(2 * f).copied().unwrap_or(0), a.get(2 * f + 1).copied().unwrap_or(0));
        assert_eq!(frame, &[0, 0, i32::from(l), i32::from(r)], "frame {f}");
    }
    // The server went away: dmix-share says so and fails.
    assert_eq!(sh.wait().code(), Some(10));
    assert!(!env.socket("rear").exists());
}

#[test]
fn share_clients_on_one_sub_device_mix_and_map_in_order() {
    let env = Env::new();
    let a = signal(6000, 2, 440.0, 0.3, 1);
    let b = signal(6000, 2, 660.0, 0.3, 2);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    let out = env.path("out.wav");
    let mut server = env.serve(&[
        "-c",
        "4",
        "--sink",
        &format!("wav:{}", out.display()),
        "--freewheel",
        "--wait-clients",
        "2",
        "--exit-when-idle",
    ]);
    let mut sh = env.spawn("dmix-share", &["swapped=3,1"]);
    sh.wait_for_stderr("dmix-share: swapped");
    let mut pa = env.spawn("dmix-play", &["-D", "swapped", "a.wav"]);
    let mut pb = env.spawn("dmix-play", &["-D", "swapped", "b.wav"]);
    assert!(pa.wait().success() && pb.wait().success());
    assert!(server.wait().success());
    let (_, got) = read_wav(&out);
    for (f, frame) in got.chunks_exact(4).take(6000).enumerate() {
        let l = i32::from(a[2 * f]) + i32::from(b[2 * f]);
        let r = i32::from(a[2 * f + 1]) + i32::from(b[2 * f + 1]);
        // Its channel 0 goes to 3, its channel 1 to 1.
        assert_eq!(frame, &[0, r, 0, l], "frame {f}");
    }
}

#[test]
fn share_exclusive_refuses_a_second_client_as_busy() {
    let env = Env::new();
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.3, 1));
    let _s = env.serve(&["-c", "4", "--sink", "null"]);
    let mut sh = env.spawn("dmix-share", &["--exclusive", "front=0,1", "rear=2,3"]);
    sh.wait_for_stderr("dmix-share: rear");
    let _first = env.spawn("dmix-play", &["-D", "rear", "long.wav"]);
    wait_for_clients(&env, "default", "play", 1);
    let r = env.run("dmix-play", &["-D", "rear", "long.wav"]);
    assert_eq!(r.status.code(), Some(5), "{}", r.stderr);
    assert!(r.stderr.contains("busy") && r.stderr.contains("2,3"), "{}", r.stderr);
    // Other channels are free.
    write_wav_i16(&env.path("short.wav"), 48000, 2, &signal(480, 2, 440.0, 0.3, 1));
    let r = env.run("dmix-play", &["-D", "front", "short.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
}

#[test]
fn share_sub_devices_vanish_when_dmix_share_is_killed() {
    let env = Env::new();
    let _s = env.serve(&["-c", "4", "--sink", "null"]);
    let mut sh = env.spawn("dmix-share", &["front=0,1", "rear=2,3"]);
    sh.wait_for_stderr("dmix-share: rear");
    assert!(env.socket("rear").exists());
    sh.signal(Signal::SIGKILL);
    sh.wait();
    // The hang-up is pending before this connection exists, and the server handles
    // hang-ups before new connections: once we are admitted, the sockets are gone.
    wait_for_clients(&env, "default", "stat", 1);
    assert!(!env.socket("front").exists() && !env.socket("rear").exists());
    let r = env.run("dmix-stat", &["-D", "rear"]);
    assert_eq!(r.status.code(), Some(4), "{}", r.stderr);
}

#[test]
fn share_bad_specs_are_refused_with_the_reason() {
    let env = Env::new();
    let _s = env.serve(&["-c", "4", "--sink", "null"]);
    let _other = env.serve(&["--sink", "null", "--name", "taken"]);
    for (args, why) in [
        (&["rear=4,5"][..], "channel 4 is out of range"),
        (&["a=0", "a=1"][..], "named twice"),
        (&["--exclusive", "a=0,1", "b=1,2"][..], "share channels"),
        (&["taken=0,1"][..], "collides with a running server"),
        (&["rear"][..], "NAME=CH"),
        (&["rear=1,1"][..], "listed twice"),
    ] {
        let r = env.run("dmix-share", args);
        assert!(!r.status.success(), "{args:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
    }
    // Nothing was left behind by the refused requests.
    for name in ["a", "b", "rear"] {
        assert!(!env.socket(name).exists(), "{name}");
    }
}
