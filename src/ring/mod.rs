//! The shared ring: creation by the server, attachment by clients, and the two operations
//! that are the whole point of dmix: a client's [`mix_add`](ClientRing::mix_add) into the sum
//! ring and the server's [`take_period`](ServerRing::take_period), which reads and re-arms
//! each sum slot in one atomic swap.
//!
//! Each sum slot is a 64-bit word: the high half is the *lap* of the frame the slot holds
//! (absolute frame / ring frames), the low half the 32-bit sum. A client adds with one
//! compare-and-swap that succeeds only while the tag is the lap of the frame it means to
//! write; the server's take swaps in the next lap with a zero sum. So the window check and
//! the add are one atomic step: a client stalled anywhere (SIGSTOP between reading hw_ptr and
//! adding) finds the tag moved on and drops the sample as late. A late sample can never be
//! played a lap later (DESIGN.md invariant 2).

pub mod layout;
mod map;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use self::layout::*;
use self::map::{Region, reopen_read_only};
use crate::error::{Error, Result};
use crate::format::{SampleFormat, clamp_mix};
use crate::sys::{self, Wake};

/// Most frames a mix ring may hold (about 350 s at 48 kHz): keeps every size computation far
/// from overflow.
pub const MAX_RING_FRAMES: u32 = 1 << 24;

/// The server's parameters, as every process sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingParams {
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// Channels per frame.
    pub channels: u32,
    /// Device sample format.
    pub format: SampleFormat,
    /// Frames per period.
    pub period_frames: u32,
    /// Frames in the mix ring.
    pub ring_frames: u32,
    /// Frames in the monitor ring.
    pub monitor_frames: u32,
    /// Frames in the capture ring; 0 when the server shares no input.
    pub capture_frames: u32,
    /// Freewheel: the server advances as soon as every player has supplied the period.
    pub freewheel: bool,
}

impl RingParams {
    /// Checks the parameters are within what the layout supports.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::invalid("ring parameters", r));
        if !(1000..=768_000).contains(&self.rate_hz) {
            return bad(format!("rate {} Hz is outside 1000..=768000", self.rate_hz));
        }
        if self.channels == 0 || self.channels as usize > MAX_CHANNELS {
            return bad(format!("{} channels is outside 1..={MAX_CHANNELS}", self.channels));
        }
        if !(16..=65536).contains(&self.period_frames) {
            return bad(format!("period of {} frames is outside 16..=65536", self.period_frames));
        }
        if self.ring_frames < 2 * self.period_frames || self.ring_frames > MAX_RING_FRAMES {
            return bad(format!(
                "buffer of {} frames must hold at least two periods ({} frames) and at most {MAX_RING_FRAMES}",
                self.ring_frames,
                2 * self.period_frames
            ));
        }
        if !self.ring_frames.is_multiple_of(self.period_frames) {
            return bad(format!(
                "buffer of {} frames is not a whole number of {}-frame periods",
                self.ring_frames, self.period_frames
            ));
        }
        if self.monitor_frames < self.period_frames || self.monitor_frames > MAX_RING_FRAMES {
            return bad(format!("monitor of {} frames is out of range", self.monitor_frames));
        }
        if self.capture_frames != 0
            && (self.capture_frames < self.period_frames || self.capture_frames > MAX_RING_FRAMES)
        {
            return bad(format!("capture ring of {} frames is out of range", self.capture_frames));
        }
        Ok(())
    }

    /// Where absolute frame `frame` sits in the sum ring.
    fn sum_cursor(&self, frame: u64) -> Cursor {
        Cursor::new(frame, self.ring_frames, self.channels)
    }

    /// Nanoseconds in one period at this rate.
    pub fn period_ns(&self) -> u64 {
        u64::from(self.period_frames) * 1_000_000_000 / u64::from(self.rate_hz)
    }

    /// Milliseconds in `frames` at this rate.
    pub fn frames_to_ms(&self, frames: u64) -> f64 {
        frames as f64 * 1000.0 / f64::from(self.rate_hz)
    }
}

/// What a [`ClientRing::mix_add`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Frames consumed from the input (added, or dropped as late).
    pub frames: usize,
    /// Of those, frames dropped because the server had already taken them.
    pub late_frames: usize,
}

/// The server's side of the ring: owns the memfds and the read-write mappings.
pub struct ServerRing {
    params: RingParams,
    status: Region,
    mix: Region,
    monitor: Region,
    status_ro: OwnedFd,
    mix_rw: OwnedFd,
    mix_ro: OwnedFd,
    monitor_ro: OwnedFd,
    // The read-write fds of status and monitor stay open only through their mappings' life;
    // keeping them documents that nobody else ever holds a writable fd of these.
    _status_rw: OwnedFd,
    _monitor_rw: OwnedFd,
    capture: Region,
    capture_ro: OwnedFd,
    _capture_rw: OwnedFd,
}

/// The fds a client receives: status and monitor always read-only; mix read-write for
/// players only.
pub struct ClientFds<'a> {
    /// Status region, read-only.
    pub status: std::os::fd::BorrowedFd<'a>,
    /// Mix region.
    pub mix: std::os::fd::BorrowedFd<'a>,
    /// Monitor region, read-only.
    pub monitor: std::os::fd::BorrowedFd<'a>,
    /// Capture region, read-only.
    pub capture: std::os::fd::BorrowedFd<'a>,
}

