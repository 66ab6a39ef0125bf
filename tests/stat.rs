//! dmix-stat: the table, JSON, --wait, --list and the live view in a terminal.

use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn stat_json_reports_both_players_with_kernel_pids() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000, 2, 440.0, 0.5, 1));
    // Held until a third player: the two stay connected while we look.
    let _s = env.serve(&["--sink", "null", "--freewheel", "--wait-clients", "3", "--buffer", "2048"]);
    let pa = env.spawn("dmix-play", &["--name", "first", "a.wav"]);
    let pb = env.spawn("dmix-play", &["--name", "second", "a.wav"]);
    wait_for_clients(&env, "default", "play", 2);
    // Admitted is not yet written: wait (bounded) until both have filled the ring.
    let sock = env.socket("default");
    let stat = stat_conn(&env, "default");
    wait_for_snapshot(&stat, &sock, "the players never filled the ring", |s| {
        s.clients.iter().filter(|c| c.role == "play").all(|c| c.queued_ms.unwrap_or(0.0) > 42.6)
    });
    let r = env.run("dmix-stat", &["--json"]);
    assert!(r.status.success(), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
    assert_eq!(v["server"]["rate_hz"], 48000);
    assert_eq!(v["server"]["mode"], "freewheel");
    assert_eq!(v["server"]["sink"], "null");
    let clients = v["clients"].as_array().unwrap();
    for (p, name) in [(&pa, "first"), (&pb, "second")] {
        let c = clients.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} missing: {v}"));
        assert_eq!(c["role"], "play");
        assert_eq!(c["pid"], p.pid(), "{name}: the pid must be the client's own");
        assert_eq!(c["peak_dbfs"].as_array().unwrap().len(), 2);
        // The channels it plays, as the table shows them; its hello's 0 ("the server's")
        // once showed here as 0.
        assert_eq!(c["channels"], 2, "{c}");
        // Held at hw_ptr 0, each has filled the whole ring (2048 frames), its freewheel latency.
        assert!((c["queued_ms"].as_f64().unwrap() - 42.67).abs() < 0.1, "{c}");
        assert!((c["latency_ms"].as_f64().unwrap() - 42.67).abs() < 0.1, "{c}");
    }
    // The inspector itself shows as role stat, and holds nothing back.
    assert!(clients.iter().any(|c| c["role"] == "stat" && c["channels"] == 2), "{v}");
    let text = env.run("dmix-stat", &[]);
    assert!(text.stdout.contains("first") && text.stdout.contains("second"), "{}", text.stdout);
}

#[test]
fn stat_wait_answers_at_once_or_times_out() {
    let env = Env::new();
    let t = Instant::now();
    let r = env.run("dmix-stat", &["--wait", "0.3"]);
    assert_eq!(r.status.code(), Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("no server answered"), "{}", r.stderr);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Started after the waiter: the waiter returns as soon as the server answers.
    let mut waiter = env.spawn("dmix-stat", &["--wait", "30"]);
    let _s = env.serve(&["--sink", "null"]);
    assert!(waiter.wait().success(), "{}", waiter.finished_stderr());
}

#[test]
fn stat_list_shows_running_and_stale_servers() {
    let env = Env::new();
    let _a = env.serve(&["--sink", "null", "--name", "alpha"]);
    let stale = env.socket("beta");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let r = env.run("dmix-stat", &["--list"]);
    assert!(r.status.success(), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].starts_with("alpha") && lines[0].contains("running"), "{}", r.stdout);
    assert!(lines[1].starts_with("beta") && lines[1].contains("stale"), "{}", r.stdout);
}

#[test]
fn stat_watch_in_a_terminal_shows_meters_and_quits_on_q() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.5, 1));
    let _s = env.serve(&["--sink", "null"]);
    let _p = env.spawn("dmix-play", &["a.wav"]);
    wait_for_clients(&env, "default", "play", 1);
    let t = Tmux::new("watch");
    let tmux = |args: &[&str]| t.run(args);
    let cmd = format!(
        "XDG_RUNTIME_DIR={} {} --watch --interval 50; echo EXIT=$?; exec cat",
        env.runtime_dir().display(),
        bin("dmix-stat").display()
    );
    // Everything the pane prints streams into a FIFO we read: the test waits on the output
    // itself. `exec cat` keeps the pane and its last screen until kill-server, with no
    // timer; tmux's remain-on-exit would replace the screen with its own.
    let mut printed = Fifo::new(env.path("pane.fifo"));
    let pipe = format!("cat > {}", printed.path.display());
    let started =
        tmux(&["new-session", "-d", "-s", "w", "-x", "120", "-y", "30", &cmd, ";", "pipe-pane", "-t", "w", &pipe]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let mut screen = |want: &str| {
        printed.wait_for(want);
        let out = tmux(&["capture-pane", "-p", "-t", "w"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The key line is the screen's last: all of it was drawn.
    let shown = screen("m mute  q quit");
    let meter = shown.lines().find(|l| l.contains(" dmix-play ") && l.contains(" ch0 "));
    assert!(meter.is_some_and(|l| l.contains("####")), "no meter in the player's row:\n{shown}");
    assert!(tmux(&["send-keys", "-t", "w", "q"]).status.success());
    let after = screen("EXIT=");
    assert!(after.contains("EXIT=0"), "{after}");
    assert!(!after.contains("dBFS"), "the alternate screen was not left:\n{after}");
}
