//! Sample formats and the one conversion rule between them and the mix scale.
//!
//! Everything that enters the ring is first brought to the *mix scale*: a signed integer
//! at 24-bit full scale held in an `i32` ([`MIX_MIN`]..=[`MIX_MAX`]). The ring sums at that
//! scale in 32 bits, so up to 2^31 / 2^23 = 256 full-scale clients can never wrap it
//! (the slot count is bounded far below that). The rule, documented in docs/PROTOCOL.md:
//!
//! | format   | into the mix scale                      | out of the mix scale (after clamping) |
//! |----------|-----------------------------------------|---------------------------------------|
//! | S16_LE   | `s << 8` (exact)                        | `m >> 8` (exact for 16-bit inputs)    |
//! | S32_LE   | `(s + 128) >> 8`, rounded to 24 bits    | `m << 8`                              |
//! | FLOAT_LE | `round(x * 2^23)`, clamped; NaN is 0    | `m / 2^23` (exact in an f32)          |
//!
//! So a mix of S16 inputs played to an S16 sink is the clamped integer sum, bit for bit.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The largest sample at the mix scale (24-bit full scale).
pub const MIX_MAX: i32 = (1 << 23) - 1;
/// The smallest sample at the mix scale.
pub const MIX_MIN: i32 = -(1 << 23);
/// 2^23: the float full scale at the mix scale.
const MIX_SCALE_F: f64 = 8_388_608.0;

/// A PCM sample format, as ALSA names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    /// Signed 16-bit little-endian.
    S16Le,
    /// Signed 32-bit little-endian.
    S32Le,
    /// IEEE 754 single precision little-endian, full scale ±1.0.
    FloatLe,
}

impl SampleFormat {
    /// Every format, in the order the help text lists them.
    pub const ALL: [SampleFormat; 3] = [SampleFormat::S16Le, SampleFormat::S32Le, SampleFormat::FloatLe];

