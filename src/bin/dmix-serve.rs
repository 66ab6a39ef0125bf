//! dmix-serve: owns the sink, the ring and the socket; runs the period loop.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use dmix::capture::SourceSpec;
use dmix::format::SampleFormat;
use dmix::ring::RingParams;
use dmix::server::{self, OnSinkLoss, ServerConfig};
use dmix::sink::SinkSpec;
use dmix::{Error, Result};

/// Serve a sound device (or a WAV file, or nothing) to any number of dmix clients, which
/// mix by adding their samples straight into one shared ring.
#[derive(Parser, Debug)]
#[command(name = "dmix-serve", version = dmix::cli::version())]
struct Args {
    /// Where the mix goes: alsa:PCM (an ALSA device), wav:PATH (a WAV file), or null. Give it
    /// more than once for a preference list of devices (up to 8): the first that opens plays;
    /// when it is lost the next that opens takes over, and when a preferred one comes back
    /// the server moves back to it.
    #[arg(long, value_name = "SPEC", default_value = "alsa:default", action = clap::ArgAction::Append)]
    sink: Vec<String>,
    /// When the sink's device goes away (unplugged, lost on resume): wait (keep the clients,
    /// run on by the clock, reopen it or a fallback) or exit (code 9, clients told). Given
    /// explicitly, wait also starts the server when no sink opens yet [default: wait, but a
    /// sink that cannot be opened at the start is an error].
    #[arg(long, value_name = "WHAT", value_parser = ["wait", "exit"])]
    on_sink_loss: Option<String>,
    /// Sample rate in Hz.
    #[arg(short = 'r', long, default_value_t = 48000)]
    rate: u32,
    /// Channels.
    #[arg(short = 'c', long, default_value_t = 2)]
    channels: u32,
    /// Device sample format: S16_LE, S32_LE or FLOAT_LE.
    #[arg(short = 'f', long, default_value = "S16_LE")]
    format: String,
    /// Frames per period: the unit the server takes out of the ring and plays.
    #[arg(long, value_name = "FRAMES", default_value_t = 256)]
    period: u32,
    /// Frames in the mix ring: how far ahead of the server clients may write at most. A deep
    /// ring adds no latency: each client picks its own within it (dmix-play --latency), and
    /// the server takes each period only when the device has room for it. Rounded up to
    /// whole periods, with a note [default: 1 s in whole periods, at least 4 periods].
    #[arg(long, value_name = "FRAMES")]
    buffer: Option<u32>,
    /// Frames of buffer to ask of an ALSA sink (the device may round it): the latency the
    /// device adds after the mix, and how late the period thread may run before the device
    /// underruns. At least 2 periods [default: 4 periods].
    #[arg(long, value_name = "FRAMES")]
    device_buffer: Option<u32>,
    /// Server name: clients find it with -D NAME.
    #[arg(short = 'n', long, default_value = dmix::paths::DEFAULT_NAME)]
    name: String,
    /// Listen on this socket path instead of the runtime directory.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Do not run in real time: advance as soon as every playing client has supplied the
    /// period (exact offline renders).
    #[arg(long)]
    freewheel: bool,
    /// Hold the first period until N players have written their first frame (a client that
    /// only opens the server, as a device probe does, is no player).
    #[arg(long, value_name = "N", default_value_t = 0)]
    wait_clients: u32,
    /// Exit (finalizing the sink) once a player has written a frame and every player has
    /// left (one that never wrote still holds the server while it is connected).
    #[arg(long)]
    exit_when_idle: bool,
    /// Share an input among any number of readers (dmix-tee --source capture): alsa:PCM
    /// (an ALSA capture device) or wav:PATH (a file, read once at the server's pace).
    #[arg(long, value_name = "SPEC")]
    capture: Option<String>,
    /// Hold the capture until N readers are connected (with --freewheel, at least one).
    #[arg(long, value_name = "N", default_value_t = 0)]
    wait_readers: u32,
    /// Also admit users in GROUP (a name or gid): the socket becomes mode 0660 in that group.
    /// Use --socket in a directory the group can reach; the default runtime directory is
    /// private to you.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Real-time priority (SCHED_FIFO, 1-99) of the period thread when paced; 0: ordinary
    /// scheduling. Needs root, CAP_SYS_NICE or an rtprio limit (limits.conf: @audio - rtprio
    /// 95); without, the server says so once and runs at ordinary priority.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = clap::value_parser!(u32).range(0..=99))]
    rt_priority: u32,
    /// Give clients the volumes remembered for their names (dmix-stat --volume NAME=DB),
    /// and the master its remembered volume. The default when paced; a --freewheel server
    /// restores nothing without it, so that scripted renders stay exact.
    #[arg(long, conflicts_with = "no_restore")]
    restore: bool,
    /// Restore no remembered volume (they are still kept, and changes by name remembered).
    #[arg(long)]
    no_restore: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print a man page or a shell completion script (man, bash, zsh, fish) and exit.
    #[arg(long, hide = true, value_name = "WHAT")]
    generate: Option<String>,
}