impl ServerRing {
    /// Creates, initializes and seals the three regions. The layout version is stored last
    /// in each (Release), so an opener that sees it (Acquire) sees everything else.
    pub fn create(params: RingParams, protocol_version: u32) -> Result<ServerRing> {
        params.validate()?;
        let (status_rw, status) = Region::create("dmix-status", status_bytes(), true)?;
        let (mix_rw, mix) = Region::create("dmix-mix", mix_bytes(params.ring_frames, params.channels), false)?;
        let (monitor_rw, monitor) =
            Region::create("dmix-monitor", monitor_bytes(params.monitor_frames, params.channels), true)?;
        let (capture_rw, capture) =
            Region::create("dmix-capture", monitor_bytes(params.capture_frames, params.channels), true)?;
        let ring = ServerRing {
            params,
            status_ro: reopen_read_only(status_rw.as_fd())?,
            mix_ro: reopen_read_only(mix_rw.as_fd())?,
            monitor_ro: reopen_read_only(monitor_rw.as_fd())?,
            capture_ro: reopen_read_only(capture_rw.as_fd())?,
            status,
            mix,
            monitor,
            capture,
            _capture_rw: capture_rw,
            mix_rw,
            _status_rw: status_rw,
            _monitor_rw: monitor_rw,
        };
        ring.init(protocol_version);
        Ok(ring)
    }

    fn init(&self, protocol_version: u32) {
        let p = &self.params;
        let h = &self.status().header.0;
        h.magic.store(STATUS_MAGIC, Ordering::Relaxed);
        h.protocol_version.store(protocol_version, Ordering::Relaxed);
        h.rate_hz.store(p.rate_hz, Ordering::Relaxed);
        h.channels.store(p.channels, Ordering::Relaxed);
        h.format.store(p.format.code(), Ordering::Relaxed);
        h.period_frames.store(p.period_frames, Ordering::Relaxed);
        h.ring_frames.store(p.ring_frames, Ordering::Relaxed);
        h.monitor_frames.store(p.monitor_frames, Ordering::Relaxed);
        h.flags.store(if p.freewheel { FLAG_FREEWHEEL } else { 0 }, Ordering::Relaxed);
        h.max_slots.store(MAX_SLOTS as u32, Ordering::Relaxed);
        h.server_pid.store(std::process::id(), Ordering::Relaxed);
        h.state.store(SERVER_RUNNING, Ordering::Relaxed);
        h.started_unix_ns.store(unix_now_ns(), Ordering::Relaxed);

        let m = self.mix_header();
        m.magic.0.store(MIX_MAGIC, Ordering::Relaxed);
        m.ring_frames.store(p.ring_frames, Ordering::Relaxed);
        m.channels.store(p.channels, Ordering::Relaxed);
        // A fresh memfd is zero: every sum slot already reads (lap 0, sum 0), the right tag
        // for frames 0..ring_frames.

        let mon = self.monitor_header();
        mon.magic.store(MONITOR_MAGIC, Ordering::Relaxed);
        mon.monitor_frames.store(p.monitor_frames, Ordering::Relaxed);
        mon.channels.store(p.channels, Ordering::Relaxed);

        let cap = self.capture_header();
        cap.magic.store(CAPTURE_MAGIC, Ordering::Relaxed);
        cap.monitor_frames.store(p.capture_frames, Ordering::Relaxed);
        cap.channels.store(p.channels, Ordering::Relaxed);
        self.status().capture.0.capture_frames.store(p.capture_frames, Ordering::Relaxed);

        // Release: pairs with the Acquire load of layout_version in `ClientRing::attach`.
        cap.layout_version.store(RING_LAYOUT_VERSION, Ordering::Release);
        mon.layout_version.store(RING_LAYOUT_VERSION, Ordering::Release);
        m.layout_version.store(RING_LAYOUT_VERSION, Ordering::Release);
        h.layout_version.store(RING_LAYOUT_VERSION, Ordering::Release);
    }

    /// The parameters.
    pub fn params(&self) -> &RingParams {
        &self.params
    }

    /// Records the sinks' names for inspectors, in order of preference (at most
    /// [`MAX_SINKS`]; each cut to fit on a character boundary), and that none is open yet.
    pub fn set_sinks<S: AsRef<str>>(&self, sinks: &[S]) {
        let st = &self.status().sink.0;
        for (slot, name) in st.names.iter().zip(sinks) {
            let bytes = crate::protocol::truncate_name(name.as_ref(), SINK_BYTES).as_bytes();
            for (i, b) in slot.iter().enumerate() {
                b.store(bytes.get(i).copied().unwrap_or(0), Ordering::Relaxed);
            }
        }
        st.count.store(sinks.len().min(MAX_SINKS) as u32, Ordering::Relaxed);
        st.current.store(NO_SINK, Ordering::Relaxed);
        st.lost_at_ns.store(monotonic_ns(), Ordering::Relaxed);
        // Release: an inspector that sees the state sees the names.
        st.state.store(SINK_LOST, Ordering::Release);
    }

    /// The period loop: sink `index` of the list now plays, and its device holds
    /// `device_buffer_frames` beyond hw_ptr (what clients add to know when a frame is heard).
    pub fn publish_sink_running(&self, index: usize, device_buffer_frames: u32) {
        let s = self.status();
        s.stats.0.device_buffer_frames.store(u64::from(device_buffer_frames), Ordering::Relaxed);
        s.sink.0.current.store(index as u32, Ordering::Relaxed);
        // Release: pairs with the Acquire in `stat::snapshot_ring`.
        s.sink.0.state.store(SINK_RUNNING, Ordering::Release);
    }

    /// The period loop: the sink in use was lost at `now_ns` (CLOCK_MONOTONIC). Nothing is
    /// heard any more, so no device buffer delays it: a draining client is done when its last
    /// frame was taken.
    pub fn publish_sink_lost(&self, now_ns: u64) {
        let s = self.status();
        s.stats.0.device_buffer_frames.store(0, Ordering::Relaxed);
        s.sink.0.lost_at_ns.store(now_ns, Ordering::Relaxed);
        s.sink.0.losses.fetch_add(1, Ordering::Relaxed);
        // Release: pairs with the Acquire in `stat::snapshot_ring`.
        s.sink.0.state.store(SINK_LOST, Ordering::Release);
    }

