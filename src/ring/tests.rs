use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::error::Error;
use crate::format::{MIX_MAX, MIX_MIN, SampleFormat};
use crate::sys::Wake;

const P: u32 = 16;
const R: u32 = 64;

fn server() -> ServerRing {
    let params = RingParams {
        rate_hz: 48000,
        channels: 2,
        format: SampleFormat::S16Le,
        period_frames: P,
        ring_frames: R,
        monitor_frames: 128,
        capture_frames: 0,
        freewheel: true,
    };
    ServerRing::create(params).unwrap()
}

fn client(s: &ServerRing) -> ClientRing {
    let fds = s.client_fds(true);
    let owned = [fds.status, fds.mix, fds.monitor, fds.capture].map(|f| f.try_clone_to_owned().unwrap());
    ClientRing::attach(*s.params(), [&owned[0], &owned[1], &owned[2], &owned[3]], true).unwrap()
}

fn take(s: &ServerRing, hw: u64) -> Vec<i32> {
    let mut out = vec![0; (P * 2) as usize];
    s.take_period(hw, &mut out);
    s.publish_hw_ptr(hw + u64::from(P));
    out
}

fn ramp(frames: u32, k: i32) -> Vec<i32> {
    (0..frames as i32 * 2).map(|i| (i + 1) * k).collect()
}

#[test]
fn ring_server_only_regions_cannot_be_reopened_writable() {
    use std::os::fd::AsRawFd;
    let s = server();
    let fds = s.client_fds(false);
    let len = |what| match what {
        "mix" => s.region_bytes()[1] as usize,
        _ => 1,
    };
    for (what, fd) in [("status", fds.status), ("monitor", fds.monitor), ("capture", fds.capture), ("mix", fds.mix)] {
        // What a hostile client would try: reopen its read-only fd read-write through
        // /proc and map that shared and writable.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let rw = std::fs::OpenOptions::new().read(true).write(true).open(&path);
        let mapped = rw.map_err(|e| Error::sys("reopen", e)).and_then(|f| {
            let f = OwnedFd::from(f);
            super::map::Region::attach(what, f.as_fd(), len(what), true).map(|_| ())
        });
        if what == "mix" {
            assert!(mapped.is_ok(), "the mix region must stay writable for players: {mapped:?}");
        } else {
            assert!(mapped.is_err(), "the {what} region was mapped writable through /proc");
        }
    }
}

#[test]
fn ring_mix_add_near_the_end_of_time_does_not_panic() {
    // Fuzz finding (fuzz/fuzz_targets/ring_attach.rs): a status region claiming hw_ptr
    // near u64::MAX made mix_add's frame arithmetic overflow.
    let s = server();
    s.publish_hw_ptr(u64::MAX - 10);
    let c = client(&s);
    let out = c.mix_add(c.hw_ptr(), &ramp(R, 1), false);
    assert!(out.frames <= R as usize && out.late_frames <= out.frames);
}

#[test]
fn ring_a_frame_is_heard_after_the_device_buffer_when_paced() {
    let paced = ServerRing::create(RingParams { freewheel: false, ..*server().params() }).unwrap();
    let freewheel = server();
    for s in [&paced, &freewheel] {
        assert_eq!(client(s).heard_at(100), 100, "no device buffer: heard when taken");
        s.status().stats.0.device_buffer_frames.store(1024, Ordering::Relaxed);
        assert_eq!(client(s).device_buffer_frames(), 1024);
    }
    assert_eq!(client(&paced).heard_at(100), 1124, "paced: after the device's buffer");
    assert_eq!(client(&freewheel).heard_at(100), 100, "freewheel: nobody listens");
    paced.status().stats.0.device_buffer_frames.store(u64::MAX, Ordering::Relaxed);
    assert_eq!(client(&paced).heard_at(100), u64::MAX, "a garbage buffer does not overflow");
}

