//! `dmix-tee`'s engine: records the monitor ring (the final, clamped mix), or the capture
//! ring (the shared input of `dmix-serve --capture`), from the frame at which it was
//! admitted, to a WAV file or to stdout, until a duration, a stop, the end of the input, or
//! the server going away. The output is always finalized.
//!
//! A recorder publishes how far it has read; a freewheel server waits for it, so a
//! recording of an offline render is complete and exact. A paced server does not wait: a
//! recorder that falls more than the ring behind loses frames, and says so.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::client::{Connection, GONE_CHECK};
use crate::error::{Error, Result};
use crate::format::{SampleFormat, mix_to_f32, mix_to_s16, mix_to_s32};
use crate::protocol::Role;
use crate::ring::ClientRing;
use crate::ring::layout::{CAPTURE_ENDED, SERVER_STOPPING};

/// Where the recording goes.
#[derive(Clone, Debug)]
pub enum TeeOutput {
    /// A WAV file.
    File(PathBuf),
    /// Standard output.
    Stdout,
}

/// What is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeSource {
    /// The final mix (the monitor ring).
    Monitor,
    /// The shared input (the capture ring).
    Capture,
}

/// A checked dmix-tee configuration.
#[derive(Clone, Debug)]
pub struct TeeConfig {
    /// Server name or socket path.
    pub device: String,
    /// Client name for dmix-stat.
    pub name: String,
    /// Destination.
    pub output: TeeOutput,
    /// Raw PCM instead of WAV (stdout only).
    pub raw: bool,
    /// Sample format written [default: the server's].
    pub format: Option<SampleFormat>,
    /// Stop after this many seconds.
    pub duration_s: Option<f64>,
    /// What is recorded.
    pub source: TeeSource,
}

/// How a recording ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct TeeSummary {
    /// Frames written.
    pub frames: u64,
    /// Frames lost because the recorder fell behind.
    pub lost_frames: u64,
    /// The server went away without stopping (killed): `record` returns `ServerGone` after
    /// finalizing the output, which holds everything it played.
    pub server_gone: bool,
    /// The shared input ended (the recording holds all of it from the start frame).
    pub input_ended: bool,
}

enum Out {
    Wav { path: PathBuf, writer: hound::WavWriter<BufWriter<File>> },
    Stream(BufWriter<std::io::Stdout>),
}

/// The 44-byte header of a WAV of unknown length, for a stream: sizes at their maximum, as
/// arecord writes them to a pipe.
fn stream_wav_header(format: SampleFormat, rate: u32, channels: u16) -> Vec<u8> {
    let bits = format.bytes() as u16 * 8;
    let tag: u16 = if format == SampleFormat::FloatLe { 3 } else { 1 };
    let block = channels * format.bytes() as u16;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h
}

impl Out {
    fn open(cfg: &TeeConfig, format: SampleFormat, rate: u32, channels: u16) -> Result<Out> {
        match &cfg.output {
            TeeOutput::File(path) => {
                let (bits, sample_format) = match format {
                    SampleFormat::S16Le => (16, hound::SampleFormat::Int),
                    SampleFormat::S32Le => (32, hound::SampleFormat::Int),
                    SampleFormat::FloatLe => (32, hound::SampleFormat::Float),
                };
                let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: bits, sample_format };
                let writer = hound::WavWriter::create(path, spec)
                    .map_err(|e| Error::input(path.display().to_string(), format!("cannot create: {e}")))?;
                Ok(Out::Wav { path: path.clone(), writer })
            }
            TeeOutput::Stdout => {
                let mut out = BufWriter::new(std::io::stdout());
                if !cfg.raw {
                    out.write_all(&stream_wav_header(format, rate, channels)).map_err(Error::stdout)?;
                }
                Ok(Out::Stream(out))
            }
        }
    }

    fn write(&mut self, format: SampleFormat, samples: &[i32]) -> Result<()> {
        match self {
            Out::Wav { path, writer } => {
                let r = match format {
                    SampleFormat::S16Le => samples.iter().try_for_each(|&m| writer.write_sample(mix_to_s16(m))),
                    SampleFormat::S32Le => samples.iter().try_for_each(|&m| writer.write_sample(mix_to_s32(m))),
                    SampleFormat::FloatLe => samples.iter().try_for_each(|&m| writer.write_sample(mix_to_f32(m))),
                };
                r.map_err(|e| Error::Device { sink: path.display().to_string(), reason: format!("write failed: {e}") })
            }
            Out::Stream(out) => {
                let mut b = [0u8; 4];
                for &m in samples {
                    format.mix_to_le_bytes(m, &mut b[..format.bytes()]);
                    out.write_all(&b[..format.bytes()]).map_err(Error::stdout)?;
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Out::Wav { path, writer } => writer.finalize().map_err(|e| {
                // A full disk or a file-size limit: keep what reached the disk readable.
                let _ = crate::sink::repair_wav(&path);
                Error::Device { sink: path.display().to_string(), reason: format!("finalize failed: {e}") }
            }),
            Out::Stream(mut out) => out.flush().map_err(Error::stdout),
        }
    }
}

/// Records until the duration passes, `stop` is raised or the server goes away.
/// `on_lost` hears of every burst of lost frames (for a warning).
pub fn record(cfg: &TeeConfig, stop: &AtomicBool, on_lost: &mut dyn FnMut(u64)) -> Result<TeeSummary> {
    let role = match cfg.source {
        TeeSource::Monitor => Role::Tee,
        TeeSource::Capture => Role::Capture,
    };
    let conn = Connection::open(&cfg.device, role, &cfg.name, 0)?;
    let p = *conn.params();
    let format = cfg.format.unwrap_or(p.format);
    let mut out = Out::open(cfg, format, p.rate_hz, p.channels as u16)?;
    let result = record_into(&conn, cfg, format, stop, on_lost, &mut out);
    // Finalize whatever happened: what was recorded stays readable.
    let finished = out.finish();
    let summary = result?;
    finished?;
    if summary.server_gone {
        return Err(Error::ServerGone);
    }
    Ok(summary)
}

/// The ring a recorder copies from, with its write pointer and its end.
struct Feed<'a> {
    ring: &'a ClientRing,
    source: TeeSource,
    samples: &'a [AtomicI32],
    frames: u64,
}

