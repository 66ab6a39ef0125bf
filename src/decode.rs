//! Temporary stub (replaced by the real decoder).
use crate::error::{Error, Result};
use crate::format::SampleFormat;
pub struct Target {
    pub rate_hz: u32,
    pub channels: u16,
}
#[derive(Clone, Copy, Debug)]
pub struct RawSpec {
    pub format: SampleFormat,
    pub rate_hz: u32,
    pub channels: u16,
}
pub struct DecodeOptions {
    pub raw: Option<RawSpec>,
    pub volume_db: f64,
}
pub struct Decoder {
    r: hound::WavReader<std::io::BufReader<std::fs::File>>,
    total: u64,
}
impl Decoder {
    pub fn open(path: &str, _t: Target, _o: &DecodeOptions) -> Result<Decoder> {
        let r = hound::WavReader::open(path).map_err(|e| Error::input(path, e.to_string()))?;
        let total = r.duration() as u64;
        Ok(Decoder { r, total })
    }
    pub fn description(&self) -> String {
        "wav".into()
    }
    pub fn total_frames(&self) -> Option<u64> {
        Some(self.total)
    }
    pub fn read(&mut self, out: &mut Vec<i32>) -> Result<usize> {
        out.clear();
        for s in self.r.samples::<i16>().take(2048) {
            out.push(crate::format::s16_to_mix(s.unwrap()));
        }
        Ok(out.len() / 2)
    }
}
