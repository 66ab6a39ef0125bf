//! dmix-stat: inspects a running dmix server: format, pointers, clients, levels, xruns.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use dmix::client::Connection;
use dmix::protocol::MixerRequest;
use dmix::stat::{Snapshot, list_servers, render_text, snapshot, wait_for_server};
use dmix::{Error, Result};

/// Show what a dmix server is doing: its format and clock, and every client with its
/// queued latency, underruns, late frames and levels.
#[derive(Parser, Debug)]
#[command(name = "dmix-stat", version = dmix::cli::version())]
struct Args {
    /// Server name or socket path.
    #[arg(short = 'D', long, value_name = "NAME|PATH", env = "DMIX_DEVICE", default_value = dmix::paths::DEFAULT_NAME)]
    device: String,
    /// Print JSON: one object, or one per line with --watch.
    #[arg(long)]
    json: bool,
    /// Redraw live as a mixer: the table, then the master and each player with its volume
    /// and level meters. Up and Down (or k, j) select a row; Left and Right (or -, + and =,
    /// or h, l) turn its volume down or up by 1 dB; m mutes or unmutes it; q, Esc or Ctrl-C
    /// quits.
    #[arg(short, long)]
    watch: bool,
    /// Redraw interval for --watch, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    interval: u64,
    /// List the servers in the runtime directory and whether they answer.
    #[arg(short, long, conflicts_with_all = ["watch", "wait"])]
    list: bool,
    /// Wait up to SECONDS for the server to answer; exit 0 as soon as it does (with nothing
    /// else asked, print nothing), non-zero on timeout. For scripts, instead of sleeps.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<f64>,
    /// Set a volume: TARGET=DB (absolute, at most +12), TARGET=DB+ or TARGET=DB- (a change,
    /// as amixer writes it: 3+, 1.5-). TARGET is a client id from the table, pid:N, a client
    /// name (every client of that name, now and later: remembered) or master (the mix).
    /// Prints the new state in one line.
    #[arg(long, value_name = "TARGET=DB", value_parser = dmix::stat::parse_volume, allow_hyphen_values = true,
          conflicts_with_all = ["watch", "list", "mute", "forget", "sink"])]
    volume: Option<MixerRequest>,
    /// Mute (on, the default), unmute (off) or toggle TARGET, as --volume names it; the
    /// volume is kept for unmuting. Prints the new state in one line.
    #[arg(long, value_name = "TARGET[=on|off|toggle]", value_parser = dmix::stat::parse_mute,
          conflicts_with_all = ["watch", "list", "forget", "sink"])]
    mute: Option<MixerRequest>,
    /// Forget the volume remembered for the client name NAME.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["watch", "list", "sink"])]
    forget: Option<String>,
    /// Move the running server to another sink (alsa:PCM, wav:PATH, null), without stopping
    /// any client; it becomes the server's first preference. If it will not open, the old
    /// one plays on and the error is one line. A relative WAV path is taken from the current
    /// directory. See dmix-serve(1), SINKS.
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["watch", "list"])]
    sink: Option<String>,
    /// Print a man page or a shell completion script (man, bash, zsh, fish) and exit.
    #[arg(long, hide = true, value_name = "WHAT")]
    generate: Option<String>,
}

fn open(a: &Args) -> Result<(Connection, std::path::PathBuf)> {
    let socket = dmix::paths::resolve_device(&a.device)?;
    let conn = match a.wait {
        Some(s) if !(s.is_finite() && s >= 0.0) => {
            return Err(Error::invalid(format!("--wait {s}"), "not a number of seconds"));
        }
        Some(s) => wait_for_server(&a.device, Duration::from_secs_f64(s.min(1e6)), "dmix-stat")?,
        None => Connection::open(&a.device, dmix::protocol::Role::Stat, "dmix-stat", 0)?,
    };
    Ok((conn, socket))
}

