//! The wire decoders on arbitrary bytes: none panics, and whatever decodes is canonical (it
//! encodes to a message that decodes to the same value).

#![no_main]

use dmix::protocol::{Hello, MAX_REPLY_BYTES, MAX_SHARE_BYTES, Reply, ShareRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    match selector % 3 {
        0 => {
            if let Ok(h) = Hello::decode(bytes) {
                assert_eq!(Hello::decode(&h.encode()).expect("an encoded hello decodes"), h);
            }
        }
        1 => {
            // The client reads replies into a MAX_REPLY_BYTES buffer: longer ones never reach
            // the decoder whole, but it must not panic on them either.
            let decoded = Reply::decode(bytes);
            if bytes.len() <= MAX_REPLY_BYTES
                && let Ok(r) = decoded
            {
                let (b, n) = r.encode();
                let again = Reply::decode(&b[..n]).expect("an encoded reply decodes");
                match (&r, &again) {
                    // A reason longer than a reply holds (after lossy UTF-8 repair) is cut.
                    (Reply::Refused(code, reason), Reply::Refused(code2, reason2)) => {
                        assert_eq!(code, code2);
                        assert!(reason.starts_with(reason2.as_str()), "{reason:?} -> {reason2:?}");
                    }
                    _ => assert_eq!(again, r),
                }
            }
        }
        _ => {
            let Some((&channels, bytes)) = bytes.split_first() else { return };
            let channels = u32::from(channels % 40);
            let decoded = ShareRequest::decode(bytes, channels);
            if bytes.len() <= MAX_SHARE_BYTES
                && let Ok(req) = decoded
            {
                let again = ShareRequest::decode(&req.encode(), channels).expect("an encoded request decodes");
                assert_eq!(again, req);
            }
        }
    }
});
