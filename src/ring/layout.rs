//! THE shared-memory layout: every `#[repr(C)]` block that lives in a mapping shared between
//! processes, its magic, and [`RING_LAYOUT_VERSION`]. Nothing else in the crate declares a
//! shared type.
//!
//! Rules for what may live here (a peer may write any bit pattern into client-writable
//! memory, and a mapping is seen by processes built from other versions):
//! - fixed-width atomics only: no `usize`, `bool`, enum, pointer or fd; enums are decoded from
//!   integers with `TryFrom`-style functions that reject unknown values;
//! - indices, never pointers;
//! - each block starts with a magic and the layout version, written by the server last
//!   (Release) and checked by every opener (Acquire) before anything else is read;
//! - words written by the server in the period loop sit on their own cache lines, away from
//!   words clients write, so clients never slow the loop through false sharing.
//!
//! Three regions, each its own sealed memfd:
//! - status (server-written, read-only to clients): [`StatusBlock`];
//! - mix (client-writable): [`MixHeader`], then `ring_frames * channels` lap-tagged
//!   [`AtomicU64`] sum slots at [`MIX_RING_OFFSET`];
//! - monitor (server-written, read-only to clients): [`MonitorHeader`], then
//!   `monitor_frames * channels` [`AtomicI32`] samples at [`MONITOR_RING_OFFSET`]: the final
//!   clamped mix, at the mix scale;
//! - capture (server-written, read-only to clients): the same shape with [`CAPTURE_MAGIC`]
//!   and `capture_frames` (0 when the server shares no input): the shared input
//!   (`dmix-serve --capture`), whose write position is [`CaptureStatus::cap_ptr`].

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64};

/// Bump on any change to a block below (the offsets test pins every field).
pub const RING_LAYOUT_VERSION: u32 = 1;

/// Magic of the status region: "dmixSTAT".
pub const STATUS_MAGIC: u64 = u64::from_le_bytes(*b"dmixSTAT");
/// Magic of the mix region: "dmixMIX!".
pub const MIX_MAGIC: u64 = u64::from_le_bytes(*b"dmixMIX!");
/// Magic of the monitor region: "dmixMON!".
pub const MONITOR_MAGIC: u64 = u64::from_le_bytes(*b"dmixMON!");
/// Magic of the capture region: "dmixCAP!".
pub const CAPTURE_MAGIC: u64 = u64::from_le_bytes(*b"dmixCAP!");

/// Client slots. Bounded so that the sum can never wrap: 64 full-scale 24-bit clients need
/// 2^29, far below the 2^31 an `i32` sum holds.
pub const MAX_SLOTS: usize = 64;
/// Most channels a server may have.
pub const MAX_CHANNELS: usize = 32;
/// Bytes of a client's name in the slot table (UTF-8, NUL-padded).
pub const NAME_BYTES: usize = 32;

/// Server flag: the server runs in freewheel (clients ring the doorbell after each write).
pub const FLAG_FREEWHEEL: u32 = 1;

/// Server state word: running.
pub const SERVER_RUNNING: u32 = 1;
/// Server state word: stopping; clients should finish and go.
pub const SERVER_STOPPING: u32 = 2;

/// Slot state: free.
pub const SLOT_FREE: u32 = 0;
/// Slot state: hello accepted, waiting for the period loop to give it a start frame.
pub const SLOT_JOINING: u32 = 1;
/// Slot state: admitted; `start_frame` is valid.
pub const SLOT_ACTIVE: u32 = 2;

/// Client flag (self-reported): the client has written its last frame; `end_ptr` is valid.
pub const CLIENT_DRAINING: u32 = 1;

/// A value alone on a 64-byte cache line.
#[repr(C, align(64))]
pub struct CacheLine<T>(pub T);

/// The header of the status region: the server's parameters.
#[repr(C)]
pub struct StatusHeader {
    /// [`STATUS_MAGIC`].
    pub magic: AtomicU64,
    /// [`RING_LAYOUT_VERSION`]; stored last at creation (Release).
    pub layout_version: AtomicU32,
    /// Protocol version the server speaks.
    pub protocol_version: AtomicU32,
    /// Sample rate in Hz.
    pub rate_hz: AtomicU32,
    /// Channels of the device.
    pub channels: AtomicU32,
    /// Device sample format (`SampleFormat::code`).
    pub format: AtomicU32,
    /// Frames per period.
    pub period_frames: AtomicU32,
    /// Frames in the mix ring.
    pub ring_frames: AtomicU32,
    /// Frames in the monitor ring.
    pub monitor_frames: AtomicU32,
    /// `FLAG_*` bits.
    pub flags: AtomicU32,
    /// Slots in the table ([`MAX_SLOTS`]).
    pub max_slots: AtomicU32,
    /// Server pid.
    pub server_pid: AtomicU32,
    /// `SERVER_*` state.
    pub state: AtomicU32,
    /// Wall-clock start time, ns since the Unix epoch.
    pub started_unix_ns: AtomicU64,
}

