//! Bad input files (issue 4): the corpus from scripts/make-bad-corpus, each file alone and
//! several together, with and without --strict, and a file that grows while it is read.
//! Every bad file gets one line naming it and the reason and a non-zero code; none leaves the
//! server in a bad state.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dmix::protocol::Role;

use crate::util::*;

/// Runs scripts/make-bad-corpus into `dir` and returns its manifest: (name, exit, reason).
fn corpus(dir: &Path) -> Vec<(String, i32, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-bad-corpus");
    let out = Command::new(&script).arg(dir).output().expect("run scripts/make-bad-corpus");
    assert!(out.status.success(), "make-bad-corpus failed: {}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(dir.join("MANIFEST")).unwrap();
    let entries: Vec<_> = manifest
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "manifest line {l:?}");
            (f[0].to_string(), f[1].parse().unwrap(), f[2].to_string())
        })
        .collect();
    assert!(entries.len() >= 20, "the corpus shrank: {entries:?}");
    entries
}

/// The position of `needle` in `hay`, searching from the end.
fn rfind(hay: &[i32], needle: &[i32]) -> Option<usize> {
    (0..=hay.len().checked_sub(needle.len())?).rev().find(|&i| hay[i..i + needle.len()] == *needle)
}

fn to_i32(s: &[i16]) -> Vec<i32> {
    s.iter().map(|&v| i32::from(v)).collect()
}

