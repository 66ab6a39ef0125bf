//! The capture loop: a thread of its own (not the period loop) that reads the shared input a
//! period at a time into the capture ring and advances the capture pointer, waking the
//! readers with one syscall. Readers (`dmix-tee --source capture`) copy out of the ring at
//! their own pace, as they do from the monitor.
//!
//! Pacing: an ALSA source paces itself; a file is paced by the monotonic clock, or, in
//! freewheel, by its readers: the next period is read only when every reader has room for
//! it, so each gets every frame. A freewheel capture with no reader waits (nobody needs it).
//! `--wait-readers N` holds the first period until N readers were admitted, so that readers
//! started together all get the input from its first frame.
//!
//! Per-reader work is reading each reader's self-reported position, in freewheel only; a
//! reader that lies can delay the capture or lose its own frames, nothing else.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Core;
use crate::capture::Source;
use crate::error::Result;
use crate::protocol::Role;
use crate::ring::layout::{CAPTURE_ENDED, CAPTURE_RUNNING, SlotBits};
use crate::sys::{monotonic_ns, sleep_until_monotonic};

/// How long a held or freewheel capture sleeps before re-checking its stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// The capture loop's state.
pub(super) struct CaptureLoop<'a> {
    shared: &'a Core,
    source: &'a mut dyn Source,
    buf: Vec<i32>,
    cap: u64,
    wait_readers: u32,
}

impl<'a> CaptureLoop<'a> {
    pub(super) fn new(shared: &'a Core, source: &'a mut dyn Source, wait_readers: u32) -> Self {
        let p = shared.ring.params();
        CaptureLoop {
            shared,
            source,
            buf: vec![0; p.period_frames as usize * p.channels as usize],
            cap: 0,
            wait_readers,
        }
    }

    /// Readers admitted and not gone (slot bits).
    fn readers(&self) -> u64 {
        let ring = &self.shared.ring;
        let mut active = 0;
        for slot in SlotBits(self.shared.capture_mask.load(Ordering::Acquire)) {
            if ring.slot(slot).is_active(Role::Capture.code()) {
                active |= 1 << slot;
            }
        }
        active
    }

    /// Freewheel: every reader has read far enough that the next period overwrites nothing
    /// it has not read, and there is at least one reader.
    fn readers_have_room(&self, readers: u64) -> bool {
        let p = self.shared.ring.params();
        let ring_frames = u64::from(p.capture_frames);
        for slot in SlotBits(readers) {
            let read = self.shared.ring.slot(slot).read_pos();
            if self.cap + u64::from(p.period_frames) > read + ring_frames {
                return false;
            }
        }
        readers != 0
    }

    /// Runs until the input ends, the server stops, or the source fails (the error is
    /// returned after the readers were told the input ended).
    pub(super) fn run(&mut self) -> Result<()> {
        let ring = &self.shared.ring;
        let p = *ring.params();
        let ch = p.channels as usize;
        let period = p.period_frames as usize;
        let period_ns = p.period_ns();
        let paced_by_clock = !p.freewheel && !self.source.paces_itself();
        let mut released = self.wait_readers == 0 && !p.freewheel;
        let mut deadline_ns = 0u64;
        ring.set_capture_state(CAPTURE_RUNNING);
        let result = loop {
            let bell = ring.doorbell_value();
            if self.shared.stop.load(Ordering::Relaxed) || self.shared.loop_done.load(Ordering::Acquire) {
                break Ok(());
            }
            let readers = self.readers();
            if !released {
                // A freewheel capture also waits for its first reader: without one it would
                // run through a file in an instant with nobody listening.
                if readers.count_ones() >= self.wait_readers.max(u32::from(p.freewheel)) {
                    released = true;
                } else {
                    ring.wait_doorbell(bell, IDLE_WAIT);
                    continue;
                }
            }
            if p.freewheel {
                if !self.readers_have_room(readers) {
                    ring.wait_doorbell(bell, IDLE_WAIT);
                    continue;
                }
            } else if paced_by_clock {
                let now = monotonic_ns();
                if deadline_ns == 0 || now > deadline_ns + 4 * period_ns {
                    // First period, or the machine stalled us: restart the clock.
                    deadline_ns = now;
                }
                // Interrupted (a signal): the stop flag is re-checked next period.
                sleep_until_monotonic(deadline_ns);
                deadline_ns += period_ns;
            }
            let n = match self.source.read_period(&mut self.buf) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if n > 0 {
                ring.publish_capture(self.cap, &self.buf[..n * ch]);
                self.cap += n as u64;
            }
            ring.set_capture_overruns(self.source.overruns());
            if n < period {
                break Ok(());
            }
        };
        // Readers drain what was captured, then end.
        ring.set_capture_state(CAPTURE_ENDED);
        result
    }
}
