//! What a reader of the monitor ring (what was played) or the capture ring (the shared
//! input) does: dmix-tee and the ALSA plugin's capture stream are adapters over
//! [`ReadStream`].
//!
//! The server writes a ring of frames and then publishes its write pointer (hw_ptr for the
//! monitor, cap_ptr for the capture ring) with Release; a reader loads it with Acquire,
//! copies, and then checks that the server has not lapped it meanwhile (a paced server
//! waits for no reader). It publishes its read position in its slot's `appl_ptr`, which a
//! freewheel server (and a capture loop) waits for.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::client::ClientRing;
use super::layout::{CAPTURE_ENDED, ClientCounters};
use crate::sys::Wake;

/// Which ring a reader copies from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSource {
    /// The monitor ring: what the server played, written up to hw_ptr.
    Monitor,
    /// The capture ring: the shared input of `dmix-serve --capture`, written up to cap_ptr.
    Capture,
}

/// What a reader publishes as its read position while it holds nothing back (a bridge
/// without a listener, a stopped capture PCM): far beyond any frame a server will reach.
pub const READ_EVERYTHING: u64 = u64::MAX >> 1;

/// The read operations of one slot on one ring (a cheap handle).
#[derive(Clone, Copy)]
pub struct ReadStream<'a> {
    ring: &'a ClientRing,
    slot: usize,
    source: ReadSource,
    samples: &'a [AtomicI32],
    frames: u64,
}

impl ClientRing {
    /// The read operations of `slot` on the ring of `source` (its frames are 0 when the
    /// server shares no input).
    pub fn reader(&self, slot: usize, source: ReadSource) -> ReadStream<'_> {
        let p = self.params();
        let (samples, frames) = match source {
            ReadSource::Monitor => (self.monitor_ring(), p.monitor_frames),
            ReadSource::Capture => (self.capture_ring(), p.capture_frames),
        };
        ReadStream { ring: self, slot, source, samples, frames: u64::from(frames) }
    }
}

impl<'a> ReadStream<'a> {
    fn counters(&self) -> &'a ClientCounters {
        self.ring.counters(self.slot)
    }

    /// Which ring this reads.
    pub fn source(&self) -> ReadSource {
        self.source
    }

    /// Frames the ring holds.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames written so far (absolute).
    pub fn write_ptr(&self) -> u64 {
        match self.source {
            ReadSource::Monitor => self.ring.hw_ptr(),
            // Acquire: pairs with the capture thread's Release after writing the frames.
            ReadSource::Capture => self.ring.capture_status().cap_ptr.load(Ordering::Acquire),
        }
    }

    /// True once the write pointer is final (the shared input ended): read it after this,
    /// and everything below it is in the ring.
    pub fn ended(&self) -> bool {
        // Acquire: pairs with the capture loop's Release of the state after its last frames.
        self.source == ReadSource::Capture && self.ring.capture_status().state.load(Ordering::Acquire) == CAPTURE_ENDED
    }

    /// Sleeps on the server's futex until the write pointer reaches `target`, something
    /// changes, or `timeout` (spurious returns are fine: the caller re-checks).
    pub fn wait_until(&self, target: u64, timeout: Duration) -> Wake {
        match self.source {
            ReadSource::Monitor => self.ring.wait_hw_ptr(target, timeout),
            ReadSource::Capture => self.ring.wait_cap_ptr(target, timeout),
        }
    }

    /// As [`ReadStream::wait_until`], but the monitor on the client's own clock first (see
    /// [`ClientRing::sleep_until_hw_ptr`]): the server then has nobody to wake.
    pub fn sleep_until(&self, target: u64, timeout: Duration) -> Wake {
        match self.source {
            ReadSource::Monitor => self.ring.sleep_until_hw_ptr(target, timeout),
            ReadSource::Capture => self.ring.wait_cap_ptr(target, timeout),
        }
    }

    /// Copies the frames from absolute frame `pos` into `out` (whole frames of the server's
    /// channels). Returns how many frames from `pos` on the server may have overwritten
    /// while they were copied (not limited to `out`'s length): those are lost, never to be
    /// handed on as if they were the mix.
    pub fn copy_out(&self, pos: u64, out: &mut [i32]) -> u64 {
        let ch = self.ring.params().channels as usize;
        if self.frames == 0 {
            return 0;
        }
        for (f, frame) in out.chunks_exact_mut(ch).enumerate() {
            let at = ((pos + f as u64) % self.frames) as usize * ch;
            for (o, s) in frame.iter_mut().zip(&self.samples[at..at + ch]) {
                // Relaxed: the Acquire of the write pointer before this call ordered them.
                *o = s.load(Ordering::Relaxed);
            }
        }
        // A paced server waits for no reader and may have lapped us while we copied.
        self.write_ptr().saturating_sub(self.frames).saturating_sub(pos)
    }

    /// Publishes that everything before `pos` was read, then rings the doorbell of a
    /// freewheel server that may be waiting for it.
    pub fn publish_read(&self, pos: u64) {
        self.ring.publish_position(self.slot, pos);
    }

    /// Holds nothing back: nobody waits for this reader (see [`READ_EVERYTHING`]).
    pub fn read_everything(&self) {
        self.publish_read(READ_EVERYTHING);
    }

    /// Counts frames lost to an overrun in the slot's figures.
    pub fn count_lost(&self, frames: u64) {
        // Relaxed: a figure for inspectors.
        self.counters().late_frames.fetch_add(frames, Ordering::Relaxed);
    }
}
