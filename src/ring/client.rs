//! A client's side of the ring: attach and validate the regions, then the typed operations
//! of a player (adding into the mix) and of a reader (copying out of the monitor or capture
//! ring).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::layout::*;
use super::map::Region;
use super::params::{AddOutcome, RingParams};
use crate::error::{Error, Result};
use crate::sys::{self, Wake, monotonic_ns, sleep_until_monotonic};

/// A client's side of the ring: the four mappings, validated.
pub struct ClientRing {
    params: RingParams,
    status: Region,
    mix: Region,
    monitor: Region,
    capture: Region,
    mix_writable: bool,
}

impl ClientRing {
    /// Maps the regions received from the server and checks seals, sizes, magics, versions
    /// and that they agree with `params` (from the welcome message).
    pub fn attach(params: RingParams, fds: [&OwnedFd; 4], mix_writable: bool) -> Result<ClientRing> {
        params.validate()?;
        let status = Region::attach("status region", fds[0].as_fd(), status_bytes(), false)?;
        let mix =
            Region::attach("mix region", fds[1].as_fd(), mix_bytes(params.ring_frames, params.channels), mix_writable)?;
        let monitor = Region::attach(
            "monitor region",
            fds[2].as_fd(),
            monitor_bytes(params.monitor_frames, params.channels),
            false,
        )?;
        let capture = Region::attach(
            "capture region",
            fds[3].as_fd(),
            monitor_bytes(params.capture_frames, params.channels),
            false,
        )?;
        let ring = ClientRing { params, status, mix, monitor, capture, mix_writable };
        ring.check_headers()?;
        Ok(ring)
    }

    fn check_headers(&self) -> Result<()> {
        let version = |what: &str, magic_ok: bool, v: u32| -> Result<()> {
            if !magic_ok {
                return Err(Error::invalid(what, "bad magic: not a dmix region"));
            }
            if v != RING_LAYOUT_VERSION {
                return Err(Error::Version { what: "ring layout", ours: RING_LAYOUT_VERSION, theirs: v });
            }
            Ok(())
        };
        let h = &self.status.block::<StatusBlock>(0)?.header.0;
        // Acquire: pairs with the Release store in `ServerRing::init`.
        let v = h.layout_version.load(Ordering::Acquire);
        version("status region", h.magic.load(Ordering::Relaxed) == STATUS_MAGIC, v)?;
        let p = &self.params;
        let agree = h.rate_hz.load(Ordering::Relaxed) == p.rate_hz
            && h.channels.load(Ordering::Relaxed) == p.channels
            && h.format.load(Ordering::Relaxed) == p.format.code()
            && h.period_frames.load(Ordering::Relaxed) == p.period_frames
            && h.ring_frames.load(Ordering::Relaxed) == p.ring_frames
            && h.monitor_frames.load(Ordering::Relaxed) == p.monitor_frames;
        if !agree {
            return Err(Error::invalid("status region", "parameters disagree with the welcome message"));
        }
        let m: &MixHeader = self.mix.block(0)?;
        let v = m.layout_version.load(Ordering::Acquire);
        version("mix region", m.magic.0.load(Ordering::Relaxed) == MIX_MAGIC, v)?;
        if m.ring_frames.load(Ordering::Relaxed) != p.ring_frames || m.channels.load(Ordering::Relaxed) != p.channels {
            return Err(Error::invalid("mix region", "geometry disagrees with the welcome message"));
        }
        let mon: &MonitorHeader = self.monitor.block(0)?;
        let v = mon.layout_version.load(Ordering::Acquire);
        version("monitor region", mon.magic.load(Ordering::Relaxed) == MONITOR_MAGIC, v)?;
        let cap: &MonitorHeader = self.capture.block(0)?;
        let v = cap.layout_version.load(Ordering::Acquire);
        version("capture region", cap.magic.load(Ordering::Relaxed) == CAPTURE_MAGIC, v)?;
        if cap.monitor_frames.load(Ordering::Relaxed) != p.capture_frames {
            return Err(Error::invalid("capture region", "geometry disagrees with the welcome message"));
        }
        // The views handed out later are infallible: their sizes are checked here, once.
        let samples = |frames: u32| frames as usize * p.channels as usize;
        self.capture.slice::<AtomicI32>(MONITOR_RING_OFFSET, samples(p.capture_frames))?;
        self.mix.slice::<AtomicU64>(MIX_RING_OFFSET, samples(p.ring_frames))?;
        self.monitor.slice::<AtomicI32>(MONITOR_RING_OFFSET, samples(p.monitor_frames))?;
        Ok(())
    }

