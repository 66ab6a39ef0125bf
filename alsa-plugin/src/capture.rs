//! One `dmixrs` capture PCM: what a dmix server played (its monitor ring) or its shared
//! input (the capture ring), read straight from the ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use dmix::client::Connection;
use dmix::format::SampleFormat;
use dmix::protocol::Role;
use dmix::ring::{ReadSource, ReadStream};
use nix::errno::Errno;

use crate::config::{Config, Direction};
use crate::position::{Capturehead, buffer_fits};
use crate::waiter::{Readiness, spawn_waiter};

/// A capture stream: reads what the server played (the monitor ring) or its shared input
/// (the capture ring), as dmix-tee does. Stream frame `f` is ring frame `base + f`. It
/// publishes how far it has read: a freewheel server (or capture) waits for it while it
/// runs, and from its admission until it first starts, so a recorder started before a render
/// gets all of it; stopped or paused it says "read everything" and holds nothing.
pub struct Recorder {
    conn: Arc<Connection>,
    ready: Arc<Readiness>,
    waiter: Option<JoinHandle<()>>,
    format: SampleFormat,
    channels: usize,
    ring_frames: u64,
    started_once: bool,
    /// Where the stream is (base, read, captured, running, buffer): the application's
    /// calls own it; the waiter reads its copy in `ready` (`sync`).
    pos: Capturehead,
    /// The read position at which poll was told, after the input ended, that what is left
    /// is readable (`u64::MAX`: not yet).
    end_told_at: AtomicU64,
    /// Frames copied out of the ring, at the mix scale, before they are converted.
    scratch: Vec<i32>,
}

impl Recorder {
    /// Connects to the server as a recorder of `source` (Monitor or Capture).
    pub fn open(cfg: &Config, source: Direction) -> Result<Recorder, String> {
        let conn = cfg.connect(if source == Direction::Capture { Role::Capture } else { Role::Tee })?;
        let p = *conn.params();
        let ring_frames = if source == Direction::Capture { p.capture_frames } else { p.monitor_frames };
        if ring_frames == 0 {
            return Err(format!("{}: no shared input to capture (start dmix-serve with --capture)", cfg.server()));
        }
        let mut r = Recorder {
            ready: Readiness::new(source, p.period_frames)?,
            conn: Arc::new(conn),
            waiter: None,
            format: SampleFormat::S16Le,
            channels: p.channels as usize,
            ring_frames: u64::from(ring_frames),
            started_once: false,
            pos: Capturehead::new(u64::from(p.period_frames) * 2),
            end_told_at: AtomicU64::new(u64::MAX),
            scratch: Vec::new(),
        };
        if !p.freewheel {
            r.reader().read_everything();
        }
        r.waiter = Some(spawn_waiter(&r.conn, &r.ready, None)?);
        Ok(r)
    }

    /// The server's rate, channels, the ring's and a period's frames.
    pub fn shape(&self) -> (u32, u32, u32, u32) {
        let p = self.conn.params();
        (p.rate_hz, self.channels as u32, self.ring_frames as u32, p.period_frames)
    }

    /// The fd for poll().
    pub fn poll_fd(&self) -> std::os::fd::RawFd {
        self.ready.poll_fd
    }

