//! `dmix-serve`'s engine: creates the ring, listens on the socket, admits clients (the
//! control thread, here) and runs the period loop (a thread of its own, [`period`]).
//!
//! The two threads share only atomics ([`Core`]): the control thread fills a slot's entry
//! in the status table and posts it in `join_mask`; the period loop admits it at a period
//! boundary (giving it its start frame) and, when the control thread posts a hang-up in
//! `leave_mask`, frees it and hands it back through `freed_mask`. Nothing the clients write
//! is read for control, except the self-reported positions that pace freewheel.

mod admit;
mod capture;
mod control;
mod mixer;
pub mod period;
pub mod sinks;
mod subdevice;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::capture::SourceSpec;
use crate::error::{Error, Result};
use crate::protocol::PROTOCOL_VERSION;
use crate::ring::{RingParams, ServerRing};
use crate::sink::{SinkConfig, SinkSpec};
use crate::transport::Listener;

/// A checked server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The socket path.
    pub socket: PathBuf,
    /// Where the mix goes: the sinks in order of preference (at least one; a WAV sink only
    /// alone, since reopening it would overwrite it).
    pub sinks: Vec<SinkSpec>,
    /// What a lost sink (a device that went away) does to the server.
    pub on_sink_loss: OnSinkLoss,
    /// Start even when no sink opens, and wait for one (`--on-sink-loss wait` given
    /// explicitly); otherwise a sink that cannot be opened at the start is an error.
    pub wait_for_sink: bool,
    /// Ring parameters.
    pub params: RingParams,
    /// Frames of buffer to ask of an ALSA sink: the latency the device adds after the mix,
    /// independent of the ring (how far ahead clients may write).
    pub device_buffer_frames: u32,
    /// Hold the first period until this many players were admitted.
    pub wait_clients: u32,
    /// Exit once a player came and all players left.
    pub exit_when_idle: bool,
    /// The shared input, if any (`params.capture_frames` must then be non-zero).
    pub capture: Option<SourceSpec>,
    /// Hold the capture's first period until this many readers were admitted.
    pub wait_readers: u32,
    /// Also admit peers in this group (gid); the socket is then mode 0660 in that group.
    pub group: Option<u32>,
    /// SCHED_FIFO priority for the period and capture threads when paced (None: ordinary
    /// scheduling). Not applied in freewheel.
    pub rt_priority: Option<u32>,
    /// Where the volumes set by client name (and the master) are kept across restarts
    /// (`$XDG_STATE_HOME/dmix/NAME.volumes`); None: nowhere.
    pub volumes: Option<PathBuf>,
    /// Give remembered volumes to new clients and the master at the start.
    pub restore: bool,
}

/// What the server does when the sink in use fails for good (`--on-sink-loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnSinkLoss {
    /// Keep the clients, run on by the clock, reopen the device (or move to a fallback).
    Wait,
    /// Stop, telling the clients, with the sink's error (exit 9).
    Exit,
}

/// What the binary learns when the server is ready.
pub struct Ready<'a> {
    /// The listening socket.
    pub listener: &'a Listener,
    /// The period thread's scheduling: `Ok(Some(prio))` SCHED_FIFO at prio, `Ok(None)` not
    /// asked (freewheel, or no priority configured), `Err` why it was refused.
    pub realtime: std::result::Result<Option<u32>, String>,
    /// Why the ring could not be locked in memory (RLIMIT_MEMLOCK), when paced; locking is
    /// not asked in freewheel.
    pub locked: std::result::Result<(), String>,
    /// The socket was passed by a service manager (socket activation), not bound here.
    pub activated: bool,
    /// The sink playing (its index in `ServerConfig::sinks`), or `None`: none opened, and
    /// the server waits for one.
    pub sink: Option<usize>,
    /// The buffer the sink's device granted, in frames (0: the sink has none).
    pub device_buffer_frames: u32,
}

/// Puts the calling thread under SCHED_FIFO if `cfg` asks for it and the server is paced.
fn go_realtime(cfg: &ServerConfig) -> std::result::Result<Option<u32>, String> {
    match cfg.rt_priority {
        Some(prio) if !cfg.params.freewheel => match crate::sys::set_realtime(prio) {
            Ok(()) => Ok(Some(prio)),
            Err(e) => Err(format!("SCHED_FIFO priority {prio}: {e}")),
        },
        _ => Ok(None),
    }
}

