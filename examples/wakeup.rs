//! Wake-up latency probe (issue 5, benchmark 4; run by bench/wakeup.sh): joins a server as
//! an inspector, sleeps on the status futex for every period as a player does, and measures
//! from the server's publish of hw_ptr (`stats.hw_published_ns`, CLOCK_MONOTONIC) to its own
//! resume. Prints one line: wakes, missed periods, p50/p99/max in microseconds.
//!
//! Usage: wakeup DEVICE SECONDS

use std::time::{Duration, Instant};

use dmix::client::Connection;
use dmix::protocol::Role;
use dmix::sys::monotonic_ns;

fn main() -> dmix::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(device), Some(seconds)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok())) else {
        eprintln!("usage: wakeup DEVICE SECONDS");
        std::process::exit(2);
    };
    let conn = Connection::open(device, Role::Stat, "wakeup-probe", 0)?;
    let ring = conn.ring();
    let period = u64::from(ring.params().period_frames);
    let mut lat_ns: Vec<u64> = Vec::with_capacity((seconds * 48000 / period + 16) as usize);
    let mut missed = 0u64;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut target = ring.hw_ptr() / period * period + period;
    while Instant::now() < end {
        while ring.hw_ptr() < target {
            ring.wait_hw_ptr(target, Duration::from_secs(1));
            conn.check_alive()?;
        }
        let woke = monotonic_ns();
        let hw = ring.hw_ptr();
        let published = ring.hw_published_ns();
        // Only a wake for the period just published counts: if the server moved on
        // meanwhile, this wake was late by more than a period.
        if hw == target && ring.hw_ptr() == hw {
            lat_ns.push(woke.saturating_sub(published));
        } else {
            missed += 1;
        }
        target = hw + period;
    }
    lat_ns.sort_unstable();
    let pick = |q: f64| lat_ns.get(((lat_ns.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    println!(
        "wakes {} missed {} p50 {:.1} us p99 {:.1} us max {:.1} us",
        lat_ns.len(),
        missed,
        pick(0.5) as f64 / 1000.0,
        pick(0.99) as f64 / 1000.0,
        lat_ns.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    Ok(())
}
