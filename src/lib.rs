//! dmix: user-space direct mixing for Linux.
//!
//! One server process (`dmix-serve`) owns a sound device; any number of client processes
//! play into it by adding their samples straight into one shared, mmaped ring, with the
//! file descriptors handed over a unix socket.
#![deny(unsafe_code)]

pub mod error;
pub mod format;

pub use error::{Error, ErrorKind, Result};
