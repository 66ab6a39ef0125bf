//! dmix-tee: records what a dmix server plays (its final mix) to WAV or stdout.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dmix::format::SampleFormat;
use dmix::tee::{TeeConfig, TeeOutput, record};
use dmix::{Error, Result};

/// Record what a dmix server plays, after mixing and clamping, to a WAV file or stdout.
#[derive(Parser, Debug)]
#[command(name = "dmix-tee", version = dmix::cli::version())]
struct Args {
    /// Output: a WAV file, or "-" for stdout.
    #[arg(value_name = "OUT.wav|-")]
    output: String,
    /// Server name or socket path.
    #[arg(short = 'D', long, value_name = "NAME|PATH", env = "DMIX_DEVICE", default_value = dmix::paths::DEFAULT_NAME)]
    device: String,
    /// Stop after SECONDS.
    #[arg(short = 'd', long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Sample format written: S16_LE, S32_LE or FLOAT_LE [default: the server's].
    #[arg(short = 'f', long, value_name = "FORMAT")]
    format: Option<String>,
    /// Output type on stdout: wav (a header of unknown length, as arecord writes) or raw.
    #[arg(
        short = 't',
        long = "file-type",
        value_name = "TYPE",
        default_value = "wav"
    )]
    file_type: String,
    /// Name shown by dmix-stat.
    #[arg(long, default_value = "dmix-tee")]
    name: String,
    /// No warnings about lost frames.
    #[arg(short, long)]
    quiet: bool,
}

fn config(a: &Args) -> Result<TeeConfig> {
    let raw = match a.file_type.as_str() {
        "wav" => false,
        "raw" => true,
        t => return Err(Error::invalid(format!("-t {t}"), "use wav or raw")),
    };
    let output = if a.output == "-" {
        if std::io::stdout().is_terminal() {
            return Err(Error::invalid(
                "-",
                "stdout is a terminal; redirect it or name a file",
            ));
        }
        TeeOutput::Stdout
    } else {
        if raw {
            return Err(Error::invalid(
                "-t raw",
                "raw output goes to stdout only (use -)",
            ));
        }
        TeeOutput::File(PathBuf::from(&a.output))
    };
    if let Some(d) = a.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(Error::invalid(
            format!("-d {d}"),
            "not a positive number of seconds",
        ));
    }
    Ok(TeeConfig {
        device: a.device.clone(),
        name: a.name.clone(),
        output,
        raw,
        format: a
            .format
            .as_deref()
            .map(str::parse::<SampleFormat>)
            .transpose()?,
        duration_s: a.duration,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = dmix::cli::stop_flag();
    let quiet = args.quiet;
    let mut warn = |lost: u64| {
        if !quiet {
            eprintln!("dmix-tee: fell behind the server: {lost} frames lost");
        }
    };
    match config(&args).and_then(|cfg| record(&cfg, &stop, &mut warn)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => dmix::cli::report("dmix-tee", &e),
    }
}
