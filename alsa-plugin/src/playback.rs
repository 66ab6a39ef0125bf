//! One `dmixrs` PCM: an ALSA playback stream written straight into a dmix server's ring.
//!
//! ALSA counts a stream in its own frames from 0 (`prepare`); the ring counts absolute
//! frames. While the stream runs, stream frame `f` is ring frame `base + f`. Before `start`
//! (and while paused) what the application writes waits in `pending`, since anything in the
//! ring plays; `start` puts it at `base + played`, at least a server period ahead of hw_ptr
//! on a paced server. `stop` (snd_pcm_drop) and `pause` take back what was queued but not
//! played (the player's retraction), so both are silent within a period whatever the buffer.
//!
//! Stopped, drained or paused, the slot says "draining, ended here" (as a dmix-play that
//! has finished), so an idle PCM never holds a freewheel render back. A PCM counts as a
//! player only from the first frame the application writes (`Connection::begin_playing`):
//! a program that opens the device to probe it (PortAudio enumerating devices) and closes
//! it is no player at all. From then on, prepared, it holds a freewheel render until it
//! starts (as a dmix-play waiting for its input does).
//!
//! Poll readiness is the waiter's (`Readiness`). So is following a new volume from
//! dmix-stat while the application sits in poll(): the stream's `History` (what was added,
//! for retraction and for re-adding at a new volume) is shared with the waiter under a
//! mutex (`SharedHistory`), which either thread holds for one add, follow or retraction and
//! never across a sleep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dmix::client::Connection;
use dmix::format::SampleFormat;
use dmix::protocol::Role;
use dmix::ring::History;
use dmix::sys::Wake;
use nix::errno::Errno;

use crate::config::{Config, Direction};
use crate::position::{Playhead, buffer_fits};
use crate::waiter::{ALIVE_CHECK, Readiness, SharedHistory, lock, spawn_waiter};

/// A playback stream into a dmix server.
pub struct Stream {
    conn: Arc<Connection>,
    ready: Arc<Readiness>,
    waiter: Option<JoinHandle<()>>,
    format: SampleFormat,
    /// Our channels go to these server channels (a dmix-share sub-device).
    map: Option<Vec<usize>>,
    app_channels: usize,
    channels: usize,
    ring_frames: u64,
    /// Frames to start ahead of hw_ptr: a period on a paced server, none in freewheel.
    lead: u64,
    /// What we added, laid out as the sum ring (for retraction), and the source of it (to
    /// re-add at a new volume): shared with the waiter, which follows a new volume.
    history: SharedHistory,
    /// Frames written but not in the ring yet (before start, while paused), server width.
    pending: Vec<i32>,
    /// Where the stream is (base, written, played, running, buffer): the application's
    /// calls own it; the waiter reads its copy in `ready` (`sync`).
    pos: Playhead,
    /// The current xrun was counted in our slot's underruns (dmix-stat shows them).
    xrun_counted: AtomicBool,
    scratch: Vec<i32>,
    /// The application has written a frame, and the server was told.
    playing: bool,
    /// The first ring frame we may write: the admission's start, then where the server
    /// counts us as a player from.
    first_frame: u64,
}

impl Stream {
    /// Connects to the server as a player. Errors are one line for SNDERR.
    pub fn open(cfg: &Config) -> Result<Stream, String> {
        let conn = cfg.connect(Role::Play)?;
        let p = *conn.params();
        let ready = Readiness::new(Direction::Playback, p.period_frames)?;
        let conn = Arc::new(conn);
        let s = Stream {
            map: conn.channel_map(),
            app_channels: conn.width() as usize,
            channels: p.channels as usize,
            ring_frames: u64::from(p.ring_frames),
            lead: if p.freewheel { 0 } else { u64::from(p.period_frames) },
            history: Arc::new(Mutex::new(History::new(&p))),
            pending: Vec::new(),
            pos: Playhead::new(u64::from(p.period_frames) * 2),
            xrun_counted: AtomicBool::new(false),
            scratch: Vec::new(),
            playing: false,
            first_frame: conn.start_frame(),
            format: SampleFormat::S16Le,
            waiter: None,
            ready,
            conn,
        };
        if !p.freewheel {
            s.conn.writer().ended_at(s.conn.start_frame());
        }
        let mut s = s;
        s.waiter = Some(spawn_waiter(&s.conn, &s.ready, Some(&s.history))?);
        s.update_event();
        Ok(s)
    }

