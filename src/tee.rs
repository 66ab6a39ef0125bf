//! `dmix-tee`'s engine: records the monitor ring (the final, clamped mix), or the capture
//! ring (the shared input of `dmix-serve --capture`), from the frame at which it was
//! admitted, to a file (WAV or raw) or to stdout, until a duration, a stop, the end of the
//! input, or the server going away. The output is always finalized.
//!
//! A recorder publishes how far it has read; a freewheel server waits for it, so a
//! recording of an offline render is complete and exact. A paced server does not wait: a
//! recorder that falls more than the ring behind loses frames, and says so.
//!
//! A FIFO is no recording but a live bridge (to snapserver's pipe source, for one): its
//! reader may come, go and stall, and the bridge outlives it. It never holds the server
//! back, and what its reader hears is always the live mix, a fixed few tens of milliseconds
//! behind it: see [`Bridge`]. It ends only on a stop or when the server goes away.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::client::{Connection, GONE_CHECK};
use crate::error::{Error, Result};
use crate::format::SampleFormat;
use crate::protocol::Role;
use crate::ring::ReadSource;
use crate::sink::WavFile;

/// Where the recording goes.
#[derive(Clone, Debug)]
pub enum TeeOutput {
    /// A file, WAV (finalized at the end) or raw.
    File(PathBuf),
    /// Standard output.
    Stdout,
    /// A FIFO: a live bridge to whoever reads it, which may come and go ([`Bridge`]).
    Fifo(PathBuf),
}

impl TeeOutput {
    /// The output a user named: `-` is stdout, an existing FIFO a bridge, anything else a
    /// file (created or truncated).
    pub fn from_arg(arg: &str) -> TeeOutput {
        if arg == "-" {
            return TeeOutput::Stdout;
        }
        let path = PathBuf::from(arg);
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_fifo() => TeeOutput::Fifo(path),
            _ => TeeOutput::File(path),
        }
    }
}

/// What a recording tells its caller as it goes, for its warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeEvent {
    /// The recorder fell more than the ring behind a paced server: frames lost.
    Lost(u64),
    /// A reader opened the FIFO: its stream starts at the live mix.
    ReaderCame,
    /// The FIFO's reader closed it (snapserver stopped or restarted): the bridge waits for
    /// the next one, holding nothing back.
    ReaderGone,
    /// The FIFO's reader fell behind (it stalled, or its clock runs slower than the
    /// server's): the bridge skipped frames until it was back near the live mix.
    Skipped(u64),
    /// The FIFO's reader emptied it (its clock runs faster than the server's): the bridge
    /// added frames of silence so that its next read is whole.
    Padded(u64),
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
    /// Raw PCM instead of WAV.
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
    Wav { path: PathBuf, file: WavFile },
    Raw { path: PathBuf, writer: BufWriter<File> },
    Stream(BufWriter<std::io::Stdout>),
    Bridge(Bridge),
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
            TeeOutput::File(path) if cfg.raw => {
                let file = File::create(path)
                    .map_err(|e| Error::input(path.display().to_string(), format!("cannot create: {e}")))?;
                Ok(Out::Raw { path: path.clone(), writer: BufWriter::new(file) })
            }
            TeeOutput::Fifo(path) => {
                let header = (!cfg.raw).then(|| stream_wav_header(format, rate, channels));
                Ok(Out::Bridge(Bridge::new(path.clone(), header, format.bytes() * usize::from(channels), rate)))
            }
            TeeOutput::File(path) => {
                let file = WavFile::create(path, format, rate, channels)
                    .map_err(|e| Error::input(path.display().to_string(), format!("cannot create: {e}")))?;
                Ok(Out::Wav { path: path.clone(), file })
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

    /// Writes `samples`; `live` when they reach the live end of the ring (a bridge judges
    /// its reader's level only then, not while it writes a new reader's first frames).
    fn write(
        &mut self,
        format: SampleFormat,
        samples: &[i32],
        live: bool,
        on_event: &mut dyn FnMut(TeeEvent),
    ) -> Result<()> {
        match self {
            Out::Wav { path, file } => file
                .write(samples)
                .map_err(|e| Error::Device { sink: path.display().to_string(), reason: format!("write failed: {e}") }),
            Out::Raw { path, writer } => {
                let mut b = [0u8; 4];
                for &m in samples {
                    format.mix_to_le_bytes(m, &mut b[..format.bytes()]);
                    writer.write_all(&b[..format.bytes()]).map_err(|e| Error::Device {
                        sink: path.display().to_string(),
                        reason: format!("write failed: {e}"),
                    })?;
                }
                Ok(())
            }
            Out::Stream(out) => {
                let mut b = [0u8; 4];
                for &m in samples {
                    format.mix_to_le_bytes(m, &mut b[..format.bytes()]);
                    out.write_all(&b[..format.bytes()]).map_err(Error::stdout)?;
                }
                Ok(())
            }
            Out::Bridge(b) => b.write(format, samples, live, on_event),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            // A full disk or a file-size limit: the file repairs itself, keeping what reached
            // the disk readable.
            Out::Wav { path, mut file } => file.finalize().map_err(|e| Error::Device {
                sink: path.display().to_string(),
                reason: format!("finalize failed: {e}"),
            }),
            Out::Raw { path, mut writer } => writer
                .flush()
                .map_err(|e| Error::Device { sink: path.display().to_string(), reason: format!("write failed: {e}") }),
            Out::Stream(mut out) => out.flush().map_err(Error::stdout),
            // Nothing is buffered: what a reader did not take is not worth keeping.
            Out::Bridge(_) => Ok(()),
        }
    }
}

