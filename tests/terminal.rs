//! What the tools do when their terminal goes away, and when a signal stops a live view.
//! tmux kill-server closes each pane's pty: the kernel hangs the tty up (reads give end of
//! file, writes EIO) and the pane's session gets SIGHUP. Every tool must then exit promptly
//! and never spin. Issue 14: an orphaned `dmix-stat --watch` read its dead tty at 100 % of a
//! core and ignored SIGTERM.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

/// How long a tool may take to notice that its terminal went away or that a signal came.
const PROMPT: Duration = Duration::from_secs(5);

/// The last line of `dmix-stat --watch`.
const KEY_HELP: &str = "↑↓ select  ←→ volume  m mute  q quit";

/// A program run by `sh` in a tmux session of its own. The shell writes the program's exit
/// status and CPU time (`times`) to a FIFO when it ends; it survives the hang-up
/// (`trap : HUP` defers the trap until its foreground program ended), while the program gets
/// the SIGHUP that the dying session leader sends its process group, unless it runs under
/// `setsid`, where only its dead tty tells it.
struct Pane {
    session: String,
    /// What the pane printed.
    screen: Fifo,
    /// `EXIT=<code>` then `times`, once the program ended.
    status: Fifo,
    started: Instant,
    /// Killed on drop unless seen to exit: a spinning orphan must not outlive a failed test.
    pid: Option<i32>,
    ended: bool,
}

/// How a program in a [`Pane`] ended.
#[derive(Debug)]
struct Ended {
    code: i32,
    /// Its user plus system CPU time.
    cpu: Duration,
    /// From the start of the pane to the status.
    lived: Duration,
}

impl Pane {
    /// Starts `program` (a shell command line) in a new session `session` of `tmux`.
    fn start(env: &Env, tmux: &Tmux, session: &str, program: &str) -> Pane {
        let screen = Fifo::new(env.path(&format!("{session}.screen")));
        let status = Fifo::new(env.path(&format!("{session}.status")));
        let cmd = format!(
            "sh -c 'trap : HUP; XDG_RUNTIME_DIR={} {program}; {{ echo EXIT=$?; times; }} > {}'; exec cat",
            env.runtime_dir().display(),
            status.path.display()
        );
        let pipe = format!("cat > {}", screen.path.display());
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "30",
            &cmd,
            ";",
            "pipe-pane",
            "-t",
            session,
            &pipe,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Pane { session: session.into(), screen, status, started: Instant::now(), pid: None, ended: false }
    }

    /// Waits (bounded) until `pid` shows as a client of the server at `sock` in `role`
    /// named `name`, and remembers it.
    fn find_client(&mut self, env: &Env, server: &str, role: &str, name: &str) {
        let what = format!("{}: no {role} client named {name}", self.session);
        let s = wait_for_snapshot(&stat_conn(env, server), &env.socket(server), &what, |s| {
            s.clients.iter().any(|c| c.role == role && c.name == name)
        });
        self.pid = s.clients.iter().find(|c| c.role == role && c.name == name).map(|c| c.pid as i32);
    }

