//! Readiness for a service manager (sd_notify(3)): with `Type=notify`, systemd starts the
//! units that wait for dmix-serve only once it says `READY=1` on the datagram socket named by
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without that variable
//! nothing is sent.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` ("READY=1", "STOPPING=1") to the service manager, if one asked for it. A
/// failure is one line on stderr: the manager then times the start out, and says so itself.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let bytes = target.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(&target))?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        crate::say!(
            "dmix-serve: could not tell the service manager {state} (NOTIFY_SOCKET={}): {e}",
            target.to_string_lossy()
        );
    }
}