    /// Writes the capture source's description (once, before clients come).
    pub fn set_capture_source(&self, source: &str) {
        let bytes = crate::protocol::truncate_name(source, SOURCE_BYTES).as_bytes();
        for (i, b) in self.status().capture.0.source.iter().enumerate() {
            b.store(bytes.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }

    /// The status block (written by the server only).
    pub fn status(&self) -> &StatusBlock {
        self.status.block(0).expect("status region was created with status_bytes()")
    }

    /// The mix header (client-writable: read it as self-reported).
    pub fn mix_header(&self) -> &MixHeader {
        self.mix.block(0).expect("mix region was created with mix_bytes()")
    }

    fn monitor_header(&self) -> &MonitorHeader {
        self.monitor.block(0).expect("monitor region was created with monitor_bytes()")
    }

    fn capture_header(&self) -> &MonitorHeader {
        self.capture.block(0).expect("capture region was created with monitor_bytes()")
    }

    /// Writes one period of captured frames (mix scale) at absolute frame `at`, then
    /// publishes the new capture pointer and wakes the readers.
    pub fn publish_capture(&self, at: u64, samples: &[i32]) {
        let p = &self.params;
        let ch = p.channels as usize;
        let frames = u64::from(p.capture_frames);
        if frames == 0 {
            return;
        }
        let ring = self
            .capture
            .slice::<AtomicI32>(MONITOR_RING_OFFSET, p.capture_frames as usize * ch)
            .expect("capture region was created with monitor_bytes()");
        for (f, frame) in samples.chunks_exact(ch).enumerate() {
            let base = ((at + f as u64) % frames) as usize * ch;
            for (c, &v) in frame.iter().enumerate() {
                ring[base + c].store(v, Ordering::Relaxed);
            }
        }
        let end = at + (samples.len() / ch) as u64;
        let cs = &self.status().capture.0;
        // Release: pairs with the reader's Acquire of cap_ptr before it reads the samples.
        cs.cap_ptr.store(end, Ordering::Release);
        let seq = (end / u64::from(p.period_frames)) as u32;
        cs.cap_seq.store(seq, Ordering::Release);
        sys::futex_wake(&cs.cap_seq);
    }

    /// Sets the capture state and wakes the readers.
    pub fn set_capture_state(&self, state: u32) {
        let cs = &self.status().capture.0;
        cs.state.store(state, Ordering::Release);
        cs.cap_seq.fetch_add(0, Ordering::Release);
        sys::futex_wake(&cs.cap_seq);
    }

    fn sum_ring(&self) -> &[AtomicU64] {
        let n = self.params.ring_frames as usize * self.params.channels as usize;
        self.mix.slice(MIX_RING_OFFSET, n).expect("mix region was created with mix_bytes()")
    }

    fn monitor_ring(&self) -> &[AtomicI32] {
        let n = self.params.monitor_frames as usize * self.params.channels as usize;
        self.monitor.slice(MONITOR_RING_OFFSET, n).expect("monitor region was created with monitor_bytes()")
    }

    /// Locks the four regions in memory (mlock): the period loop must never fault on a page
    /// that went to swap. Fails past RLIMIT_MEMLOCK without CAP_IPC_LOCK.
    pub fn lock_memory(&self) -> std::io::Result<()> {
        [&self.status, &self.mix, &self.monitor, &self.capture].into_iter().try_for_each(Region::lock)
    }

    /// The fds for a client; `writable_mix` for players.
    pub fn client_fds(&self, writable_mix: bool) -> ClientFds<'_> {
        ClientFds {
            status: self.status_ro.as_fd(),
            mix: if writable_mix { self.mix_rw.as_fd() } else { self.mix_ro.as_fd() },
            monitor: self.monitor_ro.as_fd(),
            capture: self.capture_ro.as_fd(),
        }
    }

    /// Byte sizes of the three regions, as the welcome message states them.
    pub fn region_bytes(&self) -> [u64; 4] {
        [self.status.len() as u64, self.mix.len() as u64, self.monitor.len() as u64, self.capture.len() as u64]
    }

    /// Takes the period starting at absolute frame `hw`: for each sample, one atomic swap
    /// reads the sum and re-arms the slot for the next lap with a zero sum; the sum is
    /// clamped into `out` (`period_frames * channels` samples) and copied to the monitor ring.
    /// Allocates nothing, takes no lock.
    pub fn take_period(&self, hw: u64, out: &mut [i32]) {
        let p = &self.params;
        let ch = p.channels as usize;
        let ring = self.sum_ring();
        let monitor = self.monitor_ring();
        let mut at = p.sum_cursor(hw);
        let mut mon = Cursor::new(hw, p.monitor_frames, p.channels);
        for frame_out in out.chunks_exact_mut(ch) {
            let (lap, base) = (at.lap, at.index);
            let mon_base = mon.index;
            at.advance();
            mon.advance();
            for (c, o) in frame_out.iter_mut().enumerate() {
                // AcqRel: the tag we store is what a client's CAS compares against; the
                // Release store of hw_ptr after this loop publishes it to window checks.
                let word = ring[base + c].swap(slot_word(lap.wrapping_add(1), 0), Ordering::AcqRel);
                let (tag, sum) = slot_parts(word);
                // A wrong tag can only come from a client scribbling on the ring: play silence
                // for that sample rather than whatever it wrote.
                let v = if tag == lap { clamp_mix(sum) } else { 0 };
                *o = v;
                monitor[mon_base + c].store(v, Ordering::Relaxed);
            }
        }
    }

    /// Publishes that frames up to `hw` were taken and wakes the clients waiting for that
    /// period: one syscall whatever the number of clients.
    pub fn publish_hw_ptr(&self, hw: u64) {
        let s = self.status();
        // Before hw_ptr: the Release below publishes it with hw_ptr.
        s.stats.0.hw_published_ns.store(monotonic_ns(), Ordering::Relaxed);
        // Release: pairs with the Acquire load in `ClientRing::hw_ptr`; a client that sees
        // this value sees the slots re-armed by `take_period`.
        s.hw_ptr.0.store(hw, Ordering::Release);
        let seq = (hw / u64::from(self.params.period_frames)) as u32;
        s.wake_seq.0.store(seq, Ordering::Release);
        sys::futex_wake_bitset(&s.wake_seq.0, 1 << (seq % 32));
    }

    /// Wakes every waiter on the status futex without changing it (admission, shutdown).
    pub fn wake_all(&self) {
        sys::futex_wake(&self.status().wake_seq.0);
    }

    /// The client counters of `slot` (self-reported).
    pub fn counters(&self, slot: usize) -> &ClientCounters {
        &self.mix_header().clients[slot]
    }

    /// Resets a slot's self-reported counters before it is handed to a new client.
    pub fn reset_counters(&self, slot: usize, appl_ptr: u64) {
        let c = self.counters(slot);
        c.appl_ptr.store(appl_ptr, Ordering::Relaxed);
        c.end_ptr.store(0, Ordering::Relaxed);
        c.latency_frames.store(0, Ordering::Relaxed);
        c.late_frames.store(0, Ordering::Relaxed);
        c.underruns.store(0, Ordering::Relaxed);
        for p in &c.peak {
            p.store(0, Ordering::Relaxed);
        }
        c.started.store(0, Ordering::Relaxed);
        // Release: the client's Acquire of its slot state (after ours in the status table)
        // sees clean counters.
        c.flags.store(0, Ordering::Release);
    }

    /// The freewheel doorbell word.
    pub fn doorbell(&self) -> &AtomicU32 {
        &self.mix_header().doorbell.0
    }
}

/// A client's side of the ring: the four mappings, validated.
pub struct ClientRing {
    params: RingParams,
    status: Region,
    mix: Region,
    monitor: Region,
    capture: Region,
    mix_writable: bool,
}

impl ClientRing {
    /// Maps the regions received from the server and checks seals, sizes, magics, versions
    /// and that they agree with `params` (from the welcome message).
    pub fn attach(params: RingParams, fds: [&OwnedFd; 4], mix_writable: bool) -> Result<ClientRing> {
        params.validate()?;
        let status = Region::attach("status region", fds[0].as_fd(), status_bytes(), false)?;
        let mix =
            Region::attach("mix region", fds[1].as_fd(), mix_bytes(params.ring_frames, params.channels), mix_writable)?;
        let monitor = Region::attach(
            "monitor region",
            fds[2].as_fd(),
            monitor_bytes(params.monitor_frames, params.channels),
            false,
        )?;
        let capture = Region::attach(
            "capture region",
            fds[3].as_fd(),
            monitor_bytes(params.capture_frames, params.channels),
            false,
        )?;
        let ring = ClientRing { params, status, mix, monitor, capture, mix_writable };
        ring.check_headers()?;
        Ok(ring)
    }

