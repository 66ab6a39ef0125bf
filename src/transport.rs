//! The unix socket between clients and the server: listening (with stale-socket detection),
//! connecting, one message per SOCK_SEQPACKET datagram, fds over SCM_RIGHTS, and the peer's
//! credentials from the kernel (SO_PEERCRED), never from the peer's word.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, bind, connect, getsockopt, listen, sendmsg,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::error::{Error, Result};
use crate::sys::{self, Received};

/// Who is at the other end of a connection, as the kernel says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

fn seqpacket(nonblocking: bool) -> Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    socket(AddressFamily::Unix, SockType::SeqPacket, flags, None).map_err(|e| Error::sys("socket", e))
}

/// A listening server socket; removes its socket file on drop if it is still ours.
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
    ino: u64,
}

impl Listener {
    /// Binds `path` (mode `mode`, e.g. 0o600). A socket file left by a dead server (nobody
    /// accepts on it) is replaced; a live one is `Error::AlreadyRunning`.
    pub fn bind(path: &Path, mode: u32) -> Result<Listener> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(Error::invalid(path.display().to_string(), "exists and is not a socket; not replacing it"));
            }
            match connect_socket(path) {
                Ok(_) => {
                    return Err(Error::AlreadyRunning { socket: path.to_path_buf() });
                }
                Err(e) if e.kind() == crate::ErrorKind::NotRunning => {
                    std::fs::remove_file(path)
                        .map_err(|e| Error::sys(format!("remove stale socket {}", path.display()), e))?;
                }
                Err(e) => return Err(e),
            }
        }
        let fd = seqpacket(true)?;
        let addr = UnixAddr::new(path).map_err(|e| Error::sys(format!("socket address {}", path.display()), e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| match e {
            // Another server bound it between our check and our bind.
            nix::Error::EADDRINUSE => Error::AlreadyRunning { socket: path.to_path_buf() },
            e => Error::sys(format!("bind {}", path.display()), e),
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::sys(format!("chmod {}", path.display()), e))?;
        listen(&fd, nix::sys::socket::Backlog::new(64).expect("64 is a valid backlog"))
            .map_err(|e| Error::sys(format!("listen {}", path.display()), e))?;
        let ino = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        Ok(Listener { fd, path: path.to_path_buf(), ino })
    }

    /// The listening socket a service manager passed (socket activation: systemd's
    /// `ListenSequentialPacket=`, `systemd-socket-activate --seqpacket`), if any. It must be
    /// a listening SOCK_SEQPACKET unix socket bound to a path. It is the manager's: nothing
    /// is removed on drop.
    pub fn activated() -> Result<Option<Listener>> {
        let bad = |why: String| Error::invalid("socket activation", why);
        let Some(fd) = sys::take_listen_fd().map_err(bad)? else {
            return Ok(None);
        };
        let kind =
            getsockopt(&fd, sockopt::SockType).map_err(|e| bad(format!("the passed fd is not a socket ({e})")))?;
        if kind != SockType::SeqPacket {
            return Err(bad(format!(
                "the passed socket is {kind:?}; dmix-serve needs SOCK_SEQPACKET (ListenSequentialPacket=, or \
                 systemd-socket-activate --seqpacket)"
            )));
        }
        if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            return Err(bad("the passed socket is not listening".into()));
        }
        let addr: UnixAddr = nix::sys::socket::getsockname(fd.as_raw_fd())
            .map_err(|e| bad(format!("the passed socket has no unix address ({e})")))?;
        let Some(path) = addr.path().map(Path::to_path_buf) else {
            return Err(bad("the passed socket is not bound to a path (abstract or unnamed)".into()));
        };
        // accept() here never blocks: the control thread polls.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| bad(e.to_string()))?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| bad(e.to_string()))?;
        Ok(Some(Listener { fd, path, ino: 0 }))
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one pending connection, if any (non-blocking, close-on-exec).
    pub fn accept(&self) -> Result<Option<OwnedFd>> {
        sys::accept(self.fd.as_fd()).map_err(|e| Error::sys(format!("accept on {}", self.path.display()), e))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Remove the socket only if it is still the one we bound: a server started after us
        // (after we were declared stale) must keep its own.
        if self.ino != 0
            && let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Connects to the server socket at `path` (blocking socket).
pub fn connect_socket(path: &Path) -> Result<OwnedFd> {
    let fd = seqpacket(false)?;
    connect_fd(&fd, path)?;
    Ok(fd)
}

/// Connects as [`connect_socket`] does, but waits at most `timeout` for room in the
/// server's listen queue (a unix connect otherwise waits as long as the queue stays full,
/// which a flood of connections can make forever). `Ok(None)`: it stayed full.
pub fn connect_within(path: &Path, timeout: Duration) -> Result<Option<OwnedFd>> {
    let fd = seqpacket(false)?;
    // A unix connect waits for the send timeout (0 would be forever: at least 1 ms).
    let us = timeout.as_micros().clamp(1000, 3_600_000_000) as i64;
    let tv = TimeVal::new(us / 1_000_000, (us % 1_000_000) as _);
    setsockopt(&fd, sockopt::SendTimeout, &tv).map_err(|e| Error::sys("SO_SNDTIMEO", e))?;
    match connect_fd(&fd, path) {
        Ok(()) => Ok(Some(fd)),
        Err(Error::Sys { source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

fn connect_fd(fd: &OwnedFd, path: &Path) -> Result<()> {
    let addr = UnixAddr::new(path).map_err(|e| Error::sys(format!("socket address {}", path.display()), e))?;
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(()),
        Err(nix::Error::ENOENT) | Err(nix::Error::ECONNREFUSED) => {
            Err(Error::NotRunning { socket: path.to_path_buf() })
        }
        Err(nix::Error::EPROTOTYPE) | Err(nix::Error::ENOTSOCK) => {
            Err(Error::invalid(path.display().to_string(), "not a dmix server socket"))
        }
        Err(e) => Err(Error::sys(format!("connect {}", path.display()), e)),
    }
}

/// Sends one message with optional fds.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    // MSG_NOSIGNAL: a peer that hung up must give us EPIPE, never kill us with SIGPIPE.
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT, None)
        .map_err(|e| Error::sys("sendmsg", e))?;
    Ok(())
}

/// Receives one message, waiting at most `timeout`. `Ok(None)`: the peer hung up.
pub fn recv_timeout(sock: BorrowedFd<'_>, buf: &mut [u8], timeout: Duration) -> Result<Option<Received>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = [PollFd::new(sock, PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        match poll(&mut pfd, ms) {
            Ok(0) => {
                return Err(Error::sys(
                    "waiting for the server's reply",
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
        match sys::recv_with_fds(sock, buf, true) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(Error::sys("recvmsg", e)),
        }
    }
}

/// True when the peer has hung up (checked without blocking).
pub fn peer_hung_up(sock: BorrowedFd<'_>) -> bool {
    let mut pfd = [PollFd::new(sock, PollFlags::empty())];
    match poll(&mut pfd, PollTimeout::ZERO) {
        Ok(n) if n > 0 => pfd[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)),
        _ => false,
    }
}

/// The peer's credentials (SO_PEERCRED).
pub fn peer_cred(sock: BorrowedFd<'_>) -> Result<PeerCred> {
    let c = getsockopt(&sock, sockopt::PeerCredentials).map_err(|e| Error::sys("SO_PEERCRED", e))?;
    Ok(PeerCred { pid: c.pid() as u32, uid: c.uid(), gid: c.gid() })
}

/// The peer's supplementary group ids (SO_PEERGROUPS), from the kernel.
pub fn peer_groups(sock: BorrowedFd<'_>) -> Result<Vec<u32>> {
    sys::peer_groups(sock).map_err(|e| Error::sys("SO_PEERGROUPS", e))
}
