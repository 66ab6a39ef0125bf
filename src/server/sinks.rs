//! The sink keeper: opens sinks so that the period loop never has to. A device that goes
//! away (a USB headset unplugged, an HDMI sink gone, a device lost on resume, the upstream
//! server of a dmixrs PCM stopped) must not take the server and its clients with it.
//!
//! The period loop writes to the sink it was handed. When a write fails for good and the sink
//! is [`reopenable`](crate::sink::Sink::reopenable), the loop hands the sink back here (to be
//! closed off the real-time thread), says so in the status region and runs on by the clock,
//! dropping the mix: clients keep their timing and hear nothing. This thread then reopens the
//! sinks in order of preference, with a backoff (the first retry after [`FIRST_RETRY`], then
//! doubling up to [`MAX_RETRY`]), and hands over the first that opens. While a fallback
//! plays, the preferred sinks are tried every [`MAX_RETRY`], and the first of them that opens
//! replaces it. Every sink opens with the server's rate, channels and format, or not at all.
//!
//! The two threads talk through two bounded channels: the loop only ever `try_recv`s and
//! `try_send`s (no lock, no allocation: the slots are preallocated). This thread logs; the
//! loop never does. It never outlives the process's need: it ends when the loop drops its
//! end of the channels, and it is detached, so a device open that hangs never holds up a
//! server that is stopping.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sink::{Sink, SinkConfig, SinkSpec, try_open_sink};

/// The first retry after a loss: soon, so that a device that blinked is back at once, but
/// not at once, so that a device still going away is not reopened in its last breath.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts, and how often a preferred sink is tried while a
/// fallback plays.
pub const MAX_RETRY: Duration = Duration::from_secs(2);

/// A sink opened by the keeper, for the period loop to play on.
pub struct Installed {
    /// Its index in the preference list.
    pub index: usize,
    /// The sink.
    pub sink: Box<dyn Sink>,
}

/// A sink the period loop gives back, to be closed here.
pub enum Returned {
    /// It failed while in use; `error` says how.
    Lost {
        /// Its index in the preference list.
        index: usize,
        /// The sink, to be closed.
        sink: Box<dyn Sink>,
        /// The write error.
        error: Error,
    },
    /// A preferred sink replaced it.
    Replaced {
        /// The sink, to be closed.
        sink: Box<dyn Sink>,
    },
}

/// The period loop's end of the keeper.
pub struct SinkPort {
    from_keeper: Receiver<Installed>,
    to_keeper: SyncSender<Returned>,
}

impl SinkPort {
    /// A sink to play on, if the keeper opened one since the last call. Never blocks.
    pub fn take_installed(&self) -> Option<Installed> {
        self.from_keeper.try_recv().ok()
    }

    /// Gives a sink back to be closed off the real-time thread. Never blocks: if the keeper
    /// is gone (the server is stopping), the sink is closed here.
    pub fn give_back(&self, returned: Returned) {
        match self.to_keeper.try_send(returned) {
            Ok(()) => {}
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => drop(r),
        }
    }

    /// A port with its own ends of the channels, for tests of the period loop: what is sent
    /// on the first is installed; what the loop gives back arrives on the second.
    pub fn for_test() -> (SyncSender<Installed>, Receiver<Returned>, SinkPort) {
        let (to_loop, from_keeper) = sync_channel(1);
        let (to_keeper, from_loop) = sync_channel(4);
        (to_loop, from_loop, SinkPort { from_keeper, to_keeper })
    }
}

/// How the server starts.
pub struct Started {
    /// The sink that opened (its index) and its device buffer, or `None`: none opened and
    /// the server waits for one.
    pub opened: Option<(usize, u32)>,
    /// The period loop's end of the keeper.
    pub port: SinkPort,
}

/// Opens the first sink of `specs` that opens and starts the keeper thread. With none open:
/// `Err` (one line with each sink's reason), unless `wait` (the user asked the server to
/// wait for its device): then the server starts without a sink and the keeper retries.
pub fn start(specs: Vec<SinkSpec>, cfg: SinkConfig, wait: bool) -> Result<Started> {
    let (to_loop, from_keeper) = sync_channel(1);
    // Room for every sink the loop can give back before the keeper runs again: at most one
    // lost and one replaced.
    let (to_keeper, from_loop) = sync_channel(4);
    let port = SinkPort { from_keeper, to_keeper };
    let mut failures = Vec::new();
    let mut opened = None;
    for (index, spec) in specs.iter().enumerate() {
        match try_open_sink(spec, &cfg) {
            Ok(sink) => {
                let buffer = sink.device_buffer_frames();
                to_loop
                    .try_send(Installed { index, sink })
                    .unwrap_or_else(|_| unreachable!("the channel is new and holds one"));
                opened = Some((index, buffer));
                break;
            }
            Err(f) => failures.push((index, f)),
        }
    }
    let reasons = || failures.iter().map(|(_, f)| f.error.to_string()).collect::<Vec<_>>().join("; ");
    if opened.is_none() && !wait {
        return Err(match failures.len() {
            1 => failures.remove(0).1.error,
            _ => Error::Device { sink: "no sink opens".into(), reason: reasons() },
        });
    }
    let now = Instant::now();
    if opened.is_none() {
        crate::say!("dmix-serve: no sink opens ({}); clients play unheard until one does; retrying", reasons());
    } else if let Some((index, _)) = opened
        && index > 0
    {
        crate::say!(
            "dmix-serve: playing on {} ({}); retrying the preferred every {} s",
            specs[index],
            reasons(),
            MAX_RETRY.as_secs()
        );
    }
    // What the start line already said about a device that is there but refuses us is not
    // said again at the first retry.
    let mut told = vec![None; specs.len()];
    for (index, f) in &failures {
        if !f.absent {
            told[*index] = Some(f.error.to_string());
        }
    }
    let mut keeper = Keeper {
        current: opened.map(|(i, _)| i),
        lost_at: opened.is_none().then_some(now),
        retry: FIRST_RETRY,
        next_try: None,
        told,
        specs,
        cfg,
        to_loop,
        from_loop,
    };
    keeper.schedule(now);
    std::thread::Builder::new()
        .name("dmix-sinks".into())
        .spawn(move || keeper.run())
        .map_err(|e| Error::sys("spawn the sink thread", e))?;
    Ok(Started { opened, port })
}