    fn signal(&self, sig: Signal) {
        let pid = self.pid.expect("the program's pid was found");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// Waits up to [`PROMPT`] for the program to end; panics, with what the pane printed,
    /// if it did not.
    fn ended(&mut self) -> Ended {
        let Some(text) = self.status.try_wait_closed(PROMPT) else {
            let cpu = self.pid.map(cpu_time);
            panic!(
                "{}: still running {PROMPT:?} later, CPU time so far {cpu:?}; the pane printed:\n{}",
                self.session,
                self.screen.text()
            );
        };
        let lived = self.started.elapsed();
        self.ended = true;
        let lines: Vec<&str> = text.lines().collect();
        let code = lines.first().and_then(|l| l.strip_prefix("EXIT=")?.parse().ok());
        let code = code.unwrap_or_else(|| panic!("{}: no exit status in {text:?}", self.session));
        // The second line of `times`: the children's user and system time, e.g.
        // "0m0.042000s 0m0.012000s".
        let cpu = lines.get(2).map(|l| l.split_whitespace().map(shell_time).sum()).unwrap_or_default();
        Ended { code, cpu, lived }
    }

    /// What the pane shows now.
    fn capture(&self, tmux: &Tmux) -> String {
        String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-t", &self.session]).stdout).into_owned()
    }

    /// Waits (bounded, in time and tries) until what the pane shows, with its attributes as
    /// escape sequences (reverse video: ESC [ 7 m), holds a line that `want` accepts.
    fn wait_for_line(&self, tmux: &Tmux, what: &str, want: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        let mut shown = String::new();
        for _ in 0..2000 {
            let out = tmux.run(&["capture-pane", "-p", "-e", "-t", &self.session]);
            shown = String::from_utf8_lossy(&out.stdout).into_owned();
            if shown.lines().any(&want) || Instant::now() > deadline {
                break;
            }
        }
        assert!(shown.lines().any(want), "{}: {what}; the pane shows:\n{shown}", self.session);
    }

    /// Sends keys (tmux key names: Down, Left, m) to the program.
    fn keys(&self, tmux: &Tmux, keys: &[&str]) {
        let out = tmux.run(&[&["send-keys", "-t", self.session.as_str()][..], keys].concat());
        assert!(out.status.success(), "send-keys {keys:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        if let (Some(pid), false) = (self.pid, self.ended) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// "1m2.500000s" (what `times` prints) as a duration.
fn shell_time(t: &str) -> Duration {
    let (m, s) = t.trim_end_matches('s').split_once('m').unwrap_or(("0", t));
    Duration::from_secs_f64(m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0))
}

/// A live process's user plus system CPU time, from /proc/PID/stat.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    Duration::from_millis((f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)) * 10)
}

/// A program that waits on a dead tty must not burn CPU. These live well under a second
/// and use a few ms (drawing, decoding), in ticks of 10 ms; a spin would use most of the
/// time it lived, and one that never ends is caught by [`PROMPT`] first.
fn assert_no_spin(what: &str, e: &Ended) {
    let most = Duration::from_millis(100) + e.lived / 4;
    assert!(e.cpu < most, "{what} used {:?} of CPU in {:?}: {e:?}", e.cpu, e.lived);
}

#[test]
fn terminal_stat_watch_exits_when_its_terminal_goes_away() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let tmux = Tmux::new("gone");
    let stat = bin("dmix-stat");
    // With the SIGHUP of the hang-up, as reported; and under setsid, where no signal comes
    // and only the tty's end of input (or EIO) tells it.
    let mut hup = Pane::start(&env, &tmux, "hup", &format!("{} --watch --interval 50", stat.display()));
    hup.screen.wait_for(KEY_HELP);
    hup.find_client(&env, "default", "stat", "dmix-stat");
    let mut eof = Pane::start(&env, &tmux, "eof", &format!("setsid -w {} --watch --interval 50", stat.display()));
    eof.screen.wait_for(KEY_HELP);
    let sock = env.socket("default");
    let s = wait_for_snapshot(&stat_conn(&env, "default"), &sock, "two watchers", |s| {
        s.clients.iter().filter(|c| c.name == "dmix-stat").count() == 2
    });
    eof.pid = s.clients.iter().find(|c| c.name == "dmix-stat" && Some(c.pid as i32) != hup.pid).map(|c| c.pid as i32);
    assert!(tmux.run(&["kill-server"]).status.success());
    for (what, pane) in [("after SIGHUP", &mut hup), ("on a dead tty alone", &mut eof)] {
        let e = pane.ended();
        // The terminal going away is a normal end, like q: nobody is left to see a message.
        assert_eq!(e.code, 0, "{what}: {e:?}");
        assert_no_spin(what, &e);
    }
}

#[test]
fn terminal_stat_watch_stops_at_once_on_a_signal() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let tmux = Tmux::new("signal");
    // A minute between redraws: the signal must not wait for the next one.
    let program = format!("{} --watch --interval 60000", bin("dmix-stat").display());
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let mut pane = Pane::start(&env, &tmux, sig.as_str(), &program);
        pane.screen.wait_for(KEY_HELP);
        pane.find_client(&env, "default", "stat", "dmix-stat");
        pane.signal(sig);
        let e = pane.ended();
        assert_eq!(e.code, 0, "{sig}: {e:?}");
        // The screen came back (the pane printed "leave the alternate screen"); `exec cat`
        // keeps the pane showing what is left.
        pane.screen.wait_for("\u{1b}[?1049l");
        let shown = pane.capture(&tmux);
        assert!(!shown.contains("q quit"), "{sig}: the alternate screen was not left:\n{shown}");
        // Wait for the server to see it go, so that the next pane's watcher is the only one.
        wait_for_snapshot(&stat_conn(&env, "default"), &env.socket("default"), "the watcher left", |s| {
            !s.clients.iter().any(|c| c.name == "dmix-stat")
        });
    }
}

