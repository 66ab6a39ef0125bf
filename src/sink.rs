//! Where the mix goes: an ALSA PCM, a WAV file, or nowhere. A sink is opened on the period
//! loop's own thread (an ALSA handle is not `Send`) and then only receives whole periods of
//! clamped mix-scale samples, which it converts into a buffer allocated at open.
//!
//! A sink must never allocate, log or take a contended lock in `write_period`: it runs in
//! the real-time loop. Errors are returned: a device that went away ([`Sink::reopenable`])
//! is handed back to the server's sink keeper (src/server/sinks.rs), which closes it, says
//! so and reopens it; any other error stops the server.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::format::{SampleFormat, mix_to_f32, mix_to_s16, mix_to_s32};

/// A sink as the user names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// `alsa:PCM`.
    Alsa(String),
    /// `wav:PATH`.
    Wav(PathBuf),
    /// `null`.
    Null,
}

impl FromStr for SinkSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<SinkSpec> {
        parse_spec(
            s,
            "sink",
            &[
                (SpecKind::Alsa, |pcm| SinkSpec::Alsa(pcm.into())),
                (SpecKind::Wav, |path| SinkSpec::Wav(path.into())),
                (SpecKind::Null, |_| SinkSpec::Null),
            ],
        )
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Alsa(pcm) => SpecKind::Alsa.print(f, pcm),
            SinkSpec::Wav(p) => SpecKind::Wav.print(f, p.display()),
            SinkSpec::Null => SpecKind::Null.print(f, ""),
        }
    }
}

/// A kind of device in the one grammar of sinks and capture sources: `KIND:ARG`, or a bare
/// `KIND` where it needs no argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpecKind {
    /// `alsa:PCM`; a bare `alsa` is the PCM `default`.
    Alsa,
    /// `wav:PATH`.
    Wav,
    /// `null`, with no argument.
    Null,
}

impl SpecKind {
    /// How the kind is written, for the hint after a spec of no kind.
    fn usage(self) -> &'static str {
        match self {
            SpecKind::Alsa => "alsa:PCM",
            SpecKind::Wav => "wav:PATH",
            SpecKind::Null => "null",
        }
    }

    /// The argument of `s` if `s` is of this kind, or why it is not a valid one.
    fn argument(self, s: &str) -> Option<std::result::Result<&str, &'static str>> {
        match self {
            SpecKind::Null => (s == "null").then_some(Ok("")),
            SpecKind::Alsa if s == "alsa" => Some(Ok("default")),
            SpecKind::Alsa => s.strip_prefix("alsa:").map(|pcm| match pcm {
                "" => Err("no PCM name after 'alsa:'"),
                _ if pcm.contains('\0') => Err("PCM name contains a NUL byte"),
                _ => Ok(pcm),
            }),
            SpecKind::Wav => s.strip_prefix("wav:").map(|path| match path {
                "" => Err("no path after 'wav:'"),
                _ => Ok(path),
            }),
        }
    }

    /// Writes the spec of this kind with `arg`, as [`parse_spec`] reads it back.
    pub(crate) fn print(self, f: &mut fmt::Formatter<'_>, arg: impl fmt::Display) -> fmt::Result {
        match self {
            SpecKind::Alsa => write!(f, "alsa:{arg}"),
            SpecKind::Wav => write!(f, "wav:{arg}"),
            SpecKind::Null => f.write_str("null"),
        }
    }
}

/// A kind a spec may be, with what makes the spec from its argument.
pub(crate) type SpecOf<T> = (SpecKind, fn(&str) -> T);

/// Parses `s` as one of `kinds`. Errors name `what` and the spec as typed.
pub(crate) fn parse_spec<T>(s: &str, what: &str, kinds: &[SpecOf<T>]) -> Result<T> {
    let bad = |why: String| Error::invalid(format!("{what} '{s}'"), why);
    for (kind, make) in kinds {
        if let Some(arg) = kind.argument(s) {
            return arg.map(make).map_err(|why| bad(why.to_string()));
        }
    }
    let usages: Vec<&str> = kinds.iter().map(|(kind, _)| kind.usage()).collect();
    let hint = match usages.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => usages.concat(),
    };
    Err(bad(format!("use {hint}")))
}

