//! Reliability and security: each invariant of the design turned into a test that would fail
//! without it. Clients killed anywhere, stalled at the worst moment, hostile or broken; the
//! server killed; the sink failing; other users. Figures: docs/RELIABILITY.md.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dmix::client::Connection;
use dmix::protocol::{HELLO_BYTES, Hello, MAX_REPLY_BYTES, PROTOCOL_VERSION, Refusal, Reply, Role};
use dmix::ring::layout::SLOT_ACTIVE;
use dmix::transport;
use nix::sys::signal::Signal;

use crate::util::*;

/// Open fds of a process.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Resident set of a process, KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A loop count: `default`, or the soak script's figure from `var`.
fn soak_count(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A deterministic pseudo-random sequence (no seeds from the clock: a failure reproduces).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The slot of the client with this pid, once it is admitted (bounded wait).
fn admitted_slot(stat: &Connection, pid: i32) -> Option<usize> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for slot in 0..64 {
            let info = stat.ring().slot_info(slot);
            if info.state.load(Ordering::Acquire) == SLOT_ACTIVE && info.pid.load(Ordering::Relaxed) == pid as u32 {
                return Some(slot);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        stat.ring().wait_any(Duration::from_millis(20));
    }
}

/// Active slots of a role (bounded wait until exactly `n`).
fn wait_role_count(stat: &Connection, role: Role, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let count = (0..64)
            .filter(|&s| {
                let info = stat.ring().slot_info(s);
                info.state.load(Ordering::Acquire) == SLOT_ACTIVE && info.role.load(Ordering::Relaxed) == role.code()
            })
            .count();
        if count == n {
            return;
        }
        assert!(Instant::now() < deadline, "{count} {role:?} clients, waiting for {n}");
        stat.ring().wait_any(Duration::from_millis(20));
    }
}

#[test]
fn reliability_clients_killed_anywhere_leave_the_survivor_exact_and_nothing_behind() {
    // scripts/soak raises the counts.
    let victims = soak_count("DMIX_SOAK_VICTIMS", 200);
    const CHUNK: usize = 480;
    let env = Env::new();
    // Victims play digital silence: whatever a killed one added, even half an add, sums to
    // nothing, so the survivor's render must come out exact.
    write_wav_i16(&env.path("silence.wav"), 48000, 2, &vec![0i16; 48000 * 2 * 2]);
    let survivor: Vec<i16> = signal(CHUNK * (victims + 10), 2, 440.0, 0.6, 9);
    let out = env.path("out.wav");
    // A ring of 4096 frames: its pages are all touched before the RSS is first read, so
    // any growth after that is the server's own.
    let mut server = env.serve(&[
        "--sink",
        &format!("wav:{}", out.display()),
        "--freewheel",
        "--wait-clients",
        "1",
        "--exit-when-idle",
        "--buffer",
        "4096",
    ]);
    let mut s = env.spawn("dmix-play", &["-t", "raw", "-f", "S16_LE", "-r", "48000", "-c", "2", "-"]);
    let mut feed = s.stdin();
    let bytes: Vec<u8> = survivor.iter().flat_map(|v| v.to_le_bytes()).collect();
    let chunk_bytes = CHUNK * 4;
    let stat = stat_conn(&env, "default");
    assert!(admitted_slot(&stat, s.pid()).is_some(), "the survivor never joined");
    // Enough for the survivor's first read (4096 frames): a player holds a freewheel render
    // only from its first written frame.
    feed.write_all(&bytes[..chunk_bytes * 10]).unwrap();
    let pid = s.pid() as u32;
    wait_for_snapshot(&stat, &env.socket("default"), "the survivor never wrote", |snap| {
        snap.clients.iter().any(|c| c.pid == pid && c.started == Some(true))
    });
    let ring_frames = u64::from(stat.params().ring_frames);
    let (fds_before, rss_before) = (fd_count(server.pid()), rss_kib(server.pid()));
    let mut rng = Lcg(0x5eed);
    let mut points = [0usize; 3];
    for i in 0..victims {
        let mut v = env.spawn("dmix-play", &["silence.wav"]);
        let point = (rng.next() % 3) as usize;
        points[point] += 1;
        match point {
            // At once: during exec, connect or hello.
            0 => {}
            // Admitted: about to add, or adding.
            1 => {
                admitted_slot(&stat, v.pid()).expect("victim admitted");
                for _ in 0..rng.next() % 64 {
                    std::thread::yield_now();
                }
            }
            // Waiting: its window is full and it sleeps on the futex (the survivor is not
            // fed, so a freewheel server cannot advance).
            _ => {
                let slot = admitted_slot(&stat, v.pid()).expect("victim admitted");
                let deadline = Instant::now() + DEADLINE;
                while stat.ring().counters(slot).appl_ptr.load(Ordering::Acquire) < stat.ring().hw_ptr() + ring_frames {
                    assert!(Instant::now() < deadline, "victim {i} never filled its window");
                    stat.ring().wait_any(Duration::from_millis(20));
                }
            }
        }
        v.signal(Signal::SIGKILL);
        v.wait();
        feed.write_all(&bytes[chunk_bytes * (10 + i)..chunk_bytes * (11 + i)]).unwrap();
    }
    assert!(points.iter().all(|&n| n > victims / 6), "kill points not all exercised: {points:?}");
    // Every victim's slot is reclaimed: only the survivor plays.
    wait_role_count(&stat, Role::Play, 1);
    // A victim killed before its hello left a pending connection, closed when the server
    // sees the hang-up: wait (bounded) for the count to settle.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(server.pid()) != fds_before && Instant::now() < deadline {
        stat.ring().wait_any(Duration::from_millis(20));
    }
    let (fds_after, rss_after) = (fd_count(server.pid()), rss_kib(server.pid()));
    assert_eq!(fds_after, fds_before, "the server's fd count changed");
    assert!(rss_after <= rss_before + 512, "the server grew from {rss_before} to {rss_after} KiB");
    eprintln!("kill points {points:?}; server fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB");
    drop(stat);
    feed.write_all(&bytes[chunk_bytes * (10 + victims)..]).unwrap();
    drop(feed);
    assert!(s.wait().success(), "survivor: {}", s.finished_stderr());
    assert!(server.wait().success(), "server: {}", server.finished_stderr());
    let (_, got) = read_wav(&out);
    let want: Vec<i32> = survivor.iter().map(|&v| i32::from(v)).collect();
    assert!(got.len() >= want.len(), "render shorter than the survivor");
    assert!(got[..want.len()] == want[..], "the survivor's render is not exact");
    assert!(got[want.len()..].iter().all(|&v| v == 0));
}