    /// ALSA's name for the format.
    pub fn name(self) -> &'static str {
        match self {
            SampleFormat::S16Le => "S16_LE",
            SampleFormat::S32Le => "S32_LE",
            SampleFormat::FloatLe => "FLOAT_LE",
        }
    }

    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::S16Le => 2,
            SampleFormat::S32Le | SampleFormat::FloatLe => 4,
        }
    }

    /// The code used on the wire and in the status region.
    pub fn code(self) -> u32 {
        match self {
            SampleFormat::S16Le => 1,
            SampleFormat::S32Le => 2,
            SampleFormat::FloatLe => 3,
        }
    }

    /// Decodes a wire code; `None` for anything unknown.
    pub fn from_code(code: u32) -> Option<SampleFormat> {
        SampleFormat::ALL.into_iter().find(|f| f.code() == code)
    }

    /// Brings one little-endian sample of this format (exactly `self.bytes()` bytes) to the
    /// mix scale.
    pub fn le_bytes_to_mix(self, b: &[u8]) -> i32 {
        match self {
            SampleFormat::S16Le => s16_to_mix(i16::from_le_bytes([b[0], b[1]])),
            SampleFormat::S32Le => s32_to_mix(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            SampleFormat::FloatLe => f32_to_mix(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        }
    }

    /// Writes one mix-scale sample (already clamped) in this format into `out`
    /// (exactly `self.bytes()` bytes).
    pub fn mix_to_le_bytes(self, m: i32, out: &mut [u8]) {
        match self {
            SampleFormat::S16Le => out.copy_from_slice(&mix_to_s16(m).to_le_bytes()),
            SampleFormat::S32Le => out.copy_from_slice(&mix_to_s32(m).to_le_bytes()),
            SampleFormat::FloatLe => out.copy_from_slice(&mix_to_f32(m).to_le_bytes()),
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SampleFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<SampleFormat> {
        let up = s.to_ascii_uppercase();
        let f = match up.as_str() {
            "S16_LE" | "S16" | "S16LE" => SampleFormat::S16Le,
            "S32_LE" | "S32" | "S32LE" => SampleFormat::S32Le,
            "FLOAT_LE" | "FLOAT" | "F32" | "F32LE" | "FLOAT32" => SampleFormat::FloatLe,
            _ => {
                return Err(Error::invalid(
                    format!("format '{s}'"),
                    "unknown sample format (use S16_LE, S32_LE or FLOAT_LE)",
                ));
            }
        };
        Ok(f)
    }
}

/// Clamps a sum to the mix scale: the output never wraps.
#[inline]
pub fn clamp_mix(sum: i32) -> i32 {
    sum.clamp(MIX_MIN, MIX_MAX)
}

/// S16 to the mix scale: exact.
#[inline]
pub fn s16_to_mix(s: i16) -> i32 {
    i32::from(s) << 8
}

/// S32 to the mix scale, rounded to nearest (ties up) and clamped.
#[inline]
pub fn s32_to_mix(s: i32) -> i32 {
    // Widen first: i32::MAX + 128 would wrap.
    ((i64::from(s) + 128) >> 8).clamp(i64::from(MIX_MIN), i64::from(MIX_MAX)) as i32
}

/// Float (full scale ±1.0) to the mix scale, rounded to nearest and clamped; NaN is silence.
#[inline]
pub fn f32_to_mix(x: f32) -> i32 {
    f64_to_mix(f64::from(x))
}

/// Float (full scale ±1.0) to the mix scale, rounded to nearest and clamped; NaN is silence.
#[inline]
pub fn f64_to_mix(x: f64) -> i32 {
    if x.is_nan() {
        return 0;
    }
    // `as` saturates, and the clamp bounds it to 24 bits.
    ((x * MIX_SCALE_F).round() as i64).clamp(i64::from(MIX_MIN), i64::from(MIX_MAX)) as i32
}

/// A clamped mix-scale sample as S16: the top 16 of its 24 bits.
#[inline]
pub fn mix_to_s16(m: i32) -> i16 {
    (m >> 8) as i16
}

/// A clamped mix-scale sample as S32.
#[inline]
pub fn mix_to_s32(m: i32) -> i32 {
    m << 8
}

/// A clamped mix-scale sample as float; exact, since 24 bits fit an f32's mantissa.
#[inline]
pub fn mix_to_f32(m: i32) -> f32 {
    m as f32 / MIX_SCALE_F as f32
}

/// A mix-scale sample as f64 at full scale ±1.0 (for resampling and gain).
#[inline]
pub fn mix_to_f64(m: i32) -> f64 {
    f64::from(m) / MIX_SCALE_F
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_s16_round_trip_is_exact() {
        for s in [i16::MIN, -1, 0, 1, 12345, i16::MAX] {
            assert_eq!(mix_to_s16(clamp_mix(s16_to_mix(s))), s);
        }
    }

    #[test]
    fn format_s16_sum_clamps_instead_of_wrapping() {
        let sum = s16_to_mix(30000) + s16_to_mix(30000);
        assert_eq!(mix_to_s16(clamp_mix(sum)), i16::MAX);
        let sum = s16_to_mix(-30000) + s16_to_mix(-30000);
        assert_eq!(mix_to_s16(clamp_mix(sum)), i16::MIN);
    }

    #[test]
    fn format_s32_rounds_to_24_bits() {
        assert_eq!(s32_to_mix(i32::MAX), MIX_MAX);
        assert_eq!(s32_to_mix(i32::MIN), MIX_MIN);
        assert_eq!(s32_to_mix(0x100), 1);
        assert_eq!(s32_to_mix(0x17f), 1);
        assert_eq!(s32_to_mix(0x180), 2);
        assert_eq!(mix_to_s32(s32_to_mix(0x1234_5600)), 0x1234_5600);
    }

    #[test]
    fn format_float_conversion_rule() {
        assert_eq!(f32_to_mix(1.0), MIX_MAX);
        assert_eq!(f32_to_mix(-1.0), MIX_MIN);
        assert_eq!(f32_to_mix(2.5), MIX_MAX);
        assert_eq!(f32_to_mix(f32::NAN), 0);
        assert_eq!(f32_to_mix(0.5), 1 << 22);
        for m in [MIX_MIN, -7, 0, 3, MIX_MAX] {
            assert_eq!(f32_to_mix(mix_to_f32(m)), m);
        }
    }

    #[test]
    fn format_names_parse_back() {
        for f in SampleFormat::ALL {
            assert_eq!(f.name().parse::<SampleFormat>().unwrap(), f);
            assert_eq!(SampleFormat::from_code(f.code()), Some(f));
        }
        assert!("U8".parse::<SampleFormat>().is_err());
        assert_eq!(SampleFormat::from_code(0), None);
    }
}
