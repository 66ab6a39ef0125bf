//! Decoder tests. Fixtures are generated here: WAV with hound, the compressed formats with
//! the command-line encoders that `scripts/quickstart` installs (flac, lame, vorbis-tools,
//! ffmpeg). A missing encoder fails the test with the package to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::ErrorKind;
use crate::format::s16_to_mix;

const STEREO_48K: Target = Target { rate_hz: 48000, channels: 2 };
const PLAIN: DecodeOptions = DecodeOptions { raw: None, volume_db: 0.0, stop: None };

fn sine16(frames: usize, channels: usize, rate: f64, freq: f64) -> Vec<i16> {
    (0..frames * channels)
        .map(|i| {
            let t = (i / channels) as f64 / rate;
            (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16 + (i % channels) as i16
        })
        .collect()
}

fn wav16(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec =
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    samples.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
}

fn decode_all(path: &Path, target: Target, opts: &DecodeOptions) -> Result<Vec<i32>> {
    let mut d = Decoder::open(path.to_str().unwrap(), target, opts)?;
    let (mut all, mut buf) = (Vec::new(), Vec::new());
    // Bounded: a decoder that never ends fails the test instead of hanging it.
    for _ in 0..100_000 {
        if d.read(&mut buf)? == 0 {
            return Ok(all);
        }
        all.extend_from_slice(&buf);
    }
    panic!("decoder did not end");
}

fn encode(tool: &str, package: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} not runnable ({e}): install the Debian package {package}"));
    assert!(out.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn fixture(dir: &Path) -> (PathBuf, Vec<i16>) {
    let src = sine16(44100, 2, 44100.0, 1000.0);
    let wav = dir.join("src.wav");
    wav16(&wav, 44100, 2, &src);
    (wav, src)
}

/// Frequency of a mono-extracted signal by rising zero crossings over its middle.
fn frequency(samples: &[i32], channels: usize, rate: f64) -> f64 {
    let ch0: Vec<i32> = samples.iter().step_by(channels).copied().collect();
    let mid = &ch0[ch0.len() / 4..ch0.len() * 3 / 4];
    let ups: Vec<usize> = mid.windows(2).enumerate().filter(|(_, w)| w[0] < 0 && w[1] >= 0).map(|(i, _)| i).collect();
    (ups.len() - 1) as f64 * rate / (ups[ups.len() - 1] - ups[0]) as f64
}

#[test]
fn decode_s16_wav_passthrough_is_bit_exact() {
    let t = tempfile::tempdir().unwrap();
    let src = sine16(10000, 2, 48000.0, 440.0);
    let p = t.path().join("a.wav");
    wav16(&p, 48000, 2, &src);
    let got = decode_all(&p, STEREO_48K, &PLAIN).unwrap();
    let want: Vec<i32> = src.iter().map(|&s| s16_to_mix(s)).collect();
    assert_eq!(got, want);
    let d = Decoder::open(p.to_str().unwrap(), STEREO_48K, &PLAIN).unwrap();
    assert_eq!(d.total_frames(), Some(10000));
}

#[test]
fn decode_24_bit_and_float_wav_follow_the_rule() {
    let t = tempfile::tempdir().unwrap();
    let p24 = t.path().join("a24.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48000,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&p24, spec).unwrap();
    let s24 = [0, 1, -1, 8_388_607, -8_388_608, 123_456];
    s24.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    let mono = Target { rate_hz: 48000, channels: 1 };
    assert_eq!(decode_all(&p24, mono, &PLAIN).unwrap(), s24.to_vec());

    let pf = t.path().join("af.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&pf, spec).unwrap();
    let sf = [0.0f32, 0.5, -1.0, 1.5, 1e-9];
    sf.iter().for_each(|&s| w.write_sample(s).unwrap());
    w.finalize().unwrap();
    let want: Vec<i32> = sf.iter().map(|&x| crate::format::f32_to_mix(x)).collect();
    assert_eq!(decode_all(&pf, mono, &PLAIN).unwrap(), want);
}

#[test]
fn decode_raw_input_in_each_format() {
    let t = tempfile::tempdir().unwrap();
    let mix = [0, 1 << 8, -(1 << 8), crate::format::MIX_MAX & !0xff, crate::format::MIX_MIN];
    for f in SampleFormat::ALL {
        let mut bytes = Vec::new();
        for &m in &mix {
            let mut b = [0u8; 4];
            f.mix_to_le_bytes(m, &mut b[..f.bytes()]);
            bytes.extend_from_slice(&b[..f.bytes()]);
        }
        let p = t.path().join(format!("{f}.raw"));
        std::fs::write(&p, &bytes).unwrap();
        let opts =
            DecodeOptions { raw: Some(RawSpec { format: f, rate_hz: 48000, channels: 1 }), volume_db: 0.0, stop: None };
        let mono = Target { rate_hz: 48000, channels: 1 };
        assert_eq!(decode_all(&p, mono, &opts).unwrap(), mix.to_vec(), "{f}");
    }
}

#[test]
fn decode_raw_partial_frame_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("odd.raw");
    std::fs::write(&p, [0u8; 4 * 10 + 3]).unwrap();
    let opts = DecodeOptions {
        raw: Some(RawSpec { format: SampleFormat::S16Le, rate_hz: 48000, channels: 2 }),
        volume_db: 0.0,
        stop: None,
    };
    let e = decode_all(&p, STEREO_48K, &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("3 bytes left over"), "{e}");
}

#[test]
fn decode_flac_is_bit_exact() {
    let t = tempfile::tempdir().unwrap();
    let (wav, src) = fixture(t.path());
    let flac = t.path().join("a.flac");
    encode("flac", "flac", &["-s", "-f", "-o", flac.to_str().unwrap(), wav.to_str().unwrap()]);
    let at_44k = Target { rate_hz: 44100, channels: 2 };
    let got = decode_all(&flac, at_44k, &PLAIN).unwrap();
    let want: Vec<i32> = src.iter().map(|&s| s16_to_mix(s)).collect();
    assert_eq!(got, want);
}

#[test]
fn decode_lossy_formats_keep_length_and_pitch() {
    let t = tempfile::tempdir().unwrap();
    let (wav, _) = fixture(t.path());
    let w = wav.to_str().unwrap();
    let dir = t.path();
    let mp3 = dir.join("a.mp3");
    let ogg = dir.join("a.ogg");
    let m4a = dir.join("a.m4a");
    encode("lame", "lame", &["--quiet", w, mp3.to_str().unwrap()]);
    encode("oggenc", "vorbis-tools", &["-Q", "-o", ogg.to_str().unwrap(), w]);
    encode("ffmpeg", "ffmpeg", &["-y", "-loglevel", "error", "-i", w, "-c:a", "aac", m4a.to_str().unwrap()]);
    for p in [mp3, ogg, m4a] {
        let got = decode_all(&p, STEREO_48K, &PLAIN).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let frames = got.len() / 2;
        // 1 s at 44.1 kHz is 48000 frames at 48 kHz; lossy codecs may keep some padding.
        assert!((47000..=51000).contains(&frames), "{}: {frames} frames", p.display());
        let f = frequency(&got, 2, 48000.0);
        assert!((f - 1000.0).abs() < 5.0, "{}: {f} Hz", p.display());
    }
}

#[test]
fn decode_resamples_to_the_target_rate() {
    let t = tempfile::tempdir().unwrap();
    let (wav, _) = fixture(t.path());
    let d = Decoder::open(wav.to_str().unwrap(), STEREO_48K, &PLAIN).unwrap();
    assert_eq!(d.total_frames(), Some(48000));
    assert!(d.description().contains("-> 48000 Hz"), "{}", d.description());
    let got = decode_all(&wav, STEREO_48K, &PLAIN).unwrap();
    assert_eq!(got.len(), 48000 * 2);
    let f = frequency(&got, 2, 48000.0);
    assert!((f - 1000.0).abs() < 0.5, "{f} Hz");
}

#[test]
fn decode_converts_channels() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("mono.wav");
    wav16(&p, 48000, 1, &[100, -200, 300]);
    let got = decode_all(&p, STEREO_48K, &PLAIN).unwrap();
    assert_eq!(got, [100, 100, -200, -200, 300, 300].map(s16_to_mix).to_vec());
}

#[test]
fn decode_volume_scales() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("a.wav");
    wav16(&p, 48000, 2, &[1000, -1000]);
    let opts = DecodeOptions { raw: None, volume_db: -6.0, stop: None };
    let got = decode_all(&p, STEREO_48K, &opts).unwrap();
    let g = 10f64.powf(-6.0 / 20.0);
    assert_eq!(got, vec![(256_000.0 * g).round() as i32, (-256_000.0 * g).round() as i32]);
    let bad = DecodeOptions { raw: None, volume_db: f64::INFINITY, stop: None };
    assert!(Decoder::open(p.to_str().unwrap(), STEREO_48K, &bad).is_err());
}

#[test]
fn decode_bad_inputs_name_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("empty.wav"), b"").unwrap();
    std::fs::write(
        d.join("noise.mp3"),
        (0..20000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let (wav, _) = fixture(d);
    let bytes = std::fs::read(&wav).unwrap();
    std::fs::write(d.join("cut.wav"), &bytes[..bytes.len() / 2]).unwrap();
    let flac = d.join("a.flac");
    encode("flac", "flac", &["-s", "-f", "-o", flac.to_str().unwrap(), wav.to_str().unwrap()]);
    let fbytes = std::fs::read(&flac).unwrap();
    std::fs::write(d.join("cut.flac"), &fbytes[..fbytes.len() / 2]).unwrap();
    wav16(&d.join("rate0.wav"), 48000, 1, &[0; 10]);
    let mut hdr = std::fs::read(d.join("rate0.wav")).unwrap();
    hdr[24..28].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(d.join("rate0.wav"), &hdr).unwrap();
    for (name, why) in [
        ("missing.wav", "no such file"),
        ("", "is a directory"),
        ("empty.wav", "empty file"),
        ("noise.mp3", ""),
        ("cut.wav", "truncated"),
        ("cut.flac", "truncated"),
        ("rate0.wav", ""),
    ] {
        let p = d.join(name);
        let e = decode_all(&p, STEREO_48K, &PLAIN).expect_err(name);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}: {e}");
        let msg = e.to_string();
        assert!(msg.starts_with(p.to_str().unwrap()), "{name}: {msg}");
        assert!(msg.contains(why), "{name}: {msg}");
        assert!(!msg.contains('\n'), "{name}: {msg}");
    }
}