/// The checked configuration, and notes on what was adjusted (printed unless -q).
fn config(a: &Args) -> Result<(ServerConfig, Vec<String>)> {
    let mut notes = Vec::new();
    let format: SampleFormat = a.format.parse()?;
    let sinks = a.sink.iter().map(|s| s.parse::<SinkSpec>()).collect::<Result<Vec<_>>>()?;
    if sinks.len() > dmix::ring::layout::MAX_SINKS {
        return Err(Error::invalid("--sink", format!("at most {} sinks", dmix::ring::layout::MAX_SINKS)));
    }
    if sinks.len() > 1
        && let Some(wav) = sinks.iter().find(|s| matches!(s, SinkSpec::Wav(_)))
    {
        return Err(Error::invalid(
            format!("--sink {wav}"),
            "a WAV file can only be the one sink: reopening it after a fallback would overwrite it",
        ));
    }
    let on_sink_loss = match a.on_sink_loss.as_deref() {
        Some("exit") => OnSinkLoss::Exit,
        _ => OnSinkLoss::Wait,
    };
    let capture: Option<SourceSpec> = a.capture.as_deref().map(str::parse).transpose()?;
    if a.wait_readers > 0 && capture.is_none() {
        return Err(Error::invalid("--wait-readers", "needs --capture"));
    }
    let whole_periods = |frames: u32| frames.div_ceil(a.period.max(1)).saturating_mul(a.period);
    let buffer = match a.buffer {
        // As ALSA rounds a buffer size to what the device can do: up, to whole periods.
        Some(b) if a.period > 0 && !b.is_multiple_of(a.period) => {
            let rounded = whole_periods(b);
            notes.push(format!(
                "--buffer {b} is not a whole number of {}-frame periods: using {rounded} frames",
                a.period
            ));
            rounded
        }
        Some(b) => b,
        None => {
            let four = a.period.checked_mul(4).ok_or_else(|| Error::invalid("--period", "too large"))?;
            // One second: room for a music player's latency (dmix-play's default is 200 ms)
            // beside a synth's few periods. Only what clients queue is touched, so a deep
            // ring costs memory (8 bytes a sample), not time.
            four.max(whole_periods(a.rate))
        }
    };
    let device_buffer = match a.device_buffer {
        Some(d) if d / 2 < a.period => {
            return Err(Error::invalid(
                format!("--device-buffer {d}"),
                format!("at least two periods ({} frames)", u64::from(a.period) * 2),
            ));
        }
        Some(d) => d,
        None => a.period.saturating_mul(4),
    };
    // The monitor keeps at least half a second so a recorder can be scheduled late.
    let monitor = whole_periods((a.rate / 2).max(buffer));
    let params = RingParams {
        rate_hz: a.rate,
        channels: a.channels,
        format,
        period_frames: a.period,
        ring_frames: buffer,
        monitor_frames: monitor,
        // The capture ring keeps as much as the monitor: a reader may be scheduled as late.
        capture_frames: if capture.is_some() { monitor } else { 0 },
        freewheel: a.freewheel,
    };
    params.validate()?;
    let socket = match &a.socket {
        Some(p) => p.clone(),
        None => dmix::paths::socket_for_name(&a.name)?,
    };
    let cfg = ServerConfig {
        socket,
        sinks,
        on_sink_loss,
        wait_for_sink: a.on_sink_loss.as_deref() == Some("wait"),
        params,
        device_buffer_frames: device_buffer,
        wait_clients: a.wait_clients,
        exit_when_idle: a.exit_when_idle,
        capture,
        wait_readers: a.wait_readers,
        group: a.group.as_deref().map(parse_group).transpose()?,
        rt_priority: (a.rt_priority > 0).then_some(a.rt_priority),
        // Kept under the server's name; a server on a --socket path by the socket's name.
        volumes: dmix::paths::volumes_file(match &a.socket {
            Some(p) => p.file_stem().and_then(|s| s.to_str()).unwrap_or(&a.name),
            None => &a.name,
        }),
        restore: if a.freewheel { a.restore } else { !a.no_restore },
    };
    Ok((cfg, notes))
}

