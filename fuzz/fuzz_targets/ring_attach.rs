//! Ring validation on hostile shared memory: a real server ring is copied into fresh memfds,
//! patched, resized, left unsealed or replaced by a pipe, offered with a welcome that may
//! lie, and attached. Attaching either refuses with an error or yields a ring every client
//! operation can use without panicking: dmix-stat's snapshot (which reads counters players
//! write themselves), mix_add, monitor and capture reads, and the futex waits.

#![no_main]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use dmix::format::SampleFormat;
use dmix::ring::{ClientRing, ReadSource, RingParams, ServerRing};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::uio::{pread, pwrite};
use nix::unistd::ftruncate;

#[derive(Arbitrary, Debug)]
struct Input {
    geometry: Geometry,
    /// The welcome disagrees with the regions in one field.
    lie: Option<(u8, u32)>,
    regions: [RegionPlan; 4],
    writable_mix: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Geometry {
    channels: u8,
    period_log: u8,
    ring_periods: u8,
    monitor_periods: u8,
    capture_periods: u8,
    format: u8,
    rate: u16,
    freewheel: bool,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Memfd,
    /// A memfd created without MFD_ALLOW_SEALING.
    Unsealable,
    Pipe,
}

#[derive(Arbitrary, Debug)]
struct RegionPlan {
    kind: Kind,
    /// Bit 0: no F_SEAL_SHRINK, bit 1: no F_SEAL_GROW, bit 2: no F_SEAL_FUTURE_WRITE.
    drop_seals: u8,
    /// Bytes added to (or taken from) the region's length.
    resize: i16,
    /// (byte offset, modulo the length; bytes written there).
    patches: Vec<(u16, Vec<u8>)>,
    /// (u64 index, modulo the length / 8; value): counters and pointers set whole.
    words: Vec<(u16, u64)>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Snapshot,
    MixAdd { ahead: i32, frames: u8, value: i32, negate: bool },
    Monitor { at: u32 },
    Capture { at: u32 },
    Wait { ahead: u32 },
}

fn params(g: &Geometry) -> RingParams {
    let period_frames = 16u32 << (g.period_log % 5);
    let ring_frames = period_frames * (2 + u32::from(g.ring_periods % 7));
    RingParams {
        rate_hz: 1000 + u32::from(g.rate) * 8,
        channels: 1 + u32::from(g.channels % 8),
        format: [SampleFormat::S16Le, SampleFormat::S32Le, SampleFormat::FloatLe][usize::from(g.format % 3)],
        period_frames,
        ring_frames,
        monitor_frames: period_frames * (1 + u32::from(g.monitor_periods % 8)),
        capture_frames: period_frames * u32::from(g.capture_periods % 4),
        freewheel: g.freewheel,
    }
}

fn lie(mut p: RingParams, field: u8, v: u32) -> RingParams {
    match field % 8 {
        0 => p.rate_hz = v,
        1 => p.channels = v,
        2 => p.period_frames = v,
        3 => p.ring_frames = v,
        4 => p.monitor_frames = v,
        5 => p.capture_frames = v,
        6 => p.format = SampleFormat::from_code(1 + v % 3).unwrap_or(p.format),
        _ => p.freewheel = !p.freewheel,
    }
    p
}

fn read_all(fd: BorrowedFd<'_>, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = pread(fd, &mut b[at..], at as i64).expect("pread of the template region");
        assert!(n > 0, "template region shorter than its size");
        at += n;
    }
    b
}

/// Builds one hostile region from the template bytes.
fn region(i: usize, template: &[u8], plan: &RegionPlan) -> OwnedFd {
    if let Kind::Pipe = plan.kind {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        return r;
    }
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if let Kind::Memfd = plan.kind {
        flags |= MFdFlags::MFD_ALLOW_SEALING;
    }
    let fd = memfd_create("fuzz", flags).expect("memfd_create");
    let len = (template.len() as i64 + i64::from(plan.resize)).max(0) as usize;
    let mut bytes = template.to_vec();
    bytes.resize(len, 0);
    if len > 0 {
        for (at, patch) in &plan.patches {
            for (k, &b) in patch.iter().enumerate() {
                bytes[(usize::from(*at) + k) % len] = b;
            }
        }
        if len >= 8 {
            for &(at, v) in &plan.words {
                let at = usize::from(at) % (len / 8) * 8;
                bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    ftruncate(&fd, len as i64).expect("ftruncate");
    let mut at = 0;
    while at < len {
        at += pwrite(&fd, &bytes[at..], at as i64).expect("pwrite");
    }
    if let Kind::Memfd = plan.kind {
        let mut seals = SealFlag::empty();
        if plan.drop_seals & 1 == 0 {
            seals |= SealFlag::F_SEAL_SHRINK;
        }
        if plan.drop_seals & 2 == 0 {
            seals |= SealFlag::F_SEAL_GROW;
        }
        // The mix region is the one players map writable: the server never seals it so.
        if plan.drop_seals & 4 == 0 && i != 1 {
            seals |= SealFlag::F_SEAL_FUTURE_WRITE;
        }
        fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).expect("F_ADD_SEALS");
    }
    fd
}

fn exercise(ring: &ClientRing, writable: bool, ops: &[Op]) {
    let p = *ring.params();
    for op in ops.iter().take(16) {
        match *op {
            Op::Snapshot => {
                let s = dmix::stat::snapshot_ring(ring, Path::new("/run/user/0/dmix/fuzz.sock")).expect("snapshot");
                let _ = dmix::stat::render_text(&s);
                let _ = serde_json::to_string(&s).expect("snapshot serializes");
            }
            Op::MixAdd { ahead, frames, value, negate } => {
                if !writable {
                    continue;
                }
                let start = ring.hw_ptr().saturating_add_signed(i64::from(ahead));
                let samples = vec![value; usize::from(frames) * p.channels as usize];
                let out = ring.mix_add(start, &samples, negate);
                assert!(out.frames <= usize::from(frames) && out.late_frames <= out.frames);
            }
            Op::Monitor { at } => {
                let mut frame = vec![0; p.channels as usize];
                let _ = ring.reader(0, ReadSource::Monitor).copy_out(u64::from(at), &mut frame);
            }
            Op::Capture { at } => {
                let mut frame = vec![0; p.channels as usize];
                let r = ring.reader(0, ReadSource::Capture);
                let _ = r.copy_out(u64::from(at), &mut frame);
                let _ = r.ended();
                let _ = r.wait_until(r.write_ptr().saturating_add(1), Duration::ZERO);
            }
            Op::Wait { ahead } => {
                let _ = ring.wait_hw_ptr(ring.hw_ptr().saturating_add(u64::from(ahead)), Duration::ZERO);
                let _ = ring.wait_any(Duration::ZERO);
                let _ = ring.server_stopping();
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let p = params(&input.geometry);
    let server = ServerRing::create(p).expect("a valid geometry creates a ring");
    let sizes = server.region_bytes();
    let f = server.client_fds(true);
    let fds: Vec<OwnedFd> = [f.status, f.mix, f.monitor, f.capture]
        .into_iter()
        .enumerate()
        .map(|(i, fd)| region(i, &read_all(fd, sizes[i] as usize), &input.regions[i]))
        .collect();
    let welcome = match input.lie {
        Some((field, v)) => lie(p, field, v),
        None => p,
    };
    if let Ok(ring) = ClientRing::attach(welcome, [&fds[0], &fds[1], &fds[2], &fds[3]], input.writable_mix) {
        exercise(&ring, input.writable_mix, &input.ops);
    }
});
