//! The shared input of `dmix-serve --capture` (ALSA's dsnoop idea): one source, any number
//! of readers. A source is an ALSA capture PCM, or a file (anything dmix-play decodes,
//! converted to the server's rate and channels) that stands in for a device in tests and
//! offline work.
//!
//! A source is opened on the capture thread (an ALSA handle is not `Send`) and then only
//! asked for whole periods of mix-scale samples.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::decode::{DecodeOptions, Decoder, Target};
use crate::error::{Error, Result};
use crate::format::{f32_to_mix, s16_to_mix, s32_to_mix};
use crate::sink::{AlsaBuf, SinkConfig, SpecKind, alsa_reason, open_pcm, parse_spec, recover};

/// A capture source as the user names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `alsa:PCM`.
    Alsa(String),
    /// `wav:PATH`: a file, read once at the server's pace.
    File(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<SourceSpec> {
        parse_spec(
            s,
            "capture source",
            &[
                (SpecKind::Alsa, |pcm| SourceSpec::Alsa(pcm.into())),
                (SpecKind::Wav, |path| SourceSpec::File(path.into())),
            ],
        )
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Alsa(pcm) => SpecKind::Alsa.print(f, pcm),
            SourceSpec::File(p) => SpecKind::Wav.print(f, p.display()),
        }
    }
}

/// A place periods come from.
pub trait Source {
    /// Fills `out` (`period_frames * channels` samples) with the next frames at the mix
    /// scale. Returns the frames read: a whole period, fewer only at the end of the input,
    /// 0 once it has ended. Device sources block until a period was captured.
    fn read_period(&mut self, out: &mut [i32]) -> Result<usize>;
    /// True when the device's timing paces the capture (ALSA); a file is paced by the
    /// server's clock, or not at all in freewheel.
    fn paces_itself(&self) -> bool;
    /// Device overruns recovered so far.
    fn overruns(&self) -> u64;
}

/// Opens the source. Call it on the thread that will read from it.
pub fn open_source(spec: &SourceSpec, cfg: &SinkConfig) -> Result<Box<dyn Source>> {
    match spec {
        SourceSpec::File(path) => Ok(Box::new(FileSource::open(path, cfg)?)),
        SourceSpec::Alsa(pcm) => Ok(Box::new(AlsaSource::open(spec, pcm, cfg)?)),
    }
}

/// A decoded file, delivered a period at a time.
struct FileSource {
    decoder: Decoder,
    chunk: Vec<i32>,
    used: usize,
    channels: usize,
}

impl FileSource {
    fn open(path: &std::path::Path, cfg: &SinkConfig) -> Result<FileSource> {
        let path = path.to_str().ok_or_else(|| Error::input(path.display().to_string(), "path is not UTF-8"))?;
        if path == "-" {
            return Err(Error::invalid("capture source 'wav:-'", "the server reads no stdin; name a file"));
        }
        let target = Target { rate_hz: cfg.rate_hz, channels: cfg.channels };
        let decoder = Decoder::open(path, target, &DecodeOptions { raw: None, volume_db: 0.0, stop: None })?;
        Ok(FileSource { decoder, chunk: Vec::new(), used: 0, channels: usize::from(cfg.channels) })
    }
}

impl Source for FileSource {
    fn read_period(&mut self, out: &mut [i32]) -> Result<usize> {
        let mut filled = 0;
        while filled < out.len() {
            if self.used == self.chunk.len() {
                self.used = 0;
                if self.decoder.read(&mut self.chunk)? == 0 {
                    break;
                }
            }
            let n = (out.len() - filled).min(self.chunk.len() - self.used);
            out[filled..filled + n].copy_from_slice(&self.chunk[self.used..self.used + n]);
            filled += n;
            self.used += n;
        }
        Ok(filled / self.channels)
    }
    fn paces_itself(&self) -> bool {
        false
    }
    fn overruns(&self) -> u64 {
        0
    }
}

/// An ALSA PCM opened for blocking capture, interleaved.
struct AlsaSource {
    name: String,
    pcm: alsa::PCM,
    buf: AlsaBuf,
    channels: usize,
    overruns: u64,
    ended: bool,
}

impl AlsaSource {
    fn open(spec: &SourceSpec, pcm_name: &str, cfg: &SinkConfig) -> Result<AlsaSource> {
        let name = spec.to_string();
        let pcm = open_pcm(&name, pcm_name, alsa::Direction::Capture, cfg)?;
        let buf = AlsaBuf::new(cfg.format, cfg.period_frames as usize * usize::from(cfg.channels));
        Ok(AlsaSource { name, pcm, buf, channels: usize::from(cfg.channels), overruns: 0, ended: false })
    }

