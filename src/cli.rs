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
/// is success: the reader went away, which is how pipelines end (`dmix-stat | head`).
pub fn report(tool: &str, e: &Error) -> ExitCode {
    if e.is_broken_pipe() {
        return ExitCode::SUCCESS;
    }
    eprintln!("{tool}: {e}");
    ExitCode::from(exit_code(e.kind()))
}

/// The process's stop flag, raised by SIGINT, SIGTERM or SIGHUP, for loops that check it.
/// The same flag every time: signals are process-wide.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    Arc::clone(FLAG.get_or_init(register_stop))
}

fn register_stop() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Registration fails only for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
    }
    flag
}
