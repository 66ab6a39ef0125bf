//! Poll readiness: an eventfd, readable when the application may write (playback:
//! `avail >= avail_min`) or read (capture: avail_min frames wait), or when the server has
//! gone. A waiter thread sleeps (on its own clock until hw_ptr is due, on the capture
//! futex for the shared input) until the period at which that becomes true (one wake-up per
//! refill, not one per period) and signals it; the server does nothing per client for it.
//! It owns no audio: it reads the positions the application's calls publish in
//! [`Readiness`]. It writes the ring for one thing only: a playback stream's new volume
//! from dmix-stat, which must be heard within two server periods whatever the buffer, while
//! the application may sit in poll() for its whole buffer. The waiter also sleeps on the
//! slot's volume count, and when it moves re-adds the queue at the new volume
//! (`WriteStream::follow_volume`) through the stream's [`SharedHistory`], the one piece of
//! writer state the two threads share: under a mutex, held for an add, a follow or a
//! retraction (microseconds) and never across a sleep.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dmix::client::Connection;
use dmix::ring::{History, VolumeMark};
use dmix::sys::Wake;
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::capture::source_of;
use crate::config::Direction;
use crate::position::{frames_at, room_at};

/// A playback stream's retraction and volume history, shared by the application's calls
/// (add, retract, keep for a pause) and the waiter (follow a new volume).
pub(crate) type SharedHistory = Arc<Mutex<History>>;

/// Locks the history, poisoned or not, as `Readiness` takes its own lock: a panic while it
/// was held (caught at the plugin's boundary; none is expected in an add, a follow or a
/// retraction) is no reason to fail every later call of the stream.
pub(crate) fn lock(history: &SharedHistory) -> std::sync::MutexGuard<'_, History> {
    history.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often a sleeping waiter or drain checks that the server is still there.
pub(crate) const ALIVE_CHECK: Duration = Duration::from_millis(100);

/// When poll() says "ready": the eventfd, and the stream positions the waiter thread
/// needs to know when to signal it, shared by the waiter and the application's calls.
pub(crate) struct Readiness {
    /// The eventfd, and whether it holds a count (is readable): changed together under the
    /// lock, or a signal racing an unsignal could leave it readable with the flag clear, and
    /// poll() would spin (seen: speaker-test at 100 % CPU).
    pub(crate) event: Mutex<(EventFd, bool)>,
    /// The waiter's copy of the stream's positions (`set_positions`): the stream runs,
    /// the ring frame of its frame 0, frames written (playback) or read (capture), its
    /// buffer.
    pub(crate) running: AtomicBool,
    pub(crate) base: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) buffer: AtomicU64,
    pub(crate) avail_min: AtomicU64,
    /// The eventfd's number, for poll().
    pub(crate) poll_fd: std::os::fd::RawFd,
    /// What the waiter waits for.
    pub(crate) direction: Direction,
    /// Bumped, and woken, whenever the fields above change.
    pub(crate) generation: AtomicU32,
    pub(crate) closing: AtomicBool,
    pub(crate) gone: AtomicBool,
}

