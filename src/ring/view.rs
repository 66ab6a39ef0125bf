//! What an inspector (dmix-stat) reads: plain values copied out of the status region and
//! the clients' counters, with the orderings that make them consistent. Everything here
//! is untrusted (a player writes its own counters): nothing it holds can make a reader
//! panic (fuzzed: fuzz/fuzz_targets/ring_attach.rs).

use std::sync::atomic::Ordering;

use super::client::ClientRing;
use super::gain::Volume;
use super::layout::*;

/// The server's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerView {
    /// The server's process id.
    pub pid: u32,
    /// The device sample format's code (`SampleFormat::from_code`).
    pub format_code: u32,
    /// It runs in freewheel.
    pub freewheel: bool,
    /// When it started, ns since the Unix epoch.
    pub started_unix_ns: u64,
    /// A sink is open and playing.
    pub sink_running: bool,
    /// The index in `sinks` of the sink playing (or, while lost, of the one lost).
    pub sink_current: u32,
    /// The sinks, in order of preference.
    pub sinks: Vec<String>,
    /// When the sink was lost, on CLOCK_MONOTONIC.
    pub sink_lost_at_ns: u64,
    /// Times a sink in use was lost.
    pub sink_losses: u64,
    /// Frames an ALSA sink's device holds beyond hw_ptr.
    pub device_buffer_frames: u64,
    /// Frames taken so far.
    pub hw_ptr: u64,
    /// Device xruns.
    pub xruns: u64,
    /// Periods taken.
    pub periods: u64,
    /// Periods that finished after their deadline.
    pub late_periods: u64,
    /// The longest period's work, in ns.
    pub max_period_work_ns: u64,
    /// The master volume.
    pub master: Volume,
    /// The shared input, when the server has one.
    pub capture: Option<CaptureView>,
}

/// The shared input's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureView {
    /// What it records.
    pub source: String,
    /// `CAPTURE_*`.
    pub state: u32,
    /// Frames captured so far.
    pub cap_ptr: u64,
    /// Input overruns.
    pub overruns: u64,
}

/// One admitted client, as the server's table and its own counters say.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotView {
    /// The slot.
    pub slot: usize,
    /// The server's id for it.
    pub client_id: u32,
    /// Its role's code (`Role::from_code`).
    pub role_code: u32,
    /// Process and user id (from the kernel, SO_PEERCRED).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// The name it gave.
    pub name: String,
    /// Channels it plays or reads.
    pub channels: u32,
    /// Its self-reported position: the next frame a player writes, or how far a reader read.
    pub appl_ptr: u64,
    /// A player's latency, in frames.
    pub latency_frames: u32,
    /// The server counts it as a player (it has written a frame).
    pub started: bool,
    /// Times it fell behind.
    pub underruns: u64,
    /// Frames it dropped as late (players) or lost to an overrun (readers).
    pub late_frames: u64,
    /// Recent peak per server channel, mix scale.
    pub peaks: Vec<u32>,
    /// The volume the server gives it (players).
    pub volume: Volume,
}

impl ClientRing {
    /// The server's figures, read now.
    pub fn server_view(&self) -> ServerView {
        let status = self.status();
        let h = &status.header.0;
        let stats = &status.stats.0;
        let sk = &status.sink.0;
        // Acquire: pairs with the Release of the state in `ServerRing::publish_sink_*`, after
        // the names, the index and the device buffer.
        let sink_running = sk.state.load(Ordering::Acquire) == SINK_RUNNING;
        let count = (sk.count.load(Ordering::Relaxed) as usize).min(MAX_SINKS);
        let capture = (self.params().capture_frames != 0).then(|| {
            let c = &status.capture.0;
            CaptureView {
                source: load_name(&c.source),
                // Acquire: pairs with the capture loop's Release stores.
                cap_ptr: c.cap_ptr.load(Ordering::Acquire),
                state: c.state.load(Ordering::Acquire),
                overruns: c.overruns.load(Ordering::Relaxed),
            }
        });
        // Relaxed below: figures for reading, each consistent on its own.
        ServerView {
            pid: h.server_pid.load(Ordering::Relaxed),
            format_code: h.format.load(Ordering::Relaxed),
            freewheel: h.flags.load(Ordering::Relaxed) & FLAG_FREEWHEEL != 0,
            started_unix_ns: h.started_unix_ns.load(Ordering::Relaxed),
            sink_running,
            sink_current: sk.current.load(Ordering::Relaxed),
            sinks: sk.names[..count].iter().map(|n| load_name(n)).collect(),
            sink_lost_at_ns: sk.lost_at_ns.load(Ordering::Relaxed),
            sink_losses: sk.losses.load(Ordering::Relaxed),
            device_buffer_frames: stats.device_buffer_frames.load(Ordering::Relaxed),
            hw_ptr: self.hw_ptr(),
            xruns: stats.xruns.load(Ordering::Relaxed),
            periods: stats.periods.load(Ordering::Relaxed),
            late_periods: stats.late_periods.load(Ordering::Relaxed),
            max_period_work_ns: stats.max_period_work_ns.load(Ordering::Relaxed),
            master: Volume::from_word(stats.master_gain.load(Ordering::Relaxed)),
            capture,
        }
    }

    /// The client in `slot`, if the slot holds an admitted one that stayed the same while
    /// it was read.
    pub fn slot_view(&self, slot: usize) -> Option<SlotView> {
        let info = self.slot_info(slot);
        // Acquire: pairs with the server's Release of the slot state, after its fields.
        if info.state.load(Ordering::Acquire) != SLOT_ACTIVE {
            return None;
        }
        let client_id = info.client_id.load(Ordering::Relaxed);
        let c = self.counters(slot);
        let channels = self.params().channels as usize;
        // Relaxed below: self-reported figures; the position is read for display only.
        let view = SlotView {
            slot,
            client_id,
            role_code: info.role.load(Ordering::Relaxed),
            pid: info.pid.load(Ordering::Relaxed),
            uid: info.uid.load(Ordering::Relaxed),
            name: load_name(&info.name),
            channels: info.channels.load(Ordering::Relaxed),
            appl_ptr: c.appl_ptr.load(Ordering::Relaxed),
            latency_frames: c.latency_frames.load(Ordering::Relaxed),
            // Acquire: pairs with the period loop's Release of `playing_from`.
            started: info.playing_from.load(Ordering::Acquire) != NOT_PLAYING,
            underruns: c.underruns.load(Ordering::Relaxed),
            late_frames: c.late_frames.load(Ordering::Relaxed),
            peaks: c.peak.iter().take(channels).map(|v| v.load(Ordering::Relaxed)).collect(),
            volume: Volume::from_word(info.gain.load(Ordering::Relaxed)),
        };
        // The slot may have been reused while we read it: keep it only if it still holds
        // the same client.
        (info.state.load(Ordering::Acquire) == SLOT_ACTIVE && info.client_id.load(Ordering::Relaxed) == client_id)
            .then_some(view)
    }
}
