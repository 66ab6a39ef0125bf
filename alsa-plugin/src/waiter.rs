//! Poll readiness: an eventfd, readable when the application may write (playback:
//! `avail >= avail_min`) or read (capture: avail_min frames wait), or when the server has
//! gone. A waiter thread sleeps (on its own clock until hw_ptr is due, on the capture
//! futex for the shared input) until the period at which that becomes true (one wake-up per
//! refill, not one per period) and signals it; the server does nothing per client for it.
//! It owns no audio: it reads the positions the application's calls publish in
//! [`Readiness`] and never writes the ring.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dmix::client::Connection;
use dmix::sys::Wake;
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::capture::source_of;
use crate::config::Direction;
use crate::position::{frames_at, room_at};

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

pub(crate) fn spawn_waiter(conn: &Arc<Connection>, ready: &Arc<Readiness>) -> Result<JoinHandle<()>, String> {
    let (conn, ready) = (Arc::clone(conn), Arc::clone(ready));
    std::thread::Builder::new()
        .name("dmixrs-poll".into())
        .spawn(move || wait_for_room(&conn, &ready))
        .map_err(|e| format!("waiter thread: {e}"))
}

/// The waiter thread: signals the eventfd when the running stream has room for (playback)
/// or holds (capture) avail_min frames, sleeping on the ring's period futex until the
/// period at which that happens.
fn wait_for_room(conn: &Connection, ready: &Readiness) {
    let ring = conn.ring();
    while !ready.closing.load(Ordering::Acquire) {
        let generation = ready.generation.load(Ordering::Acquire);
        let woke = if ready.running.load(Ordering::Acquire) {
            let end = ready.base.load(Ordering::Acquire) + ready.written.load(Ordering::Acquire);
            let avail_min = ready.avail_min.load(Ordering::Acquire);
            if ready.direction == Direction::Playback {
                let target = room_at(end, ready.buffer.load(Ordering::Acquire), avail_min);
                if ring.hw_ptr() >= target {
                    ready.signal();
                    dmix::sys::futex_wait(&ready.generation, generation, ALIVE_CHECK)
                } else {
                    // On our own clock until the server should have published the target, as
                    // players do: the server then has nobody to wake (a futex waiter costs its
                    // wake-up call a little each: measured, docs/BENCHMARKS.md).
                    ring.sleep_until_hw_ptr(target, ALIVE_CHECK)
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
            dmix::sys::futex_wait(&ready.generation, generation, ALIVE_CHECK)
        };
        if woke == Wake::TimedOut && conn.check_alive().is_err() {
            ready.gone.store(true, Ordering::Release);
            ready.signal();
            return;
        }
    }
}
