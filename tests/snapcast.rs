//! Multiroom through Snapcast (issue 17), with Debian's snapserver and snapclient on the
//! loopback address: `dmix-tee -t raw FIFO` feeds snapserver's pipe source and survives its
//! restarts, and snapclient plays a Snapcast stream through the dmixrs plugin. Snapcast
//! adds its own buffer (1 s) and resamples to keep its clients in sync, so audio is compared
//! by pitch and length within a tolerance, never sample for sample.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::alsa_plugin::{plugin_env_with, spawn_tool};
use crate::util::*;

/// A free TCP port on the loopback address (taken by the kernel, then released for
/// snapserver: a race with another program is possible, and would show as snapserver's
/// bind error).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A snapserver of the test's own: its config, data and stream port in the test directory
/// and on 127.0.0.1, no HTTP or JSON-RPC ports, reading the FIFO `fifo` as 48000:16:2.
struct Snapserver {
    conf: PathBuf,
    port: u16,
}

impl Snapserver {
    fn new(env: &Env, fifo: &Path) -> Snapserver {
        let conf = env.path("snapserver.conf");
        let port = free_port();
        std::fs::write(
            &conf,
            format!(
                "[server]\ndatadir = {dir}\n[http]\nenabled = false\n[tcp]\nenabled = false\n\
                 [stream]\nbind_to_address = 127.0.0.1\nport = {port}\n\
                 source = pipe://{fifo}?name=dmix&sampleformat=48000:16:2&mode=read\n\
                 [logging]\nsink = stderr\nfilter = *:info\n",
                dir = env.dir.path().display(),
                fifo = fifo.display(),
            ),
        )
        .unwrap();
        Snapserver { conf, port }
    }

    /// Starts it and waits until it listens.
    fn start(&self, env: &Env) -> Proc {
        let mut p = spawn_tool(env, "snapserver", "snapserver", &["-c", self.conf.to_str().unwrap()]);
        p.wait_for_stderr("Creating stream acceptor");
        p
    }
}

/// A snapclient of the server on `port` that writes what it plays to `out` (appending: a
/// reconnection must not truncate what came before).
fn snapclient_to_file(env: &Env, port: u16, out: &Path) -> Proc {
    let player = format!("file:filename={},mode=a", out.display());
    let port = port.to_string();
    let args = ["-h", "127.0.0.1", "-p", &port, "--hostID", "dmix-test", "--player", &player, "--logsink", "stderr"];
    spawn_tool(env, "snapclient", "snapclient", &args)
}

/// A stretch of sound in a mono signal, between silences.
#[derive(Debug)]
struct Tone {
    start: usize,
    frames: usize,
    hz: f64,
    /// The longest run of zeros inside it: a gap.
    longest_zeros: usize,
}

/// The stretches of sound in `left` (48 kHz): runs of non-zero samples with less than 10 ms
/// of zeros inside; one that runs into the end of `left` is not yet whole and left out.
fn tones(left: &[i16]) -> Vec<Tone> {
    let gap = 480;
    let mut out = Vec::new();
    let mut i = 0;
    while i < left.len() {
        if left[i] == 0 {
            i += 1;
            continue;
        }
        let (start, mut last, mut zeros, mut longest) = (i, i, 0, 0);
        while i < left.len() && zeros < gap {
            if left[i] == 0 {
                zeros += 1;
            } else {
                longest = longest.max(zeros);
                zeros = 0;
                last = i;
            }
            i += 1;
        }
        if zeros < gap {
            break;
        }
        let s = &left[start..=last];
        let cycles = s.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        let frames = s.len();
        out.push(Tone { start, frames, hz: cycles as f64 * 48000.0 / frames as f64, longest_zeros: longest });
    }
    out
}

/// The left channel of a raw S16_LE stereo file (whole frames so far), from frame `from`.
fn raw_left(path: &Path, from: usize) -> Vec<i16> {
    let b = std::fs::read(path).unwrap_or_default();
    b.get(from * 4..).unwrap_or_default().chunks_exact(4).map(|f| i16::from_le_bytes([f[0], f[1]])).collect()
}

/// Waits (bounded) until `until` holds for the left channel of `path` from frame `from`,
/// and returns its answer.
fn wait_for_heard<T>(path: &Path, from: usize, what: &str, until: impl Fn(&[i16]) -> Option<T>) -> T {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + DEADLINE;
    // snapclient's file player is another program: its writes to the file (or the file's
    // creation) are the only event there is to wait on. The directory is watched, since the
    // file may not exist yet.
    let notify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).expect("inotify_init");
    let dir = path.parent().expect("an output file in a directory");
    notify.add_watch(dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE).expect("inotify watch");
    loop {
        // Events up to now are drained before the file is read: a write after the read
        // leaves an event for the poll below.
        while notify.read_events().is_ok_and(|e| !e.is_empty()) {}
        if let Some(t) = until(&raw_left(path, from)) {
            return t;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{}: {what} never came", path.display());
        let ms = PollTimeout::try_from(left.min(Duration::from_secs(1))).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut [PollFd::new(notify.as_fd(), PollFlags::POLLIN)], ms);
    }
}

