//! What a process that adds into the mix does with the words of its slot: dmix-play's
//! `Player` and the ALSA plugin's playback stream are adapters over [`WriteStream`].
//!
//! The words and what each means to the server (`ClientCounters`, the mix region):
//! `appl_ptr` is how far the client has supplied (the freewheel barrier waits for it),
//! `flags`/`end_ptr` say "ended at frame X" (the server stops waiting there), `started` says
//! it is a player at all; `latency_frames`, `late_frames`, `underruns` and `peak` are
//! figures for inspectors. The orderings are chosen here, once.

use std::sync::atomic::Ordering;

use super::client::ClientRing;
use super::layout::{CLIENT_DRAINING, ClientCounters, NOT_PLAYING};
use super::params::{AddOutcome, RingParams};

/// What a player added for the last ring's worth of frames, laid out as the sum ring (one
/// i32 per sample, at the sample's place), so that it can take it back again (retraction)
/// or keep it to add again later (a paused PCM).
pub struct History {
    samples: Vec<i32>,
    ring_frames: u64,
    channels: usize,
}

impl History {
    /// An empty history for a ring of these parameters (allocates the ring's size once).
    pub fn new(params: &RingParams) -> History {
        History {
            samples: vec![0; params.ring_frames as usize * params.channels as usize],
            ring_frames: u64::from(params.ring_frames),
            channels: params.channels as usize,
        }
    }

    /// Appends frames `[from, end)` as they were added (at most the last ring's worth of
    /// them is still there), oldest first.
    pub fn copy_into(&self, from: u64, end: u64, out: &mut Vec<i32>) {
        let ch = self.channels;
        for f in from.max(end.saturating_sub(self.ring_frames))..end {
            let at = (f % self.ring_frames) as usize * ch;
            out.extend_from_slice(&self.samples[at..at + ch]);
        }
    }
}

/// The write operations of one slot (a cheap handle: a ring and a slot index).
#[derive(Clone, Copy)]
pub struct WriteStream<'a> {
    ring: &'a ClientRing,
    slot: usize,
}

impl ClientRing {
    /// The write operations of `slot`; the mix region must be mapped writable (players).
    pub fn writer(&self, slot: usize) -> WriteStream<'_> {
        WriteStream { ring: self, slot }
    }
}

impl<'a> WriteStream<'a> {
    fn counters(&self) -> &'a ClientCounters {
        self.ring.counters(self.slot)
    }

    /// The ring's parameters.
    pub fn params(&self) -> &'a RingParams {
        self.ring.params()
    }

    /// Frames the server has taken so far.
    pub fn hw_ptr(&self) -> u64 {
        self.ring.hw_ptr()
    }

    /// True when the server runs in freewheel.
    pub fn freewheel(&self) -> bool {
        self.ring.freewheel()
    }

    /// Tells inspectors how far ahead of hw_ptr the client writes.
    pub fn set_latency(&self, frames: u64) {
        // Relaxed: a figure for inspectors; nothing is ordered by it.
        self.counters().latency_frames.store(frames.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    }

    /// Says the client has written its first frame: from now on it is a player for
    /// `--wait-clients`, `--exit-when-idle` and the freewheel barrier.
    pub fn begin(&self) {
        // Release: pairs with the period loop's Acquire in `count_started`.
        self.counters().started.store(1, Ordering::Release);
        // Wakes a server held for --wait-clients, or a freewheel server at its barrier.
        self.ring.ring_doorbell();
    }

    /// In freewheel, the frame from which the server counts this client as a player, once it
    /// has seen [`WriteStream::begin`].
    pub fn playing_from(&self) -> Option<u64> {
        // Acquire: pairs with the period loop's Release of `playing_from`.
        let from = self.ring.slot_info(self.slot).playing_from.load(Ordering::Acquire);
        (from != NOT_PLAYING).then_some(from)
    }

    /// Adds `samples` (interleaved frames at the mix scale) at absolute frame `at`, as
    /// [`ClientRing::mix_add`] does, and keeps each in `history` in the same pass, for a
    /// later retraction; late frames are counted in the slot's figures.
    pub fn add(&self, at: u64, samples: &[i32], history: &mut History) -> AddOutcome {
        let out = self.ring.mix_add_keeping(at, samples, &mut history.samples);
        if out.late_frames > 0 {
            // Relaxed: a figure for inspectors.
            self.counters().late_frames.fetch_add(out.late_frames as u64, Ordering::Relaxed);
        }
        out
    }

    /// Subtracts frames `[from, end)` again, as `history` kept them: newest frame first, so
    /// that whatever the server takes meanwhile (oldest first) is a clean prefix of what was
    /// queued, never a hole followed by samples meant to be taken back. Frames the server
    /// took already are skipped by the lap tags.
    pub fn retract(&self, from: u64, end: u64, history: &History) {
        self.ring.retract(from, end, &history.samples);
    }

    /// Counts one underrun (the client fell behind hw_ptr).
    pub fn count_underrun(&self) {
        // Relaxed: a figure for inspectors.
        self.counters().underruns.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports the recent peak of each channel (mix scale, absolute value).
    pub fn set_peaks(&self, peaks: &[u32]) {
        for (peak, &m) in self.counters().peak.iter().zip(peaks) {
            // Relaxed: a figure for inspectors.
            peak.store(m, Ordering::Relaxed);
        }
    }

    /// Publishes that frames before `end` are in the ring, then rings the doorbell of a
    /// freewheel server waiting for them.
    pub fn publish(&self, end: u64) {
        self.ring.publish_position(self.slot, end);
    }

    /// Says "ended at `frame`": nothing comes after it until [`WriteStream::resume_at`].
    /// The server waits for nothing past it (a draining player, a stopped or paused PCM).
    pub fn ended_at(&self, frame: u64) {
        let c = self.counters();
        c.end_ptr.store(frame, Ordering::Relaxed);
        c.appl_ptr.store(frame, Ordering::Release);
        // Release: the server that sees DRAINING (Acquire) sees end_ptr and every add.
        c.flags.store(CLIENT_DRAINING, Ordering::Release);
        if self.ring.freewheel() {
            self.ring.ring_doorbell();
        }
    }

    /// Playing again after [`WriteStream::ended_at`]: supplied up to `frame`, and a freewheel
    /// server waits for the rest.
    pub fn resume_at(&self, frame: u64) {
        let c = self.counters();
        c.appl_ptr.store(frame, Ordering::Release);
        // Release: the server reads flags first (Acquire), then appl_ptr.
        c.flags.store(0, Ordering::Release);
        if self.ring.freewheel() {
            self.ring.ring_doorbell();
        }
    }

    /// The hw_ptr at which the frames before `end` have been heard (see
    /// [`ClientRing::heard_at`]).
    pub fn heard_at(&self, end: u64) -> u64 {
        self.ring.heard_at(end)
    }

    /// Frames the server's device holds beyond hw_ptr.
    pub fn device_buffer_frames(&self) -> u64 {
        self.ring.device_buffer_frames()
    }
}
