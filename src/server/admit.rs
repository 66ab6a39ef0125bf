//! Admission: whether a client that said hello gets a slot, and which, decided from the
//! hello, the kernel's word on the peer and what the control thread knows of the server. A
//! pure decision, so that every refusal can be unit-tested; the control thread does what it
//! says (sends the refusal, or fills the slot and sends the welcome). It must never do I/O:
//! the one thing it may ask the kernel, the peer's supplementary groups, it asks through the
//! caller's closure, and only when the answer matters.

use crate::error::Error;
use crate::protocol::{Hello, PROTOCOL_VERSION, Refusal, Role};
use crate::ring::layout::MAX_SLOTS;
use crate::transport::PeerCred;

/// A refusal and the reason the client is told (and the log shows).
pub(super) type Refused = (Refusal, String);

/// The peer as the kernel reports it.
pub(super) struct Peer<'a> {
    /// SO_PEERCRED.
    pub cred: PeerCred,
    /// Its supplementary groups (SO_PEERGROUPS; none when the kernel does not say). Called
    /// only when `--group` is set and neither the uid nor the primary group decides.
    pub groups: &'a dyn Fn() -> Vec<u32>,
}

/// The sub-device a client connected through, as admission sees it.
#[derive(Clone, Copy)]
pub(super) struct SubChannels<'a> {
    /// The server channel of each of its channels.
    pub map: &'a [u8],
    /// A channel belongs to one of its players at a time.
    pub exclusive: bool,
}

/// What the decision needs to know of the server, as the control thread sees it now.
pub(super) struct AdmitContext<'a> {
    /// The uid the server runs as.
    pub uid: u32,
    /// `--group`: peers in it are admitted too.
    pub group: Option<u32>,
    /// The sub-device the connection came through (looked up by the name it came through),
    /// `None` if it came through the server's socket or the sub-device is gone.
    pub sub: Option<SubChannels<'a>>,
    /// The ring's channels.
    pub channels: u32,
    /// The ring's capture frames (0: no shared input).
    pub capture_frames: u32,
    /// Channels held by players of exclusive sub-devices.
    pub held: u64,
    /// Slots in use.
    pub owned: u64,
}

/// A client let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Admission {
    /// Its slot: the lowest free one.
    pub slot: usize,
    /// Its role, from the hello.
    pub role: Role,
    /// The channels it writes or reads: the sub-device's, else the server's.
    pub width: u32,
    /// The server channel of each of its channels, through a sub-device.
    pub map: Option<Vec<u8>>,
    /// The channels it holds exclusively (a player of an exclusive sub-device).
    pub held: u64,
}

/// Decodes a hello (`None`: the message was truncated, too long for a hello).
pub(super) fn read_hello(bytes: Option<&[u8]>) -> Result<Hello, Refused> {
    match bytes.map(Hello::decode) {
        Some(Ok(h)) => Ok(h),
        Some(Err(Error::Version { theirs, .. })) => {
            let reason =
                format!("protocol version mismatch: the server speaks {PROTOCOL_VERSION}, the client {theirs}");
            Err((Refusal::Incompatible, reason))
        }
        Some(Err(e)) => Err((Refusal::BadRequest, e.to_string())),
        None => Err((Refusal::BadRequest, "hello: oversized message".into())),
    }
}

