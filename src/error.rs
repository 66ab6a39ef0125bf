//! The crate's one error type. Every variant carries the object it is about (a path, a
//! socket, a call) so that a binary can print one line that names what failed and why.
//! Binaries and tests branch on [`ErrorKind`], never on message text.

use std::io;
use std::path::PathBuf;

/// Writes one line to stderr like `eprintln!`, but never panics: `eprintln!` panics when
/// stderr cannot be written (a terminal that went away, a closed pipe), which would turn a
/// log line into a crash (exit 101), or kill a server's thread. A line that cannot be
/// written is lost; there is nowhere else to say it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::error::say_line(::std::format_args!($($arg)*))
    };
}

/// The body of [`say!`].
pub fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// What went wrong, in the few classes a caller can act on. Binaries map these to exit
/// codes (see `exit_code`), tests assert on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No server answers on the socket. Retrying helps once one is started.
    NotRunning,
    /// A server already runs under that name, or an exclusive resource is held.
    Busy,
    /// The server has no free client slot. Retrying helps when a client leaves.
    Full,
    /// The peer or the file system refused us (credentials, modes).
    Permission,
    /// The two sides speak different protocol or layout versions. Retrying never helps.
    Incompatible,
    /// A file, flag or message is malformed or unsupported. Retrying never helps.
    InvalidInput,
    /// The sound device (or the sink file) failed.
    Device,
    /// The server went away while we were attached to it.
    ServerGone,
    /// Any other operating-system error.
    Io,
}

/// The crate's error: what failed, on what, and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server listens on `socket`.
    #[error("no server at {socket}: start one with `dmix-serve` (or pick another with -D)")]
    NotRunning {
        /// The socket we tried.
        socket: PathBuf,
    },
    /// Another live server owns `socket`.
    #[error("{socket}: a server is already running under this name (stop it, or pick another --name)")]
    AlreadyRunning {
        /// The socket of the running server.
        socket: PathBuf,
    },
    /// The server refused us for a reason it named.
    #[error("server refused the connection: {reason}")]
    Refused {
        /// The class of the refusal.
        kind: ErrorKind,
        /// The server's words.
        reason: String,
    },
    /// The server refused a request made on an open connection (a mixer request: a volume, a
    /// sink switch), for a reason it named; its words say what was asked.
    #[error("{reason}")]
    RequestRefused {
        /// The class of the refusal.
        kind: ErrorKind,
        /// The server's words.
        reason: String,
    },
    /// Protocol or layout versions differ.
    #[error("{what} version mismatch: we speak {ours}, the other side speaks {theirs}")]
    Version {
        /// "protocol" or "ring layout".
        what: &'static str,
        /// Our version.
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
    /// A message or shared region failed validation.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being checked.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An input file (or stdin) cannot be played.
    #[error("{path}: {reason}")]
    Input {
        /// The file as the user named it ("-" for stdin).
        path: String,
        /// Why it cannot be played.
        reason: String,
    },
    /// The sink (device or file) failed.
    #[error("{sink}: {reason}")]
    Device {
        /// The sink as the user named it.
        sink: String,
        /// What the device or file said.
        reason: String,
    },
    /// The server closed the connection or stopped advancing.
    #[error("the server went away")]
    ServerGone,
    /// Too many connections were waiting to say hello to the server at `socket` until our
    /// hello timeout (a flood of slow connections): it closed ours, more than once, or its
    /// listen queue stayed full.
    #[error("{socket}: server busy: too many connections waiting to say hello (gave up after {waited_s} s)")]
    Crowded {
        /// The server's socket.
        socket: PathBuf,
        /// How long we kept trying.
        waited_s: u64,
    },
    /// Writing to stdout failed. The only error that can be a broken pipe a tool treats as
    /// success (its reader went away: `dmix-stat | head`): a socket's EPIPE is the server
    /// hanging up, never success.
    #[error("write stdout: {source}")]
    Stdout {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call, with the object it was made on.
        call: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotRunning { .. } => ErrorKind::NotRunning,
            Error::AlreadyRunning { .. } => ErrorKind::Busy,
            Error::Refused { kind, .. } | Error::RequestRefused { kind, .. } => *kind,
            Error::Version { .. } => ErrorKind::Incompatible,
            Error::Invalid { .. } | Error::Input { .. } => ErrorKind::InvalidInput,
            Error::Device { .. } => ErrorKind::Device,
            Error::ServerGone => ErrorKind::ServerGone,
            Error::Crowded { .. } => ErrorKind::Busy,
            Error::Stdout { .. } => ErrorKind::Io,
            Error::Sys { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => ErrorKind::Permission,
                _ => ErrorKind::Io,
            },
        }
    }

    /// A failed system call `call` (name it with its object: `"bind /run/.../x.sock"`).
    pub fn sys(call: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Sys { call: call.into(), source: source.into() }
    }

    /// A malformed message or region.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid { what: what.into(), reason: reason.into() }
    }

    /// An input that cannot be played.
    pub fn input(path: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Input { path: path.into(), reason: reason.into() }
    }

    /// A failed write to stdout.
    pub fn stdout(source: io::Error) -> Error {
        Error::Stdout { source }
    }

    /// True when a send found the peer gone (EPIPE, ECONNRESET): for a client, the server
    /// hung up.
    pub fn is_hang_up(&self) -> bool {
        matches!(self, Error::Sys { source, .. }
            if matches!(source.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset))
    }

    /// True when a wait ran out of time (the server's reply, admission).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Sys { source, .. } if source.kind() == io::ErrorKind::TimedOut)
    }

    /// True when this is a broken pipe on stdout, which a Unix tool treats as success. Only
    /// [`Error::Stdout`] qualifies: an EPIPE from a socket (the server hung up on our hello)
    /// once passed for success here, and dmix-play exited 0 having played nothing.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Stdout { source } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Error {
        Error::sys("system call", io::Error::from(e))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit code a binary returns for an error of this kind; documented in each man page
/// under EXIT STATUS. 2 is reserved for usage errors (clap's own code).
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => 3,
        ErrorKind::NotRunning => 4,
        ErrorKind::Busy => 5,
        ErrorKind::Full => 6,
        ErrorKind::Permission => 7,
        ErrorKind::Incompatible => 8,
        ErrorKind::Device => 9,
        ErrorKind::ServerGone => 10,
        ErrorKind::Io => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_only_stdout_broken_pipe_is_a_broken_pipe() {
        let pipe = || io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(Error::stdout(pipe()).is_broken_pipe());
        assert!(!Error::stdout(io::Error::from(io::ErrorKind::WriteZero)).is_broken_pipe());
        // A socket's EPIPE (sendmsg to a server that hung up) is no success.
        assert!(!Error::sys("sendmsg", pipe()).is_broken_pipe());
        assert!(!Error::from(nix::Error::EPIPE).is_broken_pipe());
        // ...it is the server hanging up.
        assert!(Error::sys("sendmsg", pipe()).is_hang_up());
        assert!(Error::from(nix::Error::ECONNRESET).is_hang_up());
        assert!(!Error::stdout(pipe()).is_hang_up());
    }
}