#[test]
fn reliability_connect_disconnect_cycles_keep_fds_and_memory_flat() {
    let cycles = soak_count("DMIX_SOAK_CYCLES", 1000);
    let env = Env::new();
    let server = env.serve(&["--sink", "null"]);
    let path = env.socket("default");
    let cycle = |i: usize| {
        match i % 3 {
            // Connect and leave without a word.
            0 => drop(transport::connect_socket(&path).unwrap()),
            // A full attach as an inspector.
            1 => drop(Connection::open(path.to_str().unwrap(), Role::Stat, "cycle", 0).unwrap()),
            // A hello as a player, then gone before admission is even looked at.
            _ => {
                let sock = transport::connect_socket(&path).unwrap();
                let hello = Hello {
                    version: PROTOCOL_VERSION,
                    role: Role::Play,
                    channels: 0,
                    name: "c".into(),
                    volume_db: None,
                };
                transport::send(sock.as_fd(), &hello.encode(), &[]).unwrap();
            }
        }
    };
    // Warm up (allocator pools, the control thread's vectors), then measure.
    (0..100).for_each(cycle);
    let stat = stat_conn(&env, "default");
    wait_role_count(&stat, Role::Play, 0);
    let (fds_before, rss_before) = (fd_count(server.pid()), rss_kib(server.pid()));
    (0..cycles).for_each(cycle);
    wait_role_count(&stat, Role::Play, 0);
    wait_role_count(&stat, Role::Stat, 1);
    let (fds_after, rss_after) = (fd_count(server.pid()), rss_kib(server.pid()));
    eprintln!("{cycles} cycles: server fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB");
    // Pending silent connections close on hang-up: nothing stays.
    assert_eq!(fds_after, fds_before);
    assert!(rss_after <= rss_before + 256, "the server grew from {rss_before} to {rss_after} KiB");
}

/// Waits (bounded) until our child `pid` stops: the kernel reports the stop to its parent
/// (waitid with WNOWAIT leaves the child's exit to its reaper thread).
fn wait_stopped(pid: i32) {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        let _ = tx.send(waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags));
    });
    // On a timeout the test fails, the child is killed, and the waiting thread returns.
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(WaitStatus::Stopped(..))) => {}
        other => panic!("process {pid} never stopped: {other:?}"),
    }
}

#[test]
fn reliability_player_stalled_between_window_check_and_add_never_plays_a_lap_late() {
    let mut env = Env::new();
    // A on the left channel: each frame's value is its own index + 1, so the recording shows
    // exactly which of A's frames played and in which order. B on the right: constant.
    const FRAMES: usize = 24000;
    let a: Vec<i16> = (0..FRAMES).flat_map(|i| [(i + 1) as i16, 0]).collect();
    let b: Vec<i16> = (0..FRAMES * 2).flat_map(|_| [0, 5]).collect();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    let _server = env.serve(&["--sink", "null", "--period", "256"]);
    let mut tee = env.spawn("dmix-tee", &["rec.wav"]);
    wait_for_clients(&env, "default", "tee", 1);
    let mut pb = env.spawn("dmix-play", &["b.wav"]);
    env.set_env(dmix::client::FAULT_STOP_BEFORE_ADD, "5");
    let mut pa = env.spawn("dmix-play", &["a.wav"]);
    // A stops itself after its window check, before its 5th add: mid-stream, after it has
    // filled its 200 ms window once (it reads 4096 frames at a time; an add ends at a read's
    // end or at the window's).
    wait_stopped(pa.pid());
    let stat = stat_conn(&env, "default");
    let ring = u64::from(stat.params().ring_frames);
    // Let the server take more than a whole lap while A holds its stale window.
    wait_hw_ptr(&env, "default", stat.ring().hw_ptr() + 2 * ring + 1024);
    pa.signal(Signal::SIGCONT);
    assert!(pa.wait().success(), "a: {}", pa.finished_stderr());
    assert!(pb.wait().success(), "b: {}", pb.finished_stderr());
    wait_hw_ptr(&env, "default", stat.ring().hw_ptr() + ring);
    tee.signal(Signal::SIGINT);
    assert!(tee.wait().success());
    assert!(tee.finished_stderr().is_empty(), "the recorder lost frames: {}", tee.finished_stderr());
    let (_, rec) = read_wav(&env.path("rec.wav"));
    let left: Vec<i32> = rec.iter().step_by(2).copied().filter(|&v| v != 0).collect();
    let right: Vec<i32> = rec.iter().skip(1).step_by(2).copied().collect();
    // Nothing of A played twice, out of order or a lap late: its frames appear in strictly
    // increasing order...
    assert!(left.windows(2).all(|w| w[0] < w[1]), "A's frames played out of order (a lap late?)");
    // ...with exactly one gap, the stalled add, dropped whole and counted late.
    let gaps: Vec<(i32, i32)> = left.windows(2).filter(|w| w[1] != w[0] + 1).map(|w| (w[0], w[1])).collect();
    assert_eq!(gaps.len(), 1, "A's gaps: {gaps:?}");
    assert_eq!(left.first(), Some(&1));
    assert_eq!(left.last(), Some(&(FRAMES as i32)));
    // B, which never stalled, is untouched: all of its frames, contiguous.
    let b_played: Vec<usize> = right.iter().enumerate().filter(|(_, v)| **v == 5).map(|(i, _)| i).collect();
    assert_eq!(b_played.len(), FRAMES * 2, "B lost frames");
    assert!(b_played.windows(2).all(|w| w[1] == w[0] + 1), "B has a hole");
    assert!(right.iter().all(|&v| v == 0 || v == 5));
}