/// Decides on a decoded hello from `peer`, which came through the sub-device named `via`
/// (`None`: the server's socket).
pub(super) fn admit(
    hello: &Hello,
    peer: &Peer<'_>,
    via: Option<&str>,
    ctx: &AdmitContext<'_>,
) -> Result<Admission, Refused> {
    let cred = peer.cred;
    if !admits(peer, ctx) {
        let reason = match ctx.group {
            None => format!("uid {} may not use this server (it serves uid {})", cred.uid, ctx.uid),
            Some(g) => format!("uid {} may not use this server (it serves uid {} and group {g})", cred.uid, ctx.uid),
        };
        return Err((Refusal::Denied, reason));
    }
    // Through a sub-device a client writes the sub-device's channels.
    let (map, exclusive) = match via {
        None => (None, false),
        Some(name) => match ctx.sub {
            Some(s) => (Some(s.map.to_vec()), s.exclusive),
            None => return Err((Refusal::Stopping, format!("sub-device '{name}' is gone"))),
        },
    };
    let width = map.as_ref().map_or(ctx.channels, |m| m.len() as u32);
    if hello.channels != 0 && hello.channels != width {
        let reason = format!("the server has {width} channels here; {} asked for", hello.channels);
        return Err((Refusal::BadRequest, reason));
    }
    if hello.role == Role::Capture && ctx.capture_frames == 0 {
        let reason = "this server shares no input (start dmix-serve with --capture SOURCE)".to_string();
        return Err((Refusal::BadRequest, reason));
    }
    let mut held = 0u64;
    if exclusive && hello.role == Role::Play {
        let mask = map.iter().flatten().fold(0u64, |m, &c| m | 1 << c);
        let taken = ctx.held & mask;
        if taken != 0 {
            let list: Vec<String> = (0..64).filter(|c| taken & (1 << c) != 0).map(|c| c.to_string()).collect();
            let reason = format!("busy: channel {} of '{}' is in use", list.join(","), via.unwrap_or(""));
            return Err((Refusal::Busy, reason));
        }
        held = mask;
    }
    let free = !ctx.owned;
    if free == 0 {
        return Err((Refusal::Full, format!("server full: all {MAX_SLOTS} client slots are taken")));
    }
    let slot = free.trailing_zeros() as usize;
    Ok(Admission { slot, role: hello.role, width, map, held })
}

