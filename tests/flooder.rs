//! A flood of slow connections (issue 14): a thread that holds up to `target` SOCK_SEQPACKET
//! connections to a server socket, a third sending 1 to 5000 random bytes, a third the 4
//! bytes "DMIX" and nothing more, a third nothing at all, and replaces each one the server
//! answers or closes, until it is dropped. What a program that leaks connections, or a
//! slowloris, does to a server.
//!
//! Shared by the reliability test and `examples/flood.rs` (which includes this file), so
//! that the figures in docs/RELIABILITY.md come from the flood the test runs.

#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket};

/// The shortest round of the flood loop, and the most connections it opens in one: it
/// paces itself (at most 16,000 new connections a second), so that it floods the server
/// rather than the machine (2 cores shared with the server, the players and other tests).
const ROUND: Duration = Duration::from_millis(1);
const OPENS_PER_ROUND: usize = 16;

/// A running flood; dropping it stops the thread and closes every connection.
pub struct Flood {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    opened: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Starts flooding the server socket at `path` with up to `target` connections.
    pub fn start(path: &Path, target: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let addr = UnixAddr::new(path).expect("socket path");
        let (s, h, o) = (Arc::clone(&stop), Arc::clone(&held), Arc::clone(&opened));
        let thread = std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || run(&addr, target, &s, &h, &o))
            .expect("flood thread");
        Flood { stop, held, opened, thread: Some(thread) }
    }

    /// Connections open right now (accepted by the server or waiting in its listen queue).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Connections opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift: deterministic, so that a failure reproduces.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// Opens one connection of kind `kind` (0: random bytes, 1: "DMIX", 2: silent); `None` when
/// the server's listen queue is full (or the server is gone).
fn open(addr: &UnixAddr, kind: u64, rng: &mut Rng, garbage: &mut [u8]) -> Option<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, flags, None).ok()?;
    // Non-blocking: a full listen queue is EAGAIN at once, never a flooder stuck in connect.
    connect(fd.as_raw_fd(), addr).ok()?;
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    match kind {
        0 => {
            let n = 1 + (rng.next() as usize % 5000);
            for b in garbage[..n].iter_mut() {
                *b = rng.next() as u8;
            }
            let _ = send(fd.as_raw_fd(), &garbage[..n], flags);
        }
        1 => {
            let _ = send(fd.as_raw_fd(), b"DMIX", flags);
        }
        _ => {}
    }
    Some(fd)
}

fn run(addr: &UnixAddr, target: usize, stop: &AtomicBool, held: &AtomicUsize, opened: &AtomicU64) {
    let mut conns: Vec<OwnedFd> = Vec::with_capacity(target);
    let mut rng = Rng(0x5eed_f10d);
    let mut garbage = vec![0u8; 5000];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for _ in 0..OPENS_PER_ROUND.min(target - conns.len()) {
            let Some(fd) = open(addr, n % 3, &mut rng, &mut garbage) else { break };
            conns.push(fd);
            n += 1;
            opened.fetch_add(1, Ordering::Relaxed);
        }
        held.store(conns.len(), Ordering::Relaxed);
        // A connection the server answered (a refusal) or closed is replaced next round.
        let mut gone = vec![false; conns.len()];
        {
            let mut fds: Vec<PollFd<'_>> = conns.iter().map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN)).collect();
            if poll(&mut fds, PollTimeout::from(10u8)).is_ok() {
                for (g, f) in gone.iter_mut().zip(&fds) {
                    *g = f.revents().is_some_and(|r| !r.is_empty());
                }
            }
        }
        let mut i = 0;
        conns.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        // The flood's rate (OPENS_PER_ROUND a ROUND) is the load under test: this sleep is
        // its clock, not a wait for anything.
        if let Some(rest) = ROUND.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}
