//! Fence 2 of the crate's `unsafe`: the few system calls no safe wrapper offers.
//!
//! - futex wait/wake on a word in a shared mapping (never `FUTEX_PRIVATE_FLAG`: the waiter
//!   and the waker are different processes), and a wait on either of two words
//!   (`futex_waitv`);
//! - adopting the raw fds the kernel hands us (`accept4`, `SCM_RIGHTS`) as `OwnedFd`, each
//!   exactly once, close-on-exec from birth, and the listening socket a service manager
//!   passes at start (socket activation: fd 3, once);
//! - the peer's supplementary groups (`SO_PEERGROUPS`), which nix does not wrap;
//! - real-time scheduling of the calling thread (`sched_setscheduler`), which nix does not wrap;
//! - whether a signal was ignored when we started (`sigaction` without changing it), which
//!   nix cannot ask without setting a handler;
//! - how many bytes wait in a pipe (`FIONREAD`), which nix wraps only as an `unsafe fn`.
//!
//! It also holds the clocks every process compares (safe code: CLOCK_MONOTONIC, the Unix
//! epoch, an absolute sleep).
//!
//! What this module upholds: every fd it returns is owned by nobody else; every futex call
//! passes a pointer to a live, 4-byte aligned word and a valid timespec. It never blocks
//! without a deadline.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockFlag};
use nix::time::{ClockId, clock_gettime};

/// Every bit: a waiter or waker that does not care which period it is.
pub const FUTEX_BITSET_ALL: u32 = u32::MAX;

/// Why a futex wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Woken (or the word no longer held `expected`, or a signal): re-check the condition.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// CLOCK_MONOTONIC in ns (the clock the paced server runs by; comparable across processes).
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map(|t| Duration::from(t).as_nanos() as u64).unwrap_or(0)
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (see [`monotonic_ns`]). False when a
/// signal cut the sleep short (EINTR): the caller re-checks its stop flag.
pub fn sleep_until_monotonic(deadline_ns: u64) -> bool {
    let ts = nix::sys::time::TimeSpec::from(Duration::from_nanos(deadline_ns));
    nix::time::clock_nanosleep(ClockId::CLOCK_MONOTONIC, nix::time::ClockNanosleepFlags::TIMER_ABSTIME, &ts).is_ok()
}

/// Waits while `*word == expected`, for at most `timeout`, woken only by wakes whose bitset
/// shares a bit with `bitset`. Spurious returns happen (signals, other bits of a shared
/// period counter): callers always re-check their condition.
pub fn futex_wait_bitset(word: &AtomicU32, expected: u32, timeout: Duration, bitset: u32) -> Wake {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline; computing it here keeps a
    // restarted wait from sleeping longer than asked.
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default();
    let deadline = now + timeout;
    let ts = libc::timespec {
        tv_sec: deadline.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(deadline.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live &AtomicU32 (4-byte aligned, valid for the duration of the call,
    // possibly in a read-only shared mapping, which FUTEX_WAIT only reads); `ts` is a valid
    // timespec on our stack; uaddr2 is unused by FUTEX_WAIT_BITSET and passed as null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            bitset,
        )
    };
    if rc == 0 {
        return Wake::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => Wake::TimedOut,
        // EAGAIN: the word already changed; EINTR: a signal. Both mean "look again".
        _ => Wake::Woken,
    }
}

/// Waits while `*word == expected`, for at most `timeout`, woken by any wake.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Wake {
    futex_wait_bitset(word, expected, timeout, FUTEX_BITSET_ALL)
}

/// The kernel's `struct futex_waitv` (include/uapi/linux/futex.h, Linux 5.16):
/// `{ __u64 val; __u64 uaddr; __u32 flags; __u32 __reserved; }`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: a 32-bit futex word (shared: no `FUTEX2_PRIVATE`).
const FUTEX2_SIZE_U32: u32 = 0x02;

/// How often [`futex_wait_either`] looks at its second word on a kernel without
/// `futex_waitv` (before Linux 5.16, or a sandbox that refuses it).
const EITHER_FALLBACK_SLICE: Duration = Duration::from_millis(2);

