//! What a process that adds into the mix does with the words of its slot: dmix-play's
//! `Player` and the ALSA plugin's playback stream are adapters over [`WriteStream`].
//!
//! The words and what each means to the server (`ClientCounters`, the mix region):
//! `appl_ptr` is how far the client has supplied (the freewheel barrier waits for it),
//! `flags`/`end_ptr` say "ended at frame X" (the server stops waiting there), `started` says
//! it is a player at all; `latency_frames`, `late_frames`, `underruns` and `peak` are
//! figures for inspectors. The orderings are chosen here, once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::client::ClientRing;
use super::gain::{GainCurve, Volume, ramp_frames, scale};
use super::layout::{CLIENT_DRAINING, ClientCounters, NOT_PLAYING};
use super::params::{AddOutcome, RingParams};
use crate::sys::Wake;

/// What a player added for the last ring's worth of frames, laid out as the sum ring (one
/// i32 per sample, at the sample's place), so that it can take it back again (retraction);
/// what it was given before its volume was applied, to add it again at a new volume, or
/// later (a paused PCM); and the volume it follows.
pub struct History {
    /// As added into the ring (at the volume of the moment).
    samples: Vec<i32>,
    /// As given to [`WriteStream::add`].
    source: Vec<i32>,
    ring_frames: u64,
    channels: usize,
    /// The factor of every frame added from now on, and of those queued.
    gain: GainCurve,
    /// The slot's `gain_seq` when the volume was last read (None: never).
    seen_seq: Option<u32>,
    /// Frames before this one were added (the end of what is queued).
    end: u64,
    scratch: Vec<i32>,
}

impl History {
    /// An empty history for a ring of these parameters (allocates the ring's size once).
    pub fn new(params: &RingParams) -> History {
        let len = params.ring_frames as usize * params.channels as usize;
        History {
            samples: vec![0; len],
            source: vec![0; len],
            ring_frames: u64::from(params.ring_frames),
            channels: params.channels as usize,
            gain: GainCurve::steady(1.0),
            seen_seq: None,
            end: 0,
            scratch: Vec::new(),
        }
    }

    /// Appends frames `[from, end)` as they were given to [`WriteStream::add`], before the
    /// volume (at most the last ring's worth of them is still there), oldest first: adding
    /// them again applies the volume of that moment.
    pub fn copy_into(&self, from: u64, end: u64, out: &mut Vec<i32>) {
        let ch = self.channels;
        for f in from.max(end.saturating_sub(self.ring_frames))..end {
            let at = (f % self.ring_frames) as usize * ch;
            out.extend_from_slice(&self.source[at..at + ch]);
        }
    }

    /// Frames `[from, end)` were taken back out of the ring: nothing of them is queued.
    fn forget(&mut self, from: u64, end: u64) {
        let ch = self.channels;
        for f in from.max(end.saturating_sub(self.ring_frames))..end {
            let at = (f % self.ring_frames) as usize * ch;
            self.samples[at..at + ch].fill(0);
            self.source[at..at + ch].fill(0);
        }
        if end >= self.end {
            self.end = self.end.min(from);
        }
    }

    /// The volume followed so far, to sleep on without the History
    /// ([`WriteStream::sleep_until_hw_ptr_marked`], [`WriteStream::wait_volume_or`]).
    pub fn volume_mark(&self) -> VolumeMark {
        VolumeMark(self.seen_seq)
    }

    /// Keeps `samples`, interleaved frames from absolute frame `at`, as given.
    fn keep_source(&mut self, at: u64, samples: &[i32]) {
        let ch = self.channels;
        let mut f = at;
        let mut rest = samples;
        while !rest.is_empty() {
            let i = (f % self.ring_frames) as usize;
            let n = (self.ring_frames as usize - i).min(rest.len() / ch);
            self.source[i * ch..(i + n) * ch].copy_from_slice(&rest[..n * ch]);
            rest = &rest[n * ch..];
            f += n as u64;
        }
    }
}