/// The stream a sink is opened for.
#[derive(Clone, Copy, Debug)]
pub struct SinkConfig {
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// Channels.
    pub channels: u16,
    /// Device sample format.
    pub format: SampleFormat,
    /// Frames per period (each `write_period` gets exactly one).
    pub period_frames: u32,
    /// Device buffer wanted, in frames: for playback, how far the device runs behind the
    /// server (the server keeps it full), so the latency it adds after the mix.
    pub buffer_frames: u32,
}

/// A place periods go. Opened on one thread, written on another: `Send`.
pub trait Sink: Send {
    /// Writes one period: `period_frames * channels` interleaved, clamped mix-scale samples.
    /// Device sinks block until the device takes it. An error is final for this sink: it is
    /// never written again.
    fn write_period(&mut self, samples: &[i32]) -> Result<()>;
    /// True when a write error means the device went away and may come back (an ALSA PCM:
    /// unplugged, lost on resume, its server gone), so the server drops it and opens it
    /// again later; false when the error is final (a WAV file: reopening would overwrite
    /// what was written), the default.
    fn reopenable(&self) -> bool {
        false
    }
    /// True when the device's own timing paces the loop (ALSA); false for wav and null,
    /// which the server paces with the monotonic clock, or not at all in freewheel.
    fn paces_itself(&self) -> bool {
        false
    }
    /// Device xruns recovered so far; 0 for sinks without a device.
    fn xruns(&self) -> u64 {
        0
    }
    /// Frames the device holds beyond what the server took (its buffer, kept full), as
    /// the device granted it; 0 for sinks without one.
    fn device_buffer_frames(&self) -> u32 {
        0
    }
    /// Flushes and closes: ALSA drains, WAV finalizes its header; nothing to do for the
    /// rest. Idempotent.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Opens the sink.
pub fn open_sink(spec: &SinkSpec, cfg: &SinkConfig) -> Result<Box<dyn Sink>> {
    try_open_sink(spec, cfg).map_err(|f| f.error)
}

/// Why a sink did not open.
#[derive(Debug)]
pub struct OpenFailed {
    /// One line for the user, naming the sink.
    pub error: Error,
    /// The device is simply not there (snd_pcm_open failed: unplugged, not yet back after a
    /// resume, its server down), as opposed to there but unable to play the server's stream
    /// (it refuses the format, rate, channels or buffer), which the user must hear about.
    pub absent: bool,
}

/// Opens the sink, telling a device that is not there from one that cannot play our stream.
pub fn try_open_sink(spec: &SinkSpec, cfg: &SinkConfig) -> std::result::Result<Box<dyn Sink>, OpenFailed> {
    let there = |error| OpenFailed { error, absent: false };
    match spec {
        SinkSpec::Null => Ok(Box::new(NullSink)),
        SinkSpec::Wav(path) => Ok(Box::new(WavSink::create(spec, path, cfg).map_err(there)?)),
        SinkSpec::Alsa(pcm) => Ok(Box::new(AlsaSink::open(spec, pcm, cfg)?)),
    }
}

struct NullSink;

impl Sink for NullSink {
    fn write_period(&mut self, _samples: &[i32]) -> Result<()> {
        Ok(())
    }
    fn reopenable(&self) -> bool {
        true
    }
}

/// A WAV file being written in a device format (16- or 32-bit integer, or 32-bit IEEE
/// float): the one writer of WAV files, for the WAV sink and for dmix-tee. It is always
/// finalized, on drop if not before, and a file whose last writes failed is repaired.
pub(crate) struct WavFile {
    path: PathBuf,
    format: SampleFormat,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl WavFile {
    /// Creates (or truncates) `path`, writing its header.
    pub(crate) fn create(
        path: &std::path::Path,
        format: SampleFormat,
        rate_hz: u32,
        channels: u16,
    ) -> std::result::Result<WavFile, hound::Error> {
        let (bits, sample_format) = match format {
            SampleFormat::S16Le => (16, hound::SampleFormat::Int),
            SampleFormat::S32Le => (32, hound::SampleFormat::Int),
            SampleFormat::FloatLe => (32, hound::SampleFormat::Float),
        };
        let spec = hound::WavSpec { channels, sample_rate: rate_hz, bits_per_sample: bits, sample_format };
        let writer = hound::WavWriter::create(path, spec)?;
        Ok(WavFile { path: path.to_path_buf(), format, writer: Some(writer) })
    }

    /// Appends mix-scale samples in the file's format. Nothing after [`WavFile::finalize`].
    pub(crate) fn write(&mut self, samples: &[i32]) -> std::result::Result<(), hound::Error> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        // Sample by sample into hound's BufWriter: no allocation.
        match self.format {
            SampleFormat::S16Le => samples.iter().try_for_each(|&m| w.write_sample(mix_to_s16(m))),
            SampleFormat::S32Le => samples.iter().try_for_each(|&m| w.write_sample(mix_to_s32(m))),
            SampleFormat::FloatLe => samples.iter().try_for_each(|&m| w.write_sample(mix_to_f32(m))),
        }
    }