fn parse_group(g: &str) -> Result<u32> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(Error::invalid(format!("--group {g}"), "no such group")),
        Err(e) => Err(Error::sys(format!("look up group {g}"), e)),
    }
}

const EXTRA: &[(&str, &str)] = &[
    (
        "SINKS",
        "alsa:PCM plays to an ALSA PCM through alsa-lib (alsa:default unless told otherwise); the device's clock paces the server, underruns are recovered and counted.\n\nwav:PATH writes a WAV file in the server's format; null discards. Both run at the real rate by the monotonic clock, or as fast as the clients supply audio with --freewheel. A WAV file is finalized on exit, on SIGINT and on SIGTERM.\n\nWhen the device goes away (a USB headset unplugged, an HDMI sink gone, a device lost on resume: a write error that xrun and suspend recovery cannot handle), the server keeps its socket, ring and clients: it says so in one line, runs on by the monotonic clock and drops the mix (clients keep their timing and hear nothing), and reopens the device, first after 0.1 s, then with a doubling wait of at most 2 s. When it opens again with the same rate, channels and format, sound resumes and one line says so; a device that is back but refuses them is named once with the reason. dmix-stat shows the sink as lost, and for how long. --on-sink-loss exit stops the server instead (exit 9, the clients are told). A WAV file that cannot be written stops the server: it is never reopened, which would overwrite it.\n\n--sink given more than once (up to 8) is a list in order of preference, as PulseAudio moves streams when a USB card goes: the first that opens plays; when it is lost, the next one that opens takes over within one retry; while a fallback plays, the preferred ones are tried every 2 s, and the first of them that opens replaces it (the fallback's device buffer is dropped). Clients notice nothing but the gap. A WAV file can only be the one sink.\n\ndmix-stat --sink SPEC moves a running server to another sink: the sink is opened off the real-time thread; if it will not open, nothing changes (the old sink plays on, dmix-stat prints why and exits 9). If it opens, the server moves to it at a period boundary: the old device plays out what it holds and is closed, the new one starts after its buffer of silence, and clients notice nothing but that gap. The new sink becomes the first preference, followed by the old list without it (at most 8: a full list loses its last). A WAV file is still only ever the one sink: a switch to one makes it the whole list, a switch away from one drops it from the list, and a WAV file switched away from is finalized before dmix-stat returns; a WAV path must be absolute (dmix-stat makes a relative one absolute). Switching to the sink in use changes nothing; one switch at a time. A switch works the same in --freewheel: the render moves to the new sink from the next period, and no frame is lost or doubled between the two.\n\nA sink that cannot be opened at the start is one line and exit 9 (a mistyped PCM name must not leave a server playing to nothing), with a list when none of them opens; with --on-sink-loss wait given explicitly the server starts anyway, says so, and plays as soon as one opens.",
    ),
    (
        "PLAYERS",
        "A client that connects to play counts as a player (for --wait-clients, --exit-when-idle and the freewheel barrier) from its first written frame. A program that opens the device and closes it without writing (PortAudio and the programs built on it, such as PyAudio, open every ALSA device to list them) is no player: it does not release a held server, does not hold a freewheel render, and its leaving does not end an idle server. While it stays connected without writing it holds its slot, dmix-stat lists it as opened, and an --exit-when-idle server waits for it to leave.",
    ),
    (
        "CAPTURE",
        "--capture shares one input among any number of readers, as ALSA's dsnoop does: dmix-tee --source capture records it. alsa:PCM captures from an ALSA device in the server's rate, channels and format, paced by the device; overruns are recovered and counted (dmix-stat). wav:PATH reads a file (any format dmix-play decodes, converted to the server's rate and channels) once, at the real rate, or with --freewheel as fast as every reader takes it, so each reader gets every frame. When the input ends, readers finish what was captured and exit.",
    ),
    (
        "SOCKET ACTIVATION",
        "Started by systemd with a listening socket (ListenSequentialPacket=, as in the dmix-serve.socket unit of the sources; or systemd-socket-activate --seqpacket), dmix-serve serves on that socket instead of binding one; --name, --socket and --group do not apply to it (the unit sets path, mode and group). With NOTIFY_SOCKET set (Type=notify) it reports READY=1 once it serves, and STOPPING=1. scripts/install-units installs the user units: systemctl --user enable --now dmix-serve.socket starts the server on the first client.",
    ),
    (
        "ALSA PROGRAMS",
        "Programs that use ALSA play through the dmixrs PCM plugin (libasound_module_pcm_dmixrs.so, built from alsa-plugin/ in the sources; the README shows where it goes and the ~/.asoundrc lines): pcm.dmixrs { type dmixrs } with the keys server NAME|PATH, name NAME, volume DB (a playback PCM starts at it, at most +12; dmix-stat --volume and --mute change it, heard within two periods whatever the application's buffer) and, for capture, source monitor|capture. It takes S16_LE, S32_LE and FLOAT_LE at the server's rate and channel count (type plug over it converts the rest). The application's buffer is its latency in the ring; snd_pcm_delay adds the device buffer (--device-buffer), so it says when a frame written now is heard, and drain returns once the last frame was heard. snd_pcm_drop and pause take back what was queued. Opened for capture it records the monitor, or the shared input with source capture.\n\nWith --freewheel the server takes a period as soon as every client has written it, so the device is never full: a program that writes as fast as it can (aplay, arecord, speaker-test, sox) renders exactly, but one whose audio thread writes silence whenever its data is not ready (GStreamer's alsasink, measured: 20 buffers of 1024 frames gave 129 s of render, or with sync=false the tone cut by 20161 frames of silence) does not. Render those on a paced server.",
    ),
    (
        "FILES",
        "$XDG_RUNTIME_DIR/dmix/NAME.sock, or /tmp/dmix-$UID/NAME.sock when XDG_RUNTIME_DIR is unset: the socket (mode 0600, in a directory of mode 0700). A socket left by a dead server is replaced; a live one is refused. Nothing else is left behind: the shared memory is sealed memfds that vanish with the last process holding them.\n\nSIGINT, SIGTERM and SIGHUP stop the server (finalizing a WAV sink); started with SIGHUP ignored (nohup dmix-serve &), it outlives the terminal it was started from.",
    ),
    (
        "EXAMPLES",
        "dmix-serve &\ndmix-serve --name render --sink wav:mix.wav --freewheel --wait-clients 2 --exit-when-idle\ndmix-serve --capture alsa:hw:1 & dmix-tee --source capture -d 60 take.wav",
    ),
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(what) = &args.generate {
        return match dmix::cli::generate(Args::command(), what, EXTRA) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => dmix::cli::report("dmix-serve", &e),
        };
    }
    let stop = dmix::cli::stop_flag();
    let result = config(&args).and_then(|(cfg, notes)| {
        if !args.quiet {
            notes.iter().for_each(|n| dmix::say!("dmix-serve: {n}"));
        }
        let p = cfg.params;
        server::run(&cfg, stop, |ready| {
            if let Err(why) = &ready.realtime {
                // A warning, not an error: -q does not hide it (it explains dropouts).
                dmix::say!(
                    "dmix-serve: no real-time scheduling ({why}): periods may be late under load; allow it \
                     (an rtprio limit, CAP_SYS_NICE) or pass --rt-priority 0"
                );
            }
            if let Err(why) = &ready.locked {
                dmix::say!(
                    "dmix-serve: the ring is not locked in memory ({why}): a page out to swap would \
                     make a period late; raise the memlock limit (ulimit -l)"
                );
            }
            if !args.quiet {
                dmix::say!(
                    "dmix-serve: serving on {}{}: {}, {} Hz, {} ch, {}, period {} frames ({:.1} ms), buffer {} frames ({:.1} ms){}, {}{}",
                    ready.listener.path().display(),
                    if ready.activated { " (socket activation)" } else { "" },
                    match ready.sink {
                        Some(i) => cfg.sinks[i].to_string(),
                        None => "no sink open yet".to_string(),
                    },
                    p.rate_hz,
                    p.channels,
                    p.format,
                    p.period_frames,
                    p.frames_to_ms(u64::from(p.period_frames)),
                    p.ring_frames,
                    p.frames_to_ms(u64::from(p.ring_frames)),
                    match ready.device_buffer_frames {
                        0 => String::new(),
                        d => format!(", device buffer {d} frames ({:.1} ms)", p.frames_to_ms(u64::from(d))),
                    },
                    match ready.realtime {
                        _ if p.freewheel => "freewheel".to_string(),
                        Ok(Some(prio)) => format!("real time (SCHED_FIFO {prio})"),
                        _ => "real time".to_string(),
                    },
                    cfg.capture.as_ref().map_or(String::new(), |c| format!(", capture {c}")),
                );
            }
        })
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => dmix::cli::report("dmix-serve", &e),
    }
}