    /// Reads until `data` is full or the device delivers nothing (the end of a file-backed
    /// PCM: a device in blocking mode never returns 0 frames otherwise), recovering from
    /// overruns (counted) and suspends. Returns the samples read.
    fn read_all<S: Copy>(
        pcm: &alsa::PCM,
        io: &alsa::pcm::IO<'_, S>,
        data: &mut [S],
        channels: usize,
        overruns: &mut u64,
    ) -> std::result::Result<usize, alsa::Error> {
        let mut off = 0;
        while off < data.len() {
            match io.readi(&mut data[off..]) {
                Ok(0) => break,
                Ok(frames) => off += frames * channels,
                // An overrun (the device had nowhere to put frames) is counted; the gap is
                // lost, as with any recorder; then read on.
                Err(e) => recover(pcm, e, overruns)?,
            }
        }
        Ok(off)
    }
}

impl Source for AlsaSource {
    fn read_period(&mut self, out: &mut [i32]) -> Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let (pcm, ch, overruns) = (&self.pcm, self.channels, &mut self.overruns);
        // Silence first: a PCM that reports frames without writing them (alsa-lib's null,
        // under the file plugin once its infile ran out) then yields silence, not the
        // previous period again.
        match &mut self.buf {
            AlsaBuf::S16(b) => b.fill(0),
            AlsaBuf::S32(b) => b.fill(0),
            AlsaBuf::F32(b) => b.fill(0.0),
        }
        let r = match &mut self.buf {
            AlsaBuf::S16(b) => pcm.io_i16().and_then(|io| Self::read_all(pcm, &io, b, ch, overruns)).inspect(|&n| {
                out[..n].iter_mut().zip(b.iter()).for_each(|(o, &s)| *o = s16_to_mix(s));
            }),
            AlsaBuf::S32(b) => pcm.io_i32().and_then(|io| Self::read_all(pcm, &io, b, ch, overruns)).inspect(|&n| {
                out[..n].iter_mut().zip(b.iter()).for_each(|(o, &s)| *o = s32_to_mix(s));
            }),
            AlsaBuf::F32(b) => pcm.io_f32().and_then(|io| Self::read_all(pcm, &io, b, ch, overruns)).inspect(|&n| {
                out[..n].iter_mut().zip(b.iter()).for_each(|(o, &s)| *o = f32_to_mix(s));
            }),
        };
        let n = r.map_err(|e| Error::Device { sink: self.name.clone(), reason: alsa_reason("read", &e) })?;
        if n < out.len() {
            self.ended = true;
        }
        Ok(n / ch)
    }
    fn paces_itself(&self) -> bool {
        true
    }
    fn overruns(&self) -> u64 {
        self.overruns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::SampleFormat;

    fn cfg(format: SampleFormat) -> SinkConfig {
        SinkConfig { rate_hz: 48000, channels: 2, format, period_frames: 256, buffer_frames: 1024 }
    }

    #[test]
    fn capture_specs_parse_and_print_back() {
        for s in ["alsa:default", "alsa:hw:1,0", "wav:/tmp/in.wav", "wav:rel.flac"] {
            assert_eq!(s.parse::<SourceSpec>().unwrap().to_string(), s);
        }
        assert_eq!("alsa".parse::<SourceSpec>().unwrap(), SourceSpec::Alsa("default".into()));
        for bad in ["", "wav:", "alsa:", "null", "file:/x"] {
            let e = bad.parse::<SourceSpec>().unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn capture_file_source_delivers_whole_periods_then_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("in.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        let want: Vec<i16> = (0..1000 * 2).map(|i| (i * 13 % 30000) as i16).collect();
        want.iter().for_each(|&s| w.write_sample(s).unwrap());
        w.finalize().unwrap();
        let mut src = open_source(&SourceSpec::File(path), &cfg(SampleFormat::S16Le)).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0i32; 512];
        let mut reads = Vec::new();
        loop {
            let n = src.read_period(&mut buf).unwrap();
            reads.push(n);
            got.extend_from_slice(&buf[..n * 2]);
            if n == 0 {
                break;
            }
        }
        assert_eq!(reads, [256, 256, 256, 232, 0]);
        assert_eq!(got, want.iter().map(|&s| s16_to_mix(s)).collect::<Vec<_>>());
    }

    #[test]
    fn capture_missing_file_and_unknown_pcm_are_one_clear_error() {
        let e = open_source(&SourceSpec::File("/nonexistent/in.wav".into()), &cfg(SampleFormat::S16Le)).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/in.wav"), "{e}");
        let e = open_source(&SourceSpec::Alsa("no_such_pcm_xyz".into()), &cfg(SampleFormat::S16Le)).err().unwrap();
        let msg = e.to_string();
        assert!(msg.starts_with("alsa:no_such_pcm_xyz: cannot open"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