    /// Flushes and writes the header's sizes. Idempotent.
    pub(crate) fn finalize(&mut self) -> std::result::Result<(), hound::Error> {
        match self.writer.take() {
            Some(w) => w.finalize().inspect_err(|_| {
                // The last writes failed (a full disk, a file-size limit): hound could not
                // write its header. Make the header describe what did reach the disk.
                let _ = repair_wav(&self.path);
            }),
            None => Ok(()),
        }
    }
}

impl Drop for WavFile {
    fn drop(&mut self) {
        // Best effort: a WAV being written is always finalized, even on an error path that
        // skipped finalize(); the error has nowhere to go from a destructor.
        let _ = self.finalize();
    }
}

/// The WAV sink: a [`WavFile`] whose errors name the sink.
struct WavSink {
    name: String,
    file: WavFile,
}

impl WavSink {
    fn create(spec: &SinkSpec, path: &std::path::Path, cfg: &SinkConfig) -> Result<WavSink> {
        let name = spec.to_string();
        let file = WavFile::create(path, cfg.format, cfg.rate_hz, cfg.channels)
            .map_err(|e| Error::Device { sink: name.clone(), reason: format!("cannot create: {e}") })?;
        Ok(WavSink { name, file })
    }

    fn fail(&self, e: &hound::Error) -> Error {
        Error::Device { sink: self.name.clone(), reason: format!("write failed: {e}") }
    }
}

impl Sink for WavSink {
    fn write_period(&mut self, samples: &[i32]) -> Result<()> {
        self.file.write(samples).map_err(|e| self.fail(&e))
    }
    fn finish(&mut self) -> Result<()> {
        self.file.finalize().map_err(|e| self.fail(&e))
    }
}

/// Makes a WAV file whose writer failed readable: sets the RIFF and data chunk sizes to
/// the whole frames that are on disk and cuts off a partial frame. Leaves a file without a
/// complete header (nothing to keep) alone.
pub(crate) fn repair_wav(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut head = vec![0u8; len.min(4096) as usize];
    f.read_exact(&mut head)?;
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(bad());
    }
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let (mut at, mut block) = (12usize, 0u64);
    while at + 8 <= head.len() {
        let (id, size) = (&head[at..at + 4], u32_at(&head, at + 4) as usize);
        if id == b"fmt " && at + 8 + 14 <= head.len() {
            block = u64::from(u16::from_le_bytes([head[at + 20], head[at + 21]]));
        }
        if id == b"data" {
            let data_at = (at + 8) as u64;
            if block == 0 || len < data_at {
                return Err(bad());
            }
            let data = (len - data_at) / block * block;
            let data32 = u32::try_from(data).map_err(|_| bad())?;
            f.set_len(data_at + data)?;
            f.seek(SeekFrom::Start(4))?;
            f.write_all(&((data_at + data - 8) as u32).to_le_bytes())?;
            f.seek(SeekFrom::Start(data_at - 4))?;
            f.write_all(&data32.to_le_bytes())?;
            return f.sync_data();
        }
        at += 8 + size + (size & 1);
    }
    Err(bad())
}

/// The device format's samples, preallocated for one period (playback and capture).
pub(crate) enum AlsaBuf {
    S16(Vec<i16>),
    S32(Vec<i32>),
    F32(Vec<f32>),
}

