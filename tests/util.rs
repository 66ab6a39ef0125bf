//! The test harness: each test gets its own directory and XDG_RUNTIME_DIR, spawns the real
//! binaries, synchronises on their output (the server's ready line, a child's exit), never
//! on sleeps, and kills and reaps every child in `Drop`, printing its stderr when the test
//! failed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any single wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn bin(name: &str) -> PathBuf {
    // One arm per binary: CARGO_BIN_EXE_* must be spelled out at compile time.
    match name {
        "dmix-serve" => PathBuf::from(env!("CARGO_BIN_EXE_dmix-serve")),
        "dmix-play" => PathBuf::from(env!("CARGO_BIN_EXE_dmix-play")),
        "dmix-stat" => PathBuf::from(env!("CARGO_BIN_EXE_dmix-stat")),
        "dmix-tee" => PathBuf::from(env!("CARGO_BIN_EXE_dmix-tee")),
        "dmix-share" => PathBuf::from(env!("CARGO_BIN_EXE_dmix-share")),
        other => panic!("unknown binary {other}"),
    }
}

/// A private directory with its own runtime dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        Env { dir, extra_env: Vec::new() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self, name: &str) -> PathBuf {
        self.runtime_dir().join("dmix").join(format!("{name}.sock"))
    }

    /// Sets a variable on every child started from now on.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.extra_env.push((k.into(), v.into()));
    }

    pub fn command(&self, name: &str) -> Command {
        self.program(bin(name))
    }

    /// Any program (aplay, speaker-test, ...) in this environment.
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("HOME", self.dir.path())
            // Remembered volumes (dmix-serve) stay in the test's directory.
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env_remove("DMIX_DEVICE")
            .current_dir(self.dir.path());
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    /// Starts a server and waits for its ready line.
    pub fn serve(&self, args: &[&str]) -> Proc {
        let mut p = Proc::spawn("dmix-serve", self.command("dmix-serve").args(args).stdin(Stdio::null()));
        p.wait_for_stderr("serving on");
        p
    }

    /// Starts a client with stdin piped.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        Proc::spawn(name, self.command(name).args(args).stdin(Stdio::piped()))
    }

    /// Runs a tool to completion (stdin closed) and returns its output.
    pub fn run(&self, name: &str, args: &[&str]) -> Output {
        let mut p = Proc::spawn(name, self.command(name).args(args).stdin(Stdio::null()));
        let status = p.wait();
        let stderr = p.finished_stderr();
        Output { status, stderr, stdout: p.stdout(), stdout_bytes: p.stdout_bytes() }
    }
}

pub struct Output {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
}

/// A running child whose stdout and stderr are collected by threads.
pub struct Proc {
    pub name: String,
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    lines: mpsc::Receiver<String>,
    exits: mpsc::Receiver<ExitStatus>,
    stdout_done: mpsc::Receiver<()>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let buf = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                buf.lock().unwrap().push_str(&line);
                buf.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        let mut out = child.stdout.take().unwrap();
        let obuf = Arc::clone(&stdout);
        let (dtx, stdout_done) = mpsc::channel();
        std::thread::spawn(move || {
            let _done = dtx;
            let mut b = [0u8; 65536];
            while let Ok(n) = out.read(&mut b) {
                if n == 0 {
                    break;
                }
                obuf.lock().unwrap().extend_from_slice(&b[..n]);
            }
        });
        // A reaper thread blocks in waitpid for this child alone, so waiting for its exit is
        // a channel receive with a deadline, never a polling loop.
        let (etx, exits) = mpsc::channel();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        std::thread::spawn(move || {
            use nix::sys::wait::{WaitStatus, waitpid};
            use std::os::unix::process::ExitStatusExt;
            loop {
                let raw = match waitpid(pid, None) {
                    Ok(WaitStatus::Exited(_, code)) => code << 8,
                    Ok(WaitStatus::Signaled(_, sig, _)) => sig as i32,
                    Ok(_) => continue,
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => 255 << 8,
                };
                let _ = etx.send(ExitStatus::from_raw(raw));
                return;
            }
        });
        Proc { name: name.into(), child, stderr, stdout, lines, exits, stdout_done, status: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("{}: no '{needle}' on stderr; stderr so far:\n{}", self.name, self.stderr()),
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// The exit status if the child has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.exits.try_recv().ok();
        }
        self.status
    }

    /// Waits (bounded) for the child to exit; panics with its stderr on timeout.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_timeout(DEADLINE)
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        match self.exits.recv_timeout(timeout) {
            Ok(s) => {
                self.status = Some(s);
                s
            }
            Err(_) => {
                self.signal(nix::sys::signal::Signal::SIGKILL);
                panic!("{} did not exit within {timeout:?}; stderr:\n{}", self.name, self.stderr());
            }
        }
    }

    /// Collected stderr once the child has exited and its pipe is drained.
    pub fn finished_stderr(&mut self) -> String {
        self.wait();
        // The reader threads end at EOF, which follows the exit; their channels then close.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) =
            self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if Instant::now() >= deadline {
                break;
            }
        }
        let _ = self.stdout_done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        self.stderr()
    }

    pub fn stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().expect("stdin is piped and not taken yet")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.exits.recv_timeout(DEADLINE);
        }
        if std::thread::panicking() {
            eprintln!("---- {} stderr ----\n{}", self.name, self.stderr());
        }
    }
}