/// The server's core: the ring, and the atomics through which its threads hand slots to
/// each other. The control thread posts a slot in `join_mask` (its role in `play_mask`,
/// `tee_mask`, `capture_mask`) or `leave_mask`; the period loop admits or frees it and hands
/// freed ones back in `freed_mask`; the capture loop reads `capture_mask`. Every thread holds
/// it by reference; nothing in it is locked.
pub struct Core {
    /// The ring.
    pub ring: ServerRing,
    /// Set by SIGINT/SIGTERM (or by the control thread on a fatal error).
    pub stop: Arc<AtomicBool>,
    /// Slots accepted by the control thread, waiting for admission.
    pub join_mask: AtomicU64,
    /// Slots whose client hung up.
    pub leave_mask: AtomicU64,
    /// Slots the period loop has freed, for the control thread to reuse.
    pub freed_mask: AtomicU64,
    /// Slots held by players (set before the slot is posted in `join_mask`).
    pub play_mask: AtomicU64,
    /// Slots held by recorders (tees), likewise.
    pub tee_mask: AtomicU64,
    /// Slots held by readers of the shared input, likewise; cleared when they leave.
    pub capture_mask: AtomicU64,
    /// The period loop has ended.
    pub loop_done: AtomicBool,
}

/// How the server ended.
pub use period::LoopEnd;