#[test]
fn ring_paced_sleep_returns_once_the_target_is_published() {
    let params = RingParams { freewheel: false, ..*server().params() };
    let s = ServerRing::create(params).unwrap();
    let c = client(&s);
    s.publish_hw_ptr(u64::from(P));
    assert_eq!(c.sleep_until_hw_ptr(u64::from(P), Duration::from_secs(5)), Wake::Woken, "already there");
    // Far ahead and nothing published: the clock sleep is skipped (beyond the timeout)
    // and the futex wait times out.
    assert_eq!(c.sleep_until_hw_ptr(u64::from(P) * 1_000_000, Duration::from_millis(1)), Wake::TimedOut);
    // The server publishes while (or before) the client sleeps: it returns, however the
    // two interleave (bounded by the test's own deadline, never by a sleep).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let target = u64::from(P) * 3;
            while c.hw_ptr() < target {
                c.sleep_until_hw_ptr(target, Duration::from_secs(5));
            }
            tx.send(()).unwrap();
        });
        s.publish_hw_ptr(u64::from(P) * 2);
        s.publish_hw_ptr(u64::from(P) * 3);
        rx.recv_timeout(Duration::from_secs(10)).expect("the sleeper never returned");
    });
}

#[test]
fn ring_two_clients_sum_and_clamp() {
    let s = server();
    let (a, b) = (client(&s), client(&s));
    assert_eq!(a.mix_add(0, &ramp(P, 3), false), AddOutcome { frames: P as usize, late_frames: 0 });
    b.mix_add(0, &ramp(P, 5), false);
    let out = take(&s, 0);
    assert_eq!(out, ramp(P, 8));
    // Clamped, never wrapped.
    a.mix_add(u64::from(P), &vec![MIX_MAX; 2 * P as usize], false);
    b.mix_add(u64::from(P), &vec![MIX_MAX; 2 * P as usize], false);
    assert!(take(&s, u64::from(P)).iter().all(|&v| v == MIX_MAX));
    a.mix_add(u64::from(2 * P), &vec![MIX_MIN; 2 * P as usize], false);
    b.mix_add(u64::from(2 * P), &vec![MIX_MIN; 2 * P as usize], false);
    assert!(take(&s, u64::from(2 * P)).iter().all(|&v| v == MIX_MIN));
}

#[test]
fn ring_take_zeroes_so_nothing_plays_twice() {
    let s = server();
    let a = client(&s);
    a.mix_add(0, &ramp(P, 1), false);
    take(&s, 0);
    // One lap later the same slots are silent.
    let mut hw = u64::from(P);
    while hw < u64::from(R + P) {
        assert!(take(&s, hw).iter().all(|&v| v == 0), "frame {hw}");
        hw += u64::from(P);
    }
}

#[test]
fn ring_late_sample_is_dropped_never_played_a_lap_later() {
    let s = server();
    let a = client(&s);
    // The client read hw_ptr = 0 and stalled; meanwhile the server took period 0.
    assert_eq!(a.hw_ptr(), 0);
    take(&s, 0);
    let out = a.mix_add(0, &ramp(P, 1), false);
    assert_eq!(out, AddOutcome { frames: P as usize, late_frames: P as usize });
    let mut hw = u64::from(P);
    while hw <= u64::from(2 * R) {
        assert!(take(&s, hw).iter().all(|&v| v == 0), "late samples surfaced at frame {hw}");
        hw += u64::from(P);
    }
}

#[test]
fn ring_write_a_lap_ahead_is_refused() {
    let s = server();
    let a = client(&s);
    // Frame R shares a slot with frame 0, which is not taken yet.
    assert_eq!(a.mix_add(u64::from(R), &ramp(1, 1), false).frames, 0);
    // After the take it is writable.
    let mut hw = 0;
    while hw < u64::from(P) {
        take(&s, hw);
        hw += u64::from(P);
    }
    assert_eq!(a.mix_add(u64::from(R), &ramp(1, 1), false).frames, 1);
}