/// Writes an S16 WAV.
pub fn write_wav_i16(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec =
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Renders one dmix-play run (`args`) through a freewheel server into a WAV, exactly: the
/// server waits for the player and exits when it leaves. Returns the player's output and
/// the samples rendered.
pub fn render_one(env: &Env, args: &[&str]) -> (Output, Vec<i32>) {
    let out = env.path("out.wav");
    let _ = std::fs::remove_file(&out);
    let sink = format!("wav:{}", out.display());
    let mut s = env.serve(&["--sink", &sink, "--freewheel", "--wait-clients", "1", "--exit-when-idle"]);
    let r = env.run("dmix-play", args);
    assert!(s.wait().success(), "{}", s.stderr());
    (r, read_wav(&out).1)
}

/// Reads any WAV as i32 samples (ints as they are, floats as f32 bits for exact checks).
pub fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i32>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let v = match spec.sample_format {
        hound::SampleFormat::Int => r.samples::<i32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap().to_bits() as i32).collect(),
    };
    (spec, v)
}

/// A deterministic test signal: a sine of `freq` Hz at `amp` of full scale plus a little
/// seeded noise, so that no two signals (or channels) are alike.
pub fn signal(frames: usize, channels: usize, freq: f64, amp: f64, seed: u32) -> Vec<i16> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut out = Vec::with_capacity(frames * channels);
    for f in 0..frames {
        for c in 0..channels {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = (x % 64) as f64 - 32.0;
            let t = f as f64 / 48000.0;
            let v = amp * 32767.0 * (2.0 * std::f64::consts::PI * freq * (c + 1) as f64 * t).sin() + noise;
            out.push(v.round().clamp(-32768.0, 32767.0) as i16);
        }
    }
    out
}

/// An inspector connection to the server `name` (it never holds a freewheel render back).
pub fn stat_conn(env: &Env, name: &str) -> dmix::client::Connection {
    dmix::client::Connection::open(env.socket(name).to_str().unwrap(), dmix::protocol::Role::Stat, "test", 0)
        .expect("stat connection")
}

/// A private tmux server (one per test) that drives programs in a terminal; killed on drop.
pub struct Tmux(String);

impl Tmux {
    /// A tmux server named after `what` and this process.
    pub fn new(what: &str) -> Tmux {
        Tmux(format!("dmix-{what}-{}", std::process::id()))
    }

    /// Runs one tmux command on this server.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux (Debian package tmux) drives the terminal tests")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// A FIFO in a test's directory whose bytes a thread forwards as they come: what a tmux
/// pane prints (pipe-pane), or what a pane's shell writes when a program ended. The thread
/// ends when the last writer closes it.
pub struct Fifo {
    pub path: PathBuf,
    rx: mpsc::Receiver<Vec<u8>>,
    got: Vec<u8>,
}

impl Fifo {
    pub fn new(path: PathBuf) -> Fifo {
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let p = path.clone();
        std::thread::spawn(move || {
            // Opening blocks until a writer opens it: that is the wait.
            let Ok(mut f) = std::fs::File::open(&p) else { return };
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = f.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Fifo { path, rx, got: Vec::new() }
    }

    /// Waits up to `timeout` until what came contains `want`, and returns all that came;
    /// `None` on timeout.
    pub fn try_wait_for(&mut self, want: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while !String::from_utf8_lossy(&self.got).contains(want) {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(chunk) => self.got.extend(chunk),
                Err(_) => return None,
            }
        }
        Some(self.text())
    }

    /// Waits up to `timeout` until the last writer closed the FIFO, and returns all that
    /// came; `None` on timeout.
    pub fn try_wait_closed(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(chunk) => self.got.extend(chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Some(self.text()),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
            }
        }
    }