#[test]
fn reliability_server_killed_every_client_exits_within_a_second() {
    let env = Env::new();
    write_wav_i16(&env.path("long.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.3, 1));
    write_wav_i16(&env.path("in.wav"), 48000, 2, &signal(48000 * 30, 2, 220.0, 0.3, 2));
    let mut server = env.serve(&["--sink", "null", "--capture", "wav:in.wav"]);
    let mut clients = vec![
        env.spawn("dmix-play", &["long.wav"]),
        env.spawn("dmix-tee", &["rec.wav"]),
        env.spawn("dmix-tee", &["--source", "capture", "cap.wav"]),
        env.spawn("dmix-share", &["front=0,1"]),
        env.spawn("dmix-stat", &["--watch", "--json", "--interval", "50"]),
    ];
    for (role, n) in [("play", 1), ("tee", 1), ("capture", 1), ("share", 1), ("stat", 2)] {
        wait_for_clients(&env, "default", role, n);
    }
    let mut sub = env.spawn("dmix-play", &["-D", "front", "long.wav"]);
    wait_for_clients(&env, "default", "play", 2);
    clients.push(sub);
    server.signal(Signal::SIGKILL);
    server.wait();
    let killed = Instant::now();
    for c in &mut clients {
        let left = Duration::from_secs(1).saturating_sub(killed.elapsed());
        let status = c.wait_timeout(left.max(Duration::from_millis(1)));
        let err = c.finished_stderr();
        assert_eq!(status.code(), Some(10), "{}: {err}", c.name);
        assert!(err.contains("server went away"), "{}: {err}", c.name);
    }
    eprintln!("all clients out {:?} after the kill", killed.elapsed());
    // The recordings are finalized WAVs.
    read_wav(&env.path("rec.wav"));
    read_wav(&env.path("cap.wav"));
    // The next server replaces the stale socket.
    let _next = env.serve(&["--sink", "null"]);
    sub = env.spawn("dmix-stat", &[]);
    assert!(sub.wait().success());
}

#[test]
fn reliability_full_disk_leaves_a_readable_wav_and_tells_the_clients() {
    let env = Env::new();
    let input = signal(48000 * 5, 2, 440.0, 0.5, 4);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &input);
    // A file-size limit stands in for a full disk: writes past it fail with EFBIG.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--fsize=200000").arg("--").arg(bin("dmix-serve"));
    // The ring's memfds count against the limit too: a small one leaves room for the WAV.
    cmd.args(["--sink", "wav:out.wav", "--freewheel", "--wait-clients", "1", "--buffer", "2048"]);
    cmd.env("XDG_RUNTIME_DIR", env.runtime_dir()).env("HOME", env.path("")).current_dir(env.path(""));
    let mut server = Proc::spawn("dmix-serve", cmd.stdin(std::process::Stdio::null()));
    server.wait_for_stderr("serving on");
    let mut p = env.spawn("dmix-play", &["a.wav"]);
    let status = server.wait();
    let err = server.finished_stderr();
    assert_eq!(status.code(), Some(9), "{err}");
    let line = err.lines().last().unwrap();
    assert!(line.contains("wav:out.wav") && line.contains("too large"), "{err}");
    let pstatus = p.wait_timeout(Duration::from_secs(5));
    assert_eq!(pstatus.code(), Some(10), "{}", p.finished_stderr());
    // What reached the disk is a valid WAV, and it is exactly the start of the input.
    let (spec, got) = read_wav(&env.path("out.wav"));
    assert_eq!(spec.channels, 2);
    assert!(got.len() > 40000 && got.len() < input.len(), "{} samples kept", got.len());
    assert!(got.iter().zip(&input).all(|(&g, &w)| g == i32::from(w)), "the kept part differs from the input");
}

/// Sends `bytes` as one message and returns the server's verdict: a refusal code, or None
/// if it just hung up.
fn verdict(path: &std::path::Path, bytes: &[u8]) -> Option<Refusal> {
    let sock = transport::connect_socket(path).unwrap();
    let _ = transport::send(sock.as_fd(), bytes, &[]);
    let mut buf = [0u8; MAX_REPLY_BYTES];
    match transport::recv_timeout(sock.as_fd(), &mut buf, DEADLINE) {
        Ok(Some(msg)) => match Reply::decode(&buf[..msg.len]) {
            Ok(Reply::Refused(r, _)) => Some(r),
            other => panic!("expected a refusal, got {other:?}"),
        },
        _ => None,
    }
}

#[test]
fn reliability_hostile_hellos_and_floods_leave_the_others_playing() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000 * 6, 2, 440.0, 0.3, 1));
    let mut server = env.serve(&["--sink", "null", "--period", "256"]);
    let path = env.socket("default");
    let mut player = env.spawn("dmix-play", &["a.wav"]);
    let stat = stat_conn(&env, "default");
    let slot = admitted_slot(&stat, player.pid()).expect("player admitted");
    let fds_before = fd_count(server.pid());
    let good =
        Hello { version: PROTOCOL_VERSION, role: Role::Play, channels: 0, name: "x".into(), volume_db: None }.encode();
    let mut wrong_magic = good;
    wrong_magic[0] = b'X';
    let mut future = good;
    future[4..8].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
    let mut bad_role = good;
    bad_role[8..12].copy_from_slice(&77u32.to_le_bytes());
    for (what, bytes, want) in [
        ("one byte (a byte-by-byte sender)", &good[..1], Refusal::BadRequest),
        ("truncated", &good[..HELLO_BYTES - 1], Refusal::BadRequest),
        ("oversized", &[0u8; 70000][..], Refusal::BadRequest),
        ("wrong magic", &wrong_magic[..], Refusal::BadRequest),
        ("future version", &future[..], Refusal::Incompatible),
        ("unknown role", &bad_role[..], Refusal::BadRequest),
        ("garbage", &[0xffu8; HELLO_BYTES][..], Refusal::BadRequest),
    ] {
        let v = verdict(&path, bytes);
        assert!(v == Some(want) || (what == "oversized" && v.is_none()), "{what}: {v:?}");
    }
    // A client that connects and never speaks is dropped after the hello timeout.
    let silent = transport::connect_socket(&path).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    assert!(transport::recv_timeout(silent.as_fd(), &mut buf, Duration::from_secs(10)).unwrap().is_none());
    assert!(t.elapsed() < Duration::from_secs(5), "a silent client was held {:?}", t.elapsed());
    // One client opening 1,000 connections and saying nothing on any.
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft.1, soft.1);
    let flood: Vec<_> = (0..1000).map(|_| transport::connect_socket(&path).unwrap()).collect();
    server.wait_for_stderr("waiting to say hello; closing the oldest silent ones");
    // The server holds a bounded number of them.
    let held = fd_count(server.pid()) - fds_before;
    assert!(held <= 40, "the server holds {held} extra fds during the flood");
    // The oldest was closed to make room, and told why (refusal 7), so that a client that
    // was merely slow knows to say hello again.
    let mut buf = [0u8; MAX_REPLY_BYTES];
    let msg = transport::recv_timeout(flood[0].as_fd(), &mut buf, DEADLINE).unwrap().expect("a refusal first");
    assert!(matches!(Reply::decode(&buf[..msg.len]), Ok(Reply::Refused(Refusal::Crowded, _))));
    drop(flood);
    server.wait_for_stderr("the flood is over");
    // Meanwhile the player played on: no late period, no underrun, nothing late.
    let snap = wait_for_clients(&env, "default", "play", 1);
    assert_eq!(snap.server.late_periods, 0, "the paced clock ran late");
    let c = stat.ring().counters(slot);
    assert_eq!(c.underruns.load(Ordering::Relaxed), 0, "the player underran");
    assert_eq!(c.late_frames.load(Ordering::Relaxed), 0, "the player's frames came late");
    let floods = server.stderr().matches("waiting to say hello").count();
    assert_eq!(floods, 1, "the flood was logged {floods} times");
    player.signal(Signal::SIGINT);
    player.wait();
}