    /// The parameters.
    pub fn params(&self) -> &RingParams {
        &self.params
    }

    /// The raw status block (read-only mapping: load only), for tests and the fuzzer: the
    /// tools read it through the typed operations ([`ClientRing::writer`],
    /// [`ClientRing::reader`], [`ClientRing::server_view`], [`ClientRing::slot_view`]).
    pub fn status(&self) -> &StatusBlock {
        self.status.block(0).expect("status region size was checked at attach")
    }

    fn mix_header(&self) -> &MixHeader {
        self.mix.block(0).expect("mix region size was checked at attach")
    }

    fn sum_ring(&self) -> &[AtomicU64] {
        let n = self.params.ring_frames as usize * self.params.channels as usize;
        self.mix.slice(MIX_RING_OFFSET, n).expect("mix region size was checked at attach")
    }

    /// The monitor samples (read-only mapping: load only).
    pub(super) fn monitor_ring(&self) -> &[AtomicI32] {
        let n = self.params.monitor_frames as usize * self.params.channels as usize;
        self.monitor.slice(MONITOR_RING_OFFSET, n).expect("monitor region size was checked at attach")
    }

    /// The captured samples (read-only mapping: load only).
    pub(super) fn capture_ring(&self) -> &[AtomicI32] {
        let n = self.params.capture_frames as usize * self.params.channels as usize;
        self.capture.slice(MONITOR_RING_OFFSET, n).expect("capture region size was checked at attach")
    }

    /// The shared input's progress.
    pub(super) fn capture_status(&self) -> &CaptureStatus {
        &self.status().capture.0
    }

    /// Sleeps until the capture pointer reaches `target`, the capture state changes, or
    /// `timeout` (the caller re-checks).
    pub(super) fn wait_cap_ptr(&self, target: u64, timeout: Duration) -> Wake {
        let cs = self.capture_status();
        let seq = cs.cap_seq.load(Ordering::Acquire);
        if cs.cap_ptr.load(Ordering::Acquire) >= target || cs.state.load(Ordering::Acquire) == CAPTURE_ENDED {
            return Wake::Woken;
        }
        sys::futex_wait(&cs.cap_seq, seq, timeout)
    }

    /// Frames the server has taken so far.
    pub fn hw_ptr(&self) -> u64 {
        // Acquire: pairs with the Release store in `ServerRing::publish_hw_ptr`.
        self.status().hw_ptr.0.load(Ordering::Acquire)
    }

    /// The raw slot table entry of `slot`, for tests and the fuzzer (see [`ClientRing::status`]).
    pub fn slot_info(&self, slot: usize) -> &SlotInfo {
        &self.status().slots[slot]
    }

    /// The raw self-reported counters of `slot`, for tests and the fuzzer (see
    /// [`ClientRing::status`]).
    pub fn counters(&self, slot: usize) -> &ClientCounters {
        &self.mix_header().clients[slot]
    }

    /// When the server published the current hw_ptr, on CLOCK_MONOTONIC (0: not yet).
    pub fn hw_published_ns(&self) -> u64 {
        // Relaxed: stored before hw_ptr, whose Release publishes it; a reader that needs the
        // pair consistent reads hw_ptr before and after (as `sleep_until_hw_ptr` does).
        self.status().stats.0.hw_published_ns.load(Ordering::Relaxed)
    }

    /// True once the server has said it is stopping (it hangs up next).
    pub fn server_stopping(&self) -> bool {
        // Acquire: what the server published before it said so (the last hw_ptr, a
        // recorder's last frames) is visible after this.
        self.status().header.0.state.load(Ordering::Acquire) == SERVER_STOPPING
    }

    /// The first frame `slot` may write once the server has admitted it as client
    /// `client_id`; `None` while it has not (or the slot holds someone else).
    pub fn admitted(&self, slot: usize, client_id: u32) -> Option<u64> {
        let info = self.slot_info(slot);
        // Acquire: pairs with the period loop's Release of SLOT_ACTIVE, after which the
        // slot's fields are the admitted client's.
        (info.state.load(Ordering::Acquire) == SLOT_ACTIVE && info.client_id.load(Ordering::Relaxed) == client_id)
            .then(|| info.start_frame.load(Ordering::Relaxed))
    }