impl AlsaBuf {
    /// `samples` zeroed samples in `format`.
    pub(crate) fn new(format: SampleFormat, samples: usize) -> AlsaBuf {
        match format {
            SampleFormat::S16Le => AlsaBuf::S16(vec![0; samples]),
            SampleFormat::S32Le => AlsaBuf::S32(vec![0; samples]),
            SampleFormat::FloatLe => AlsaBuf::F32(vec![0.0; samples]),
        }
    }
}

/// Recovers from an I/O error that a running stream can survive: an xrun (counted, and the
/// stream re-prepared), a suspend (resumed, or re-prepared when the driver cannot), an
/// interrupted call. Any other error is returned.
pub(crate) fn recover(pcm: &alsa::PCM, e: alsa::Error, xruns: &mut u64) -> std::result::Result<(), alsa::Error> {
    match e.errno() {
        libc::EPIPE => {
            *xruns += 1;
            pcm.prepare()
        }
        libc::ESTRPIPE => {
            if pcm.resume().is_err() {
                pcm.prepare()?;
            }
            Ok(())
        }
        libc::EINTR | libc::EAGAIN => Ok(()),
        _ => Err(e),
    }
}

/// An ALSA PCM opened for blocking playback, interleaved.
struct AlsaSink {
    name: String,
    pcm: alsa::PCM,
    buf: AlsaBuf,
    channels: usize,
    xruns: u64,
    /// The buffer the device granted, in frames.
    buffer_frames: u32,
    finished: bool,
}

impl AlsaSink {
    fn open(spec: &SinkSpec, pcm_name: &str, cfg: &SinkConfig) -> std::result::Result<AlsaSink, OpenFailed> {
        let name = spec.to_string();
        let pcm = open_pcm_checked(&name, pcm_name, alsa::Direction::Playback, cfg)?;
        let buffer = pcm.hw_params_current().and_then(|hw| hw.get_buffer_size()).map_err(|e| OpenFailed {
            error: Error::Device { sink: name.clone(), reason: alsa_reason("buffer size", &e) },
            absent: false,
        })?;
        let buf = AlsaBuf::new(cfg.format, cfg.period_frames as usize * usize::from(cfg.channels));
        Ok(AlsaSink {
            name,
            pcm,
            buf,
            channels: usize::from(cfg.channels),
            xruns: 0,
            buffer_frames: u32::try_from(buffer).unwrap_or(u32::MAX),
            finished: false,
        })
    }

    /// Writes all of `data`, recovering from underruns (counted) and suspends.
    fn write_all<S: Copy>(
        pcm: &alsa::PCM,
        io: &alsa::pcm::IO<'_, S>,
        data: &[S],
        channels: usize,
        xruns: &mut u64,
    ) -> std::result::Result<(), alsa::Error> {
        let mut off = 0;
        while off < data.len() {
            match io.writei(&data[off..]) {
                Ok(frames) => off += frames * channels,
                // An underrun (the device ran dry) is counted; then write on.
                Err(e) => recover(pcm, e, xruns)?,
            }
        }
        Ok(())
    }
}

/// Opens an ALSA PCM for blocking, interleaved I/O in the server's format, rate and channel
/// count, with the period and buffer nearest to `cfg`. Errors are one line naming `name`.
/// A playback stream starts once its buffer is full; a capture stream at the first read.
pub(crate) fn open_pcm(name: &str, pcm_name: &str, dir: alsa::Direction, cfg: &SinkConfig) -> Result<alsa::PCM> {
    open_pcm_checked(name, pcm_name, dir, cfg).map_err(|f| f.error)
}

/// [`open_pcm`], telling a device that is not there (snd_pcm_open failed) from one that
/// refuses our parameters.
fn open_pcm_checked(
    name: &str,
    pcm_name: &str,
    dir: alsa::Direction,
    cfg: &SinkConfig,
) -> std::result::Result<alsa::PCM, OpenFailed> {
    let pcm = open_handle(name, pcm_name, dir).map_err(|error| OpenFailed { error, absent: true })?;
    configure_pcm(name, &pcm, dir, cfg).map_err(|error| OpenFailed { error, absent: false })?;
    Ok(pcm)
}