/// Raises this process's open-file limit to its hard limit (a flood holds hundreds).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

/// Issue 14, part 2: with about 300 connections held open (a third sending garbage, a third
/// "DMIX" and nothing more, a third nothing), players were refused: the server dropped every
/// connection past 32 waiting for their hello, the player's among them (10 runs of 12 exited
/// 10, "the server went away"; 2 exited 0 having played nothing, see the next test). Now a
/// hello waiting at accept is answered at once and the oldest silent connection makes room:
/// 20 players in a row under the flood each play their whole file, which the render proves.
#[test]
fn reliability_a_flood_of_slow_connections_keeps_no_player_out() {
    const PLAYERS: usize = 20;
    // 0.2 s each: 20 runs in about 5 s.
    const FRAMES: usize = 9600;
    let env = Env::new();
    // Player i's left channel is a constant of its own, its right channel the frame number:
    // the render shows whose each frame is, and that none is missing, repeated or reordered.
    let marker = |i: usize| 1000 * (i as i32 + 1);
    for i in 0..PLAYERS {
        let samples: Vec<i16> = (0..FRAMES).flat_map(|f| [marker(i) as i16, (f + 1) as i16]).collect();
        write_wav_i16(&env.path(&format!("p{i}.wav")), 48000, 2, &samples);
    }
    raise_fd_limit();
    let out = env.path("out.wav");
    // Paced, as a real server: the flood and the players share its control thread's time.
    let mut server = env.serve(&["--sink", &format!("wav:{}", out.display())]);
    let fds_before = fd_count(server.pid());
    let flood = crate::flooder::Flood::start(&env.socket("default"), 300);
    // The server's pending set is full before the first player comes.
    server.wait_for_stderr("connections waiting to say hello");
    let mut most_fds = 0;
    let mut held = Vec::with_capacity(PLAYERS);
    for i in 0..PLAYERS {
        held.push(flood.held());
        let t = Instant::now();
        let r = env.run("dmix-play", &["-q", &format!("p{i}.wav")]);
        let code = r.status.code();
        assert!(
            r.status.success(),
            "player {} of {PLAYERS} exited {code:?} after {:?}: {}",
            i + 1,
            t.elapsed(),
            r.stderr
        );
        assert!(r.stderr.is_empty(), "player {}: {}", i + 1, r.stderr);
        most_fds = most_fds.max(fd_count(server.pid()));
    }
    let opened = flood.opened();
    drop(flood);
    eprintln!(
        "{PLAYERS} players under a flood of {opened} connections (held {:?} as each started); server fds {fds_before}, at most {most_fds}",
        held
    );
    // The server held a bounded number: 32 pending and what one pass accepts.
    assert!(most_fds <= fds_before + 32 + 16, "the server held {most_fds} fds (from {fds_before})");
    server.signal(Signal::SIGINT);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&out);
    let want: Vec<i32> = (1..=FRAMES as i32).collect();
    for i in 0..PLAYERS {
        let frames: Vec<i32> = got.chunks_exact(2).filter(|f| f[0] == marker(i)).map(|f| f[1]).collect();
        assert!(frames == want, "player {}: {} of {FRAMES} frames in the render, or out of order", i + 1, frames.len());
    }
}