#[test]
fn badinput_corpus_one_line_each_and_the_server_unharmed() {
    let env = Env::new();
    let dir = env.path("corpus");
    let entries = corpus(&dir);
    let out = env.path("out.wav");
    let mut s = env.serve(&["--sink", &format!("wav:{}", out.display()), "--freewheel"]);
    for (name, code, reason) in &entries {
        let file = format!("corpus/{name}");
        let r = env.run("dmix-play", &["-q", &file]);
        assert_eq!(r.status.code(), Some(*code), "{name}: {}", r.stderr);
        if *code == 0 {
            assert!(r.stderr.is_empty(), "{name}: {}", r.stderr);
            continue;
        }
        assert_eq!(r.stderr.lines().count(), 1, "{name}: one line, got:\n{}", r.stderr);
        assert!(r.stderr.starts_with(&format!("dmix-play: {file}: ")), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(reason.as_str()), "{name}: wanted {reason:?} in {}", r.stderr);
        assert!(!r.stderr.contains("panick"), "{name}: {}", r.stderr);
    }
    // Unharmed: nobody left in the slot table (the server frees the last player's slot once
    // it sees the hang-up, which can be just after that player exited), and the next player
    // is rendered exactly.
    let what = "a player's slot was never freed";
    wait_for_snapshot(&stat_conn(&env, "default"), &env.socket("default"), what, |s| {
        s.clients.iter().all(|c| c.role != "play")
    });
    let last = signal(24000, 2, 330.0, 0.4, 9);
    write_wav_i16(&env.path("last.wav"), 48000, 2, &last);
    let r = env.run("dmix-play", &["-q", "last.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(s.wait().success(), "{}", s.stderr());
    assert_eq!(s.stderr().matches("panick").count(), 0, "{}", s.stderr());
    let (_, got) = read_wav(&out);
    let at = rfind(&got, &to_i32(&last)).expect("the last player's samples are in the render, exactly");
    assert!(got[at + last.len()..].iter().all(|&v| v == 0), "something after the last player");
}

#[test]
fn badinput_several_files_play_the_rest_unless_strict() {
    let env = Env::new();
    let a = signal(9600, 2, 440.0, 0.3, 1);
    let b = signal(7200, 2, 550.0, 0.3, 2);
    write_wav_i16(&env.path("a.wav"), 48000, 2, &a);
    write_wav_i16(&env.path("b.wav"), 48000, 2, &b);
    std::fs::write(
        env.path("noise.mp3"),
        (0..20000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::create_dir(env.path("dir.flac")).unwrap();
    let want: Vec<i32> = to_i32(&a).into_iter().chain(to_i32(&b)).collect();

    // Bad ones first, between and last: each named on its line, then a count; a and b back
    // to back, exactly.
    let (r, got) = render_one(&env, &["-q", "missing.wav", "a.wav", "noise.mp3", "b.wav", "dir.flac"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stderr);
    assert!(lines[0].starts_with("dmix-play: missing.wav: no such file"), "{}", r.stderr);
    assert!(lines[1].starts_with("dmix-play: noise.mp3: not a recognised audio file"), "{}", r.stderr);
    assert!(lines[2].starts_with("dmix-play: dir.flac: is a directory"), "{}", r.stderr);
    assert_eq!(lines[3], "dmix-play: 3 of 5 inputs could not be played");
    assert_eq!(&got[..want.len()], &want[..]);
    assert!(got[want.len()..].iter().all(|&v| v == 0));

    // --strict: a plays, noise.mp3 stops everything, b is never tried.
    let (r, got) = render_one(&env, &["-q", "--strict", "a.wav", "noise.mp3", "b.wav"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stderr);
    assert!(lines[0].starts_with("dmix-play: noise.mp3: "), "{}", r.stderr);
    assert_eq!(lines[1], "dmix-play: 1 of 3 inputs could not be played; --strict: 1 not tried");
    let a32 = to_i32(&a);
    assert_eq!(&got[..a32.len()], &a32[..]);
    assert!(got[a32.len()..].iter().all(|&v| v == 0), "b was played despite --strict");
}

/// A canonical WAV header for S16 stereo at 48 kHz declaring `data` bytes (0xFFFFFFFF: an
/// unknown length, as streaming writers such as `ffmpeg -f wav -` put it).
fn header(data: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data.saturating_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    for v in [1u16, 2] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in [48000u32, 48000 * 4] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in [4u16, 16] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h
}

fn bytes(s: &[i16]) -> Vec<u8> {
    s.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn badinput_a_file_that_grows_while_read() {
    let env = Env::new();
    let all = signal(48000 * 4, 2, 440.0, 0.3, 5);
    let first = 48000 * 2 / 4; // a quarter second of stereo samples

    // Unknown length: dmix-play plays what is there when it reaches the end, however far the
    // writer got: always an exact prefix of what was written, at least what was there first.
    let path = env.path("growing.wav");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&header(u32::MAX)).unwrap();
    f.write_all(&bytes(&all[..first])).unwrap();
    let out = env.path("out.wav");
    let sink = format!("wav:{}", out.display());
    let mut s = env.serve(&["--sink", &sink, "--freewheel", "--wait-clients", "1", "--exit-when-idle"]);
    let mut p = env.spawn("dmix-play", &["-q", "growing.wav"]);
    // The writer goes on in chunks of a few periods, each once the server has taken nearly
    // all written so far (the player is then reading at the end of the file), until all is
    // written or the player is done.
    let stat = dmix::client::Connection::open(env.socket("default").to_str().unwrap(), Role::Stat, "test", 0)
        .expect("stat connection");
    let chunk = 1024 * 2;
    let mut written = first;
    let deadline = Instant::now() + DEADLINE;
    while written < all.len() && p.exited().is_none() {
        let end = (written + chunk).min(all.len());
        f.write_all(&bytes(&all[written..end])).unwrap();
        written = end;
        let near = (written / 2) as u64 - 2048;
        while stat.ring().hw_ptr() < near && p.exited().is_none() {
            assert!(Instant::now() < deadline, "the player neither played nor ended");
            stat.ring().wait_hw_ptr(near, Duration::from_millis(20));
        }
    }
    drop(stat);
    let status = p.wait();
    let stderr = p.finished_stderr();
    assert!(status.success(), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(s.wait().success(), "{}", s.stderr());
    let (_, got) = read_wav(&out);
    let heard = got.iter().rposition(|&v| v != 0).map_or(0, |i| i + 1);
    assert!(heard >= first - 8, "less than the first quarter second was played: {heard}");
    assert!(heard <= written, "more was played than written");
    assert_eq!(&got[..heard], &to_i32(&all[..heard])[..], "not an exact prefix");
    println!("growing file: {first} samples at the start, {written} written, {heard} played");

    // A header that promises the whole length, the writer behind: the end is reported.
    let path = env.path("behind.wav");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&header((all.len() * 2) as u32)).unwrap();
    f.write_all(&bytes(&all[..first])).unwrap();
    let (r, got) = render_one(&env, &["-q", "behind.wav"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("dmix-play: behind.wav: corrupt or truncated: the stream ends after 12000 of 192000 frames"),
        "{}",
        r.stderr
    );
    assert_eq!(&got[..first], &to_i32(&all[..first])[..]);
    // The rest arrives later: played again, the whole file is fine.
    f.write_all(&bytes(&all[first..])).unwrap();
    let (r, got) = render_one(&env, &["-q", "behind.wav"]);
    assert!(r.status.success(), "{}", r.stderr);
    assert_eq!(&got[..all.len()], &to_i32(&all)[..]);
}