/// `spec` with a relative WAV path made absolute: the server resolves paths in its own
/// working directory, not ours. Anything else goes as typed, for the server to judge; but
/// one too long for the request is refused here, where the wire would cut it (a WAV path
/// cut short is another file).
fn sink_spec(spec: &str) -> Result<String> {
    let spec = match spec.strip_prefix("wav:").map(std::path::Path::new) {
        Some(path) if path.is_relative() && !path.as_os_str().is_empty() => {
            let cwd = std::env::current_dir().map_err(|e| Error::sys("the current directory", e))?;
            format!("wav:{}", cwd.join(path).display())
        }
        _ => spec.to_string(),
    };
    if spec.len() > dmix::protocol::SPEC_WIRE_BYTES {
        let max = dmix::protocol::SPEC_WIRE_BYTES;
        return Err(Error::invalid(format!("--sink {spec}"), format!("longer than {max} bytes")));
    }
    Ok(spec)
}

fn print_json(s: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(s).map_err(|e| Error::invalid("json", e.to_string()))?;
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(Error::stdout)
}

fn run(a: &Args) -> Result<()> {
    if a.list {
        let servers = list_servers(&dmix::paths::runtime_dir())?;
        if a.json {
            return print_json(&servers);
        }
        let mut out = std::io::stdout().lock();
        for s in servers {
            let state = if s.running { "running" } else { "stale" };
            writeln!(out, "{:<20} {:<8} {}", s.name, state, s.socket).map_err(Error::stdout)?;
        }
        return Ok(());
    }
    let (conn, socket) = open(a)?;
    let request = match (&a.volume, &a.mute, &a.forget, &a.sink) {
        (Some(r), ..) | (_, Some(r), ..) => Some(r.clone()),
        (_, _, Some(name), _) => Some(MixerRequest::Forget { name: name.clone() }),
        (.., Some(spec)) => Some(MixerRequest::Sink { spec: sink_spec(spec)? }),
        _ => None,
    };
    if let Some(req) = request {
        // A sink switch waits for the device to open.
        let answer = dmix::stat::mixer_request(&conn, &req, Duration::from_secs(15))?;
        let mut out = std::io::stdout().lock();
        return writeln!(out, "{answer}").and_then(|_| out.flush()).map_err(Error::stdout);
    }
    if a.wait.is_some() && !a.json && !a.watch {
        return Ok(());
    }
    if !a.watch {
        let s = snapshot(&conn, &socket)?;
        return if a.json {
            print_json(&s)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(render_text(&s).as_bytes()).map_err(Error::stdout)
        };
    }
    let interval = Duration::from_millis(a.interval);
    if a.json {
        let stop = dmix::cli::stop_flag();
        while !stop.load(Ordering::Relaxed) {
            conn.check_alive()?;
            print_json(&snapshot(&conn, &socket)?)?;
            let until = Instant::now() + interval;
            // Sleep on the status futex: wakes early only to notice the server going away.
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                conn.ring().wait_any(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)));
            }
        }
        return Ok(());
    }
    watch::run(&conn, &socket, interval)
}

// A crate root looks for its modules beside it, in src/bin/, where every file is a binary.
#[path = "dmix-stat/watch.rs"]
mod watch;

/// The man page's JSON FIELDS section, every field name in backticks, which the page
/// leaves out: the test below checks the marked names against what the serializer writes,
/// so a field cannot be added, renamed or removed without this text saying so.
const JSON_FIELDS: &str = "--json prints one object (with --watch, one per line): `server`, with `name`, `socket`, `pid`, `sink` (the sink playing; while lost, the one lost), `sink_state` (\"running\", or \"lost\": no sink plays, the clients play on unheard while the server reopens one), `sink_lost_s` (seconds since the loss; null while running), `sink_losses` (times a sink in use was lost), `sinks` (every --sink in order of preference, as a --sink switch last left them, objects with `name` and `state`: \"in use\", \"waiting\" (being retried) or \"fallback\" (tried only if the one in use is lost)), `rate_hz`, `channels`, `format`, `period_frames`, `period_ms`, `buffer_frames`, `buffer_ms` (the mix ring), `device_buffer_frames` (an ALSA sink's buffer: the latency the device adds after hw_ptr; null for wav and null sinks), `hw_ptr`, `uptime_s`, `mode` (\"freewheel\" or \"real time\"), `xruns`, `periods`, `late_periods`, `max_period_work_us`, `master_volume_db` (the master volume, applied to the mix), `master_muted`, `capture` (null, or an object with `source`, `state` (\"waiting\", \"running\" or \"ended\"), `cap_ptr`, `ring_frames`, `overruns`); and `clients`, a list of objects with `id`, `slot`, `pid`, `uid`, `name`, `role` (play, tee, share, stat or capture), `channels` (the channels it plays or reads: a sub-device's width, else the server's), `queued_ms` (players: ms queued ahead of hw_ptr; capture readers: ms behind the capture pointer; null otherwise), `latency_ms` (players: how far ahead of hw_ptr they write at most, their --latency; null otherwise), `started` (players: whether it has written a frame; one that has not, such as a device probe, is no player for --wait-clients, --exit-when-idle or a freewheel render, and the table shows it as opened; null otherwise), `underruns`, `late_frames`, `peak_dbfs` (one per channel, at the client's volume; null for silence), `volume_db` (players: the volume the server gives it, dB; null otherwise), `muted` (players; null otherwise).\n\npid and uid come from the kernel (SO_PEERCRED); name, queued_ms, latency_ms, underruns, late_frames and peak_dbfs are the client's own report. With --list --json: a list of objects with `name`, `socket`, `running`. These names are stable.";