/// Issue 14, part 3: a server that accepted a connection and closed it before the hello
/// (dropped as excess) made the hello's sendmsg fail with EPIPE, which `cli::report` took
/// for stdout's broken pipe: dmix-play exited 0 in no time having played nothing (2 runs of
/// 12 under the flood). A fake server that hangs up on every connection at once: every
/// tool must fail with one line, never succeed. (Without the fix the EPIPE is a race
/// the client usually wins, hence several of each at once.)
#[test]
fn reliability_a_server_that_hangs_up_at_once_is_never_success() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(9600, 2, 440.0, 0.3, 14));
    let fake = HangUpServer::start(&env.socket("default"), None);
    // One that closes every connection as crowded (refusal 7), as a flooded server closes
    // the oldest silent one: the client retries, then says the server is busy (exit 5).
    let _crowded = HangUpServer::start(&env.socket("crowded"), Some(Refusal::Crowded));
    let mut busy = env.spawn("dmix-play", &["-q", "-D", "crowded", "a.wav"]);
    let mut tools = Vec::new();
    for i in 0..4 {
        tools.push(env.spawn("dmix-play", &["-q", "a.wav"]));
        tools.push(env.spawn("dmix-tee", &[&format!("rec{i}.wav")]));
        tools.push(env.spawn("dmix-share", &[&format!("front{i}=0,1")]));
    }
    for t in &mut tools {
        let status = t.wait();
        let err = t.finished_stderr();
        assert_eq!(status.code(), Some(10), "{} claimed {status} against a server that hangs up: {err:?}", t.name);
        assert_eq!(err.lines().count(), 1, "{}: {err}", t.name);
        assert!(err.contains("the server went away"), "{}: {err}", t.name);
    }
    assert!(fake.accepted() >= tools.len() as u64);
    let status = busy.wait();
    let err = busy.finished_stderr();
    assert_eq!(status.code(), Some(5), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("server busy: too many connections waiting to say hello (gave up after 5 s)"), "{err}");
    for i in 0..4 {
        assert!(!env.path(&format!("rec{i}.wav")).exists(), "dmix-tee wrote a file");
    }
}

