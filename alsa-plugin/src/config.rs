//! The plugin's configuration (the keys of its `pcm` node) and how a PCM reaches its
//! server: the server's name or socket, the name dmix-stat shows, which ring a capture PCM
//! reads. It never touches a ring.

use dmix::client::Connection;
use dmix::protocol::Role;

/// The plugin's configuration keys.
#[derive(Debug, Default)]
pub struct Config {
    /// `server`: a server name as in `-D`, or a socket path (default: `default`).
    pub server: Option<String>,
    /// `name`: what dmix-stat shows (default: the program's name).
    pub name: Option<String>,
    /// `source`: what a capture PCM records, `monitor` (what is played, the default) or
    /// `capture` (the shared input of `dmix-serve --capture`).
    pub source: Option<Direction>,
}

impl Config {
    pub(crate) fn server(&self) -> String {
        self.server.clone().unwrap_or_else(|| dmix::paths::DEFAULT_NAME.to_string())
    }

    /// Refuses a server that is this very process: a dmix-serve whose sink is this plugin
    /// pointing back at it (dmixrs made the default device, the server left on
    /// alsa:default). That server answers no hello until its sink is open, so the open would
    /// wait out the hello timeout and fail anyway; answered, it would play its own mix into
    /// itself. The kernel's word on the peer (SO_PEERCRED) tells.
    pub fn refuse_self(&self) -> Result<(), String> {
        let Ok(path) = dmix::paths::resolve_device(&self.server()) else { return Ok(()) };
        let Ok(sock) = dmix::transport::connect_socket(&path) else { return Ok(()) };
        match dmix::transport::peer_cred(std::os::fd::AsFd::as_fd(&sock)) {
            Ok(peer) if peer.pid == std::process::id() => Err(format!(
                "{} is the server of this very process: a dmix server cannot play into itself (give it a \
                 device, e.g. --sink alsa:sysdefault)",
                path.display()
            )),
            _ => Ok(()),
        }
    }

    /// Connects to the configured server in `role`, under the configured name.
    pub(crate) fn connect(&self, role: Role) -> Result<Connection, String> {
        let name = self.name.clone().unwrap_or_else(program_name);
        Connection::open(&self.server(), role, &name, 0).map_err(|e| e.to_string())
    }
}

/// Which way a PCM goes, and for a recorder, which ring it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Playback into the mix ring.
    Playback,
    /// Capture of the monitor ring: what is played (`source monitor`, the default).
    Monitor,
    /// Capture of the shared input of `dmix-serve --capture` (`source capture`).
    Capture,
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "alsa".into())
}