#[test]
fn ring_write_across_the_end_wraps() {
    let s = server();
    let a = client(&s);
    let mut hw = 0;
    while hw < u64::from(R - P) {
        take(&s, hw);
        hw += u64::from(P);
    }
    // From R - P to R + P: the last period of lap 0 and the first of lap 1.
    let data = ramp(2 * P, 1);
    assert_eq!(a.mix_add(hw, &data, false).frames, 2 * P as usize);
    let first = take(&s, hw);
    let second = take(&s, hw + u64::from(P));
    assert_eq!([first, second].concat(), data);
}

#[test]
fn ring_retraction_removes_only_what_was_not_taken() {
    let s = server();
    let (a, b) = (client(&s), client(&s));
    let da = ramp(2 * P, 2);
    let db = ramp(2 * P, 7);
    a.mix_add(0, &da, false);
    b.mix_add(0, &db, false);
    let first = take(&s, 0);
    // a retracts everything it wrote: the first period is gone already.
    let r = a.mix_add(0, &da, true);
    assert_eq!(r.late_frames, P as usize);
    let second = take(&s, u64::from(P));
    let half = (2 * P) as usize;
    let expect_first: Vec<i32> = da[..half].iter().zip(&db[..half]).map(|(x, y)| x + y).collect();
    assert_eq!(first, expect_first);
    assert_eq!(second, db[half..].to_vec());
}

#[test]
fn ring_monitor_holds_the_clamped_mix() {
    let s = server();
    let a = client(&s);
    a.mix_add(0, &ramp(P, 1), false);
    let out = take(&s, 0);
    let mut got = vec![0; out.len()];
    assert_eq!(a.reader(0, ReadSource::Monitor).copy_out(0, &mut got), 0, "nothing was overwritten");
    assert_eq!(got, out);
}

#[test]
fn ring_attach_refuses_a_wrong_version() {
    let s = server();
    // Simulate a server of another layout version.
    s.status().header.0.layout_version.store(99, Ordering::Release);
    let fds = s.client_fds(true);
    let owned = [fds.status, fds.mix, fds.monitor, fds.capture].map(|f| f.try_clone_to_owned().unwrap());
    let e = ClientRing::attach(*s.params(), [&owned[0], &owned[1], &owned[2], &owned[3]], true).err().unwrap();
    assert_eq!(e.kind(), crate::ErrorKind::Incompatible);
    assert!(e.to_string().contains("99"));
}

#[test]
fn ring_client_cannot_map_status_writable() {
    let s = server();
    let fds = s.client_fds(false);
    let ro = fds.status.try_clone_to_owned().unwrap();
    assert!(map::Region::attach("status", ro.as_fd(), 4096, true).is_err());
    let mix_ro = fds.mix.try_clone_to_owned().unwrap();
    assert!(map::Region::attach("mix", mix_ro.as_fd(), 4096, true).is_err());
    assert!(map::Region::attach("status", ro.as_fd(), 4096, false).is_ok());
}

#[test]
fn ring_memfds_refuse_truncation() {
    let s = server();
    let fd = s.client_fds(true).mix.try_clone_to_owned().unwrap();
    assert!(nix::unistd::ftruncate(&fd, 0).is_err());
    assert!(nix::unistd::ftruncate(&fd, 1 << 30).is_err());
}

#[test]
fn ring_reader_copy_out_reports_what_the_server_may_have_overwritten() {
    // Moved from the plugin's position tests: the overrun rule lives in ReadStream alone.
    // The monitor holds 128 frames; a reader at frame `pos` still has it while the writer
    // is at most a whole ring ahead.
    let s = server();
    let a = client(&s);
    let r = a.reader(0, ReadSource::Monitor);
    let mut frame = [0i32; 2];
    s.publish_hw_ptr(10);
    assert_eq!(r.copy_out(0, &mut frame), 0, "early positions do not underflow");
    s.publish_hw_ptr(100 + 128);
    assert_eq!(r.copy_out(100, &mut frame), 0, "a whole ring ahead: still there");
    s.publish_hw_ptr(101 + 128);
    assert_eq!(r.copy_out(100, &mut frame), 1, "one frame past: the first was overwritten");
    assert_eq!(r.copy_out(90, &mut frame), 11, "not limited to what was copied");
}