#[test]
fn reliability_shared_memory_cannot_be_resized_and_garbage_counters_hurt_nobody() {
    let env = Env::new();
    let a = signal(48000, 2, 440.0, 0.5, 3);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let out = env.path("out.wav");
    let mut server = env.serve(&[
        "--sink",
        &format!("wav:{}", out.display()),
        "--freewheel",
        "--wait-clients",
        "2",
        "--exit-when-idle",
    ]);
    // A hostile player, speaking the protocol by hand.
    let sock = transport::connect_socket(&env.socket("default")).unwrap();
    let hello =
        Hello { version: PROTOCOL_VERSION, role: Role::Play, channels: 0, name: "hostile".into(), volume_db: None };
    transport::send(sock.as_fd(), &hello.encode(), &[]).unwrap();
    let mut buf = [0u8; MAX_REPLY_BYTES];
    let msg = transport::recv_timeout(sock.as_fd(), &mut buf, DEADLINE).unwrap().unwrap();
    let Ok(Reply::Welcome(w)) = Reply::decode(&buf[..msg.len]) else { panic!("no welcome") };
    assert_eq!(msg.fds.len(), 4);
    for (i, fd) in msg.fds.iter().enumerate() {
        // Even through a read-write reopen of the fd (which /proc allows), the seals refuse
        // any resize: a region can never shrink under the server or another client.
        use std::os::fd::AsRawFd;
        let rw = std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let rw = rw.map(std::os::fd::OwnedFd::from).unwrap_or_else(|_| fd.try_clone().unwrap());
        for len in [0, 1 << 20] {
            assert_eq!(nix::unistd::ftruncate(&rw, len), Err(nix::Error::EPERM), "region {i} resized to {len}");
        }
    }
    // Its own counters filled with lies: a far-future position, a drain that never ends,
    // absurd statistics.
    let ring =
        dmix::ring::ClientRing::attach(w.params, [&msg.fds[0], &msg.fds[1], &msg.fds[2], &msg.fds[3]], true).unwrap();
    // Lie only once admitted (admission resets the counters).
    let info = ring.slot_info(w.slot as usize);
    let deadline = Instant::now() + DEADLINE;
    while !(info.state.load(Ordering::Acquire) == SLOT_ACTIVE && info.client_id.load(Ordering::Relaxed) == w.client_id)
    {
        assert!(Instant::now() < deadline, "never admitted");
        ring.wait_any(Duration::from_millis(20));
    }
    let c = ring.counters(w.slot as usize);
    // It claims to have written, so it counts as a player (for --wait-clients 2 too).
    c.started.store(1, Ordering::Release);
    c.appl_ptr.store(u64::MAX, Ordering::Release);
    c.end_ptr.store(u64::MAX - 1, Ordering::Release);
    c.flags.store(u32::MAX, Ordering::Release);
    c.late_frames.store(u64::MAX, Ordering::Relaxed);
    c.underruns.store(u64::MAX, Ordering::Relaxed);
    for p in &c.peak {
        p.store(u32::MAX, Ordering::Relaxed);
    }
    ring.ring_doorbell();
    let mut p = env.spawn("dmix-play", &["a.wav"]);
    assert!(p.wait().success(), "{}", p.finished_stderr());
    // The honest player was rendered whole and exact; the liar only kept the server alive
    // until it left.
    drop(ring);
    drop(sock);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&out);
    let want: Vec<i32> = a.iter().map(|&v| i32::from(v)).collect();
    assert!(got[..want.len()] == want[..], "the honest player's render is not exact");
}

/// A command run as another user (setpriv, from util-linux), with the test's environment.
fn as_user(env: &Env, user: &str, group: &str, extra_groups: Option<&str>, name: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={user}")).arg(format!("--regid={group}"));
    match extra_groups {
        Some(g) => c.arg(format!("--groups={g}")),
        None => c.arg("--clear-groups"),
    };
    c.arg("--").arg(bin(name)).args(args);
    c.env("HOME", "/").env("XDG_RUNTIME_DIR", env.runtime_dir()).env_remove("DMIX_DEVICE").current_dir("/");
    c
}

#[test]
fn reliability_other_users_are_refused_and_a_group_is_admitted() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::getuid().is_root() {
        // Starting processes as other users needs root (CI and this machine run as root).
        eprintln!("reliability_other_users_are_refused_and_a_group_is_admitted: needs root; not run");
        return;
    }
    let env = Env::new();
    // Let the other users reach the test's directory (a temp dir is 0700).
    std::fs::set_permissions(env.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let audio = nix::unistd::Group::from_name("audio").unwrap().expect("group audio").gid.as_raw();

    // 1. A server of nobody's. Its socket made world-writable by mistake: the server's own
    // check of the peer's uid (SO_PEERCRED) still refuses another user.
    let dir = env.path("nobody");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = dir.join("s.sock");
    let sock_s = sock.to_str().unwrap();
    let mut server = Proc::spawn(
        "dmix-serve",
        as_user(&env, "nobody", "nogroup", None, "dmix-serve", &["--sink", "null", "--socket", sock_s])
            .stdin(std::process::Stdio::null()),
    );
    server.wait_for_stderr("serving on");
    // nobody may not use SCHED_FIFO: said once, and the server serves anyway.
    assert!(
        server.stderr().contains("dmix-serve: no real-time scheduling (SCHED_FIFO priority 40: "),
        "{}",
        server.stderr()
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut intruder =
        Proc::spawn("dmix-stat", &mut as_user(&env, "daemon", "daemon", None, "dmix-stat", &["-D", sock_s]));
    let status = intruder.wait();
    let err = intruder.finished_stderr();
    assert_eq!(status.code(), Some(7), "{err}");
    assert!(err.contains("uid 1 may not use this server"), "{err}");
    server.wait_for_stderr("refused pid");
    // Its own user is served.
    let mut own = Proc::spawn("dmix-stat", &mut as_user(&env, "nobody", "nogroup", None, "dmix-stat", &["-D", sock_s]));
    assert!(own.wait().success(), "{}", own.finished_stderr());
    drop(server);

    // 2. --group audio: a member of audio is admitted, someone else is not.
    let dir = env.path("shared");
    let sock = dir.join("s.sock");
    let sock_s = sock.to_str().unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(audio)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let mut server = Proc::spawn(
        "dmix-serve",
        as_user(
            &env,
            "nobody",
            "nogroup",
            Some("audio"),
            "dmix-serve",
            &["--sink", "null", "--socket", sock_s, "--group", "audio"],
        )
        .stdin(std::process::Stdio::null()),
    );
    server.wait_for_stderr("serving on");
    let meta = std::fs::metadata(&sock).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, audio), "socket mode and group");
    let mut member =
        Proc::spawn("dmix-stat", &mut as_user(&env, "daemon", "daemon", Some("audio"), "dmix-stat", &["-D", sock_s]));
    assert!(member.wait().success(), "a member of audio was refused: {}", member.finished_stderr());
    // A non-member is stopped by the file modes first...
    let mut other =
        Proc::spawn("dmix-stat", &mut as_user(&env, "daemon", "daemon", None, "dmix-stat", &["-D", sock_s]));
    assert_eq!(other.wait().code(), Some(7), "{}", other.finished_stderr());
    // ...and by the server when the modes are opened by mistake.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut other =
        Proc::spawn("dmix-stat", &mut as_user(&env, "daemon", "daemon", None, "dmix-stat", &["-D", sock_s]));
    assert_eq!(other.wait().code(), Some(7));
    let err = other.finished_stderr();
    assert!(err.contains("it serves uid 65534 and group 29"), "{err}");
}

