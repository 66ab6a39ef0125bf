//! dmix-play: decodes files (or stdin) and plays them into a dmix server.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use dmix::decode::RawSpec;
use dmix::format::SampleFormat;
use dmix::play::{Observer, PlayConfig, play};
use dmix::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Play audio files into a dmix server, one after another without gaps.
#[derive(Parser, Debug)]
#[command(name = "dmix-play", version = dmix::cli::version())]
struct Args {
    /// Files to play (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A, ...); "-" reads stdin.
    #[arg(required_unless_present = "generate", value_name = "FILE")]
    files: Vec<String>,
    /// Server name or socket path.
    #[arg(short = 'D', long, value_name = "NAME|PATH", env = "DMIX_DEVICE", default_value = dmix::paths::DEFAULT_NAME)]
    device: String,
    /// Input type: "raw" for headerless PCM (described by -f, -r, -c); by default the
    /// type is detected from the contents.
    #[arg(short = 't', long = "file-type", value_name = "TYPE")]
    file_type: Option<String>,
    /// Raw sample format: S16_LE, S32_LE or FLOAT_LE [default: S16_LE].
    #[arg(short = 'f', long, value_name = "FORMAT")]
    format: Option<String>,
    /// Raw sample rate in Hz [default: 48000].
    #[arg(short = 'r', long, value_name = "HZ")]
    rate: Option<u32>,
    /// Raw channel count [default: 2].
    #[arg(short = 'c', long, value_name = "N")]
    channels: Option<u16>,
    /// Start at this volume in dB, at most +12 (0 plays the samples unchanged); dmix-stat
    /// shows it and can change it while playing. Without it: what the server remembers for
    /// the --name (dmix-stat --volume NAME=DB), else 0 dB.
    #[arg(long, value_name = "DB", allow_negative_numbers = true, value_parser = parse_volume)]
    volume: Option<f32>,
    /// Name shown by dmix-stat [default: dmix-play].
    #[arg(long)]
    name: Option<String>,
    /// Stop at the first file that cannot be played instead of playing the rest.
    #[arg(long)]
    strict: bool,
    /// How far ahead of the server to write, in ms (rounded up to whole server periods, at
    /// most the server's buffer); an ALSA sink's device buffer (dmix-stat) comes on top.
    /// Higher wakes the player less often and rides out longer stalls; a stop (Ctrl-C) is
    /// silent at once whatever it is. At the end, dmix-play exits once its last frame was
    /// heard. [default: 200 ms; in freewheel, the whole buffer]
    #[arg(long, value_name = "MS", value_parser = parse_latency)]
    latency: Option<f64>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Print a man page or a shell completion script (man, bash, zsh, fish) and exit.
    #[arg(long, hide = true, value_name = "WHAT")]
    generate: Option<String>,
}

fn parse_volume(s: &str) -> std::result::Result<f32, String> {
    let db: f32 = s.parse().map_err(|_| "not a number of dB".to_string())?;
    dmix::protocol::check_volume(db)
}

fn parse_latency(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms > 0.0 && ms <= 60_000.0 => Ok(ms),
        Ok(_) => Err("must be more than 0 and at most 60000 ms".into()),
        Err(_) => Err("not a number of milliseconds".into()),
    }
}

fn config(a: &Args) -> Result<PlayConfig> {
    let raw = match a.file_type.as_deref() {
        Some("raw") => Some(RawSpec {
            format: a.format.as_deref().unwrap_or("S16_LE").parse::<SampleFormat>()?,
            rate_hz: a.rate.unwrap_or(48000),
            channels: a.channels.unwrap_or(2),
        }),
        Some(t) => {
            return Err(Error::invalid(format!("-t {t}"), "unknown file type (only \"raw\" is accepted)"));
        }
        None if a.format.is_some() || a.rate.is_some() || a.channels.is_some() => {
            return Err(Error::invalid("-f/-r/-c", "they describe headerless input: add -t raw"));
        }
        None => None,
    };
    if a.files.iter().filter(|f| *f == "-").count() > 1 {
        return Err(Error::invalid("-", "stdin can be read only once"));
    }
    Ok(PlayConfig {
        device: a.device.clone(),
        name: a.name.clone().unwrap_or_else(|| "dmix-play".into()),
        inputs: a.files.clone(),
        raw,
        volume_db: a.volume,
        strict: a.strict,
        latency_ms: a.latency,
    })
}

