//! What an ALSA application sees of its queue (the dmixrs plugin's tests, tests/alsa_plugin.rs):
//! opens PCM for playback (S16_LE, 2 channels, 48 kHz, interleaved) with a buffer of BUFFER
//! frames, writes FRAMES frames of a quiet tone, and prints what alsa-lib reports, on one line:
//! `buffer B avail A delay D state S`. With `drain`, it then drains and prints `drained`.
//!
//! Usage: alsa_queue PCM BUFFER FRAMES [drain]

use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(pcm), Some(buffer), Some(frames)) =
        (args.get(1), args.get(2).and_then(|s| s.parse().ok()), args.get(3).and_then(|s| s.parse::<usize>().ok()))
    else {
        eprintln!("usage: alsa_queue PCM BUFFER FRAMES [drain]");
        std::process::exit(2);
    };
    if let Err(e) = run(pcm, buffer, frames, args.get(4).is_some_and(|a| a == "drain")) {
        eprintln!("alsa_queue: {pcm}: {e}");
        std::process::exit(1);
    }
}

fn run(name: &str, buffer: alsa::pcm::Frames, frames: usize, drain: bool) -> alsa::Result<()> {
    let pcm = PCM::new(name, Direction::Playback, false)?;
    {
        let hw = HwParams::any(&pcm)?;
        hw.set_access(Access::RWInterleaved)?;
        hw.set_format(Format::s16())?;
        hw.set_channels(2)?;
        hw.set_rate(48000, ValueOr::Nearest)?;
        hw.set_buffer_size_near(buffer)?;
        pcm.hw_params(&hw)?;
    }
    let buffer = pcm.hw_params_current()?.get_buffer_size()?;
    let tone: Vec<i16> = (0..frames * 2).map(|i| ((i / 2) % 48) as i16 * 100 - 2400).collect();
    let io = pcm.io_i16()?;
    let mut off = 0;
    while off < tone.len() {
        off += io.writei(&tone[off..])? * 2;
    }
    let avail = pcm.avail()?;
    let delay = pcm.delay()?;
    println!("buffer {buffer} avail {avail} delay {delay} state {:?}", pcm.state());
    if drain {
        pcm.drain()?;
        println!("drained");
    }
    Ok(())
}
