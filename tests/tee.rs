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
    // Issue 17: -t applies to a file too.
    let r = env.run("dmix-tee", &["-d", "0.1", "-t", "raw", "-f", "S16_LE", "x.raw"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(std::fs::metadata(env.path("x.raw")).unwrap().len(), 4800 * 2 * 2);
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

/// A reader of a FIFO, as snapserver reads one: non-blocking, through poll with deadlines.
struct FifoReader(std::fs::File);

impl FifoReader {
    fn open(path: &std::path::Path) -> FifoReader {
        use std::os::unix::fs::OpenOptionsExt;
        FifoReader(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).unwrap())
    }

    /// Reads (bounded) exactly `n` bytes.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        use std::io::Read;
        use std::os::fd::AsFd;
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut got = vec![0u8; n];
        let mut have = 0;
        while have < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "the FIFO gave {have} of {n} bytes");
            let mut pfd = [nix::poll::PollFd::new(self.0.as_fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(
                &mut pfd,
                nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX),
            );
            match self.0.read(&mut got[have..]) {
                Ok(k) => have += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    }

    /// Reads (bounded) `frames` S16_LE stereo frames and returns their left channel.
    fn left(&mut self, frames: usize) -> Vec<i16> {
        self.bytes(frames * 4).chunks_exact(4).map(|f| i16::from_le_bytes([f[0], f[1]])).collect()
    }

    /// Reads until a non-zero sample came and returns the left channel from it on, `frames`
    /// long.
    fn until_sound(&mut self, frames: usize) -> Vec<i16> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            assert!(std::time::Instant::now() < deadline, "no sound came");
            let chunk = self.left(256);
            if let Some(i) = chunk.iter().position(|&v| v != 0) {
                got.extend_from_slice(&chunk[i..]);
                break;
            }
        }
        if got.len() < frames {
            let more = self.left(frames - got.len());
            got.extend(more);
        }
        got.truncate(frames);
        got
    }
}

fn fifo_env() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    let fifo = env.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    (env, fifo)
}

/// Issue 17: `dmix-tee -t raw FIFO` is a live bridge. Its reader gets the mix as played,
/// bit for bit; the reader gone (mid-tone, leaving part of it unread in the pipe), the same
/// tee waits for the next, which gets the live mix and nothing stale: neither what the
/// first left in the pipe nor what played meanwhile.
#[test]
fn tee_fifo_bridge_outlives_its_reader_and_queues_nothing_stale() {
    let (env, fifo) = fifo_env();
    let a = signal(24000, 2, 440.0, 0.5, 171);
    let c = signal(96000, 2, 880.0, 0.5, 172);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("c.wav"), 48000, 2, &c);
    let mut s = env.serve(&["--sink", "null"]);
    let mut tee = env.spawn("dmix-tee", &["-t", "raw", "-f", "S16_LE", "fifo"]);
    wait_for_clients(&env, "default", "tee", 1);
    let mut first = FifoReader::open(&fifo);
    tee.wait_for_stderr("a reader opened it");
    let mut pc = env.spawn("dmix-play", &["-q", "c.wav"]);
    // Gone in the middle of the tone, with some of it in the pipe.
    first.until_sound(4800);
    drop(first);
    tee.wait_for_stderr("the reader closed it");
    // The rest of the tone plays with nobody listening.
    assert!(pc.wait().success(), "{}", pc.finished_stderr());
    let mut next = FifoReader::open(&fifo);
    tee.wait_for_stderr("a reader opened it");
    let stale = next.left(14400);
    assert!(stale.iter().all(|&v| v == 0), "the next reader got stale sound: {:?}", stale.iter().position(|&v| v != 0));
    // Read as it plays: a reader that stops reading for longer than the bridge's margin
    // loses what plays meanwhile (the next test).
    let mut pa = env.spawn("dmix-play", &["-q", "a.wav"]);
    let got = next.until_sound(24000);
    assert!(pa.wait().success(), "{}", pa.finished_stderr());
    let want: Vec<i16> = a.iter().step_by(2).copied().collect();
    // `until_sound` starts at the first non-zero sample.
    let skip = want.iter().position(|&v| v != 0).unwrap();
    assert!(got[..24000 - skip] == want[skip..], "the tone is not as played");
    assert!(tee.exited().is_none(), "dmix-tee ended: {}", tee.stderr());
    // The server killed: the bridge ends, saying so.
    s.signal(nix::sys::signal::Signal::SIGKILL);
    s.wait();
    assert_eq!(tee.wait().code(), Some(10), "{}", tee.finished_stderr());
    assert!(tee.finished_stderr().contains("the server went away"));
}