    fn check_headers(&self) -> Result<()> {
        let version = |what: &str, magic_ok: bool, v: u32| -> Result<()> {
            if !magic_ok {
                return Err(Error::invalid(what, "bad magic: not a dmix region"));
            }
            if v != RING_LAYOUT_VERSION {
                return Err(Error::Version { what: "ring layout", ours: RING_LAYOUT_VERSION, theirs: v });
            }
            Ok(())
        };
        let h = &self.status()?.header.0;
        // Acquire: pairs with the Release store in `ServerRing::init`.
        let v = h.layout_version.load(Ordering::Acquire);
        version("status region", h.magic.load(Ordering::Relaxed) == STATUS_MAGIC, v)?;
        let p = &self.params;
        let agree = h.rate_hz.load(Ordering::Relaxed) == p.rate_hz
            && h.channels.load(Ordering::Relaxed) == p.channels
            && h.format.load(Ordering::Relaxed) == p.format.code()
            && h.period_frames.load(Ordering::Relaxed) == p.period_frames
            && h.ring_frames.load(Ordering::Relaxed) == p.ring_frames
            && h.monitor_frames.load(Ordering::Relaxed) == p.monitor_frames;
        if !agree {
            return Err(Error::invalid("status region", "parameters disagree with the welcome message"));
        }
        let m: &MixHeader = self.mix.block(0)?;
        let v = m.layout_version.load(Ordering::Acquire);
        version("mix region", m.magic.0.load(Ordering::Relaxed) == MIX_MAGIC, v)?;
        if m.ring_frames.load(Ordering::Relaxed) != p.ring_frames || m.channels.load(Ordering::Relaxed) != p.channels {
            return Err(Error::invalid("mix region", "geometry disagrees with the welcome message"));
        }
        let mon: &MonitorHeader = self.monitor.block(0)?;
        let v = mon.layout_version.load(Ordering::Acquire);
        version("monitor region", mon.magic.load(Ordering::Relaxed) == MONITOR_MAGIC, v)?;
        let cap: &MonitorHeader = self.capture.block(0)?;
        let v = cap.layout_version.load(Ordering::Acquire);
        version("capture region", cap.magic.load(Ordering::Relaxed) == CAPTURE_MAGIC, v)?;
        if cap.monitor_frames.load(Ordering::Relaxed) != p.capture_frames {
            return Err(Error::invalid("capture region", "geometry disagrees with the welcome message"));
        }
        self.capture_ring()?;
        self.sum_ring()?;
        self.monitor_ring()?;
        Ok(())
    }