impl Readiness {
    pub(crate) fn new(direction: Direction, period_frames: u32) -> Result<Arc<Readiness>, String> {
        let event = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(|e| format!("eventfd: {e}"))?;
        Ok(Arc::new(Readiness {
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

    /// Copies a stream's positions for the waiter, `running` last (Release: the waiter's
    /// Acquire of `running` sees the others as new).
    pub(crate) fn set_positions(&self, running: bool, base: u64, written: u64, buffer: u64) {
        self.base.store(base, Ordering::Release);
        self.written.store(written, Ordering::Release);
        self.buffer.store(buffer, Ordering::Release);
        self.running.store(running, Ordering::Release);
    }

    pub(crate) fn signal(&self) {
        let mut e = self.event.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !e.1 {
            let _ = e.0.write(1);
            e.1 = true;
        }
    }

    pub(crate) fn unsignal(&self) {
        let mut e = self.event.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if e.1 {
            let _ = e.0.read();
            e.1 = false;
        }
    }

    /// sw_params: poll() says ready from `avail_min` frames (at least one) on.
    pub(crate) fn set_avail_min(&self, avail_min: u64) {
        self.avail_min.store(avail_min.max(1), Ordering::Release);
        self.changed();
    }

    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
        dmix::sys::futex_wake(&self.generation);
    }

    /// poll_revents: `event` (POLLOUT for playback, POLLIN for capture) when `ready` frames
    /// (room, or frames waiting) reach avail_min, with POLLERR once the server is gone.
    pub(crate) fn revents(&self, ready: u64, event: i16) -> i16 {
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
    pub(crate) fn follow(&self, ready: u64) {
        if self.gone.load(Ordering::Acquire) || ready >= self.avail_min.load(Ordering::Acquire) {
            self.signal();
        } else {
            self.unsignal();
        }
    }

    /// ENODEV (and a readable eventfd, so poll() returns) once the server is gone.
    pub(crate) fn alive(&self, conn: &Connection) -> Result<(), Errno> {
        if self.gone.load(Ordering::Acquire) || conn.check_alive().is_err() {
            self.gone.store(true, Ordering::Release);
            self.signal();
            return Err(Errno::ENODEV);
        }
        Ok(())
    }

    /// Stops the waiter thread.
    pub(crate) fn close(&self, waiter: Option<JoinHandle<()>>) {
        self.closing.store(true, Ordering::Release);
        self.changed();
        if let Some(w) = waiter {
            let _ = w.join();
        }
    }
}

/// Starts the waiter of `ready`; a playback stream gives its `history`, whose queue the
/// waiter keeps at the server's volume.
pub(crate) fn spawn_waiter(
    conn: &Arc<Connection>,
    ready: &Arc<Readiness>,
    history: Option<&SharedHistory>,
) -> Result<JoinHandle<()>, String> {
    let (conn, ready, history) = (Arc::clone(conn), Arc::clone(ready), history.map(Arc::clone));
    std::thread::Builder::new()
        .name("dmixrs-poll".into())
        .spawn(move || wait_for_room(&conn, &ready, history.as_ref()))
        .map_err(|e| format!("waiter thread: {e}"))
}

/// Follows a new volume, if any (one atomic load when there is none), and returns the mark
/// to sleep on: the lock is held for the follow alone.
fn follow_volume(conn: &Connection, history: &SharedHistory) -> VolumeMark {
    let mut h = lock(history);
    conn.writer().follow_volume(&mut h);
    h.volume_mark()
}

/// The waiter thread: signals the eventfd when the running stream has room for (playback)
/// or holds (capture) avail_min frames, sleeping on the ring's period futex until the
/// period at which that happens. A playback stream's waiter also wakes for a new volume and
/// follows it at once, whatever the application is doing.
fn wait_for_room(conn: &Connection, ready: &Readiness, history: Option<&SharedHistory>) {
    let ring = conn.ring();
    while !ready.closing.load(Ordering::Acquire) {
        let generation = ready.generation.load(Ordering::Acquire);
        let mark = history.map(|h| follow_volume(conn, h));
        let woke = if ready.running.load(Ordering::Acquire) {
            let end = ready.base.load(Ordering::Acquire) + ready.written.load(Ordering::Acquire);
            let avail_min = ready.avail_min.load(Ordering::Acquire);
            if ready.direction == Direction::Playback {
                let target = room_at(end, ready.buffer.load(Ordering::Acquire), avail_min);
                let w = conn.writer();
                match (ring.hw_ptr() >= target, mark) {
                    (true, Some(mark)) => {
                        ready.signal();
                        // Nothing to wait for on the server's clock, but the queue must still
                        // follow a new volume: sleep on both words.
                        w.wait_volume_or(&ready.generation, generation, mark, ALIVE_CHECK)
                    }
                    (true, None) => {
                        ready.signal();
                        dmix::sys::futex_wait(&ready.generation, generation, ALIVE_CHECK)
                    }
                    // On our own clock until the server should have published the target, as
                    // players do: the server then has nobody to wake (a futex waiter costs its
                    // wake-up call a little each: measured, docs/BENCHMARKS.md). A new volume
                    // wakes it too.
                    (false, Some(mark)) => w.sleep_until_hw_ptr_marked(target, ALIVE_CHECK, mark),
                    (false, None) => ring.sleep_until_hw_ptr(target, ALIVE_CHECK),
                }
            } else {
                let reader = conn.reader(source_of(ready.direction));
                let target = frames_at(end, avail_min);
                if reader.write_ptr() >= target || reader.ended() {
                    ready.signal();
                    dmix::sys::futex_wait(&ready.generation, generation, ALIVE_CHECK)
                } else {
                    reader.sleep_until(target, ALIVE_CHECK)
                }
            }
        } else {
            // Stopped, paused or not started: nothing of ours is in the ring (what waits
            // outside it takes the volume of the moment it is added).
            dmix::sys::futex_wait(&ready.generation, generation, ALIVE_CHECK)
        };
        if woke == Wake::TimedOut && conn.check_alive().is_err() {
            ready.gone.store(true, Ordering::Release);
            ready.signal();
            return;
        }
    }
}
