//! The period loop: the server's real-time thread. Every period it takes one period out of
//! the sum ring (read and re-arm in one atomic swap per sample), hands it to the sink, copies
//! it to the monitor, advances hw_ptr and wakes the waiters with one syscall.
//!
//! It never allocates, never takes a lock and never logs once started: everything it needs
//! is preallocated in [`PeriodLoop::new`], and what it must report it counts in the status
//! region. Its only per-client work is admission and release of slots (bitmask swaps, rare)
//! and, in freewheel only, reading each player's self-reported position for the barrier.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::error::Result;
use crate::ring::layout::{CLIENT_DRAINING, SERVER_STOPPING, SLOT_ACTIVE, SLOT_FREE};
use crate::ring::{monotonic_ns, sleep_until_monotonic};
use crate::sink::Sink;

/// How long a freewheel or held server sleeps before re-checking its stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopEnd {
    /// SIGINT/SIGTERM.
    Stopped,
    /// `--exit-when-idle`: every player came and went.
    Idle,
}

/// The loop's preallocated state.
pub struct PeriodLoop<'a> {
    shared: &'a Shared,
    sink: &'a mut dyn Sink,
    buf: Vec<i32>,
    hw: u64,
    /// Players admitted and not yet gone (slot bits).
    active_play: u64,
    /// Recorders admitted and not yet gone: a freewheel render waits for them too.
    active_tee: u64,
    /// Every admitted slot, any role.
    active_any: u64,
    /// Players admitted since the start.
    players_seen: u32,
    /// The first period is held until `wait_clients` players were admitted.
    released: bool,
    wait_clients: u32,
    exit_when_idle: bool,
    freewheel: bool,
    paced_by_clock: bool,
    period_ns: u64,
}

impl<'a> PeriodLoop<'a> {
    /// Prepares the loop (all allocation happens here).
    pub fn new(shared: &'a Shared, sink: &'a mut dyn Sink, wait_clients: u32, exit_when_idle: bool) -> Self {
        let p = *shared.ring.params();
        let paced_by_clock = !p.freewheel && !sink.paces_itself();
        PeriodLoop {
            shared,
            buf: vec![0; p.period_frames as usize * p.channels as usize],
            hw: 0,
            active_play: 0,
            active_tee: 0,
            active_any: 0,
            players_seen: 0,
            released: wait_clients == 0,
            wait_clients,
            exit_when_idle,
            freewheel: p.freewheel,
            paced_by_clock,
            period_ns: p.period_ns(),
            sink,
        }
    }

    /// Runs until stopped, idle, or the sink fails.
    pub fn run(&mut self) -> Result<LoopEnd> {
        let period = u64::from(self.shared.ring.params().period_frames);
        let mut deadline_ns = 0u64;
        let result = loop {
            // In freewheel or while held, wait here (on the doorbell) until the period may
            // be taken; the doorbell value is read before the checks so no ring is lost.
            let bell = self.shared.ring.doorbell().load(Ordering::Acquire);
            self.admit_and_release();
            if self.shared.stop.load(Ordering::Relaxed) {
                break Ok(LoopEnd::Stopped);
            }
            if self.exit_when_idle && self.players_seen > 0 && self.active_play == 0 {
                break Ok(LoopEnd::Idle);
            }
            if !self.released {
                if self.players_seen >= self.wait_clients {
                    self.released = true;
                    // The player that released us was admitted just now: give it one period
                    // to write before the clock takes its first frames.
                    deadline_ns = monotonic_ns() + self.period_ns;
                } else {
                    crate::sys::futex_wait(self.shared.ring.doorbell(), bell, IDLE_WAIT);
                    continue;
                }
            }
            if self.freewheel {
                if !self.freewheel_ready(period) {
                    crate::sys::futex_wait(self.shared.ring.doorbell(), bell, IDLE_WAIT);
                    continue;
                }
            } else if self.paced_by_clock {
                if deadline_ns == 0 {
                    deadline_ns = monotonic_ns();
                }
                // Interrupted (a signal): the stop flag is re-checked next period.
                sleep_until_monotonic(deadline_ns);
                deadline_ns += self.period_ns;
                let now = monotonic_ns();
                // More than a buffer late (the machine stalled us): count it and restart the
                // clock rather than rushing out periods to catch up.
                if now > deadline_ns + 4 * self.period_ns {
                    self.shared.ring.status().stats.0.late_periods.fetch_add(1, Ordering::Relaxed);
                    deadline_ns = now;
                }
            }
            let started = monotonic_ns();
            self.shared.ring.take_period(self.hw, &mut self.buf);
            self.hw += period;
            self.shared.ring.publish_hw_ptr(self.hw);
            if let Err(e) = self.sink.write_period(&self.buf) {
                break Err(e);
            }
            let stats = &self.shared.ring.status().stats.0;
            stats.periods.fetch_add(1, Ordering::Relaxed);
            stats.xruns.store(self.sink.xruns(), Ordering::Relaxed);
            stats.max_period_work_ns.fetch_max(monotonic_ns().saturating_sub(started), Ordering::Relaxed);
        };
        self.shared.ring.status().header.0.state.store(SERVER_STOPPING, Ordering::Release);
        self.shared.ring.wake_all();
        result
    }

