//! What every binary shares: the version line, turning an error into one line and an exit
//! code, and the signal flags. Binaries stay thin: parse, build a checked config, call the
//! library, map the result.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::error::{Error, exit_code};

/// `--version` text: the crate, protocol and layout versions, from their one definition.
pub fn version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        format!(
            "{} (protocol {}, ring layout {})",
            env!("CARGO_PKG_VERSION"),
            crate::protocol::PROTOCOL_VERSION,
            crate::ring::layout::RING_LAYOUT_VERSION
        )
    })
}

/// Prints `tool: error` on one line and returns the documented exit code. A broken pipe
/// on stdout is success: the reader went away, which is how pipelines end (`dmix-stat |
/// head`). Only on stdout ([`Error::is_broken_pipe`]): a socket's EPIPE is the server
/// hanging up, and reported.
pub fn report(tool: &str, e: &Error) -> ExitCode {
    if e.is_broken_pipe() {
        return ExitCode::SUCCESS;
    }
    crate::say!("{tool}: {e}");
    ExitCode::from(exit_code(e.kind()))
}

/// The process's stop flag, raised by SIGINT, SIGTERM or SIGHUP, for loops that check it.
/// The same flag every time: signals are process-wide. A SIGHUP that was ignored when we
/// started stays ignored: `nohup dmix-serve &` must outlive its terminal.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    Arc::clone(FLAG.get_or_init(register_stop))
}

fn register_stop() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let hup = Some(signal_hook::consts::SIGHUP).filter(|&s| !crate::sys::signal_ignored(s));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM].into_iter().chain(hup) {
        // Registration fails only for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
    }
    // A file-size limit (ulimit -f) must make a write fail with EFBIG, which is reported
    // and leaves a finalized WAV, rather than kill the process: catch SIGXFSZ and do nothing.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false)));
    flag
}

/// The EXIT STATUS text every man page carries, built from [`exit_code`] so it cannot drift.
pub fn exit_status_text() -> String {
    use crate::error::ErrorKind::*;
    let mut rows =
        vec![(0, "success (also when stdout was closed by its reader)".to_string()), (2, "usage error".into())];
    for (kind, what) in [
        (Io, "an operating-system error"),
        (InvalidInput, "invalid input: a file, flag or message that cannot be used"),
        (NotRunning, "no server at the socket"),
        (
            Busy,
            "a server already runs under that name, a resource is held, or too many connections were waiting to say hello to the server",
        ),
        (Full, "the server has no free client slot"),
        (Permission, "refused by the server or the file system"),
        (Incompatible, "protocol or ring layout version mismatch"),
        (Device, "the sound device or the output file failed"),
        (ServerGone, "the server went away"),
    ] {
        rows.push((i32::from(exit_code(kind)), what.to_string()));
    }
    rows.sort_by_key(|r| r.0);
    rows.iter().map(|(c, w)| format!("{c}\t{w}")).collect::<Vec<_>>().join("\n")
}

/// What `--generate` can print.
pub const GENERATE_KINDS: [&str; 4] = ["man", "bash", "zsh", "fish"];

/// Prints a man page (with `extra` sections after OPTIONS, then EXIT STATUS) or a shell
/// completion script for `cmd` to stdout: the one source of the files in man/ and
/// completions/, which `scripts/generate` refreshes and a test checks.
pub fn generate(mut cmd: clap::Command, what: &str, extra: &[(&str, &str)]) -> crate::Result<()> {
    use std::io::Write;
    let mut out = Vec::new();
    let name = cmd.get_name().to_string();
    let io = |e: std::io::Error| Error::sys("generate", e);
    match what {
        "man" => {
            let man = clap_mangen::Man::new(cmd.clone());
            man.render_title(&mut out).map_err(io)?;
            man.render_name_section(&mut out).map_err(io)?;
            man.render_synopsis_section(&mut out).map_err(io)?;
            man.render_description_section(&mut out).map_err(io)?;
            man.render_options_section(&mut out).map_err(io)?;
            let mut sections: Vec<(&str, String)> = extra.iter().map(|(t, b)| (*t, b.to_string())).collect();
            sections.push(("EXIT STATUS", exit_status_text()));
            for (title, body) in sections {
                out.extend_from_slice(format!(".SH \"{title}\"\n").as_bytes());
                for para in body.split("\n\n") {
                    out.extend_from_slice(b".PP\n");
                    for (i, line) in para.lines().enumerate() {
                        // A line starting with '.' or '\'' would be a roff request.
                        let line = line.replace('\\', "\\e");
                        let line = if line.starts_with(['.', '\'']) { format!("\\&{line}") } else { line };
                        // Each source line is its own output line (examples, tables).
                        if i > 0 {
                            out.extend_from_slice(b".br\n");
                        }
                        out.extend_from_slice(line.as_bytes());
                        out.push(b'\n');
                    }
                }
            }
            man.render_version_section(&mut out).map_err(io)?;
        }
        shell => {
            let shell = match shell {
                "bash" => clap_complete::Shell::Bash,
                "zsh" => clap_complete::Shell::Zsh,
                "fish" => clap_complete::Shell::Fish,
                other => {
                    return Err(Error::invalid(
                        format!("--generate {other}"),
                        format!("use one of {}", GENERATE_KINDS.join(", ")),
                    ));
                }
            };
            clap_complete::generate(shell, &mut cmd, name, &mut out);
        }
    }
    std::io::stdout().write_all(&out).map_err(Error::stdout)
}
