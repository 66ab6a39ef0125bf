//! dmix-tee: records what a dmix server plays (its final mix) to WAV, raw PCM or stdout, or
//! bridges it live into a FIFO (snapserver's pipe source).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use dmix::format::SampleFormat;
use dmix::tee::{BRIDGE_HIGH_MS, BRIDGE_TARGET_MS, TeeConfig, TeeEvent, TeeOutput, TeeSource, record};
use dmix::{Error, Result};

/// Record what a dmix server plays, after mixing and clamping, or the input it shares, to a
/// WAV or raw file or stdout, or bridge it live into a FIFO (snapserver's pipe source).
#[derive(Parser, Debug)]
#[command(name = "dmix-tee", version = dmix::cli::version())]
struct Args {
    /// Output: a file, an existing FIFO (a live bridge: see FIFO below), or "-" for stdout.
    #[arg(value_name = "OUT|FIFO|-", required_unless_present = "generate")]
    output: Option<String>,
    /// Server name or socket path.
    #[arg(short = 'D', long, value_name = "NAME|PATH", env = "DMIX_DEVICE", default_value = dmix::paths::DEFAULT_NAME)]
    device: String,
    /// Stop after SECONDS.
    #[arg(short = 'd', long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Sample format written: S16_LE, S32_LE or FLOAT_LE [default: the server's].
    #[arg(short = 'f', long, value_name = "FORMAT")]
    format: Option<String>,
    /// Output type: wav or raw, for every output (on stdout and into a FIFO the WAV header
    /// is one of unknown length, as arecord writes to a pipe).
    #[arg(short = 't', long = "file-type", value_name = "TYPE", default_value = "wav")]
    file_type: String,
    /// What to record: monitor (what the server plays, after mixing) or capture (the
    /// input the server shares, see dmix-serve --capture).
    #[arg(short = 's', long, value_name = "WHAT", default_value = "monitor")]
    source: String,
    /// Name shown by dmix-stat.
    #[arg(long, default_value = "dmix-tee")]
    name: String,
    /// No warnings about lost frames, and no news of a FIFO's reader.
    #[arg(short, long)]
    quiet: bool,
    /// Print a man page or a shell completion script (man, bash, zsh, fish) and exit.
    #[arg(long, hide = true, value_name = "WHAT")]
    generate: Option<String>,
}

fn config(a: &Args) -> Result<TeeConfig> {
    let raw = match a.file_type.as_str() {
        "wav" => false,
        "raw" => true,
        t => return Err(Error::invalid(format!("-t {t}"), "use wav or raw")),
    };
    let Some(out) = a.output.as_deref() else {
        return Err(Error::invalid("OUT", "name an output file, or - for stdout"));
    };
    let output = TeeOutput::from_arg(out);
    if matches!(output, TeeOutput::Stdout) && std::io::stdout().is_terminal() {
        return Err(Error::invalid("-", "stdout is a terminal; redirect it or name a file"));
    }
    if let Some(d) = a.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(Error::invalid(format!("-d {d}"), "not a positive number of seconds"));
    }
    let source = match a.source.as_str() {
        "monitor" => TeeSource::Monitor,
        "capture" => TeeSource::Capture,
        s => return Err(Error::invalid(format!("--source {s}"), "use monitor or capture")),
    };
    Ok(TeeConfig {
        source,
        device: a.device.clone(),
        name: a.name.clone(),
        output,
        raw,
        format: a.format.as_deref().map(str::parse::<SampleFormat>).transpose()?,
        duration_s: a.duration,
    })
}

const EXTRA: &[(&str, &str)] = &[
    (
        "RECORDING",
        "dmix-tee records from the frame at which the server admits it. With a freewheel server it is part of the render: the server waits for it, so the recording equals the server's own output bit for bit. With a real-time server a recorder that falls more than the monitor ring (at least half a second) behind loses frames: it says so on stderr and dmix-stat counts them as late. The file is finalized at the end of -d, on SIGINT or SIGTERM, and when the server goes away: a server that stops (SIGINT, SIGTERM) ends the recording with exit status 0; one that vanishes without stopping (killed) gives \"the server went away\" and exit status 10, the file still holding everything it played. When the disk fills up, what reached it stays a readable WAV.\n\nWith --source capture it records the input the server shares (dmix-serve --capture), from the frame at which it was admitted, and ends when that input ends (a file source ran out, or the device failed).",
    ),
    (
        "EXAMPLES",
        "dmix-tee -d 10 ten-seconds.wav\ndmix-tee --source capture -d 60 microphone.wav\ndmix-tee -t raw -f S16_LE - | sox -t raw -r 48000 -e signed -b 16 -c 2 - out.flac\ndmix-tee -t raw -f S16_LE /tmp/snapfifo    # snapserver: source = pipe:///tmp/snapfifo?name=dmix&sampleformat=48000:16:2",
    ),
];

/// The FIFO section, with the bridge's figures from their one definition.
fn fifo_section() -> String {
    format!(
        "An existing FIFO is no recording but a live bridge, made for the pipe source of Snapcast's snapserver (source = pipe:///PATH?name=dmix&sampleformat=RATE:BITS:CHANNELS, as the server's rate and channels and -f). dmix-tee opens it without waiting for a reader and outlives its readers. A reader that opens it gets {BRIDGE_TARGET_MS} ms of silence, then the mix from that moment on, kept that far ahead of it; when it closes it (snapserver stopped or restarted), dmix-tee waits for the next, which again gets only the live mix: nothing that played meanwhile, nothing the last one left unread. A reader that falls {BRIDGE_HIGH_MS} ms behind (stalled) is skipped forward to the live mix; one that keeps the margin for a second and then runs dry (its clock faster than the server's) is given silence, so that snapserver's timed reads stay whole. Each is said on stderr (not with -q). A bridge never waits for its reader: with a freewheel server too it skips what the reader cannot take; for an exact recording use a file. It ends on SIGINT or SIGTERM (exit status 0), after -d, or when the server goes away (10). With -t wav each reader's stream starts with a WAV header of unknown length; for snapserver use -t raw."
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(what) = &args.generate {
        let fifo = fifo_section();
        let mut extra = EXTRA.to_vec();
        extra.insert(1, ("FIFO", fifo.as_str()));
        return match dmix::cli::generate(Args::command(), what, &extra) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => dmix::cli::report("dmix-tee", &e),
        };
    }
    let stop = dmix::cli::stop_flag();
    let quiet = args.quiet;
    let out = args.output.clone().unwrap_or_default();
    let mut warn = |event: TeeEvent| {
        if quiet {
            return;
        }
        match event {
            TeeEvent::Lost(n) => dmix::say!("dmix-tee: fell behind the server: {n} frames lost"),
            TeeEvent::ReaderCame => dmix::say!("dmix-tee: {out}: a reader opened it; bridging the live mix"),
            TeeEvent::ReaderGone => dmix::say!("dmix-tee: {out}: the reader closed it; waiting for the next"),
            TeeEvent::Skipped(n) => {
                dmix::say!("dmix-tee: {out}: the reader fell behind: {n} frames skipped to stay live")
            }
            TeeEvent::Padded(n) => {
                dmix::say!("dmix-tee: {out}: the reader ran ahead of the server: {n} frames of silence added")
            }
        }
    };
    match config(&args).and_then(|cfg| record(&cfg, &stop, &mut warn)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => dmix::cli::report("dmix-tee", &e),
    }
}