/// A bridge nobody reads ends promptly on SIGTERM (exit 0) and when the server goes away
/// (10): it never sits in a blocking open. `-t wav` gives each reader a stream of its own,
/// header first.
#[test]
fn tee_fifo_without_a_reader_stops_and_wav_gives_each_reader_a_header() {
    let (env, fifo) = fifo_env();
    let mut s = env.serve(&["--sink", "null"]);
    let mut tee = env.spawn("dmix-tee", &["fifo"]);
    wait_for_clients(&env, "default", "tee", 1);
    for _ in 0..2 {
        let mut r = FifoReader::open(&fifo);
        tee.wait_for_stderr("a reader opened it");
        let h = r.bytes(44);
        assert_eq!(&h[..4], b"RIFF");
        assert_eq!(&h[36..44], b"data\xff\xff\xff\xff");
        drop(r);
        tee.wait_for_stderr("the reader closed it");
    }
    tee.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(tee.wait_timeout(std::time::Duration::from_secs(5)).success(), "{}", tee.finished_stderr());
    let mut tee = env.spawn("dmix-tee", &["-t", "raw", "fifo"]);
    wait_for_clients(&env, "default", "tee", 1);
    s.signal(nix::sys::signal::Signal::SIGKILL);
    s.wait();
    assert_eq!(tee.wait_timeout(std::time::Duration::from_secs(5)).code(), Some(10), "{}", tee.finished_stderr());
}

/// A reader that stalls (snapserver stopped, or too slow) fills the pipe: the bridge stops
/// writing once it is 120 ms behind, skips what plays meanwhile, and when the reader reads
/// again it gets at most that much of old audio, then the live mix; never a backlog.
#[test]
fn tee_fifo_reader_that_stalls_hears_the_live_mix_again() {
    let (env, fifo) = fifo_env();
    let a = signal(24000, 2, 440.0, 0.5, 173);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    let _s = env.serve(&["--sink", "null"]);
    let mut tee = env.spawn("dmix-tee", &["-t", "raw", "-f", "S16_LE", "fifo"]);
    let snap = wait_for_clients(&env, "default", "tee", 1);
    let mut r = FifoReader::open(&fifo);
    tee.wait_for_stderr("a reader opened it");
    r.left(4800);
    // The reader stalls; a tone plays from 200 ms on, then ends.
    wait_hw_ptr(&env, "default", snap.server.hw_ptr + 4800 + 9600);
    let p = env.run("dmix-play", &["-q", "a.wav"]);
    assert!(p.status.success(), "{}", p.stderr);
    // What it reads now: what the pipe held (at most 120 ms and a period, from before the
    // tone), then the live mix (after the tone): silence throughout.
    let got = r.left(14400);
    assert!(
        got.iter().all(|&v| v == 0),
        "a stalled reader got old sound at frame {:?}",
        got.iter().position(|&v| v != 0)
    );
    let line = tee.wait_for_stderr("frames skipped");
    assert!(line.contains("the reader fell behind"), "{line}");
}

/// A reader whose clock runs faster than the server's (a snapserver on another machine's
/// clock; here a reader taking 5 ms of audio every 4.9 ms, 2 % fast) drains the margin the
/// bridge keeps; once it held the margin for a second and then runs dry, the bridge fills it
/// up with silence, one short gap, rather than let every later read come short. The reader
/// paces itself with sleeps: they are its clock, the thing under test, not a synchronisation.
#[test]
fn tee_fifo_reader_faster_than_the_server_is_padded_once() {
    let (env, fifo) = fifo_env();
    let _s = env.serve(&["--sink", "null"]);
    let mut tee = env.spawn("dmix-tee", &["-t", "raw", "-f", "S16_LE", "fifo"]);
    wait_for_clients(&env, "default", "tee", 1);
    let mut r = FifoReader::open(&fifo);
    tee.wait_for_stderr("a reader opened it");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut reads = 0u32;
            // At most 10 s: the margin (60 ms) is drained at 0.1 ms every 4.9, about 3 s.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && reads < 2000 {
                r.bytes(240 * 4);
                reads += 1;
                // The reader's pace is the load under test (slower than the stream, so the
                // margin drains): this sleep is its clock, not a wait for anything.
                let due = start + std::time::Duration::from_micros(4900) * reads;
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            }
        })
    };
    let line = tee.wait_for_stderr("frames of silence added");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    assert!(line.contains("the reader ran ahead of the server"), "{line}");
}
