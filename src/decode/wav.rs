//! Plain PCM WAV files read directly, as headerless PCM from the data chunk: symphonia's
//! generic path decodes a 16-bit WAV at about 18 ns a sample here, a third of a player's
//! CPU (docs/BENCHMARKS.md); this one converts the bytes as they are read. Anything it
//! does not recognise (other sample widths, unknown length, odd chunks, a header it cannot
//! read) goes to symphonia, which reads every WAV and names what is wrong with a bad one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::{INPUT_RATES, MAX_INPUT_CHANNELS, RawSpec};
use crate::format::SampleFormat;

/// Chunks looked at before the data chunk; more is not a file written by a sane tool.
const MAX_CHUNKS: usize = 64;
/// WAVE_FORMAT_EXTENSIBLE's sub-format GUID after its first two bytes (the format tag).
const KSDATAFORMAT_TAIL: [u8; 14] = [0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71];

/// A WAV whose samples can be read as headerless PCM.
#[derive(Debug, PartialEq)]
pub(super) struct PcmWav {
    pub spec: RawSpec,
    /// Where the samples start.
    pub data_offset: u64,
    /// Bytes of samples the header promises (a whole number of frames).
    pub data_bytes: u64,
}

/// Reads `file`'s header. `Some` leaves the file at the first sample; `None` rewinds it for
/// symphonia.
pub(super) fn probe(file: &mut File) -> Option<PcmWav> {
    let found = read_header(file);
    let at = found.as_ref().map_or(0, |w| w.data_offset);
    file.seek(SeekFrom::Start(at)).ok()?;
    found
}

fn read_header(r: &mut impl Read) -> Option<PcmWav> {
    let mut riff = [0u8; 12];
    r.read_exact(&mut riff).ok()?;
    if &riff[..4] != b"RIFF" || &riff[8..] != b"WAVE" {
        return None;
    }
    let mut offset = 12u64;
    let mut spec = None;
    for _ in 0..MAX_CHUNKS {
        let mut head = [0u8; 8];
        r.read_exact(&mut head).ok()?;
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        offset += 8;
        match &head[..4] {
            b"fmt " => {
                if !(16..=1024).contains(&size) {
                    return None;
                }
                let mut fmt = vec![0u8; size as usize + (size as usize & 1)];
                r.read_exact(&mut fmt).ok()?;
                spec = Some(fmt_spec(&fmt[..size as usize])?);
            }
            b"data" => {
                let spec: RawSpec = spec?;
                let frame = (spec.format.bytes() * usize::from(spec.channels)) as u64;
                // 0 and 0xFFFFFFFF: a stream of unknown length (ffmpeg to a pipe).
                if size == 0 || size == u32::MAX || u64::from(size) % frame != 0 {
                    return None;
                }
                return Some(PcmWav { spec, data_offset: offset, data_bytes: u64::from(size) });
            }
            _ => {
                let skip = u64::from(size) + u64::from(size & 1);
                std::io::copy(&mut r.by_ref().take(skip), &mut std::io::sink()).ok().filter(|&n| n == skip)?;
            }
        }
        offset += u64::from(size) + u64::from(size & 1);
    }
    None
}

fn fmt_spec(f: &[u8]) -> Option<RawSpec> {
    let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let rate = u32_at(4);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real tag leads the sub-format GUID; only full-width
        // samples are plain (fewer valid bits would need a shift).
        if f.len() < 40 || u16_at(18) != bits || f[26..40] != KSDATAFORMAT_TAIL {
            return None;
        }
        tag = u16_at(24);
    }
    let format = match (tag, bits) {
        (1, 16) => SampleFormat::S16Le,
        (1, 32) => SampleFormat::S32Le,
        (3, 32) => SampleFormat::FloatLe,
        _ => return None,
    };
    // Up to 32 channels, as symphonia reads WAV: a file plays or fails the same either way.
    let plain = (1..=MAX_INPUT_CHANNELS.min(32)).contains(&usize::from(channels))
        && INPUT_RATES.contains(&rate)
        && usize::from(block_align) == format.bytes() * usize::from(channels);
    plain.then_some(RawSpec { format, rate_hz: rate, channels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(fmt: &[u8], extra: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVE".to_vec();
        v.extend_from_slice(b"fmt ");
        v.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        v.extend_from_slice(fmt);
        v.extend_from_slice(extra);
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut f = Vec::new();
        for x in [&tag.to_le_bytes()[..], &channels.to_le_bytes(), &rate.to_le_bytes()] {
            f.extend_from_slice(x);
        }
        f.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    #[test]
    fn wav_plain_pcm_is_read_directly_and_everything_else_is_not() {
        let read = |b: Vec<u8>| read_header(&mut b.as_slice());
        let s16 = read(wav(&fmt(1, 2, 48000, 16), b"", &[0; 8])).unwrap();
        assert_eq!(s16.spec.format, SampleFormat::S16Le);
        assert_eq!((s16.data_offset, s16.data_bytes), (44, 8));
        assert_eq!(read(wav(&fmt(3, 1, 44100, 32), b"", &[0; 8])).unwrap().spec.format, SampleFormat::FloatLe);
        // A LIST chunk of odd size (padded) before the data.
        let list = b"LIST\x03\0\0\0abc\0";
        assert_eq!(read(wav(&fmt(1, 2, 48000, 16), list, &[0; 4])).unwrap().data_offset, 56);
        // WAVE_FORMAT_EXTENSIBLE with 32 valid bits of 32, PCM sub-format.
        let mut ext = fmt(0xFFFE, 2, 48000, 32);
        ext.extend_from_slice(&22u16.to_le_bytes());
        ext.extend_from_slice(&32u16.to_le_bytes());
        ext.extend_from_slice(&3u32.to_le_bytes());
        ext.extend_from_slice(&1u16.to_le_bytes());
        ext.extend_from_slice(&KSDATAFORMAT_TAIL);
        assert_eq!(read(wav(&ext, b"", &[0; 8])).unwrap().spec.format, SampleFormat::S32Le);
        // 24 valid bits in 32: not plain.
        ext[18] = 24;
        assert_eq!(read(wav(&ext, b"", &[0; 8])), None);
        // To symphonia: 24-bit, 8-bit, unknown length, a partial frame, no fmt, rate 0,
        // a wrong block align, not RIFF at all, cut inside the header.
        assert_eq!(read(wav(&fmt(1, 2, 48000, 24), b"", &[0; 6])), None);
        assert_eq!(read(wav(&fmt(1, 2, 48000, 8), b"", &[0; 2])), None);
        assert_eq!(read(wav(&fmt(1, 2, 48000, 16), b"", &[])), None);
        assert_eq!(read(wav(&fmt(1, 2, 48000, 16), b"", &[0; 6])), None);
        assert_eq!(read(b"RIFF\0\0\0\0WAVEdata\x04\0\0\0\0\0\0\0".to_vec()), None);
        assert_eq!(read(wav(&fmt(1, 2, 0, 16), b"", &[0; 4])), None);
        assert_eq!(read(wav(&fmt(1, 33, 48000, 16), b"", &[0; 66])), None);
        let mut bad_align = fmt(1, 2, 48000, 16);
        bad_align[12] = 2;
        assert_eq!(read(wav(&bad_align, b"", &[0; 4])), None);
        assert_eq!(read(b"OggS....WAVE".to_vec()), None);
        assert_eq!(read(wav(&fmt(1, 2, 48000, 16), b"", &[0; 4])[..30].to_vec()), None);
    }
}
