//! `dmix-serve`'s engine: creates the ring, listens on the socket, admits clients (the
//! control thread, here) and runs the period loop (a thread of its own, [`period`]).
//!
//! The two threads share only atomics ([`Shared`]): the control thread fills a slot's entry
//! in the status table and posts it in `join_mask`; the period loop admits it at a period
//! boundary (giving it its start frame) and, when the control thread posts a hang-up in
//! `leave_mask`, frees it and hands it back through `freed_mask`. Nothing the clients write
//! is read for control, except the self-reported positions that pace freewheel.

pub mod period;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Error, Result};
use crate::protocol::{HELLO_BYTES, Hello, PROTOCOL_VERSION, Refusal, Reply, Role, Welcome};
use crate::ring::layout::{MAX_SLOTS, NAME_BYTES, RING_LAYOUT_VERSION, SLOT_JOINING};
use crate::ring::{RingParams, ServerRing, unix_now_ns};
use crate::sink::{SinkConfig, SinkSpec};
use crate::transport::{self, Listener, PeerCred};

/// How long a new connection may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections that have not said hello yet, at most; more are closed at once.
const MAX_PENDING: usize = 32;

/// A checked server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The socket path.
    pub socket: PathBuf,
    /// Where the mix goes.
    pub sink: SinkSpec,
    /// Ring parameters.
    pub params: RingParams,
    /// Hold the first period until this many players were admitted.
    pub wait_clients: u32,
    /// Exit once a player came and all players left.
    pub exit_when_idle: bool,
}

/// What the control thread and the period loop share: atomics only.
pub struct Shared {
    /// The ring.
    pub ring: ServerRing,
    /// Set by SIGINT/SIGTERM (or by the control thread on a fatal error).
    pub stop: Arc<AtomicBool>,
    /// Slots accepted by the control thread, waiting for admission.
    pub join_mask: AtomicU64,
    /// Slots whose client hung up.
    pub leave_mask: AtomicU64,
    /// Slots the period loop has freed, for the control thread to reuse.
    pub freed_mask: AtomicU64,
    /// Slots held by players (set before the slot is posted in `join_mask`).
    pub play_mask: AtomicU64,
    /// Slots held by recorders (tees), likewise.
    pub tee_mask: AtomicU64,
    /// The period loop has ended.
    pub loop_done: AtomicBool,
}

impl Shared {
    fn ring_doorbell(&self) {
        self.ring.doorbell().fetch_add(1, Ordering::Release);
        crate::sys::futex_wake(self.ring.doorbell());
    }
}

/// How the server ended.
pub use period::LoopEnd;

/// Runs a server until SIGINT/SIGTERM (`stop`), `--exit-when-idle`, or a fatal error.
/// `on_ready` is called once the socket listens (the binary prints its ready line there).
pub fn run(
    cfg: &ServerConfig,
    stop: Arc<AtomicBool>,
    on_ready: impl FnOnce(&Listener),
) -> Result<LoopEnd> {
    cfg.params.validate()?;
    if let Some(dir) = cfg.socket.parent() {
        crate::paths::ensure_runtime_dir(dir)?;
    }
    // Bind first: a second server must be refused before it touches the sink (a WAV path
    // shared with a live server would otherwise be truncated).
    let listener = Listener::bind(&cfg.socket, 0o600)?;
    let p = cfg.params;
    let shared = Shared {
        ring: ServerRing::create(p, PROTOCOL_VERSION)?,
        stop,
        join_mask: AtomicU64::new(0),
        leave_mask: AtomicU64::new(0),
        freed_mask: AtomicU64::new(0),
        play_mask: AtomicU64::new(0),
        tee_mask: AtomicU64::new(0),
        loop_done: AtomicBool::new(false),
    };
    shared.ring.set_sink_name(&cfg.sink.to_string());
    let sink_cfg = SinkConfig {
        rate_hz: p.rate_hz,
        channels: p.channels as u16,
        format: p.format,
        period_frames: p.period_frames,
        buffer_frames: p.ring_frames,
    };
    std::thread::scope(|s| {
        let shared = &shared;
        let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        // The sink is opened on the period thread itself: an ALSA handle is not Send.
        let period = std::thread::Builder::new()
            .name("dmix-period".into())
            .spawn_scoped(s, move || -> Result<LoopEnd> {
                let mut sink = match crate::sink::open_sink(&cfg.sink, &sink_cfg) {
                    Ok(sink) => sink,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return Ok(LoopEnd::Stopped);
                    }
                };
                let _ = opened_tx.send(Ok(()));
                let end = period::PeriodLoop::new(
                    shared,
                    sink.as_mut(),
                    cfg.wait_clients,
                    cfg.exit_when_idle,
                )
                .run();
                shared.loop_done.store(true, Ordering::Release);
                // Finalize the sink whatever happened: a WAV written so far stays readable.
                let finished = sink.finish();
                let end = end?;
                finished?;
                Ok(end)
            })
            .map_err(|e| Error::sys("spawn the period thread", e))?;
        let opened = opened_rx
            .recv()
            .unwrap_or_else(|_| Err(Error::invalid("period thread", "ended early")));
        if let Err(e) = opened {
            let _ = period.join();
            return Err(e);
        }
        on_ready(&listener);
        let control = Control::new(shared, &listener).run();
        if control.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
            shared.ring_doorbell();
        }
        let end = period
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("period thread", "panicked")));
        control?;
        end
    })
}