/// Waits while `*a.0 == a.1` and `*b.0 == b.1`, for at most `timeout`, woken by a wake on
/// either word (`futex_waitv`): a thread that must notice whichever of two words changes
/// first, one written by its own process and one by another. Without `futex_waitv` it
/// sleeps on `a` for at most a slice of 2 ms (the caller looks at `b` between slices). Spurious returns happen:
/// callers re-check their conditions.
pub fn futex_wait_either(a: (&AtomicU32, u32), b: (&AtomicU32, u32), timeout: Duration) -> Wake {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default();
    let deadline = now + timeout;
    let ts = libc::timespec {
        tv_sec: deadline.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(deadline.subsec_nanos() as i32),
    };
    let waiter = |(word, expected): (&AtomicU32, u32)| FutexWaitv {
        val: u64::from(expected),
        uaddr: word.as_ptr() as u64,
        flags: FUTEX2_SIZE_U32,
        reserved: 0,
    };
    let waiters = [waiter(a), waiter(b)];
    // SAFETY: `waiters` is an array of two kernel `futex_waitv` records on our stack, each
    // naming a live &AtomicU32 (4-byte aligned, valid for the call, possibly in a read-only
    // shared mapping, which the wait only reads); `ts` is a valid absolute CLOCK_MONOTONIC
    // timespec on our stack; flags are 0 as the call requires.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            2 as libc::c_uint,
            0 as libc::c_uint,
            &ts as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if rc >= 0 {
        return Wake::Woken;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => Wake::TimedOut,
        // EAGAIN: a word already changed; EINTR: a signal. Both mean "look again".
        Some(libc::EAGAIN | libc::EINTR) => Wake::Woken,
        // ENOSYS (an older kernel), EPERM (a seccomp filter): wait on one word at a time.
        _ => {
            let slice = timeout.min(EITHER_FALLBACK_SLICE);
            match futex_wait(a.0, a.1, slice) {
                // A slice passed, not the caller's timeout: the caller looks at `b` again.
                Wake::TimedOut if slice < timeout => Wake::Woken,
                w => w,
            }
        }
    }
}

/// Wakes every waiter on `word` whose bitset shares a bit with `bitset`; returns how many.
/// Never blocks; works on a word in a mapping shared with other processes.
pub fn futex_wake_bitset(word: &AtomicU32, bitset: u32) -> usize {
    // SAFETY: `word` is a live &AtomicU32; FUTEX_WAKE_BITSET reads no memory through the
    // timeout and uaddr2 arguments, passed as null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE_BITSET,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            bitset,
        )
    };
    usize::try_from(rc).unwrap_or(0)
}

/// Wakes every waiter on `word`.
pub fn futex_wake(word: &AtomicU32) -> usize {
    futex_wake_bitset(word, FUTEX_BITSET_ALL)
}

/// Accepts one connection on a listening socket, non-blocking and close-on-exec.
/// `Ok(None)` when no connection is pending.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match nix::sys::socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
        // SAFETY: accept4 just returned this fd to us; nothing else owns or will close it.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(nix::Error::EAGAIN) | Err(nix::Error::ECONNABORTED) | Err(nix::Error::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The first fd a service manager passes (sd_listen_fds(3): `SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Takes the sockets passed by a service manager (systemd, systemd-socket-activate) under the
/// sd_listen_fds(3) protocol: `Ok(None)` unless `LISTEN_PID` names this process; the one fd
/// passed (fd 3), close-on-exec; an error if there are none, several, or fd 3 is not open.
/// Only the first call can return an fd.
pub fn take_listen_fd() -> Result<Option<OwnedFd>, String> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(pid) = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) else {
        return Ok(None);
    };
    if pid != std::process::id() {
        return Ok(None);
    }
    let n = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    if n != 1 {
        return Err(format!("socket activation passed {n} sockets (LISTEN_FDS); dmix-serve takes exactly one"));
    }
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(None);
    }
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: only borrowed for the duration of this check, which fails on a closed fd.
    let borrowed = unsafe { BorrowedFd::borrow_raw(LISTEN_FDS_START) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|e| format!("socket activation: fd 3 is not open ({e})"))?;
    // SAFETY: LISTEN_PID names this process, so by the protocol fd 3 was opened for us and
    // nobody else in it owns the fd; it is open (checked above), and TAKEN makes this the
    // only adoption.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| format!("socket activation: fd 3: {e}"))?;
    Ok(Some(fd))
}

/// The most fds one message may carry; more is a protocol violation.
pub const MAX_FDS: usize = 4;

