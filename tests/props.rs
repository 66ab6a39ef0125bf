//! Property tests of the wire decoders (the fuzz targets under fuzz/ go further): no input
//! makes a decoder panic, and every valid message survives encode → decode unchanged.

use dmix::format::SampleFormat;
use dmix::protocol::{
    HELLO_BYTES, Hello, MAX_REPLY_BYTES, PROTOCOL_VERSION, Refusal, Reply, Role, ShareRequest, SubDevice, Welcome,
};
use dmix::ring::RingParams;
use proptest::prelude::*;

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Play), Just(Role::Tee), Just(Role::Share), Just(Role::Stat), Just(Role::Capture)]
}

fn params() -> impl Strategy<Value = RingParams> {
    (
        8000u32..=192_000,
        1u32..=32,
        prop_oneof![Just(SampleFormat::S16Le), Just(SampleFormat::S32Le), Just(SampleFormat::FloatLe)],
        4u32..=12,
        0u32..4,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(rate_hz, channels, format, period_log, ring_mul, capture, freewheel)| {
            let period_frames = 1 << period_log;
            let ring_frames = period_frames << (ring_mul + 1);
            RingParams {
                rate_hz,
                channels,
                format,
                period_frames,
                ring_frames,
                monitor_frames: ring_frames * 2,
                capture_frames: if capture { ring_frames * 2 } else { 0 },
                freewheel,
            }
        })
        .prop_filter("valid", |p| p.validate().is_ok())
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Done),
        (0..Refusal::ALL.len(), "[ -~]{0,200}").prop_map(|(i, reason)| Reply::Refused(Refusal::ALL[i], reason)),
        (0u32..64, 1u32.., params(), any::<[u64; 4]>()).prop_map(|(slot, client_id, params, region_bytes)| {
            Reply::Welcome(Welcome {
                slot,
                client_id,
                layout_version: dmix::ring::layout::RING_LAYOUT_VERSION,
                params,
                region_bytes,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn props_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700), channels in 0u32..40) {
        let _ = Hello::decode(&bytes);
        let _ = Reply::decode(&bytes);
        let _ = ShareRequest::decode(&bytes, channels);
    }

    #[test]
    fn props_mutated_messages_never_panic(at in 0usize..HELLO_BYTES, v in any::<u8>(), r in reply(), rat in 0usize..MAX_REPLY_BYTES) {
        let mut h = Hello { version: PROTOCOL_VERSION, role: Role::Play, channels: 2, name: "x".into(), volume_db: None }.encode();
        h[at] = v;
        if let Ok(d) = Hello::decode(&h) {
            // Whatever decodes is a valid hello: it encodes back to the same bytes.
            prop_assert_eq!(d.encode(), h);
        }
        let (mut b, n) = r.encode();
        b[rat % n] = v;
        let _ = Reply::decode(&b[..n]);
        let _ = Reply::decode(&b[..rat % n]);
    }

    #[test]
    fn props_hello_round_trips(role in role(), channels in 0u32..=32, name in "[a-zA-Z0-9 ._:/-]{0,40}") {
        let h = Hello { version: PROTOCOL_VERSION, role, channels, name, volume_db: None };
        prop_assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn props_reply_round_trips(r in reply()) {
        let (b, n) = r.encode();
        prop_assert_eq!(Reply::decode(&b[..n]).unwrap(), r);
    }

    #[test]
    fn props_share_request_round_trips(
        names in proptest::collection::btree_set("[a-z][a-z0-9_-]{0,30}", 1..=16),
        channels in 1u32..=32,
        seed in any::<u64>(),
    ) {
        let mut s = seed;
        let subs: Vec<SubDevice> = names
            .into_iter()
            .map(|name| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let len = 1 + (s >> 40) as usize % channels as usize;
                let first = (s >> 20) as usize % (channels as usize - len + 1);
                SubDevice { name, map: (first..first + len).map(|c| c as u8).collect() }
            })
            .collect();
        let req = ShareRequest { exclusive: false, subs };
        prop_assert_eq!(ShareRequest::decode(&req.encode(), channels).unwrap(), req);
    }
}