/// The kernel's word on the peer: our own uid, root, or (with `--group`) a member of the
/// group, primary or supplementary.
fn admits(peer: &Peer<'_>, ctx: &AdmitContext<'_>) -> bool {
    if peer.cred.uid == ctx.uid || peer.cred.uid == 0 {
        return true;
    }
    match ctx.group {
        None => false,
        Some(g) => peer.cred.gid == g || (peer.groups)().contains(&g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::HELLO_BYTES;

    const SERVER_UID: u32 = 1000;
    const OTHER_UID: u32 = 1001;
    const AUDIO_GID: u32 = 29;

    fn hello(role: Role, channels: u32) -> Hello {
        Hello { version: PROTOCOL_VERSION, role, channels, name: "test".into(), volume_db: None }
    }

    fn no_groups() -> Vec<u32> {
        Vec::new()
    }

    fn never_asked() -> Vec<u32> {
        panic!("the supplementary groups were asked for although the uid or the gid decides")
    }

    fn peer(uid: u32, gid: u32) -> Peer<'static> {
        Peer { cred: PeerCred { pid: 4242, uid, gid }, groups: &no_groups }
    }

    /// The server's own socket, 2 channels, a shared input, nothing in use.
    fn ctx() -> AdmitContext<'static> {
        AdmitContext { uid: SERVER_UID, group: None, sub: None, channels: 2, capture_frames: 1024, held: 0, owned: 0 }
    }

    const REAR: SubChannels<'static> = SubChannels { map: &[2, 3], exclusive: true };

    fn refusal(r: Result<Admission, Refused>) -> Refused {
        r.expect_err("refused")
    }

    #[test]
    fn admit_other_protocol_version_is_incompatible_naming_both() {
        let bytes = Hello { version: 99, ..hello(Role::Play, 0) }.encode();
        let (r, reason) = read_hello(Some(&bytes)).unwrap_err();
        assert_eq!(r, Refusal::Incompatible);
        assert_eq!(reason, format!("protocol version mismatch: the server speaks {PROTOCOL_VERSION}, the client 99"));
    }

    #[test]
    fn admit_malformed_hello_is_a_bad_request_with_the_decoder_reason() {
        let mut bytes = hello(Role::Play, 0).encode();
        bytes[0] = b'X';
        assert_eq!(
            read_hello(Some(&bytes)).unwrap_err(),
            (Refusal::BadRequest, "hello: bad magic: not a dmix client".to_string())
        );
        let short = &hello(Role::Play, 0).encode()[..HELLO_BYTES - 1];
        assert_eq!(
            read_hello(Some(short)).unwrap_err(),
            (Refusal::BadRequest, format!("hello: {} bytes, expected {HELLO_BYTES}", HELLO_BYTES - 1))
        );
    }

    #[test]
    fn admit_oversized_hello_is_a_bad_request() {
        assert_eq!(read_hello(None).unwrap_err(), (Refusal::BadRequest, "hello: oversized message".to_string()));
    }

    #[test]
    fn admit_good_hello_decodes() {
        let h = hello(Role::Tee, 2);
        assert_eq!(read_hello(Some(&h.encode())), Ok(h));
    }

    #[test]
    fn admit_other_uid_is_denied_naming_the_served_uid() {
        let (r, reason) = refusal(admit(&hello(Role::Play, 0), &peer(OTHER_UID, 100), None, &ctx()));
        assert_eq!(r, Refusal::Denied);
        assert_eq!(reason, "uid 1001 may not use this server (it serves uid 1000)");
    }

    #[test]
    fn admit_other_uid_outside_the_group_is_denied_naming_the_group() {
        let ctx = AdmitContext { group: Some(AUDIO_GID), ..ctx() };
        let groups = || vec![100, 30];
        let peer = Peer { cred: PeerCred { pid: 1, uid: OTHER_UID, gid: 100 }, groups: &groups };
        let (r, reason) = refusal(admit(&hello(Role::Play, 0), &peer, None, &ctx));
        assert_eq!(r, Refusal::Denied);
        assert_eq!(reason, "uid 1001 may not use this server (it serves uid 1000 and group 29)");
    }

    #[test]
    fn admit_peer_in_the_group_is_admitted_by_primary_or_supplementary_gid() {
        let ctx = AdmitContext { group: Some(AUDIO_GID), ..ctx() };
        let primary = Peer { cred: PeerCred { pid: 1, uid: OTHER_UID, gid: AUDIO_GID }, groups: &never_asked };
        assert!(admit(&hello(Role::Play, 0), &primary, None, &ctx).is_ok());
        let groups = || vec![100, AUDIO_GID];
        let supplementary = Peer { cred: PeerCred { pid: 1, uid: OTHER_UID, gid: 100 }, groups: &groups };
        assert!(admit(&hello(Role::Play, 0), &supplementary, None, &ctx).is_ok());
    }

    #[test]
    fn admit_root_and_the_server_uid_are_admitted_without_asking_groups() {
        let ctx = AdmitContext { group: Some(AUDIO_GID), ..ctx() };
        for uid in [0, SERVER_UID] {
            let peer = Peer { cred: PeerCred { pid: 1, uid, gid: 100 }, groups: &never_asked };
            assert!(admit(&hello(Role::Play, 0), &peer, None, &ctx).is_ok(), "uid {uid}");
        }
        let root = Peer { cred: PeerCred { pid: 1, uid: 0, gid: 0 }, groups: &never_asked };
        assert!(admit(&hello(Role::Play, 0), &root, None, &AdmitContext { group: None, ..ctx }).is_ok());
    }

    #[test]
    fn admit_through_a_sub_device_that_is_gone_is_stopping() {
        let (r, reason) = refusal(admit(&hello(Role::Play, 0), &peer(SERVER_UID, 100), Some("rear"), &ctx()));
        assert_eq!(r, Refusal::Stopping);
        assert_eq!(reason, "sub-device 'rear' is gone");
    }

    #[test]
    fn admit_channel_count_mismatch_is_a_bad_request() {
        let (r, reason) = refusal(admit(&hello(Role::Play, 6), &peer(SERVER_UID, 100), None, &ctx()));
        assert_eq!(r, Refusal::BadRequest);
        assert_eq!(reason, "the server has 2 channels here; 6 asked for");
        // Through a sub-device, its width counts.
        let ctx = AdmitContext { sub: Some(SubChannels { map: &[0, 1, 2], exclusive: false }), channels: 4, ..ctx() };
        let (r, reason) = refusal(admit(&hello(Role::Play, 4), &peer(SERVER_UID, 100), Some("front"), &ctx));
        assert_eq!(r, Refusal::BadRequest);
        assert_eq!(reason, "the server has 3 channels here; 4 asked for");
    }

    #[test]
    fn admit_capture_without_a_shared_input_is_a_bad_request() {
        let ctx = AdmitContext { capture_frames: 0, ..ctx() };
        let (r, reason) = refusal(admit(&hello(Role::Capture, 0), &peer(SERVER_UID, 100), None, &ctx));
        assert_eq!(r, Refusal::BadRequest);
        assert_eq!(reason, "this server shares no input (start dmix-serve with --capture SOURCE)");
    }

    #[test]
    fn admit_exclusive_channel_in_use_is_busy_listing_the_channels() {
        let ctx = AdmitContext { sub: Some(REAR), channels: 4, held: 1 << 3, ..ctx() };
        let (r, reason) = refusal(admit(&hello(Role::Play, 0), &peer(SERVER_UID, 100), Some("rear"), &ctx));
        assert_eq!(r, Refusal::Busy);
        assert_eq!(reason, "busy: channel 3 of 'rear' is in use");
        let ctx = AdmitContext { held: 0b1100, ..ctx };
        let (_, reason) = refusal(admit(&hello(Role::Play, 0), &peer(SERVER_UID, 100), Some("rear"), &ctx));
        assert_eq!(reason, "busy: channel 2,3 of 'rear' is in use");
    }

    #[test]
    fn admit_exclusive_channels_are_held_by_players_only() {
        let ctx = AdmitContext { sub: Some(REAR), channels: 4, held: 0b1100, ..ctx() };
        let tee = admit(&hello(Role::Tee, 0), &peer(SERVER_UID, 100), Some("rear"), &ctx).expect("admitted");
        assert_eq!(tee.held, 0);
        let ctx = AdmitContext { held: 0b0011, ..ctx };
        let play = admit(&hello(Role::Play, 0), &peer(SERVER_UID, 100), Some("rear"), &ctx).expect("admitted");
        assert_eq!(play.held, 0b1100);
    }

    #[test]
    fn admit_with_every_slot_taken_is_full() {
        let ctx = AdmitContext { owned: u64::MAX, ..ctx() };
        let (r, reason) = refusal(admit(&hello(Role::Play, 0), &peer(SERVER_UID, 100), None, &ctx));
        assert_eq!(r, Refusal::Full);
        assert_eq!(reason, "server full: all 64 client slots are taken");
    }

    #[test]
    fn admit_gives_the_lowest_free_slot_and_the_server_width() {
        let ctx = AdmitContext { owned: 0b1011, ..ctx() };
        let a = admit(&hello(Role::Tee, 2), &peer(SERVER_UID, 100), None, &ctx).expect("admitted");
        assert_eq!(a, Admission { slot: 2, role: Role::Tee, width: 2, map: None, held: 0 });
        let last = AdmitContext { owned: !(1 << 63), ..ctx };
        assert_eq!(admit(&hello(Role::Stat, 0), &peer(SERVER_UID, 100), None, &last).expect("admitted").slot, 63);
    }

    #[test]
    fn admit_through_a_sub_device_takes_its_width_and_map() {
        let ctx = AdmitContext {
            sub: Some(SubChannels { map: &[4, 5, 6], exclusive: false }),
            channels: 8,
            owned: 1,
            ..ctx()
        };
        let a = admit(&hello(Role::Play, 0), &peer(SERVER_UID, 100), Some("side"), &ctx).expect("admitted");
        assert_eq!(a, Admission { slot: 1, role: Role::Play, width: 3, map: Some(vec![4, 5, 6]), held: 0 });
        let ctx = AdmitContext { sub: Some(SubChannels { map: &[4, 5, 6], exclusive: true }), ..ctx };
        let a = admit(&hello(Role::Play, 3), &peer(SERVER_UID, 100), Some("side"), &ctx).expect("admitted");
        assert_eq!(a.held, 0b111_0000);
    }
}
