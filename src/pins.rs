//! The version pins: every version of the shared layout and of the wire protocol, beside the
//! fingerprint of what it was. A change to a shared block, a field, a constant a peer reads,
//! or a message's bytes changes a fingerprint; the test below then fails until the version
//! is bumped and the new pair appended. The history is append-only: an entry is never edited
//! to make the test pass (that is how the layout changed four times under version 1).
//!
//! When the test fails: decide whether peers of the two builds could misread each other (they
//! always can, if a field moved); bump `RING_LAYOUT_VERSION` (src/ring/layout.rs) or
//! `PROTOCOL_VERSION` (src/protocol.rs), append `(new version, fingerprint printed)`, and
//! say in docs/PROTOCOL.md what changed.

/// (RING_LAYOUT_VERSION, layout_fingerprint()) for every version since fingerprints exist.
#[cfg(test)]
const LAYOUT: &[(u32, u64)] = &[(2, 0xb2c3_da49_971a_70a3), (3, 0x21eb_d86f_0f42_ca5c)];

/// (PROTOCOL_VERSION, wire_fingerprint()) likewise.
#[cfg(test)]
const PROTOCOL: &[(u32, u64)] = &[(2, 0xa835_84c4_ece2_9e2f), (3, 0x92df_e733_f52b_3079)];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PROTOCOL_VERSION, wire_fingerprint};
    use crate::ring::layout::{RING_LAYOUT_VERSION, layout_fingerprint};

    fn check(what: &str, history: &[(u32, u64)], version: u32, fingerprint: u64) {
        let (last_version, last_print) = *history.last().expect("a history");
        assert!(
            history.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1),
            "{what}: the history must grow by version, each with a new fingerprint"
        );
        assert_eq!(
            (version, fingerprint),
            (last_version, last_print),
            "{what} changed: version {version}, fingerprint {fingerprint:#018x}; the newest pin is version \
             {last_version}, {last_print:#018x}. Bump the version and append the new pair (src/pins.rs)."
        );
    }

    #[test]
    fn pins_layout_version_matches_its_fingerprint() {
        check("the ring layout", LAYOUT, RING_LAYOUT_VERSION, layout_fingerprint());
    }

    #[test]
    fn pins_protocol_version_matches_its_fingerprint() {
        check("the wire protocol", PROTOCOL, PROTOCOL_VERSION, wire_fingerprint());
    }
}