    /// As [`Fifo::try_wait_for`] within [`DEADLINE`]; panics with what came on timeout.
    pub fn wait_for(&mut self, want: &str) -> String {
        match self.try_wait_for(want, DEADLINE) {
            Some(text) => text,
            None => panic!("{}: never got '{want}':\n{}", self.path.display(), self.text()),
        }
    }

    /// All that came so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }
}

/// Waits (bounded) until the server `name` has taken at least `frames` frames, watching its
/// status through an inspector connection (which never holds a freewheel render back).
pub fn wait_hw_ptr(env: &Env, name: &str, frames: u64) {
    let stat = stat_conn(env, name);
    let deadline = Instant::now() + DEADLINE;
    while stat.ring().hw_ptr() < frames {
        assert!(Instant::now() < deadline, "the server never reached frame {frames}");
        stat.ring().wait_hw_ptr(frames, Duration::from_millis(100));
    }
}

/// Waits (bounded) until the server `name` lists at least `n` clients of `role`, and
/// returns the snapshot that showed them.
pub fn wait_for_clients(env: &Env, name: &str, role: &str, n: usize) -> dmix::stat::Snapshot {
    let what = format!("fewer than {n} {role} clients joined");
    wait_for_snapshot(&stat_conn(env, name), &env.socket(name), &what, |s| {
        s.clients.iter().filter(|c| c.role == role).count() >= n
    })
}

/// Waits (bounded) until a snapshot of the server at `sock`, taken through the inspector
/// connection `stat`, satisfies `until`, and returns it; a new snapshot is taken whenever
/// the ring changes. Fails with `what` and the clients last seen.
pub fn wait_for_snapshot(
    stat: &dmix::client::Connection,
    sock: &Path,
    what: &str,
    mut until: impl FnMut(&dmix::stat::Snapshot) -> bool,
) -> dmix::stat::Snapshot {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = dmix::stat::snapshot(stat, sock).unwrap();
        if until(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}; clients last seen: {:?}", s.clients);
        stat.ring().wait_any(Duration::from_millis(20));
    }
}

/// A fake server at `path` that accepts every connection and closes it at once, unread (a
/// server dropping excess connections, seen from a client), after sending the refusal
/// `say` if any; stopped and joined on drop.
pub struct HangUpServer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HangUpServer {
    pub fn start(path: &Path, say: Option<dmix::protocol::Refusal>) -> HangUpServer {
        use std::os::fd::AsFd;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let listener = dmix::transport::Listener::bind(path, 0o600).unwrap();
        let (stop, accepted) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let mut pfd = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(20u8));
                // Closed unread: a hello that came first is thrown away.
                while let Ok(Some(conn)) = listener.accept() {
                    if let Some(r) = say {
                        let (b, n) = dmix::protocol::Reply::Refused(r, "test".into()).encode();
                        let _ = dmix::transport::send(conn.as_fd(), &b[..n], &[]);
                    }
                    drop(conn);
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        HangUpServer { stop, accepted, thread: Some(thread) }
    }

    /// Connections accepted and closed so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HangUpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `systemd-analyze verify` of the units named in `dir`: its output, for the caller's
/// assertions (what a missing ExecStart binary may excuse differs from test to test).
pub fn systemd_verify(dir: &Path, units: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze not runnable ({e}): install the Debian package systemd"))
}

/// Runs scripts/install-units with `args`, `PATH` as given (the binaries' directory first),
/// the user's configuration in `config`, and `systemctl` for systemctl (":" for none).
pub fn install_units(args: &[&str], path: &str, config: &Path, systemctl: &std::ffi::OsStr) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-units"))
        .args(args)
        .env("PATH", path)
        .env("XDG_CONFIG_HOME", config)
        .env("SYSTEMCTL", systemctl)
        .output()
        .unwrap()
}
