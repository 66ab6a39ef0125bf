//! Conversions between a decoded stream and the server's: channel maps, sample-rate
//! conversion (rubato's FFT resampler), and gain. Pure: no I/O. Integer paths stay exact
//! wherever the conversion is a copy, so 0 dB at the server's rate and channel count is a
//! bit-exact passthrough.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

use crate::error::{Error, Result};
use crate::format::{f64_to_mix, mix_to_f64};

/// -3 dB: the weight of a centre or surround channel folded into a front one.
const FOLD: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// How input channels become output channels.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelMap {
    /// Same count: copied.
    Same,
    /// One input channel to every output channel.
    MonoToAll,
    /// Every input channel averaged into one.
    AverageToMono,
    /// A weighted mix: `weights[out][in]`.
    Matrix(Vec<Vec<f64>>),
    /// Input channel i to output channel i below the smaller count; the rest silent.
    Truncate,
}

impl ChannelMap {
    /// The map from `inputs` to `outputs` channels (WAV/SMPTE channel order: FL, FR, FC, LFE,
    /// BL, BR, SL, SR).
    pub fn new(inputs: usize, outputs: usize) -> ChannelMap {
        match (inputs, outputs) {
            (i, o) if i == o => ChannelMap::Same,
            (1, _) => ChannelMap::MonoToAll,
            (_, 1) => ChannelMap::AverageToMono,
            (i, 2) if i > 2 => ChannelMap::Matrix(stereo_downmix(i)),
            _ => ChannelMap::Truncate,
        }
    }

    /// Maps interleaved `input` (`inputs` channels) onto the end of `out` (`outputs` channels).
    pub fn apply(&self, input: &[i32], inputs: usize, outputs: usize, out: &mut Vec<i32>) {
        match self {
            ChannelMap::Same => out.extend_from_slice(input),
            ChannelMap::MonoToAll => {
                for &s in input {
                    out.extend(std::iter::repeat_n(s, outputs));
                }
            }
            ChannelMap::AverageToMono => {
                for frame in input.chunks_exact(inputs) {
                    let sum: i64 = frame.iter().map(|&s| i64::from(s)).sum();
                    out.push(f64_to_mix(sum as f64 / inputs as f64 / 8_388_608.0));
                }
            }
            ChannelMap::Matrix(w) => {
                for frame in input.chunks_exact(inputs) {
                    for row in w {
                        let v: f64 = row.iter().zip(frame).map(|(k, &s)| k * mix_to_f64(s)).sum();
                        out.push(f64_to_mix(v));
                    }
                }
            }
            ChannelMap::Truncate => {
                for frame in input.chunks_exact(inputs) {
                    for o in 0..outputs {
                        out.push(frame.get(o).copied().unwrap_or(0));
                    }
                }
            }
        }
    }
}

/// Weights folding `inputs` channels (SMPTE order) into stereo, normalised so that full
/// scale on every input cannot clip.
fn stereo_downmix(inputs: usize) -> Vec<Vec<f64>> {
    // Per input channel: (weight into L, weight into R).
    let weight = |ch: usize| match ch {
        0 => (1.0, 0.0),                // FL
        1 => (0.0, 1.0),                // FR
        2 => (FOLD, FOLD),              // FC
        3 => (0.0, 0.0),                // LFE: not folded in (bass management is the device's)
        4 | 6 => (FOLD, 0.0),           // BL, SL
        5 | 7 => (0.0, FOLD),           // BR, SR
        c if c % 2 == 0 => (FOLD, 0.0), // further channels: even left, odd right
        _ => (0.0, FOLD),
    };
    let (mut l, mut r): (Vec<f64>, Vec<f64>) = (0..inputs).map(weight).unzip();
    for row in [&mut l, &mut r] {
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            row.iter_mut().for_each(|k| *k /= total);
        }
    }
    vec![l, r]
}

/// Input frames per resampler call.
const CHUNK_FRAMES: usize = 1024;

/// A streaming sample-rate converter with its delay compensated: output frame k is input
/// time k / out_rate, and the output holds exactly round(in_frames × out / in) frames.
pub struct RateConverter {
    inner: Fft<f64>,
    channels: usize,
    in_rate: u32,
    out_rate: u32,
    /// Input not yet resampled (interleaved, full scale ±1.0).
    pending: Vec<f64>,
    /// One output chunk.
    out_buf: Vec<f64>,
    /// Output frames still to drop: the filter's delay.
    to_skip: usize,
    in_frames: u64,
    out_frames: u64,
}

