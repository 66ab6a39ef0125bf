//! Sub-devices: sockets a dmix-share connection asks for. A sub-device is a socket of its
//! own (NAME.sock beside the server's) whose clients write a subset of the server's
//! channels, in the order the share request gave. It lives as long as the dmix-share
//! connection that asked for it: when that hangs up, its sockets are closed and removed.
//! With `--exclusive`, a channel belongs to one sub-device client at a time.
//!
//! This module creates them and says what admission needs of them; the control thread
//! polls their sockets and drops them with their owner. It never touches the ring.

use std::path::Path;

use super::admit::{Refused, SubChannels};
use crate::protocol::{Refusal, ShareRequest};
use crate::transport::Listener;

/// A sub-device created by a dmix-share connection.
pub(super) struct Sub {
    /// Its server name: clients reach it with `-D NAME`.
    pub name: String,
    /// The server channel of each of its channels.
    pub map: Vec<u8>,
    /// A channel belongs to one of its players at a time.
    pub exclusive: bool,
    /// The id of the dmix-share connection it lives for.
    pub owner: u64,
    /// Its socket; dropping it removes the socket file.
    pub listener: Listener,
}

impl Sub {
    /// What admission needs of it.
    pub fn channels(&self) -> SubChannels<'_> {
        SubChannels { map: &self.map, exclusive: self.exclusive }
    }
}

/// Creates the sub-devices `req` asks for, owned by the connection `owner`, beside the
/// server's socket in `dir`, and adds them to `subs`: all of them, or none and the reason.
pub(super) fn create(dir: Option<&Path>, subs: &mut Vec<Sub>, owner: u64, req: &ShareRequest) -> Result<(), Refused> {
    let Some(dir) = dir else {
        return Err((Refusal::BadRequest, "this server has no socket directory".into()));
    };
    let mut made = Vec::with_capacity(req.subs.len());
    for sub in &req.subs {
        if subs.iter().any(|s| s.name == sub.name) {
            return Err((Refusal::Busy, format!("'{}' is already a sub-device", sub.name)));
        }
        let path = dir.join(format!("{}.sock", sub.name));
        match Listener::bind(&path, 0o600) {
            Ok(listener) => made.push(Sub {
                name: sub.name.clone(),
                map: sub.map.clone(),
                exclusive: req.exclusive,
                owner,
                listener,
            }),
            // Dropping `made` removes the sockets already created: all or nothing.
            Err(e) if e.kind() == crate::ErrorKind::Busy => {
                return Err((Refusal::Busy, format!("'{}' collides with a running server", sub.name)));
            }
            Err(e) => return Err((Refusal::BadRequest, format!("'{}': {e}", sub.name))),
        }
    }
    subs.extend(made);
    Ok(())
}