    /// The server's rate, the channels an application plays, the ring and period sizes.
    pub fn shape(&self) -> (u32, u32, u32, u32) {
        let p = self.conn.params();
        (p.rate_hz, self.app_channels as u32, p.ring_frames, p.period_frames)
    }

    /// The fd for poll().
    pub fn poll_fd(&self) -> std::os::fd::RawFd {
        self.ready.poll_fd
    }

    /// hw_params: the format and the buffer (the latency: how far ahead we write).
    pub fn hw_params(&mut self, format: SampleFormat, buffer: u64) -> Result<(), Errno> {
        let period = u64::from(self.conn.params().period_frames);
        if !buffer_fits(buffer, period, self.ring_frames) {
            return Err(Errno::EINVAL);
        }
        self.format = format;
        self.pos.buffer = buffer;
        self.sync();
        self.conn.writer().set_latency(buffer);
        self.ready.changed();
        self.update_event();
        Ok(())
    }

    /// sw_params: when poll() says the application may write.
    pub fn sw_params(&mut self, avail_min: u64) {
        self.ready.set_avail_min(avail_min);
        self.update_event();
    }

    /// prepare: a new stream from frame 0.
    pub fn prepare(&mut self) -> Result<(), Errno> {
        self.alive()?;
        self.stop();
        self.hold();
        self.pos.prepare();
        self.sync();
        self.pending.clear();
        self.ready.changed();
        self.update_event();
        Ok(())
    }

    /// start: what was written so far goes into the ring, `lead` ahead of hw_ptr.
    pub fn start(&mut self) -> Result<(), Errno> {
        self.alive()?;
        let at = self.pos.start(self.conn.writer().hw_ptr(), self.lead, self.first_frame);
        let pending = std::mem::take(&mut self.pending);
        self.add(at, &pending);
        self.pending = pending;
        self.pending.clear();
        self.xrun_counted.store(false, Ordering::Relaxed);
        self.sync();
        // Playing again: the server waits for us in freewheel from here.
        self.conn.writer().resume_at(self.pos.end());
        self.ready.changed();
        self.update_event();
        Ok(())
    }

    /// stop (drop): what was queued and not played is taken back out of the ring.
    pub fn stop(&mut self) {
        self.take_back(false);
        self.pending.clear();
        self.pos.dropped();
        self.ready.changed();
        self.update_event();
    }

    /// pause: like stop, but what was taken back is kept and plays on resume.
    pub fn pause(&mut self, enable: bool) -> Result<(), Errno> {
        if enable {
            self.take_back(true);
            self.ready.changed();
            self.update_event();
            Ok(())
        } else {
            self.start()
        }
    }

    /// Stops running: retracts the queue (keeping it in `pending` with `keep`), notes how
    /// far the stream played, and marks the slot idle there.
    fn take_back(&mut self, keep: bool) {
        let w = self.conn.writer();
        let Some(taken) = self.pos.stop_running(w.hw_ptr()) else { return };
        self.sync();
        let ch = self.channels;
        {
            // Held across the copy and the retraction: a follow of a new volume between them
            // would change frames we are about to take back.
            let mut history = lock(&self.history);
            if keep {
                self.pending.clear();
                // As given, before the volume: re-added on resume at the volume of then.
                history.copy_into(taken.start, taken.end, &mut self.pending);
            }
            w.retract(taken.start, taken.end, &mut history);
        }
        // Frames the server took while we retracted played whole or partly.
        let now = self.pos.retracted(&taken, w.hw_ptr());
        if keep && now > taken.start {
            self.pending.drain(..((now - taken.start) as usize * ch));
        }
        // The server does not wait for an idle PCM.
        w.ended_at(now);
    }