impl RateConverter {
    /// A converter from `in_rate` to `out_rate` Hz for `channels` channels.
    pub fn new(in_rate: u32, out_rate: u32, channels: usize) -> Result<RateConverter> {
        let inner = Fft::<f64>::new(in_rate as usize, out_rate as usize, CHUNK_FRAMES, channels, FixedSync::Input)
            .map_err(|e| Error::invalid(format!("resampling {in_rate} Hz to {out_rate} Hz"), e.to_string()))?;
        let out_max = inner.output_frames_max();
        Ok(RateConverter {
            to_skip: inner.output_delay(),
            inner,
            channels,
            in_rate,
            out_rate,
            pending: Vec::with_capacity(2 * CHUNK_FRAMES * channels),
            out_buf: vec![0.0; out_max * channels],
            in_frames: 0,
            out_frames: 0,
        })
    }

    /// The output length for `in_frames` input frames.
    pub fn output_len(in_frames: u64, in_rate: u32, out_rate: u32) -> u64 {
        (in_frames * u64::from(out_rate) + u64::from(in_rate) / 2) / u64::from(in_rate)
    }

    /// Resamples interleaved mix-scale `input`, appending what is ready to `out`.
    pub fn process(&mut self, input: &[i32], out: &mut Vec<i32>) -> Result<()> {
        self.in_frames += (input.len() / self.channels) as u64;
        self.pending.extend(input.iter().map(|&s| mix_to_f64(s)));
        while self.pending.len() / self.channels >= self.inner.input_frames_next() {
            self.run(None, out)?;
        }
        Ok(())
    }

    /// Flushes the tail at the end of the input: pads with silence until the output is
    /// exactly as long as the input's duration.
    pub fn finish(&mut self, out: &mut Vec<i32>) -> Result<()> {
        let want = Self::output_len(self.in_frames, self.in_rate, self.out_rate);
        // Each round yields at least one chunk; the delay is bounded, so this ends.
        let mut rounds = 0;
        while self.out_frames < want && rounds < 64 {
            let partial = self.pending.len() / self.channels;
            self.run(Some(partial), out)?;
            rounds += 1;
        }
        // The last chunk overshoots: cut the output to the exact length.
        let excess = (self.out_frames.saturating_sub(want)) as usize * self.channels;
        out.truncate(out.len().saturating_sub(excess));
        self.out_frames = want;
        Ok(())
    }

    fn run(&mut self, partial: Option<usize>, out: &mut Vec<i32>) -> Result<()> {
        let ch = self.channels;
        let need = self.inner.input_frames_next();
        let have = self.pending.len() / ch;
        if have < need {
            // A partial chunk: the resampler reads `need` frames, zeros past `partial`.
            self.pending.resize(need * ch, 0.0);
        }
        let fail = |e: &dyn std::fmt::Display| Error::invalid("resampler", e.to_string());
        let input = InterleavedSlice::new(&self.pending[..], ch, self.pending.len() / ch).map_err(|e| fail(&e))?;
        let cap = self.out_buf.len() / ch;
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], ch, cap).map_err(|e| fail(&e))?;
        let indexing = Indexing { input_offset: 0, output_offset: 0, partial_len: partial, active_channels_mask: None };
        let (used, made) =
            self.inner.process_into_buffer(&input, &mut output, Some(&indexing)).map_err(|e| fail(&e))?;
        let used = if partial.is_some() { have.min(used) } else { used };
        self.pending.drain(..(used * ch).min(self.pending.len()));
        if partial.is_some() {
            self.pending.clear();
        }
        let skip = self.to_skip.min(made);
        self.to_skip -= skip;
        for &v in &self.out_buf[skip * ch..made * ch] {
            out.push(f64_to_mix(v));
        }
        self.out_frames += (made - skip) as u64;
        Ok(())
    }
}

/// A gain, or exact passthrough at 0 dB.
#[derive(Clone, Copy, Debug)]
pub struct Gain(Option<f64>);

impl Gain {
    /// The gain of `db` decibels; refuses non-finite values and values outside -200..=+40 dB.
    pub fn from_db(db: f64) -> Result<Gain> {
        if !db.is_finite() || !(-200.0..=40.0).contains(&db) {
            return Err(Error::invalid(format!("--volume {db}"), "out of range (-200 to +40 dB)"));
        }
        Ok(Gain(if db == 0.0 { None } else { Some(10f64.powf(db / 20.0)) }))
    }