/// `dmix-stat --json`, parsed, as soon as `until` holds of it; bounded in time and tries,
/// taking a new one whenever the server's status changes.
fn wait_for_json(env: &Env, what: &str, until: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let stat = stat_conn(env, "default");
    let deadline = Instant::now() + DEADLINE;
    let mut tries = 0;
    loop {
        let out = env.run("dmix-stat", &["--json"]);
        assert!(out.status.success(), "dmix-stat --json: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("dmix-stat --json prints JSON");
        if until(&v) {
            return v;
        }
        tries += 1;
        assert!(tries < 1000 && Instant::now() < deadline, "{what}; dmix-stat --json last printed {v}");
        stat.ring().wait_any(Duration::from_millis(20));
    }
}

/// The client `id` in a `dmix-stat --json` object.
fn json_client(v: &serde_json::Value, id: u32) -> &serde_json::Value {
    let clients = v["clients"].as_array().expect("clients");
    clients.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no client {id} in {v}"))
}

/// A player playing a long tone, and its client id, once the server lists it.
fn long_player(env: &Env) -> (Proc, u32) {
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000 * 60, 2, 440.0, 0.5, 1));
    let play = env.spawn("dmix-play", &[env.path("a.wav").to_str().unwrap()]);
    let s = wait_for_clients(env, "default", "play", 1);
    let id = s.clients.iter().find(|c| c.role == "play").expect("a player").id;
    (play, id)
}

/// `dmix-stat --watch` is a mixer: the arrows select the master or a player and turn its
/// volume by 1 dB, m mutes; each key reaches the server, as `dmix-stat --json` then shows,
/// and the screen highlights the selected row.
#[test]
fn terminal_stat_watch_mixes_with_the_arrow_keys() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let (_play, id) = long_player(&env);
    let tmux = Tmux::new("mixer");
    let mut pane = Pane::start(&env, &tmux, "mixer", &format!("{} --watch --interval 50", bin("dmix-stat").display()));
    pane.screen.wait_for(KEY_HELP);
    pane.find_client(&env, "default", "stat", "dmix-stat");
    let selected = |what: &str| format!("\u{1b}[7m> {what}");
    pane.wait_for_line(&tmux, "the master is selected at first", |l| l.starts_with(&selected("master")));
    let player = |v: &serde_json::Value| {
        let c = json_client(v, id);
        (c["volume_db"].as_f64(), c["muted"].as_bool())
    };
    assert_eq!(player(&wait_for_json(&env, "the player", |_| true)), (Some(0.0), Some(false)));

    pane.keys(&tmux, &["Down", "Left", "Left", "Left"]);
    let v = wait_for_json(&env, "the player at -3 dB", |v| player(v).0 == Some(-3.0));
    assert_eq!(player(&v), (Some(-3.0), Some(false)));
    assert_eq!(v["server"]["master_volume_db"], 0.0, "the master moved: {v}");
    let row = selected(&format!("{id:>4} dmix-play"));
    pane.wait_for_line(&tmux, "the player is selected and at -3 dB", |l| l.starts_with(&row) && l.contains("-3.0 dB"));

    pane.keys(&tmux, &["m"]);
    let v = wait_for_json(&env, "the player muted", |v| player(v).1 == Some(true));
    assert_eq!(player(&v), (Some(-3.0), Some(true)));
    pane.wait_for_line(&tmux, "the player shows as muted", |l| l.starts_with(&row) && l.contains("-3.0 dB, muted"));

    pane.keys(&tmux, &["Up", "Right"]);
    let v = wait_for_json(&env, "the master at +1 dB", |v| v["server"]["master_volume_db"] == 1.0);
    assert_eq!(v["server"]["master_muted"], false);
    assert_eq!(player(&v), (Some(-3.0), Some(true)), "the player changed with the master");
    pane.wait_for_line(&tmux, "the master is selected and at +1 dB", |l| {
        l.starts_with(&selected("master")) && l.contains("+1.0 dB")
    });
    // The keys on the screen, and the server's answer to the last one on the status line.
    let shown = pane.capture(&tmux);
    assert!(shown.contains(KEY_HELP), "no key line:\n{shown}");
    assert!(shown.contains("master: +1.0 dB"), "no answer on the status line:\n{shown}");

    pane.keys(&tmux, &["q"]);
    let e = pane.ended();
    assert_eq!(e.code, 0, "{e:?}");
    pane.screen.wait_for("\u{1b}[?1049l");
    let shown = pane.capture(&tmux);
    assert!(!shown.contains("q quit"), "the alternate screen was not left:\n{shown}");
}