/// The progress bar: on a terminal only, never with -q.
struct Progress {
    bar: Option<ProgressBar>,
    rate_hz: u32,
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

impl Observer for Progress {
    fn file_started(&mut self, input: &str, description: &str, total: Option<u64>, rate_hz: u32) {
        self.rate_hz = rate_hz;
        if let Some(bar) = &self.bar {
            bar.set_length(total.unwrap_or(0));
            bar.set_position(0);
            bar.set_message(format!("{input} ({description})"));
            let style = if total.is_some() { "{msg}\n{wide_bar} {prefix}" } else { "{msg}\n{spinner} {prefix}" };
            if let Ok(s) = ProgressStyle::with_template(style) {
                bar.set_style(s);
            }
        }
    }

    fn progress(&mut self, frames: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(frames);
            let secs = |f: u64| f / u64::from(self.rate_hz.max(1));
            let total = bar.length().filter(|&l| l > 0).map(|l| format!(" / {}", clock(secs(l)))).unwrap_or_default();
            bar.set_prefix(format!("{}{}", clock(secs(frames)), total));
        }
    }

    fn file_failed(&mut self, _input: &str, e: &Error) {
        self.say(format!("dmix-play: {e}"));
    }

    fn latency_limited(&mut self, asked_ms: f64, got_ms: f64) {
        self.say(format!(
            "dmix-play: --latency {asked_ms} ms is more than the server's buffer holds: using {got_ms:.1} ms"
        ));
    }
}

impl Progress {
    /// One line on stderr, above the progress bar if there is one.
    fn say(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => dmix::say!("{line}"),
        }
    }
}

const EXTRA: &[(&str, &str)] = &[
    (
        "ENVIRONMENT",
        "DMIX_DEVICE: the server to play into, as for -D.\nXDG_RUNTIME_DIR: where server sockets live (dmix/NAME.sock).",
    ),
    (
        "STOPPING",
        "SIGINT, SIGTERM and SIGHUP (which the terminal's going away sends) stop dmix-play: what it queued but the server had not yet played is retracted, so it is silent at once, and it exits with 130 (128 + SIGINT, as a shell reports an interrupted job): the input was not played to its end. Started with SIGHUP ignored (nohup dmix-play ... &), it keeps playing when the terminal goes away.",
    ),
    (
        "EXAMPLES",
        "dmix-play song.flac other.mp3\ndmix-play -t raw -f S16_LE -r 44100 -c 2 - < pcm.raw\ndmix-play -D render --volume -6 voice.wav",
    ),
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(what) = &args.generate {
        return match dmix::cli::generate(Args::command(), what, EXTRA) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => dmix::cli::report("dmix-play", &e),
        };
    }
    let stop = dmix::cli::stop_flag();
    let show = !args.quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let mut progress = Progress { bar: show.then(ProgressBar::no_length), rate_hz: 48000 };
    if let Some(bar) = &progress.bar {
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let result = config(&args).and_then(|cfg| play(&cfg, &stop, &mut progress));
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(s) if s.stopped || stop.load(Ordering::Relaxed) => ExitCode::from(130),
        Ok(s) => match s.failed.first() {
            Some(e) => {
                let inputs = args.files.len();
                if inputs > 1 {
                    let skipped = if args.strict { inputs.saturating_sub(s.played + s.failed.len()) } else { 0 };
                    let rest = if skipped > 0 { format!("; --strict: {skipped} not tried") } else { String::new() };
                    dmix::say!("dmix-play: {} of {inputs} inputs could not be played{rest}", s.failed.len());
                }
                ExitCode::from(dmix::error::exit_code(e.kind()))
            }
            None => ExitCode::SUCCESS,
        },
        Err(e) => dmix::cli::report("dmix-play", &e),
    }
}
