//! The plugin's configuration (the keys of its `pcm` node) and how a PCM reaches its
//! server: the server's name or socket, the name dmix-stat shows, the volume a playback
//! PCM starts at, which ring a capture PCM reads. It never touches a ring.

use dmix::client::Connection;
use dmix::protocol::Role;

/// The keys a `dmixrs` PCM takes, as the error for an unknown one lists them.
pub(crate) const KEYS: &str = "server, name, volume, source";

/// The plugin's configuration keys.
#[derive(Debug, Default)]
pub struct Config {
    /// `server`: a server name as in `-D`, or a socket path (default: `default`).
    pub server: Option<String>,
    /// `name`: what dmix-stat shows (default: the program's name).
    pub name: Option<String>,
    /// `volume`: the volume in dB a playback PCM starts at, at most +12 (default: what the
    /// server remembers for the name, else 0 dB); dmix-stat changes it later.
    pub volume_db: Option<f32>,
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
        let volume_db = if role == Role::Play { self.volume_db } else { None };
        Connection::open_at(&self.server(), role, &name, 0, volume_db).map_err(|e| e.to_string())
    }
}

/// The `volume` key's value: a number of dB, at most +12 (anything below the quietest
/// volume is that). The error is the plugin's line at open.
pub(crate) fn parse_volume(text: &str) -> Result<f32, String> {
    let db: f32 = text.trim().parse().map_err(|_| format!("volume {text}: expected a number of dB"))?;
    dmix::protocol::check_volume(db)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_volume_is_a_number_of_db_at_most_12() {
        assert_eq!(parse_volume("-6"), Ok(-6.0));
        assert_eq!(parse_volume("-4.5"), Ok(-4.5));
        assert_eq!(parse_volume("12"), Ok(12.0));
        assert_eq!(parse_volume("-1000"), Ok(dmix::protocol::MIN_VOLUME_DB));
        let loud = parse_volume("12.5").unwrap_err();
        assert!(loud.contains("above the most, +12 dB"), "{loud}");
        let word = parse_volume("loud").unwrap_err();
        assert_eq!(word, "volume loud: expected a number of dB");
        assert!(parse_volume("NaN").is_err());
    }
}