/// A key for a player that left after the screen was drawn is refused by the server: the
/// status line says so, the view goes on, and the selection moves to the row in its place.
#[test]
fn terminal_stat_watch_shows_a_refused_request_on_its_status_line() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let (mut play, id) = long_player(&env);
    let tmux = Tmux::new("refused");
    // A minute between redraws: only the keys redraw, so the player stays on the screen
    // after it left.
    let program = format!("{} --watch --interval 60000", bin("dmix-stat").display());
    let mut pane = Pane::start(&env, &tmux, "refused", &program);
    pane.screen.wait_for(KEY_HELP);
    pane.find_client(&env, "default", "stat", "dmix-stat");
    pane.keys(&tmux, &["j"]);
    let row = format!("\u{1b}[7m> {id:>4} dmix-play");
    pane.wait_for_line(&tmux, "the player is selected", |l| l.starts_with(&row));
    play.signal(Signal::SIGTERM);
    play.wait();
    wait_for_snapshot(&stat_conn(&env, "default"), &env.socket("default"), "the player left", |s| {
        !s.clients.iter().any(|c| c.role == "play")
    });
    pane.keys(&tmux, &["Left"]);
    pane.wait_for_line(&tmux, "the refusal on the status line", |l| l.contains(&format!("refused: no client {id}")));
    pane.wait_for_line(&tmux, "the master selected in the player's place", |l| l.starts_with("\u{1b}[7m> master"));
    pane.keys(&tmux, &["Escape"]);
    let e = pane.ended();
    assert_eq!(e.code, 0, "{e:?}");
}

#[test]
fn terminal_play_stops_when_its_terminal_goes_away() {
    let env = Env::new();
    write_wav_i16(&env.path("a.wav"), 48000, 2, &signal(48000 * 30, 2, 440.0, 0.5, 1));
    let _s = env.serve(&["--sink", "null"]);
    let tmux = Tmux::new("play");
    // The pane starts in the test process's directory, not the test's: the file in full.
    let program = format!("{} --name bar {}", bin("dmix-play").display(), env.path("a.wav").display());
    let mut pane = Pane::start(&env, &tmux, "play", &program);
    // The progress bar (stdout and stderr are the pane's terminal): "0:01 / 0:30".
    pane.screen.wait_for(" / 0:30");
    pane.find_client(&env, "default", "play", "bar");
    assert!(tmux.run(&["kill-server"]).status.success());
    let e = pane.ended();
    // SIGHUP stops it like SIGINT: what it queued is retracted, and it says it was cut short.
    assert_eq!(e.code, 130, "{e:?}");
    assert_no_spin("dmix-play", &e);
    wait_for_snapshot(&stat_conn(&env, "default"), &env.socket("default"), "the player left", |s| {
        !s.clients.iter().any(|c| c.role == "play")
    });
}

#[test]
fn terminal_serve_tee_share_and_json_watch_stop_when_their_terminal_goes_away() {
    let env = Env::new();
    let _s = env.serve(&["--sink", "null"]);
    let tmux = Tmux::new("tools");
    let out = env.path("out.wav");
    let mut serve =
        Pane::start(&env, &tmux, "serve", &format!("{} --name s2 --sink null", bin("dmix-serve").display()));
    serve.screen.wait_for("serving on");
    let s2 = stat_conn(&env, "s2");
    serve.pid = Some(dmix::stat::snapshot(&s2, &env.socket("s2")).unwrap().server.pid as i32);
    drop(s2);
    let mut tee = Pane::start(&env, &tmux, "tee", &format!("{} {}", bin("dmix-tee").display(), out.display()));
    tee.find_client(&env, "default", "tee", "dmix-tee");
    let mut share = Pane::start(&env, &tmux, "share", &format!("{} left=0", bin("dmix-share").display()));
    share.screen.wait_for("left -> channels");
    share.find_client(&env, "default", "share", "dmix-share");
    let mut json = Pane::start(&env, &tmux, "json", &format!("{} --watch --json", bin("dmix-stat").display()));
    json.screen.wait_for("\"clients\"");
    json.find_client(&env, "default", "stat", "dmix-stat");
    assert!(tmux.run(&["kill-server"]).status.success());
    // Each stops on the SIGHUP, as on SIGTERM: a normal end.
    for (what, pane) in [
        ("dmix-serve", &mut serve),
        ("dmix-tee", &mut tee),
        ("dmix-share", &mut share),
        ("dmix-stat --json", &mut json),
    ] {
        let e = pane.ended();
        assert_eq!(e.code, 0, "{what}: {e:?}");
        assert_no_spin(what, &e);
    }
    // The recording was finalized.
    let (spec, _) = read_wav(&out);
    assert_eq!(spec.sample_rate, 48000);
}