/// The volume a [`History`] last followed ([`History::volume_mark`]): what a thread that
/// does not hold the History (the ALSA plugin's poll waiter, while the application's thread
/// may be adding) sleeps on, to wake when there is a new volume to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeMark(Option<u32>);

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
    /// [`ClientRing::mix_add`] does, at the volume the server gives the slot, and keeps each
    /// in `history` in the same pass, for a later retraction or a change of volume; late
    /// frames are counted in the slot's figures. A new volume is followed first
    /// ([`WriteStream::follow_volume`]).
    pub fn add(&self, at: u64, samples: &[i32], history: &mut History) -> AddOutcome {
        self.follow_volume(history);
        let out = if history.gain.unity_from(at) {
            self.ring.mix_add_keeping(at, samples, &mut history.samples)
        } else {
            let mut scaled = std::mem::take(&mut history.scratch);
            history.gain.apply(at, samples, history.channels, &mut scaled);
            let out = self.ring.mix_add_keeping(at, &scaled, &mut history.samples);
            history.scratch = scaled;
            out
        };
        history.keep_source(at, &samples[..out.frames * history.channels]);
        history.end = history.end.max(at + out.frames as u64);
        if out.late_frames > 0 {
            // Relaxed: a figure for inspectors.
            self.counters().late_frames.fetch_add(out.late_frames as u64, Ordering::Relaxed);
        }
        out
    }

    /// The volume the server gives this slot.
    pub fn volume(&self) -> Volume {
        // Relaxed: one word, read whole.
        Volume::from_word(self.ring.slot_info(self.slot).gain.load(Ordering::Relaxed))
    }

    fn gain_seq(&self) -> u32 {
        // Acquire: pairs with the server's Release in `ServerSlot::set_volume`: the volume
        // read after it is at least as new as the count.
        self.ring.slot_info(self.slot).gain_seq.load(Ordering::Acquire)
    }

    /// Follows a new volume from the server, if there is one: from a period past hw_ptr (the
    /// server may be taking the current one), every frame queued is changed in place to the
    /// new volume, ramped over 10 ms, and so is everything added later. The change is one
    /// delta per sample, oldest first, each a single atomic add: the server, taking frames
    /// meanwhile, finds each at the old volume or the new, never missing. Frames it took
    /// first are skipped (they played at the old volume) and are not counted late. Returns
    /// true when the volume changed.
    pub fn follow_volume(&self, h: &mut History) -> bool {
        let seq = self.gain_seq();
        if h.seen_seq == Some(seq) {
            return false;
        }
        let g = self.volume().factor();
        if h.seen_seq.replace(seq).is_none() {
            // The first look: nothing is queued, and the volume holds from the first frame.
            h.gain = GainCurve::steady(g);
            return true;
        }
        let p = self.params();
        let from = (self.hw_ptr() + u64::from(p.period_frames)).max(h.end.saturating_sub(h.ring_frames));
        h.gain = h.gain.change(from, g, ramp_frames(p.rate_hz));
        if from >= h.end {
            return true;
        }
        let ch = h.channels;
        let mut delta = std::mem::take(&mut h.scratch);
        delta.clear();
        for f in from..h.end {
            let g = h.gain.factor(f);
            let at = (f % h.ring_frames) as usize * ch;
            for c in at..at + ch {
                let new = scale(h.source[c], g);
                delta.push(new.wrapping_sub(h.samples[c]));
                h.samples[c] = new;
            }
        }
        self.ring.mix_add(from, &delta, false);
        h.scratch = delta;
        true
    }

    /// Sleeps until the server has taken frames up to `hw_target` (see
    /// [`ClientRing::sleep_until_hw_ptr`]), or until the volume is no longer the one `mark`
    /// ([`History::volume_mark`]) saw (then [`WriteStream::follow_volume`] has work), or
    /// `timeout`. The History need not be held meanwhile.
    pub fn sleep_until_hw_ptr_marked(&self, hw_target: u64, timeout: Duration, mark: VolumeMark) -> Wake {
        let seen = mark.0.unwrap_or_else(|| self.gain_seq());
        if self.gain_seq() != seen {
            return Wake::Woken;
        }
        self.ring.sleep_until_hw_ptr_or(hw_target, timeout, Some((&self.ring.slot_info(self.slot).gain_seq, seen)))
    }

    /// Sleeps until the volume is no longer the one `mark` saw, or `own` (a word of the
    /// caller's process, woken with [`crate::sys::futex_wake`]) no longer holds `own_seen`,
    /// or `timeout`: a waiter with nothing to wait for on the server's clock that must still
    /// follow a new volume at once.
    pub fn wait_volume_or(&self, own: &AtomicU32, own_seen: u32, mark: VolumeMark, timeout: Duration) -> Wake {
        let seen = mark.0.unwrap_or_else(|| self.gain_seq());
        if self.gain_seq() != seen {
            return Wake::Woken;
        }
        crate::sys::futex_wait_either((own, own_seen), (&self.ring.slot_info(self.slot).gain_seq, seen), timeout)
    }

    /// Sleeps until the volume is no longer the one `mark` saw, or `timeout`, or a wake from
    /// [`WriteStream::wake_volume_waiters`]: a thread whose only work is to follow the volume.
    pub fn wait_volume(&self, mark: VolumeMark, timeout: Duration) -> Wake {
        let seen = mark.0.unwrap_or_else(|| self.gain_seq());
        if self.gain_seq() != seen {
            return Wake::Woken;
        }
        crate::sys::futex_wait(&self.ring.slot_info(self.slot).gain_seq, seen, timeout)
    }

    /// Wakes the threads sleeping on this slot's volume word (only this client's sleep there):
    /// one of ours that must stop waiting, such as a follower told to quit. A wake reads the
    /// word, so the read-only mapping does.
    pub fn wake_volume_waiters(&self) {
        crate::sys::futex_wake(&self.ring.slot_info(self.slot).gain_seq);
    }

    /// True when the volume is no longer the one `mark` saw (never, before a first look).
    pub fn volume_changed_since(&self, mark: VolumeMark) -> bool {
        mark.0.is_some_and(|s| s != self.gain_seq())
    }

    /// Subtracts frames `[from, end)` again, as `history` kept them: newest frame first, so
    /// that whatever the server takes meanwhile (oldest first) is a clean prefix of what was
    /// queued, never a hole followed by samples meant to be taken back. Frames the server
    /// took already are skipped by the lap tags. They are no longer queued: a later change
    /// of volume leaves them alone (copy them out first to add them again later).
    pub fn retract(&self, from: u64, end: u64, history: &mut History) {
        self.ring.retract(from, end, &history.samples);
        history.forget(from, end);
    }

    /// Counts one underrun (the client fell behind hw_ptr).
    pub fn count_underrun(&self) {
        // Relaxed: a figure for inspectors.
        self.counters().underruns.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports the recent peak of each channel (mix scale, absolute value), as given: it is
    /// shown at the slot's volume (a muted client's meter falls to silence).
    pub fn set_peaks(&self, peaks: &[u32]) {
        let g = self.volume().factor();
        for (peak, &m) in self.counters().peak.iter().zip(peaks) {
            let m = if g == 1.0 { m } else { (f64::from(m) * g).round().min(f64::from(u32::MAX)) as u32 };
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
