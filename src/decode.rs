//! Opening an input (a file, or stdin as "-") and decoding it to interleaved frames at the
//! server's rate and channel count, at the mix scale. Containers and codecs are symphonia's
//! (WAV, FLAC, MP3, Ogg Vorbis, AAC in MP4/M4A, and more); headerless PCM (`-t raw`) is read
//! here. Integer sources reach the mix scale exactly; the conversion is a float round trip
//! only where a resampler or a gain is in the way.
//!
//! Every problem with an input is an [`Error::Input`] naming the input as the user typed it.

use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use symphonia::core::audio::GenericAudioBufferRef;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::AudioDecoder;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known::{CODEC_ID_ALAC, CODEC_ID_WAVPACK};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

use crate::convert::{ChannelMap, Gain, RateConverter};
use crate::error::{Error, Result};
use crate::format::{SampleFormat, f64_to_mix, s32_to_mix};

/// The most channels an input may have.
pub const MAX_INPUT_CHANNELS: usize = 64;
/// Input rates accepted, in Hz.
pub const INPUT_RATES: std::ops::RangeInclusive<u32> = 1000..=1_000_000;
/// Frames per chunk read from a raw input.
const RAW_CHUNK_FRAMES: usize = 4096;
/// Consecutive undecodable packets tolerated (skipped) before the input is called corrupt.
const MAX_BAD_PACKETS: u32 = 3;

/// The server's rate and channel count.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// Channels.
    pub channels: u16,
}

/// Headerless PCM, as aplay's `-t raw -f -r -c` describe it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawSpec {
    /// Sample format.
    pub format: SampleFormat,
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// Channels.
    pub channels: u16,
}

/// How to decode.
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// The input is headerless PCM in this format.
    pub raw: Option<RawSpec>,
    /// Gain in dB.
    pub volume_db: f64,
    /// Raised to stop: stdin ("-") then reads as ended, even while it blocks (the binaries
    /// pass their signal flag, made by `cli::stop_flag`). `None`: stdin is read to its end.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Where decoded frames come from, before conversion.
enum Source {
    Raw {
        reader: Box<dyn Read>,
        spec: RawSpec,
        bytes: Vec<u8>,
        /// The container promised a length (a WAV's data chunk): an input that ends inside
        /// a frame is cut off, which the length check reports, not a malformed raw stream.
        promised: bool,
    },
    Sym {
        format: Box<dyn FormatReader>,
        decoder: Box<dyn AudioDecoder>,
        track: u32,
        scratch_i: Vec<i32>,
        scratch_f: Vec<f64>,
        /// The container marks its end (Ogg's last-page flag), so an end of input before it
        /// means the file is cut off. Elsewhere the input simply ends (a WAV of unknown length
        /// from `ffmpeg -f wav -`).
        marks_end: bool,
    },
}

/// An open input, decoding to the target format.
pub struct Decoder {
    path: String,
    source: Source,
    what: String,
    in_rate: u32,
    in_channels: usize,
    target: Target,
    map: ChannelMap,
    rate: Option<RateConverter>,
    gain: Gain,
    /// Source frames the container promises, if it says.
    promised_frames: Option<u64>,
    /// Lossless codecs must deliver exactly the promised frames; lossy ones within a margin
    /// (encoder delay and padding are trimmed by the gapless decoder).
    exact_length: bool,
    decoded_frames: u64,
    bad_packets: u32,
    /// The input ended before the container's end mark (see `Source::Sym::marks_end`).
    cut_off: bool,
    src: Vec<i32>,
    mapped: Vec<i32>,
    ended: bool,
}

