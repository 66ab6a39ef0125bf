//! The ring's parameters, as every process sees them, and where an absolute frame sits.

use crate::error::{Error, Result};
use crate::format::SampleFormat;
use crate::ring::layout::MAX_CHANNELS;

/// Most frames a mix ring may hold (about 350 s at 48 kHz): keeps every size computation far
/// from overflow.
pub const MAX_RING_FRAMES: u32 = 1 << 24;

/// The server's parameters, as every process sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingParams {
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// Channels per frame.
    pub channels: u32,
    /// Device sample format.
    pub format: SampleFormat,
    /// Frames per period.
    pub period_frames: u32,
    /// Frames in the mix ring.
    pub ring_frames: u32,
    /// Frames in the monitor ring.
    pub monitor_frames: u32,
    /// Frames in the capture ring; 0 when the server shares no input.
    pub capture_frames: u32,
    /// Freewheel: the server advances as soon as every player has supplied the period.
    pub freewheel: bool,
}

impl RingParams {
    /// Checks the parameters are within what the layout supports.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::invalid("ring parameters", r));
        if !(1000..=768_000).contains(&self.rate_hz) {
            return bad(format!("rate {} Hz is outside 1000..=768000", self.rate_hz));
        }
        if self.channels == 0 || self.channels as usize > MAX_CHANNELS {
            return bad(format!("{} channels is outside 1..={MAX_CHANNELS}", self.channels));
        }
        if !(16..=65536).contains(&self.period_frames) {
            return bad(format!("period of {} frames is outside 16..=65536", self.period_frames));
        }
        if self.ring_frames < 2 * self.period_frames || self.ring_frames > MAX_RING_FRAMES {
            return bad(format!(
                "buffer of {} frames must hold at least two periods ({} frames) and at most {MAX_RING_FRAMES}",
                self.ring_frames,
                2 * self.period_frames
            ));
        }
        if !self.ring_frames.is_multiple_of(self.period_frames) {
            return bad(format!(
                "buffer of {} frames is not a whole number of {}-frame periods",
                self.ring_frames, self.period_frames
            ));
        }
        if self.monitor_frames < self.period_frames || self.monitor_frames > MAX_RING_FRAMES {
            return bad(format!("monitor of {} frames is out of range", self.monitor_frames));
        }
        if self.capture_frames != 0
            && (self.capture_frames < self.period_frames || self.capture_frames > MAX_RING_FRAMES)
        {
            return bad(format!("capture ring of {} frames is out of range", self.capture_frames));
        }
        Ok(())
    }

    /// Where absolute frame `frame` sits in the sum ring.
    pub(crate) fn sum_cursor(&self, frame: u64) -> Cursor {
        Cursor::new(frame, self.ring_frames, self.channels)
    }

    /// Nanoseconds in one period at this rate.
    pub fn period_ns(&self) -> u64 {
        u64::from(self.period_frames) * 1_000_000_000 / u64::from(self.rate_hz)
    }

    /// Milliseconds in `frames` at this rate.
    pub fn frames_to_ms(&self, frames: u64) -> f64 {
        frames as f64 * 1000.0 / f64::from(self.rate_hz)
    }
}

/// What a [`ClientRing::mix_add`](super::ClientRing::mix_add) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Frames consumed from the input (added, or dropped as late).
    pub frames: usize,
    /// Of those, frames dropped because the server had already taken them.
    pub late_frames: usize,
}

/// An absolute frame's place in a ring: its lap and the index of its first sample. Walking
/// frames with `advance` costs an add and a compare where `frame / ring` and `frame % ring`
/// cost two 64-bit divisions per frame (measured: docs/BENCHMARKS.md, mix kernel).
pub(crate) struct Cursor {
    pub(crate) lap: u32,
    pub(crate) index: usize,
    channels: usize,
    end: usize,
}

impl Cursor {
    pub(crate) fn new(frame: u64, ring_frames: u32, channels: u32) -> Cursor {
        let ring = u64::from(ring_frames);
        let channels = channels as usize;
        // Laps wrap at 2^32 (only equality is compared), frame numbers at 2^64: a status
        // region claiming frames near 2^64 must not make a client panic (found by fuzzing).
        Cursor {
            lap: (frame / ring) as u32,
            index: (frame % ring) as usize * channels,
            channels,
            end: ring_frames as usize * channels,
        }
    }

    pub(crate) fn advance(&mut self) {
        self.index += self.channels;
        if self.index == self.end {
            self.index = 0;
            self.lap = self.lap.wrapping_add(1);
        }
    }
}