/// The live mix the bridge keeps in the FIFO ahead of its reader. snapserver reads the pipe
/// on a timer, 20 ms at a time (its default `chunk_ms`), and pads a short read with
/// silence: the FIFO must hold a whole read whenever it reads, whatever two schedulers do,
/// so the bridge starts each reader this far behind the live mix and keeps it there.
pub const BRIDGE_TARGET_MS: u32 = 60;
/// Below this after a write the reader has drained the FIFO (its clock runs faster than the
/// server's): silence brings it back to the target, one short gap rather than a padded
/// read every 20 ms from then on.
const BRIDGE_LOW_MS: u32 = 25;
/// Above this the reader has fallen behind (it stalled, or its clock runs slower): the
/// bridge writes nothing until it is back at the target, so that it never hears more than
/// this of old audio.
pub const BRIDGE_HIGH_MS: u32 = 120;
/// Writes of at most this many bytes into a pipe are atomic: whole or not at all (POSIX
/// PIPE_BUF), so a full pipe never cuts a frame in two.
const PIPE_BUF: usize = 4096;

/// A FIFO with a reader that comes and goes: a live bridge.
///
/// - It holds the write end even while no reader is there (opened behind a reader of its
///   own, closed at once), so that a reader that opens the FIFO finds a writer and waits for
///   data: snapserver, finding no writer, reads end of file and opens it again every 100 ms,
///   a window too short for a writer to find.
/// - A reader is there when the write end polls without POLLERR. From then on every write
///   is non-blocking and whole frames. The reader's stream starts with [`BRIDGE_TARGET_MS`]
///   of silence, then the live mix from the moment it came (with a WAV header first when
///   the type is wav: each reader gets a stream of its own).
/// - The reader gone (EPIPE: Rust ignores SIGPIPE, so the write fails instead of killing
///   us), the write end is closed, which frees what the pipe still held: the next reader
///   (snapserver restarted) finds no stale audio. Until it comes the bridge reads nothing,
///   and publishes that it holds nothing back.
/// - How much the reader has not yet read (FIONREAD) keeps it at the target: above
///   [`BRIDGE_HIGH_MS`] nothing is written until it is back at the target, below
///   `BRIDGE_LOW_MS` silence fills it up.
pub struct Bridge {
    path: PathBuf,
    writer: Option<File>,
    connected: bool,
    header: Option<Vec<u8>>,
    frame_bytes: usize,
    target_bytes: usize,
    low_bytes: usize,
    high_bytes: usize,
    /// Frames skipped since the reader fell behind (`Some` while it is behind).
    skipping: Option<u64>,
    /// Frames written since the reader last held less than the low mark: a reader that
    /// holds the margin for a second reads on a clock of its own (snapserver), and one that
    /// then runs dry is padded. One that reads all there is at once (cat, sox) never holds
    /// it, and is never padded.
    held_frames: u64,
    held_enough: u64,
    bytes: Vec<u8>,
}