/// Counters the server publishes (server-written, read by inspectors).
#[repr(C)]
pub struct ServerStats {
    /// Device xruns recovered.
    pub xruns: AtomicU64,
    /// Periods played.
    pub periods: AtomicU64,
    /// Periods the paced clock found already overdue (the loop ran late).
    pub late_periods: AtomicU64,
    /// Longest time one period's work took, ns.
    pub max_period_work_ns: AtomicU64,
    /// CLOCK_MONOTONIC ns when the current hw_ptr was published (stored before it): a
    /// client that wakes for a period measures its wake-up latency against it.
    pub hw_published_ns: AtomicU64,
    /// Frames the sink's device holds beyond what the server took, set once the sink is
    /// open: the ALSA buffer that the server keeps full (0 for wav and null). A frame taken
    /// at hw_ptr is heard about this much later. Added in what was padding: a server that
    /// predates it leaves 0.
    pub device_buffer_frames: AtomicU64,
}

/// One entry of the client table (server-written; the pid and uid come from SO_PEERCRED,
/// never from the client's word).
#[repr(C, align(64))]
pub struct SlotInfo {
    /// `SLOT_*` state.
    pub state: AtomicU32,
    /// `Role` code.
    pub role: AtomicU32,
    /// Unique, increasing client id (never reused while the server runs).
    pub client_id: AtomicU32,
    /// Peer pid.
    pub pid: AtomicU32,
    /// Peer uid.
    pub uid: AtomicU32,
    /// Channels the client asked for (0: the server's).
    pub channels: AtomicU32,
    /// First frame the client may write (valid in `SLOT_ACTIVE`).
    pub start_frame: AtomicU64,
    /// Wall-clock join time, ns since the Unix epoch.
    pub joined_unix_ns: AtomicU64,
    /// Client name, UTF-8, NUL-padded (the client's word, shown as such).
    pub name: [AtomicU8; NAME_BYTES],
    /// Channels the client writes when it came through a sub-device (dmix-share), else 0:
    /// its channel i lands in the server's channel `map[i]`.
    pub map_len: AtomicU32,
    /// The sub-device's channel map.
    pub map: [AtomicU8; MAX_CHANNELS],
}

/// Capture state: the server shares no input.
pub const CAPTURE_NONE: u32 = 0;
/// Capture state: frames are being captured.
pub const CAPTURE_RUNNING: u32 = 1;
/// Capture state: the input ended (a file ran out, or the device failed); `cap_ptr` is final.
pub const CAPTURE_ENDED: u32 = 2;

/// The shared input's progress (server-written).
#[repr(C)]
pub struct CaptureStatus {
    /// Frames captured so far (absolute). Stored with Release after the frames were written;
    /// readers load it with Acquire.
    pub cap_ptr: AtomicU64,
    /// The futex word: capture periods so far (wrapping).
    pub cap_seq: AtomicU32,
    /// `CAPTURE_*` state.
    pub state: AtomicU32,
    /// Device overruns recovered.
    pub overruns: AtomicU64,
    /// Frames in the capture ring (0: no shared input).
    pub capture_frames: AtomicU32,
    /// Unused (zero).
    pub reserved: AtomicU32,
    /// The input as the user named it ("alsa:hw:1", "wav:/tmp/in.wav"), UTF-8, NUL-padded.
    pub source: [AtomicU8; SOURCE_BYTES],
}

/// Bytes of the capture source description in the status region.
pub const SOURCE_BYTES: usize = 96;

/// Bytes of the sink description in the status region.
pub const SINK_BYTES: usize = 128;

/// What the server says about itself (written once at start).
#[repr(C)]
pub struct ServerInfo {
    /// The sink as the user named it ("alsa:default", "wav:/tmp/x.wav"), UTF-8, NUL-padded.
    pub sink: [AtomicU8; SINK_BYTES],
}

/// The status region.
#[repr(C)]
pub struct StatusBlock {
    /// Parameters.
    pub header: CacheLine<StatusHeader>,
    /// Frames taken out of the mix ring so far (absolute). Stored with Release after the
    /// period's samples were taken; clients load it with Acquire.
    pub hw_ptr: CacheLine<AtomicU64>,
    /// The futex word: periods taken so far (wrapping). Waiters sleep on bit (period % 32).
    pub wake_seq: CacheLine<AtomicU32>,
    /// Server counters.
    pub stats: CacheLine<ServerStats>,
    /// Server description.
    pub info: CacheLine<ServerInfo>,
    /// The shared input.
    pub capture: CacheLine<CaptureStatus>,
    /// The client table.
    pub slots: [SlotInfo; MAX_SLOTS],
}

