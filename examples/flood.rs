//! Admission under a flood of slow connections (issue 14; figures in docs/RELIABILITY.md).
//! Starts nothing itself: floods the server DEVICE (a name or a socket path) with up to
//! CONNECTIONS connections (tests/flooder.rs: a third random bytes, a third "DMIX", a third
//! silent, each replaced when the server closes it), lets it settle for a second, then opens
//! a player connection TRIES times in a row (`Connection::open`, as dmix-play does: hello,
//! welcome, admission by the period loop) and times each. Prints the connections held,
//! the players admitted out of those tried, the admission time (p50, p99, max) and each
//! distinct failure.
//!
//! Usage: cargo run --release --example flood -- DEVICE [CONNECTIONS] [TRIES]
//! (defaults 300 and 200), against e.g. `dmix-serve --sink null`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dmix::client::Connection;
use dmix::protocol::Role;

#[path = "../tests/flooder.rs"]
mod flooder;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(device) = args.get(1) else {
        eprintln!("usage: flood DEVICE [CONNECTIONS] [TRIES]");
        std::process::exit(2);
    };
    let number = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (connections, tries) = (number(2, 300), number(3, 200));
    let socket = match dmix::paths::resolve_device(device) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flood: {e}");
            std::process::exit(1);
        }
    };
    // 300 connections and their replacements need more than the usual 1024 fds at times.
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let flood = flooder::Flood::start(&socket, connections);
    std::thread::sleep(Duration::from_secs(1));
    let (opened0, start) = (flood.opened(), Instant::now());
    let mut held = Vec::with_capacity(tries);
    let mut times = Vec::with_capacity(tries);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..tries {
        held.push(flood.held());
        let t = Instant::now();
        match Connection::open(device, Role::Play, "flood-probe", 0) {
            Ok(conn) => {
                times.push(t.elapsed());
                drop(conn);
            }
            Err(e) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let opened_per_s = (flood.opened() - opened0) as f64 / start.elapsed().as_secs_f64();
    drop(flood);
    times.sort_unstable();
    held.sort_unstable();
    let ms = |q: f64| {
        times.get(((times.len() as f64 - 1.0) * q).round() as usize).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "flood of {connections}: held {} to {} (median {}), {opened_per_s:.0} new connections/s; \
         admitted {} of {tries}; admission p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        held.first().unwrap_or(&0),
        held.last().unwrap_or(&0),
        held.get(held.len() / 2).unwrap_or(&0),
        times.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0),
    );
    for (e, n) in failures {
        println!("  {n} x {e}");
    }
}