#[test]
fn ring_history_keeps_what_was_added_for_a_pause() {
    // What a paused PCM keeps to add again: the frames as they were added, oldest first,
    // across the end of the ring; only the last ring's worth is there.
    let s = server();
    let a = client(&s);
    let w = a.writer(0);
    let mut h = History::new(s.params());
    let data = ramp(R, 3);
    let mut hw = 0;
    while hw < u64::from(R - P) {
        take(&s, hw);
        hw += u64::from(P);
    }
    assert_eq!(w.add(hw, &data, &mut h).frames, R as usize);
    let mut kept = Vec::new();
    h.copy_into(hw, hw + u64::from(R), &mut kept);
    assert_eq!(kept, data, "across the end of the ring");
    kept.clear();
    h.copy_into(0, hw + u64::from(R), &mut kept);
    assert_eq!(kept, data, "no more than a ring's worth");
    // Retracting them all leaves silence.
    w.retract(hw, hw + u64::from(R), &mut h);
    assert!(take(&s, hw).iter().all(|&v| v == 0));
}

/// A ring deep enough for a 10 ms ramp at 48 kHz (480 frames).
fn deep_server() -> ServerRing {
    let params = RingParams {
        rate_hz: 48000,
        channels: 2,
        format: SampleFormat::S16Le,
        period_frames: P,
        ring_frames: 2048,
        monitor_frames: 2048,
        capture_frames: 0,
        freewheel: true,
    };
    ServerRing::create(params).unwrap()
}

/// Takes frames [hw, hw + n) (whole periods) and returns the left channel.
fn take_left(s: &ServerRing, hw: u64, n: u64) -> Vec<i32> {
    let mut left = Vec::new();
    let mut out = vec![0; (P * 2) as usize];
    for at in (hw..hw + n).step_by(P as usize) {
        s.take_period(at, &mut out);
        s.publish_hw_ptr(at + u64::from(P));
        left.extend(out.chunks(2).map(|f| f[0]));
    }
    left
}

#[test]
fn ring_volume_change_re_adds_the_queue_from_a_period_past_hw_ptr_ramped() {
    let s = deep_server();
    let c = client(&s);
    let w = c.writer(0);
    let mut h = History::new(s.params());
    let frames = vec![1000; 1024 * 2];
    assert_eq!(w.add(0, &frames, &mut h).frames, 1024);
    assert!(!w.follow_volume(&mut h), "no change yet");
    s.slot(0).set_volume(Volume { db: -6.0206, muted: false });
    assert!(w.volume_changed_since(h.volume_mark()));
    assert!(w.follow_volume(&mut h));
    let g = Volume { db: -6.0206, muted: false }.factor();
    let left = take_left(&s, 0, 1024);
    // The period the server may be taking keeps the old volume; then a 480-frame ramp.
    assert!(left[..16].iter().all(|&v| v == 1000));
    for k in 0..480 {
        let f = 1.0 + (g - 1.0) * (k + 1) as f64 / 480.0;
        assert_eq!(left[16 + k], (1000.0 * f).round() as i32, "ramp frame {k}");
    }
    assert!(left[496..].iter().all(|&v| v == 500), "steady at half");
}