fn open_handle(name: &str, pcm_name: &str, dir: alsa::Direction) -> Result<alsa::PCM> {
    // alsa-lib prints its own diagnostics to stderr; catch them on this thread so the
    // user sees one line from us, not an ALSA trace.
    let _quiet = alsa::Output::local_error_handler();
    alsa::PCM::new(pcm_name, dir, false).map_err(|e| {
        let mut reason = alsa_reason("cannot open", &e);
        if e.errno() == libc::EDEADLK {
            // The dmixrs plugin refuses to connect to the process it is loaded in.
            reason.push_str(
                "; this is the dmixrs plugin pointing back at this server (is dmixrs the default device?): give \
                 the server a device, e.g. --sink alsa:sysdefault",
            );
        } else if e.errno() == libc::ENOENT || e.errno() == libc::ENODEV || !std::path::Path::new("/dev/snd").exists() {
            reason.push_str(match dir {
                alsa::Direction::Playback => "; no sound card here? use --sink wav:PATH or --sink null",
                alsa::Direction::Capture => "; no sound card here? use --capture wav:PATH",
            });
        }
        Error::Device { sink: name.to_string(), reason }
    })
}

fn configure_pcm(name: &str, pcm: &alsa::PCM, dir: alsa::Direction, cfg: &SinkConfig) -> Result<()> {
    use alsa::pcm::{Access, Format, HwParams};
    let _quiet = alsa::Output::local_error_handler();
    let dev = |call: &str, e: alsa::Error| Error::Device { sink: name.to_string(), reason: alsa_reason(call, &e) };
    let format = match cfg.format {
        SampleFormat::S16Le => Format::s16(),
        SampleFormat::S32Le => Format::s32(),
        SampleFormat::FloatLe => Format::float(),
    };
    {
        let hw = HwParams::any(pcm).map_err(|e| dev("hw params", e))?;
        hw.set_access(Access::RWInterleaved).map_err(|e| dev("interleaved access", e))?;
        hw.set_format(format).map_err(|e| dev(&format!("format {}", cfg.format), e))?;
        hw.set_channels(u32::from(cfg.channels)).map_err(|e| dev(&format!("{} channels", cfg.channels), e))?;
        hw.set_rate(cfg.rate_hz, alsa::ValueOr::Nearest)
            .map_err(|e| dev(&format!("rate {} Hz (exactly)", cfg.rate_hz), e))?;
        hw.set_period_size_near(alsa::pcm::Frames::from(cfg.period_frames), alsa::ValueOr::Nearest)
            .map_err(|e| dev("period size", e))?;
        hw.set_buffer_size_near(alsa::pcm::Frames::from(cfg.buffer_frames)).map_err(|e| dev("buffer size", e))?;
        pcm.hw_params(&hw).map_err(|e| dev("hw params", e))?;
    }
    {
        let hw = pcm.hw_params_current().map_err(|e| dev("hw params", e))?;
        let buffer = hw.get_buffer_size().map_err(|e| dev("buffer size", e))?;
        let period = hw.get_period_size().map_err(|e| dev("period size", e))?;
        let sw = pcm.sw_params_current().map_err(|e| dev("sw params", e))?;
        // Playback starts once the device buffer is full, so the first periods do not
        // underrun; capture starts at the first read. Either wakes per period.
        let start = match dir {
            alsa::Direction::Playback => buffer,
            alsa::Direction::Capture => 1,
        };
        sw.set_start_threshold(start).map_err(|e| dev("start threshold", e))?;
        sw.set_avail_min(period).map_err(|e| dev("avail min", e))?;
        pcm.sw_params(&sw).map_err(|e| dev("sw params", e))?;
    }
    Ok(())
}

pub(crate) fn alsa_reason(call: &str, e: &alsa::Error) -> String {
    let errno = e.errno();
    let text = nix::errno::Errno::from_raw(errno).desc();
    format!("{call}: {text} ({}: errno {errno})", e.func())
}

