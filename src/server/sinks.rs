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
//! The user can also move the server to another sink while it runs (`dmix-stat --sink`,
//! through the control thread's [`Switcher`]): this thread opens it, and if it opens hands it
//! over with the new preference list (the new sink first, then the old list without it; a
//! WAV file alone, since it can only be the one sink). The loop installs both at a period
//! boundary and gives back what it replaced, which is closed here (a WAV file finalized
//! before the switch is answered, an ALSA device drained after). A sink that will not open
//! changes nothing: the old one plays on and the answer says why.
//!
//! The two threads talk through two bounded channels: the loop only ever `try_recv`s and
//! `try_send`s (no allocation: the slots are preallocated). This thread logs; the loop never
//! does. It never outlives the process's need: it ends when the loop and the control thread
//! drop their ends of the channels, and it is detached, so a device open that hangs never
//! holds up a server that is stopping.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::Refusal;
use crate::ring::layout::MAX_SINKS;
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
    /// Which preference list `index` is in: the keeper's list changes with a switch, and a
    /// sink lost from an older list must not be taken for one of the new list.
    pub list_gen: u64,
    /// The sink.
    pub sink: Box<dyn Sink>,
    /// The new preference list, when the sink comes from a switch (`dmix-stat --sink`): the
    /// loop publishes it with the sink and gives it back in [`Returned::Switched`].
    pub list: Option<Vec<String>>,
}

/// A sink the period loop gives back, to be closed here.
pub enum Returned {
    /// It failed while in use; `error` says how.
    Lost {
        /// Its index in the preference list.
        index: usize,
        /// The list that index is in ([`Installed::list_gen`]).
        list_gen: u64,
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
    /// A switch took effect: the loop plays on the new sink and has published `list`.
    Switched {
        /// The sink it replaced, to be finished (drained, finalized) and closed; none when
        /// none played.
        old: Option<Box<dyn Sink>>,
        /// The list, to be freed off the real-time thread.
        list: Vec<String>,
    },
}

/// The answer to a switch: one line for the user, or a refusal and why.
pub type SwitchAnswer = std::result::Result<String, (Refusal, String)>;

/// What the keeper is told: by the period loop, a sink given back; by the control thread, a
/// switch to make.
enum ToKeeper {
    Back(Returned),
    Switch { spec: SinkSpec, answer: SyncSender<SwitchAnswer> },
}

/// The period loop's end of the keeper.
pub struct SinkPort {
    from_keeper: Receiver<Installed>,
    to_keeper: SyncSender<ToKeeper>,
}

impl SinkPort {
    /// A sink to play on, if the keeper opened one since the last call. Never blocks.
    pub fn take_installed(&self) -> Option<Installed> {
        self.from_keeper.try_recv().ok()
    }

    /// Gives a sink back to be closed off the real-time thread. Never blocks: if the keeper
    /// is gone (the server is stopping), the sink is closed here.
    pub fn give_back(&self, returned: Returned) {
        match self.to_keeper.try_send(ToKeeper::Back(returned)) {
            Ok(()) => {}
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => drop(r),
        }
    }

    /// Waits up to `timeout` for a sink to play on: the keeper's tests play the loop.
    #[cfg(test)]
    fn wait_installed(&self, timeout: Duration) -> Option<Installed> {
        self.from_keeper.recv_timeout(timeout).ok()
    }