enum ConnState {
    /// Waiting for the hello until the deadline.
    Pending(Instant),
    /// Holding a slot.
    Active(usize),
}

struct Conn {
    fd: OwnedFd,
    state: ConnState,
}

struct Control<'a> {
    shared: &'a Shared,
    listener: &'a Listener,
    conns: Vec<Conn>,
    /// Slots in use (control thread's view).
    owned: u64,
    next_client_id: u32,
    uid: u32,
}

impl<'a> Control<'a> {
    fn new(shared: &'a Shared, listener: &'a Listener) -> Self {
        Control {
            shared,
            listener,
            conns: Vec::with_capacity(MAX_SLOTS + MAX_PENDING),
            owned: 0,
            next_client_id: 1,
            uid: nix::unistd::getuid().as_raw(),
        }
    }

    fn run(mut self) -> Result<()> {
        let mut ready = Vec::with_capacity(MAX_SLOTS + MAX_PENDING + 1);
        while !self.shared.stop.load(Ordering::Relaxed)
            && !self.shared.loop_done.load(Ordering::Acquire)
        {
            self.owned &= !self.shared.freed_mask.swap(0, Ordering::AcqRel);
            ready.clear();
            {
                let mut fds = Vec::with_capacity(self.conns.len() + 1);
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
                for c in &self.conns {
                    fds.push(PollFd::new(c.fd.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::from(100u16)) {
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(Error::sys("poll", e)),
                }
                for (i, f) in fds.iter().enumerate() {
                    if f.revents().is_some_and(|r| !r.is_empty()) {
                        ready.push(i);
                    }
                }
            }
            // Handle connections from the back so removals keep earlier indices valid.
            for &i in ready.iter().rev() {
                if i == 0 {
                    self.accept_all()?;
                } else {
                    self.service(i - 1);
                }
            }
            self.expire_pending();
        }
        // Closing every connection tells each client the server is gone.
        self.conns.clear();
        Ok(())
    }

    fn accept_all(&mut self) -> Result<()> {
        while let Some(fd) = self.listener.accept()? {
            let pending = self
                .conns
                .iter()
                .filter(|c| matches!(c.state, ConnState::Pending(_)))
                .count();
            if pending >= MAX_PENDING {
                // Too many silent connections: drop the new one rather than grow without bound.
                eprintln!("dmix-serve: too many connections waiting to say hello; dropping one");
                continue;
            }
            self.conns.push(Conn {
                fd,
                state: ConnState::Pending(Instant::now() + HELLO_TIMEOUT),
            });
        }
        Ok(())
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        self.conns
            .retain(|c| !matches!(c.state, ConnState::Pending(t) if t <= now));
    }

    fn service(&mut self, i: usize) {
        let mut buf = [0u8; HELLO_BYTES + 1];
        let got = crate::sys::recv_with_fds(self.conns[i].fd.as_fd(), &mut buf, true);
        match (&self.conns[i].state, got) {
            (_, Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            (ConnState::Active(slot), Ok(Some(_))) => {
                // Nothing is expected after the hello; ignore it (the read keeps the socket
                // from filling), but a hang-up below is how a client leaves.
                let _ = slot;
            }
            (ConnState::Active(slot), _) => {
                let slot = *slot;
                self.conns.swap_remove(i);
                self.shared.leave_mask.fetch_or(1 << slot, Ordering::AcqRel);
                self.shared.ring_doorbell();
            }
            (ConnState::Pending(_), Ok(Some(msg))) => {
                let conn = self.conns.swap_remove(i);
                // The server accepts no fds: any that came are closed right here.
                drop(msg.fds);
                let bytes = if msg.truncated {
                    None
                } else {
                    Some(&buf[..msg.len])
                };
                if let Some(slot) = self.hello(&conn.fd, bytes) {
                    self.conns.push(Conn {
                        fd: conn.fd,
                        state: ConnState::Active(slot),
                    });
                }
            }
            (ConnState::Pending(_), _) => {
                self.conns.swap_remove(i);
            }
        }
    }

    fn refuse(&self, fd: &OwnedFd, r: Refusal, reason: String) {
        let (b, n) = Reply::Refused(r, reason).encode();
        let _ = transport::send(fd.as_fd(), &b[..n], &[]);
    }

    /// Checks a hello and the peer, assigns a slot and sends the welcome. Returns the slot.
    fn hello(&mut self, fd: &OwnedFd, bytes: Option<&[u8]>) -> Option<usize> {
        let hello = match bytes.map(Hello::decode) {
            Some(Ok(h)) => h,
            Some(Err(Error::Version { theirs, .. })) => {
                let reason = format!(
                    "protocol version mismatch: the server speaks {PROTOCOL_VERSION}, the client {theirs}"
                );
                self.refuse(fd, Refusal::Incompatible, reason);
                return None;
            }
            Some(Err(e)) => {
                self.refuse(fd, Refusal::BadRequest, e.to_string());
                return None;
            }
            None => {
                self.refuse(fd, Refusal::BadRequest, "hello: oversized message".into());
                return None;
            }
        };
        let cred = match transport::peer_cred(fd.as_fd()) {
            Ok(c) => c,
            Err(_) => return None,
        };
        if cred.uid != self.uid && cred.uid != 0 {
            self.refuse(
                fd,
                Refusal::Denied,
                format!("uid {} may not use this server", cred.uid),
            );
            return None;
        }
        let p = self.shared.ring.params();
        if hello.channels != 0 && hello.channels != p.channels {
            let reason = format!(
                "the server has {} channels; {} asked for",
                p.channels, hello.channels
            );
            self.refuse(fd, Refusal::BadRequest, reason);
            return None;
        }
        let free = !self.owned;
        if free == 0 {
            self.refuse(
                fd,
                Refusal::Full,
                format!("server full: all {MAX_SLOTS} client slots are taken"),
            );
            return None;
        }
        let slot = free.trailing_zeros() as usize;
        let client_id = self.next_client_id;
        self.next_client_id = self.next_client_id.wrapping_add(1).max(1);
        self.fill_slot(slot, client_id, &hello, cred);
        let welcome = Reply::Welcome(Welcome {
            slot: slot as u32,
            client_id,
            layout_version: RING_LAYOUT_VERSION,
            params: *p,
            region_bytes: self.shared.ring.region_bytes(),
        });
        let (b, n) = welcome.encode();
        // Players add into the ring; recorders publish their read position in their
        // counters. Both need the mix region writable; inspectors do not.
        let fds = self
            .shared
            .ring
            .client_fds(matches!(hello.role, Role::Play | Role::Tee));
        if transport::send(fd.as_fd(), &b[..n], &[fds.status, fds.mix, fds.monitor]).is_err() {
            return None;
        }
        self.owned |= 1 << slot;
        let bit = 1u64 << slot;
        for (mask, role) in [
            (&self.shared.play_mask, Role::Play),
            (&self.shared.tee_mask, Role::Tee),
        ] {
            if hello.role == role {
                mask.fetch_or(bit, Ordering::AcqRel);
            } else {
                mask.fetch_and(!bit, Ordering::AcqRel);
            }
        }
        self.shared.join_mask.fetch_or(bit, Ordering::AcqRel);
        self.shared.ring_doorbell();
        Some(slot)
    }

    fn fill_slot(&self, slot: usize, client_id: u32, hello: &Hello, cred: PeerCred) {
        let info = &self.shared.ring.status().slots[slot];
        info.role.store(hello.role.code(), Ordering::Relaxed);
        info.client_id.store(client_id, Ordering::Relaxed);
        info.pid.store(cred.pid, Ordering::Relaxed);
        info.uid.store(cred.uid, Ordering::Relaxed);
        info.channels.store(hello.channels, Ordering::Relaxed);
        info.start_frame.store(0, Ordering::Relaxed);
        info.joined_unix_ns.store(unix_now_ns(), Ordering::Relaxed);
        let name = crate::protocol::truncate_name(&hello.name, NAME_BYTES).as_bytes();
        for (i, b) in info.name.iter().enumerate() {
            b.store(name.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
        // Release: the period loop and inspectors that see JOINING see the fields above.
        info.state.store(SLOT_JOINING, Ordering::Release);
    }
}