impl Decoder {
    /// Opens `path` ("-" for stdin) for decoding to `target`.
    pub fn open(path: &str, target: Target, opts: &DecodeOptions) -> Result<Decoder> {
        let gain = Gain::from_db(opts.volume_db)?;
        let input = if path == "-" {
            let stop = opts.stop.clone().unwrap_or_default();
            Input::Stdin(crate::stdin::InterruptibleStdin::new(stop))
        } else {
            Input::File(open_file(path)?)
        };
        let (source, what, in_rate, in_channels, promised, exact) = match opts.raw {
            Some(spec) => {
                check_shape(path, spec.rate_hz, usize::from(spec.channels))?;
                let frame_bytes = spec.format.bytes() * usize::from(spec.channels);
                let promised =
                    if path == "-" { None } else { std::fs::metadata(path).ok().map(|m| m.len() / frame_bytes as u64) };
                let what = format!("raw {}", spec.format);
                let bytes = Vec::with_capacity(RAW_CHUNK_FRAMES * frame_bytes);
                let reader: Box<dyn Read> = match input {
                    Input::Stdin(s) => Box::new(s),
                    Input::File(f) => Box::new(BufReader::new(f)),
                };
                let source = Source::Raw { reader, spec, bytes, promised: false };
                (source, what, spec.rate_hz, usize::from(spec.channels), promised, true)
            }
            None => match input {
                Input::File(mut f) => match wav::probe(&mut f) {
                    Some(w) => {
                        let spec = w.spec;
                        let frame_bytes = spec.format.bytes() * usize::from(spec.channels);
                        let bytes = Vec::with_capacity(RAW_CHUNK_FRAMES * frame_bytes);
                        // As symphonia names the codec.
                        let what = match spec.format {
                            SampleFormat::S16Le => "PCM_S16LE",
                            SampleFormat::S32Le => "PCM_S32LE",
                            SampleFormat::FloatLe => "PCM_F32LE",
                        }
                        .to_string();
                        let promised = Some(w.data_bytes / frame_bytes as u64);
                        let source =
                            Source::Raw { reader: Box::new(f.take(w.data_bytes)), spec, bytes, promised: true };
                        (source, what, spec.rate_hz, usize::from(spec.channels), promised, true)
                    }
                    None => open_symphonia(path, Input::File(f))?,
                },
                stdin => open_symphonia(path, stdin)?,
            },
        };
        let out_channels = usize::from(target.channels);
        let rate = if in_rate == target.rate_hz {
            None
        } else {
            Some(
                RateConverter::new(in_rate, target.rate_hz, out_channels)
                    .map_err(|e| Error::input(path, e.to_string()))?,
            )
        };
        Ok(Decoder {
            path: path.to_string(),
            source,
            what,
            in_rate,
            in_channels,
            target,
            map: ChannelMap::new(in_channels, out_channels),
            rate,
            gain,
            promised_frames: promised,
            exact_length: exact,
            decoded_frames: 0,
            bad_packets: 0,
            cut_off: false,
            src: Vec::new(),
            mapped: Vec::new(),
            ended: false,
        })
    }

    /// One line for humans: "FLAC, 44100 Hz, 2 ch -> 48000 Hz, 2 ch".
    pub fn description(&self) -> String {
        let mut s = format!("{}, {} Hz, {} ch", self.what, self.in_rate, self.in_channels);
        if self.in_rate != self.target.rate_hz || self.in_channels != usize::from(self.target.channels) {
            s.push_str(&format!(" -> {} Hz, {} ch", self.target.rate_hz, self.target.channels));
        }
        s
    }

    /// Length in frames at the target rate, when the container says.
    pub fn total_frames(&self) -> Option<u64> {
        self.promised_frames.map(|n| RateConverter::output_len(n, self.in_rate, self.target.rate_hz))
    }

    /// Clears `out` and fills it with the next frames (target rate and channels, mix scale).
    /// Returns the number of frames; 0 only at the end of the input.
    pub fn read(&mut self, out: &mut Vec<i32>) -> Result<usize> {
        out.clear();
        let ch = usize::from(self.target.channels);
        while out.is_empty() {
            if self.ended {
                return Ok(0);
            }
            self.src.clear();
            let got = self.next_source_frames()?;
            if got == 0 {
                self.ended = true;
                self.check_length()?;
                if let Some(rc) = self.rate.as_mut() {
                    rc.finish(out).map_err(|e| Error::input(&self.path, e.to_string()))?;
                }
            } else {
                self.decoded_frames += got as u64;
                if matches!(self.map, ChannelMap::Same) && self.rate.is_none() {
                    // Already in the target's layout and rate: hand the frames over as they are.
                    std::mem::swap(&mut self.src, out);
                    continue;
                }
                self.mapped.clear();
                self.map.apply(&self.src, self.in_channels, ch, &mut self.mapped);
                match self.rate.as_mut() {
                    Some(rc) => rc.process(&self.mapped, out).map_err(|e| Error::input(&self.path, e.to_string()))?,
                    None => out.extend_from_slice(&self.mapped),
                }
            }
        }
        self.gain.apply(out);
        Ok(out.len() / ch)
    }

