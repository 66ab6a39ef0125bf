//! dmix-stat: inspects a running dmix server: format, pointers, clients, levels, xruns.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use dmix::client::Connection;
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
    /// Redraw live with level meters; q, Esc or Ctrl-C quits.
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

mod watch {
    //! The live view: alternate screen, raw mode for single keys, restored on every exit
    //! path (a guard's Drop), including errors.
    use std::io::Write;
    use std::time::Duration;

    use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
    use crossterm::{cursor, execute, queue, terminal};

    use super::*;

    struct Screen;

    impl Screen {
        fn enter() -> Result<Screen> {
            terminal::enable_raw_mode().map_err(|e| Error::sys("terminal raw mode", e))?;
            let guard = Screen;
            execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
                .map_err(|e| Error::sys("terminal", e))?;
            Ok(guard)
        }
    }

    impl Drop for Screen {
        fn drop(&mut self) {
            // Best effort: the terminal must come back even when drawing failed.
            let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
            let _ = terminal::disable_raw_mode();
        }
    }

    fn meter(db: Option<f64>, width: usize) -> String {
        let level = db.map_or(0.0, |d| ((d + 60.0) / 60.0).clamp(0.0, 1.0));
        let n = (level * width as f64).round() as usize;
        format!("{}{}", "#".repeat(n), ".".repeat(width - n))
    }

    fn draw(s: &Snapshot) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let text = render_text(s);
        queue!(out, cursor::MoveTo(0, 0), terminal::Clear(terminal::ClearType::All))
            .map_err(|e| Error::sys("terminal", e))?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.push(String::new());
        for c in s.clients.iter().filter(|c| !c.peak_dbfs.is_empty()) {
            for (ch, p) in c.peak_dbfs.iter().enumerate() {
                let db = p.map_or("-inf".to_string(), |d| format!("{d:5.1}"));
                lines.push(format!("{:>4} ch{:<2} {} {:>6} dBFS  {}", c.id, ch, meter(*p, 40), db, c.name));
            }
        }
        lines.push(String::new());
        lines.push("q: quit".into());
        for l in lines {
            write!(out, "{l}\r\n").map_err(|e| Error::sys("write stdout", e))?;
        }
        out.flush().map_err(|e| Error::sys("write stdout", e))
    }

    pub fn run(conn: &Connection, socket: &std::path::Path, interval: Duration) -> Result<()> {
        let stop = dmix::cli::stop_flag();
        let screen = Screen::enter()?;
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if let Err(e) = conn.check_alive() {
                drop(screen);
                return Err(e);
            }
            draw(&snapshot(conn, socket)?)?;
            if crossterm::event::poll(interval).map_err(|e| Error::sys("terminal", e))? {
                match crossterm::event::read().map_err(|e| Error::sys("terminal", e))? {
                    Event::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => break,
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break,
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        drop(screen);
        Ok(())
    }
}

const EXTRA: &[(&str, &str)] = &[
    (
        "JSON FIELDS",
        "--json prints one object (with --watch, one per line): server, with name, socket, pid, sink, rate_hz, channels, format, period_frames, period_ms, buffer_frames, buffer_ms (the mix ring), device_buffer_frames (an ALSA sink's buffer: the latency the device adds after hw_ptr; null for wav and null sinks), hw_ptr, uptime_s, mode (\"freewheel\" or \"real time\"), xruns, periods, late_periods, max_period_work_us, capture (null, or an object with source, state (\"waiting\", \"running\" or \"ended\"), cap_ptr, ring_frames, overruns); and clients, a list of objects with id, slot, pid, uid, name, role (play, tee, share, stat or capture), channels (the channels it plays or reads: a sub-device's width, else the server's), queued_ms (players: ms queued ahead of hw_ptr; capture readers: ms behind the capture pointer; null otherwise), latency_ms (players: how far ahead of hw_ptr they write at most, their --latency; null otherwise), underruns, late_frames, peak_dbfs (one per channel; null for silence).\n\npid and uid come from the kernel (SO_PEERCRED); name, queued_ms, latency_ms, underruns, late_frames and peak_dbfs are the client's own report. With --list --json: a list of objects with name, socket, running. These names are stable.",
    ),
    ("EXAMPLES", "dmix-stat --wait 5 && dmix-play song.flac\ndmix-stat --watch\ndmix-stat --json | jq .clients"),
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(what) = &args.generate {
        return match dmix::cli::generate(Args::command(), what, EXTRA) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => dmix::cli::report("dmix-stat", &e),
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => dmix::cli::report("dmix-stat", &e),
    }
}
