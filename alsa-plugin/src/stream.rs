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
//! Poll: an eventfd, readable when the application may write (`avail >= avail_min`) or
//! the server has gone. A waiter thread sleeps on the ring's period futex until the period
//! at which that becomes true (one wake-up per refill, not one per period) and signals it;
//! the server does nothing per client for it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dmix::client::Connection;
use dmix::format::SampleFormat;
use dmix::protocol::Role;
use dmix::ring::layout::{CAPTURE_ENDED, CLIENT_DRAINING, ClientCounters};
use dmix::sys::Wake;
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// How often a sleeping waiter or drain checks that the server is still there.
const ALIVE_CHECK: Duration = Duration::from_millis(100);

/// The plugin's configuration keys.
#[derive(Debug, Default)]
pub struct Config {
    /// `server`: a server name as in `-D`, or a socket path (default: `default`).
    pub server: Option<String>,
    /// `name`: what dmix-stat shows (default: the program's name).
    pub name: Option<String>,
    /// `source`: what a capture PCM records, `monitor` (what is played, the default) or
    /// `capture` (the shared input of `dmix-serve --capture`).
    pub source: Option<Direction>,
}

impl Config {
    fn server(&self) -> String {
        self.server.clone().unwrap_or_else(|| dmix::paths::DEFAULT_NAME.to_string())
    }

    /// Refuses a server that is this very process: a dmix-serve whose sink is this plugin
    /// pointing back at it (dmixrs made the default device, the server left on
    /// alsa:default). That server answers no hello until its sink is open, so the open would
    /// wait out the hello timeout and fail anyway; answered, it would play its own mix into
    /// itself. The kernel's word on the peer (SO_PEERCRED) tells.
    pub fn refuse_self(&self) -> Result<(), String> {
        let Ok(path) = dmix::paths::resolve_device(&self.server()) else { return Ok(()) };
        let Ok(sock) = dmix::transport::connect_socket(&path) else { return Ok(()) };
        match dmix::transport::peer_cred(std::os::fd::AsFd::as_fd(&sock)) {
            Ok(peer) if peer.pid == std::process::id() => Err(format!(
                "{} is the server of this very process: a dmix server cannot play into itself (give it a \
                 device, e.g. --sink alsa:sysdefault)",
                path.display()
            )),
            _ => Ok(()),
        }
    }

    /// Connects to the configured server in `role`, under the configured name.
    fn connect(&self, role: Role) -> Result<Connection, String> {
        let name = self.name.clone().unwrap_or_else(program_name);
        Connection::open(&self.server(), role, &name, 0).map_err(|e| e.to_string())
    }
}

/// Which way a PCM goes, and for a recorder, which ring it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Playback into the mix ring.
    Playback,
    /// Capture of the monitor ring: what is played (`source monitor`, the default).
    Monitor,
    /// Capture of the shared input of `dmix-serve --capture` (`source capture`).
    Capture,
}

/// What the waiter thread and the application's calls share.
struct Shared {
    /// The eventfd, and whether it holds a count (is readable): changed together under the
    /// lock, or a signal racing an unsignal could leave it readable with the flag clear, and
    /// poll() would spin (seen: speaker-test at 100 % CPU).
    event: Mutex<(EventFd, bool)>,
    running: AtomicBool,
    base: AtomicU64,
    written: AtomicU64,
    buffer: AtomicU64,
    avail_min: AtomicU64,
    /// The eventfd's number, for poll().
    poll_fd: std::os::fd::RawFd,
    /// What the waiter waits for.
    direction: Direction,
    /// Bumped, and woken, whenever the fields above change.
    generation: AtomicU32,
    closing: AtomicBool,
    gone: AtomicBool,
}