struct Keeper {
    specs: Vec<SinkSpec>,
    cfg: SinkConfig,
    to_loop: SyncSender<Installed>,
    from_loop: Receiver<Returned>,
    /// The sink handed to the loop last and not reported lost (the loop may not have taken it
    /// yet; it will).
    current: Option<usize>,
    /// When the sink in use was lost (or the server started without one).
    lost_at: Option<Instant>,
    /// The next wait between attempts while no sink plays.
    retry: Duration,
    next_try: Option<Instant>,
    /// Per sink: the last reason it could not play our stream that was logged, so that a
    /// device that is back but refuses our parameters is told once, not every retry.
    told: Vec<Option<String>>,
}

impl Keeper {
    fn run(mut self) {
        loop {
            let wait = self.next_try.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
            match self.from_loop.recv_timeout(wait) {
                Ok(Returned::Lost { index, sink, error }) => {
                    // Closing a lost device can take a while (a plugin's teardown): here, not in
                    // the period loop.
                    drop(sink);
                    if self.current == Some(index) {
                        let now = Instant::now();
                        self.current = None;
                        self.lost_at = Some(now);
                        self.retry = FIRST_RETRY;
                        let others = if self.specs.len() > 1 { " or a fallback opens" } else { "" };
                        crate::say!(
                            "dmix-serve: {error}: sink lost; clients play on unheard while it is reopened{others}"
                        );
                        self.schedule(now);
                    }
                }
                Ok(Returned::Replaced { sink }) => drop(sink),
                Err(RecvTimeoutError::Timeout) => {
                    if !self.attempt() {
                        return;
                    }
                }
                // The period loop has ended: the server is stopping.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Tries the sinks worth trying: every one when none plays, the preferred ones when a
    /// fallback plays. False when the period loop is gone.
    fn attempt(&mut self) -> bool {
        let candidates = self.current.unwrap_or(self.specs.len());
        for index in 0..candidates {
            match try_open_sink(&self.specs[index], &self.cfg) {
                Ok(sink) => {
                    match self.to_loop.try_send(Installed { index, sink }) {
                        Ok(()) => {}
                        Err(TrySendError::Disconnected(_)) => return false,
                        // The loop has not taken the last one yet (it looks every period, and
                        // at least every 50 ms while it waits): close this one, try later.
                        Err(TrySendError::Full(_)) => break,
                    }
                    self.told[index] = None;
                    let gap = self.lost_at.take().map(|t| t.elapsed().as_secs_f64());
                    match (self.current, gap) {
                        (Some(from), _) => {
                            crate::say!(
                                "dmix-serve: {} is back: moving from {} to it",
                                self.specs[index],
                                self.specs[from]
                            )
                        }
                        (None, Some(gap)) => {
                            crate::say!("dmix-serve: playing on {} after {gap:.1} s", self.specs[index])
                        }
                        (None, None) => crate::say!("dmix-serve: playing on {}", self.specs[index]),
                    }
                    self.current = Some(index);
                    break;
                }
                Err(f) if f.absent => {}
                Err(f) => {
                    let why = f.error.to_string();
                    if self.told[index].as_ref() != Some(&why) {
                        crate::say!(
                            "dmix-serve: {why}: the device is there but cannot play this server's stream ({} Hz, {} \
                             ch, {}); retrying",
                            self.cfg.rate_hz,
                            self.cfg.channels,
                            self.cfg.format
                        );
                        self.told[index] = Some(why);
                    }
                }
            }
        }
        self.schedule(Instant::now());
        true
    }

    /// When to try next: with a backoff while nothing plays; every [`MAX_RETRY`] while a
    /// fallback plays; never while the first choice plays.
    fn schedule(&mut self, now: Instant) {
        self.next_try = match self.current {
            Some(0) => None,
            Some(_) => Some(now + MAX_RETRY),
            None => {
                let wait = self.retry;
                self.retry = (self.retry * 2).min(MAX_RETRY);
                Some(now + wait)
            }
        };
    }
}
