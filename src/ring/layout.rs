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
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Bump on any change to a block below: [`layout_fingerprint`] covers every field, and the
/// version pins (src/pins.rs) fail when it changes under the same version.
pub const RING_LAYOUT_VERSION: u32 = 3;

/// One field of a shared block, as the compiler laid it out.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// Its type, as written in the declaration.
    pub ty: &'static str,
    /// Byte offset in the block.
    pub offset: usize,
    /// Byte size.
    pub size: usize,
}

/// A shared block: its fields in declaration order, listed by `shared_block!` from the
/// declaration itself, so that no field can be added, moved or retyped unseen.
pub trait SharedBlock {
    /// The block's name.
    const NAME: &'static str;
    /// Its fields.
    const FIELDS: &'static [Field];
}

/// Declares a `#[repr(C)]` block that lives in shared memory and implements [`SharedBlock`]
/// for it from the same tokens.
macro_rules! shared_block {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }

        impl SharedBlock for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [Field] = &[$(Field {
                name: stringify!($field),
                ty: stringify!($ty),
                offset: std::mem::offset_of!($name, $field),
                size: size_of::<$ty>(),
            }),*];
        }
    };
}

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

shared_block! {
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
}

shared_block! {
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
        /// The master volume, a volume word as `SlotInfo::gain` (0: 0 dB unmuted): the period
        /// loop applies it to the mix as it takes each period.
        pub master_gain: AtomicU64,
    }
}

shared_block! {
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
        /// The futex word of `gain`: changes counted (wrapping), stored with Release after
        /// `gain` and woken; a player sleeps on it so that a change reaches it at once.
        pub gain_seq: AtomicU32,
        /// Players: the frame from which the server counts this client as playing (it has
        /// written its first frame: `ClientCounters::started`); [`NOT_PLAYING`] before. Stored
        /// with Release after the server took the client into its freewheel barrier, so a client
        /// that sees it may write from this frame on and none of it will be taken without it.
        pub playing_from: AtomicU64,
        /// Players: the volume the server gives this client (`dmix-stat --volume/--mute`), a
        /// [`Volume`](super::gain::Volume) word: f32 dB in the low 32 bits, [`GAIN_MUTED`]; 0
        /// is 0 dB unmuted. Only the server writes it; the client applies it in its adds.
        pub gain: AtomicU64,
    }
}

/// Bit of a volume word (`SlotInfo::gain`, `ServerStats::master_gain`): muted.
pub const GAIN_MUTED: u64 = 1 << 32;

/// `SlotInfo::playing_from` of a client that has not written a frame (or is no player).
pub const NOT_PLAYING: u64 = u64::MAX;

/// Capture state: the server shares no input.
pub const CAPTURE_NONE: u32 = 0;
/// Capture state: frames are being captured.
pub const CAPTURE_RUNNING: u32 = 1;
/// Capture state: the input ended (a file ran out, or the device failed); `cap_ptr` is final.
pub const CAPTURE_ENDED: u32 = 2;

shared_block! {
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
}

/// Bytes of the capture source description in the status region.
pub const SOURCE_BYTES: usize = 96;

/// Bytes of one sink's description in the status region.
pub const SINK_BYTES: usize = 128;

/// Most sinks a server may be given (`dmix-serve --sink A --sink B ...`, in order of
/// preference).
pub const MAX_SINKS: usize = 8;

/// Sink state: a sink is open and playing (`SinkStatus::current` is it).
pub const SINK_RUNNING: u32 = 1;
/// Sink state: no sink is open (the one in use was lost, or none could be opened at the
/// start); the period loop runs on by the clock and drops the mix while the server retries.
pub const SINK_LOST: u32 = 2;

/// "No sink" in [`SinkStatus::current`].
pub const NO_SINK: u32 = u32::MAX;

shared_block! {
    /// The sinks and which one plays (server-written: the names at start and again at a live
    /// switch, `dmix-stat --sink`; the rest by the period loop when a sink is lost or installed).
    #[repr(C)]
    pub struct SinkStatus {
        /// `SINK_RUNNING` or `SINK_LOST`; stored last (Release) after the fields below.
        pub state: AtomicU32,
        /// Index in `names` of the sink in use (running), or of the one lost last (lost);
        /// [`NO_SINK`] when none was ever open.
        pub current: AtomicU32,
        /// Sinks in `names` (1..=[`MAX_SINKS`]).
        pub count: AtomicU32,
        /// Unused (zero).
        pub reserved: AtomicU32,
        /// CLOCK_MONOTONIC ns at which the sink was lost (valid while lost).
        pub lost_at_ns: AtomicU64,
        /// Times a sink in use was lost since the server started.
        pub losses: AtomicU64,
        /// The sinks as the user named them ("alsa:default", "wav:/tmp/x.wav"), in order of
        /// preference, UTF-8, NUL-padded.
        pub names: [[AtomicU8; SINK_BYTES]; MAX_SINKS],
    }
}