    /// Freewheel barrier: every player has supplied the period or has finished, every
    /// recorder has read far enough that the period will not overwrite what it has not read,
    /// and at least one player still needs the server to advance. Reads self-reported
    /// positions: a client that lies can only delay the render or lose its own samples.
    fn freewheel_ready(&self, period: u64) -> bool {
        let monitor = u64::from(self.shared.ring.params().monitor_frames);
        let mut tees = self.active_tee;
        while tees != 0 {
            let slot = tees.trailing_zeros() as usize;
            tees &= tees - 1;
            // Acquire: pairs with the recorder's Release of its read position.
            let read = self.shared.ring.counters(slot).appl_ptr.load(Ordering::Acquire);
            if self.hw + period > read + monitor {
                return false;
            }
        }
        let mut needed = false;
        let mut bits = self.active_play;
        while bits != 0 {
            let slot = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let c = self.shared.ring.counters(slot);
            // Acquire: pairs with the client's Release of flags/appl_ptr after its adds.
            if c.flags.load(Ordering::Acquire) & CLIENT_DRAINING != 0 {
                if c.end_ptr.load(Ordering::Acquire) > self.hw {
                    needed = true;
                }
            } else {
                needed = true;
                if c.appl_ptr.load(Ordering::Acquire) < self.hw + period {
                    return false;
                }
            }
        }
        needed
    }

    /// Admits slots the control thread accepted and frees slots whose client left.
    fn admit_and_release(&mut self) {
        let ring = &self.shared.ring;
        let joins = self.shared.join_mask.swap(0, Ordering::AcqRel);
        if joins != 0 {
            // A held or freewheel server takes no period before every player has written
            // it, so a new client may start at hw; a running clock gives it a period's time.
            let start = if self.freewheel || !self.released { self.hw } else { self.hw + self.period_frames() };
            let play = self.shared.play_mask.load(Ordering::Acquire);
            let tee = self.shared.tee_mask.load(Ordering::Acquire);
            let capture = self.shared.capture_mask.load(Ordering::Acquire);
            // A reader of the shared input starts at the capture pointer: the capture thread
            // treats it as a reader (and holds a freewheel capture for it) from the moment
            // it sees the slot active, and by then its read position is set.
            let cap_start = ring.status().capture.0.cap_ptr.load(Ordering::Acquire);
            let mut bits = joins;
            while bits != 0 {
                let slot = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let start = if capture & (1 << slot) != 0 { cap_start } else { start };
                ring.reset_counters(slot, start);
                let info = &ring.status().slots[slot];
                info.start_frame.store(start, Ordering::Relaxed);
                // Release: pairs with the client's Acquire of its slot state.
                info.state.store(SLOT_ACTIVE, Ordering::Release);
                if play & (1 << slot) != 0 {
                    self.active_play |= 1 << slot;
                    self.players_seen = self.players_seen.saturating_add(1);
                }
                if tee & (1 << slot) != 0 {
                    self.active_tee |= 1 << slot;
                }
            }
            self.active_any |= joins;
            ring.wake_all();
        }
        let leaves = self.shared.leave_mask.swap(0, Ordering::AcqRel);
        if leaves != 0 {
            // A client that said hello and hung up at once may have both its join and its
            // leave posted after we took the joins above: drop the join with the leave, or
            // the next call would admit a slot nobody holds, for ever (seen under load in
            // the connect/disconnect test).
            self.shared.join_mask.fetch_and(!leaves, Ordering::AcqRel);
            let mut bits = leaves;
            while bits != 0 {
                let slot = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                ring.status().slots[slot].state.store(SLOT_FREE, Ordering::Release);
            }
            self.active_play &= !leaves;
            self.active_tee &= !leaves;
            self.active_any &= !leaves;
            // Release: the control thread reuses these slots only after it sees them here.
            self.shared.freed_mask.fetch_or(leaves, Ordering::AcqRel);
        }
    }