#[test]
#[ignore = "needs the machine to itself: run by scripts/quickstart test after the suite, alone"]
fn reliability_63_clients_for_a_minute_without_an_xrun_and_the_64th_refused() {
    const PLAYERS: usize = 63;
    let seconds: u64 = std::env::var("DMIX_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let env = Env::new();
    let frames = 48000 * (seconds as usize + 5);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(frames, 2, 440.0, 0.01, 5));
    let _server = env.serve(&["--sink", "null", "--period", "256"]);
    let stat = stat_conn(&env, "default");
    let players: Vec<Proc> = (0..PLAYERS).map(|_| env.spawn("dmix-play", &["-q", "a.wav"])).collect();
    wait_role_count(&stat, Role::Play, PLAYERS);
    // Every slot is taken (63 players and our inspector): one more is refused, clearly.
    let r = env.run("dmix-play", &["a.wav"]);
    assert_eq!(r.status.code(), Some(6), "{}", r.stderr);
    assert!(r.stderr.contains("server full"), "{}", r.stderr);
    // Measured from here: the start (63 processes exec'ing and decoding at once on 2 cores)
    // is not the steady state the test is about; what happened there is printed.
    let snap = dmix::stat::snapshot(&stat, &env.socket("default")).unwrap();
    let (late0, start) = (snap.server.late_periods, stat.ring().hw_ptr());
    let underruns0: u64 = snap.clients.iter().map(|c| c.underruns).sum();
    let late_frames0: u64 = snap.clients.iter().map(|c| c.late_frames).sum();
    eprintln!("start: late periods {late0}, underruns {underruns0}, late frames {late_frames0}");
    // Through our own inspector: every slot is taken.
    // Late periods are the server's fault only when the machine did not stall it: this VM
    // stops even an idle SCHED_FIFO thread for 10 to 30 ms a few times a minute (cyclictest,
    // docs/RELIABILITY.md). A watcher above the server's priority on each CPU sees those.
    let stalls = StallWatch::start(Duration::from_millis(16));
    let target = start + 48000 * seconds;
    let deadline = Instant::now() + Duration::from_secs(seconds * 2 + 30);
    while stat.ring().hw_ptr() < target {
        assert!(Instant::now() < deadline, "the server stalled");
        stat.ring().wait_hw_ptr(target, Duration::from_millis(100));
    }
    let snap = dmix::stat::snapshot(&stat, &env.socket("default")).unwrap();
    let worst_us = snap.server.max_period_work_us;
    let underruns: u64 = snap.clients.iter().map(|c| c.underruns).sum::<u64>() - underruns0;
    let late: u64 = snap.clients.iter().map(|c| c.late_frames).sum::<u64>() - late_frames0;
    let stalls = stalls.stop();
    let late_periods = snap.server.late_periods - late0;
    eprintln!(
        "{PLAYERS} players, {seconds} s: late periods {late_periods}, underruns {underruns}, late frames {late}, longest period work {worst_us:.0} us; machine stalls of 16 ms or more: {stalls:?}"
    );
    assert_eq!(snap.clients.iter().filter(|c| c.role == "play").count(), PLAYERS, "a player left early");
    // Each late period (a wake-up over four periods, 21 ms, late) needs a stall of the machine
    // to explain it; the server's own work is bounded below (a period's work, not a stall).
    assert!(
        late_periods <= stalls.len() as u64,
        "the server's clock ran late {late_periods} times, the machine stalled {} times: {stalls:?}",
        stalls.len()
    );
    // A stall that hits while a period is worked on counts in its work (seen in CI: 6.9 ms
    // of work beside a 31 ms stall): the work is the server's only when the machine ran it.
    if stalls.is_empty() {
        assert!(worst_us < 5333.0, "a period's work took longer than the period: {worst_us} us");
    }
    assert_eq!(snap.server.xruns, 0);
    assert_eq!(underruns, 0, "players fell behind");
    assert_eq!(late, 0, "frames arrived late");
    drop(players);
}

/// Stalls of the machine itself: one thread per CPU, pinned to it at SCHED_FIFO 60 (above the
/// server's 40, so the server's own work cannot delay it), wakes every millisecond and records
/// each wake-up later than `threshold`. What it records is the machine not running a ready
/// real-time thread (the hypervisor, or the kernel), which no code of ours can cause.
struct StallWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Duration, Duration)>>>,
}

