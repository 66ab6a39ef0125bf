//! dmix: user-space direct mixing for Linux.
//!
//! One server process (`dmix-serve`) owns a sound device; any number of client processes
//! play into it by adding their samples straight into one shared, mmaped ring, with the
//! file descriptors handed over a unix socket. The binaries in `src/bin/` are thin: they
//! parse flags, build a checked config and call one function here.
//!
//! # Map
//!
//! | module | owns |
//! |---|---|
//! | [`ring::layout`] | THE shared-memory declarations, magics, `RING_LAYOUT_VERSION` |
//! | `ring::map` | fence 1 of `unsafe`: sealed memfd → mapping → atomic views |
//! | [`ring`] | server create / client attach, `mix_add`, `take_period`, and the only code that names an ordering on a shared word: [`ring::ServerSlot`](ring::server::ServerSlot) (server), [`ring::WriteStream`] (players), [`ring::ReadStream`] (recorders), [`ring::view`] (inspectors) |
//! | [`sys`] | fence 2 of `unsafe`: futex, fd adoption; the clocks |
//! | [`protocol`] | wire messages, `PROTOCOL_VERSION`, pure encode/decode |
//! | [`transport`] | the SOCK_SEQPACKET socket, SCM_RIGHTS, SO_PEERCRED |
//! | [`paths`] | runtime directory, server names |
//! | [`server`] | control thread (admission: a pure decision), sub-devices, and [`server::period`] (the real-time loop) |
//! | [`client`] | connect, attach; `Player`: write, drain, retract (an adapter over `WriteStream`) |
//! | [`sink`] | ALSA, WAV and null sinks |
//! | [`capture`] | the shared input: ALSA capture or a file (`dmix-serve --capture`) |
//! | [`decode`], [`convert`] | decoding (symphonia), channel maps, resampling (rubato), gain |
//! | [`format`](mod@format) | sample formats and the mix-scale conversion rule |
//! | [`play`], [`tee`], [`share`], [`stat`] | the engines of dmix-play, dmix-tee, dmix-share, dmix-stat |
//!
//! # Example
//!
//! The whole mechanism in one process: a server ring, two clients adding into it, and the
//! server taking the period (read and re-arm in one atomic step per sample).
//!
//! ```
//! use dmix::format::SampleFormat;
//! use dmix::ring::{ClientRing, RingParams, ServerRing};
//!
//! let params = RingParams {
//!     rate_hz: 48000, channels: 2, format: SampleFormat::S16Le,
//!     period_frames: 64, ring_frames: 256, monitor_frames: 1024, capture_frames: 0, freewheel: true,
//! };
//! let server = ServerRing::create(params)?;
//! let attach = || -> dmix::Result<ClientRing> {
//!     let f = server.client_fds(true);
//!     let fds = [f.status, f.mix, f.monitor, f.capture].map(|fd| fd.try_clone_to_owned().unwrap());
//!     ClientRing::attach(params, [&fds[0], &fds[1], &fds[2], &fds[3]], true)
//! };
//! let (a, b) = (attach()?, attach()?);
//! a.mix_add(0, &[100; 128], false);
//! b.mix_add(0, &[23; 128], false);
//! let mut period = [0i32; 128];
//! server.take_period(0, &mut period);
//! server.publish_hw_ptr(64);
//! assert!(period.iter().all(|&s| s == 123));
//! # Ok::<(), dmix::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod capture;
pub mod cli;
pub mod client;
pub mod convert;
pub mod decode;
pub mod error;
pub mod format;
pub mod notify;
pub mod paths;
mod pins;
pub mod play;
pub mod protocol;
pub mod ring;
pub mod server;
pub mod share;
pub mod sink;
pub mod stat;
pub mod stdin;
pub mod sys;
pub mod tee;
pub mod transport;

pub use error::{Error, ErrorKind, Result};