    fn check_length(&self) -> Result<()> {
        let Some(promised) = self.promised_frames else {
            if self.cut_off {
                return Err(Error::input(
                    &self.path,
                    format!("corrupt or truncated: the stream is cut off after {} frames", self.decoded_frames),
                ));
            }
            return Ok(());
        };
        let short = if self.exact_length {
            self.decoded_frames < promised
        } else {
            // Gapless trimming removes encoder delay and padding: a few thousand frames.
            self.decoded_frames + 8192 < promised
        };
        if short {
            return Err(Error::input(
                &self.path,
                format!("corrupt or truncated: the stream ends after {} of {promised} frames", self.decoded_frames),
            ));
        }
        Ok(())
    }

    /// Decodes the next source frames into `self.src` (mix scale, source layout).
    fn next_source_frames(&mut self) -> Result<usize> {
        match &mut self.source {
            Source::Raw { reader, spec, bytes, promised } => {
                read_raw(&self.path, reader.as_mut(), spec, bytes, *promised, &mut self.src)
            }
            Source::Sym { format, decoder, track, scratch_i, scratch_f, marks_end } => loop {
                let packet = match format.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => return Ok(0),
                    Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        self.cut_off = *marks_end;
                        return Ok(0);
                    }
                    Err(SymError::ResetRequired) => {
                        return Err(Error::input(&self.path, "unsupported: the stream changes format midway"));
                    }
                    Err(e) => {
                        return Err(Error::input(&self.path, format!("corrupt or truncated: {e}")));
                    }
                };
                if packet.track_id != *track {
                    continue;
                }
                let buf = match decoder.decode(&packet) {
                    Ok(b) => b,
                    Err(SymError::DecodeError(e)) => {
                        // One damaged packet is skipped (as players do); several in a row
                        // mean the file is not what it claims to be.
                        self.bad_packets += 1;
                        if self.bad_packets > MAX_BAD_PACKETS {
                            return Err(Error::input(&self.path, format!("corrupt: {e}")));
                        }
                        continue;
                    }
                    Err(e) => return Err(Error::input(&self.path, format!("cannot decode: {e}"))),
                };
                self.bad_packets = 0;
                let frames = buf.frames();
                if frames == 0 {
                    continue;
                }
                if buf.spec().channels().count() != self.in_channels {
                    return Err(Error::input(&self.path, "unsupported: the channel count changes midway"));
                }
                to_mix(&buf, scratch_i, scratch_f, &mut self.src);
                return Ok(frames);
            },
        }
    }
}

/// Brings a decoded buffer to the mix scale: integers exactly (symphonia widens them to
/// 32-bit full scale by shifting), floats rounded.
fn to_mix(buf: &GenericAudioBufferRef<'_>, ints: &mut Vec<i32>, floats: &mut Vec<f64>, out: &mut Vec<i32>) {
    let n = buf.samples_interleaved();
    match buf {
        GenericAudioBufferRef::F32(_) | GenericAudioBufferRef::F64(_) => {
            floats.resize(n, 0.0);
            buf.copy_to_slice_interleaved(&mut floats[..]);
            out.extend(floats.iter().map(|&x| f64_to_mix(x)));
        }
        _ => {
            ints.resize(n, 0);
            buf.copy_to_slice_interleaved(&mut ints[..]);
            out.extend(ints.iter().map(|&s| s32_to_mix(s)));
        }
    }
}

fn read_raw(
    path: &str,
    reader: &mut dyn Read,
    spec: &RawSpec,
    bytes: &mut Vec<u8>,
    promised: bool,
    out: &mut Vec<i32>,
) -> Result<usize> {
    let frame_bytes = spec.format.bytes() * usize::from(spec.channels);
    bytes.resize(RAW_CHUNK_FRAMES * frame_bytes, 0);
    let mut filled = 0;
    while filled < bytes.len() {
        match reader.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::input(path, format!("read failed: {e}"))),
        }
    }
    let left = filled % frame_bytes;
    if promised {
        // Cut off inside a frame: drop the partial frame; the length check reports the cut.
        filled -= left;
    } else if filled < bytes.len() && left != 0 {
        return Err(Error::input(
            path,
            format!("ends with a partial frame: {left} bytes left over ({frame_bytes}-byte frames)"),
        ));
    }
    let samples = bytes[..filled].chunks_exact(spec.format.bytes());
    // The match outside the loops: each is then a plain conversion the compiler vectorises.
    match spec.format {
        SampleFormat::S16Le => out.extend(samples.map(|b| SampleFormat::S16Le.le_bytes_to_mix(b))),
        SampleFormat::S32Le => out.extend(samples.map(|b| SampleFormat::S32Le.le_bytes_to_mix(b))),
        SampleFormat::FloatLe => out.extend(samples.map(|b| SampleFormat::FloatLe.le_bytes_to_mix(b))),
    }
    Ok(filled / frame_bytes)
}

