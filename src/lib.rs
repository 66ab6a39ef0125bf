//! dmix: user-space direct mixing for Linux.
//!
//! One server process (`dmix-serve`) owns a sound device; any number of client processes
//! play into it by adding their samples straight into one shared, mmaped ring, with the
//! file descriptors handed over a unix socket.
#![deny(unsafe_code)]

pub mod cli;
pub mod client;
pub mod decode;
pub mod error;
pub mod format;
pub mod paths;
pub mod play;
pub mod protocol;
pub mod ring;
pub mod server;
pub mod sink;
pub mod sys;
pub mod transport;

pub use error::{Error, ErrorKind, Result};