impl Feed<'_> {
    /// Frames written so far (absolute).
    fn write_ptr(&self) -> u64 {
        match self.source {
            TeeSource::Monitor => self.ring.hw_ptr(),
            // Acquire: pairs with the capture thread's Release after writing the frames.
            TeeSource::Capture => self.ring.capture_status().cap_ptr.load(Ordering::Acquire),
        }
    }

    /// True once the write pointer is final: read it after this.
    fn ended(&self) -> bool {
        self.source == TeeSource::Capture && self.ring.capture_status().state.load(Ordering::Acquire) == CAPTURE_ENDED
    }

    /// Sleeps until the write pointer passes `pos` or something changes; a timeout only
    /// leads to the caller's checks.
    fn wait_past(&self, pos: u64) {
        match self.source {
            TeeSource::Monitor => self.ring.wait_hw_ptr(pos + 1, GONE_CHECK),
            TeeSource::Capture => self.ring.wait_cap_ptr(pos + 1, GONE_CHECK),
        };
    }
}

fn record_into(
    conn: &Connection,
    cfg: &TeeConfig,
    format: SampleFormat,
    stop: &AtomicBool,
    on_lost: &mut dyn FnMut(u64),
    out: &mut Out,
) -> Result<TeeSummary> {
    let ring = conn.ring();
    let p = *ring.params();
    let ch = p.channels as usize;
    let feed = match cfg.source {
        TeeSource::Monitor => {
            Feed { ring, source: cfg.source, samples: ring.monitor_ring()?, frames: u64::from(p.monitor_frames) }
        }
        TeeSource::Capture => {
            Feed { ring, source: cfg.source, samples: ring.capture_ring()?, frames: u64::from(p.capture_frames) }
        }
    };
    let counters = ring.counters(conn.slot());
    let limit = cfg.duration_s.map(|s| (s * f64::from(p.rate_hz)).round() as u64);
    let mut pos = conn.start_frame();
    let mut summary = TeeSummary::default();
    let mut buf = vec![0i32; p.period_frames as usize * ch];
    loop {
        if limit.is_some_and(|l| summary.frames >= l) {
            return Ok(summary);
        }
        // The end states are read before the write pointer: after them, the pointer we read
        // is final and everything below it is in the ring.
        let stopping = ring.server_state() == SERVER_STOPPING;
        let ended = feed.ended();
        let wp = feed.write_ptr();
        if pos + feed.frames < wp {
            let lost = wp - feed.frames - pos;
            summary.lost_frames += lost;
            counters.late_frames.store(summary.lost_frames, Ordering::Relaxed);
            on_lost(lost);
            pos = wp - feed.frames;
        }
        if pos < wp {
            let mut n = ((wp - pos) as usize).min(p.period_frames as usize);
            if let Some(l) = limit {
                n = n.min((l - summary.frames) as usize);
            }
            for f in 0..n {
                let at = ((pos + f as u64) % feed.frames) as usize * ch;
                for c in 0..ch {
                    buf[f * ch + c] = feed.samples[at + c].load(Ordering::Relaxed);
                }
            }
            // A paced server waits for no recorder and may have lapped us while we copied:
            // whatever it could have overwritten is counted lost, never kept as garbage.
            let safe_from = feed.write_ptr().saturating_sub(feed.frames);
            let overwritten = safe_from.saturating_sub(pos).min(n as u64) as usize;
            if overwritten > 0 {
                summary.lost_frames += overwritten as u64;
                counters.late_frames.store(summary.lost_frames, Ordering::Relaxed);
                on_lost(overwritten as u64);
            }
            out.write(format, &buf[overwritten * ch..n * ch])?;
            summary.frames += (n - overwritten) as u64;
            pos += n as u64;
            // Release: pairs with the freewheel barrier's Acquire of our read position.
            counters.appl_ptr.store(pos, Ordering::Release);
            if ring.freewheel() {
                ring.ring_doorbell();
            }
            continue;
        }
        if ended {
            summary.input_ended = true;
            return Ok(summary);
        }
        if stopping || crate::transport::peer_hung_up(conn.socket()) {
            // A stopping server says so before it hangs up: read the state again now.
            let stopping = stopping || ring.server_state() == SERVER_STOPPING;
            // Drain what the server wrote before it went: the mapping outlives it.
            if feed.write_ptr() > pos {
                continue;
            }
            // Stopped (SIGINT/SIGTERM): the recording simply ends. Gone without stopping
            // (killed, crashed): the recording is complete up to there, but say so.
            summary.server_gone = !stopping;
            return Ok(summary);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(summary);
        }
        feed.wait_past(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_stream_header_is_a_valid_wav_start() {
        let h = stream_wav_header(SampleFormat::S16Le, 48000, 2);
        assert_eq!(h.len(), 44);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([h[20], h[21]]), 1);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 192_000);
        assert_eq!(u16::from_le_bytes([h[32], h[33]]), 4);
        let f = stream_wav_header(SampleFormat::FloatLe, 44100, 1);
        assert_eq!(u16::from_le_bytes([f[20], f[21]]), 3);
        assert_eq!(u16::from_le_bytes([f[34], f[35]]), 32);
    }
}