fn check_shape(path: &str, rate: u32, channels: usize) -> Result<()> {
    if !INPUT_RATES.contains(&rate) {
        return Err(Error::input(path, format!("unsupported sample rate {rate} Hz")));
    }
    if channels == 0 || channels > MAX_INPUT_CHANNELS {
        return Err(Error::input(path, format!("unsupported channel count {channels} (1 to {MAX_INPUT_CHANNELS})")));
    }
    Ok(())
}

/// An opened input.
enum Input {
    Stdin(crate::stdin::InterruptibleStdin),
    File(File),
}

fn open_file(path: &str) -> Result<File> {
    let reason = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::input(path, reason(e)))?;
    if meta.is_dir() {
        return Err(Error::input(path, "is a directory"));
    }
    if meta.is_file() && meta.len() == 0 {
        return Err(Error::input(path, "empty file"));
    }
    File::open(path).map_err(|e| Error::input(path, reason(e)))
}

type Opened = (Source, String, u32, usize, Option<u64>, bool);

fn open_symphonia(path: &str, input: Input) -> Result<Opened> {
    let mut hint = Hint::new();
    if let Some(ext) = std::path::Path::new(path).extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let probe = |source: Box<dyn symphonia::core::io::MediaSource>| {
        symphonia::default::get_probe().probe(
            &hint,
            MediaSourceStream::new(source, Default::default()),
            FormatOptions::default(),
            MetadataOptions::default(),
        )
    };
    let probed = match input {
        Input::Stdin(s) => probe(Box::new(ReadOnlySource::new(s))),
        // Seekable, so containers can read their index and trailing metadata.
        Input::File(f) => match probe(Box::new(f)) {
            // A truncated Ogg file fails here: the reader seeks to the last page to learn the
            // length. Read as a stream it plays up to the cut, which is then reported.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                probe(Box::new(ReadOnlySource::new(open_file(path)?)))
            }
            r => r,
        },
    };
    let format = probed.map_err(|e| match e {
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::input(path, "not a recognised audio file (too short)")
        }
        SymError::Unsupported(what) if what.contains("moov") => Error::input(
            path,
            "truncated or unfinished MP4: no 'moov' index (through a pipe, only files written with \
             -movflags +faststart play)",
        ),
        SymError::Unsupported(_) => Error::input(path, "not a recognised audio file (unknown container format)"),
        e => Error::input(path, format!("not a recognised audio file ({e})")),
    })?;
    let track = format.default_track(TrackType::Audio).ok_or_else(|| Error::input(path, "no audio track"))?;
    let Some(CodecParameters::Audio(params)) = track.codec_params.as_ref() else {
        return Err(Error::input(path, "no audio track"));
    };
    let rate = params.sample_rate.ok_or_else(|| Error::input(path, "the file does not state its sample rate"))?;
    let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    check_shape(path, rate, channels)?;
    let codec = params.codec;
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| Error::input(path, format!("unsupported codec ({e})")))?;
    let what = codec_name(decoder.as_ref());
    let exact = codec < CODEC_ID_WAVPACK || codec == CODEC_ID_ALAC;
    let promised = track.num_frames;
    let id = track.id;
    let marks_end = format.format_info().short_name == "ogg";
    Ok((
        Source::Sym { format, decoder, track: id, scratch_i: Vec::new(), scratch_f: Vec::new(), marks_end },
        what,
        rate,
        channels,
        promised,
        exact,
    ))
}

fn codec_name(decoder: &dyn AudioDecoder) -> String {
    decoder.codec_info().short_name.to_uppercase()
}

#[cfg(test)]
mod tests;
mod wav;