    /// The read operations on the ring this records.
    fn reader(&self) -> ReadStream<'_> {
        self.conn.reader(source_of(self.ready.direction))
    }

    fn write_ptr(&self) -> u64 {
        self.reader().write_ptr()
    }

    /// hw_params: the format and the buffer (at most the ring less a period).
    pub fn hw_params(&mut self, format: SampleFormat, buffer: u64) -> Result<(), Errno> {
        let period = u64::from(self.conn.params().period_frames);
        if !buffer_fits(buffer, period, self.ring_frames) {
            return Err(Errno::EINVAL);
        }
        self.format = format;
        self.pos.buffer = buffer;
        self.sync();
        self.ready.changed();
        Ok(())
    }

    /// sw_params: when poll() says there is something to read.
    pub fn sw_params(&mut self, avail_min: u64) {
        self.ready.set_avail_min(avail_min);
        self.update_event();
    }

    /// prepare: a new stream from frame 0.
    pub fn prepare(&mut self) -> Result<(), Errno> {
        self.alive()?;
        self.stop();
        self.pos.prepare();
        self.sync();
        self.ready.changed();
        self.update_event();
        Ok(())
    }

    /// start: from now, or in freewheel the first time from the frame we were admitted at.
    pub fn start(&mut self) -> Result<(), Errno> {
        self.alive()?;
        let first = !self.started_once && self.conn.ring().freewheel();
        let at = if first { self.conn.start_frame() } else { self.write_ptr() };
        self.started_once = true;
        let read_at = self.pos.start(at);
        self.sync();
        self.reader().publish_read(read_at);
        self.ready.changed();
        self.update_event();
        Ok(())
    }

    /// stop: reading ends; nobody waits for us.
    pub fn stop(&mut self) {
        self.pos.stop(self.write_ptr(), self.conn.ring().freewheel());
        self.sync();
        self.reader().read_everything();
        self.ready.changed();
        self.update_event();
    }

    /// pause: capture stops (what comes meanwhile is not recorded); resume goes on from there.
    pub fn pause(&mut self, enable: bool) -> Result<(), Errno> {
        if enable {
            self.stop();
            Ok(())
        } else {
            self.start()
        }
    }

    /// Stream frames captured so far.
    fn hw_stream(&self) -> u64 {
        self.pos.captured(self.write_ptr(), self.conn.ring().freewheel())
    }

    /// pointer: stream frames captured (wrapped by the caller); an overrun once more than the buffer
    /// waits unread; ENODEV once the server is gone and everything it left was read.
    pub fn pointer(&self) -> Result<u64, Errno> {
        let captured = self.hw_stream();
        if self.ready.gone.load(Ordering::Acquire) && captured <= self.pos.read {
            return Err(Errno::ENODEV);
        }
        if self.pos.overrun(captured) {
            return Err(Errno::EPIPE);
        }
        Ok(captured)
    }

    /// delay: frames captured and not yet read.
    pub fn delay(&self) -> u64 {
        self.pos.delay(self.write_ptr(), self.conn.ring().freewheel())
    }

    /// transfer: `frames` frames into `out`, in the negotiated format.
    pub fn transfer(&mut self, out: &mut [u8], frames: usize) -> Result<usize, Errno> {
        let read_at = self.pos.read_at();
        let ch = self.channels;
        let width = self.format.bytes();
        let n = frames.min(out.len() / (width * ch));
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(n * ch, 0);
        // A paced server waits for no reader: frames it may have overwritten while we
        // copied are an overrun, never garbage handed on.
        let lapped = self.reader().copy_out(read_at, &mut scratch);
        for (&s, bytes) in scratch.iter().zip(out.chunks_exact_mut(width)) {
            self.format.mix_to_le_bytes(s, bytes);
        }
        self.scratch = scratch;
        if lapped > 0 {
            return Err(Errno::EPIPE);
        }
        self.pos.was_read(frames as u64);
        self.sync();
        self.reader().publish_read(self.pos.read_at());
        self.ready.changed();
        self.update_event();
        Ok(frames)
    }

    /// poll_revents: POLLIN when avail_min frames wait, POLLERR once the server is gone.
    ///
    /// Once the shared input has ended (a file ran out), what is left is all there will be,
    /// however little: alsa-lib waits for avail_min only while the application asks for more
    /// than is there, so fewer than avail_min frames are readable now (an application that
    /// asked for exactly what is left reads it; seen: arecord waiting for its last 137 frames
    /// for ever, poll and the waiter thread spinning). Waited for again at the same read
    /// position, the application asked for more than will ever come: POLLERR, which alsa-lib
    /// turns into -EIO, rather than a wait that never ends.
    pub fn revents(&self) -> i16 {
        let waiting = self.delay();
        if self.pos.running && self.input_ended() && waiting < self.ready.avail_min.load(Ordering::Acquire) {
            let read = self.pos.read;
            if waiting > 0 && self.end_told_at.swap(read, Ordering::AcqRel) != read {
                return libc::POLLIN;
            }
            return libc::POLLIN | libc::POLLERR;
        }
        self.ready.revents(waiting, libc::POLLIN)
    }

    /// The shared input has ended and everything it held was captured (`cap_ptr` is final).
    fn input_ended(&self) -> bool {
        self.reader().ended()
    }

    fn update_event(&self) {
        self.ready.follow(self.delay());
    }

    /// Gives the waiter thread the positions it waits on.
    fn sync(&self) {
        let p = &self.pos;
        self.ready.set_positions(p.running, p.base, p.read, p.buffer);
    }

    fn alive(&self) -> Result<(), Errno> {
        self.ready.alive(&self.conn)
    }
}

/// The ring a capture PCM of `direction` reads.
pub(crate) fn source_of(direction: Direction) -> ReadSource {
    match direction {
        Direction::Capture => ReadSource::Capture,
        Direction::Monitor | Direction::Playback => ReadSource::Monitor,
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.ready.close(self.waiter.take());
    }
}

/// A dmix server, a plugin Stream playing and this Recorder in one process.
#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::playback::Stream;
    use crate::testing::{PERIOD, Server, bounded, signal, wait_until};

    /// Freewheel: a recorder of the monitor, started before anyone plays, reads exactly
    /// what a plugin Stream played: the server waits for its reads, so nothing is lost.
    #[test]
    fn inproc_recorder_reads_the_monitor_exactly() {
        bounded(|| {
            let server = Server::start(true);
            let mut r = Recorder::open(&server.config(), Direction::Monitor).expect("open recorder");
            r.hw_params(SampleFormat::S16Le, 4096).expect("hw_params");
            r.sw_params(u64::from(PERIOD));
            r.prepare().expect("prepare");
            r.start().expect("start");
            let sig = signal(20_000);
            let player = {
                let (cfg, sig) = (server.config(), sig.clone());
                std::thread::spawn(move || {
                    let mut s = Stream::open(&cfg).expect("open stream");
                    s.hw_params(SampleFormat::S16Le, 4096).expect("hw_params");
                    s.sw_params(u64::from(PERIOD));
                    s.prepare().expect("prepare");
                    crate::playback::tests::write(&mut s, &sig);
                    s.drain().expect("drain");
                })
            };
            let fd = {
                let event = r.ready.event.lock().expect("event lock");
                event.0.as_fd().try_clone_to_owned().expect("dup")
            };
            let mut got: Vec<i16> = Vec::new();
            let mut buf = vec![0u8; 1024 * 4];
            while got.iter().filter(|&&v| v != 0).count() < sig.len() {
                wait_until(
                    fd.as_fd(),
                    "frames to read",
                    || r.delay() > 0,
                    || {
                        r.revents();
                    },
                );
                let n = (r.delay() as usize).min(1024);
                assert_eq!(r.transfer(&mut buf[..n * 4], n), Ok(n));
                got.extend(buf[..n * 4].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
            }
            player.join().expect("player");
            drop(r);
            let lead = got.iter().position(|&v| v != 0).unwrap_or(0);
            assert_eq!(lead % 2, 0);
            assert_eq!(&got[lead..lead + sig.len()], &sig[..], "the recording is not what was played");
            let render = server.finish(false);
            assert!(render.len() >= sig.len(), "the render is shorter than what was played");
        });
    }
}
