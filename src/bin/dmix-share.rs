//! dmix-share: splits a dmix server's channels into named sub-devices.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use dmix::Result;
use dmix::protocol::SubDevice;
use dmix::share::{parse_spec, share};

/// Split a dmix server into named sub-devices over subsets of its channels, which every
/// dmix tool then uses with -D NAME. They live as long as this process.
#[derive(Parser, Debug)]
#[command(name = "dmix-share", version = dmix::cli::version())]
struct Args {
    /// Sub-devices: NAME=CH[,CH...] (a channel may be a range A-B), e.g. front=0,1 rear=2,3.
    #[arg(value_name = "NAME=CH,...", required_unless_present = "generate")]
    specs: Vec<String>,
    /// The server to split.
    #[arg(short = 'D', long, value_name = "NAME|PATH", env = "DMIX_DEVICE", default_value = dmix::paths::DEFAULT_NAME)]
    device: String,
    /// A channel belongs to one client at a time: a second client asking for a held channel
    /// is refused as busy. Exclusive sub-devices may not overlap.
    #[arg(long)]
    exclusive: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print a man page or a shell completion script (man, bash, zsh, fish) and exit.
    #[arg(long, hide = true, value_name = "WHAT")]
    generate: Option<String>,
}

const EXTRA: &[(&str, &str)] = &[
    (
        "SUB-DEVICES",
        "A stereo dmix-play into a sub-device rear=2,3 lands in the server's channels 2 and 3 only; its channel i goes to the i-th channel listed. Without --exclusive, clients on the same sub-device mix. The server creates the sub-devices' sockets beside its own and removes them when dmix-share exits or is killed; clients already playing through one carry on.",
    ),
    ("EXAMPLES", "dmix-serve -c 4 &\ndmix-share front=0,1 rear=2,3 &\ndmix-play -D rear ambience.flac"),
];

fn run(a: &Args) -> Result<()> {
    let subs: Vec<SubDevice> = a.specs.iter().map(|s| parse_spec(s)).collect::<Result<_>>()?;
    let stop = dmix::cli::stop_flag();
    let quiet = a.quiet;
    let shown = subs.clone();
    share(&a.device, a.exclusive, subs, &stop, |dir| {
        if !quiet {
            for s in &shown {
                let chans: Vec<String> = s.map.iter().map(u8::to_string).collect();
                dmix::say!(
                    "dmix-share: {} -> channels {} of {} ({})",
                    s.name,
                    chans.join(","),
                    a.device,
                    dir.join(format!("{}.sock", s.name)).display()
                );
            }
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(what) = &args.generate {
        return match dmix::cli::generate(Args::command(), what, EXTRA) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => dmix::cli::report("dmix-share", &e),
        };
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => dmix::cli::report("dmix-share", &e),
    }
}
