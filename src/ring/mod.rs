//! The shared ring: creation by the server, attachment by clients, and the two operations
//! that are the whole point of dmix: a client's [`mix_add`](ClientRing::mix_add) into the sum
//! ring and the server's [`take_period`](ServerRing::take_period), which reads and re-arms
//! each sum slot in one atomic swap.
//!
//! Each sum slot is a 64-bit word: the high half is the *lap* of the frame the slot holds
//! (absolute frame / ring frames), the low half the 32-bit sum. A client adds with one
//! compare-and-swap that succeeds only while the tag is the lap of the frame it means to
//! write; the server's take swaps in the next lap with a zero sum. So the window check and
//! the add are one atomic step: a client stalled anywhere (SIGSTOP between reading hw_ptr and
//! adding) finds the tag moved on and drops the sample as late. A late sample can never be
//! played a lap later (DESIGN.md invariant 2).
//!
//! Who does what, one file each: [`params`] (what every process agrees on, and where a frame
//! sits), [`server`] (the server's side: create, take, publish, the slot table),
//! [`client`] (a client's side: attach and validate, then infallible views), and the typed
//! operations clients use: [`write`](mod@write) (anything that adds into the mix), [`read`](mod@read) (readers
//! of the monitor and capture rings), [`view`] (inspectors). Which ordering each shared
//! word uses is decided here and nowhere else: the tools above never name one.

pub mod client;
pub mod gain;
pub mod layout;
mod map;
pub mod params;
pub mod read;
pub mod server;
pub mod view;
pub mod write;

pub use self::client::ClientRing;
pub use self::gain::{GainCurve, Volume};
pub use self::params::{AddOutcome, MAX_RING_FRAMES, RingParams};
pub use self::read::{READ_EVERYTHING, ReadSource, ReadStream};
pub use self::server::{ClientFds, ServerRing};
pub use self::view::{CaptureView, ServerView, SlotView};
pub use self::write::{History, VolumeMark, WriteStream};

#[cfg(test)]
mod tests;