impl Bridge {
    fn new(path: PathBuf, header: Option<Vec<u8>>, frame_bytes: usize, rate_hz: u32) -> Bridge {
        let bytes_for = |ms: u32| (u64::from(rate_hz) * u64::from(ms) / 1000) as usize * frame_bytes;
        Bridge {
            path,
            writer: None,
            connected: false,
            header,
            frame_bytes,
            target_bytes: bytes_for(BRIDGE_TARGET_MS),
            low_bytes: bytes_for(BRIDGE_LOW_MS),
            high_bytes: bytes_for(BRIDGE_HIGH_MS),
            skipping: None,
            held_frames: 0,
            held_enough: u64::from(rate_hz),
            bytes: Vec::new(),
        }
    }

    fn what(&self) -> String {
        self.path.display().to_string()
    }

    /// Opens the write end if it is not open: behind a reader of our own, so that the open
    /// neither blocks nor fails for want of a reader (ENXIO). A FIFO removed meanwhile is
    /// waited for (snapserver's `mode=create` makes it again).
    fn open_writer(&mut self) -> Result<()> {
        if self.writer.is_some() {
            return Ok(());
        }
        let nonblock = |read: bool| {
            std::fs::OpenOptions::new().read(read).write(!read).custom_flags(libc::O_NONBLOCK).open(&self.path)
        };
        let own_reader = match nonblock(true) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::sys(format!("open {}", self.what()), e)),
        };
        let is_fifo = own_reader.metadata().is_ok_and(|m| m.file_type().is_fifo());
        if !is_fifo {
            return Err(Error::invalid(self.what(), "no longer a FIFO"));
        }
        let writer = nonblock(false).map_err(|e| Error::sys(format!("open {}", self.what()), e))?;
        // Room for more than the high mark, however wide the frames: a full pipe is then
        // always a reader far behind, never a pipe too small. Best effort: the kernel's
        // pipe-max-size may refuse, and a full pipe is handled anyway.
        let want = (2 * self.high_bytes).clamp(65536, 1 << 20);
        let _ = nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(want as libc::c_int));
        drop(own_reader);
        self.writer = Some(writer);
        Ok(())
    }

    /// True when a reader has the FIFO open and the bridge has not started it yet: the
    /// caller starts it with [`Bridge::start`].
    fn reader_came(&mut self) -> Result<bool> {
        if self.connected {
            return Ok(false);
        }
        self.open_writer()?;
        self.has_reader()
    }

    /// True when the FIFO has a reader: its write end polls POLLERR while it has none.
    fn has_reader(&self) -> Result<bool> {
        let Some(w) = &self.writer else { return Ok(false) };
        let mut pfd = [nix::poll::PollFd::new(w.as_fd(), nix::poll::PollFlags::POLLOUT)];
        nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO)
            .map_err(|e| Error::sys(format!("poll {}", self.what()), e))?;
        Ok(pfd[0].revents().is_some_and(|r| !r.contains(nix::poll::PollFlags::POLLERR)))
    }

    /// A new reader's stream begins: its header, if any, then the margin it is kept behind
    /// the live mix, as silence: nothing that played before it came.
    fn start(&mut self) -> Result<()> {
        self.connected = true;
        self.skipping = None;
        self.held_frames = 0;
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        bytes.extend_from_slice(self.header.as_deref().unwrap_or_default());
        bytes.resize(bytes.len() + self.target_bytes, 0);
        let r = self.write_bytes(&bytes);
        self.bytes = bytes;
        r.map(|_| ())
    }

    /// The reader went: close the write end, which frees what it left in the pipe.
    fn reader_gone(&mut self) {
        self.writer = None;
        self.connected = false;
    }

    fn connected(&self) -> bool {
        self.connected
    }

    /// Writes whole frames as far as the pipe takes them; false when it was full.
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<bool> {
        let Some(mut w) = self.writer.as_ref() else { return Ok(false) };
        let piece = (PIPE_BUF / self.frame_bytes).max(1) * self.frame_bytes;
        for chunk in bytes.chunks(piece) {
            match w.write_all(chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.reader_gone();
                    return Ok(false);
                }
                Err(e) => return Err(Error::Device { sink: self.what(), reason: format!("write failed: {e}") }),
            }
        }
        Ok(true)
    }

    fn write(
        &mut self,
        format: SampleFormat,
        samples: &[i32],
        live: bool,
        on_event: &mut dyn FnMut(TeeEvent),
    ) -> Result<()> {
        let Some(w) = &self.writer else { return Ok(()) };
        let frames = (samples.len() * format.bytes() / self.frame_bytes) as u64;
        let queued =
            crate::sys::pipe_bytes(w.as_fd()).map_err(|e| Error::sys(format!("FIONREAD {}", self.what()), e))?;
        let behind = match self.skipping {
            Some(_) => queued > self.target_bytes,
            None => queued > self.high_bytes,
        };
        if behind {
            // Nothing is written, so no EPIPE would tell that the reader went.
            if !self.has_reader()? {
                self.reader_gone();
                return Ok(());
            }
            *self.skipping.get_or_insert(0) += frames;
            return Ok(());
        }
        if let Some(skipped) = self.skipping.take() {
            on_event(TeeEvent::Skipped(skipped));
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        let mut b = [0u8; 4];
        for &m in samples {
            format.mix_to_le_bytes(m, &mut b[..format.bytes()]);
            bytes.extend_from_slice(&b[..format.bytes()]);
        }
        let after = queued + bytes.len();
        let whole = self.write_bytes(&bytes);
        self.bytes = bytes;
        if !whole? {
            if self.connected {
                // Full: a reader far behind. Skip until it is back at the target.
                self.skipping = Some(frames);
            }
            return Ok(());
        }
        if after >= self.low_bytes {
            self.held_frames += frames;
            return Ok(());
        }
        if !live {
            return Ok(());
        }
        let clocked = self.held_frames >= self.held_enough;
        self.held_frames = 0;
        if clocked {
            // It held the margin for a second and no longer does: it reads faster than the
            // server plays. Refill, and watch it hold the margin again.
            self.held_frames = self.held_enough;
            let pad = (self.target_bytes - after) / self.frame_bytes * self.frame_bytes;
            self.bytes.clear();
            self.bytes.resize(pad, 0);
            let silence = std::mem::take(&mut self.bytes);
            let r = self.write_bytes(&silence);
            self.bytes = silence;
            if r? {
                on_event(TeeEvent::Padded((pad / self.frame_bytes) as u64));
            }
        }
        Ok(())
    }
}

