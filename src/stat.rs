//! `dmix-stat`'s engine: reads a server's status (mapped read-only) into a [`Snapshot`],
//! lists the servers in the runtime directory, and waits for a server to answer. Never
//! writes to the ring; its slot is an inspector's, which never holds a freewheel render.
//!
//! The field names of [`Snapshot`] are the JSON interface (`dmix-stat --json`), documented
//! in the man page: rename nothing without saying so there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::format::{MIX_MAX, SampleFormat};
use crate::protocol::{MAX_REPLY_BYTES, MixerRequest, MuteHow, Reply, Role, Target};
use crate::ring::layout::{CAPTURE_ENDED, MAX_SLOTS};
use crate::ring::{ClientRing, Volume};
use crate::sys::{monotonic_ns, unix_now_ns};
use crate::transport;

/// Everything `dmix-stat` shows about one server at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// The server.
    pub server: ServerSnapshot,
    /// Its clients, by id.
    pub clients: Vec<ClientSnapshot>,
}

/// The server's part of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct ServerSnapshot {
    /// Server name (the socket's file name without `.sock`).
    pub name: String,
    /// Socket path.
    pub socket: String,
    /// Server pid.
    pub pid: u32,
    /// The sink playing, as named at start or by a switch (`dmix-stat --sink`); while
    /// `sink_state` is "lost", the one lost.
    pub sink: String,
    /// "running" (a sink plays) or "lost" (none does: the one in use went away, or none
    /// opened at the start; clients play on unheard while the server retries).
    pub sink_state: String,
    /// Seconds since the sink was lost; null while one plays.
    pub sink_lost_s: Option<f64>,
    /// Times a sink in use was lost since the server started.
    pub sink_losses: u64,
    /// Every sink given, in order of preference, with its state.
    pub sinks: Vec<SinkEntry>,
    /// Sample rate in Hz.
    pub rate_hz: u32,
    /// Channels.
    pub channels: u32,
    /// Device sample format.
    pub format: String,
    /// Frames per period.
    pub period_frames: u32,
    /// Period in milliseconds.
    pub period_ms: f64,
    /// Frames in the mix ring.
    pub buffer_frames: u32,
    /// Mix ring in milliseconds.
    pub buffer_ms: f64,
    /// Frames the sink's device holds beyond hw_ptr (an ALSA sink's buffer; the latency it
    /// adds after the mix); None for wav and null sinks.
    pub device_buffer_frames: Option<u64>,
    /// Frames taken so far.
    pub hw_ptr: u64,
    /// Seconds since the server started.
    pub uptime_s: f64,
    /// "freewheel" or "real time".
    pub mode: String,
    /// Device xruns recovered.
    pub xruns: u64,
    /// Periods played.
    pub periods: u64,
    /// Periods the paced clock started late.
    pub late_periods: u64,
    /// Longest work for one period, microseconds.
    pub max_period_work_us: f64,
    /// The master volume, dB (applied to the mix; `dmix-stat --volume master=DB`).
    pub master_volume_db: f64,
    /// The master is muted.
    pub master_muted: bool,
    /// The shared input (`dmix-serve --capture`); null when there is none.
    pub capture: Option<CaptureSnapshot>,
}

/// One sink of the server's preference list.
#[derive(Clone, Debug, Serialize)]
pub struct SinkEntry {
    /// The sink as named at start or by a switch.
    pub name: String,
    /// "in use"; "waiting" (not open: tried again until it opens, since nothing plays or it
    /// is preferred to the one in use); "fallback" (after the one in use: tried only if
    /// that is lost).
    pub state: String,
}

/// The shared input's part of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureSnapshot {
    /// The source as named at start.
    pub source: String,
    /// "waiting" (for readers), "running" or "ended".
    pub state: String,
    /// Frames captured so far.
    pub cap_ptr: u64,
    /// Frames in the capture ring.
    pub ring_frames: u32,
    /// Device overruns recovered.
    pub overruns: u64,
}