shared_block! {
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
        /// The shared input.
        pub capture: CacheLine<CaptureStatus>,
        /// The sinks.
        pub sink: CacheLine<SinkStatus>,
        /// The client table.
        pub slots: [SlotInfo; MAX_SLOTS],
    }
}

shared_block! {
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
        /// Non-zero once the client has written its first frame: only then is it a player for
        /// `--wait-clients`, `--exit-when-idle` and the freewheel barrier (a program that opens a
        /// device to probe it, and closes it, never is). Stored with Release before the client's
        /// doorbell; it never goes back to zero while the slot is held.
        pub started: AtomicU32,
    }
}

shared_block! {
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
}

shared_block! {
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

/// A 64-bit FNV-1a hash, for fingerprints: stable across builds, platforms and Rust versions
/// (std's hashers promise none of that).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Fnv {
    /// The empty hash.
    pub const fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Hashes `bytes` in, after their length (so that "ab","c" and "a","bc" differ).
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Fnv {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Hashes a string in.
    pub fn str(&mut self, s: &str) -> &mut Fnv {
        self.bytes(s.as_bytes())
    }

    /// Hashes a number in.
    pub fn num(&mut self, n: u64) -> &mut Fnv {
        self.bytes(&n.to_le_bytes())
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

/// The slots of a slot mask (bit `i` set: slot `i`), lowest first, without allocating:
/// the period loop walks its masks with it.
#[derive(Clone, Copy, Debug)]
pub struct SlotBits(pub u64);

impl Iterator for SlotBits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let slot = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(slot)
    }
}

/// Cuts a name to at most `max` bytes on a character boundary.
pub fn truncate_name(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Writes `name` into a NUL-padded name field, cut to fit on a character boundary. Relaxed:
/// the writer publishes the field with a Release store of a state word after it.
pub fn store_name(field: &[AtomicU8], name: &str) {
    let bytes = truncate_name(name, field.len()).as_bytes();
    for (i, b) in field.iter().enumerate() {
        b.store(bytes.get(i).copied().unwrap_or(0), Ordering::Relaxed);
    }
}

/// Reads a NUL-padded name field. Untrusted (a slot may be reused while it is read): bytes
/// that are not UTF-8 are replaced, never trusted.
pub fn load_name(field: &[AtomicU8]) -> String {
    let raw: Vec<u8> = field.iter().map(|b| b.load(Ordering::Relaxed)).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&raw).into_owned()
}

fn block<B: SharedBlock>(h: &mut Fnv) {
    h.str(B::NAME).num(size_of::<B>() as u64).num(align_of::<B>() as u64);
    for f in B::FIELDS {
        // Without whitespace: how the compiler spells a type's tokens is not the layout.
        let ty: String = f.ty.chars().filter(|c| !c.is_whitespace()).collect();
        h.str(f.name).str(&ty).num(f.offset as u64).num(f.size as u64);
    }
}

/// What the shared layout is, as one number: every block (name, size, alignment) and every
/// field (name, type, offset, size) from the declarations, the ring offsets and every
/// constant whose value a peer reads. A client and a server whose fingerprints differ may not
/// share memory; [`RING_LAYOUT_VERSION`] says so on the wire, and the pins (src/pins.rs)
/// make sure it changes whenever this does. A new block or constant is added here.
pub fn layout_fingerprint() -> u64 {
    let mut h = Fnv::new();
    block::<StatusHeader>(&mut h);
    block::<ServerStats>(&mut h);
    block::<SlotInfo>(&mut h);
    block::<CaptureStatus>(&mut h);
    block::<SinkStatus>(&mut h);
    block::<StatusBlock>(&mut h);
    block::<ClientCounters>(&mut h);
    block::<MixHeader>(&mut h);
    block::<MonitorHeader>(&mut h);
    h.num(size_of::<CacheLine<u8>>() as u64).num(align_of::<CacheLine<u8>>() as u64);
    for (name, value) in [
        ("STATUS_MAGIC", STATUS_MAGIC),
        ("MIX_MAGIC", MIX_MAGIC),
        ("MONITOR_MAGIC", MONITOR_MAGIC),
        ("CAPTURE_MAGIC", CAPTURE_MAGIC),
        ("MAX_SLOTS", MAX_SLOTS as u64),
        ("MAX_CHANNELS", MAX_CHANNELS as u64),
        ("NAME_BYTES", NAME_BYTES as u64),
        ("SOURCE_BYTES", SOURCE_BYTES as u64),
        ("SINK_BYTES", SINK_BYTES as u64),
        ("MAX_SINKS", MAX_SINKS as u64),
        ("FLAG_FREEWHEEL", u64::from(FLAG_FREEWHEEL)),
        ("SERVER_RUNNING", u64::from(SERVER_RUNNING)),
        ("SERVER_STOPPING", u64::from(SERVER_STOPPING)),
        ("SLOT_FREE", u64::from(SLOT_FREE)),
        ("SLOT_JOINING", u64::from(SLOT_JOINING)),
        ("SLOT_ACTIVE", u64::from(SLOT_ACTIVE)),
        ("NOT_PLAYING", NOT_PLAYING),
        ("CLIENT_DRAINING", u64::from(CLIENT_DRAINING)),
        ("CAPTURE_NONE", u64::from(CAPTURE_NONE)),
        ("CAPTURE_RUNNING", u64::from(CAPTURE_RUNNING)),
        ("CAPTURE_ENDED", u64::from(CAPTURE_ENDED)),
        ("SINK_RUNNING", u64::from(SINK_RUNNING)),
        ("SINK_LOST", u64::from(SINK_LOST)),
        ("NO_SINK", u64::from(NO_SINK)),
        ("MIX_RING_OFFSET", MIX_RING_OFFSET as u64),
        ("MONITOR_RING_OFFSET", MONITOR_RING_OFFSET as u64),
        ("slot_word(1, -1)", slot_word(1, -1)),
    ] {
        h.str(name).num(value);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// The offsets as docs/PROTOCOL.md states them (the version pin is src/pins.rs).
    #[test]
    fn layout_offsets_are_as_documented() {
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
        assert_eq!(offset_of!(StatusBlock, capture), 256);
        assert_eq!(offset_of!(StatusBlock, sink), 384);
        assert_eq!(offset_of!(SinkStatus, state), 0);
        assert_eq!(offset_of!(SinkStatus, current), 4);
        assert_eq!(offset_of!(SinkStatus, count), 8);
        assert_eq!(offset_of!(SinkStatus, lost_at_ns), 16);
        assert_eq!(offset_of!(SinkStatus, losses), 24);
        assert_eq!(offset_of!(SinkStatus, names), 32);
        assert_eq!(size_of::<SinkStatus>(), 32 + MAX_SINKS * SINK_BYTES);
        assert_eq!(offset_of!(CaptureStatus, cap_ptr), 0);
        assert_eq!(offset_of!(CaptureStatus, cap_seq), 8);
        assert_eq!(offset_of!(CaptureStatus, state), 12);
        assert_eq!(offset_of!(CaptureStatus, overruns), 16);
        assert_eq!(offset_of!(CaptureStatus, capture_frames), 24);
        assert_eq!(offset_of!(CaptureStatus, source), 32);
        assert_eq!(size_of::<CaptureStatus>(), 128);
        assert_eq!(offset_of!(StatusBlock, slots), 1472);
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
        assert_eq!(offset_of!(SlotInfo, gain_seq), 108);
        assert_eq!(offset_of!(SlotInfo, playing_from), 112);
        assert_eq!(offset_of!(SlotInfo, gain), 120);
        assert_eq!(offset_of!(ServerStats, master_gain), 48);
        assert_eq!(size_of::<SlotInfo>(), 128);
        assert_eq!(size_of::<StatusBlock>(), 1472 + 64 * 128);
        assert_eq!(offset_of!(ClientCounters, appl_ptr), 0);
        assert_eq!(offset_of!(ClientCounters, end_ptr), 8);
        assert_eq!(offset_of!(ClientCounters, flags), 16);
        assert_eq!(offset_of!(ClientCounters, latency_frames), 20);
        assert_eq!(offset_of!(ClientCounters, late_frames), 24);
        assert_eq!(offset_of!(ClientCounters, underruns), 32);
        assert_eq!(offset_of!(ClientCounters, peak), 40);
        assert_eq!(offset_of!(ClientCounters, started), 168);
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