#[test]
fn ring_mute_then_new_adds_are_silent_and_retracted_frames_stay_out() {
    let s = deep_server();
    let c = client(&s);
    let w = c.writer(0);
    let mut h = History::new(s.params());
    assert_eq!(w.add(0, &vec![1000; 512 * 2], &mut h).frames, 512);
    s.slot(0).set_volume(Volume { db: -3.0, muted: true });
    w.follow_volume(&mut h);
    let left = take_left(&s, 0, 512);
    assert!(left[..16].iter().all(|&v| v == 1000));
    assert!(left[496..].iter().all(|&v| v == 0), "muted after the ramp");
    // Added while muted: silent.
    assert_eq!(w.add(512, &vec![1000; 512 * 2], &mut h).frames, 512);
    // Taken back (a stop), then unmuted: what was retracted must not come back.
    w.retract(768, 1024, &mut h);
    s.slot(0).set_volume(Volume { db: -3.0, muted: false });
    w.follow_volume(&mut h);
    let left = take_left(&s, 512, 512);
    assert!(left[..16].iter().all(|&v| v == 0), "the period being taken keeps the old volume");
    let g = Volume { db: -3.0, muted: false }.factor();
    for k in 0..240 {
        assert_eq!(left[16 + k], (1000.0 * g * (k + 1) as f64 / 480.0).round() as i32, "ramp frame {k}");
    }
    assert!(left[256..].iter().all(|&v| v == 0), "retracted frames came back");
}

#[test]
fn ring_zero_db_adds_exactly_and_copy_into_gives_the_source() {
    let s = deep_server();
    let c = client(&s);
    let w = c.writer(0);
    let mut h = History::new(s.params());
    let input = ramp(64, 3);
    assert_eq!(w.add(0, &input, &mut h).frames, 64);
    s.slot(0).set_volume(Volume { db: -20.0, muted: false });
    w.follow_volume(&mut h);
    let mut out = Vec::new();
    h.copy_into(0, 64, &mut out);
    assert_eq!(out, input, "copy_into gives what was given, before the volume");
}

/// A change of volume after a retraction (a paused or stopped ALSA PCM) leaves the frames
/// taken back silent: the queue ends where the retraction began.
#[test]
fn ring_volume_change_after_a_retraction_leaves_it_silent() {
    let s = server();
    let c = client(&s);
    let w = c.writer(0);
    let mut h = History::new(s.params());
    let data = ramp(R - P, 100);
    assert_eq!(w.add(0, &data, &mut h).frames, (R - P) as usize);
    w.retract(0, u64::from(R - P), &mut h);
    s.slot(0).set_volume(Volume { db: -6.0, muted: false });
    assert!(w.follow_volume(&mut h), "a new volume");
    let mut hw = 0;
    while hw < u64::from(R - P) {
        assert!(take(&s, hw).iter().all(|&v| v == 0), "sound at frame {hw} after the retraction");
        hw += u64::from(P);
    }
}

/// A thread that does not hold the History sleeps on its mark: a new volume wakes it, and
/// so does its own word; with neither, it times out.
#[test]
fn ring_wait_volume_or_wakes_on_the_volume_and_on_its_own_word() {
    use std::sync::atomic::AtomicU32;
    let s = server();
    let c = client(&s);
    let w = c.writer(0);
    let mut h = History::new(s.params());
    w.follow_volume(&mut h);
    let mark = h.volume_mark();
    let own = AtomicU32::new(7);
    assert_eq!(w.wait_volume_or(&own, 7, mark, Duration::from_millis(20)), Wake::TimedOut);
    assert!(!w.volume_changed_since(mark));
    std::thread::scope(|t| {
        t.spawn(|| {
            own.store(8, Ordering::Release);
            crate::sys::futex_wake(&own);
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while own.load(Ordering::Acquire) == 7 {
            assert!(std::time::Instant::now() < deadline, "never woken by its own word");
            w.wait_volume_or(&own, 7, mark, Duration::from_secs(1));
        }
    });
    s.slot(0).set_volume(Volume { db: -3.0, muted: false });
    assert!(w.volume_changed_since(mark));
    assert_eq!(w.wait_volume_or(&own, 8, mark, Duration::from_secs(10)), Wake::Woken, "a new volume wakes it");
    assert_eq!(w.sleep_until_hw_ptr_marked(u64::MAX / 2, Duration::from_secs(10), mark), Wake::Woken);
}