/// Records until the duration passes, `stop` is raised or the server goes away (or, from
/// the capture ring, the input ends). `on_event` hears of lost frames and of a FIFO's
/// reader (for warnings).
pub fn record(cfg: &TeeConfig, stop: &AtomicBool, on_event: &mut dyn FnMut(TeeEvent)) -> Result<TeeSummary> {
    let role = match cfg.source {
        TeeSource::Monitor => Role::Tee,
        TeeSource::Capture => Role::Capture,
    };
    let conn = Connection::open(&cfg.device, role, &cfg.name, 0)?;
    let p = *conn.params();
    let format = cfg.format.unwrap_or(p.format);
    let mut out = Out::open(cfg, format, p.rate_hz, p.channels as u16)?;
    let result = record_into(&conn, cfg, format, stop, on_event, &mut out);
    // Finalize whatever happened: what was recorded stays readable.
    let finished = out.finish();
    let summary = result?;
    finished?;
    if summary.server_gone {
        return Err(Error::ServerGone);
    }
    Ok(summary)
}

fn record_into(
    conn: &Connection,
    cfg: &TeeConfig,
    format: SampleFormat,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(TeeEvent),
    out: &mut Out,
) -> Result<TeeSummary> {
    let ring = conn.ring();
    let p = *ring.params();
    let ch = p.channels as usize;
    let feed = conn.reader(match cfg.source {
        TeeSource::Monitor => ReadSource::Monitor,
        TeeSource::Capture => ReadSource::Capture,
    });
    let limit = cfg.duration_s.map(|s| (s * f64::from(p.rate_hz)).round() as u64);
    let start = conn.start_frame();
    let mut pos = start;
    let mut summary = TeeSummary::default();
    let mut buf = vec![0i32; p.period_frames as usize * ch];
    loop {
        // A bridge's duration is the mix's, heard or not; a recording's what it holds.
        let done = if matches!(out, Out::Bridge(_)) { pos.saturating_sub(start) } else { summary.frames };
        if limit.is_some_and(|l| done >= l) {
            return Ok(summary);
        }
        // The end states are read before the write pointer: after them, the pointer we read
        // is final and everything below it is in the ring.
        let stopping = ring.server_stopping();
        let ended = feed.ended();
        let wp = feed.write_ptr();
        if let Out::Bridge(b) = out
            && !b.connected()
        {
            if b.reader_came()? {
                on_event(TeeEvent::ReaderCame);
                // From the live mix on, behind the margin of silence `start` wrote.
                b.start()?;
                pos = wp;
                if !b.connected() {
                    // It went while its first bytes were written (a reader that takes the
                    // header and closes): said here, since no write of the mix will say it.
                    on_event(TeeEvent::ReaderGone);
                }
            } else {
                // Nobody listens: read everything as it comes, holding nothing back (a
                // freewheel server waits for nobody's position).
                pos = wp;
                feed.read_everything();
            }
        }
        if pos + feed.frames() < wp {
            let lost = wp - feed.frames() - pos;
            summary.lost_frames += lost;
            feed.count_lost(lost);
            on_event(TeeEvent::Lost(lost));
            pos = wp - feed.frames();
        }
        if pos < wp {
            let mut n = ((wp - pos) as usize).min(p.period_frames as usize);
            if let Some(l) = limit {
                n = n.min((l - done) as usize);
            }
            // A paced server waits for no recorder and may have lapped us while we copied:
            // whatever it could have overwritten is counted lost, never kept as garbage.
            let overwritten = feed.copy_out(pos, &mut buf[..n * ch]).min(n as u64) as usize;
            if overwritten > 0 {
                summary.lost_frames += overwritten as u64;
                feed.count_lost(overwritten as u64);
                on_event(TeeEvent::Lost(overwritten as u64));
            }
            let live = pos + n as u64 >= wp;
            out.write(format, &buf[overwritten * ch..n * ch], live, on_event)?;
            summary.frames += (n - overwritten) as u64;
            pos += n as u64;
            if let Out::Bridge(b) = out
                && !b.connected()
            {
                on_event(TeeEvent::ReaderGone);
                continue;
            }
            feed.publish_read(pos);
            continue;
        }
        if ended {
            summary.input_ended = true;
            return Ok(summary);
        }
        if stopping || crate::transport::peer_hung_up(conn.socket()) {
            // A stopping server says so before it hangs up: read the state again now.
            let stopping = stopping || ring.server_stopping();
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
        // Until the write pointer passes `pos` or something changes; a timeout only leads
        // to the checks above.
        feed.wait_until(pos + 1, GONE_CHECK);
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
