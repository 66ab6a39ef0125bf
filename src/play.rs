//! `dmix-play`'s engine: decode each input in turn and write it into one continuous stream
//! (gapless: the next file starts on the frame after the last one), drain at the end, and
//! retract what is queued on a stop. Knows nothing of terminals: progress goes to an
//! [`Observer`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::client::{Connection, Flow, Player};
use crate::decode::{DecodeOptions, Decoder, RawSpec, Target};
use crate::error::{Error, Result};
use crate::protocol::Role;

/// A checked dmix-play configuration.
#[derive(Debug)]
pub struct PlayConfig {
    /// Server name or socket path (`-D`).
    pub device: String,
    /// Client name shown by dmix-stat.
    pub name: String,
    /// Files, or "-" for stdin.
    pub inputs: Vec<String>,
    /// Headerless input format (`-t raw`).
    pub raw: Option<RawSpec>,
    /// The volume to start at, dB (`None`: what the server remembers for the name, else 0).
    pub volume_db: Option<f32>,
    /// Stop at the first input that fails instead of playing the rest.
    pub strict: bool,
    /// How far ahead of the device to write, ms; `None`: [`DEFAULT_LATENCY_MS`] on a paced
    /// server, the whole ring in freewheel (where nothing is heard and deeper is faster).
    pub latency_ms: Option<f64>,
}

/// dmix-play's latency on a paced server: 200 ms. The player refills when half of it has
/// played, so it wakes 10 times a second (not every period), and a player descheduled for
/// up to 100 ms is still not heard to gap. Stopping is immediate whatever the latency
/// (queued audio is retracted); what it delays is only a change of input, which dmix-play
/// does not have. pw-cat's default is 100 ms; aplay's buffer is up to 500 ms.
pub const DEFAULT_LATENCY_MS: f64 = 200.0;

/// What the player reports while it plays.
pub trait Observer {
    /// An input was opened.
    fn file_started(&mut self, _input: &str, _description: &str, _total_frames: Option<u64>, _rate_hz: u32) {}
    /// `frames` of the current input were queued so far.
    fn progress(&mut self, _frames: u64) {}
    /// The current input is done.
    fn file_done(&mut self) {}
    /// An input failed; playing goes on with the next unless strict.
    fn file_failed(&mut self, _input: &str, _error: &Error) {}
    /// The latency asked for is more than the server's ring holds: `got_ms` is used.
    fn latency_limited(&mut self, _asked_ms: f64, _got_ms: f64) {}
}

/// How playing ended.
#[derive(Debug, Default)]
pub struct PlaySummary {
    /// Inputs that failed, with why.
    pub failed: Vec<Error>,
    /// A stop (SIGINT) cut playing short.
    pub stopped: bool,
    /// Inputs played to their end.
    pub played: usize,
}

/// Connects, plays every input, drains. Errors that end everything (no server, the server
/// went away) are `Err`; an input that cannot be played is reported and skipped.
/// `stop` also ends a read of stdin that blocks.
pub fn play(cfg: &PlayConfig, stop: &Arc<AtomicBool>, obs: &mut dyn Observer) -> Result<PlaySummary> {
    let conn = Connection::open_at(&cfg.device, Role::Play, &cfg.name, 0, cfg.volume_db)?;
    let p = *conn.params();
    let target = Target { rate_hz: p.rate_hz, channels: conn.width() as u16 };
    let opts = DecodeOptions { raw: cfg.raw, volume_db: 0.0, stop: Some(Arc::clone(stop)) };
    let latency_ms = match cfg.latency_ms {
        Some(ms) => Some(ms),
        None if p.freewheel => None,
        None => Some(DEFAULT_LATENCY_MS),
    };
    let asked = latency_ms.map(|ms| (ms * f64::from(p.rate_hz) / 1000.0).ceil() as u64);
    let mut player = Player::new(conn, asked);
    if let (Some(ms), Some(frames)) = (latency_ms, asked)
        && player.latency() < frames
    {
        obs.latency_limited(ms, p.frames_to_ms(player.latency()));
    }
    let mut summary = PlaySummary::default();
    let mut buf = Vec::new();
    for input in &cfg.inputs {
        match play_one(
            &mut player,
            input,
            Target { rate_hz: target.rate_hz, channels: target.channels },
            &opts,
            stop,
            obs,
            &mut buf,
        ) {
            Ok(Flow::Done) => {
                summary.played += 1;
                obs.file_done();
            }
            Ok(Flow::Stopped) => {
                player.retract();
                summary.stopped = true;
                return Ok(summary);
            }
            Err(e) if e.kind() == crate::ErrorKind::InvalidInput => {
                obs.file_failed(input, &e);
                summary.failed.push(e);
                if cfg.strict {
                    break;
                }
            }
            Err(e) => {
                player.retract();
                return Err(e);
            }
        }
    }
    if player.drain(stop)? == Flow::Stopped {
        player.retract();
        summary.stopped = true;
    }
    Ok(summary)
}

fn play_one(
    player: &mut Player,
    input: &str,
    target: Target,
    opts: &DecodeOptions,
    stop: &AtomicBool,
    obs: &mut dyn Observer,
    buf: &mut Vec<i32>,
) -> Result<Flow> {
    let rate = target.rate_hz;
    let mut dec = Decoder::open(input, target, opts)?;
    obs.file_started(input, &dec.description(), dec.total_frames(), rate);
    let mut frames = 0u64;
    loop {
        let n = dec.read(buf)?;
        if n == 0 {
            return Ok(Flow::Done);
        }
        if player.write(buf, stop)? == Flow::Stopped {
            return Ok(Flow::Stopped);
        }
        frames += n as u64;
        obs.progress(frames);
    }
}