/// Waits (bounded) until `path` holds `n` whole tones from frame `from`, and returns them.
fn wait_for_tones(path: &Path, from: usize, n: usize) -> Vec<Tone> {
    wait_for_heard(path, from, &format!("{n} tones"), |left| Some(tones(left)).filter(|t| t.len() >= n))
}

fn assert_tone(t: &Tone, hz: f64, seconds: f64) {
    let frames = seconds * 48000.0;
    assert!((t.hz - hz).abs() < hz * 0.01, "{t:?}: not {hz} Hz");
    assert!((t.frames as f64 - frames).abs() < frames * 0.02, "{t:?}: not {seconds} s long");
    assert!(t.longest_zeros <= 2, "{t:?}: a gap inside");
}

fn tone_file(env: &Env, name: &str, hz: f64, seconds: f64) {
    let frames = (seconds * 48000.0) as usize;
    let s: Vec<i16> = (0..frames)
        .flat_map(|i| {
            let v = (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 48000.0).sin()).round() as i16;
            [v, v]
        })
        .collect();
    write_wav_i16(&env.path(name), 48000, 2, &s);
}

/// The bridge: a tone played into a paced dmix-serve reaches a snapclient whole, at its
/// pitch. snapserver stopped in the middle of a second tone and started again, the same
/// dmix-tee feeds the new one, whose client gets a third tone whole, and nothing of the
/// second: neither what the old snapserver left unread in the FIFO nor what played while
/// no snapserver listened (nothing stale is queued for the next reader).
#[test]
fn snapcast_bridge_survives_a_snapserver_restart() {
    let env = Env::new();
    let fifo = env.path("snapfifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    tone_file(&env, "a.wav", 440.0, 1.0);
    tone_file(&env, "b.wav", 660.0, 1.0);
    tone_file(&env, "c.wav", 880.0, 1.5);
    let _server = env.serve(&["--sink", "null"]);
    let mut tee = env.spawn("dmix-tee", &["-t", "raw", "-f", "S16_LE", "snapfifo"]);
    wait_for_clients(&env, "default", "tee", 1);
    let snap = Snapserver::new(&env, &fifo);
    let mut server = snap.start(&env);
    tee.wait_for_stderr("a reader opened it");
    let out = env.path("heard.raw");
    let mut client = snapclient_to_file(&env, snap.port, &out);
    // Connected and in time with the server: what enters snapserver from now on is heard.
    client.wait_for_stderr("diff to server");
    let played = Instant::now();
    let r = env.run("dmix-play", &["-q", "a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let heard = wait_for_tones(&out, 0, 1);
    eprintln!("first tone heard {:?} after it began: {:?}", played.elapsed() - Duration::from_secs(1), heard[0]);
    assert_tone(&heard[0], 440.0, 1.0);

    // The second tone: snapserver stops once its client hears it, so that the FIFO holds
    // some of it, unread.
    let mut c = env.spawn("dmix-play", &["-q", "c.wav"]);
    let after_a = heard[0].start + heard[0].frames + 480;
    wait_for_heard(&out, after_a, "the second tone", |left| left.iter().any(|&v| v != 0).then_some(()));
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success(), "snapserver: {}", server.finished_stderr());
    tee.wait_for_stderr("the reader closed it");
    client.wait_for_stderr("(FilePlayer) Stop");
    // What the client heard before the restart ends here.
    let cut = raw_left(&out, 0).len();
    // The rest of the tone plays with nobody listening.
    assert!(c.wait().success(), "{}", c.finished_stderr());
    let _server = snap.start(&env);
    tee.wait_for_stderr("a reader opened it");
    // snapclient reconnects by itself (it retries every second).
    client.wait_for_stderr("diff to server");
    let r = env.run("dmix-play", &["-q", "b.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let heard = wait_for_tones(&out, cut, 1);
    assert_tone(&heard[0], 660.0, 1.0);
    assert!(tee.exited().is_none(), "dmix-tee ended: {}", tee.stderr());
    tee.signal(Signal::SIGTERM);
    assert!(tee.wait().success(), "{}", tee.finished_stderr());
}

/// The other direction: snapclient plays a Snapcast stream through the dmixrs plugin into a
/// paced dmix-serve (a room's server), beside its local programs. Snapcast keeps its
/// clients in sync from `snd_pcm_delay`: a delay that lied (or jumped) would make it drop or
/// stretch audio, heard as gaps or a wrong pitch. The stream comes from a second dmix-serve
/// through the bridge, as in a house with two of them.
#[test]
fn snapcast_snapclient_plays_through_the_plugin_without_gaps() {
    let env = plugin_env_with("pcm.dmixrs { type dmixrs }");
    let fifo = env.path("snapfifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    tone_file(&env, "a.wav", 440.0, 2.0);
    let _up = env.serve(&["--name", "up", "--sink", "null"]);
    let _room = env.serve(&["--sink", "null"]);
    let room = env.path("room.raw");
    let mut rec = env.spawn("dmix-tee", &["-t", "raw", "-f", "S16_LE", "room.raw"]);
    wait_for_clients(&env, "default", "tee", 1);
    let mut tee = env.spawn("dmix-tee", &["-D", "up", "-t", "raw", "-f", "S16_LE", "snapfifo"]);
    let snap = Snapserver::new(&env, &fifo);
    let _server = snap.start(&env);
    tee.wait_for_stderr("a reader opened it");
    let port = snap.port.to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--hostID",
        "room",
        "--player",
        // 400 ms rather than snapclient's 80: with the suite's other tests beside it, an
        // 80 ms buffer can underrun (seen once in a clean-clone CI run: snapclient then
        // re-syncs, which says nothing of the delay this test is about).
        "alsa:buffer_time=400,fragments=4",
        "-s",
        "dmixrs",
        "--logsink",
        "stderr",
        "--logfilter",
        "*:info,Stats:debug",
    ];
    let mut client = spawn_tool(&env, "snapclient", "snapclient", &args);
    client.wait_for_stderr("diff to server");
    // Its ALSA stream is open in the room's server.
    let stat = stat_conn(&env, "default");
    wait_for_snapshot(&stat, &env.socket("default"), "snapclient never opened dmixrs", |s| {
        s.clients.iter().any(|c| c.role == "play")
    });
    let r = env.run("dmix-play", &["-D", "up", "-q", "a.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    let heard = wait_for_tones(&room, 0, 1);
    eprintln!("heard in the room: {:?}", heard[0]);
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_tone(&heard[0], 440.0, 2.0);
    assert!(client.exited().is_none(), "snapclient ended: {}", client.stderr());
    // snapclient's own view (client/stream.cpp, 0.26): once a second "Chunk: age mini short
    // long size dac_ms corrected_frames", ages in 0.1 ms. In sync from the start: no hard
    // sync (logged at info), the short-term median within 1 ms, no frames corrected.
    let log = client.stderr();
    let underruns: u64 = dmix::stat::snapshot(&stat, &env.socket("default"))
        .map(|s| s.clients.iter().filter(|c| c.role == "play").map(|c| c.underruns).sum())
        .unwrap_or(0);
    assert!(
        !log.contains("full() &&") && !log.contains("abs(age > 500)"),
        "snapclient re-synced ({underruns} underruns of its stream in the room's server):\n{log}"
    );
    let stats: Vec<Vec<i64>> = log
        .lines()
        .filter_map(|l| l.split_once("Chunk: "))
        .map(|(_, v)| v.split_whitespace().filter_map(|x| x.trim_end_matches("ms").parse().ok()).collect())
        .collect();
    eprintln!("snapclient's sync stats: {stats:?}");
    assert!(stats.len() >= 2, "{log}");
    for s in &stats[1..] {
        assert!(s.len() == 7 && s[2].abs() <= 10 && s[6] == 0, "out of sync: {s:?}\n{log}");
    }
    rec.signal(Signal::SIGTERM);
    assert!(rec.wait().success(), "{}", rec.finished_stderr());
}

/// The bridge's user unit installs beside dmix-serve's (scripts/install-units, with a
/// stand-in for systemctl: there is no user manager here), runs the installed dmix-tee into
/// the FIFO as raw 16-bit audio, makes the FIFO when it is missing, and passes
/// `systemd-analyze verify`.
#[test]
fn snapcast_user_unit_installs_and_verifies() {
    let env = Env::new();
    let config = env.path("config");
    let bindir = bin("dmix-tee").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap_or_default());
    let out = install_units(&[], &path, &config, ":".as_ref());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let units = config.join("systemd/user");
    let unit = std::fs::read_to_string(units.join("dmix-snapcast.service")).unwrap();
    let exec = format!("ExecStart={}/dmix-tee --name snapcast -t raw -f S16_LE ", bindir.display());
    assert!(unit.contains(&exec), "{unit}");
    assert!(unit.contains("mkfifo") && unit.contains("DMIX_SNAPCAST_FIFO=/tmp/snapfifo"), "{unit}");
    let verify = systemd_verify(&units, &["dmix-serve.service", "dmix-serve.socket", "dmix-snapcast.service"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(verify.stderr.is_empty(), "{}", String::from_utf8_lossy(&verify.stderr));
}
