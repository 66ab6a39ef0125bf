//! The mix kernel (issue 5, benchmark 1): a client's add of one period into the shared sum
//! ring, the server's take-and-rearm with clamp and monitor copy, the conversion to the
//! device format, and a plain memcpy of the bytes a period occupies in the sum ring (the
//! physical reference). Throughput in samples. Run: `cargo bench --bench mix`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dmix::format::SampleFormat;
use dmix::ring::{ClientRing, History, RingParams, ServerRing, Volume};

fn ring(period: u32) -> (ServerRing, ClientRing) {
    let params = RingParams {
        rate_hz: 48000,
        channels: 2,
        format: SampleFormat::S16Le,
        period_frames: period,
        ring_frames: period * 4,
        monitor_frames: period * 16,
        capture_frames: 0,
        freewheel: true,
    };
    let server = ServerRing::create(params).expect("ring");
    let f = server.client_fds(true);
    let fds = [f.status, f.mix, f.monitor, f.capture].map(|fd| fd.try_clone_to_owned().expect("dup"));
    let client = ClientRing::attach(params, [&fds[0], &fds[1], &fds[2], &fds[3]], true).expect("attach");
    (server, client)
}

fn kernel(c: &mut Criterion) {
    for period in [64u32, 256] {
        let samples = period as usize * 2;
        let mut g = c.benchmark_group(format!("period {period}, stereo"));
        g.throughput(Throughput::Elements(samples as u64));
        let input: Vec<i32> = (0..samples as i32).map(|i| (i * 37) % 30000 - 15000).collect();
        let mut out = vec![0i32; samples];

        // Only the add is timed; the server takes each period so the ring never fills.
        let (server, client) = ring(period);
        let mut hw = 0u64;
        g.bench_function("client add", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let done = client.mix_add(hw, black_box(&input), false);
                    spent += t.elapsed();
                    debug_assert_eq!(done.frames, period as usize);
                    server.take_period(hw, &mut out);
                    hw += u64::from(period);
                    server.publish_hw_ptr(hw);
                }
                spent
            })
        });

        // Only the take (swap-and-rearm, clamp, monitor copy) is timed, of a period a client
        // filled.
        let (server, client) = ring(period);
        let mut hw = 0u64;
        g.bench_function("server take + clamp", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    client.mix_add(hw, &input, false);
                    let t = Instant::now();
                    server.take_period(hw, black_box(&mut out));
                    spent += t.elapsed();
                    hw += u64::from(period);
                    server.publish_hw_ptr(hw);
                }
                spent
            })
        });

        let mut bytes = vec![0u8; samples * 2];
        g.bench_function("convert to S16_LE", |b| {
            b.iter(|| {
                for (m, o) in black_box(&input).iter().zip(bytes.chunks_exact_mut(2)) {
                    SampleFormat::S16Le.mix_to_le_bytes(*m, o);
                }
                black_box(&bytes);
            })
        });

        // The sum ring holds a 64-bit word per sample: the bytes an add and a take touch.
        // Offset by a cache line: equal offsets within a page (4 KiB aliasing) made the
        // 4 KiB copy twenty times slower than the 1 KiB one here.
        let src = vec![1u64; samples + 8];
        let mut dst = vec![0u64; samples];
        g.bench_function("memcpy of the period's ring bytes", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src[8..]));
                black_box(&dst);
            })
        });
        g.finish();
    }
}

/// What a volume change costs the client (issue 16): a player with 500 ms queued (24,000
/// stereo frames at 48 kHz, in a one-second ring) follows a new volume, re-adding everything
/// queued past the next period as one delta a sample. Alternates -6 dB and 0 dB so every
/// sample changes. The server's side is one store and two futex wakes, off the period loop.
fn volume_change(c: &mut Criterion) {
    let params = RingParams {
        rate_hz: 48000,
        channels: 2,
        format: SampleFormat::S16Le,
        period_frames: 256,
        ring_frames: 48128,
        monitor_frames: 48128,
        capture_frames: 0,
        freewheel: false,
    };
    let server = ServerRing::create(params).expect("ring");
    let f = server.client_fds(true);
    let fds = [f.status, f.mix, f.monitor, f.capture].map(|fd| fd.try_clone_to_owned().expect("dup"));
    let client = ClientRing::attach(params, [&fds[0], &fds[1], &fds[2], &fds[3]], true).expect("attach");
    let w = client.writer(0);
    let mut history = History::new(&params);
    let queued: Vec<i32> = (0..48000i32).map(|i| ((i * 37) % 30000 - 15000) << 8).collect();
    let out = w.add(0, &queued, &mut history);
    assert_eq!(out.frames, 24000);
    let mut g = c.benchmark_group("volume change, 500 ms queued, stereo");
    g.throughput(Throughput::Elements(queued.len() as u64));
    let mut quiet = false;
    g.bench_function("client re-add", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                quiet = !quiet;
                server.slot(0).set_volume(Volume { db: if quiet { -6.0 } else { 0.0 }, muted: false });
                let t = Instant::now();
                let changed = w.follow_volume(black_box(&mut history));
                spent += t.elapsed();
                debug_assert!(changed);
            }
            spent
        })
    });
}

criterion_group!(benches, kernel, volume_change);
criterion_main!(benches);