impl Shared {
    fn new(direction: Direction, period_frames: u32) -> Result<Arc<Shared>, String> {
        let event = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| format!("eventfd: {e}"))?;
        Ok(Arc::new(Shared {
            poll_fd: std::os::fd::AsRawFd::as_raw_fd(&event),
            event: Mutex::new((event, false)),
            direction,
            running: AtomicBool::new(false),
            base: AtomicU64::new(0),
            written: AtomicU64::new(0),
            buffer: AtomicU64::new(u64::from(period_frames) * 2),
            avail_min: AtomicU64::new(u64::from(period_frames)),
            generation: AtomicU32::new(0),
            closing: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }))
    }

    fn signal(&self) {
        let mut e = self.event.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !e.1 {
            let _ = e.0.write(1);
            e.1 = true;
        }
    }

    fn unsignal(&self) {
        let mut e = self.event.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if e.1 {
            let _ = e.0.read();
            e.1 = false;
        }
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        dmix::sys::futex_wake(&self.generation);
    }

    /// poll_revents: `event` (POLLOUT for playback, POLLIN for capture) when `ready` frames
    /// (room, or frames waiting) reach avail_min, with POLLERR once the server is gone.
    fn revents(&self, ready: u64, event: i16) -> i16 {
        if self.gone.load(Ordering::Acquire) {
            return libc::POLLERR | event;
        }
        if ready >= self.avail_min.load(Ordering::Acquire) {
            event
        } else {
            self.unsignal();
            // The waiter may have signalled for a state that just passed: look again.
            self.changed();
            0
        }
    }

    /// Makes the eventfd's readability follow `ready >= avail_min` after a change we made.
    fn follow(&self, ready: u64) {
        if self.gone.load(Ordering::Acquire) || ready >= self.avail_min.load(Ordering::Acquire) {
            self.signal();
        } else {
            self.unsignal();
        }
    }

    /// ENODEV (and a readable eventfd, so poll() returns) once the server is gone.
    fn alive(&self, conn: &Connection) -> Result<(), Errno> {
        if self.gone.load(Ordering::Acquire) || conn.check_alive().is_err() {
            self.gone.store(true, Ordering::Release);
            self.signal();
            return Err(Errno::ENODEV);
        }
        Ok(())
    }

    /// Stops the waiter thread.
    fn close(&self, waiter: Option<JoinHandle<()>>) {
        self.closing.store(true, Ordering::Release);
        self.changed();
        if let Some(w) = waiter {
            let _ = w.join();
        }
    }
}

