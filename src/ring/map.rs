//! Fence 1 of the crate's `unsafe`: a memfd becomes a mapping, and a mapping becomes typed
//! atomic views.
//!
//! What this module upholds, so that no peer can make us fault or read out of bounds:
//! - a region is mapped only after its seals (no shrink, no grow) and its size were checked,
//!   so the mapping can never lose pages under us (a shrunk memfd would SIGBUS);
//! - a view is handed out only for a type made of atomics alone ([`AtomicsOnly`]): every bit
//!   pattern is a valid value and concurrent writes by other processes are atomic accesses,
//!   never data races on plain memory;
//! - every view is bounds- and alignment-checked against the mapping, and borrows it;
//! - no `&[u8]`/`&mut [u8]` over shared memory is ever created.
//!
//! A read-only mapping (status, monitor, capture on the client side) is only ever loaded
//! from: those regions carry `F_SEAL_FUTURE_WRITE`, so the kernel refuses any writable
//! mapping of them but the server's own, and the code that holds such views never stores.
#![allow(unsafe_code)]

use std::fs::File;
use std::mem::{align_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::layout::{MixHeader, MonitorHeader, StatusBlock};
use crate::error::{Error, Result};

/// Types that may be viewed in shared memory: made of fixed-width atomics only.
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or an atomic), contain only atomics (and arrays or
/// `repr(C)` structs of atomics), so that any bit pattern is valid and every access is atomic.
pub unsafe trait AtomicsOnly {}

// SAFETY: each is a repr(C) struct made only of atomics and arrays of atomics (see layout.rs).
unsafe impl AtomicsOnly for StatusBlock {}
// SAFETY: as above.
unsafe impl AtomicsOnly for MixHeader {}
// SAFETY: as above.
unsafe impl AtomicsOnly for MonitorHeader {}
// SAFETY: an atomic integer: any bit pattern is valid.
unsafe impl AtomicsOnly for AtomicU64 {}
// SAFETY: an atomic integer: any bit pattern is valid.
unsafe impl AtomicsOnly for AtomicI32 {}

/// The seals every shared region carries.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW).union(SealFlag::F_SEAL_SEAL);

/// One mapped, sealed memfd.
pub struct Region {
    map: MmapRaw,
    len: usize,
}

impl Region {
    /// Creates a sealed memfd of `len` bytes (zero-filled by the kernel) and maps it
    /// read-write. Returns the read-write fd with the mapping.
    ///
    /// `server_only`: after mapping, seal it with `F_SEAL_FUTURE_WRITE` too, so that this
    /// mapping stays the only writable one. A read-only fd alone does not protect a region:
    /// its holder can reopen `/proc/self/fd/N` read-write (the memfd's inode allows it) and
    /// map that. The seal makes the kernel refuse every new writable mapping and write.
    pub fn create(name: &str, len: usize, server_only: bool) -> Result<(OwnedFd, Region)> {
        let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(|e| Error::sys(format!("memfd_create {name}"), e))?;
        nix::unistd::ftruncate(&fd, len as i64).map_err(|e| Error::sys(format!("ftruncate {name}"), e))?;
        let resize = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(resize)).map_err(|e| Error::sys(format!("seal {name}"), e))?;
        let map =
            MmapOptions::new().len(len).map_raw(fd.as_raw_fd()).map_err(|e| Error::sys(format!("mmap {name}"), e))?;
        let last = if server_only { SEALS | SealFlag::F_SEAL_FUTURE_WRITE } else { SEALS };
        fcntl(&fd, FcntlArg::F_ADD_SEALS(last)).map_err(|e| Error::sys(format!("seal {name}"), e))?;
        Ok((fd, Region { map, len }))
    }

    /// Maps a region received from the server, after checking that it is sealed against
    /// shrinking and at least `min_len` bytes long. `writable` maps it shared read-write
    /// (only the mix region of a player).
    pub fn attach(what: &str, fd: BorrowedFd<'_>, min_len: usize, writable: bool) -> Result<Region> {
        let seals = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(|e| Error::sys(format!("F_GET_SEALS on {what}"), e))?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW) {
            return Err(Error::invalid(what, "shared memory is not sealed against resizing"));
        }
        let st = nix::sys::stat::fstat(fd).map_err(|e| Error::sys(format!("fstat {what}"), e))?;
        let len = usize::try_from(st.st_size).unwrap_or(0);
        if len < min_len || len == 0 {
            return Err(Error::invalid(what, format!("shared memory is {len} bytes, expected at least {min_len}")));
        }
        let mut opts = MmapOptions::new();
        opts.len(len);
        let raw = fd.as_raw_fd();
        let map = if writable { opts.map_raw(raw) } else { opts.map_raw_read_only(raw) }
            .map_err(|e| Error::sys(format!("mmap {what}"), e))?;
        Ok(Region { map, len })
    }

    /// Locks the mapping's pages in memory (mlock), so that the period loop never waits for
    /// a page to come back from swap.
    pub fn lock(&self) -> std::io::Result<()> {
        self.map.lock()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A typed view of the block at `offset`, checked for bounds and alignment.
    pub fn block<T: AtomicsOnly>(&self, offset: usize) -> Result<&T> {
        self.check(offset, size_of::<T>(), align_of::<T>())?;
        // SAFETY: `check` proved [offset, offset + size_of::<T>()) lies inside the mapping and
        // is aligned for T; the memfd is sealed against shrinking (create/attach), so those
        // pages stay valid for the mapping's life, which the returned borrow cannot outlive;
        // T: AtomicsOnly is made of atomics only, so any content is a valid T and all access,
        // including other processes' writes, is atomic.
        Ok(unsafe { &*(self.map.as_ptr().add(offset) as *const T) })
    }

    /// A typed view of `count` consecutive `T`s at `offset`, checked like [`Region::block`].
    pub fn slice<T: AtomicsOnly>(&self, offset: usize, count: usize) -> Result<&[T]> {
        let bytes = count.checked_mul(size_of::<T>()).ok_or_else(|| Error::invalid("mapping", "size overflows"))?;
        self.check(offset, bytes, align_of::<T>())?;
        // SAFETY: as in `block`: bounds and alignment checked for all `count` elements, the
        // mapping is sealed and outlives the borrow, and T is made of atomics only.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset) as *const T, count) })
    }

    fn check(&self, offset: usize, bytes: usize, align: usize) -> Result<()> {
        let end = offset.checked_add(bytes).ok_or_else(|| Error::invalid("mapping", "offset overflows"))?;
        if end > self.len {
            return Err(Error::invalid("mapping", format!("view [{offset}, {end}) outside {} bytes", self.len)));
        }
        if !(self.map.as_ptr() as usize + offset).is_multiple_of(align) {
            return Err(Error::invalid("mapping", format!("offset {offset} is not aligned to {align}")));
        }
        Ok(())
    }
}

/// Opens a second, read-only fd on a memfd (through /proc/self/fd), to hand to clients: a
/// PROT_WRITE shared mapping of it is refused by the kernel. (Its holder could reopen it
/// read-write through /proc; the server-only regions are therefore also sealed against
/// future writes, see [`Region::create`].)
pub fn reopen_read_only(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let f = File::open(&path).map_err(|e| Error::sys(format!("open {path} read-only"), e))?;
    Ok(OwnedFd::from(f))
}
