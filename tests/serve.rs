//! dmix-serve's socket, lifecycle and refusals, and dmix-play's one-line errors.

use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use dmix::protocol::{HELLO_BYTES, Hello, MAX_REPLY_BYTES, PROTOCOL_VERSION, Refusal, Reply, Role};
use dmix::transport;
use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn serve_socket_and_directory_are_private() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let sock = env.socket("default");
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(sock.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn serve_second_server_on_a_live_socket_is_refused() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let r = env.run("dmix-serve", &["--sink", "null"]);
    assert_eq!(r.status.code(), Some(5), "{}", r.stderr);
    assert!(r.stderr.contains("already running"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn serve_stale_socket_is_replaced() {
    let env = Env::new();
    let sock = env.socket("default");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::set_permissions(sock.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A socket file nobody listens on, as a crashed server leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut s = env.serve(&["--sink", "null"]);
    let _c = dmix::client::Connection::open(sock.to_str().unwrap(), Role::Stat, "probe", 0).unwrap();
    s.signal(Signal::SIGTERM);
    assert!(s.wait().success(), "{}", s.finished_stderr());
    assert!(!sock.exists(), "the socket was not removed at exit");
}

#[test]
fn serve_wav_sink_is_finalized_on_sigint_and_sigterm() {
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let env = Env::new();
        write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(4800, 2, 440.0, 0.3, 1));
        let out = env.path("out.wav");
        let mut s = env.serve(&["--sink", &format!("wav:{}", out.display())]);
        // Playing a file to the end proves periods reached the sink before the signal.
        let r = env.run("dmix-play", &["a.wav"]);
        assert!(r.status.success(), "{}", r.stderr);
        s.signal(sig);
        assert!(s.wait().success(), "{sig}: {}", s.finished_stderr());
        let (spec, samples) = read_wav(&out);
        assert_eq!(spec.channels, 2);
        assert!(samples.len() >= 4800 * 2, "{sig}: only {} samples in the finalized file", samples.len());
    }
}

#[test]
fn serve_refuses_a_client_of_another_protocol_version_naming_both() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let sock = transport::connect_socket(&env.socket("default")).unwrap();
    let mut hello =
        Hello { version: PROTOCOL_VERSION, role: Role::Play, channels: 0, name: "future".into(), volume_db: None }
            .encode();
    hello[4..8].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    transport::send(sock.as_fd(), &hello, &[]).unwrap();
    let mut buf = [0u8; MAX_REPLY_BYTES];
    let msg = transport::recv_timeout(sock.as_fd(), &mut buf, DEADLINE).unwrap().unwrap();
    match Reply::decode(&buf[..msg.len]).unwrap() {
        Reply::Refused(Refusal::Incompatible, reason) => {
            assert!(reason.contains(&PROTOCOL_VERSION.to_string()), "{reason}");
            assert!(reason.contains(&(PROTOCOL_VERSION + 1).to_string()), "{reason}");
        }
        other => panic!("expected a version refusal, got {other:?}"),
    }
    assert!(msg.fds.is_empty());
}

#[test]
fn serve_drops_garbage_and_keeps_serving() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    for junk in [&b"hello"[..], &[0xffu8; HELLO_BYTES][..], &[0u8; 4096][..]] {
        let sock = transport::connect_socket(&env.socket("default")).unwrap();
        let _ = transport::send(sock.as_fd(), junk, &[]);
        let mut buf = [0u8; MAX_REPLY_BYTES];
        if let Ok(Some(msg)) = transport::recv_timeout(sock.as_fd(), &mut buf, DEADLINE) {
            assert!(matches!(Reply::decode(&buf[..msg.len]), Ok(Reply::Refused(Refusal::BadRequest, _))));
        }
    }
    // Still serving.
    dmix::client::Connection::open(env.socket("default").to_str().unwrap(), Role::Stat, "probe", 0).unwrap();
}