/// One received datagram: its length, whether it was cut short, and the fds it carried.
pub struct Received {
    /// Bytes received into the buffer.
    pub len: usize,
    /// The message was longer than the buffer (MSG_TRUNC) or its fds did not fit (MSG_CTRUNC).
    pub truncated: bool,
    /// The fds, adopted, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Receives one message from a SOCK_SEQPACKET socket, adopting any fds it carries as
/// close-on-exec `OwnedFd`s (MSG_CMSG_CLOEXEC: no window in which an exec could leak them).
/// Returns `Ok(None)` when the peer has hung up (a zero-length read).
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8], nonblocking: bool) -> io::Result<Option<Received>> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let msg = nix::sys::socket::recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), flags)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel installed this fd in our table for this message only;
                // it is adopted here exactly once and owned by nothing else.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    if len == 0 && fds.is_empty() && !truncated {
        return Ok(None);
    }
    Ok(Some(Received { len, truncated, fds }))
}

/// Puts the calling thread under SCHED_FIFO at `priority` (1..=99), not inherited by
/// children (SCHED_RESET_ON_FORK). Needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least
/// `priority`; the error says which was missing (EPERM).
pub fn set_realtime(priority: u32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: priority as libc::c_int };
    // SAFETY: `param` is a valid sched_param that lives across the call; pid 0 names the
    // calling thread; the call reads the struct and changes only this thread's policy.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// True when `signal` is ignored (SIG_IGN): inherited so from our parent, as `nohup` leaves
/// SIGHUP. Reads the disposition without changing it.
pub fn signal_ignored(signal: libc::c_int) -> bool {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten (a plain C struct).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, a valid, writable
    // sigaction that outlives the call.
    let rc = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// The bytes waiting in a pipe or FIFO (`FIONREAD`), asked through either end: how far a
/// writer is ahead of its reader.
pub fn pipe_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a live descriptor for the call (borrowed); FIONREAD writes one c_int
    // through the pointer, which points to `n`, aligned and alive across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(n.max(0) as usize) }
}

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups, as the kernel recorded them
/// at connect time.
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary group ids of a connected unix socket's peer.
pub fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65536; start small and grow to what the kernel says it needs.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes, and `len` is a
        // valid socklen_t the kernel may update; the fd is borrowed for the call's duration.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast::<libc::c_void>(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(err);
    }
}

/// A counting global allocator for the test build: proves the period loop allocates
/// nothing (`period_loop_allocates_nothing_and_survives_a_lost_sink`).
#[cfg(test)]
pub mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }

    /// Allocations (and reallocations) made by the calling thread so far.
    pub fn thread_allocs() -> u64 {
        ALLOCS.with(|a| a.get())
    }

    // SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
    // const-initialized thread-local Cell, which never allocates or recurses.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCS.with(|a| a.set(a.get() + 1));
            // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which we pass on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: ptr came from System.alloc/realloc with this layout (we forward all).
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCS.with(|a| a.set(a.get() + 1));
            // SAFETY: as for dealloc; new_size is the caller's, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// A wait on two words returns when either changes (woken, or the change seen before it
    /// slept), never sleeping out its timeout; with neither changing it times out.
    #[test]
    fn sys_futex_wait_either_wakes_on_either_word() {
        let (a, b) = (AtomicU32::new(0), AtomicU32::new(0));
        assert_eq!(futex_wait_either((&a, 0), (&b, 0), Duration::from_millis(20)), Wake::TimedOut);
        for (word, other, first) in [(&a, &b, true), (&b, &a, false)] {
            let (seen, other_seen) = (word.load(Ordering::Acquire), other.load(Ordering::Acquire));
            let start = Instant::now();
            std::thread::scope(|t| {
                t.spawn(|| {
                    word.store(seen + 1, Ordering::Release);
                    futex_wake(word);
                });
                while word.load(Ordering::Acquire) == seen {
                    assert!(start.elapsed() < Duration::from_secs(10), "a change never woke the wait");
                    let (x, y) =
                        if first { ((word, seen), (other, other_seen)) } else { ((other, other_seen), (word, seen)) };
                    futex_wait_either(x, y, Duration::from_secs(5));
                }
            });
            assert!(start.elapsed() < Duration::from_secs(5), "the wait slept out its timeout");
        }
    }
}