    /// Applies the gain in place (rounded and clamped to the mix scale).
    pub fn apply(&self, samples: &mut [i32]) {
        if let Some(g) = self.0 {
            for s in samples {
                *s = f64_to_mix(mix_to_f64(*s) * g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{MIX_MAX, MIX_MIN};

    fn map(i: usize, o: usize, input: &[i32]) -> Vec<i32> {
        let mut out = Vec::new();
        ChannelMap::new(i, o).apply(input, i, o, &mut out);
        out
    }

    #[test]
    fn convert_channel_maps() {
        assert_eq!(map(2, 2, &[1, 2, 3, 4]), vec![1, 2, 3, 4]);
        assert_eq!(map(1, 3, &[5, 6]), vec![5, 5, 5, 6, 6, 6]);
        assert_eq!(map(2, 1, &[100, 200, -3, -4]), vec![150, -4]);
        assert_eq!(map(2, 4, &[1, 2]), vec![1, 2, 0, 0]);
        assert_eq!(map(4, 3, &[1, 2, 3, 4]), vec![1, 2, 3]);
        // 5.1 to stereo: FL goes left only, FR right only, centre to both, LFE nowhere.
        let fl = map(6, 2, &[1 << 20, 0, 0, 0, 0, 0]);
        assert!(fl[0] > 0 && fl[1] == 0);
        let lfe = map(6, 2, &[0, 0, 0, 1 << 20, 0, 0]);
        assert_eq!(lfe, vec![0, 0]);
        let c = map(6, 2, &[0, 0, 1 << 20, 0, 0, 0]);
        assert_eq!(c[0], c[1]);
    }

    #[test]
    fn convert_surround_downmix_never_clips() {
        let out = map(6, 2, &[MIX_MAX; 6]);
        assert!(out.iter().all(|&v| (MIX_MAX - 3..=MIX_MAX).contains(&v)), "{out:?}");
        let out = map(8, 2, &[MIX_MIN; 8]);
        assert!(out.iter().all(|&v| (MIX_MIN..MIX_MIN + 4).contains(&v)), "{out:?}");
    }

    fn sine(frames: usize, rate: f64, freq: f64) -> Vec<i32> {
        (0..frames).map(|i| f64_to_mix(0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin())).collect()
    }

    /// Zero crossings going up, as fractional frame positions.
    fn rising_crossings(x: &[i32]) -> Vec<f64> {
        x.windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
            .map(|(i, w)| i as f64 + f64::from(-w[0]) / f64::from(w[1] - w[0]))
            .collect()
    }

    #[test]
    fn convert_resampler_keeps_length_time_and_pitch() {
        let input = sine(44100, 44100.0, 1000.0);
        let mut rc = RateConverter::new(44100, 48000, 1).unwrap();
        let mut out = Vec::new();
        for chunk in input.chunks(777) {
            rc.process(chunk, &mut out).unwrap();
        }
        rc.finish(&mut out).unwrap();
        assert_eq!(out.len(), 48000);
        // Pitch: 1000 crossings a second. Timing: the sine rises through zero at every 1 ms
        // (48 output frames), the first counted at 48; a filter delay would shift them all.
        let x = rising_crossings(&out);
        let period = (x[900] - x[100]) / 800.0;
        assert!((period - 48.0).abs() < 0.01, "period {period}");
        assert!((x[10] - 48.0 * 11.0).abs() < 0.5, "crossing 10 at {}", x[10]);
    }

    #[test]
    fn convert_resampler_output_length_is_exact_for_odd_lengths() {
        for (n, from, to) in [(1, 44100, 48000), (1000, 48000, 44100), (12345, 22050, 48000), (0, 44100, 48000)] {
            let mut rc = RateConverter::new(from, to, 2).unwrap();
            let mut out = Vec::new();
            rc.process(&vec![0; n * 2], &mut out).unwrap();
            rc.finish(&mut out).unwrap();
            assert_eq!(out.len() as u64, RateConverter::output_len(n as u64, from, to) * 2, "{n} {from} {to}");
        }
    }

    #[test]
    fn convert_gain() {
        let mut v = vec![1 << 20, -(1 << 20), 7];
        Gain::from_db(0.0).unwrap().apply(&mut v);
        assert_eq!(v, vec![1 << 20, -(1 << 20), 7]);
        Gain::from_db(-20.0).unwrap().apply(&mut v);
        assert_eq!(v, vec![104858, -104858, 1]);
        let mut loud = vec![MIX_MAX / 2];
        Gain::from_db(20.0).unwrap().apply(&mut loud);
        assert_eq!(loud, vec![MIX_MAX]);
        assert!(Gain::from_db(f64::NAN).is_err());
        assert!(Gain::from_db(41.0).is_err());
        assert!(Gain::from_db(-201.0).is_err());
    }
}