/// Figures a client reports about itself, in the mix region. Client-writable: the server
/// uses them only to pace freewheel (where a liar only delays or loses its own audio) and
/// shows them labelled as self-reported.
#[repr(C, align(64))]
pub struct ClientCounters {
    /// Frames supplied: the next frame the client will write (absolute).
    pub appl_ptr: AtomicU64,
    /// With `CLIENT_DRAINING`: the frame after the client's last one.
    pub end_ptr: AtomicU64,
    /// `CLIENT_*` flags.
    pub flags: AtomicU32,
    /// How far ahead of hw_ptr the client writes (its chosen latency), in frames.
    pub latency_frames: AtomicU32,
    /// Frames dropped because they arrived after the server took them.
    pub late_frames: AtomicU64,
    /// Times the client fell behind hw_ptr.
    pub underruns: AtomicU64,
    /// Recent peak per channel, mix scale (absolute value).
    pub peak: [AtomicU32; MAX_CHANNELS],
}

/// The header of the mix region.
#[repr(C)]
pub struct MixHeader {
    /// [`MIX_MAGIC`].
    pub magic: CacheLine<AtomicU64>,
    /// [`RING_LAYOUT_VERSION`]; stored last at creation.
    pub layout_version: AtomicU32,
    /// Frames in the ring.
    pub ring_frames: AtomicU32,
    /// Channels per frame.
    pub channels: AtomicU32,
    /// Freewheel doorbell: clients bump it and wake it after publishing `appl_ptr`.
    pub doorbell: CacheLine<AtomicU32>,
    /// Per-slot self-reported counters.
    pub clients: [ClientCounters; MAX_SLOTS],
}

/// The header of the monitor region.
#[repr(C)]
pub struct MonitorHeader {
    /// [`MONITOR_MAGIC`].
    pub magic: AtomicU64,
    /// [`RING_LAYOUT_VERSION`]; stored last at creation.
    pub layout_version: AtomicU32,
    /// Frames in the monitor ring.
    pub monitor_frames: AtomicU32,
    /// Channels per frame.
    pub channels: AtomicU32,
}

/// Where the sum ring starts in the mix region.
pub const MIX_RING_OFFSET: usize = size_of::<MixHeader>().next_multiple_of(4096);
/// Where the monitor samples start in the monitor region.
pub const MONITOR_RING_OFFSET: usize = 4096;

/// Bytes of the status region.
pub const fn status_bytes() -> usize {
    size_of::<StatusBlock>().next_multiple_of(4096)
}

/// Bytes of the mix region for a ring of `ring_frames` × `channels`.
pub const fn mix_bytes(ring_frames: u32, channels: u32) -> usize {
    (MIX_RING_OFFSET + ring_frames as usize * channels as usize * size_of::<AtomicU64>()).next_multiple_of(4096)
}

/// Bytes of the monitor region.
pub const fn monitor_bytes(monitor_frames: u32, channels: u32) -> usize {
    (MONITOR_RING_OFFSET + monitor_frames as usize * channels as usize * size_of::<AtomicI32>()).next_multiple_of(4096)
}

// Mappings are page-aligned; every block must fit that alignment.
const _: () = assert!(align_of::<StatusBlock>() <= 4096);
const _: () = assert!(align_of::<MixHeader>() <= 4096);
const _: () = assert!(size_of::<MonitorHeader>() <= MONITOR_RING_OFFSET);
const _: () = assert!(MIX_RING_OFFSET.is_multiple_of(align_of::<AtomicU64>()));
// The sum never wraps: every slot at full scale (2^23) fits an i32.
const _: () = assert!((MAX_SLOTS as i64) * (1 << 23) < i32::MAX as i64);

/// The lap-tagged sum slot: high 32 bits the lap (absolute frame / ring frames, wrapping),
/// low 32 bits the sum (an `i32` at the mix scale).
#[inline]
pub const fn slot_word(lap: u32, sum: i32) -> u64 {
    ((lap as u64) << 32) | (sum as u32 as u64)
}