    /// The server channel of each of `slot`'s channels, when it came through a sub-device.
    /// A map the server wrote is in range; anything else is ignored, not trusted.
    pub fn channel_map(&self, slot: usize) -> Option<Vec<usize>> {
        let info = self.slot_info(slot);
        // Relaxed: written before the slot's state was published, which `admitted` acquired.
        let n = info.map_len.load(Ordering::Relaxed) as usize;
        let channels = self.params.channels as usize;
        let map: Vec<usize> = info.map.iter().take(n).map(|c| usize::from(c.load(Ordering::Relaxed))).collect();
        (n > 0 && map.iter().all(|&c| c < channels)).then_some(map)
    }

    /// Sleeps until the server has taken frames up to at least `hw_target`, or `timeout`
    /// passes (spurious returns are fine: the caller re-checks).
    pub fn wait_hw_ptr(&self, hw_target: u64, timeout: Duration) -> Wake {
        let s = self.status();
        let period = u64::from(self.params.period_frames);
        let target_seq = hw_target.div_ceil(period) as u32;
        let seq = s.wake_seq.0.load(Ordering::Acquire);
        if self.hw_ptr() >= hw_target {
            return Wake::Woken;
        }
        // Sleep on the bit of the period we need: the server's wake for every other period
        // leaves us asleep.
        sys::futex_wait_bitset(&s.wake_seq.0, seq, timeout, 1 << (target_seq % 32))
    }

    /// As [`ClientRing::wait_hw_ptr`], but on a paced server first sleeps on the client's
    /// own clock until the server should have published `hw_target` (from the time it
    /// published the current hw_ptr, `stats.hw_published_ns`), so that the server has
    /// nobody to wake: its cost stays flat in the number of players. A server running late
    /// is then waited for on the futex as before.
    pub fn sleep_until_hw_ptr(&self, hw_target: u64, timeout: Duration) -> Wake {
        self.sleep_until_hw_ptr_or(hw_target, timeout, None)
    }

    /// [`ClientRing::sleep_until_hw_ptr`] that also wakes when `word` is no longer `seen`
    /// (a player's volume count): the sleep on the client's clock is then a futex wait on
    /// it, with the same deadline.
    pub(super) fn sleep_until_hw_ptr_or(
        &self,
        hw_target: u64,
        timeout: Duration,
        word: Option<(&AtomicU32, u32)>,
    ) -> Wake {
        /// Past the predicted publish: the server's own jitter (it runs SCHED_FIFO).
        const SLACK_NS: u64 = 300_000;
        if !self.params.freewheel {
            let hw = self.hw_ptr();
            if hw >= hw_target {
                return Wake::Woken;
            }
            let published = self.hw_published_ns();
            // A publish between the two loads would make the prediction a period late.
            if published != 0 && self.hw_ptr() == hw {
                let periods = (hw_target - hw).div_ceil(u64::from(self.params.period_frames));
                let due = published + periods * self.params.period_ns() + SLACK_NS;
                let now = monotonic_ns();
                if due > now && due - now < timeout.as_nanos() as u64 {
                    let slept = match word {
                        // Interrupted (a signal): the caller re-checks its stop flag.
                        None => !sleep_until_monotonic(due),
                        Some((word, seen)) => {
                            sys::futex_wait(word, seen, Duration::from_nanos(due - now));
                            word.load(Ordering::Acquire) != seen || monotonic_ns() < due
                        }
                    };
                    if slept || self.hw_ptr() >= hw_target {
                        return Wake::Woken;
                    }
                }
            }
        }
        self.wait_hw_ptr(hw_target, timeout)
    }

    /// Sleeps until anything changes on the status futex, or `timeout`.
    pub fn wait_any(&self, timeout: Duration) -> Wake {
        let s = self.status();
        let seq = s.wake_seq.0.load(Ordering::Acquire);
        sys::futex_wait(&s.wake_seq.0, seq, timeout)
    }

    /// Adds `samples` (interleaved frames at the mix scale) into the sum ring starting at
    /// absolute frame `start`; with `negate`, subtracts them (retraction). Stops early at the
    /// first frame the ring cannot hold yet (a lap ahead: the caller's window was wrong);
    /// frames the server already took are dropped and counted as late.
    pub fn mix_add(&self, start: u64, samples: &[i32], negate: bool) -> AddOutcome {
        self.add(start, samples, negate, None)
    }