/// A playback stream into a dmix server.
pub struct Stream {
    conn: Arc<Connection>,
    shared: Arc<Shared>,
    waiter: Option<JoinHandle<()>>,
    format: SampleFormat,
    /// Our channels go to these server channels (a dmix-share sub-device).
    map: Option<Vec<usize>>,
    app_channels: usize,
    channels: usize,
    ring_frames: u64,
    /// Frames to start ahead of hw_ptr: a period on a paced server, none in freewheel.
    lead: u64,
    /// What we added, laid out as the sum ring (for retraction).
    history: Vec<i32>,
    /// Frames written but not in the ring yet (before start, while paused), server width.
    pending: Vec<i32>,
    /// Stream frames that have played (up to a stop or pause).
    played: u64,
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
        let shared = Shared::new(Direction::Playback, p.period_frames)?;
        let conn = Arc::new(conn);
        let s = Stream {
            map: conn.channel_map(),
            app_channels: conn.width() as usize,
            channels: p.channels as usize,
            ring_frames: u64::from(p.ring_frames),
            lead: if p.freewheel { 0 } else { u64::from(p.period_frames) },
            history: vec![0; p.ring_frames as usize * p.channels as usize],
            pending: Vec::new(),
            played: 0,
            xrun_counted: AtomicBool::new(false),
            scratch: Vec::new(),
            playing: false,
            first_frame: conn.start_frame(),
            format: SampleFormat::S16Le,
            waiter: None,
            shared,
            conn,
        };
        if !p.freewheel {
            s.mark_idle(s.conn.start_frame());
        }
        let mut s = s;
        s.waiter = Some(spawn_waiter(&s.conn, &s.shared)?);
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
        self.shared.poll_fd
    }

    /// hw_params: the format and the buffer (the latency: how far ahead we write).
    pub fn hw_params(&mut self, format: SampleFormat, buffer: u64) -> Result<(), Errno> {
        let period = u64::from(self.conn.params().period_frames);
        if buffer < period || buffer > self.ring_frames - period {
            return Err(Errno::EINVAL);
        }
        self.format = format;
        self.shared.buffer.store(buffer, Ordering::Release);
        self.counters().latency_frames.store(buffer as u32, Ordering::Relaxed);
        self.shared.changed();
        self.update_event();
        Ok(())
    }

    /// sw_params: when poll() says the application may write.
    pub fn sw_params(&mut self, avail_min: u64) {
        self.shared.avail_min.store(avail_min.max(1), Ordering::Release);
        self.shared.changed();
        self.update_event();
    }

    /// prepare: a new stream from frame 0.
    pub fn prepare(&mut self) -> Result<(), Errno> {
        self.alive()?;
        self.stop();
        self.hold();
        self.shared.written.store(0, Ordering::Release);
        self.played = 0;
        self.pending.clear();
        self.shared.changed();
        self.update_event();
        Ok(())
    }

    /// start: what was written so far goes into the ring, `lead` ahead of hw_ptr.
    pub fn start(&mut self) -> Result<(), Errno> {
        self.alive()?;
        let at = (self.conn.ring().hw_ptr() + self.lead).max(self.first_frame);
        let base = at - self.played;
        self.shared.base.store(base, Ordering::Release);
        let pending = std::mem::take(&mut self.pending);
        self.add(at, &pending);
        self.pending = pending;
        self.pending.clear();
        self.xrun_counted.store(false, Ordering::Relaxed);
        // Playing again: the server waits for us in freewheel from here.
        self.counters().flags.store(0, Ordering::Release);
        self.shared.running.store(true, Ordering::Release);
        self.publish();
        self.shared.changed();
        self.update_event();
        Ok(())
    }

    /// stop (drop): what was queued and not played is taken back out of the ring.
    pub fn stop(&mut self) {
        self.take_back(false);
        self.pending.clear();
        self.played = self.shared.written.load(Ordering::Acquire);
        self.shared.changed();
        self.update_event();
    }

    /// pause: like stop, but what was taken back is kept and plays on resume.
    pub fn pause(&mut self, enable: bool) -> Result<(), Errno> {
        if enable {
            self.take_back(true);
            self.shared.changed();
            self.update_event();
            Ok(())
        } else {
            self.start()
        }
    }

    /// Stops running: retracts the queue (keeping it in `pending` with `keep`), notes how
    /// far the stream played, and marks the slot idle there.
    fn take_back(&mut self, keep: bool) {
        if !self.shared.running.swap(false, Ordering::AcqRel) {
            return;
        }
        let ring = self.conn.ring();
        let base = self.shared.base.load(Ordering::Acquire);
        let end = base + self.shared.written.load(Ordering::Acquire);
        let from = ring.hw_ptr().clamp(base, end);
        let ch = self.channels;
        if keep {
            self.pending.clear();
            for f in from..end {
                let at = (f % self.ring_frames) as usize * ch;
                self.pending.extend_from_slice(&self.history[at..at + ch]);
            }
        }
        ring.retract(from, end, &self.history);
        // Frames the server took while we retracted played whole or partly: count from
        // where hw_ptr is now, never before `from`.
        let now = ring.hw_ptr().clamp(from, end);
        if keep && now > from {
            self.pending.drain(..((now - from) as usize * ch));
        }
        self.played = now - base;
        self.mark_idle(now);
    }

    /// In freewheel, a prepared stream holds the render where it is until it starts, as a
    /// dmix-play waiting for input does: several programs started together then start
    /// together, on the same frame. A paced server never waits for anyone.
    fn hold(&self) {
        let ring = self.conn.ring();
        if ring.freewheel() {
            let c = ring.counters(self.conn.slot());
            c.appl_ptr.store(ring.hw_ptr().max(self.first_frame), Ordering::Relaxed);
            c.flags.store(0, Ordering::Release);
        }
    }

    /// Says "ended at `frame`": the server does not wait for an idle PCM.
    fn mark_idle(&self, frame: u64) {
        let c = self.counters();
        c.end_ptr.store(frame, Ordering::Relaxed);
        c.appl_ptr.store(frame, Ordering::Relaxed);
        c.flags.store(CLIENT_DRAINING, Ordering::Release);
        if self.conn.ring().freewheel() {
            self.conn.ring().ring_doorbell();
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
            if !self.shared.running.load(Ordering::Acquire) {
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
        let written = self.shared.written.load(Ordering::Acquire);
        if self.shared.running.load(Ordering::Acquire) {
            let base = self.shared.base.load(Ordering::Acquire);
            self.add(base + written, &scratch);
        } else {
            self.pending.extend_from_slice(&scratch);
        }
        self.scratch = scratch;
        self.shared.written.store(written + frames as u64, Ordering::Release);
        if self.shared.running.load(Ordering::Acquire) {
            self.publish();
        }
        self.shared.changed();
        self.update_event();
        Ok(frames)
    }

    fn add(&mut self, at: u64, samples: &[i32]) {
        if !samples.is_empty() {
            let out = self.conn.ring().mix_add_keeping(at, samples, &mut self.history);
            if out.late_frames > 0 {
                self.counters().late_frames.fetch_add(out.late_frames as u64, Ordering::Relaxed);
            }
        }
    }

    /// Our slot's self-reported counters.
    fn counters(&self) -> &ClientCounters {
        self.conn.ring().counters(self.conn.slot())
    }

    fn publish(&self) {
        let ring = self.conn.ring();
        let end = self.shared.base.load(Ordering::Acquire) + self.shared.written.load(Ordering::Acquire);
        ring.counters(self.conn.slot()).appl_ptr.store(end, Ordering::Release);
        if ring.freewheel() {
            ring.ring_doorbell();
        }
    }

    /// Stream frames played so far.
    fn hw_stream(&self) -> u64 {
        let written = self.shared.written.load(Ordering::Acquire);
        if !self.shared.running.load(Ordering::Acquire) {
            return self.played;
        }
        let base = self.shared.base.load(Ordering::Acquire);
        self.conn.ring().hw_ptr().saturating_sub(base).min(written)
    }

    /// pointer: stream frames played (the caller wraps it at ALSA's boundary: modulo the
    /// buffer, a whole buffer played between two calls would look like none, as it does in
    /// freewheel), or an xrun once the server has played past everything written.
    pub fn pointer(&self) -> Result<u64, Errno> {
        if self.shared.gone.load(Ordering::Acquire) {
            return Err(Errno::ENODEV);
        }
        if self.shared.running.load(Ordering::Acquire) {
            let base = self.shared.base.load(Ordering::Acquire);
            let end = base + self.shared.written.load(Ordering::Acquire);
            if self.conn.ring().hw_ptr() > end {
                if !self.xrun_counted.swap(true, Ordering::Relaxed) {
                    self.counters().underruns.fetch_add(1, Ordering::Relaxed);
                }
                return Err(Errno::EPIPE);
            }
        }
        Ok(self.hw_stream())
    }

    /// Frames written and not yet taken by the server.
    fn queued(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire) - self.hw_stream()
    }

    /// delay: how long until a frame written now is heard, in frames: what is queued, then
    /// the server's device buffer (an ALSA sink's; 0 for wav and null sinks).
    pub fn delay(&self) -> u64 {
        self.queued() + self.conn.ring().device_buffer_frames()
    }

    fn avail(&self) -> u64 {
        let buffer = self.shared.buffer.load(Ordering::Acquire);
        buffer.saturating_sub(self.queued())
    }

    /// drain: starts if need be, then waits (bounded by the server's life) until the last
    /// frame written has been played.
    pub fn drain(&mut self) -> Result<(), Errno> {
        if !self.shared.running.load(Ordering::Acquire) {
            if self.shared.written.load(Ordering::Acquire) == self.played {
                return Ok(());
            }
            self.start()?;
        }
        let ring = self.conn.ring();
        let end = self.shared.base.load(Ordering::Acquire) + self.shared.written.load(Ordering::Acquire);
        let c = ring.counters(self.conn.slot());
        c.end_ptr.store(end, Ordering::Relaxed);
        // Release: the server that sees DRAINING sees end_ptr (as Player::drain).
        c.flags.store(CLIENT_DRAINING, Ordering::Release);
        self.publish();
        // Until the last frame was heard: past the server's device buffer too.
        let heard = ring.heard_at(end);
        while ring.hw_ptr() < heard {
            if ring.wait_hw_ptr(heard, ALIVE_CHECK) == Wake::TimedOut {
                self.alive()?;
            }
        }
        self.played = self.shared.written.load(Ordering::Acquire);
        self.shared.running.store(false, Ordering::Release);
        self.shared.changed();
        self.update_event();
        Ok(())
    }

    /// poll_revents: POLLOUT when the application may write, POLLERR when the server is gone.
    pub fn revents(&self) -> i16 {
        self.shared.revents(self.avail(), libc::POLLOUT)
    }

    fn update_event(&self) {
        self.shared.follow(self.avail());
    }

    fn alive(&self) -> Result<(), Errno> {
        self.shared.alive(&self.conn)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.take_back(false);
        self.shared.close(self.waiter.take());
    }
}