/// Splits a sum slot into (lap, sum).
#[inline]
pub const fn slot_parts(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Moving a field without bumping RING_LAYOUT_VERSION must fail here.
    #[test]
    fn layout_offsets_are_pinned() {
        assert_eq!(RING_LAYOUT_VERSION, 1);
        assert_eq!(offset_of!(StatusHeader, magic), 0);
        assert_eq!(offset_of!(StatusHeader, layout_version), 8);
        assert_eq!(offset_of!(StatusHeader, protocol_version), 12);
        assert_eq!(offset_of!(StatusHeader, rate_hz), 16);
        assert_eq!(offset_of!(StatusHeader, channels), 20);
        assert_eq!(offset_of!(StatusHeader, format), 24);
        assert_eq!(offset_of!(StatusHeader, period_frames), 28);
        assert_eq!(offset_of!(StatusHeader, ring_frames), 32);
        assert_eq!(offset_of!(StatusHeader, monitor_frames), 36);
        assert_eq!(offset_of!(StatusHeader, flags), 40);
        assert_eq!(offset_of!(StatusHeader, max_slots), 44);
        assert_eq!(offset_of!(StatusHeader, server_pid), 48);
        assert_eq!(offset_of!(StatusHeader, state), 52);
        assert_eq!(offset_of!(StatusHeader, started_unix_ns), 56);
        assert_eq!(offset_of!(StatusBlock, hw_ptr), 64);
        assert_eq!(offset_of!(StatusBlock, wake_seq), 128);
        assert_eq!(offset_of!(StatusBlock, stats), 192);
        assert_eq!(offset_of!(ServerStats, device_buffer_frames), 40);
        assert_eq!(offset_of!(StatusBlock, info), 256);
        assert_eq!(offset_of!(StatusBlock, capture), 384);
        assert_eq!(offset_of!(CaptureStatus, cap_ptr), 0);
        assert_eq!(offset_of!(CaptureStatus, cap_seq), 8);
        assert_eq!(offset_of!(CaptureStatus, state), 12);
        assert_eq!(offset_of!(CaptureStatus, overruns), 16);
        assert_eq!(offset_of!(CaptureStatus, capture_frames), 24);
        assert_eq!(offset_of!(CaptureStatus, source), 32);
        assert_eq!(size_of::<CaptureStatus>(), 128);
        assert_eq!(offset_of!(StatusBlock, slots), 512);
        assert_eq!(offset_of!(SlotInfo, state), 0);
        assert_eq!(offset_of!(SlotInfo, role), 4);
        assert_eq!(offset_of!(SlotInfo, client_id), 8);
        assert_eq!(offset_of!(SlotInfo, pid), 12);
        assert_eq!(offset_of!(SlotInfo, uid), 16);
        assert_eq!(offset_of!(SlotInfo, channels), 20);
        assert_eq!(offset_of!(SlotInfo, start_frame), 24);
        assert_eq!(offset_of!(SlotInfo, joined_unix_ns), 32);
        assert_eq!(offset_of!(SlotInfo, name), 40);
        assert_eq!(offset_of!(SlotInfo, map_len), 72);
        assert_eq!(offset_of!(SlotInfo, map), 76);
        assert_eq!(size_of::<SlotInfo>(), 128);
        assert_eq!(size_of::<StatusBlock>(), 512 + 64 * 128);
        assert_eq!(offset_of!(ClientCounters, appl_ptr), 0);
        assert_eq!(offset_of!(ClientCounters, end_ptr), 8);
        assert_eq!(offset_of!(ClientCounters, flags), 16);
        assert_eq!(offset_of!(ClientCounters, latency_frames), 20);
        assert_eq!(offset_of!(ClientCounters, late_frames), 24);
        assert_eq!(offset_of!(ClientCounters, underruns), 32);
        assert_eq!(offset_of!(ClientCounters, peak), 40);
        assert_eq!(size_of::<ClientCounters>(), 192);
        assert_eq!(offset_of!(MixHeader, magic), 0);
        assert_eq!(offset_of!(MixHeader, layout_version), 64);
        assert_eq!(offset_of!(MixHeader, ring_frames), 68);
        assert_eq!(offset_of!(MixHeader, channels), 72);
        assert_eq!(offset_of!(MixHeader, doorbell), 128);
        assert_eq!(offset_of!(MixHeader, clients), 192);
        assert_eq!(MIX_RING_OFFSET, 16384);
        assert_eq!(offset_of!(MonitorHeader, magic), 0);
        assert_eq!(offset_of!(MonitorHeader, layout_version), 8);
        assert_eq!(offset_of!(MonitorHeader, monitor_frames), 12);
        assert_eq!(offset_of!(MonitorHeader, channels), 16);
    }

    #[test]
    fn layout_slot_word_round_trips() {
        for (lap, sum) in [(0, 0), (1, -1), (u32::MAX, i32::MIN), (7, i32::MAX)] {
            assert_eq!(slot_parts(slot_word(lap, sum)), (lap, sum));
        }
    }
}
