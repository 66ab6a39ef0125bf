//! Test harness (compiled for tests only): a dmix server running in this very process, on a
//! thread, with its socket in a directory of its own, so a plugin `Stream` or `Recorder`
//! can be driven call by call as alsa-lib would, and the server's render read back. Every
//! wait has a deadline; the server thread is stopped and joined in `Drop`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dmix::format::SampleFormat;
use dmix::ring::RingParams;
use dmix::server::{OnSinkLoss, ServerConfig};
use dmix::sink::SinkSpec;

use crate::config::Config;

/// How long any one step of a test may take before it counts as a hang.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// Frames per server period in these tests.
pub(crate) const PERIOD: u32 = 256;

/// A server on a thread of this process, rendering into `out.wav` in its directory.
pub(crate) struct Server {
    pub(crate) dir: PathBuf,
    stop: Arc<AtomicBool>,
    ended: Receiver<Result<dmix::server::LoopEnd, String>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A server with a WAV sink: in freewheel, it waits for its one player and exits when
    /// the player has gone; paced, it runs on its own clock until stopped.
    pub(crate) fn start(freewheel: bool) -> Server {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dmixrs-inproc-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // The server refuses a socket directory others may enter.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&dir)
            .expect("test directory");
        let cfg = ServerConfig {
            socket: dir.join("sock"),
            sinks: vec![SinkSpec::Wav(dir.join("out.wav"))],
            on_sink_loss: OnSinkLoss::Exit,
            wait_for_sink: false,
            params: RingParams {
                rate_hz: 48000,
                channels: 2,
                format: SampleFormat::S16Le,
                period_frames: PERIOD,
                ring_frames: 64 * PERIOD,
                monitor_frames: 128 * PERIOD,
                capture_frames: 0,
                freewheel,
            },
            device_buffer_frames: 4 * PERIOD,
            wait_clients: u32::from(freewheel),
            exit_when_idle: freewheel,
            capture: None,
            wait_readers: 0,
            group: None,
            rt_priority: None,
            // No volumes kept: the test must not write into the user's state directory.
            volumes: None,
            restore: false,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (end_tx, ended) = std::sync::mpsc::sync_channel(1);
        let server_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("dmix-server".into())
            .spawn(move || {
                let end = dmix::server::run(&cfg, server_stop, |_| {
                    let _ = ready_tx.send(());
                });
                let _ = end_tx.send(end.map_err(|e| e.to_string()));
            })
            .expect("server thread");
        let server = Server { dir, stop, ended, thread: Some(thread) };
        if ready_rx.recv_timeout(PATIENCE).is_err() {
            let why = server.ended.try_recv().map(|e| format!("{e:?}")).unwrap_or_else(|_| "no word".into());
            panic!("the server did not get ready: {why}");
        }
        server
    }

    /// The plugin's configuration for this server (its socket path, no environment).
    pub(crate) fn config(&self) -> Config {
        Config {
            server: Some(self.dir.join("sock").to_string_lossy().into_owned()),
            name: Some("inproc".into()),
            source: None,
        }
    }

    /// Stops the server (or, in freewheel, waits for it to end on its own: its player has
    /// gone) and returns the render's samples, interleaved.
    pub(crate) fn finish(mut self, stop: bool) -> Vec<i32> {
        if stop {
            self.stop.store(true, Ordering::Relaxed);
        }
        match self.ended.recv_timeout(PATIENCE) {
            Ok(end) => {
                end.expect("the server failed");
            }
            Err(RecvTimeoutError::Timeout) => panic!("the server did not end within {PATIENCE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the server thread died"),
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
        read_wav(&self.dir.join("out.wav"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // Bounded: a server that ignores its stop flag fails the test rather than hangs.
            if self.ended.recv_timeout(PATIENCE).is_ok() {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_wav(path: &Path) -> Vec<i32> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    r.samples::<i32>().collect::<Result<_, _>>().expect("WAV samples")
}

/// A stereo test signal that is never zero in any sample, so silence and audio cannot be
/// confused, and no two neighbouring frames are equal.
pub(crate) fn signal(frames: usize) -> Vec<i16> {
    (0..frames * 2).map(|i| ((i / 2) % 251) as i16 * 64 + 100 + (i % 2) as i16 * 7).collect()
}

/// Little-endian bytes of `samples`, as an application hands them to transfer.
pub(crate) fn le_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Waits until `ready` holds, polling `fd` (the plugin's poll fd) between looks as an
/// application would, and calling `after_poll` (the plugin's poll_revents) after each wake.
pub(crate) fn wait_until(
    fd: std::os::fd::BorrowedFd<'_>,
    what: &str,
    mut ready: impl FnMut() -> bool,
    mut after_poll: impl FnMut(),
) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u16));
        after_poll();
    }
}

/// Runs `f` (a whole test) on a thread of its own and fails if it has not finished in time:
/// a plugin call that waits for ever (drain, say) fails the test instead of hanging it.
pub(crate) fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE * 3) {
        Ok(v) => {
            let _ = t.join();
            v
        }
        Err(RecvTimeoutError::Timeout) => panic!("the test did not finish within {:?}", PATIENCE * 3),
        Err(RecvTimeoutError::Disconnected) => std::panic::resume_unwind(t.join().expect_err("no result, no panic")),
    }
}

/// The frames of `render` (stereo) that are not silence.
pub(crate) fn heard(render: &[i32]) -> Vec<[i32; 2]> {
    render.chunks_exact(2).map(|f| [f[0], f[1]]).filter(|f| f != &[0, 0]).collect()
}

/// `heard` is `want`, every frame once, in order, except that a frame the server took while
/// the plugin retracted it may have been heard in part (a channel silent).
pub(crate) fn assert_heard_once(heard: &[[i32; 2]], want: &[i16]) {
    let want: Vec<[i32; 2]> = want.chunks_exact(2).map(|f| [i32::from(f[0]), i32::from(f[1])]).collect();
    assert_eq!(heard.len(), want.len(), "frames heard");
    let differ: Vec<usize> = (0..want.len()).filter(|&i| heard[i] != want[i]).collect();
    assert!(differ.len() <= 1, "{} frames differ from what was written, first at {:?}", differ.len(), differ.first());
    for &i in &differ {
        assert!(heard[i].iter().zip(want[i]).all(|(&h, w)| h == w || h == 0), "frame {i} is not the frame written");
    }
}
