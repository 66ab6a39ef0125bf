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
    hup.screen.wait_for("q: quit");
    hup.find_client(&env, "default", "stat", "dmix-stat");
    let mut eof = Pane::start(&env, &tmux, "eof", &format!("setsid -w {} --watch --interval 50", stat.display()));
    eof.screen.wait_for("q: quit");
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
        pane.screen.wait_for("q: quit");
        pane.find_client(&env, "default", "stat", "dmix-stat");
        pane.signal(sig);
        let e = pane.ended();
        assert_eq!(e.code, 0, "{sig}: {e:?}");
        // The screen came back (the pane printed "leave the alternate screen"); `exec cat`
        // keeps the pane showing what is left.
        pane.screen.wait_for("\u{1b}[?1049l");
        let shown = pane.capture(&tmux);
        assert!(!shown.contains("q: quit"), "{sig}: the alternate screen was not left:\n{shown}");
        // Wait for the server to see it go, so that the next pane's watcher is the only one.
        wait_for_snapshot(&stat_conn(&env, "default"), &env.socket("default"), "the watcher left", |s| {
            !s.clients.iter().any(|c| c.name == "dmix-stat")
        });
    }
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
