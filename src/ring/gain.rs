//! Volume and its arithmetic, the one place that says what a gain does to a sample. Pure:
//! no shared word is touched here (the words are `SlotInfo::gain` and
//! `ServerStats::master_gain`, written by the server through [`ServerSlot`](super::server)
//! and read by [`WriteStream`](super::WriteStream) and the period loop).
//!
//! The rule (docs/PROTOCOL.md): at a steady volume of G dB a sample s of the mix domain
//! becomes `round(s * 10^(G/20))`, computed in f64 and rounded half away from zero; muted is
//! a factor of 0; 0 dB unmuted leaves every sample as it was (no arithmetic at all, so a
//! render at 0 dB is bit-exact). A change is a linear ramp of the factor over [`ramp_frames`]
//! (10 ms), so that it never clicks.

use super::layout::GAIN_MUTED;
use crate::protocol::{MAX_VOLUME_DB, MIN_VOLUME_DB};

/// A volume: dB and mute, as dmix-stat shows and sets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Volume {
    /// dB, [`MIN_VOLUME_DB`]..=[`MAX_VOLUME_DB`].
    pub db: f32,
    /// Muted (the factor is 0 whatever `db` is; unmuting brings `db` back).
    pub muted: bool,
}

impl Volume {
    /// 0 dB, unmuted: what every slot starts with.
    pub const UNITY: Volume = Volume { db: 0.0, muted: false };

    /// Decodes a volume word. Anything the server never writes (a NaN, a dB out of range) is
    /// brought into range rather than trusted.
    pub fn from_word(word: u64) -> Volume {
        let db = f32::from_bits(word as u32);
        let db = if db.is_finite() { db.clamp(MIN_VOLUME_DB, MAX_VOLUME_DB) } else { 0.0 };
        Volume { db, muted: word & GAIN_MUTED != 0 }
    }

    /// The word for this volume.
    pub fn word(self) -> u64 {
        // -0.0 and 0.0 are the same volume: store the one whose word is 0.
        let db = if self.db == 0.0 { 0.0f32 } else { self.db };
        u64::from(db.to_bits()) | if self.muted { GAIN_MUTED } else { 0 }
    }

    /// The factor applied to each sample.
    pub fn factor(self) -> f64 {
        if self.muted {
            0.0
        } else if self.db == 0.0 {
            1.0
        } else {
            10f64.powf(f64::from(self.db) / 20.0)
        }
    }

    /// As dmix-stat prints it: "-6.0 dB", "+3.0 dB, muted".
    pub fn describe(self) -> String {
        let db = if self.db == 0.0 { "0.0 dB".to_string() } else { format!("{:+.1} dB", self.db) };
        if self.muted { format!("{db}, muted") } else { db }
    }
}

/// Frames of a volume ramp at `rate_hz`: 10 ms.
pub fn ramp_frames(rate_hz: u32) -> u64 {
    u64::from(rate_hz / 100).max(1)
}

/// `s` at factor `g`: round half away from zero, saturating.
#[inline]
pub fn scale(s: i32, g: f64) -> i32 {
    (f64::from(s) * g).round() as i32
}

/// The factor of every frame from some point on: `from` before `at`, a linear ramp over
/// `len` frames from `at`, then `to`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GainCurve {
    at: u64,
    from: f64,
    to: f64,
    len: u64,
}

impl GainCurve {
    /// A steady factor.
    pub fn steady(g: f64) -> GainCurve {
        GainCurve { at: 0, from: g, to: g, len: 1 }
    }

    /// From this curve's factor at frame `at`, a ramp to `to` over `len` frames.
    pub fn change(&self, at: u64, to: f64, len: u64) -> GainCurve {
        GainCurve { at, from: self.factor(at), to, len: len.max(1) }
    }

    /// The factor of frame `f`.
    #[inline]
    pub fn factor(&self, f: u64) -> f64 {
        if f < self.at {
            self.from
        } else if f >= self.at + self.len {
            self.to
        } else {
            // Frame at+len-1 is the last of the ramp and lands on `to` exactly.
            let k = (f - self.at + 1) as f64 / self.len as f64;
            self.from + (self.to - self.from) * k
        }
    }

    /// True when every frame from `f` on is left as it is (factor exactly 1).
    pub fn unity_from(&self, f: u64) -> bool {
        self.to == 1.0 && (f >= self.at + self.len || self.from == 1.0)
    }

    /// Scales interleaved frames of `channels` starting at absolute frame `first`, into `out`.
    pub fn apply(&self, first: u64, samples: &[i32], channels: usize, out: &mut Vec<i32>) {
        out.clear();
        if self.unity_from(first) {
            out.extend_from_slice(samples);
            return;
        }
        for (i, frame) in samples.chunks_exact(channels).enumerate() {
            let g = self.factor(first + i as u64);
            out.extend(frame.iter().map(|&s| scale(s, g)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gain_unity_is_exact_and_the_rule_rounds() {
        assert_eq!(Volume::UNITY.word(), 0);
        assert_eq!(Volume::from_word(0), Volume::UNITY);
        assert_eq!(Volume::UNITY.factor(), 1.0);
        for s in [i32::MIN / 256, -3, -1, 0, 1, 7, 8_388_607] {
            assert_eq!(scale(s, 1.0), s);
        }
        // -6.0206 dB halves, rounding half away from zero.
        let half = Volume { db: -6.0206, muted: false }.factor();
        assert!((half - 0.5).abs() < 1e-5, "{half}");
        assert_eq!(scale(1000, half), 500);
        assert_eq!((scale(1001, 0.5), scale(-1001, 0.5)), (501, -501));
        assert_eq!(scale(3, 0.5), 2);
        assert_eq!(scale(-3, 0.5), -2);
        assert_eq!(scale(8_388_607, 0.0), 0);
    }

    #[test]
    fn gain_word_round_trips_and_rejects_garbage() {
        for v in [Volume { db: -6.5, muted: true }, Volume { db: 12.0, muted: false }, Volume::UNITY] {
            assert_eq!(Volume::from_word(v.word()), v);
        }
        assert_eq!(Volume { db: -0.0, muted: false }.word(), 0);
        assert_eq!(Volume::from_word(u64::from(f32::NAN.to_bits())).db, 0.0);
        assert_eq!(Volume::from_word(u64::from(99f32.to_bits())).db, MAX_VOLUME_DB);
        assert_eq!(Volume::from_word(u64::from((-500f32).to_bits())).db, MIN_VOLUME_DB);
        assert_eq!(Volume { db: -3.0, muted: true }.factor(), 0.0);
    }

    #[test]
    fn gain_ramp_is_linear_and_lands_on_the_target() {
        let c = GainCurve::steady(1.0).change(100, 0.0, 4);
        let f: Vec<f64> = (98..106).map(|f| c.factor(f)).collect();
        assert_eq!(f, [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]);
        assert!(!c.unity_from(0));
        // A change in the middle of a ramp starts from where the ramp is.
        let d = c.change(101, 1.0, 2);
        assert_eq!(d.factor(100), 0.5);
        assert_eq!(d.factor(101), 0.75);
        assert_eq!(d.factor(102), 1.0);
        assert!(d.unity_from(103));
        assert!(GainCurve::steady(1.0).unity_from(0));
        assert_eq!(ramp_frames(48000), 480);
        let mut out = Vec::new();
        c.apply(101, &[4, -4, 8, -8], 2, &mut out);
        assert_eq!(out, [2, -2, 2, -2]);
    }
}