    fn period_frames(&self) -> u64 {
        u64::from(self.shared.ring.params().period_frames)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use super::*;
    use crate::format::SampleFormat;
    use crate::ring::{RingParams, ServerRing};

    /// A sink that paces itself (so the loop never sleeps), lets a client join half-way, and
    /// records the allocations the loop made between its 10th and its 500th period.
    struct Probe<'a> {
        shared: &'a Shared,
        periods: u64,
        allocs_at_10: u64,
        allocs_in_steady_state: Option<u64>,
    }

    impl Sink for Probe<'_> {
        fn write_period(&mut self, _samples: &[i32]) -> Result<()> {
            self.periods += 1;
            let now = crate::sys::alloc_count::thread_allocs();
            match self.periods {
                10 => self.allocs_at_10 = now,
                250 => {
                    // Admission and release happen inside the measured window.
                    self.shared.play_mask.fetch_or(1, Ordering::AcqRel);
                    self.shared.join_mask.fetch_or(1, Ordering::AcqRel);
                }
                350 => {
                    self.shared.leave_mask.fetch_or(1, Ordering::AcqRel);
                }
                500 => {
                    self.allocs_in_steady_state = Some(now - self.allocs_at_10);
                    self.shared.stop.store(true, Ordering::Relaxed);
                }
                _ => {}
            }
            Ok(())
        }
        fn paces_itself(&self) -> bool {
            true
        }
        fn device_buffer_frames(&self) -> u32 {
            0
        }
        fn xruns(&self) -> u64 {
            0
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn period_loop_allocates_nothing() {
        let params = RingParams {
            rate_hz: 48000,
            channels: 2,
            format: SampleFormat::S16Le,
            period_frames: 64,
            ring_frames: 256,
            monitor_frames: 1024,
            capture_frames: 0,
            freewheel: false,
        };
        let shared = Shared {
            ring: ServerRing::create(params, 1).unwrap(),
            stop: Arc::new(AtomicBool::new(false)),
            join_mask: AtomicU64::new(0),
            leave_mask: AtomicU64::new(0),
            freed_mask: AtomicU64::new(0),
            play_mask: AtomicU64::new(0),
            tee_mask: AtomicU64::new(0),
            capture_mask: AtomicU64::new(0),
            loop_done: AtomicBool::new(false),
        };
        let mut probe = Probe { shared: &shared, periods: 0, allocs_at_10: 0, allocs_in_steady_state: None };
        let end = std::thread::scope(|s| {
            s.spawn(|| PeriodLoop::new(&shared, &mut probe, 0, false).run().unwrap()).join().unwrap()
        });
        assert_eq!(end, LoopEnd::Stopped);
        assert_eq!(probe.allocs_in_steady_state, Some(0), "the period loop allocated");
        assert_eq!(shared.freed_mask.load(Ordering::Relaxed), 1, "the slot was admitted and freed");
    }
}
