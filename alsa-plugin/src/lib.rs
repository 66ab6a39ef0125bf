//! `libasound_module_pcm_dmixrs.so`: the ALSA PCM type `dmixrs`, so that unmodified ALSA
//! programs (aplay, speaker-test, GStreamer's alsasink, anything through `plug`) play into a
//! dmix server. alsa-lib's ioplug SDK drives it; `ffi` is the only file that touches
//! alsa-lib's C structures (and the only `unsafe`); `config` reads the keys and connects,
//! `playback` and `capture` are the two kinds of PCM, `waiter` makes poll() follow them;
//! `position` is their arithmetic (pure: no ring, no fds).
//!
//! ```text
//! pcm_type.dmixrs { lib "/usr/local/lib/alsa-lib/libasound_module_pcm_dmixrs.so" }
//! pcm.dmixrs { type dmixrs }              # keys: server NAME|PATH, name NAME, volume DB, source monitor|capture
//! pcm.!default { type plug slave.pcm "dmixrs" }
//! ```

mod capture;
mod config;
mod ffi;
mod playback;
mod position;
#[cfg(test)]
mod testing;
mod waiter;