/// The sections after OPTIONS: JSON FIELDS (from [`JSON_FIELDS`]), then [`EXTRA`].
fn extra_sections() -> Vec<(&'static str, String)> {
    let mut sections = vec![("JSON FIELDS", JSON_FIELDS.replace('`', ""))];
    sections.extend(EXTRA.iter().map(|&(title, body)| (title, body.to_string())));
    sections
}

const EXTRA: &[(&str, &str)] = &[
    (
        "LIVE VIEW",
        "--watch shows the table, then a mixer: the master, then every player (other clients have no volume), each with its volume and a player with a level meter per channel, a status line and the keys. Up and Down (or k and j) select a row, which stays selected while others come and go; Left and Right (or - and +, = being an unshifted +, or h and l) change its volume by 1 dB, and m mutes or unmutes it, each a request as --volume ID=1- or --mute ID=toggle sends (master=1+ for the master); the status line shows the server's answer, or why it refused (a player that left, say). It redraws at once after a key, else every --interval, and ends, with exit status 0, on q, Esc or Ctrl-C, on SIGINT, SIGTERM or SIGHUP (seen within 0.1 s whatever the interval), and when its terminal goes away (the terminal hung up, or its input ended): each is the normal end of a view that runs until it is stopped, as for dmix-serve, dmix-tee and dmix-share; the screen is restored if the terminal is still there. With --json the same signals end it with 0. The server going away ends it with 10.",
    ),
    (
        "MIXER",
        "--volume, --mute and --forget change a running server's volumes from any shell, as wpctl or pactl do: the server (only it writes volumes) gives the client its new volume, and the client changes what it has already queued, from one server period past what is playing, so the change is heard within two periods whatever the client's latency (a dmix-play with 500 ms queued included), ramped over 10 ms so that it never clicks. Mute is a volume of nothing with the same ramp; unmuting brings the volume back. At 0 dB unmuted the samples are not touched (renders stay bit-exact); at G dB each sample becomes round(s x 10^(G/20)) at the mix scale. The master volume is applied to the mix itself.\n\nTARGET: a client id from the table; pid:N, every player of that process; a client name (as the table shows it, e.g. the --name of dmix-play), every player of that name, now and later; master. A change by id or pid is for those clients only. A change by name, and the master's, is remembered: every later client of that name starts at it, also after the server restarts (kept in $XDG_STATE_HOME/dmix/SERVER.volumes, ~/.local/state without XDG_STATE_HOME); --forget NAME drops it. A paced server restores remembered volumes unless started with --no-restore; a --freewheel server only with --restore, so that scripted renders stay exact. A client's own starting volume (dmix-play --volume, the ALSA plugin's volume key) comes before what is remembered. A relative change by name starts from the name's remembered volume, else its first player's; results are kept within -120 and +12 dB.\n\nEach prints one line with the new state and exits 0. A client that does not exist or is no player, or a name with nothing remembered (--forget), exits 3; a volume above +12 dB or not a number exits 2; a sink that will not open (--sink) exits 9 and the old one plays on.",
    ),
    (
        "EXAMPLES",
        "dmix-stat --wait 5 && dmix-play song.flac\ndmix-stat --watch\ndmix-stat --json | jq .clients\ndmix-stat --volume mpv=-10\ndmix-stat --volume 3=2+\ndmix-stat --mute pid:4242=toggle\ndmix-stat --volume master=-6\ndmix-stat --sink alsa:hdmi:0",
    ),
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(what) = &args.generate {
        let sections = extra_sections();
        let extra: Vec<(&str, &str)> = sections.iter().map(|(title, body)| (*title, body.as_str())).collect();
        return match dmix::cli::generate(Args::command(), what, &extra) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => dmix::cli::report("dmix-stat", &e),
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => dmix::cli::report("dmix-stat", &e),
    }
}