    /// The parameters.
    pub fn params(&self) -> &RingParams {
        &self.params
    }

    /// The status block (read-only mapping: load only).
    pub fn status(&self) -> Result<&StatusBlock> {
        self.status.block(0)
    }

    fn status_ok(&self) -> &StatusBlock {
        self.status.block(0).expect("status region size was checked at attach")
    }

    fn mix_header(&self) -> &MixHeader {
        self.mix.block(0).expect("mix region size was checked at attach")
    }

    fn sum_ring(&self) -> Result<&[AtomicU64]> {
        self.mix.slice(MIX_RING_OFFSET, self.params.ring_frames as usize * self.params.channels as usize)
    }

    /// The monitor samples (read-only mapping: load only).
    pub fn monitor_ring(&self) -> Result<&[AtomicI32]> {
        self.monitor.slice(MONITOR_RING_OFFSET, self.params.monitor_frames as usize * self.params.channels as usize)
    }

    /// The captured samples (read-only mapping: load only).
    pub fn capture_ring(&self) -> Result<&[AtomicI32]> {
        self.capture.slice(MONITOR_RING_OFFSET, self.params.capture_frames as usize * self.params.channels as usize)
    }

    /// The shared input's progress.
    pub fn capture_status(&self) -> &CaptureStatus {
        &self.status_ok().capture.0
    }

    /// Sleeps until the capture pointer reaches `target`, the capture state changes, or
    /// `timeout` (the caller re-checks).
    pub fn wait_cap_ptr(&self, target: u64, timeout: Duration) -> Wake {
        let cs = self.capture_status();
        let seq = cs.cap_seq.load(Ordering::Acquire);
        if cs.cap_ptr.load(Ordering::Acquire) >= target || cs.state.load(Ordering::Acquire) == CAPTURE_ENDED {
            return Wake::Woken;
        }
        sys::futex_wait(&cs.cap_seq, seq, timeout)
    }

    /// Frames the server has taken so far.
    pub fn hw_ptr(&self) -> u64 {
        // Acquire: pairs with the Release store in `ServerRing::publish_hw_ptr`.
        self.status_ok().hw_ptr.0.load(Ordering::Acquire)
    }

    /// The slot table entry of `slot`.
    pub fn slot_info(&self, slot: usize) -> &SlotInfo {
        &self.status_ok().slots[slot]
    }

    /// This process's self-reported counters (players only write them).
    pub fn counters(&self, slot: usize) -> &ClientCounters {
        &self.mix_header().clients[slot]
    }

    /// The server's state word.
    pub fn server_state(&self) -> u32 {
        self.status_ok().header.0.state.load(Ordering::Acquire)
    }

    /// Sleeps until the server has taken frames up to at least `hw_target`, or `timeout`
    /// passes (spurious returns are fine: the caller re-checks).
    pub fn wait_hw_ptr(&self, hw_target: u64, timeout: Duration) -> Wake {
        let s = self.status_ok();
        let period = u64::from(self.params.period_frames);
        let target_seq = hw_target.div_ceil(period) as u32;
        let seq = s.wake_seq.0.load(Ordering::Acquire);
        if self.hw_ptr() >= hw_target {
            return Wake::Woken;
        }
        // Sleep on the bit of the period we need: the server's wake for every other period
        // leaves us asleep.
        sys::futex_wait_bitset(&s.wake_seq.0, seq, timeout, 1 << (target_seq % 32))
    }

    /// As [`ClientRing::wait_hw_ptr`], but on a paced server first sleeps on the client's
    /// own clock until the server should have published `hw_target` (from the time it
    /// published the current hw_ptr, `stats.hw_published_ns`), so that the server has
    /// nobody to wake: its cost stays flat in the number of players. A server running late
    /// is then waited for on the futex as before.
    pub fn sleep_until_hw_ptr(&self, hw_target: u64, timeout: Duration) -> Wake {
        /// Past the predicted publish: the server's own jitter (it runs SCHED_FIFO).
        const SLACK_NS: u64 = 300_000;
        if !self.params.freewheel {
            let stats = &self.status_ok().stats.0;
            let hw = self.hw_ptr();
            if hw >= hw_target {
                return Wake::Woken;
            }
            let published = stats.hw_published_ns.load(Ordering::Relaxed);
            // A publish between the two loads would make the prediction a period late.
            if published != 0 && self.hw_ptr() == hw {
                let periods = (hw_target - hw).div_ceil(u64::from(self.params.period_frames));
                let due = published + periods * self.params.period_ns() + SLACK_NS;
                let now = monotonic_ns();
                // Interrupted (a signal): the caller re-checks its stop flag.
                if due > now
                    && due - now < timeout.as_nanos() as u64
                    && (!sleep_until_monotonic(due) || self.hw_ptr() >= hw_target)
                {
                    return Wake::Woken;
                }
            }
        }
        self.wait_hw_ptr(hw_target, timeout)
    }

    /// Sleeps until anything changes on the status futex, or `timeout`.
    pub fn wait_any(&self, timeout: Duration) -> Wake {
        let s = self.status_ok();
        let seq = s.wake_seq.0.load(Ordering::Acquire);
        sys::futex_wait(&s.wake_seq.0, seq, timeout)
    }

