//! Decode entry point for benchmarks (issue 5, benchmark 6; run by bench/decode.sh): runs
//! dmix-play's whole input path (decode, channel map, resampling, gain, conversion to the mix
//! scale) for a file and discards the result. Prints frames and seconds.
//!
//! Usage: decode FILE [RATE] [CHANNELS]   (defaults 48000, 2: the server's format)

use std::time::Instant;

use dmix::decode::{DecodeOptions, Decoder, Target};

fn main() -> dmix::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: decode FILE [RATE] [CHANNELS]");
        std::process::exit(2);
    };
    let rate_hz = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(48000);
    let channels = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let started = Instant::now();
    let mut dec =
        Decoder::open(path, Target { rate_hz, channels }, &DecodeOptions { raw: None, volume_db: 0.0, stop: None })?;
    let mut buf = Vec::new();
    let mut frames = 0u64;
    let mut check = 0i64;
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        frames += n as u64;
        // Touch the output so nothing is optimized away.
        check = check.wrapping_add(i64::from(buf[0]));
    }
    println!("{frames} frames in {:.3} s (check {check})", started.elapsed().as_secs_f64());
    Ok(())
}