#[cfg(test)]
mod json_fields_tests {
    use std::collections::BTreeSet;

    use dmix::stat::{CaptureSnapshot, ClientSnapshot, Listed, ServerSnapshot, SinkEntry, Snapshot};

    /// Every key of every object in `v`, however deep.
    fn keys(v: &serde_json::Value, into: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    into.insert(k.clone());
                    keys(v, into);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, into)),
            _ => {}
        }
    }

    /// A snapshot with every optional part present, so that every key is written.
    /// A snapshot with every field filled (an optional one set), also the watch tests' base.
    pub(crate) fn full_snapshot() -> Snapshot {
        let sink = SinkEntry { name: "null".into(), state: "in use".into() };
        let capture = CaptureSnapshot {
            source: "wav:in.wav".into(),
            state: "running".into(),
            cap_ptr: 0,
            ring_frames: 0,
            overruns: 0,
        };
        let server = ServerSnapshot {
            name: "default".into(),
            socket: "/run/dmix/default.sock".into(),
            pid: 1,
            sink: "null".into(),
            sink_state: "running".into(),
            sink_lost_s: Some(0.0),
            sink_losses: 0,
            sinks: vec![sink],
            rate_hz: 48000,
            channels: 2,
            format: "S16_LE".into(),
            period_frames: 256,
            period_ms: 5.3,
            buffer_frames: 4096,
            buffer_ms: 85.3,
            device_buffer_frames: Some(0),
            hw_ptr: 0,
            uptime_s: 0.0,
            mode: "real time".into(),
            xruns: 0,
            periods: 0,
            late_periods: 0,
            max_period_work_us: 0.0,
            master_volume_db: 0.0,
            master_muted: false,
            capture: Some(capture),
        };
        let client = ClientSnapshot {
            id: 1,
            slot: 0,
            pid: 2,
            uid: 1000,
            name: "dmix-play".into(),
            role: "play".into(),
            channels: 2,
            queued_ms: Some(0.0),
            latency_ms: Some(0.0),
            started: Some(true),
            underruns: 0,
            late_frames: 0,
            peak_dbfs: vec![Some(-6.0)],
            volume_db: Some(0.0),
            muted: Some(false),
        };
        Snapshot { server, clients: vec![client] }
    }

    #[test]
    fn stat_json_fields_text_names_exactly_the_serialized_keys() {
        let mut written = BTreeSet::new();
        keys(&serde_json::to_value(full_snapshot()).unwrap(), &mut written);
        let listed = Listed { name: "default".into(), socket: "/run/dmix/default.sock".into(), running: true };
        keys(&serde_json::to_value(vec![listed]).unwrap(), &mut written);
        let parts: Vec<&str> = super::JSON_FIELDS.split('`').collect();
        assert!(parts.len() % 2 == 1, "unpaired backtick in JSON_FIELDS");
        let documented: BTreeSet<String> = parts.iter().skip(1).step_by(2).map(|s| s.to_string()).collect();
        let undocumented: Vec<_> = written.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&written).collect();
        assert!(undocumented.is_empty(), "JSON keys missing from JSON FIELDS: {undocumented:?}");
        assert!(unknown.is_empty(), "JSON FIELDS names keys the serializer never writes: {unknown:?}");
    }
}