    /// Adds `samples` (interleaved frames at the mix scale) into the sum ring starting at
    /// absolute frame `start`; with `negate`, subtracts them (retraction). Stops early at the
    /// first frame the ring cannot hold yet (a lap ahead: the caller's window was wrong);
    /// frames the server already took are dropped and counted as late.
    pub fn mix_add(&self, start: u64, samples: &[i32], negate: bool) -> AddOutcome {
        self.add(start, samples, negate, None)
    }

    /// [`ClientRing::mix_add`] that also stores each sample it visits in `history` at its
    /// place in the ring (`history` has the sum ring's length, one i32 per sample), in the
    /// same pass: a player keeps what it queued, for retraction, without copying it again.
    pub fn mix_add_keeping(&self, start: u64, samples: &[i32], history: &mut [i32]) -> AddOutcome {
        self.add(start, samples, false, Some(history))
    }

    /// Subtracts frames `[from, end)` again, as [`ClientRing::mix_add_keeping`] kept them in
    /// `history`: newest frame first, so that whatever the server takes meanwhile (oldest
    /// first) is a clean prefix of what was queued, never a hole followed by samples meant
    /// to be taken back. Frames the server took already are skipped by the lap tags.
    pub fn retract(&self, from: u64, end: u64, history: &[i32]) {
        let ch = self.params.channels as usize;
        let ring = u64::from(self.params.ring_frames);
        for f in (from..end).rev() {
            let at = (f % ring) as usize * ch;
            if let Some(frame) = history.get(at..at + ch) {
                self.mix_add(f, frame, true);
            }
        }
    }

    fn add(&self, start: u64, samples: &[i32], negate: bool, mut history: Option<&mut [i32]>) -> AddOutcome {
        debug_assert!(self.mix_writable, "mix_add on a read-only mix mapping");
        let p = &self.params;
        let ch = p.channels as usize;
        let Ok(ring) = self.sum_ring() else {
            return AddOutcome::default();
        };
        let mut out = AddOutcome::default();
        let mut at = p.sum_cursor(start);
        'frames: for frame in samples.chunks_exact(ch) {
            let (lap, base) = (at.lap, at.index);
            at.advance();
            for (c, &s) in frame.iter().enumerate() {
                if let Some(kept) = history.as_deref_mut().and_then(|h| h.get_mut(base + c)) {
                    *kept = s;
                }
                let s = if negate { s.wrapping_neg() } else { s };
                let slot = &ring[base + c];
                // Guess an empty slot of our lap instead of loading first: the line was last
                // written by another core, and a load then a CAS fetch it twice (shared, then
                // owned); a failed CAS brings it owned with the value to retry with.
                let mut cur = slot.load(Ordering::Relaxed);
                loop {
                    let (tag, sum) = slot_parts(cur);
                    if tag != lap {
                        if tag == lap.wrapping_sub(1) {
                            // Still the previous lap's frame: not ours to write yet.
                            break 'frames;
                        }
                        // Taken already: never let it land a lap later.
                        out.late_frames += 1;
                        out.frames += 1;
                        continue 'frames;
                    }
                    if s == 0 {
                        break;
                    }
                    // wrapping_add: only another client scribbling could push a sum of at
                    // most MAX_SLOTS full-scale samples near the i32 limits.
                    match slot.compare_exchange_weak(
                        cur,
                        slot_word(lap, sum.wrapping_add(s)),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break,
                        Err(now) => cur = now,
                    }
                }
            }
            out.frames += 1;
        }
        out
    }

    /// Rings the freewheel doorbell after publishing progress.
    pub fn ring_doorbell(&self) {
        let d = &self.mix_header().doorbell.0;
        d.fetch_add(1, Ordering::Release);
        sys::futex_wake(d);
    }

    /// True when the server runs in freewheel.
    pub fn freewheel(&self) -> bool {
        self.params.freewheel
    }

    /// Frames the server's device holds beyond hw_ptr: an ALSA sink's buffer, which the
    /// server keeps full (0 for wav and null sinks). A frame taken at hw_ptr is heard this
    /// much later.
    pub fn device_buffer_frames(&self) -> u64 {
        self.status_ok().stats.0.device_buffer_frames.load(Ordering::Relaxed)
    }

    /// The hw_ptr at which the frames before `end` have been heard: paced, once the device
    /// has played its buffer after them; in freewheel (no listener) once they were taken.
    pub fn heard_at(&self, end: u64) -> u64 {
        if self.freewheel() { end } else { end.saturating_add(self.device_buffer_frames()) }
    }
}

/// An absolute frame's place in a ring: its lap and the index of its first sample. Walking
/// frames with `advance` costs an add and a compare where `frame / ring` and `frame % ring`
/// cost two 64-bit divisions per frame (measured: docs/BENCHMARKS.md, mix kernel).
struct Cursor {
    lap: u32,
    index: usize,
    channels: usize,
    end: usize,
}

impl Cursor {
    fn new(frame: u64, ring_frames: u32, channels: u32) -> Cursor {
        let ring = u64::from(ring_frames);
        let channels = channels as usize;
        // Laps wrap at 2^32 (only equality is compared), frame numbers at 2^64: a status
        // region claiming frames near 2^64 must not make a client panic (found by fuzzing).
        Cursor {
            lap: (frame / ring) as u32,
            index: (frame % ring) as usize * channels,
            channels,
            end: ring_frames as usize * channels,
        }
    }