fn spawn_waiter(conn: &Arc<Connection>, shared: &Arc<Shared>) -> Result<JoinHandle<()>, String> {
    let (conn, shared) = (Arc::clone(conn), Arc::clone(shared));
    std::thread::Builder::new()
        .name("dmixrs-poll".into())
        .spawn(move || wait_for_room(&conn, &shared))
        .map_err(|e| format!("waiter thread: {e}"))
}

/// The waiter thread: signals the eventfd when the running stream has room for (playback)
/// or holds (capture) avail_min frames, sleeping on the ring's period futex until the
/// period at which that happens.
fn wait_for_room(conn: &Connection, shared: &Shared) {
    let ring = conn.ring();
    while !shared.closing.load(Ordering::Acquire) {
        let generation = shared.generation.load(Ordering::Acquire);
        let woke = if shared.running.load(Ordering::Acquire) {
            let end = shared.base.load(Ordering::Acquire) + shared.written.load(Ordering::Acquire);
            let avail_min = shared.avail_min.load(Ordering::Acquire);
            let (now, target) = match shared.direction {
                // avail >= avail_min once hw_ptr >= end - (buffer - avail_min).
                Direction::Playback => {
                    let need = shared.buffer.load(Ordering::Acquire).saturating_sub(avail_min);
                    (ring.hw_ptr(), end.saturating_sub(need))
                }
                // avail >= avail_min once the writer is avail_min past what was read.
                Direction::Monitor => (ring.hw_ptr(), end + avail_min),
                Direction::Capture => (ring.capture_status().cap_ptr.load(Ordering::Acquire), end + avail_min),
            };
            let ended = shared.direction == Direction::Capture
                && ring.capture_status().state.load(Ordering::Acquire) == CAPTURE_ENDED;
            if now >= target || ended {
                shared.signal();
                dmix::sys::futex_wait(&shared.generation, generation, ALIVE_CHECK)
            } else if shared.direction == Direction::Capture {
                ring.wait_cap_ptr(target, ALIVE_CHECK)
            } else {
                // On our own clock until the server should have published the target, as
                // players do: the server then has nobody to wake (a futex waiter costs its
                // wake-up call a little each: measured, docs/BENCHMARKS.md).
                ring.sleep_until_hw_ptr(target, ALIVE_CHECK)
            }
        } else {
            dmix::sys::futex_wait(&shared.generation, generation, ALIVE_CHECK)
        };
        if woke == Wake::TimedOut && conn.check_alive().is_err() {
            shared.gone.store(true, Ordering::Release);
            shared.signal();
            return;
        }
    }
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "alsa".into())
}

