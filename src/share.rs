//! `dmix-share`'s engine: asks a server for named sub-devices over subsets of its channels
//! (ALSA's share plugin), then holds them for as long as it runs. The server owns the
//! sockets: when this process exits or is killed, its connection hangs up and the server
//! removes them.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::client::{Connection, GONE_CHECK};
use crate::error::{Error, Result};
use crate::protocol::{MAX_REPLY_BYTES, Reply, Role, ShareRequest, SubDevice};
use crate::transport;

/// Parses `NAME=CH[,CH...]` (a channel may be a range `A-B`) into a sub-device.
pub fn parse_spec(spec: &str) -> Result<SubDevice> {
    let bad = |why: String| Error::invalid(format!("sub-device '{spec}'"), why);
    let (name, list) = spec.split_once('=').ok_or_else(|| bad("use NAME=CH[,CH...], e.g. rear=2,3".into()))?;
    crate::paths::validate_name(name)?;
    let mut map = Vec::new();
    for part in list.split(',') {
        let num = |s: &str| s.trim().parse::<u8>().map_err(|_| bad(format!("'{s}' is not a channel number")));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range {a}-{b} runs backwards")));
                }
                map.extend(a..=b);
            }
            None => map.push(num(part)?),
        }
    }
    if map.is_empty() || map.len() > 32 {
        return Err(bad(format!("{} channels (1 to 32)", map.len())));
    }
    Ok(SubDevice { name: name.to_string(), map })
}

/// Creates the sub-devices on the server `device`, calls `on_ready` with the socket
/// directory, then holds them until `stop` is raised (`Ok`) or the server goes away.
pub fn share(
    device: &str,
    exclusive: bool,
    subs: Vec<SubDevice>,
    stop: &AtomicBool,
    on_ready: impl FnOnce(&std::path::Path),
) -> Result<()> {
    let conn = Connection::open(device, Role::Share, "dmix-share", 0)?;
    let request = ShareRequest { exclusive, subs };
    // The server checks everything again; checking here too gives the same message
    // before any socket is touched.
    ShareRequest::decode(&request.encode(), conn.params().channels)?;
    // A server that hung up on us is gone; its EPIPE must never pass for success.
    transport::send(conn.socket(), &request.encode(), &[])
        .map_err(|e| if e.is_hang_up() { Error::ServerGone } else { e })?;
    let mut buf = [0u8; MAX_REPLY_BYTES];
    let Some(msg) = transport::recv_timeout(conn.socket().as_fd(), &mut buf, Duration::from_secs(5))? else {
        return Err(Error::ServerGone);
    };
    match Reply::decode(&buf[..msg.len])? {
        Reply::Done => {}
        Reply::Refused(r, reason) => return Err(Error::Refused { kind: r.kind(), reason }),
        Reply::Welcome(_) | Reply::Answer(_) => {
            return Err(Error::invalid("server reply", "a welcome where an answer was due"));
        }
    }
    let socket = crate::paths::resolve_device(device)?;
    on_ready(socket.parent().unwrap_or(std::path::Path::new(".")));
    while !stop.load(Ordering::Relaxed) {
        conn.check_alive()?;
        conn.ring().wait_any(GONE_CHECK);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_specs_parse() {
        assert_eq!(parse_spec("rear=2,3").unwrap(), SubDevice { name: "rear".into(), map: vec![2, 3] });
        assert_eq!(parse_spec("all=0-3").unwrap().map, vec![0, 1, 2, 3]);
        assert_eq!(parse_spec("swap=1,0").unwrap().map, vec![1, 0]);
        for (bad, why) in [
            ("rear", "NAME=CH"),
            ("rear=", "not a channel"),
            ("rear=x", "not a channel"),
            ("a=3-1", "backwards"),
            (".x=1", "server name"),
        ] {
            let e = parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
