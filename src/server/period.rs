//! The period loop: the server's real-time thread. Every period it takes one period out of
//! the sum ring (read and re-arm in one atomic swap per sample), hands it to the sink, copies
//! it to the monitor, advances hw_ptr and wakes the waiters with one syscall.
//!
//! The sink comes from the sink keeper ([`super::sinks`]). When it fails for good and can be
//! reopened (a device unplugged), the loop gives it back, marks the sink lost in the status
//! region and runs on by the monotonic clock, dropping the mix: clients keep their timing
//! and hear nothing until the keeper hands over a sink again.
//!
//! It never allocates, never takes a lock and never logs once started: everything it needs
//! is preallocated in [`PeriodLoop::new`], and what it must report it counts in the status
//! region. Its only per-client work is admission and release of slots (bitmask swaps, rare),
//! noticing a player's first frame (one load per player that has not written yet), and, in
//! freewheel only, reading each player's self-reported position for the barrier.
//!
//! A player counts as one (for `--wait-clients`, `--exit-when-idle` and the freewheel
//! barrier) only from its first written frame, which it reports in its counters
//! (`ClientCounters::started`). A program that opens a device and closes it again (PortAudio
//! enumerating devices) never is one: it cannot release a held server, end an idle one, or
//! hold a render. Until it leaves it holds its slot, and an `--exit-when-idle` server does
//! not leave it behind. The report is self-reported: a client that lies can only do what
//! writing one frame would have done.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Core;
use super::sinks::{Installed, Returned, SinkPort};
use crate::error::Result;
use crate::ring::layout::SlotBits;
use crate::ring::server::{Master, Supply};
use crate::sys::{monotonic_ns, sleep_until_monotonic};

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
    shared: &'a Core,
    port: SinkPort,
    /// The sink playing, if any (none while the one in use is lost).
    sink: Option<Installed>,
    /// Xruns of the sinks played before the current one.
    past_xruns: u64,
    /// `--on-sink-loss exit`: a lost sink ends the server, as any sink error does.
    exit_on_loss: bool,
    buf: Vec<i32>,
    /// The master volume as the loop applies it (the word it saw, the ramp it follows).
    master: Master,
    hw: u64,
    /// Players admitted and not yet gone (slot bits), written or not.
    active_play: u64,
    /// Of those, the ones that have written their first frame: players proper.
    counted_play: u64,
    /// Recorders admitted and not yet gone: a freewheel render waits for them too.
    active_tee: u64,
    /// Players that wrote a frame, since the start.
    players_seen: u32,
    /// The first period is held until `wait_clients` players were admitted.
    released: bool,
    wait_clients: u32,
    exit_when_idle: bool,
    freewheel: bool,
    period_ns: u64,
    /// When the next period is due, on the monotonic clock (0: not started), while the
    /// clock paces the loop (a wav or null sink, or none).
    deadline_ns: u64,
}

impl<'a> PeriodLoop<'a> {
    /// Prepares the loop (all allocation happens here). It plays on the sinks `port` hands
    /// it; with `exit_on_loss`, the loss of one ends the loop with its error.
    pub fn new(shared: &'a Core, port: SinkPort, exit_on_loss: bool, wait_clients: u32, exit_when_idle: bool) -> Self {
        let p = *shared.ring.params();
        PeriodLoop {
            shared,
            port,
            sink: None,
            past_xruns: 0,
            exit_on_loss,
            buf: vec![0; p.period_frames as usize * p.channels as usize],
            master: Master::default(),
            hw: 0,
            active_play: 0,
            counted_play: 0,
            active_tee: 0,
            players_seen: 0,
            released: wait_clients == 0,
            wait_clients,
            exit_when_idle,
            freewheel: p.freewheel,
            period_ns: p.period_ns(),
            deadline_ns: 0,
        }
    }

    /// Runs until stopped, idle, or a sink fails for good; then finishes the sink in use
    /// (ALSA drains, a WAV is finalized, also after its own write failed).
    pub fn run(&mut self) -> Result<LoopEnd> {
        let end = self.run_periods();
        self.shared.ring.set_stopping();
        let finished = match self.sink.take() {
            // A device whose write failed is not drained: it is gone or broken.
            Some(s) if end.is_err() && s.sink.reopenable() => Ok(()),
            Some(mut s) => s.sink.finish(),
            None => Ok(()),
        };
        let end = end?;
        finished?;
        Ok(end)
    }