impl StallWatch {
    fn start(threshold: Duration) -> StallWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let origin = Instant::now();
        let threads = (0..cpus)
            .map(|cpu| {
                let stop = stop.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let handle = std::thread::spawn(move || {
                    let mut set = nix::sched::CpuSet::new();
                    set.set(cpu).unwrap();
                    let pinned = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                    let realtime = dmix::sys::set_realtime(60);
                    tx.send((pinned.map_err(|e| e.to_string()), realtime.map_err(|e| e.to_string()))).unwrap();
                    // (start since origin, length) of each stall.
                    let mut stalls = Vec::new();
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        next += Duration::from_millis(1);
                        // The sleep is what is measured (how late a ready real-time thread
                        // wakes), not a wait for anything.
                        std::thread::sleep(next.saturating_duration_since(Instant::now()));
                        let now = Instant::now();
                        if now > next + threshold {
                            stalls.push((next - origin, now - next));
                            next = now;
                        }
                    }
                    stalls
                });
                let (pinned, realtime) = rx.recv().unwrap();
                pinned.unwrap_or_else(|e| panic!("pinning the stall watcher to CPU {cpu}: {e}"));
                realtime.unwrap_or_else(|e| panic!("the stall watcher needs SCHED_FIFO (root): {e}"));
                handle
            })
            .collect();
        StallWatch { stop, threads }
    }

    /// The stalls seen on any CPU, overlapping ones merged: (start, length), in time order.
    fn stop(self) -> Vec<(Duration, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<(Duration, Duration)> =
            self.threads.into_iter().flat_map(|t| t.join().expect("stall watcher")).collect();
        all.sort();
        let mut merged: Vec<(Duration, Duration)> = Vec::new();
        for (start, len) in all {
            match merged.last_mut() {
                Some((s, l)) if start <= *s + *l => *l = (*l).max(start + len - *s),
                _ => merged.push((start, len)),
            }
        }
        merged
    }
}

/// VmLck of process `pid`, in KiB.
fn locked_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmLck:")).expect("VmLck");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// (rt_priority, policy) of the thread named `comm` of process `pid`, from /proc.
fn thread_sched(pid: i32, comm: &str) -> (u32, u32) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name start at field 3; rt_priority is 40, policy 41.
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        return (f[37].parse().unwrap(), f[38].parse().unwrap());
    }
    panic!("no thread {comm} in process {pid}");
}

#[test]
fn reliability_the_period_thread_is_real_time_and_the_ring_locked_when_paced() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("reliability_the_period_thread_is_real_time_when_paced: needs root; not run");
        return;
    }
    const SCHED_OTHER: u32 = 0;
    const SCHED_FIFO: u32 = 1;
    let env = Env::new();
    // Paced: SCHED_FIFO 40 by default (a load of other processes cannot make periods late;
    // seen without it: 8 late periods in a minute with 63 players while two compilers ran).
    let s = env.serve(&["--sink", "null", "-n", "paced"]);
    assert!(s.stderr().contains("real time (SCHED_FIFO 40)"), "{}", s.stderr());
    assert_eq!(thread_sched(s.pid(), "dmix-period"), (40, SCHED_FIFO));
    assert_eq!(thread_sched(s.pid(), "dmix-serve").1, SCHED_OTHER, "only the period thread");
    // The ring is locked in memory (status + mix + monitor + capture regions).
    assert!(locked_kib(s.pid()) >= 200, "VmLck {} kB", locked_kib(s.pid()));
    let s = env.serve(&["--sink", "null", "-n", "prio", "--rt-priority", "70"]);
    assert_eq!(thread_sched(s.pid(), "dmix-period"), (70, SCHED_FIFO));
    let s = env.serve(&["--sink", "null", "-n", "off", "--rt-priority", "0"]);
    assert!(s.stderr().contains("real time\n") || s.stderr().trim_end().ends_with("real time"), "{}", s.stderr());
    assert_eq!(thread_sched(s.pid(), "dmix-period"), (0, SCHED_OTHER));
    // Freewheel is not real time, and does not lock the ring.
    let s = env.serve(&["--sink", "null", "-n", "fw", "--freewheel"]);
    assert_eq!(thread_sched(s.pid(), "dmix-period"), (0, SCHED_OTHER));
    assert_eq!(locked_kib(s.pid()), 0);
    // Neither allowed (nobody, memlock limit 0): one line each, and the server serves.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = env.path("nobody");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = dir.join("s.sock");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "prlimit", "--memlock=0:0"])
        .arg(bin("dmix-serve"))
        .args(["--sink", "null", "-q", "--socket", sock.to_str().unwrap()])
        .env("HOME", "/")
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    let mut s = Proc::spawn("dmix-serve", &mut c);
    s.wait_for_stderr("the ring is not locked in memory");
    let err = s.stderr();
    assert!(err.contains("dmix-serve: no real-time scheduling (SCHED_FIFO priority 40: "), "{err}");
    assert!(err.contains("raise the memlock limit"), "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    // It serves: its owner's inspector is admitted.
    let mut stat = Proc::spawn(
        "dmix-stat",
        &mut as_user(&env, "nobody", "nogroup", None, "dmix-stat", &["-D", sock.to_str().unwrap()]),
    );
    assert!(stat.wait().success(), "{}", stat.finished_stderr());
    // Its stdout is read by a thread: drained once finished_stderr returns.
    let err = stat.finished_stderr();
    assert!(stat.stdout().contains("real time"), "stdout {:?}, stderr {err:?}", stat.stdout());
    let r = env.run("dmix-serve", &["--sink", "null", "-n", "bad", "--rt-priority", "100"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--rt-priority"), "{}", r.stderr);
}
