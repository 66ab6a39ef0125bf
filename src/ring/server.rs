//! The server's side of the ring: it creates and seals the regions, takes each period, and
//! publishes what clients and inspectors read.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::gain::{GainCurve, Volume, ramp_frames, scale};
use super::layout::*;
use super::map::{Region, reopen_read_only};
use super::params::{Cursor, RingParams};
use crate::error::Result;
use crate::format::clamp_mix;
use crate::sys::{self, monotonic_ns, unix_now_ns};

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
    /// Creates, initializes and seals the four regions. The layout version is stored last
    /// in each (Release), so an opener that sees it (Acquire) sees everything else.
    pub fn create(params: RingParams) -> Result<ServerRing> {
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
        ring.init();
        Ok(ring)
    }

    fn init(&self) {
        let p = &self.params;
        let h = &self.status().header.0;
        h.magic.store(STATUS_MAGIC, Ordering::Relaxed);
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

    /// Records the wire protocol the server speaks, for inspectors (the ring itself knows
    /// nothing of the protocol). Call it before the first client can attach.
    pub fn set_protocol_version(&self, version: u32) {
        self.status().header.0.protocol_version.store(version, Ordering::Relaxed);
    }

    /// The parameters.
    pub fn params(&self) -> &RingParams {
        &self.params
    }

    /// Records the sinks' names for inspectors, in order of preference (at most
    /// [`MAX_SINKS`]; each cut to fit on a character boundary), and that none is open yet.
    pub fn set_sinks<S: AsRef<str>>(&self, sinks: &[S]) {
        let st = &self.status().sink.0;
        for (field, name) in st.names.iter().zip(sinks) {
            store_name(field, name.as_ref());
        }
        st.count.store(sinks.len().min(MAX_SINKS) as u32, Ordering::Relaxed);
        st.current.store(NO_SINK, Ordering::Relaxed);
        st.lost_at_ns.store(monotonic_ns(), Ordering::Relaxed);
        // Release: an inspector that sees the state sees the names.
        st.state.store(SINK_LOST, Ordering::Release);
    }

    /// The period loop, switching sinks (`dmix-stat --sink`): the preference list is now
    /// `sinks` (at most [`MAX_SINKS`]), whose first is about to play; the caller publishes
    /// it running (or lost) next. Stores only: nothing is allocated. There is no seqlock: an
    /// inspector reading while the names are rewritten may see a mix of the two lists in that
    /// one read (names are for display; the next read is whole).
    pub fn publish_sink_list<S: AsRef<str>>(&self, sinks: &[S]) {
        let st = &self.status().sink.0;
        for (i, field) in st.names.iter().enumerate() {
            store_name(field, sinks.get(i).map_or("", AsRef::as_ref));
        }
        st.count.store(sinks.len().min(MAX_SINKS) as u32, Ordering::Relaxed);
        st.current.store(0, Ordering::Relaxed);
        // Release, of the state unchanged: pairs with the Acquire in `ClientRing::server_view`,
        // so that an inspector that sees the state sees these names with it.
        st.state.store(st.state.load(Ordering::Relaxed), Ordering::Release);
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
        store_name(&self.status().capture.0.source, source);
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

    /// Byte sizes of the four regions, as the welcome message states them.
    pub fn region_bytes(&self) -> [u64; 4] {
        [self.status.len() as u64, self.mix.len() as u64, self.monitor.len() as u64, self.capture.len() as u64]
    }

    /// Takes the period starting at absolute frame `hw`: for each sample, one atomic swap
    /// reads the sum and re-arms the slot for the next lap with a zero sum; the sum is
    /// clamped into `out` (`period_frames * channels` samples) and copied to the monitor ring.
    /// Allocates nothing, takes no lock. The master volume is not applied (see
    /// [`ServerRing::take_period_at`]).
    pub fn take_period(&self, hw: u64, out: &mut [i32]) {
        self.take(hw, out, &GainCurve::steady(1.0));
    }

    /// [`ServerRing::take_period`] at the master volume: `master` follows the status word
    /// (one load a period; a change ramps from this period on, over 10 ms) and scales the
    /// sum before it is clamped. At 0 dB unmuted nothing is computed.
    pub fn take_period_at(&self, hw: u64, out: &mut [i32], master: &mut Master) {
        // Relaxed: one word read whole; when it changed does not order anything else.
        let word = self.status().stats.0.master_gain.load(Ordering::Relaxed);
        if word != master.word {
            master.word = word;
            master.curve = master.curve.change(hw, Volume::from_word(word).factor(), ramp_frames(self.params.rate_hz));
        }
        self.take(hw, out, &master.curve);
    }

    fn take(&self, hw: u64, out: &mut [i32], gain: &GainCurve) {
        let p = &self.params;
        let ch = p.channels as usize;
        let ring = self.sum_ring();
        let monitor = self.monitor_ring();
        let unity = gain.unity_from(hw);
        let mut at = p.sum_cursor(hw);
        let mut mon = Cursor::new(hw, p.monitor_frames, p.channels);
        for (i, frame_out) in out.chunks_exact_mut(ch).enumerate() {
            let (lap, base) = (at.lap, at.index);
            let mon_base = mon.index;
            at.advance();
            mon.advance();
            let g = if unity { 1.0 } else { gain.factor(hw + i as u64) };
            for (c, o) in frame_out.iter_mut().enumerate() {
                // AcqRel: the tag we store is what a client's CAS compares against; the
                // Release store of hw_ptr after this loop publishes it to window checks.
                let word = ring[base + c].swap(slot_word(lap.wrapping_add(1), 0), Ordering::AcqRel);
                let (tag, sum) = slot_parts(word);
                // A wrong tag can only come from a client scribbling on the ring: play silence
                // for that sample rather than whatever it wrote.
                let sum = if tag == lap { sum } else { 0 };
                let v = clamp_mix(if unity { sum } else { scale(sum, g) });
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

    /// The master volume the period loop applies.
    pub fn master_volume(&self) -> Volume {
        // Relaxed: one word, read whole; the loop picks a change up at its next period.
        Volume::from_word(self.status().stats.0.master_gain.load(Ordering::Relaxed))
    }

    /// Sets the master volume (control thread, or at start).
    pub fn set_master_volume(&self, v: Volume) {
        self.status().stats.0.master_gain.store(v.word(), Ordering::Relaxed);
    }

    /// Wakes every waiter on the status futex without changing it (admission, shutdown).
    pub fn wake_all(&self) {
        sys::futex_wake(&self.status().wake_seq.0);
    }

    /// The raw self-reported counters of `slot`, for tests.
    pub fn counters(&self, slot: usize) -> &ClientCounters {
        &self.mix_header().clients[slot]
    }

    /// The server's operations on `slot`'s words.
    pub fn slot(&self, slot: usize) -> ServerSlot<'_> {
        ServerSlot { ring: self, slot }
    }

    /// Tells clients and inspectors the server is stopping, and wakes every waiter.
    pub fn set_stopping(&self) {
        // Release: pairs with the Acquire in `ClientRing::server_stopping`: whatever the
        // server published before (the last hw_ptr) is seen with it.
        self.status().header.0.state.store(SERVER_STOPPING, Ordering::Release);
        self.wake_all();
    }

    /// Counts a period that came more than a buffer late.
    pub fn count_late_period(&self) {
        // Relaxed: figures for inspectors, here and in `count_period`.
        self.status().stats.0.late_periods.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a period taken: its work took `work_ns`; the device has had `xruns` in all.
    pub fn count_period(&self, xruns: u64, work_ns: u64) {
        let stats = &self.status().stats.0;
        stats.periods.fetch_add(1, Ordering::Relaxed);
        stats.xruns.store(xruns, Ordering::Relaxed);
        stats.max_period_work_ns.fetch_max(work_ns, Ordering::Relaxed);
    }

    /// The shared input's overruns so far.
    pub fn set_capture_overruns(&self, overruns: u64) {
        // Relaxed: a figure for inspectors.
        self.status().capture.0.overruns.store(overruns, Ordering::Relaxed);
    }

    /// Frames the shared input has captured so far.
    pub fn cap_ptr(&self) -> u64 {
        // Acquire: pairs with the capture thread's Release in `publish_capture`.
        self.status().capture.0.cap_ptr.load(Ordering::Acquire)
    }

    /// The doorbell's value now: read it before the checks that may lead to
    /// [`ServerRing::wait_doorbell`], so that no ring is lost in between.
    pub fn doorbell_value(&self) -> u32 {
        // Acquire: pairs with the clients' Release in `ring_doorbell`, after they published.
        self.mix_header().doorbell.0.load(Ordering::Acquire)
    }

    /// Sleeps until the doorbell rings past `seen` (from [`ServerRing::doorbell_value`]), or
    /// `timeout`.
    pub fn wait_doorbell(&self, seen: u32, timeout: std::time::Duration) -> sys::Wake {
        sys::futex_wait(&self.mix_header().doorbell.0, seen, timeout)
    }

    /// Rings the doorbell from inside the server (the control thread, after an admission
    /// or a departure): the period loop re-checks.
    pub fn ring_doorbell(&self) {
        let d = &self.mix_header().doorbell.0;
        d.fetch_add(1, Ordering::Release);
        sys::futex_wake(d);
    }
}

/// What the server writes in a slot's table entry when it accepts a client.
#[derive(Clone, Copy, Debug)]
pub struct SlotFill<'a> {
    /// The client's role, as its code on the wire.
    pub role_code: u32,
    /// The server's id for it.
    pub client_id: u32,
    /// Its process and user id (from the kernel).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Channels it plays or reads.
    pub channels: u32,
    /// The name it gave (cut to fit).
    pub name: &'a str,
    /// Through a sub-device: the server channel of each of its channels.
    pub map: &'a [u8],
    /// The volume it starts with (its hello's, or what the server remembers for its name).
    pub volume: Volume,
}

/// The period loop's state of the master volume: the word it last saw and the curve it
/// follows (see [`ServerRing::take_period_at`]).
#[derive(Debug)]
pub struct Master {
    word: u64,
    curve: GainCurve,
}

impl Default for Master {
    fn default() -> Master {
        Master { word: Volume::UNITY.word(), curve: GainCurve::steady(1.0) }
    }
}

/// How far a player has supplied, as it says in its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supply {
    /// It writes on: frames before this one are in the ring.
    Until(u64),
    /// It said it ended at this frame (draining, stopped or paused).
    EndedAt(u64),
}

/// The server's operations on one slot: its table entry (written by the server only) and
/// what it reads of the client's self-reported counters.
#[derive(Clone, Copy)]
pub struct ServerSlot<'a> {
    ring: &'a ServerRing,
    slot: usize,
}

impl ServerSlot<'_> {
    fn info(&self) -> &SlotInfo {
        &self.ring.status().slots[self.slot]
    }

    fn counters(&self) -> &ClientCounters {
        self.ring.counters(self.slot)
    }

    /// The control thread accepted a client: writes its table entry, then says JOINING.
    pub fn fill(&self, f: &SlotFill<'_>) {
        let info = self.info();
        info.role.store(f.role_code, Ordering::Relaxed);
        info.client_id.store(f.client_id, Ordering::Relaxed);
        info.pid.store(f.pid, Ordering::Relaxed);
        info.uid.store(f.uid, Ordering::Relaxed);
        info.channels.store(f.channels, Ordering::Relaxed);
        info.start_frame.store(0, Ordering::Relaxed);
        info.joined_unix_ns.store(unix_now_ns(), Ordering::Relaxed);
        store_name(&info.name, f.name);
        info.map_len.store(f.map.len().min(MAX_CHANNELS) as u32, Ordering::Relaxed);
        for (i, b) in info.map.iter().enumerate() {
            b.store(f.map.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
        // Relaxed: published with the state below; the client reads it after its admission.
        info.gain.store(f.volume.word(), Ordering::Relaxed);
        // Release: the period loop and inspectors that see JOINING see the fields above.
        info.state.store(SLOT_JOINING, Ordering::Release);
    }

    /// The period loop admits the slot: clean counters, `start` as the first frame it may
    /// write (or, for a reader, its read position), then ACTIVE.
    pub fn admit(&self, start: u64) {
        let c = self.counters();
        c.appl_ptr.store(start, Ordering::Relaxed);
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
        let info = self.info();
        info.start_frame.store(start, Ordering::Relaxed);
        info.playing_from.store(NOT_PLAYING, Ordering::Relaxed);
        // Release: pairs with the client's Acquire of its slot state (`ClientRing::admitted`).
        info.state.store(SLOT_ACTIVE, Ordering::Release);
    }

    /// The client left: the slot is free.
    pub fn free(&self) {
        // Release: an inspector that sees FREE skips the slot.
        self.info().state.store(SLOT_FREE, Ordering::Release);
    }

    /// True while the slot holds an admitted client of role `role_code`.
    pub fn is_active(&self, role_code: u32) -> bool {
        let info = self.info();
        // Acquire: pairs with the period loop's Release of SLOT_ACTIVE, after it set the
        // client's start position.
        info.state.load(Ordering::Acquire) == SLOT_ACTIVE && info.role.load(Ordering::Relaxed) == role_code
    }

    /// The player has written its first frame ([`WriteStream::begin`](super::WriteStream::begin)).
    pub fn started(&self) -> bool {
        // Acquire: pairs with the client's Release of `started`.
        self.counters().started.load(Ordering::Acquire) != 0
    }

    /// Tells the player from which frame it is counted (see `Connection::begin_playing`).
    pub fn count_from(&self, hw: u64) {
        // Release: pairs with the client's Acquire in `WriteStream::playing_from`.
        self.info().playing_from.store(hw, Ordering::Release);
    }

    /// The client's id, pid and name, as the table has them.
    pub fn client(&self) -> (u32, u32, String) {
        let info = self.info();
        // Relaxed: written by this (control) thread when it filled the slot.
        (info.client_id.load(Ordering::Relaxed), info.pid.load(Ordering::Relaxed), load_name(&info.name))
    }

    /// The client's volume.
    pub fn volume(&self) -> Volume {
        // Relaxed: only the control thread writes it, and it is the one asking.
        Volume::from_word(self.info().gain.load(Ordering::Relaxed))
    }

    /// Gives the client a new volume and wakes it, wherever it sleeps (on its own clock, on
    /// `gain_seq`; on a period, on the status futex), so that it re-adds what it queued at the
    /// new volume now. Control thread only: the period loop never does this.
    pub fn set_volume(&self, v: Volume) {
        let info = self.info();
        info.gain.store(v.word(), Ordering::Relaxed);
        // Release: a client that sees the new count (Acquire) sees the volume stored above.
        info.gain_seq.fetch_add(1, Ordering::Release);
        sys::futex_wake(&info.gain_seq);
        self.ring.wake_all();
    }

    /// A reader's read position: everything before it was read.
    pub fn read_pos(&self) -> u64 {
        // Acquire: pairs with the reader's Release in `ReadStream::publish_read`.
        self.counters().appl_ptr.load(Ordering::Acquire)
    }

    /// How far a player has supplied.
    pub fn supply(&self) -> Supply {
        let c = self.counters();
        // Acquire: pairs with the client's Release of flags (after end_ptr, appl_ptr and its
        // adds) in `WriteStream::ended_at`/`resume_at`, and of appl_ptr in `publish`.
        if c.flags.load(Ordering::Acquire) & CLIENT_DRAINING != 0 {
            Supply::EndedAt(c.end_ptr.load(Ordering::Acquire))
        } else {
            Supply::Until(c.appl_ptr.load(Ordering::Acquire))
        }
    }
}