#[test]
fn play_refuses_a_server_of_another_protocol_version() {
    let env = Env::new();
    let sock = env.socket("default");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::set_permissions(sock.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(480, 2, 440.0, 0.3, 1));
    let listener = transport::Listener::bind(&sock, 0o600).unwrap();
    let mut play = env.spawn("dmix-play", &["a.wav"]);
    // A fake future server: answer the hello with version + 1.
    let conn = loop {
        if let Some(c) = listener.accept().unwrap() {
            break c;
        }
        let mut pfd = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(10_000u16)).unwrap();
    };
    let mut buf = [0u8; HELLO_BYTES];
    transport::recv_timeout(conn.as_fd(), &mut buf, DEADLINE).unwrap().unwrap();
    let mut reply = [0u8; 12];
    reply[0..4].copy_from_slice(b"DMXr");
    reply[4..8].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    transport::send(conn.as_fd(), &reply, &[]).unwrap();
    let status = play.wait();
    let err = play.finished_stderr();
    assert_eq!(status.code(), Some(8), "{err}");
    assert!(err.contains("version mismatch") && err.contains(&(PROTOCOL_VERSION + 1).to_string()), "{err}");
}

#[test]
fn play_without_a_server_says_how_to_start_one() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(480, 2, 440.0, 0.3, 1));
    let r = env.run("dmix-play", &["a.wav"]);
    assert_eq!(r.status.code(), Some(4), "{}", r.stderr);
    assert!(r.stderr.contains("dmix-serve"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn play_bad_inputs_get_one_line_each_and_a_non_zero_code() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null", "--freewheel"]);
    std::fs::write(env.path("empty.wav"), b"").unwrap();
    std::fs::write(env.path("noise.flac"), (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).unwrap();
    write_wav_i16(&env.path("good.wav"), 48000, 2, &signal(9600, 2, 440.0, 0.3, 1));
    let good = std::fs::read(env.path("good.wav")).unwrap();
    std::fs::write(env.path("cut.wav"), &good[..good.len() / 2]).unwrap();
    std::fs::create_dir(env.path("adir")).unwrap();
    for (file, why) in [
        ("missing.wav", "no such file"),
        ("adir", "directory"),
        ("empty.wav", "empty"),
        ("noise.flac", ""),
        ("cut.wav", "truncated"),
    ] {
        let r = env.run("dmix-play", &[file]);
        assert_eq!(r.status.code(), Some(3), "{file}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{file}: {}", r.stderr);
        assert!(r.stderr.starts_with(&format!("dmix-play: {file}: ")), "{file}: {}", r.stderr);
        assert!(r.stderr.to_lowercase().contains(why), "{file}: {}", r.stderr);
    }
}

#[test]
fn play_reports_a_bad_file_and_plays_the_rest() {
    let env = Env::new();
    let a = signal(4800, 2, 440.0, 0.3, 1);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let (r, got) = render_one(&env, &["missing.wav", "a.wav"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("missing.wav"), "{}", r.stderr);
    let want: Vec<i32> = a.iter().map(|&v| i32::from(v)).collect();
    assert_eq!(&got[..want.len()], &want[..]);
}

#[test]
fn play_exits_when_the_server_is_killed() {
    let env = Env::new();
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 20, 2, 440.0, 0.3, 1));
    let mut s = env.serve(&["--sink", "null"]);
    let mut p = env.spawn("dmix-play", &["long.wav"]);
    // Admission means the client is attached and playing: wait for it on the protocol by
    // looking at the server's slot table through a stat connection.
    let stat = dmix::client::Connection::open(env.socket("default").to_str().unwrap(), Role::Stat, "probe", 0).unwrap();
    let deadline = std::time::Instant::now() + DEADLINE;
    while !(0..64).any(|i| {
        let info = stat.ring().slot_info(i);
        info.state.load(std::sync::atomic::Ordering::Acquire) == 2
            && info.role.load(std::sync::atomic::Ordering::Relaxed) == 1
    }) {
        assert!(std::time::Instant::now() < deadline, "the player never joined");
        stat.ring().wait_any(Duration::from_millis(50));
    }
    drop(stat);
    s.signal(Signal::SIGKILL);
    s.wait();
    let status = p.wait_timeout(Duration::from_secs(5));
    let err = p.finished_stderr();
    assert_eq!(status.code(), Some(10), "{err}");
    assert!(err.contains("server went away"), "{err}");
}

#[test]
fn serve_named_four_channel_server_at_44k_takes_stereo_clients() {
    let env = Env::new();
    let a = signal(4410, 2, 441.0, 0.3, 9);
    write_wav_i16(&env.path("a.wav"), 44100, 2, &a);
    let out = env.path("out.wav");
    let mut s = env.serve(&[
        "--name",
        "quad",
        "-c",
        "4",
        "-r",
        "44100",
        "--period",
        "128",
        "--buffer",
        "512",
        "--sink",
        &format!("wav:{}", out.display()),
        "--freewheel",
        "--wait-clients",
        "1",
        "--exit-when-idle",
    ]);
    let r = env.run("dmix-play", &["-D", "quad", "a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(s.wait().success());
    let (spec, got) = read_wav(&out);
    assert_eq!((spec.channels, spec.sample_rate), (4, 44100));
    assert_eq!(got.len(), 4410usize.div_ceil(128) * 128 * 4);
    for (f, frame) in got.chunks_exact(4).take(4410).enumerate() {
        // Stereo into 4 channels: front left/right carry it, the others are silent.
        assert_eq!(frame, &[i32::from(a[2 * f]), i32::from(a[2 * f + 1]), 0, 0], "frame {f}");
    }
}

#[test]
fn serve_socket_path_and_tmp_fallback() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(480, 2, 440.0, 0.3, 1));
    // Without XDG_RUNTIME_DIR the socket lives in /tmp/dmix-$UID; a unique name keeps
    // parallel tests apart.
    let name = format!("fallback-{}", std::process::id());
    let mut cmd = env.command("dmix-serve");
    cmd.env_remove("XDG_RUNTIME_DIR").args(["--sink", "null", "--name", &name]);
    let mut s = Proc::spawn("dmix-serve", cmd.stdin(std::process::Stdio::null()));
    let line = s.wait_for_stderr("serving on");
    let uid = nix::unistd::getuid();
    let path = format!("/tmp/dmix-{uid}/{name}.sock");
    assert!(line.contains(&path), "{line}");
    // A client finds it by path.
    let r = env.run("dmix-play", &["-D", &path, "a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    s.signal(Signal::SIGTERM);
    assert!(s.wait().success());
    assert!(!std::path::Path::new(&path).exists());
}

/// Issue 7: started by a service manager with a listening socket (systemd-socket-activate
/// from Debian's systemd package, which needs no running systemd), dmix-serve serves the
/// client whose connection started it, exactly, and reports READY=1 then STOPPING=1 on
/// NOTIFY_SOCKET (Type=notify).
#[test]
fn serve_socket_activation_serves_the_first_client_and_notifies() {
    let env = Env::new();
    let a = signal(48000, 2, 440.0, 0.3, 21);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let sock = env.socket("default");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    std::fs::set_permissions(sock.parent().unwrap(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(env.path("notify.sock")).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut cmd = std::process::Command::new("systemd-socket-activate");
    cmd.args(["--seqpacket", "-l", sock.to_str().unwrap(), "-E", "NOTIFY_SOCKET"])
        .arg(bin("dmix-serve"))
        .args(["--sink", "wav:out.wav", "--freewheel", "--exit-when-idle"])
        .env("NOTIFY_SOCKET", env.path("notify.sock"))
        .env("XDG_RUNTIME_DIR", env.runtime_dir())
        .current_dir(env.path(""))
        .stdin(std::process::Stdio::null());
    let mut server = Proc::spawn("systemd-socket-activate", &mut cmd);
    // The activator binds the socket and listens; the server starts on the first connection.
    server.wait_for_stderr("Listening on");
    let r = env.run("dmix-play", &["a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    assert!(server.finished_stderr().contains("(socket activation)"), "{}", server.finished_stderr());
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"READY=1");
    let n = notify.recv(&mut buf).expect("STOPPING=1 on NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let (_, got) = read_wav(&env.path("out.wav"));
    assert_eq!(got.len(), 48128 * 2);
    assert!(got.iter().zip(a.iter().map(|&s| i32::from(s)).chain(std::iter::repeat(0))).all(|(g, w)| *g == w));
    // The socket is the manager's: the server leaves it in place.
    assert!(sock.exists());
}

/// A service manager that passes something other than one listening SOCK_SEQPACKET socket
/// gets one line saying what, and exit code 3.
#[test]
fn serve_socket_activation_refuses_what_is_not_its_socket() {
    let env = Env::new();
    std::fs::write(env.path("plain"), b"").unwrap();
    let serve = bin("dmix-serve");
    for (fds, why) in [("1", "not a socket"), ("2", "passed 2 sockets")] {
        // sh's pid is the server's after exec: LISTEN_PID names it, as a manager would.
        let script = format!("LISTEN_PID=$$ LISTEN_FDS={fds} exec '{}' --sink null 3<plain", serve.display());
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script])
            .env("XDG_RUNTIME_DIR", env.runtime_dir())
            .current_dir(env.path(""))
            .stdin(std::process::Stdio::null());
        let mut p = Proc::spawn("dmix-serve", &mut cmd);
        assert_eq!(p.wait().code(), Some(3), "LISTEN_FDS={fds}: {}", p.finished_stderr());
        let err = p.finished_stderr();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("socket activation") && err.contains(why), "{err}");
    }
}

/// The user units install for the current user (scripts/install-units, with a stand-in for
/// systemctl: there is no user manager here) and pass `systemd-analyze verify`; the socket
/// unit listens where clients look for the default server; without a user manager the script
/// says so in one line.
#[test]
fn serve_user_units_install_and_verify() {
    let env = Env::new();
    let config = env.path("config");
    let bindir = bin("dmix-serve").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap_or_default());
    let out = install_units(&["wav:/tmp/x.wav"], &path, &config, ":".as_ref());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let units = config.join("systemd/user");
    let service = std::fs::read_to_string(units.join("dmix-serve.service")).unwrap();
    assert!(service.contains(&format!("ExecStart={}/dmix-serve $DMIX_SERVE_ARGS", bindir.display())), "{service}");
    assert!(service.contains("Type=notify"));
    let socket = std::fs::read_to_string(units.join("dmix-serve.socket")).unwrap();
    // %t is the user's XDG_RUNTIME_DIR, where clients look (dmix::paths).
    assert!(socket.contains("ListenSequentialPacket=%t/dmix/default.sock"), "{socket}");
    assert_eq!(
        std::fs::read_to_string(config.join("dmix/serve.env")).unwrap(),
        "DMIX_SERVE_ARGS=--sink wav:/tmp/x.wav\n"
    );
    // With a service manager: the units are loaded, then the socket enabled and started (a
    // stand-in systemctl records its calls); without one, a line that says so, exit 1.
    let calls = env.path("calls");
    for (script, code) in [
        (format!("#!/bin/sh\necho \"$*\" >> '{}'\n", calls.display()), 0),
        ("#!/bin/sh\necho 'Failed to connect to bus: No such file or directory' >&2\nexit 1\n".to_string(), 1),
    ] {
        let systemctl = env.path("systemctl");
        std::fs::write(&systemctl, script).unwrap();
        std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = install_units(&[], &path, &config, systemctl.as_os_str());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        if code == 0 {
            let log = std::fs::read_to_string(&calls).unwrap();
            assert_eq!(log, "--user daemon-reload\n--user enable --now dmix-serve.socket\n");
        } else {
            let last = err.lines().last().unwrap_or_default();
            assert!(
                last.contains("systemctl --user daemon-reload: Failed to connect to bus")
                    && last.contains("systemctl --user enable --now dmix-serve.socket"),
                "{err}"
            );
        }
    }
    let verify = systemd_verify(&units, &["dmix-serve.service", "dmix-serve.socket"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

/// Issue 7: without --sink on a machine with no sound card (alsa:default opens a card that
/// is not there: card 31 in a config the test writes), one line that names the
/// alternatives, exit code 9 (device), and no ALSA trace.
#[test]
fn serve_without_a_sound_card_says_so_in_one_line() {
    let mut env = Env::new();
    let conf = env.path("nocard.conf");
    std::fs::write(&conf, "pcm.!default { type hw card 31 }\n").unwrap();
    env.set_env("ALSA_CONFIG_PATH", &format!("/usr/share/alsa/alsa.conf:{}", conf.display()));
    let r = env.run("dmix-serve", &[]);
    assert_eq!(r.status.code(), Some(9), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("no sound card") && r.stderr.contains("--sink wav:PATH"), "{}", r.stderr);
    assert!(r.stderr.contains("--sink null"), "{}", r.stderr);
}

/// A player that never writes a frame (a program that opens the server only to probe it, or
/// opens it and sits idle) is no player: its coming and going neither releases a server held
/// for --wait-clients nor ends an --exit-when-idle one, and connected it does not hold a
/// freewheel render; but the server does not exit from under it, either.
#[test]
fn serve_a_player_that_never_writes_is_no_player() {
    use dmix::client::Connection;
    let env = Env::new();
    let a = signal(12000, 2, 440.0, 0.4, 81);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let mut server = env.serve(&["--sink", "wav:out.wav", "--freewheel", "--wait-clients", "1", "--exit-when-idle"]);
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    // A probe: opens as a player, closes. The server must still be there for the real one.
    drop(Connection::open(sock.to_str().unwrap(), Role::Play, "probe", 0).expect("probe admitted"));
    wait_for_snapshot(&stat, &sock, "the probe's slot was not freed", |s| s.clients.iter().all(|c| c.role != "play"));
    // One that stays without writing: listed as opened, never started.
    let idle = Connection::open(sock.to_str().unwrap(), Role::Play, "idle", 0).expect("idle admitted");
    let s = wait_for_clients(&env, "default", "play", 1);
    let shown = s.clients.iter().find(|c| c.name == "idle").expect("the idle player is listed");
    assert_eq!(shown.started, Some(false));
    assert!(dmix::stat::render_text(&s).contains("opened"), "{}", dmix::stat::render_text(&s));
    // The real player renders whole while the idle one is connected.
    let r = env.run("dmix-play", &["a.wav"]);
    assert!(r.status.success(), "the server went with the probe, or the idle player held the render: {}", r.stderr);
    let end = a.len() as u64 / 2;
    wait_for_snapshot(&stat, &sock, "the render stopped before the file's end", |s| s.server.hw_ptr >= end);
    // The idle player is still a client: an --exit-when-idle server waits for it.
    assert!(server.exited().is_none(), "the server left a connected client behind: {}", server.finished_stderr());
    drop(idle);
    drop(stat);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let want: Vec<i32> = a.iter().map(|&v| i32::from(v)).collect();
    assert!(got.len() >= want.len() && got[..want.len()] == want[..], "the render is not the file");
    assert!(got[want.len()..].iter().all(|&v| v == 0));
}

/// A --buffer that is not a whole number of periods is rounded up to one, with a note (as
/// ALSA rounds a buffer size), not refused.
#[test]
fn serve_buffer_is_rounded_up_to_whole_periods() {
    let env = Env::new();
    let s = env.serve(&["--sink", "null", "--period", "256", "--buffer", "1000"]);
    let err = s.stderr();
    assert!(
        err.contains("dmix-serve: --buffer 1000 is not a whole number of 256-frame periods: using 1024 frames"),
        "{err}"
    );
    assert!(err.contains("buffer 1024 frames"), "{err}");
    assert_eq!(stat_conn(&env, "default").params().ring_frames, 1024);
    // -q: no note, as for every other line but errors.
    let env = Env::new();
    let mut q = Proc::spawn("dmix-serve", env.command("dmix-serve").args(["--sink", "null", "-q", "--buffer", "1000"]));
    assert!(env.run("dmix-stat", &["--wait", "10"]).status.success());
    assert_eq!(stat_conn(&env, "default").params().ring_frames, 1024);
    q.signal(Signal::SIGTERM);
    assert!(q.wait().success());
    assert_eq!(q.finished_stderr(), "");
}