/// A capture stream: reads what the server played (the monitor ring) or its shared input
/// (the capture ring), as dmix-tee does. Stream frame `f` is ring frame `base + f`. It
/// publishes how far it has read: a freewheel server (or capture) waits for it while it
/// runs, and from its admission until it first starts, so a recorder started before a render
/// gets all of it; stopped or paused it says "read everything" and holds nothing.
pub struct Recorder {
    conn: Arc<Connection>,
    shared: Arc<Shared>,
    waiter: Option<JoinHandle<()>>,
    format: SampleFormat,
    channels: usize,
    ring_frames: u64,
    started_once: bool,
    /// Stream frames captured up to a stop or pause.
    captured: u64,
    /// The read position at which poll was told, after the input ended, that what is left
    /// is readable (`u64::MAX`: not yet).
    end_told_at: AtomicU64,
}

/// What an idle recorder publishes as its read position: nobody waits for it.
const READ_EVERYTHING: u64 = u64::MAX >> 1;

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
            shared: Shared::new(source, p.period_frames)?,
            conn: Arc::new(conn),
            waiter: None,
            format: SampleFormat::S16Le,
            channels: p.channels as usize,
            ring_frames: u64::from(ring_frames),
            started_once: false,
            captured: 0,
            end_told_at: AtomicU64::new(u64::MAX),
        };
        if !p.freewheel {
            r.publish_read(READ_EVERYTHING);
        }
        r.waiter = Some(spawn_waiter(&r.conn, &r.shared)?);
        Ok(r)
    }

    /// The server's rate, channels, the ring's and a period's frames.
    pub fn shape(&self) -> (u32, u32, u32, u32) {
        let p = self.conn.params();
        (p.rate_hz, self.channels as u32, self.ring_frames as u32, p.period_frames)
    }

    /// The fd for poll().
    pub fn poll_fd(&self) -> std::os::fd::RawFd {
        self.shared.poll_fd
    }

    fn write_ptr(&self) -> u64 {
        let ring = self.conn.ring();
        match self.shared.direction {
            Direction::Capture => ring.capture_status().cap_ptr.load(Ordering::Acquire),
            _ => ring.hw_ptr(),
        }
    }

    fn publish_read(&self, pos: u64) {
        let ring = self.conn.ring();
        // Release: pairs with the freewheel barrier's Acquire of our read position.
        ring.counters(self.conn.slot()).appl_ptr.store(pos, Ordering::Release);
        if ring.freewheel() {
            ring.ring_doorbell();
        }
    }

    /// hw_params: the format and the buffer (at most the ring less a period).
    pub fn hw_params(&mut self, format: SampleFormat, buffer: u64) -> Result<(), Errno> {
        let period = u64::from(self.conn.params().period_frames);
        if buffer < period || buffer > self.ring_frames.saturating_sub(period) {
            return Err(Errno::EINVAL);
        }
        self.format = format;
        self.shared.buffer.store(buffer, Ordering::Release);
        self.shared.changed();
        Ok(())
    }

    /// sw_params: when poll() says there is something to read.
    pub fn sw_params(&mut self, avail_min: u64) {
        self.shared.avail_min.store(avail_min.max(1), Ordering::Release);
        self.shared.changed();
        self.update_event();
    }

    /// prepare: a new stream from frame 0.
    pub fn prepare(&mut self) -> Result<(), Errno> {
        self.alive()?;
        self.stop();
        self.shared.written.store(0, Ordering::Release);
        self.captured = 0;
        self.shared.changed();
        self.update_event();
        Ok(())
    }

    /// start: from now, or in freewheel the first time from the frame we were admitted at.
    pub fn start(&mut self) -> Result<(), Errno> {
        self.alive()?;
        let first = !self.started_once && self.conn.ring().freewheel();
        let at = if first { self.conn.start_frame() } else { self.write_ptr() };
        self.started_once = true;
        let base = at - self.captured;
        self.shared.base.store(base, Ordering::Release);
        self.shared.running.store(true, Ordering::Release);
        self.publish_read(base + self.shared.written.load(Ordering::Acquire));
        self.shared.changed();
        self.update_event();
        Ok(())
    }

    /// stop: reading ends; nobody waits for us.
    pub fn stop(&mut self) {
        if self.shared.running.swap(false, Ordering::AcqRel) {
            self.captured = self.hw_stream_running();
        }
        self.publish_read(READ_EVERYTHING);
        self.shared.changed();
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

    fn hw_stream_running(&self) -> u64 {
        let captured = self.write_ptr().saturating_sub(self.shared.base.load(Ordering::Acquire));
        if self.conn.ring().freewheel() {
            // A freewheel server stops a whole ring ahead of what we read, and time is
            // virtual: what lies beyond our buffer is captured "later", not an overrun.
            let read = self.shared.written.load(Ordering::Acquire);
            captured.min(read + self.shared.buffer.load(Ordering::Acquire))
        } else {
            captured
        }
    }

    fn hw_stream(&self) -> u64 {
        if self.shared.running.load(Ordering::Acquire) { self.hw_stream_running() } else { self.captured }
    }

    /// pointer: stream frames captured (wrapped by the caller); an overrun once more than the buffer
    /// waits unread; ENODEV once the server is gone and everything it left was read.
    pub fn pointer(&self) -> Result<u64, Errno> {
        let captured = self.hw_stream();
        let read = self.shared.written.load(Ordering::Acquire);
        if self.shared.gone.load(Ordering::Acquire) && captured <= read {
            return Err(Errno::ENODEV);
        }
        let buffer = self.shared.buffer.load(Ordering::Acquire);
        if captured.saturating_sub(read) > buffer {
            return Err(Errno::EPIPE);
        }
        Ok(captured)
    }

    /// delay: frames captured and not yet read.
    pub fn delay(&self) -> u64 {
        self.hw_stream().saturating_sub(self.shared.written.load(Ordering::Acquire))
    }

    /// transfer: `frames` frames into `out`, in the negotiated format.
    pub fn transfer(&mut self, out: &mut [u8], frames: usize) -> Result<usize, Errno> {
        let read = self.shared.written.load(Ordering::Acquire);
        let base = self.shared.base.load(Ordering::Acquire);
        let ring = self.conn.ring();
        let samples = match self.shared.direction {
            Direction::Capture => ring.capture_ring(),
            _ => ring.monitor_ring(),
        };
        let ch = self.channels;
        let width = self.format.bytes();
        for (f, frame_out) in out.chunks_exact_mut(width * ch).take(frames).enumerate() {
            let at = ((base + read + f as u64) % self.ring_frames) as usize * ch;
            for (c, bytes) in frame_out.chunks_exact_mut(width).enumerate() {
                self.format.mix_to_le_bytes(samples[at + c].load(Ordering::Relaxed), bytes);
            }
        }
        // A paced server waits for no reader: frames it may have overwritten while we
        // copied are an overrun, never garbage handed on.
        if self.write_ptr().saturating_sub(self.ring_frames) > base + read {
            return Err(Errno::EPIPE);
        }
        self.shared.written.store(read + frames as u64, Ordering::Release);
        self.publish_read(base + read + frames as u64);
        self.shared.changed();
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
        if self.shared.running.load(Ordering::Acquire)
            && self.input_ended()
            && waiting < self.shared.avail_min.load(Ordering::Acquire)
        {
            let read = self.shared.written.load(Ordering::Acquire);
            if waiting > 0 && self.end_told_at.swap(read, Ordering::AcqRel) != read {
                return libc::POLLIN;
            }
            return libc::POLLIN | libc::POLLERR;
        }
        self.shared.revents(waiting, libc::POLLIN)
    }

    /// The shared input has ended and everything it held was captured (`cap_ptr` is final).
    fn input_ended(&self) -> bool {
        self.shared.direction == Direction::Capture
            && self.conn.ring().capture_status().state.load(Ordering::Acquire) == CAPTURE_ENDED
    }

    fn update_event(&self) {
        self.shared.follow(self.delay());
    }

    fn alive(&self) -> Result<(), Errno> {
        self.shared.alive(&self.conn)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.close(self.waiter.take());
    }
}