/// One client of a snapshot. `pid` and `uid` come from the kernel (SO_PEERCRED); `name`,
/// `queued_ms`, `latency_ms`, `underruns`, `late_frames` and `peak_dbfs` are the client's own
/// report.
#[derive(Clone, Debug, Serialize)]
pub struct ClientSnapshot {
    /// Client id (unique while the server runs).
    pub id: u32,
    /// Slot index.
    pub slot: u32,
    /// Peer pid.
    pub pid: u32,
    /// Peer uid.
    pub uid: u32,
    /// The client's name.
    pub name: String,
    /// play, tee, share, stat or capture.
    pub role: String,
    /// Channels the client plays or reads: its sub-device's width, else the server's.
    pub channels: u32,
    /// How far ahead of hw_ptr the client has queued audio, ms (players); how far behind
    /// the capture pointer a capture reader is, ms.
    pub queued_ms: Option<f64>,
    /// How far ahead of hw_ptr the player writes at most (its chosen latency), ms; it
    /// refills when half of that has played, so `queued_ms` moves between the two.
    pub latency_ms: Option<f64>,
    /// Players: whether it has written a frame (the server's word), null otherwise. A player
    /// that has not (a program that opened the device, perhaps only to probe it) does not
    /// hold a held or freewheel server, nor keep an idle one from exiting once it leaves.
    pub started: Option<bool>,
    /// Times the client fell behind.
    pub underruns: u64,
    /// Frames it dropped because they arrived late.
    pub late_frames: u64,
    /// Recent peak per channel, dBFS (null: silence), at the client's volume.
    pub peak_dbfs: Vec<Option<f64>>,
    /// Players: the volume the server gives it, dB; null otherwise.
    pub volume_db: Option<f64>,
    /// Players: muted; null otherwise.
    pub muted: Option<bool>,
}

/// Peak at the mix scale as dBFS; `None` for silence.
pub fn peak_dbfs(peak: u32) -> Option<f64> {
    (peak > 0).then(|| 20.0 * (f64::from(peak) / f64::from(MIX_MAX)).log10())
}

/// Reads a snapshot through an inspector connection.
pub fn snapshot(conn: &Connection, socket: &Path) -> Result<Snapshot> {
    snapshot_ring(conn.ring(), socket)
}

/// [`snapshot`] of an attached ring. Everything read from it is treated as untrusted (a
/// player writes its own counters): nothing it holds can make this panic (fuzzed:
/// fuzz/fuzz_targets/ring_attach.rs).
pub fn snapshot_ring(ring: &ClientRing, socket: &Path) -> Result<Snapshot> {
    let p = *ring.params();
    let v = ring.server_view();
    let hw = v.hw_ptr;
    let sinks: Vec<SinkEntry> = v
        .sinks
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let state = match (v.sink_running, (i as u32).cmp(&v.sink_current)) {
                (true, std::cmp::Ordering::Equal) => "in use",
                (true, std::cmp::Ordering::Greater) => "fallback",
                _ => "waiting",
            };
            SinkEntry { name: name.clone(), state: state.into() }
        })
        .collect();
    let cap_ptr = v.capture.as_ref().map_or(0, |c| c.cap_ptr);
    let server = ServerSnapshot {
        name: socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        socket: socket.display().to_string(),
        pid: v.pid,
        sink: sinks.get(v.sink_current as usize).or(sinks.first()).map_or(String::new(), |s| s.name.clone()),
        sink_state: if v.sink_running { "running" } else { "lost" }.into(),
        sink_lost_s: (!v.sink_running).then(|| monotonic_ns().saturating_sub(v.sink_lost_at_ns) as f64 / 1e9),
        sink_losses: v.sink_losses,
        sinks,
        rate_hz: p.rate_hz,
        channels: p.channels,
        format: SampleFormat::from_code(v.format_code).map_or("?", |f| f.name()).to_string(),
        period_frames: p.period_frames,
        period_ms: p.frames_to_ms(u64::from(p.period_frames)),
        buffer_frames: p.ring_frames,
        buffer_ms: p.frames_to_ms(u64::from(p.ring_frames)),
        device_buffer_frames: Some(v.device_buffer_frames).filter(|&d| d != 0),
        hw_ptr: hw,
        uptime_s: unix_now_ns().saturating_sub(v.started_unix_ns) as f64 / 1e9,
        mode: if v.freewheel { "freewheel" } else { "real time" }.into(),
        xruns: v.xruns,
        periods: v.periods,
        late_periods: v.late_periods,
        max_period_work_us: v.max_period_work_ns as f64 / 1000.0,
        master_volume_db: f64::from(v.master.db),
        master_muted: v.master.muted,
        capture: v.capture.map(|c| CaptureSnapshot {
            source: c.source,
            state: match c.state {
                CAPTURE_ENDED => "ended",
                _ if c.cap_ptr == 0 => "waiting",
                _ => "running",
            }
            .into(),
            cap_ptr: c.cap_ptr,
            ring_frames: p.capture_frames,
            overruns: c.overruns,
        }),
    };
    let mut clients: Vec<ClientSnapshot> = (0..MAX_SLOTS)
        .filter_map(|slot| ring.slot_view(slot))
        .map(|c| {
            let role = Role::from_code(c.role_code);
            let playing = role == Some(Role::Play);
            ClientSnapshot {
                id: c.client_id,
                slot: c.slot as u32,
                pid: c.pid,
                uid: c.uid,
                name: c.name,
                role: role.map_or("?", Role::name).to_string(),
                channels: c.channels,
                queued_ms: match role {
                    Some(Role::Play) => Some(p.frames_to_ms(c.appl_ptr.saturating_sub(hw))),
                    Some(Role::Capture) => Some(p.frames_to_ms(cap_ptr.saturating_sub(c.appl_ptr))),
                    _ => None,
                },
                latency_ms: playing.then(|| p.frames_to_ms(u64::from(c.latency_frames))),
                started: playing.then_some(c.started),
                underruns: c.underruns,
                late_frames: c.late_frames,
                peak_dbfs: if playing { c.peaks.iter().map(|&v| peak_dbfs(v)).collect() } else { Vec::new() },
                volume_db: playing.then_some(f64::from(c.volume.db)),
                muted: playing.then_some(c.volume.muted),
            }
        })
        .collect();
    clients.sort_by_key(|c| c.id);
    Ok(Snapshot { server, clients })
}

