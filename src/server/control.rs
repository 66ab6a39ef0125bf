//! The control thread: accepts connections on the server socket and on the sockets of
//! sub-devices (dmix-share), checks hellos and peers, assigns slots, sends the welcome with
//! the fds, and notices hang-ups. It never touches audio; it talks to the period loop only
//! through the atomics in [`Core`], and asks the sink keeper for sink switches
//! ([`Switcher`]), whose answers it waits for without blocking its other connections. The
//! sub-devices whose sockets it polls are made in [`subdevice`](super::subdevice).

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Core;
use super::admit::{self, Admission, AdmitContext, Peer};
use super::mixer::{self, Mixer};
use super::sinks::{SwitchAnswer, Switcher};
use super::subdevice::{self, Sub};
use crate::error::{Error, Result};
use crate::protocol::{Hello, MAX_SHARE_BYTES, MixerRequest, Refusal, Reply, Role, ShareRequest, Welcome};
use crate::ring::layout::{MAX_SLOTS, RING_LAYOUT_VERSION};
use crate::ring::server::SlotFill;
use crate::sink::SinkSpec;
use crate::transport::{self, Listener, PeerCred};

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections that have not said hello yet, at most; beyond it the oldest is closed.
const MAX_PENDING: usize = 32;
/// Connections accepted in one pass of the loop, at most: a flood that keeps the listen
/// queue full must not keep the loop from the connections it holds.
const ACCEPT_BURST: usize = 16;
/// What a connection closed to make room is told (refusal 7).
const CROWDED: &str = "server busy: too many connections waiting to say hello";

enum ConnState {
    /// Waiting for the hello until the deadline.
    Pending(Instant),
    /// Holding a slot.
    Active {
        slot: usize,
        role: Role,
        /// Channels held exclusively (a client of an exclusive sub-device).
        held: u64,
    },
}

struct Conn {
    /// Unique for the server's life: sub-devices name their owner by it.
    id: u64,
    fd: OwnedFd,
    state: ConnState,
    /// The sub-device it connected through, if any.
    via: Option<String>,
}

pub(super) struct Control<'a> {
    shared: &'a Core,
    listener: &'a Listener,
    dir: Option<&'a Path>,
    subs: Vec<Sub>,
    conns: Vec<Conn>,
    /// Slots in use (control thread's view).
    owned: u64,
    next_client_id: u32,
    next_conn_id: u64,
    uid: u32,
    /// `--group`: peers in it are admitted too.
    group: Option<u32>,
    /// Silent connections closed to make room since the flood began.
    dropped: u64,
    /// When the last line about a refused client was logged, and how many were not since.
    last_log: Option<Instant>,
    unlogged: u64,
    /// Volumes: the rules of a mixer request, and those remembered by name.
    mixer: Mixer,
    /// Asks the sink keeper for switches.
    switcher: Switcher,
    /// The switch under way: the connection (id) that asked, and where its answer comes.
    switching: Option<(u64, Receiver<SwitchAnswer>)>,
}

/// What a poll entry stands for.
#[derive(Clone, Copy)]
enum Source {
    Main,
    Sub(usize),
    Conn(usize),
}

impl<'a> Control<'a> {
    pub(super) fn new(
        shared: &'a Core,
        listener: &'a Listener,
        dir: Option<&'a Path>,
        group: Option<u32>,
        mixer: Mixer,
        switcher: Switcher,
    ) -> Self {
        Control {
            shared,
            listener,
            dir,
            subs: Vec::new(),
            conns: Vec::with_capacity(MAX_SLOTS + MAX_PENDING),
            owned: 0,
            next_client_id: 1,
            next_conn_id: 1,
            uid: nix::unistd::getuid().as_raw(),
            group,
            dropped: 0,
            last_log: None,
            unlogged: 0,
            mixer,
            switcher,
            switching: None,
        }
    }