/// A child whose stderr is a pipe nobody reads any more (as when its terminal or its log
/// reader went away); killed and reaped on drop.
struct Mute {
    pid: i32,
    exits: std::sync::mpsc::Receiver<std::process::ExitStatus>,
    status: Option<std::process::ExitStatus>,
}

impl Mute {
    fn spawn(env: &Env, name: &str, args: &[&str]) -> Mute {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let mut child = env
            .command(name)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(write))
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let (tx, exits) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(s) = child.wait() {
                let _ = tx.send(s);
            }
        });
        Mute { pid, exits, status: None }
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        if self.status.is_none() {
            self.status = Some(self.exits.recv_timeout(DEADLINE).expect("still running"));
        }
        self.status.expect("set above")
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        if self.status.is_none() && self.exits.try_recv().is_err() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), Signal::SIGKILL);
            let _ = self.exits.recv_timeout(DEADLINE);
        }
    }
}

/// A line to a stderr that cannot be written is lost, not a panic: eprintln! panics then,
/// which made a tool exit 101 instead of its documented code, and would have killed the
/// server's control thread at its next log line. dmix-play without a server still exits 4;
/// a server logging refusals to a dead stderr keeps serving.
#[test]
fn terminal_a_dead_stderr_is_no_panic() {
    let env = Env::new();
    let mut play = Mute::spawn(&env, "dmix-play", &["nothing.wav"]);
    assert_eq!(play.wait().code(), Some(4), "dmix-play with nowhere to say 'no server'");
    let mut server = Mute::spawn(&env, "dmix-serve", &["--sink", "null"]);
    assert!(env.run("dmix-stat", &["--wait", "10"]).status.success());
    // Refused hellos are logged (the first one at once).
    for _ in 0..3 {
        let sock = dmix::transport::connect_socket(&env.socket("default")).expect("connect");
        dmix::transport::send(std::os::fd::AsFd::as_fd(&sock), b"garbage", &[]).expect("send");
        let mut buf = [0u8; 256];
        let _ = dmix::transport::recv_timeout(std::os::fd::AsFd::as_fd(&sock), &mut buf, DEADLINE);
    }
    let r = env.run("dmix-stat", &["--json"]);
    assert!(r.status.success(), "the server died logging to a dead stderr: {}", r.stderr);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid), Signal::SIGTERM).unwrap();
    assert_eq!(server.wait().code(), Some(0));
}

/// `nohup dmix-serve &`: a SIGHUP ignored when the tool starts stays ignored, so the server
/// outlives the terminal it was started from; SIGTERM still stops it. (signal-hook installs
/// its handler over an inherited SIG_IGN: the server stopped on the terminal's hang-up.)
#[test]
fn terminal_nohup_keeps_sighup_ignored() {
    let env = Env::new();
    let serve = bin("dmix-serve");
    let mut s = Proc::spawn(
        "dmix-serve",
        env.program("sh")
            .args(["-c", "trap '' HUP; exec \"$0\" --sink null"])
            .arg(&serve)
            .stdin(std::process::Stdio::null()),
    );
    s.wait_for_stderr("serving on");
    let stat = stat_conn(&env, "default");
    s.signal(Signal::SIGHUP);
    // A stopping server takes no more periods: three more mean it is still serving.
    let hw = stat.ring().hw_ptr();
    wait_hw_ptr(&env, "default", hw + 3 * 256);
    assert!(s.exited().is_none(), "the server stopped on an ignored SIGHUP: {}", s.finished_stderr());
    drop(stat);
    s.signal(Signal::SIGTERM);
    assert!(s.wait().success(), "{}", s.finished_stderr());
}