    fn run_periods(&mut self) -> Result<LoopEnd> {
        let period = u64::from(self.shared.ring.params().period_frames);
        loop {
            // In freewheel or while held, wait here (on the doorbell) until the period may
            // be taken; the doorbell value is read before the checks so no ring is lost.
            let bell = self.shared.ring.doorbell_value();
            self.install_sink();
            self.admit_and_release();
            self.count_started();
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(LoopEnd::Stopped);
            }
            if self.exit_when_idle && self.players_seen > 0 && self.active_play == 0 {
                return Ok(LoopEnd::Idle);
            }
            if !self.released {
                if self.players_seen >= self.wait_clients {
                    self.released = true;
                    // The player that released us was admitted just now: give it one period
                    // to write before the clock takes its first frames.
                    self.deadline_ns = monotonic_ns() + self.period_ns;
                } else {
                    self.shared.ring.wait_doorbell(bell, IDLE_WAIT);
                    continue;
                }
            }
            if self.freewheel {
                if !self.freewheel_ready(period) {
                    self.shared.ring.wait_doorbell(bell, IDLE_WAIT);
                    continue;
                }
            } else if self.sink.as_ref().is_none_or(|s| !s.sink.paces_itself()) {
                // A wav or null sink, or none while the device is lost: the clock paces.
                if self.deadline_ns == 0 {
                    self.deadline_ns = monotonic_ns();
                }
                // Interrupted (a signal): the stop flag is re-checked next period.
                sleep_until_monotonic(self.deadline_ns);
                self.deadline_ns += self.period_ns;
                let now = monotonic_ns();
                // More than a buffer late (the machine stalled us): count it and restart the
                // clock rather than rushing out periods to catch up.
                if now > self.deadline_ns + 4 * self.period_ns {
                    self.shared.ring.count_late_period();
                    self.deadline_ns = now;
                }
            }
            let started = monotonic_ns();
            self.shared.ring.take_period_at(self.hw, &mut self.buf, &mut self.master);
            self.hw += period;
            self.shared.ring.publish_hw_ptr(self.hw);
            if let Some(s) = &mut self.sink
                && let Err(error) = s.sink.write_period(&self.buf)
            {
                if self.exit_on_loss || !s.sink.reopenable() {
                    return Err(error);
                }
                let lost = self.sink.take().expect("matched Some above");
                self.lose(lost, error);
            }
            let xruns = self.past_xruns + self.sink.as_ref().map_or(0, |s| s.sink.xruns());
            self.shared.ring.count_period(xruns, monotonic_ns().saturating_sub(started));
        }
    }

    /// The device went away: hand it back to be closed off this thread, and pace by the
    /// clock from now on (the next deadline is one period from here).
    fn lose(&mut self, lost: Installed, error: crate::Error) {
        // Its list was taken when it was installed: nothing is freed here.
        let Installed { index, list_gen, sink, .. } = lost;
        self.past_xruns += sink.xruns();
        let now = monotonic_ns();
        self.shared.ring.publish_sink_lost(now);
        self.port.give_back(Returned::Lost { index, list_gen, sink, error });
        self.deadline_ns = now + self.period_ns;
    }

    /// Plays on the sink the keeper opened, if it opened one: a device back after a loss, or
    /// a preferred one back while a fallback played (which goes back to be closed).
    ///
    /// A device starts once its buffer is full. Filled from the ring, that buffer would be
    /// taken in one burst, hw_ptr leaping a device buffer ahead of the clock the clients
    /// sleep on: a player sleeping until the period it needs wakes too late and is heard to
    /// gap (seen: a break 9472 frames after every return of a device with an 8192-frame
    /// buffer). So a paced device is first filled with silence, all but the period the loop
    /// writes next: the ring is then taken at the device's pace from the start.
    ///
    /// A sink from a switch (`dmix-stat --sink`) comes with the new preference list: it is
    /// published here, with the sink, and given back with the sink it replaced, whose
    /// closing answers the switch. Clients see nothing but the gap of the new device's
    /// silence, while the old one plays out what it holds.
    fn install_sink(&mut self) {
        let Some(mut new) = self.port.take_installed() else { return };
        let mut old = self.sink.take().map(|old| {
            self.past_xruns += old.sink.xruns();
            old.sink
        });
        if let Some(list) = new.list.take() {
            self.shared.ring.publish_sink_list(&list);
            self.port.give_back(Returned::Switched { old: old.take(), list });
        }
        if let Some(sink) = old {
            self.port.give_back(Returned::Replaced { sink });
        }
        if new.sink.paces_itself() && !self.freewheel {
            let periods = new.sink.device_buffer_frames() / self.shared.ring.params().period_frames;
            self.buf.fill(0);
            for _ in 1..periods {
                if let Err(error) = new.sink.write_period(&self.buf) {
                    if self.exit_on_loss || !new.sink.reopenable() {
                        // The next write fails the same way and ends the loop with it.
                        break;
                    }
                    self.lose(new, error);
                    return;
                }
            }
        }
        self.shared.ring.publish_sink_running(new.index, new.sink.device_buffer_frames());
        self.sink = Some(new);
    }

    /// Freewheel barrier: every player has supplied the period or has finished, every
    /// recorder has read far enough that the period will not overwrite what it has not read,
    /// and at least one player still needs the server to advance. Reads self-reported
    /// positions: a client that lies can only delay the render or lose its own samples.
    fn freewheel_ready(&self, period: u64) -> bool {
        let monitor = u64::from(self.shared.ring.params().monitor_frames);
        for slot in SlotBits(self.active_tee) {
            let read = self.shared.ring.slot(slot).read_pos();
            if self.hw + period > read + monitor {
                return false;
            }
        }
        let mut needed = false;
        for slot in SlotBits(self.active_play & self.counted_play) {
            match self.shared.ring.slot(slot).supply() {
                Supply::EndedAt(end) => needed |= end > self.hw,
                Supply::Until(appl) => {
                    needed = true;
                    if appl < self.hw + period {
                        return false;
                    }
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
            let cap_start = ring.cap_ptr();
            for slot in SlotBits(joins) {
                let start = if capture & (1 << slot) != 0 { cap_start } else { start };
                ring.slot(slot).admit(start);
                if play & (1 << slot) != 0 {
                    self.active_play |= 1 << slot;
                }
                if tee & (1 << slot) != 0 {
                    self.active_tee |= 1 << slot;
                }
            }
            ring.wake_all();
        }
        let leaves = self.shared.leave_mask.swap(0, Ordering::AcqRel);
        if leaves != 0 {
            // A client that said hello and hung up at once may have both its join and its
            // leave posted after we took the joins above: drop the join with the leave, or
            // the next call would admit a slot nobody holds, for ever (seen under load in
            // the connect/disconnect test).
            self.shared.join_mask.fetch_and(!leaves, Ordering::AcqRel);
            for slot in SlotBits(leaves) {
                ring.slot(slot).free();
            }
            self.active_play &= !leaves;
            self.counted_play &= !leaves;
            self.active_tee &= !leaves;
            // Release: the control thread reuses these slots only after it sees them here.
            self.shared.freed_mask.fetch_or(leaves, Ordering::AcqRel);
        }
    }

    /// Counts the players that have written their first frame since the last look, and tells
    /// each from which frame it is counted: the next period to be taken. In freewheel the
    /// barrier waits for it from that period on, so a player that waits for this answer
    /// before writing loses nothing.
    fn count_started(&mut self) {
        let ring = &self.shared.ring;
        let bits = self.active_play & !self.counted_play;
        if bits == 0 {
            return;
        }
        let mut counted = false;
        for slot in SlotBits(bits) {
            if ring.slot(slot).started() {
                self.counted_play |= 1 << slot;
                self.players_seen = self.players_seen.saturating_add(1);
                ring.slot(slot).count_from(self.hw);
                counted = true;
            }
        }
        if counted {
            ring.wake_all();
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
    use std::time::Duration;

    use super::*;
    use crate::error::Error;
    use crate::format::SampleFormat;
    use crate::ring::layout::{SINK_LOST, SINK_RUNNING};
    use crate::ring::{RingParams, ServerRing};
    use crate::sink::Sink;

    /// A sink that paces itself (so the loop never sleeps), lets a client join half-way,
    /// fails once as a device that went away, and records the allocations the loop's thread
    /// made between its 10th and its 500th period.
    struct Probe {
        shared: &'static Core,
        periods: u64,
        allocs_at_10: u64,
        /// Built before the loop runs: the loop's thread must not be charged for it.
        failure: Option<Error>,
        allocs_in_steady_state: &'static AtomicU64,
    }

    impl Sink for Probe {
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
                // So do a loss and the reinstall of the sink.
                300 => return Err(self.failure.take().expect("fails once")),
                350 => {
                    self.shared.leave_mask.fetch_or(1, Ordering::AcqRel);
                }
                500 => {
                    self.allocs_in_steady_state.store(now - self.allocs_at_10, Ordering::Relaxed);
                    self.shared.stop.store(true, Ordering::Relaxed);
                }
                _ => {}
            }
            Ok(())
        }
        fn reopenable(&self) -> bool {
            true
        }
        fn paces_itself(&self) -> bool {
            true
        }
        fn device_buffer_frames(&self) -> u32 {
            128
        }
        fn xruns(&self) -> u64 {
            1
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }

    fn shared() -> &'static Core {
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
        // Leaked: the probe sink, which the loop owns, refers to it.
        Box::leak(Box::new(Core {
            ring: ServerRing::create(params).unwrap(),
            stop: Arc::new(AtomicBool::new(false)),
            join_mask: AtomicU64::new(0),
            leave_mask: AtomicU64::new(0),
            freed_mask: AtomicU64::new(0),
            play_mask: AtomicU64::new(0),
            tee_mask: AtomicU64::new(0),
            capture_mask: AtomicU64::new(0),
            loop_done: AtomicBool::new(false),
        }))
    }

    /// The loop allocates nothing once running: not per period, not admitting or freeing a
    /// slot, not when its sink is lost (handed back to the keeper, the clock paces), not when
    /// a sink is handed over again with a new preference list (a switch). The lost sink comes
    /// back through the port, the status says lost, then running again on the first of the
    /// new list, with the loss counted and the xruns kept; the list comes back to be freed.
    #[test]
    fn period_loop_allocates_nothing_and_survives_a_lost_sink() {
        let shared = shared();
        shared.ring.set_sinks(&["probe"]);
        let allocs: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(u64::MAX)));
        let probe = Probe {
            shared,
            periods: 0,
            allocs_at_10: 0,
            failure: Some(Error::Device { sink: "probe".into(), reason: "write: No such device".into() }),
            allocs_in_steady_state: allocs,
        };
        let (to_loop, returned, port) = super::super::sinks::SinkPort::for_test();
        to_loop.try_send(Installed { index: 0, list_gen: 0, sink: Box::new(probe), list: None }).unwrap();
        let end = std::thread::scope(|s| {
            let period = s.spawn(|| PeriodLoop::new(shared, port, false, 0, false).run().unwrap());
            let Some(Returned::Lost { index, sink, error, .. }) = returned(Duration::from_secs(20)) else {
                panic!("the lost sink was not given back");
            };
            assert_eq!((index, error.to_string()), (0, "probe: write: No such device".to_string()));
            let st = &shared.ring.status().sink.0;
            assert_eq!(st.state.load(Ordering::Acquire), SINK_LOST);
            assert_eq!(shared.ring.status().stats.0.device_buffer_frames.load(Ordering::Relaxed), 0);
            // The clock paces the loop while no sink plays.
            let hw = shared.ring.status().hw_ptr.0.load(Ordering::Acquire);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let seq = &shared.ring.status().wake_seq.0;
            while shared.ring.status().hw_ptr.0.load(Ordering::Acquire) < hw + 4 * 64 {
                assert!(std::time::Instant::now() < deadline, "hw_ptr stopped with the sink");
                crate::sys::futex_wait(seq, seq.load(Ordering::Acquire), Duration::from_millis(50));
            }
            // Back as a switch would hand it: first of a new list (allocated here, not by the
            // loop).
            let list = Some(vec!["probe2".to_string(), "probe".to_string()]);
            to_loop.try_send(Installed { index: 0, list_gen: 1, sink, list }).unwrap();
            period.join().unwrap()
        });
        let Some(Returned::Switched { old: None, list }) = returned(Duration::ZERO) else {
            panic!("the switch was not given back");
        };
        assert_eq!(list, ["probe2", "probe"]);
        assert_eq!(end, LoopEnd::Stopped);
        assert_eq!(allocs.load(Ordering::Relaxed), 0, "the period loop allocated");
        assert_eq!(shared.freed_mask.load(Ordering::Relaxed), 1, "the slot was admitted and freed");
        let st = &shared.ring.status().sink.0;
        assert_eq!(st.state.load(Ordering::Acquire), SINK_RUNNING);
        assert_eq!(st.count.load(Ordering::Relaxed), 2);
        assert_eq!(st.current.load(Ordering::Relaxed), 0);
        let names: Vec<String> = st.names[..3].iter().map(|n| crate::ring::layout::load_name(n)).collect();
        assert_eq!(names, ["probe2", "probe", ""]);
        assert_eq!(st.losses.load(Ordering::Relaxed), 1);
        assert_eq!(shared.ring.status().stats.0.device_buffer_frames.load(Ordering::Relaxed), 128);
        assert_eq!(shared.ring.status().stats.0.xruns.load(Ordering::Relaxed), 2, "xruns of both lives");
    }
}