/// Runs a server until SIGINT/SIGTERM (`stop`), `--exit-when-idle`, or a fatal error.
/// `on_ready` is called once the socket listens (the binary prints its ready line there).
pub fn run(cfg: &ServerConfig, stop: Arc<AtomicBool>, on_ready: impl FnOnce(&Ready<'_>)) -> Result<LoopEnd> {
    cfg.params.validate()?;
    if cfg.capture.is_some() != (cfg.params.capture_frames != 0) {
        return Err(Error::invalid("capture", "a capture source needs a capture ring, and only then"));
    }
    // Socket activation: the service manager bound the socket (its path, mode and group are
    // the unit's); --name, --socket and --group do not apply to it.
    let activated = Listener::activated()?;
    let activated_now = activated.is_some();
    if !activated_now && let Some(dir) = cfg.socket.parent() {
        crate::paths::ensure_runtime_dir(dir, cfg.group)?;
    }
    // Bind first: a second server must be refused before it touches the sink (a WAV path
    // shared with a live server would otherwise be truncated).
    let listener = match activated {
        Some(l) => l,
        None => Listener::bind(&cfg.socket, 0o600)?,
    };
    if let Some(g) = cfg.group.filter(|_| !activated_now) {
        // Group first, then mode: the socket is never open to a group it is not in.
        std::os::unix::fs::chown(&cfg.socket, None, Some(g))
            .map_err(|e| Error::sys(format!("chgrp {g} {} (is this user in that group?)", cfg.socket.display()), e))?;
        std::fs::set_permissions(&cfg.socket, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .map_err(|e| Error::sys(format!("chmod {}", cfg.socket.display()), e))?;
    }
    let p = cfg.params;
    let shared = Core {
        ring: ServerRing::create(p)?,
        stop,
        join_mask: AtomicU64::new(0),
        leave_mask: AtomicU64::new(0),
        freed_mask: AtomicU64::new(0),
        play_mask: AtomicU64::new(0),
        tee_mask: AtomicU64::new(0),
        capture_mask: AtomicU64::new(0),
        loop_done: AtomicBool::new(false),
    };
    shared.ring.set_protocol_version(PROTOCOL_VERSION);
    let locked =
        if p.freewheel { Ok(()) } else { shared.ring.lock_memory().map_err(|e| format!("mlock of the ring: {e}")) };
    if cfg.sinks.is_empty() || cfg.sinks.len() > crate::ring::layout::MAX_SINKS {
        return Err(Error::invalid("--sink", format!("give 1 to {} sinks", crate::ring::layout::MAX_SINKS)));
    }
    if cfg.sinks.len() > 1
        && let Some(wav) = cfg.sinks.iter().find(|s| matches!(s, SinkSpec::Wav(_)))
    {
        return Err(Error::invalid(
            format!("--sink {wav}"),
            "a WAV file can only be the one sink: reopening it after a fallback would overwrite it",
        ));
    }
    shared.ring.set_sinks(&cfg.sinks.iter().map(SinkSpec::to_string).collect::<Vec<_>>());
    if let Some(c) = &cfg.capture {
        shared.ring.set_capture_source(&c.to_string());
    }
    let sink_cfg = SinkConfig {
        rate_hz: p.rate_hz,
        channels: p.channels as u16,
        format: p.format,
        period_frames: p.period_frames,
        buffer_frames: cfg.device_buffer_frames,
    };
    // A capture device is read as each period arrives, so its buffer adds no latency: it
    // is as deep as the ring, room for a reader scheduled late.
    let source_cfg = SinkConfig { buffer_frames: p.ring_frames, ..sink_cfg };
    std::thread::scope(|s| {
        let shared = &shared;
        type Opened = Result<std::result::Result<Option<u32>, String>>;
        let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel::<Opened>(1);
        // The sinks are opened by their keeper, never on the period thread; the first one
        // that opens is handed over before the loop starts.
        let started = sinks::start(cfg.sinks.clone(), sink_cfg, cfg.wait_for_sink)?;
        if let Some((index, device_buffer)) = started.opened {
            shared.ring.publish_sink_running(index, device_buffer);
        }
        let (port, switcher) = (started.port, started.switcher);
        let period = std::thread::Builder::new()
            .name("dmix-period".into())
            .spawn_scoped(s, move || -> Result<LoopEnd> {
                let _ = opened_tx.send(Ok(go_realtime(cfg)));
                let exit_on_loss = cfg.on_sink_loss == OnSinkLoss::Exit;
                let end =
                    period::PeriodLoop::new(shared, port, exit_on_loss, cfg.wait_clients, cfg.exit_when_idle).run();
                shared.loop_done.store(true, Ordering::Release);
                end
            })
            .map_err(|e| Error::sys("spawn the period thread", e))?;
        let realtime = match opened_rx.recv().unwrap_or_else(|_| Err(Error::invalid("period thread", "ended early"))) {
            Ok(rt) => rt,
            Err(e) => {
                let _ = period.join();
                return Err(e);
            }
        };
        if let Some(spec) = &cfg.capture {
            let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
            // The source is opened on its own thread, like the sink.
            let spawned = std::thread::Builder::new().name("dmix-capture".into()).spawn_scoped(s, move || {
                // As the period thread: a paced input overruns when its reader is late. The
                // period thread already reported whether this is allowed.
                let _ = go_realtime(cfg);
                let mut source = match crate::capture::open_source(spec, &source_cfg) {
                    Ok(source) => source,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(()));
                // A failing input ends the capture (its readers are told), never the playback.
                if let Err(e) = capture::CaptureLoop::new(shared, source.as_mut(), cfg.wait_readers).run() {
                    crate::say!("dmix-serve: capture stopped: {e}");
                }
            });
            let opened = match spawned {
                Ok(_) => opened_rx.recv().unwrap_or_else(|_| Err(Error::invalid("capture thread", "ended early"))),
                Err(e) => Err(Error::sys("spawn the capture thread", e)),
            };
            if let Err(e) = opened {
                shared.stop.store(true, Ordering::Relaxed);
                shared.ring.ring_doorbell();
                let _ = period.join();
                return Err(e);
            }
        }
        let device_buffer_frames = started.opened.map_or(0, |(_, d)| d);
        let sink = started.opened.map(|(i, _)| i);
        on_ready(&Ready {
            listener: &listener,
            realtime,
            locked,
            activated: activated_now,
            sink,
            device_buffer_frames,
        });
        // Type=notify: the service manager starts what depends on us only now.
        crate::notify::notify("READY=1");
        let (mixer, warning) = mixer::Mixer::load(cfg.volumes.clone(), cfg.restore);
        if let Some(warning) = warning {
            crate::say!("dmix-serve: {warning}");
        }
        if let Some(master) = mixer.master_at_start() {
            shared.ring.set_master_volume(master);
        }
        let control =
            control::Control::new(shared, &listener, listener.path().parent(), cfg.group, mixer, switcher).run();
        crate::notify::notify("STOPPING=1");
        if control.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
            shared.ring.ring_doorbell();
        }
        let end = period.join().unwrap_or_else(|_| Err(Error::invalid("period thread", "panicked")));
        control?;
        end
    })
}