/// A server found in the runtime directory.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    /// Server name.
    pub name: String,
    /// Socket path.
    pub socket: String,
    /// It answered.
    pub running: bool,
}

/// The servers in `dir` (the runtime directory), by name; a socket nobody answers on is
/// listed as not running.
pub fn list_servers(dir: &Path) -> Result<Vec<Listed>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::sys(format!("read {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        let running = crate::transport::connect_socket(&path).is_ok();
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        out.push(Listed { name, socket: path.display().to_string(), running });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Connects as an inspector, retrying until the server answers or `timeout` passes.
pub fn wait_for_server(device: &str, timeout: Duration, name: &str) -> Result<Connection> {
    let deadline = Instant::now() + timeout;
    loop {
        match Connection::open(device, Role::Stat, name, 0) {
            Ok(c) => return Ok(c),
            Err(e) if matches!(e.kind(), ErrorKind::NotRunning | ErrorKind::ServerGone) => {
                if Instant::now() >= deadline {
                    let socket = crate::paths::resolve_device(device).unwrap_or_else(|_| PathBuf::from(device));
                    return Err(Error::invalid(
                        socket.display().to_string(),
                        format!("no server answered within {:.1} s", timeout.as_secs_f64()),
                    ));
                }
                // A server being started binds its socket within milliseconds; re-try
                // often enough that a script waiting on us loses no time.
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends a mixer request on an inspector's connection and returns the server's answer (the
/// new state in one line), or its refusal as an error.
pub fn mixer_request(conn: &Connection, req: &MixerRequest, timeout: Duration) -> Result<String> {
    use std::os::fd::AsFd;
    transport::send(conn.socket(), &req.encode(), &[])
        .map_err(|e| if e.is_hang_up() { Error::ServerGone } else { e })?;
    let mut buf = [0u8; MAX_REPLY_BYTES];
    let Some(msg) = transport::recv_timeout(conn.socket().as_fd(), &mut buf, timeout)? else {
        return Err(Error::ServerGone);
    };
    match Reply::decode(&buf[..msg.len])? {
        Reply::Answer(text) => Ok(text),
        // Not "refused the connection": the connection stands, the request was refused.
        Reply::Refused(r, reason) => Err(Error::RequestRefused { kind: r.kind(), reason }),
        Reply::Welcome(_) | Reply::Done => Err(Error::invalid("server reply", "not an answer to a mixer request")),
    }
}

/// A mixer target as dmix-stat takes it: `master`, `pid:N`, a client id (digits), else a
/// client name.
pub fn parse_target(s: &str) -> std::result::Result<Target, String> {
    if s.is_empty() {
        return Err("no target: a client id, pid:N, a client name or master".into());
    }
    if s == "master" {
        return Ok(Target::Master);
    }
    if let Some(pid) = s.strip_prefix("pid:") {
        return pid.parse().map(Target::Pid).map_err(|_| format!("'{s}': pid:N takes a process id"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Target::Id).map_err(|_| format!("'{s}': no such client id"));
    }
    Ok(Target::Name(s.to_string()))
}

/// `TARGET=DB` (absolute), `TARGET=DB+` or `TARGET=DB-` (a change, as amixer writes it).
pub fn parse_volume(s: &str) -> std::result::Result<MixerRequest, String> {
    let Some((target, db)) = s.rsplit_once('=') else {
        return Err(format!("'{s}': expected TARGET=DB, TARGET=DB+ or TARGET=DB-"));
    };
    let target = parse_target(target)?;
    let (num, sign) = match db.as_bytes().last() {
        Some(b'+') => (&db[..db.len() - 1], Some(1.0)),
        Some(b'-') => (&db[..db.len() - 1], Some(-1.0)),
        _ => (db, None),
    };
    let value: f32 = num.trim_end_matches("dB").parse().map_err(|_| format!("'{db}' is not a number of dB"))?;
    if !value.is_finite() {
        return Err(format!("'{db}' is not a number of dB"));
    }
    match sign {
        Some(_) if value < 0.0 => Err(format!("'{db}': a change is a positive number followed by + or -")),
        Some(sign) => Ok(MixerRequest::Volume { target, db: value * sign, relative: true }),
        None => {
            let db = crate::protocol::check_volume(value)?;
            Ok(MixerRequest::Volume { target, db, relative: false })
        }
    }
}

/// `TARGET`, `TARGET=on`, `TARGET=off` or `TARGET=toggle`.
pub fn parse_mute(s: &str) -> std::result::Result<MixerRequest, String> {
    let (target, how) = match s.rsplit_once('=') {
        Some((t, "on")) => (t, MuteHow::On),
        Some((t, "off")) => (t, MuteHow::Off),
        Some((t, "toggle")) => (t, MuteHow::Toggle),
        Some((_, h)) => return Err(format!("'{h}': mute is on, off or toggle")),
        None => (s, MuteHow::On),
    };
    Ok(MixerRequest::Mute { target: parse_target(target)?, how })
}

/// Renders a snapshot as the plain text `dmix-stat` prints once.
pub fn render_text(s: &Snapshot) -> String {
    use std::fmt::Write;
    let v = &s.server;
    let mut o = String::new();
    let _ = writeln!(o, "server   {} (pid {}) at {}", v.name, v.pid, v.socket);
    match v.sink_lost_s {
        None => {
            let _ = write!(o, "sink     {}", v.sink);
        }
        Some(lost) => {
            let _ = write!(o, "sink     LOST for {lost:.1} s: {}; clients play on unheard while it is retried", v.sink);
        }
    }
    if v.sinks.len() > 1 {
        let list: Vec<String> = v.sinks.iter().map(|s| format!("{} ({})", s.name, s.state)).collect();
        let _ = write!(o, "; sinks {}", list.join(", "));
    }
    if v.sink_losses > 0 {
        let _ = write!(o, "; lost {} times", v.sink_losses);
    }
    o.push('\n');
    let _ = writeln!(o, "format   {} Hz, {} ch, {}", v.rate_hz, v.channels, v.format);
    let _ = write!(
        o,
        "period   {} frames ({:.1} ms), buffer {} frames ({:.1} ms)",
        v.period_frames, v.period_ms, v.buffer_frames, v.buffer_ms
    );
    if let Some(d) = v.device_buffer_frames {
        let _ = write!(o, ", device buffer {d} frames ({:.1} ms)", d as f64 * 1000.0 / f64::from(v.rate_hz.max(1)));
    }
    o.push('\n');
    let _ = writeln!(o, "clock    {}, up {:.1} s, hw_ptr {}", v.mode, v.uptime_s, v.hw_ptr);
    let master = Volume { db: v.master_volume_db as f32, muted: v.master_muted };
    let _ = writeln!(o, "master   {}", master.describe());
    let _ = writeln!(
        o,
        "xruns    {} (periods {}, late {}, longest period work {:.0} us)",
        v.xruns, v.periods, v.late_periods, v.max_period_work_us
    );
    if let Some(c) = &v.capture {
        let _ = writeln!(
            o,
            "capture  {}, {}, {} frames captured, ring {} frames, overruns {}",
            c.source, c.state, c.cap_ptr, c.ring_frames, c.overruns
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>4} {:>7} {:<7} {:>3} {:>9} {:>9} {:>9} {:>9} {:>15}  {:<20} NAME",
        "ID", "PID", "ROLE", "CH", "QUEUED", "LATENCY", "UNDERRUNS", "LATE", "VOLUME", "PEAK dBFS"
    );
    for c in &s.clients {
        let queued = match (c.started, c.queued_ms) {
            (Some(false), _) => "opened".to_string(),
            (_, q) => q.map_or("-".to_string(), |q| format!("{q:.1} ms")),
        };
        let latency = c.latency_ms.map_or("-".to_string(), |q| format!("{q:.1} ms"));
        let peaks: Vec<String> = c.peak_dbfs.iter().map(|p| p.map_or("-inf".into(), |d| format!("{d:.1}"))).collect();
        // A server from before issue 14 wrote the hello's 0 ("the server's") here.
        let ch = if c.channels == 0 { v.channels } else { c.channels };
        let _ = writeln!(
            o,
            "{:>4} {:>7} {:<7} {:>3} {:>9} {:>9} {:>9} {:>9} {:>15}  {:<20} {}",
            c.id,
            c.pid,
            c.role,
            ch,
            queued,
            latency,
            c.underruns,
            c.late_frames,
            match (c.volume_db, c.muted) {
                (Some(db), Some(muted)) => Volume { db: db as f32, muted }.describe(),
                _ => "-".to_string(),
            },
            if peaks.is_empty() { "-".into() } else { peaks.join(" ") },
            c.name
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_volume_and_mute_as_amixer_writes_them() {
        let v = |t: Target, db: f32, relative: bool| MixerRequest::Volume { target: t, db, relative };
        assert_eq!(parse_volume("3=-6"), Ok(v(Target::Id(3), -6.0, false)));
        assert_eq!(parse_volume("mpv=3+"), Ok(v(Target::Name("mpv".into()), 3.0, true)));
        assert_eq!(parse_volume("pid:42=1.5-"), Ok(v(Target::Pid(42), -1.5, true)));
        assert_eq!(parse_volume("master=-6.0206"), Ok(v(Target::Master, -6.0206, false)));
        assert_eq!(parse_volume("a=b=0"), Ok(v(Target::Name("a=b".into()), 0.0, false)));
        assert_eq!(parse_volume("3=loud").unwrap_err(), "'loud' is not a number of dB");
        assert_eq!(parse_volume("3=12.5").unwrap_err(), "volume 12.5 dB is above the most, +12 dB");
        assert!(parse_volume("3").is_err());
        assert!(parse_volume("=3").is_err());
        assert!(parse_volume("pid:x=3").is_err());
        assert!(parse_volume("3=nan").is_err());
        assert_eq!(parse_mute("2"), Ok(MixerRequest::Mute { target: Target::Id(2), how: MuteHow::On }));
        assert_eq!(
            parse_mute("mpv=toggle"),
            Ok(MixerRequest::Mute { target: Target::Name("mpv".into()), how: MuteHow::Toggle })
        );
        assert_eq!(parse_mute("master=off"), Ok(MixerRequest::Mute { target: Target::Master, how: MuteHow::Off }));
        assert!(parse_mute("2=maybe").is_err());
    }

    #[test]
    fn stat_peak_dbfs() {
        assert_eq!(peak_dbfs(0), None);
        assert!(peak_dbfs(MIX_MAX as u32).unwrap().abs() < 1e-9);
        assert!((peak_dbfs((MIX_MAX / 2) as u32).unwrap() + 6.02).abs() < 0.01);
    }
}