impl Sink for AlsaSink {
    fn write_period(&mut self, samples: &[i32]) -> Result<()> {
        let (pcm, ch, xruns) = (&self.pcm, self.channels, &mut self.xruns);
        let r = match &mut self.buf {
            AlsaBuf::S16(b) => {
                b.iter_mut().zip(samples).for_each(|(o, &m)| *o = mix_to_s16(m));
                pcm.io_i16().and_then(|io| Self::write_all(pcm, &io, b, ch, xruns))
            }
            AlsaBuf::S32(b) => {
                b.iter_mut().zip(samples).for_each(|(o, &m)| *o = mix_to_s32(m));
                pcm.io_i32().and_then(|io| Self::write_all(pcm, &io, b, ch, xruns))
            }
            AlsaBuf::F32(b) => {
                b.iter_mut().zip(samples).for_each(|(o, &m)| *o = mix_to_f32(m));
                pcm.io_f32().and_then(|io| Self::write_all(pcm, &io, b, ch, xruns))
            }
        };
        r.map_err(|e| Error::Device { sink: self.name.clone(), reason: alsa_reason("write", &e) })
    }
    fn reopenable(&self) -> bool {
        true
    }
    fn paces_itself(&self) -> bool {
        true
    }
    fn xruns(&self) -> u64 {
        self.xruns
    }
    fn device_buffer_frames(&self) -> u32 {
        self.buffer_frames
    }
    fn finish(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        // A stream shorter than the start threshold never started: start it so drain plays it.
        if self.pcm.state() == alsa::pcm::State::Prepared {
            let _ = self.pcm.start();
        }
        self.pcm.drain().map_err(|e| Error::Device { sink: self.name.clone(), reason: alsa_reason("drain", &e) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(format: SampleFormat) -> SinkConfig {
        SinkConfig { rate_hz: 48000, channels: 2, format, period_frames: 256, buffer_frames: 1024 }
    }

    fn ramp() -> Vec<i32> {
        (0..512).map(|i| (i - 256) * 30000).collect()
    }

    #[test]
    fn sink_specs_parse_and_print_back() {
        for s in ["null", "alsa:default", "alsa:hw:0,0", "wav:/tmp/x.wav", "wav:rel.wav"] {
            assert_eq!(s.parse::<SinkSpec>().unwrap().to_string(), s);
        }
        assert_eq!("alsa".parse::<SinkSpec>().unwrap(), SinkSpec::Alsa("default".into()));
        for bad in ["", "wav:", "alsa:", "pulse", "file:/x"] {
            let e = bad.parse::<SinkSpec>().unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }

    #[test]
    fn sink_and_capture_spec_errors_keep_their_wording() {
        use crate::capture::SourceSpec;
        let sink = |s: &str| s.parse::<SinkSpec>().unwrap_err().to_string();
        let source = |s: &str| s.parse::<SourceSpec>().unwrap_err().to_string();
        assert_eq!(sink("pulse"), "sink 'pulse': use alsa:PCM, wav:PATH or null");
        assert_eq!(sink("wav"), "sink 'wav': use alsa:PCM, wav:PATH or null");
        assert_eq!(sink("null:x"), "sink 'null:x': use alsa:PCM, wav:PATH or null");
        assert_eq!(sink("wav:"), "sink 'wav:': no path after 'wav:'");
        assert_eq!(sink("alsa:"), "sink 'alsa:': no PCM name after 'alsa:'");
        assert_eq!(sink("alsa:a\0b"), "sink 'alsa:a\0b': PCM name contains a NUL byte");
        assert_eq!(source("null"), "capture source 'null': use alsa:PCM or wav:PATH");
        assert_eq!(source("wav:"), "capture source 'wav:': no path after 'wav:'");
        assert_eq!(source("alsa:"), "capture source 'alsa:': no PCM name after 'alsa:'");
        assert_eq!(source("alsa:a\0b"), "capture source 'alsa:a\0b': PCM name contains a NUL byte");
    }

    #[test]
    fn sink_wav_round_trips_each_format() {
        let t = tempfile::tempdir().unwrap();
        for f in SampleFormat::ALL {
            let path = t.path().join(format!("{f}.wav"));
            let spec = SinkSpec::Wav(path.clone());
            let mut s = open_sink(&spec, &cfg(f)).unwrap();
            s.write_period(&ramp()).unwrap();
            s.write_period(&ramp()).unwrap();
            s.finish().unwrap();
            let mut r = hound::WavReader::open(&path).unwrap();
            let want: Vec<i32> = ramp().into_iter().chain(ramp()).collect();
            match f {
                SampleFormat::S16Le => {
                    let got: Vec<i32> = r.samples::<i16>().map(|s| i32::from(s.unwrap()) << 8).collect();
                    assert_eq!(got, want.iter().map(|m| (m >> 8) << 8).collect::<Vec<_>>());
                }
                SampleFormat::S32Le => {
                    let got: Vec<i32> = r.samples::<i32>().map(|s| s.unwrap() >> 8).collect();
                    assert_eq!(got, want);
                }
                SampleFormat::FloatLe => {
                    assert_eq!(r.spec().sample_format, hound::SampleFormat::Float);
                    let got: Vec<i32> = r.samples::<f32>().map(|s| (s.unwrap() * 8_388_608.0) as i32).collect();
                    assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn sink_wav_is_finalized_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("drop.wav");
        {
            let mut s = open_sink(&SinkSpec::Wav(path.clone()), &cfg(SampleFormat::S16Le)).unwrap();
            s.write_period(&ramp()).unwrap();
        }
        assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 256);
    }

    #[test]
    fn sink_wav_repair_keeps_the_whole_frames_on_disk() {
        let t = tempfile::tempdir().unwrap();
        for f in SampleFormat::ALL {
            let path = t.path().join(format!("{f}.wav"));
            let mut s = open_sink(&SinkSpec::Wav(path.clone()), &cfg(f)).unwrap();
            s.write_period(&ramp()).unwrap();
            s.finish().unwrap();
            // What a failed writer leaves: sizes still saying 0 (hound's initial header)
            // and a partial frame at the end.
            let mut bytes = std::fs::read(&path).unwrap();
            let data_at = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
            bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
            bytes[data_at - 4..data_at].copy_from_slice(&0u32.to_le_bytes());
            bytes.push(0x55);
            std::fs::write(&path, &bytes).unwrap();
            repair_wav(&path).unwrap();
            let r = hound::WavReader::open(&path).unwrap();
            assert_eq!(r.duration(), 256, "{f}");
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, bytes.len() - 1, "{f}");
        }
        let junk = t.path().join("junk.wav");
        std::fs::write(&junk, b"not a wav").unwrap();
        assert!(repair_wav(&junk).is_err());
    }

    #[test]
    fn sink_wav_in_a_missing_directory_is_one_clear_error() {
        let spec = SinkSpec::Wav("/nonexistent-dir/x.wav".into());
        let e = open_sink(&spec, &cfg(SampleFormat::S16Le)).err().unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::Device);
        let msg = e.to_string();
        assert!(msg.starts_with("wav:/nonexistent-dir/x.wav: cannot create"), "{msg}");
    }

    #[test]
    fn sink_alsa_file_plugin_gets_exact_samples() {
        let t = tempfile::tempdir().unwrap();
        for f in SampleFormat::ALL {
            let raw = t.path().join(format!("{f}.raw"));
            let spec = SinkSpec::Alsa(format!("file:'{}',raw", raw.display()));
            let mut s = open_sink(&spec, &cfg(f)).unwrap();
            for _ in 0..6 {
                s.write_period(&ramp()).unwrap();
            }
            s.finish().unwrap();
            let bytes = std::fs::read(&raw).unwrap();
            let mut want = Vec::new();
            for _ in 0..6 {
                for &m in &ramp() {
                    let mut b = [0u8; 4];
                    f.mix_to_le_bytes(m, &mut b[..f.bytes()]);
                    want.extend_from_slice(&b[..f.bytes()]);
                }
            }
            assert_eq!(bytes, want, "{f}");
        }
    }

    #[test]
    fn sink_alsa_unknown_pcm_is_one_clear_error() {
        let e = open_sink(&SinkSpec::Alsa("no_such_pcm_xyz".into()), &cfg(SampleFormat::S16Le)).err().unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::Device);
        let msg = e.to_string();
        assert!(msg.starts_with("alsa:no_such_pcm_xyz: cannot open"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
