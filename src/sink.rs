//! Temporary sink stub (replaced by the real sinks).
use crate::error::{Error, Result};
use crate::format::SampleFormat;
use std::path::PathBuf;

pub enum SinkSpec {
    Alsa(String),
    Wav(PathBuf),
    Null,
}
impl Clone for SinkSpec {
    fn clone(&self) -> Self {
        match self {
            SinkSpec::Alsa(s) => SinkSpec::Alsa(s.clone()),
            SinkSpec::Wav(p) => SinkSpec::Wav(p.clone()),
            SinkSpec::Null => SinkSpec::Null,
        }
    }
}
impl std::fmt::Debug for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self)
    }
}
impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Alsa(s) => write!(f, "alsa:{s}"),
            SinkSpec::Wav(p) => write!(f, "wav:{}", p.display()),
            SinkSpec::Null => write!(f, "null"),
        }
    }
}
impl std::str::FromStr for SinkSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "null" {
            Ok(SinkSpec::Null)
        } else if let Some(p) = s.strip_prefix("wav:") {
            Ok(SinkSpec::Wav(p.into()))
        } else if let Some(p) = s.strip_prefix("alsa:") {
            Ok(SinkSpec::Alsa(p.into()))
        } else {
            Err(Error::invalid(s, "bad sink"))
        }
    }
}
pub struct SinkConfig {
    pub rate_hz: u32,
    pub channels: u16,
    pub format: SampleFormat,
    pub period_frames: u32,
    pub buffer_frames: u32,
}
pub trait Sink: Send {
    fn write_period(&mut self, samples: &[i32]) -> Result<()>;
    fn paces_itself(&self) -> bool;
    fn xruns(&self) -> u64;
    fn finish(&mut self) -> Result<()>;
}
struct Null;
impl Sink for Null {
    fn write_period(&mut self, _: &[i32]) -> Result<()> {
        Ok(())
    }
    fn paces_itself(&self) -> bool {
        false
    }
    fn xruns(&self) -> u64 {
        0
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
struct Wav(Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>);
impl Sink for Wav {
    fn write_period(&mut self, s: &[i32]) -> Result<()> {
        let w = self.0.as_mut().unwrap();
        for &x in s {
            w.write_sample(crate::format::mix_to_s16(x)).unwrap();
        }
        Ok(())
    }
    fn paces_itself(&self) -> bool {
        false
    }
    fn xruns(&self) -> u64 {
        0
    }
    fn finish(&mut self) -> Result<()> {
        if let Some(w) = self.0.take() {
            w.finalize().unwrap();
        }
        Ok(())
    }
}
pub fn open_sink(spec: &SinkSpec, cfg: &SinkConfig) -> Result<Box<dyn Sink>> {
    match spec {
        SinkSpec::Null => Ok(Box::new(Null)),
        SinkSpec::Wav(p) => Ok(Box::new(Wav(Some(
            hound::WavWriter::create(
                p,
                hound::WavSpec {
                    channels: cfg.channels,
                    sample_rate: cfg.rate_hz,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                },
            )
            .unwrap(),
        )))),
        _ => Err(Error::invalid("x", "y")),
    }
}