    /// In freewheel, a prepared stream holds the render where it is until it starts, as a
    /// dmix-play waiting for input does: several programs started together then start
    /// together, on the same frame. A paced server never waits for anyone.
    fn hold(&self) {
        let w = self.conn.writer();
        if w.freewheel() {
            w.resume_at(w.hw_ptr().max(self.first_frame));
        }
    }

    /// transfer: `frames` interleaved frames of the negotiated format.
    pub fn transfer(&mut self, bytes: &[u8], frames: usize) -> Result<usize, Errno> {
        self.alive()?;
        if !self.playing && frames > 0 {
            // The first frame: only now are we a player. In freewheel the server counts us
            // from the period it is at, and waits for us there while we are prepared.
            self.first_frame = self.conn.begin_playing().map_err(|_| Errno::ENODEV)?;
            self.playing = true;
            if !self.pos.running {
                self.hold();
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let width = self.format.bytes();
        match &self.map {
            None => scratch.extend(bytes.chunks_exact(width).map(|b| self.format.le_bytes_to_mix(b))),
            Some(map) => {
                for frame in bytes.chunks_exact(width * self.app_channels) {
                    let at = scratch.len();
                    scratch.resize(at + self.channels, 0);
                    for (s, &c) in frame.chunks_exact(width).zip(map) {
                        scratch[at + c] = self.format.le_bytes_to_mix(s);
                    }
                }
            }
        }
        match self.pos.write_at() {
            Some(at) => self.add(at, &scratch),
            None => self.pending.extend_from_slice(&scratch),
        }
        self.scratch = scratch;
        self.pos.wrote(frames as u64);
        self.sync();
        if self.pos.running {
            self.publish();
        }
        self.ready.changed();
        self.update_event();
        Ok(frames)
    }

    fn add(&mut self, at: u64, samples: &[i32]) {
        if !samples.is_empty() {
            self.conn.writer().add(at, samples, &mut lock(&self.history));
        }
    }

    fn publish(&self) {
        self.conn.writer().publish(self.pos.end());
    }

    /// pointer: stream frames played (the caller wraps it at ALSA's boundary: modulo the
    /// buffer, a whole buffer played between two calls would look like none, as it does in
    /// freewheel), or an xrun once the server has played past everything written.
    pub fn pointer(&self) -> Result<u64, Errno> {
        if self.ready.gone.load(Ordering::Acquire) {
            return Err(Errno::ENODEV);
        }
        let w = self.conn.writer();
        if self.pos.xrun(w.hw_ptr()) {
            if !self.xrun_counted.swap(true, Ordering::Relaxed) {
                w.count_underrun();
            }
            return Err(Errno::EPIPE);
        }
        Ok(self.pos.played(w.hw_ptr()))
    }

    /// delay: how long until a frame written now is heard, in frames: what is queued, then
    /// the server's device buffer (an ALSA sink's; 0 for wav and null sinks).
    pub fn delay(&self) -> u64 {
        let w = self.conn.writer();
        self.pos.delay(w.hw_ptr(), w.device_buffer_frames())
    }

    fn avail(&self) -> u64 {
        self.pos.avail(self.conn.writer().hw_ptr())
    }

    /// drain: starts if need be, then waits (bounded by the server's life) until the last
    /// frame written has been played.
    pub fn drain(&mut self) -> Result<(), Errno> {
        if !self.pos.running {
            if self.pos.drained_already() {
                return Ok(());
            }
            self.start()?;
        }
        let ring = self.conn.ring();
        let end = self.pos.end();
        self.conn.writer().ended_at(end);
        // Until the last frame was heard: past the server's device buffer too.
        let heard = ring.heard_at(end);
        while ring.hw_ptr() < heard {
            // The tail still queued follows a new volume (the waiter does too; whichever
            // looks first). The server's change wakes this wait.
            self.conn.writer().follow_volume(&mut lock(&self.history));
            if ring.wait_hw_ptr(heard, ALIVE_CHECK) == Wake::TimedOut {
                self.alive()?;
            }
        }
        self.pos.drained();
        self.sync();
        self.ready.changed();
        self.update_event();
        Ok(())
    }

    /// poll_revents: POLLOUT when the application may write, POLLERR when the server is gone.
    pub fn revents(&self) -> i16 {
        self.ready.revents(self.avail(), libc::POLLOUT)
    }

    fn update_event(&self) {
        self.ready.follow(self.avail());
    }

    /// Gives the waiter thread the positions it waits on.
    fn sync(&self) {
        let p = &self.pos;
        self.ready.set_positions(p.running, p.base, p.written, p.buffer);
    }

    fn alive(&self) -> Result<(), Errno> {
        self.ready.alive(&self.conn)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.take_back(false);
        self.ready.close(self.waiter.take());
    }
}

/// A dmix server and this Stream in one process, driven call by call as alsa-lib drives it.
#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::Instant;

    use super::*;
    use crate::testing::{PATIENCE, PERIOD, Server, assert_heard_once, bounded, heard, le_bytes, signal, wait_until};

    /// A dup of the eventfd: what an application polls.
    fn poll_fd(s: &Stream) -> OwnedFd {
        let event = s.ready.event.lock().expect("event lock");
        event.0.as_fd().try_clone_to_owned().expect("dup")
    }

    fn open(server: &Server, buffer: u64, avail_min: u64) -> Stream {
        let mut s = Stream::open(&server.config()).expect("open");
        s.hw_params(SampleFormat::S16Le, buffer).expect("hw_params");
        s.sw_params(avail_min);
        s.prepare().expect("prepare");
        s
    }

    /// Writes `samples` as alsa-lib does: what avail allows, starting the stream once the
    /// buffer is full, polling for room.
    pub(crate) fn write(s: &mut Stream, samples: &[i16]) {
        let fd = poll_fd(s);
        let total = samples.len() / 2;
        let mut off = 0;
        while off < total {
            if s.avail() == 0 && !s.pos.running {
                s.start().expect("start");
            }
            wait_until(
                fd.as_fd(),
                "room to write",
                || s.avail() > 0,
                || {
                    s.revents();
                },
            );
            let n = (s.avail() as usize).min(total - off).min(1024);
            assert_eq!(s.transfer(&le_bytes(&samples[off * 2..(off + n) * 2]), n), Ok(n));
            off += n;
        }
    }

    /// Waits until the stream has played `frames` (pointer, as the application sees it).
    fn wait_played(s: &Stream, frames: u64) {
        let fd = poll_fd(s);
        wait_until(
            fd.as_fd(),
            "frames played",
            || s.pointer().expect("pointer") >= frames,
            || {
                s.revents();
            },
        );
    }

    /// Waits until the server has played `frames` more, whatever the stream does.
    fn wait_server(s: &Stream, frames: u64) {
        let ring = s.conn.ring();
        let target = ring.hw_ptr() + frames;
        let deadline = Instant::now() + PATIENCE;
        while ring.hw_ptr() < target {
            assert!(Instant::now() < deadline, "the server stalled");
            ring.wait_hw_ptr(target, ALIVE_CHECK);
        }
    }

    /// Freewheel: prepare, write, start, drain: the render is the frames written, exactly,
    /// then silence to the end of the period.
    #[test]
    fn inproc_playback_render_is_the_frames_exactly() {
        bounded(|| {
            let server = Server::start(true);
            let mut s = open(&server, 4096, u64::from(PERIOD));
            let sig = signal(20_000);
            write(&mut s, &sig);
            assert_eq!(s.drain(), Ok(()));
            assert_eq!(s.pointer(), Ok(20_000));
            drop(s);
            let render = server.finish(false);
            let want: Vec<i32> = sig.iter().map(|&v| i32::from(v)).collect();
            assert_eq!(render[..want.len()], want[..], "the render does not start with the frames written");
            let rest = &render[want.len()..];
            assert!(rest.len() < 2 * PERIOD as usize && rest.iter().all(|&v| v == 0), "{} samples after", rest.len());
        });
    }

    /// Paced: a drop (snd_pcm_drop) takes back the queue: the render has what had played
    /// when it stopped (and what the server took meanwhile, at most a period) and silence
    /// after it, never the rest of the buffer.
    #[test]
    fn inproc_drop_retracts_the_queue_silently() {
        bounded(|| {
            let server = Server::start(false);
            let mut s = open(&server, 8192, 2048);
            let sig = signal(8192);
            write(&mut s, &sig);
            s.start().expect("start");
            wait_played(&s, 2048);
            let base = s.pos.base;
            s.stop();
            let stopped_at = s.conn.ring().counters(s.conn.slot()).end_ptr.load(Ordering::Relaxed) - base;
            assert!(stopped_at < 8192 - u64::from(PERIOD), "stopped at {stopped_at}: nothing left to retract");
            wait_server(&s, 8192);
            drop(s);
            let got = heard(&server.finish(true));
            let n = got.len() as u64;
            assert!(
                (stopped_at..=stopped_at + u64::from(PERIOD)).contains(&n),
                "{n} frames heard, the stream stopped after {stopped_at}"
            );
            assert_heard_once(&got, &sig[..got.len() * 2]);
        });
    }

    /// Paced, a full 12288-frame buffer (256 ms) and an application that calls nothing
    /// (it sits in poll()): a mute from dmix-stat is heard within two server periods and the
    /// 10 ms ramp all the same, since the waiter follows it. With avail_min the whole
    /// buffer the waiter sleeps until the buffer has played; with avail_min a period it
    /// has signalled and waits on the application.
    #[test]
    fn inproc_mute_is_heard_within_two_periods_while_the_application_sleeps() {
        for avail_min in [12_288, u64::from(PERIOD)] {
            bounded(move || {
                const BUFFER: u64 = 12_288;
                /// 10 ms at 48 kHz: the ramp.
                const RAMP: u64 = 480;
                let server = Server::start(false);
                let mut s = open(&server, BUFFER, avail_min);
                let sig = signal(BUFFER as usize);
                write(&mut s, &sig);
                s.start().expect("start");
                wait_server(&s, 4 * u64::from(PERIOD));
                let stat =
                    Connection::open(&server.config().server(), Role::Stat, "test", 0).expect("inspector connection");
                let id = s.conn.client_id().to_string();
                let req = dmix::stat::parse_mute(&id).expect("mute request");
                dmix::stat::mixer_request(&stat, &req, PATIENCE).expect("mute");
                let hw = s.conn.ring().hw_ptr();
                let base = s.pos.base;
                assert!(hw + 2 * u64::from(PERIOD) + RAMP < base + BUFFER, "the queue ran out before the mute");
                wait_server(&s, BUFFER);
                drop(s);
                let render = server.finish(true);
                let frame = |f: u64| &render[f as usize * 2..f as usize * 2 + 2];
                let played =
                    |f: u64| [i32::from(sig[(f - base) as usize * 2]), i32::from(sig[(f - base) as usize * 2 + 1])];
                for f in base..hw {
                    assert_eq!(frame(f), played(f), "frame {f}, before the mute, is not the frame written");
                }
                let silent_from = (base..base + BUFFER).rev().find(|&f| frame(f) != [0, 0]).map_or(base, |f| f + 1);
                eprintln!("avail_min {avail_min}: silent {} frames after the mute's hw_ptr", silent_from - hw);
                assert!(
                    silent_from <= hw + 2 * u64::from(PERIOD) + RAMP,
                    "avail_min {avail_min}: sound until {} frames after the mute's hw_ptr",
                    silent_from - hw
                );
            });
        }
    }

    /// Paced: pause retracts what was queued (silence while paused) and keeps it; resume
    /// plays it: every frame written is heard once, in order, with a gap where it paused.
    #[test]
    fn inproc_pause_resume_plays_every_frame_once() {
        bounded(|| {
            let server = Server::start(false);
            let mut s = open(&server, 8192, 2048);
            let sig = signal(16_000);
            write(&mut s, &sig[..2 * 8192]);
            s.start().expect("start");
            wait_played(&s, 2048);
            assert_eq!(s.pause(true), Ok(()));
            let paused_at = s.pointer().expect("pointer");
            wait_server(&s, 4096);
            assert_eq!(s.pointer(), Ok(paused_at), "paused, nothing plays");
            assert_eq!(s.pause(false), Ok(()));
            write(&mut s, &sig[2 * 8192..]);
            assert_eq!(s.drain(), Ok(()));
            drop(s);
            let render = server.finish(true);
            assert_heard_once(&heard(&render), &sig);
            // Two runs of sound: before the pause and after it.
            let frames: Vec<bool> = render.chunks_exact(2).map(|f| f != [0, 0]).collect();
            let runs = frames.windows(2).filter(|w| !w[0] && w[1]).count() + usize::from(frames[0]);
            assert_eq!(runs, 2, "one gap, where it paused");
        });
    }

    /// Paced: a volume change while paused changes nothing in the ring (what was taken back
    /// stays taken back: the pause is silent), and what plays on resume is at the new
    /// volume: halved (-6.0206 dB) within one step of rounding, once the ramp is past.
    #[test]
    fn inproc_volume_change_while_paused_is_silent_and_resume_plays_at_it() {
        bounded(|| {
            let server = Server::start(false);
            let mut s = open(&server, 8192, 2048);
            let sig = signal(8192);
            write(&mut s, &sig);
            s.start().expect("start");
            wait_played(&s, 2048);
            assert_eq!(s.pause(true), Ok(()));
            let paused_at = s.pointer().expect("pointer");
            let silent_from = s.pos.base + paused_at;
            let stat =
                Connection::open(&server.config().server(), Role::Stat, "test", 0).expect("inspector connection");
            let req = dmix::stat::parse_volume("inproc=-6.0206").expect("volume request");
            dmix::stat::mixer_request(&stat, &req, PATIENCE).expect("volume");
            wait_server(&s, 4096);
            assert_eq!(s.pause(false), Ok(()));
            let resumed_at = s.pos.base + paused_at;
            assert_eq!(s.drain(), Ok(()));
            drop(s);
            let render = server.finish(true);
            let frames: Vec<[i32; 2]> = render.chunks_exact(2).map(|f| [f[0], f[1]]).collect();
            let gap = &frames[silent_from as usize + PERIOD as usize..resumed_at as usize];
            assert!(gap.iter().all(|f| f == &[0, 0]), "sound while paused, after a change of volume");
            // From the end of the ramp on, every sample is half the one written.
            let from = resumed_at as usize + 480;
            let tail = (from..resumed_at as usize + (8192 - paused_at) as usize).map(|f| (f, f - resumed_at as usize));
            for (f, i) in tail {
                for c in 0..2 {
                    let want = (f64::from(sig[(paused_at as usize + i) * 2 + c]) * 0.5).round() as i32;
                    let got = frames[f][c];
                    assert!((got - want).abs() <= 1, "frame {f} channel {c}: {got}, not half of the frame written");
                }
            }
        });
    }
}