    /// A port with its own ends of the channels, for tests of the period loop: what is sent
    /// on the first is installed; what the loop gives back arrives on the second.
    pub fn for_test() -> (SyncSender<Installed>, impl Fn(Duration) -> Option<Returned>, SinkPort) {
        let (to_loop, from_keeper) = sync_channel(1);
        let (to_keeper, from_loop) = sync_channel(TO_KEEPER_SLOTS);
        let returned = move |timeout| match from_loop.recv_timeout(timeout) {
            Ok(ToKeeper::Back(r)) => Some(r),
            _ => None,
        };
        (to_loop, returned, SinkPort { from_keeper, to_keeper })
    }
}

/// Room for everything sent to the keeper before it runs again: from the loop at most a
/// lost sink and a replaced (or switched) one, from the control thread one switch (it asks
/// for the next only once the last was answered); with room to spare.
const TO_KEEPER_SLOTS: usize = 8;

/// The control thread's end of the keeper: asks for switches (`dmix-stat --sink`).
pub struct Switcher {
    to_keeper: SyncSender<ToKeeper>,
}

impl Switcher {
    /// Asks the keeper to move the server to `spec`. Never blocks: the answer arrives on the
    /// returned channel once the new sink plays (and an old WAV file is finalized), or as
    /// soon as it is known that nothing changes. `Err` when the keeper cannot take the
    /// request.
    pub fn request(&self, spec: SinkSpec) -> std::result::Result<Receiver<SwitchAnswer>, (Refusal, String)> {
        let (answer, answered) = sync_channel(1);
        match self.to_keeper.try_send(ToKeeper::Switch { spec, answer }) {
            Ok(()) => Ok(answered),
            Err(TrySendError::Full(_)) => Err((Refusal::Busy, "the sink keeper is busy: try again".into())),
            Err(TrySendError::Disconnected(_)) => Err((Refusal::Stopping, "the server is stopping".into())),
        }
    }
}

/// The preference list after a switch to `new`: `new` first, then `old` without it, at most
/// [`MAX_SINKS`]; a WAV file only alone (reopening it after a fallback would overwrite it),
/// so a switch to one drops the others and a switch away from one drops it. Also returns
/// the sinks dropped.
pub fn switched_list(new: &SinkSpec, old: Vec<SinkSpec>) -> (Vec<SinkSpec>, Vec<SinkSpec>) {
    let mut list = vec![new.clone()];
    let mut dropped = Vec::new();
    let wav = |s: &SinkSpec| matches!(s, SinkSpec::Wav(_));
    for s in old {
        if &s == new {
            continue;
        }
        if wav(new) || wav(&s) || list.len() == MAX_SINKS {
            dropped.push(s);
        } else {
            list.push(s);
        }
    }
    (list, dropped)
}

/// How the server starts.
pub struct Started {
    /// The sink that opened (its index) and its device buffer, or `None`: none opened and
    /// the server waits for one.
    pub opened: Option<(usize, u32)>,
    /// The period loop's end of the keeper.
    pub port: SinkPort,
    /// The control thread's end.
    pub switcher: Switcher,
}

/// Opens the first sink of `specs` that opens and starts the keeper thread. With none open:
/// `Err` (one line with each sink's reason), unless `wait` (the user asked the server to
/// wait for its device): then the server starts without a sink and the keeper retries.
pub fn start(specs: Vec<SinkSpec>, cfg: SinkConfig, wait: bool) -> Result<Started> {
    let (to_loop, from_keeper) = sync_channel(1);
    let (to_keeper, from_loop) = sync_channel(TO_KEEPER_SLOTS);
    let switcher = Switcher { to_keeper: to_keeper.clone() };
    let port = SinkPort { from_keeper, to_keeper };
    let mut failures = Vec::new();
    let mut opened = None;
    for (index, spec) in specs.iter().enumerate() {
        match try_open_sink(spec, &cfg) {
            Ok(sink) => {
                let buffer = sink.device_buffer_frames();
                to_loop
                    .try_send(Installed { index, list_gen: 0, sink, list: None })
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
        list_gen: 0,
        switching: None,
    };
    keeper.schedule(now);
    std::thread::Builder::new()
        .name("dmix-sinks".into())
        .spawn(move || keeper.run())
        .map_err(|e| Error::sys("spawn the sink thread", e))?;
    Ok(Started { opened, port, switcher })
}

struct Keeper {
    specs: Vec<SinkSpec>,
    cfg: SinkConfig,
    to_loop: SyncSender<Installed>,
    from_loop: Receiver<ToKeeper>,
    /// The generation of `specs`, one more at every switch.
    list_gen: u64,
    /// The switch handed to the loop and not yet installed: who is waiting for the answer,
    /// and the answer.
    switching: Option<(SyncSender<SwitchAnswer>, String)>,
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
                Ok(ToKeeper::Back(Returned::Lost { index, list_gen, sink, error })) => {
                    // Closing a lost device can take a while (a plugin's teardown): here, not in
                    // the period loop. One lost from a list before a switch was replaced by
                    // the switch, whatever its index.
                    drop(sink);
                    if self.current == Some(index) && list_gen == self.list_gen {
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
                Ok(ToKeeper::Back(Returned::Replaced { sink })) => drop(sink),
                Ok(ToKeeper::Back(Returned::Switched { old, list })) => self.switched(old, list),
                Ok(ToKeeper::Switch { spec, answer }) => {
                    if !self.switch(spec, answer) {
                        return;
                    }
                }
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
                    match self.to_loop.try_send(Installed { index, list_gen: self.list_gen, sink, list: None }) {
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

    /// Opens `spec` and hands it to the loop with the new preference list; `answer` is told
    /// once the loop plays it ([`Keeper::switched`]), or at once when nothing changes. False
    /// when the period loop is gone.
    fn switch(&mut self, spec: SinkSpec, answer: SyncSender<SwitchAnswer>) -> bool {
        let playing = self.current.map(|i| self.specs[i].clone());
        if self.switching.is_some() {
            let _ = answer.try_send(Err((Refusal::Busy, "another sink switch is under way".into())));
            return true;
        }
        if playing.as_ref() == Some(&spec) {
            // Reopening it would fail on a device opened exclusively, or truncate a WAV file.
            let _ = answer.try_send(Ok(format!("sink: {spec} (already in use)")));
            return true;
        }
        let sink = match try_open_sink(&spec, &self.cfg) {
            Ok(sink) => sink,
            Err(f) => {
                let still = match &playing {
                    Some(p) => format!("{p} plays on"),
                    None => "nothing changed".into(),
                };
                crate::say!("dmix-serve: switching sinks: {}; {still}", f.error);
                let _ = answer.try_send(Err((Refusal::Device, format!("{}; {still}", f.error))));
                return true;
            }
        };
        let (list, dropped) = switched_list(&spec, std::mem::take(&mut self.specs));
        let was = match &playing {
            Some(p @ SinkSpec::Wav(_)) => format!("was {p}, finalized"),
            Some(p) => format!("was {p}"),
            None => "was none".into(),
        };
        let mut line = format!("sink: {spec} ({was})");
        let gone: Vec<String> =
            dropped.iter().filter(|s| Some(*s) != playing.as_ref()).map(ToString::to_string).collect();
        if !gone.is_empty() {
            let why = if matches!(spec, SinkSpec::Wav(_)) { "a WAV file is the only sink" } else { "list full" };
            line.push_str(&format!("; no longer in the list ({why}): {}", gone.join(", ")));
        }
        self.list_gen += 1;
        let names = list.iter().map(ToString::to_string).collect();
        // Blocks until the loop has taken what it was handed before (it looks every period,
        // and at least every 50 ms while it waits): a sink the retries opened is installed
        // first and replaced by this one at once.
        if self.to_loop.send(Installed { index: 0, list_gen: self.list_gen, sink, list: Some(names) }).is_err() {
            let _ = answer.try_send(Err((Refusal::Stopping, "the server is stopping".into())));
            return false;
        }
        crate::say!("dmix-serve: switching to {spec} ({was}), as asked");
        self.told = vec![None; list.len()];
        self.specs = list;
        self.current = Some(0);
        self.lost_at = None;
        self.retry = FIRST_RETRY;
        self.switching = Some((answer, line));
        self.schedule(Instant::now());
        true
    }

    /// The loop plays the sink of the switch: answers, and finishes the old sink (an ALSA
    /// device plays out what it holds, so nothing taken from the ring is lost; a WAV file is
    /// finalized). A file is finished first, so that it reads whole once the switch is
    /// answered, and a failure to finalize it is in the answer; a device after, since its
    /// drain lasts as long as its buffer, or longer if it is stuck.
    fn switched(&mut self, old: Option<Box<dyn Sink>>, list: Vec<String>) {
        drop(list);
        let (mut first, mut after) = match old {
            Some(old) if old.paces_itself() => (None, Some(old)),
            old => (old, None),
        };
        let mut note = String::new();
        if let Some(Err(e)) = first.as_mut().map(|old| old.finish()) {
            crate::say!("dmix-serve: closing the old sink: {e}");
            note = format!(" (closing the old sink: {e})");
        }
        if let Some((answer, line)) = self.switching.take() {
            let _ = answer.try_send(Ok(format!("{line}{note}")));
        }
        if let Some(Err(e)) = after.as_mut().map(|old| old.finish()) {
            crate::say!("dmix-serve: closing the old sink: {e}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<SinkSpec> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn names(list: &[SinkSpec]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    /// The keeper through a switch, with the test playing the period loop: the old sink lost
    /// just after the switch was handed over (its loss reported from the old list, index 0
    /// like the new sink's) is closed and forgotten, not taken for a loss of the new one,
    /// which would leave the keeper thinking nothing plays and reopening (truncating) the
    /// new WAV file. The next switch's answer shows which the keeper believes plays.
    #[test]
    fn sinks_keeper_forgets_a_sink_lost_from_the_list_before_a_switch() {
        let dir = tempfile::tempdir().unwrap();
        let wav = |name: &str| SinkSpec::Wav(dir.path().join(name));
        let cfg = SinkConfig {
            rate_hz: 48000,
            channels: 2,
            format: crate::format::SampleFormat::S16Le,
            period_frames: 256,
            buffer_frames: 1024,
        };
        let started = start(vec![wav("a.wav")], cfg, false).unwrap();
        let (port, switcher) = (started.port, started.switcher);
        let wait = Duration::from_secs(20);
        let a = port.wait_installed(wait).expect("a.wav installed at the start");
        let answered = switcher.request(wav("b.wav")).unwrap();
        let b = port.wait_installed(wait).expect("b.wav handed over");
        assert_eq!((b.index, b.list_gen, b.list.as_deref()), (0, 1, Some(&[wav("b.wav").to_string()][..])));
        let error = Error::Device { sink: "wav:a".into(), reason: "gone".into() };
        port.give_back(Returned::Lost { index: a.index, list_gen: a.list_gen, sink: a.sink, error });
        let mut b = b;
        let list = b.list.take().unwrap();
        port.give_back(Returned::Switched { old: None, list });
        let first = answered.recv_timeout(wait).unwrap().unwrap();
        assert_eq!(first, format!("sink: {} (was {}, finalized)", wav("b.wav"), wav("a.wav")));
        let answered = switcher.request(wav("c.wav")).unwrap();
        let c = port.wait_installed(wait).expect("c.wav handed over");
        port.give_back(Returned::Switched { old: Some(b.sink), list: c.list.unwrap() });
        let second = answered.recv_timeout(wait).unwrap().unwrap();
        assert_eq!(second, format!("sink: {} (was {}, finalized)", wav("c.wav"), wav("b.wav")));
        // The old file was finalized by the keeper: it reads as a WAV file.
        assert!(hound::WavReader::open(dir.path().join("b.wav")).is_ok());
        let refused = switcher.request(wav("c.wav")).unwrap().recv_timeout(wait).unwrap();
        assert_eq!(refused, Ok(format!("sink: {} (already in use)", wav("c.wav"))));
    }

    /// The new sink goes first and is not listed twice; a WAV file is only ever alone; a
    /// full list loses its last preference.
    #[test]
    fn sinks_switched_list_puts_the_new_one_first() {
        // (new, old list, new list, dropped)
        type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[Case] = &[
            ("alsa:b", &["alsa:a"], &["alsa:b", "alsa:a"], &[]),
            ("alsa:b", &["alsa:a", "alsa:b", "null"], &["alsa:b", "alsa:a", "null"], &[]),
            ("wav:/x.wav", &["alsa:a", "null"], &["wav:/x.wav"], &["alsa:a", "null"]),
            ("alsa:a", &["wav:/x.wav"], &["alsa:a"], &["wav:/x.wav"]),
            ("wav:/y.wav", &["wav:/x.wav"], &["wav:/y.wav"], &["wav:/x.wav"]),
        ];
        for &(new, old, want, gone) in cases {
            let (list, dropped) = switched_list(&new.parse().unwrap(), specs(old));
            assert_eq!((names(&list), names(&dropped)), (names(&specs(want)), names(&specs(gone))), "{new} {old:?}");
        }
        let full: Vec<String> = (0..MAX_SINKS).map(|i| format!("alsa:{i}")).collect();
        let (list, dropped) = switched_list(&SinkSpec::Null, full.iter().map(|s| s.parse().unwrap()).collect());
        assert_eq!(list.len(), MAX_SINKS);
        assert_eq!(
            (names(&list[..2]), names(&dropped)),
            (vec!["null".into(), "alsa:0".into()], vec![full[MAX_SINKS - 1].clone()])
        );
    }
}