    pub(super) fn run(mut self) -> Result<()> {
        let mut ready: Vec<Source> = Vec::with_capacity(MAX_SLOTS + MAX_PENDING + 1);
        while !self.shared.stop.load(Ordering::Relaxed) && !self.shared.loop_done.load(Ordering::Acquire) {
            self.owned &= !self.shared.freed_mask.swap(0, Ordering::AcqRel);
            ready.clear();
            {
                let mut fds = Vec::with_capacity(1 + self.subs.len() + self.conns.len());
                let mut what = Vec::with_capacity(fds.capacity());
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                what.push(Source::Main);
                for (i, s) in self.subs.iter().enumerate() {
                    fds.push(PollFd::new(s.listener.as_fd(), PollFlags::POLLIN));
                    what.push(Source::Sub(i));
                }
                for (i, c) in self.conns.iter().enumerate() {
                    fds.push(PollFd::new(c.fd.as_fd(), PollFlags::POLLIN));
                    what.push(Source::Conn(i));
                }
                // While a switch is under way its answer is looked for often: it comes on a
                // channel, not on a descriptor this poll could wait on.
                let timeout = if self.switching.is_some() { 5u16 } else { 100 };
                match poll(&mut fds, PollTimeout::from(timeout)) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(Error::sys("poll", e)),
                }
                for (f, w) in fds.iter().zip(what) {
                    if f.revents().is_some_and(|r| !r.is_empty()) {
                        ready.push(w);
                    }
                }
            }
            // Connections first, from the back, so removals keep earlier indices valid;
            // then the listeners (a share's hang-up may have removed sub-devices: their
            // indices are re-checked).
            for w in ready.iter().rev() {
                if let Source::Conn(i) = *w {
                    self.service(i);
                }
            }
            for w in &ready {
                match *w {
                    Source::Main => self.accept_all(None)?,
                    Source::Sub(i) if i < self.subs.len() => self.accept_all(Some(i))?,
                    _ => {}
                }
            }
            self.answer_switch();
            self.expire_pending();
            if self.dropped > 0 && !self.conns.iter().any(|c| matches!(c.state, ConnState::Pending(_))) {
                crate::say!("dmix-serve: the flood is over; {} connections were dropped", self.dropped);
                self.dropped = 0;
            }
        }
        // Say "stopping" before hanging up (the period loop may not have yet), so that a
        // client can tell a server that stopped from one that vanished. Closing every
        // connection then tells each client; dropping the sub-devices removes their sockets.
        self.shared.ring.set_stopping();
        self.conns.clear();
        self.subs.clear();
        Ok(())
    }

    /// Accepts up to [`ACCEPT_BURST`] connections. A prompt client's hello is usually
    /// queued before we accept (a unix client may send as soon as its connect returns): it
    /// is answered right here, so a flood of silent connections never stands between a
    /// client and its welcome, and garbage is refused at once. A silent one waits, and
    /// makes room for itself if need be (see [`Control::make_room`]).
    fn accept_all(&mut self, sub: Option<usize>) -> Result<()> {
        for _ in 0..ACCEPT_BURST {
            let accepted = match sub {
                None => self.listener.accept()?,
                Some(i) => self.subs[i].listener.accept()?,
            };
            let Some(fd) = accepted else { return Ok(()) };
            let id = self.next_conn_id;
            self.next_conn_id += 1;
            let via = sub.map(|i| self.subs[i].name.clone());
            self.conns.push(Conn { id, fd, state: ConnState::Pending(Instant::now() + HELLO_TIMEOUT), via });
            self.service(self.conns.len() - 1);
            self.make_room();
        }
        Ok(())
    }

    /// Keeps at most [`MAX_PENDING`] connections waiting for their hello, closing the
    /// oldest silent one rather than refusing the newest: a program that leaks connections,
    /// or a slowloris, then cannot keep a prompt client out (refusing the newest did: a
    /// player arriving during a flood of 300 was dropped in 10 runs of 12). The evicted one
    /// is told why (refusal 7, crowded) so that a client that was merely slow tries again; a
    /// hello that reached it since the last poll is answered instead.
    fn make_room(&mut self) {
        // Each pass removes one pending connection or turns it active: bounded.
        loop {
            let mut pending = 0;
            let mut oldest: Option<(Instant, u64)> = None;
            for c in &self.conns {
                if let ConnState::Pending(deadline) = c.state {
                    pending += 1;
                    if oldest.is_none_or(|(t, _)| deadline < t) {
                        oldest = Some((deadline, c.id));
                    }
                }
            }
            let Some((_, id)) = oldest.filter(|_| pending > MAX_PENDING) else { return };
            let at = |conns: &[Conn]| conns.iter().position(|c| c.id == id && matches!(c.state, ConnState::Pending(_)));
            if let Some(i) = at(&self.conns) {
                self.service(i);
            }
            let Some(i) = at(&self.conns) else { continue };
            let conn = self.conns.swap_remove(i);
            if self.dropped == 0 {
                // One log line per flood, not one per connection.
                crate::say!(
                    "dmix-serve: more than {MAX_PENDING} connections waiting to say hello; closing the oldest silent ones"
                );
            }
            self.dropped += 1;
            let (b, n) = Reply::Refused(Refusal::Crowded, CROWDED.into()).encode();
            // Non-blocking; a peer that cannot take it is closed all the same.
            let _ = transport::send(conn.fd.as_fd(), &b[..n], &[]);
        }
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        self.conns.retain(|c| !matches!(c.state, ConnState::Pending(t) if t <= now));
    }

    fn service(&mut self, i: usize) {
        let mut buf = [0u8; MAX_SHARE_BYTES + 1];
        let got = crate::sys::recv_with_fds(self.conns[i].fd.as_fd(), &mut buf, true);
        match (&self.conns[i].state, got) {
            (_, Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            (ConnState::Active { role: Role::Share, .. }, Ok(Some(msg))) => {
                drop(msg.fds);
                let bytes = if msg.truncated { None } else { Some(&buf[..msg.len]) };
                self.share(i, bytes);
            }
            (ConnState::Active { role: Role::Stat, .. }, Ok(Some(msg))) => {
                drop(msg.fds);
                let bytes = if msg.truncated { None } else { Some(&buf[..msg.len]) };
                self.mix(i, bytes);
            }
            (ConnState::Active { .. }, Ok(Some(msg))) => {
                // Nothing else is expected after the hello; reading keeps the socket from
                // filling. A hang-up is how a client leaves.
                drop(msg.fds);
            }
            (ConnState::Active { slot, .. }, _) => {
                let slot = *slot;
                let conn = self.conns.swap_remove(i);
                // The capture thread stops counting it as a reader before the slot is freed.
                self.shared.capture_mask.fetch_and(!(1 << slot), Ordering::AcqRel);
                self.subs.retain(|s| s.owner != conn.id);
                // Its fd is closed before the slot is given back.
                drop(conn);
                self.shared.leave_mask.fetch_or(1 << slot, Ordering::AcqRel);
                self.shared.ring.ring_doorbell();
            }
            (ConnState::Pending(_), Ok(Some(msg))) => {
                let conn = self.conns.swap_remove(i);
                // The server accepts no fds: any that came are closed right here.
                drop(msg.fds);
                let bytes = if msg.truncated { None } else { Some(&buf[..msg.len]) };
                if let Some(state) = self.hello(&conn.fd, conn.via.as_deref(), bytes) {
                    self.conns.push(Conn { state, ..conn });
                }
            }
            (ConnState::Pending(_), _) => {
                self.conns.swap_remove(i);
            }
        }
    }

    /// Refuses a connection with `reason`, and logs one line naming the peer, at most one a
    /// second (a flood of bad clients must not flood the log; the next line says how many
    /// went unlogged).
    fn refuse(&mut self, fd: &OwnedFd, r: Refusal, reason: String) {
        let now = Instant::now();
        if self.last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            let pid = transport::peer_cred(fd.as_fd()).map_or(0, |c| c.pid);
            let more = match std::mem::take(&mut self.unlogged) {
                0 => String::new(),
                n => format!(" ({n} more refused since the last line)"),
            };
            crate::say!("dmix-serve: refused pid {pid}: {reason}{more}");
            self.last_log = Some(now);
        } else {
            self.unlogged += 1;
        }
        let (b, n) = Reply::Refused(r, reason).encode();
        let _ = transport::send(fd.as_fd(), &b[..n], &[]);
    }

    /// Creates the sub-devices a dmix-share connection asks for, or refuses with the reason.
    fn share(&mut self, i: usize, bytes: Option<&[u8]>) {
        let id = self.conns[i].id;
        let channels = self.shared.ring.params().channels;
        let answer = match bytes.map(|b| ShareRequest::decode(b, channels)) {
            None => Err((Refusal::BadRequest, "share request: oversized message".to_string())),
            Some(Err(e)) => Err((Refusal::BadRequest, e.to_string())),
            Some(Ok(_)) if self.subs.iter().any(|s| s.owner == id) => {
                Err((Refusal::BadRequest, "this connection already shares sub-devices".to_string()))
            }
            Some(Ok(req)) => subdevice::create(self.dir, &mut self.subs, id, &req),
        };
        let reply = match answer {
            Ok(()) => Reply::Done,
            Err((r, reason)) => Reply::Refused(r, reason),
        };
        let (b, n) = reply.encode();
        let _ = transport::send(self.conns[i].fd.as_fd(), &b[..n], &[]);
    }

    /// Carries out a mixer request from an inspector (`dmix-stat --volume/--mute/--forget`):
    /// writes the volumes (each client follows its own at once), keeps what is remembered,
    /// and answers with the new state in one line, or refuses with why.
    fn mix(&mut self, i: usize, bytes: Option<&[u8]>) {
        let req = match bytes.map(MixerRequest::decode) {
            None => Err((Refusal::BadRequest, "mixer request: oversized message".to_string())),
            Some(Err(e)) => Err((Refusal::BadRequest, e.to_string())),
            Some(Ok(req)) => Ok(req),
        };
        if let Ok(MixerRequest::Sink { spec }) = &req {
            match self.switch_sink(spec) {
                // Answered when the keeper is done ([`Control::answer_switch`]).
                Ok(answered) => {
                    self.switching = Some((self.conns[i].id, answered));
                    return;
                }
                Err((r, reason)) => {
                    let (b, n) = Reply::Refused(r, reason).encode();
                    let _ = transport::send(self.conns[i].fd.as_fd(), &b[..n], &[]);
                    return;
                }
            }
        }
        let reply = match req.and_then(|req| self.mix_request(&req)) {
            Ok(answer) => Reply::Answer(answer),
            Err((r, reason)) => Reply::Refused(r, reason),
        };
        let (b, n) = reply.encode();
        let _ = transport::send(self.conns[i].fd.as_fd(), &b[..n], &[]);
    }

    fn mix_request(&mut self, req: &MixerRequest) -> Result<String, (Refusal, String)> {
        let clients: Vec<mixer::Client> = self
            .conns
            .iter()
            .filter_map(|c| match c.state {
                ConnState::Active { slot, role, .. } => {
                    let s = self.shared.ring.slot(slot);
                    let (id, pid, name) = s.client();
                    Some(mixer::Client { slot, id, pid, name, role, volume: s.volume() })
                }
                ConnState::Pending(_) => None,
            })
            .collect();
        let mut d = self.mixer.decide(req, &clients, self.shared.ring.master_volume())?;
        for &(slot, v) in &d.slots {
            self.shared.ring.slot(slot).set_volume(v);
        }
        if let Some(v) = d.master {
            self.shared.ring.set_master_volume(v);
        }
        if d.save
            && let Err(e) = self.mixer.save()
        {
            crate::say!("dmix-serve: keeping volumes: {e}");
            d.answer.push_str(&format!(" (not kept across restarts: {e})"));
        }
        Ok(d.answer)
    }

    /// Asks the sink keeper to move the server to the sink `spec` (`dmix-stat --sink`); the
    /// answer comes later on the returned channel. The keeper opens the sink off this thread
    /// and the period loop's, so other connections are served meanwhile. One switch at a
    /// time.
    fn switch_sink(&mut self, spec: &str) -> Result<Receiver<SwitchAnswer>, (Refusal, String)> {
        let spec: SinkSpec = spec.parse().map_err(|e: Error| (Refusal::BadRequest, e.to_string()))?;
        if let SinkSpec::Wav(path) = &spec
            && path.is_relative()
        {
            // The server's working directory is not the asker's (dmix-stat makes it absolute).
            return Err((Refusal::BadRequest, format!("sink '{spec}': the path must be absolute")));
        }
        if self.switching.is_some() {
            return Err((Refusal::Busy, "another sink switch is under way".into()));
        }
        self.switcher.request(spec)
    }

    /// Sends the answer of the switch under way to the connection that asked, if it has
    /// come (and the connection is still there).
    fn answer_switch(&mut self) {
        let Some((id, answered)) = &self.switching else { return };
        let reply = match answered.try_recv() {
            Ok(Ok(line)) => Reply::Answer(line),
            Ok(Err((r, reason))) => Reply::Refused(r, reason),
            Err(TryRecvError::Empty) => return,
            // The keeper ended: the period loop has ended, the server is stopping.
            Err(TryRecvError::Disconnected) => Reply::Refused(Refusal::Stopping, "the server is stopping".into()),
        };
        let id = *id;
        self.switching = None;
        if let Some(c) = self.conns.iter().find(|c| c.id == id) {
            let (b, n) = reply.encode();
            let _ = transport::send(c.fd.as_fd(), &b[..n], &[]);
        }
    }

    /// Checks a hello and the peer ([`admit`]) and does what the decision says: refuses,
    /// or fills the slot, sends the welcome and posts the slot to the period loop. Returns
    /// the connection's new state.
    fn hello(&mut self, fd: &OwnedFd, via: Option<&str>, bytes: Option<&[u8]>) -> Option<ConnState> {
        let hello = match admit::read_hello(bytes) {
            Ok(h) => h,
            Err((r, reason)) => {
                self.refuse(fd, r, reason);
                return None;
            }
        };
        let cred = transport::peer_cred(fd.as_fd()).ok()?;
        let groups = || transport::peer_groups(fd.as_fd()).unwrap_or_default();
        let p = self.shared.ring.params();
        let sub = via.and_then(|name| self.subs.iter().find(|s| s.name == name));
        let ctx = AdmitContext {
            uid: self.uid,
            group: self.group,
            sub: sub.map(Sub::channels),
            channels: p.channels,
            capture_frames: p.capture_frames,
            held: self.held_channels(),
            owned: self.owned,
        };
        let admission = match admit::admit(&hello, &Peer { cred, groups: &groups }, via, &ctx) {
            Ok(a) => a,
            Err((r, reason)) => {
                self.refuse(fd, r, reason);
                return None;
            }
        };
        let Admission { slot, role, width, map, held } = admission;
        let client_id = self.next_client_id;
        self.next_client_id = self.next_client_id.wrapping_add(1).max(1);
        self.fill_slot(slot, client_id, &hello, width, cred, map.as_deref());
        let welcome = Reply::Welcome(Welcome {
            slot: slot as u32,
            client_id,
            layout_version: RING_LAYOUT_VERSION,
            params: *p,
            region_bytes: self.shared.ring.region_bytes(),
        });
        let (b, n) = welcome.encode();
        // Players add into the ring; recorders (of the mix or of the shared input) publish
        // their read position in their counters. Both need the mix region writable; inspectors do not.
        let fds = self.shared.ring.client_fds(matches!(hello.role, Role::Play | Role::Tee | Role::Capture));
        if transport::send(fd.as_fd(), &b[..n], &[fds.status, fds.mix, fds.monitor, fds.capture]).is_err() {
            return None;
        }
        self.owned |= 1 << slot;
        let bit = 1u64 << slot;
        let masks = [
            (&self.shared.play_mask, Role::Play),
            (&self.shared.tee_mask, Role::Tee),
            (&self.shared.capture_mask, Role::Capture),
        ];
        for (mask, role) in masks {
            if hello.role == role {
                mask.fetch_or(bit, Ordering::AcqRel);
            } else {
                mask.fetch_and(!bit, Ordering::AcqRel);
            }
        }
        self.shared.join_mask.fetch_or(bit, Ordering::AcqRel);
        self.shared.ring.ring_doorbell();
        Some(ConnState::Active { slot, role, held })
    }

    fn held_channels(&self) -> u64 {
        self.conns
            .iter()
            .map(|c| match c.state {
                ConnState::Active { held, .. } => held,
                ConnState::Pending(_) => 0,
            })
            .fold(0, |a, b| a | b)
    }

    /// Writes the slot's entry in the table. `width` is the channels the client writes or
    /// reads: a sub-device's, else the server's (its hello's 0 means "the server's", which
    /// dmix-stat must not show as 0).
    fn fill_slot(&self, slot: usize, client_id: u32, hello: &Hello, width: u32, cred: PeerCred, map: Option<&[u8]>) {
        self.shared.ring.slot(slot).fill(&SlotFill {
            role_code: hello.role.code(),
            client_id,
            pid: cred.pid,
            uid: cred.uid,
            channels: width,
            name: &hello.name,
            map: map.unwrap_or(&[]),
            volume: self.mixer.initial(hello),
        });
    }
}