    fn advance(&mut self) {
        self.index += self.channels;
        if self.index == self.end {
            self.index = 0;
            self.lap = self.lap.wrapping_add(1);
        }
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// CLOCK_MONOTONIC in ns (the clock the paced server runs by; comparable across processes).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos() as u64)
        .unwrap_or(0)
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (see [`monotonic_ns`]). False when a
/// signal cut the sleep short (EINTR): the caller re-checks its stop flag.
pub fn sleep_until_monotonic(deadline_ns: u64) -> bool {
    let ts = nix::sys::time::TimeSpec::from(Duration::from_nanos(deadline_ns));
    nix::time::clock_nanosleep(nix::time::ClockId::CLOCK_MONOTONIC, nix::time::ClockNanosleepFlags::TIMER_ABSTIME, &ts)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{MIX_MAX, MIX_MIN};

    const P: u32 = 16;
    const R: u32 = 64;

    fn server() -> ServerRing {
        let params = RingParams {
            rate_hz: 48000,
            channels: 2,
            format: SampleFormat::S16Le,
            period_frames: P,
            ring_frames: R,
            monitor_frames: 128,
            capture_frames: 0,
            freewheel: true,
        };
        ServerRing::create(params, 1).unwrap()
    }

    fn client(s: &ServerRing) -> ClientRing {
        let fds = s.client_fds(true);
        let owned = [fds.status, fds.mix, fds.monitor, fds.capture].map(|f| f.try_clone_to_owned().unwrap());
        ClientRing::attach(*s.params(), [&owned[0], &owned[1], &owned[2], &owned[3]], true).unwrap()
    }

    fn take(s: &ServerRing, hw: u64) -> Vec<i32> {
        let mut out = vec![0; (P * 2) as usize];
        s.take_period(hw, &mut out);
        s.publish_hw_ptr(hw + u64::from(P));
        out
    }

    fn ramp(frames: u32, k: i32) -> Vec<i32> {
        (0..frames as i32 * 2).map(|i| (i + 1) * k).collect()
    }

    #[test]
    fn ring_server_only_regions_cannot_be_reopened_writable() {
        use std::os::fd::AsRawFd;
        let s = server();
        let fds = s.client_fds(false);
        let len = |what| match what {
            "mix" => s.region_bytes()[1] as usize,
            _ => 1,
        };
        for (what, fd) in [("status", fds.status), ("monitor", fds.monitor), ("capture", fds.capture), ("mix", fds.mix)]
        {
            // What a hostile client would try: reopen its read-only fd read-write through
            // /proc and map that shared and writable.
            let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
            let rw = std::fs::OpenOptions::new().read(true).write(true).open(&path);
            let mapped = rw.map_err(|e| Error::sys("reopen", e)).and_then(|f| {
                let f = OwnedFd::from(f);
                super::map::Region::attach(what, f.as_fd(), len(what), true).map(|_| ())
            });
            if what == "mix" {
                assert!(mapped.is_ok(), "the mix region must stay writable for players: {mapped:?}");
            } else {
                assert!(mapped.is_err(), "the {what} region was mapped writable through /proc");
            }
        }
    }

    #[test]
    fn ring_mix_add_near_the_end_of_time_does_not_panic() {
        // Fuzz finding (fuzz/fuzz_targets/ring_attach.rs): a status region claiming hw_ptr
        // near u64::MAX made mix_add's frame arithmetic overflow.
        let s = server();
        s.publish_hw_ptr(u64::MAX - 10);
        let c = client(&s);
        let out = c.mix_add(c.hw_ptr(), &ramp(R, 1), false);
        assert!(out.frames <= R as usize && out.late_frames <= out.frames);
    }

    #[test]
    fn ring_a_frame_is_heard_after_the_device_buffer_when_paced() {
        let paced = ServerRing::create(RingParams { freewheel: false, ..*server().params() }, 1).unwrap();
        let freewheel = server();
        for s in [&paced, &freewheel] {
            assert_eq!(client(s).heard_at(100), 100, "no device buffer: heard when taken");
            s.status().stats.0.device_buffer_frames.store(1024, Ordering::Relaxed);
            assert_eq!(client(s).device_buffer_frames(), 1024);
        }
        assert_eq!(client(&paced).heard_at(100), 1124, "paced: after the device's buffer");
        assert_eq!(client(&freewheel).heard_at(100), 100, "freewheel: nobody listens");
        paced.status().stats.0.device_buffer_frames.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(client(&paced).heard_at(100), u64::MAX, "a garbage buffer does not overflow");
    }

    #[test]
    fn ring_paced_sleep_returns_once_the_target_is_published() {
        let params = RingParams { freewheel: false, ..*server().params() };
        let s = ServerRing::create(params, 1).unwrap();
        let c = client(&s);
        s.publish_hw_ptr(u64::from(P));
        assert_eq!(c.sleep_until_hw_ptr(u64::from(P), Duration::from_secs(5)), Wake::Woken, "already there");
        // Far ahead and nothing published: the clock sleep is skipped (beyond the timeout)
        // and the futex wait times out.
        assert_eq!(c.sleep_until_hw_ptr(u64::from(P) * 1_000_000, Duration::from_millis(1)), Wake::TimedOut);
        // The server publishes while (or before) the client sleeps: it returns, however the
        // two interleave (bounded by the test's own deadline, never by a sleep).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let target = u64::from(P) * 3;
                while c.hw_ptr() < target {
                    c.sleep_until_hw_ptr(target, Duration::from_secs(5));
                }
                tx.send(()).unwrap();
            });
            s.publish_hw_ptr(u64::from(P) * 2);
            s.publish_hw_ptr(u64::from(P) * 3);
            rx.recv_timeout(Duration::from_secs(10)).expect("the sleeper never returned");
        });
    }

    #[test]
    fn ring_two_clients_sum_and_clamp() {
        let s = server();
        let (a, b) = (client(&s), client(&s));
        assert_eq!(a.mix_add(0, &ramp(P, 3), false), AddOutcome { frames: P as usize, late_frames: 0 });
        b.mix_add(0, &ramp(P, 5), false);
        let out = take(&s, 0);
        assert_eq!(out, ramp(P, 8));
        // Clamped, never wrapped.
        a.mix_add(u64::from(P), &vec![MIX_MAX; 2 * P as usize], false);
        b.mix_add(u64::from(P), &vec![MIX_MAX; 2 * P as usize], false);
        assert!(take(&s, u64::from(P)).iter().all(|&v| v == MIX_MAX));
        a.mix_add(u64::from(2 * P), &vec![MIX_MIN; 2 * P as usize], false);
        b.mix_add(u64::from(2 * P), &vec![MIX_MIN; 2 * P as usize], false);
        assert!(take(&s, u64::from(2 * P)).iter().all(|&v| v == MIX_MIN));
    }

    #[test]
    fn ring_take_zeroes_so_nothing_plays_twice() {
        let s = server();
        let a = client(&s);
        a.mix_add(0, &ramp(P, 1), false);
        take(&s, 0);
        // One lap later the same slots are silent.
        let mut hw = u64::from(P);
        while hw < u64::from(R + P) {
            assert!(take(&s, hw).iter().all(|&v| v == 0), "frame {hw}");
            hw += u64::from(P);
        }
    }

    #[test]
    fn ring_late_sample_is_dropped_never_played_a_lap_later() {
        let s = server();
        let a = client(&s);
        // The client read hw_ptr = 0 and stalled; meanwhile the server took period 0.
        assert_eq!(a.hw_ptr(), 0);
        take(&s, 0);
        let out = a.mix_add(0, &ramp(P, 1), false);
        assert_eq!(out, AddOutcome { frames: P as usize, late_frames: P as usize });
        let mut hw = u64::from(P);
        while hw <= u64::from(2 * R) {
            assert!(take(&s, hw).iter().all(|&v| v == 0), "late samples surfaced at frame {hw}");
            hw += u64::from(P);
        }
    }

    #[test]
    fn ring_write_a_lap_ahead_is_refused() {
        let s = server();
        let a = client(&s);
        // Frame R shares a slot with frame 0, which is not taken yet.
        assert_eq!(a.mix_add(u64::from(R), &ramp(1, 1), false).frames, 0);
        // After the take it is writable.
        let mut hw = 0;
        while hw < u64::from(P) {
            take(&s, hw);
            hw += u64::from(P);
        }
        assert_eq!(a.mix_add(u64::from(R), &ramp(1, 1), false).frames, 1);
    }

    #[test]
    fn ring_write_across_the_end_wraps() {
        let s = server();
        let a = client(&s);
        let mut hw = 0;
        while hw < u64::from(R - P) {
            take(&s, hw);
            hw += u64::from(P);
        }
        // From R - P to R + P: the last period of lap 0 and the first of lap 1.
        let data = ramp(2 * P, 1);
        assert_eq!(a.mix_add(hw, &data, false).frames, 2 * P as usize);
        let first = take(&s, hw);
        let second = take(&s, hw + u64::from(P));
        assert_eq!([first, second].concat(), data);
    }

    #[test]
    fn ring_retraction_removes_only_what_was_not_taken() {
        let s = server();
        let (a, b) = (client(&s), client(&s));
        let da = ramp(2 * P, 2);
        let db = ramp(2 * P, 7);
        a.mix_add(0, &da, false);
        b.mix_add(0, &db, false);
        let first = take(&s, 0);
        // a retracts everything it wrote: the first period is gone already.
        let r = a.mix_add(0, &da, true);
        assert_eq!(r.late_frames, P as usize);
        let second = take(&s, u64::from(P));
        let half = (2 * P) as usize;
        let expect_first: Vec<i32> = da[..half].iter().zip(&db[..half]).map(|(x, y)| x + y).collect();
        assert_eq!(first, expect_first);
        assert_eq!(second, db[half..].to_vec());
    }

    #[test]
    fn ring_monitor_holds_the_clamped_mix() {
        let s = server();
        let a = client(&s);
        a.mix_add(0, &ramp(P, 1), false);
        let out = take(&s, 0);
        let mon = a.monitor_ring().unwrap();
        let got: Vec<i32> = mon[..out.len()].iter().map(|v| v.load(Ordering::Relaxed)).collect();
        assert_eq!(got, out);
    }

    #[test]
    fn ring_attach_refuses_a_wrong_version() {
        let s = server();
        // Simulate a server of another layout version.
        s.status().header.0.layout_version.store(99, Ordering::Release);
        let fds = s.client_fds(true);
        let owned = [fds.status, fds.mix, fds.monitor, fds.capture].map(|f| f.try_clone_to_owned().unwrap());
        let e = ClientRing::attach(*s.params(), [&owned[0], &owned[1], &owned[2], &owned[3]], true).err().unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::Incompatible);
        assert!(e.to_string().contains("99"));
    }

    #[test]
    fn ring_client_cannot_map_status_writable() {
        let s = server();
        let fds = s.client_fds(false);
        let ro = fds.status.try_clone_to_owned().unwrap();
        assert!(map::Region::attach("status", ro.as_fd(), 4096, true).is_err());
        let mix_ro = fds.mix.try_clone_to_owned().unwrap();
        assert!(map::Region::attach("mix", mix_ro.as_fd(), 4096, true).is_err());
        assert!(map::Region::attach("status", ro.as_fd(), 4096, false).is_ok());
    }

    #[test]
    fn ring_memfds_refuse_truncation() {
        let s = server();
        let fd = s.client_fds(true).mix.try_clone_to_owned().unwrap();
        assert!(nix::unistd::ftruncate(&fd, 0).is_err());
        assert!(nix::unistd::ftruncate(&fd, 1 << 30).is_err());
    }
}