    /// [`ClientRing::mix_add`] that also stores each sample it visits in `history` at its
    /// place in the ring (`history` has the sum ring's length, one i32 per sample), in the
    /// same pass: a player keeps what it queued, for retraction, without copying it again.
    pub(super) fn mix_add_keeping(&self, start: u64, samples: &[i32], history: &mut [i32]) -> AddOutcome {
        self.add(start, samples, false, Some(history))
    }

    /// Subtracts frames `[from, end)` again, as [`ClientRing::mix_add_keeping`] kept them in
    /// `history`: newest frame first, so that whatever the server takes meanwhile (oldest
    /// first) is a clean prefix of what was queued, never a hole followed by samples meant
    /// to be taken back. Frames the server took already are skipped by the lap tags.
    pub(super) fn retract(&self, from: u64, end: u64, history: &[i32]) {
        let ch = self.params.channels as usize;
        let ring = u64::from(self.params.ring_frames);
        for f in (from..end).rev() {
            let at = (f % ring) as usize * ch;
            if let Some(frame) = history.get(at..at + ch) {
                self.mix_add(f, frame, true);
            }
        }
    }

    fn add(&self, start: u64, samples: &[i32], negate: bool, mut history: Option<&mut [i32]>) -> AddOutcome {
        debug_assert!(self.mix_writable, "mix_add on a read-only mix mapping");
        let p = &self.params;
        let ch = p.channels as usize;
        let ring = self.sum_ring();
        let mut out = AddOutcome::default();
        let mut at = p.sum_cursor(start);
        'frames: for frame in samples.chunks_exact(ch) {
            let (lap, base) = (at.lap, at.index);
            at.advance();
            for (c, &s) in frame.iter().enumerate() {
                if let Some(kept) = history.as_deref_mut().and_then(|h| h.get_mut(base + c)) {
                    *kept = s;
                }
                let s = if negate { s.wrapping_neg() } else { s };
                let slot = &ring[base + c];
                // Guess an empty slot of our lap instead of loading first: the line was last
                // written by another core, and a load then a CAS fetch it twice (shared, then
                // owned); a failed CAS brings it owned with the value to retry with.
                let mut cur = slot.load(Ordering::Relaxed);
                loop {
                    let (tag, sum) = slot_parts(cur);
                    if tag != lap {
                        if tag == lap.wrapping_sub(1) {
                            // Still the previous lap's frame: not ours to write yet.
                            break 'frames;
                        }
                        // Taken already: never let it land a lap later.
                        out.late_frames += 1;
                        out.frames += 1;
                        continue 'frames;
                    }
                    if s == 0 {
                        break;
                    }
                    // wrapping_add: only another client scribbling could push a sum of at
                    // most MAX_SLOTS full-scale samples near the i32 limits.
                    match slot.compare_exchange_weak(
                        cur,
                        slot_word(lap, sum.wrapping_add(s)),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break,
                        Err(now) => cur = now,
                    }
                }
            }
            out.frames += 1;
        }
        out
    }

    /// Publishes `slot`'s position (a player: frames before it are in the ring; a reader:
    /// frames before it were read), then rings the doorbell of a freewheel server waiting
    /// for it: the one place a client says "publish, then ring".
    pub(super) fn publish_position(&self, slot: usize, pos: u64) {
        // Release: pairs with the freewheel barrier's Acquire of appl_ptr (`ServerSlot::supply`,
        // `ServerSlot::read_pos`): a server that sees `pos` sees every add or read before it.
        self.counters(slot).appl_ptr.store(pos, Ordering::Release);
        if self.freewheel() {
            self.ring_doorbell();
        }
    }

    /// Rings the freewheel doorbell after publishing progress.
    pub fn ring_doorbell(&self) {
        let d = &self.mix_header().doorbell.0;
        d.fetch_add(1, Ordering::Release);
        sys::futex_wake(d);
    }

    /// True when the server runs in freewheel.
    pub fn freewheel(&self) -> bool {
        self.params.freewheel
    }

    /// Frames the server's device holds beyond hw_ptr: an ALSA sink's buffer, which the
    /// server keeps full (0 for wav and null sinks). A frame taken at hw_ptr is heard this
    /// much later.
    pub fn device_buffer_frames(&self) -> u64 {
        self.status().stats.0.device_buffer_frames.load(Ordering::Relaxed)
    }

    /// The hw_ptr at which the frames before `end` have been heard: paced, once the device
    /// has played its buffer after them; in freewheel (no listener) once they were taken.
    pub fn heard_at(&self, end: u64) -> u64 {
        if self.freewheel() { end } else { end.saturating_add(self.device_buffer_frames()) }
    }
}
