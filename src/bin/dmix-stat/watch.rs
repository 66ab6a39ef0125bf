//! The live view: alternate screen, raw mode for single keys, restored on every exit
//! path (a guard's Drop), including errors.
//!
//! Keys are read here, from the terminal's fd, not through crossterm's event reader:
//! crossterm 0.29 reads the tty in a loop inside `event::poll` that leaves only on an
//! event or EAGAIN, so a terminal that went away (a hung-up tty reads 0 bytes, a closed
//! pty EIO, at once and forever) kept it reading at 100 % of a core, and the stop flag
//! raised by SIGHUP or SIGTERM was never looked at again. Here the wait for a key is a
//! poll of at most [`SLICE`], the stop flag is checked between slices, and end of input,
//! EIO or a hang-up end the view.
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossterm::{cursor, execute, queue, terminal};
use nix::poll::{PollFd, PollFlags, poll};

use super::*;

/// The longest the loop waits without looking at the stop flag: a signal interrupts the
/// poll at once, but one that lands just before it is seen only at the end of the slice.
const SLICE: Duration = Duration::from_millis(100);

struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        terminal::enable_raw_mode().map_err(|e| Error::sys("terminal raw mode", e))?;
        let guard = Screen;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .map_err(|e| Error::sys("terminal", e))?;
        Ok(guard)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Best effort: the terminal must come back even when drawing failed. On a
        // terminal that went away both fail (EIO), which is fine: nothing is left to restore.
        let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Where keys come from: the terminal crossterm put in raw mode, which is stdin when
/// stdin is a terminal, else the controlling terminal.
enum Keyboard {
    Stdin(std::io::Stdin),
    Tty(std::fs::File),
}

impl AsFd for Keyboard {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Keyboard::Stdin(s) => s.as_fd(),
            Keyboard::Tty(f) => f.as_fd(),
        }
    }
}

/// Why the view ends.
#[derive(Debug, PartialEq)]
enum End {
    /// q, Esc or Ctrl-C.
    Quit,
    /// The terminal hung up or its input ended: nobody is looking any more.
    Gone,
}

const CTRL_C: u8 = 0x03;
const ESC: u8 = 0x1b;

impl Keyboard {
    fn open() -> Result<Keyboard> {
        use std::io::IsTerminal;
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Ok(Keyboard::Stdin(stdin));
        }
        let tty = std::fs::File::open("/dev/tty").map_err(|e| Error::sys("open /dev/tty", e))?;
        Ok(Keyboard::Tty(tty))
    }

    /// Reads keys until `until`, the stop flag or the end of the view, whichever comes
    /// first; `None` when the view goes on.
    fn wait(&self, until: Instant, stop: &AtomicBool) -> Result<Option<End>> {
        let mut buf = [0u8; 256];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            // Rounded up: a timeout rounded down to 0 ms would poll in a tight loop.
            let ms = u16::try_from(left.min(SLICE).as_micros().div_ceil(1000)).unwrap_or(100);
            let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) | Err(nix::Error::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(Error::sys("poll terminal", e)),
            }
            let ready = fds[0].revents().unwrap_or(PollFlags::empty());
            if ready.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                return Ok(Some(End::Gone));
            }
            match nix::unistd::read(self, &mut buf) {
                // A hung-up terminal reads as end of file; a pty whose other side closed, EIO.
                Ok(0) | Err(nix::Error::EIO) => return Ok(Some(End::Gone)),
                Ok(n) if quits(&buf[..n]) => return Ok(Some(End::Quit)),
                Ok(_) | Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                Err(e) => return Err(Error::sys("read terminal", e)),
            }
        }
    }
}

/// Whether a read from the raw terminal holds q, Ctrl-C (raw mode turns it into a byte,
/// not a SIGINT) or Esc. A terminal sends a key's escape sequence (an arrow: ESC [ A) in
/// one write, so an ESC that ends the read is the Esc key, and the sequence after any
/// other ESC is skipped whole: its letters are not keys.
fn quits(keys: &[u8]) -> bool {
    let mut i = 0;
    while i < keys.len() {
        match keys[i] {
            b'q' | CTRL_C => return true,
            ESC if i + 1 == keys.len() => return true,
            ESC => match keys[i + 1] {
                // CSI: parameter and intermediate bytes up to one final byte (ECMA-48).
                b'[' => {
                    i += 2;
                    while i < keys.len() && !(0x40..=0x7e).contains(&keys[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                // SS3: one more byte (F1-F4, arrows in application mode).
                b'O' => i += 3,
                // Alt with a key: the key counts (Alt-q quits, as q does).
                _ => i += 1,
            },
            _ => i += 1,
        }
    }
    false
}

fn meter(db: Option<f64>, width: usize) -> String {
    let level = db.map_or(0.0, |d| ((d + 60.0) / 60.0).clamp(0.0, 1.0));
    let n = (level * width as f64).round() as usize;
    format!("{}{}", "#".repeat(n), ".".repeat(width - n))
}

fn draw(s: &Snapshot) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let text = render_text(s);
    queue!(out, cursor::MoveTo(0, 0), terminal::Clear(terminal::ClearType::All))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.push(String::new());
    for c in s.clients.iter().filter(|c| !c.peak_dbfs.is_empty()) {
        for (ch, p) in c.peak_dbfs.iter().enumerate() {
            let db = p.map_or("-inf".to_string(), |d| format!("{d:5.1}"));
            lines.push(format!("{:>4} ch{:<2} {} {:>6} dBFS  {}", c.id, ch, meter(*p, 40), db, c.name));
        }
    }
    lines.push(String::new());
    lines.push("q: quit".into());
    for l in lines {
        write!(out, "{l}\r\n")?;
    }
    out.flush()
}

/// Runs the view until a quit key, a stop signal (SIGINT, SIGTERM, SIGHUP) or the
/// terminal going away, all of which are a normal end; the server going away is an error.
pub fn run(conn: &Connection, socket: &std::path::Path, interval: Duration) -> Result<()> {
    let stop = dmix::cli::stop_flag();
    let keys = Keyboard::open()?;
    let _screen = Screen::enter()?;
    while !stop.load(Ordering::Relaxed) {
        conn.check_alive()?;
        match draw(&snapshot(conn, socket)?) {
            Ok(()) => {}
            // A write to a terminal that hung up: the same end as reading it.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => return Err(Error::sys("write stdout", e)),
        }
        if keys.wait(Instant::now() + interval, &stop)?.is_some() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quits;

    #[test]
    fn stat_watch_keys_quit_on_q_ctrl_c_and_a_lone_esc_only() {
        for keys in [&b"q"[..], b"xq", b"\x03", b"\x1b", b"a\x1b", b"\x1bq", b"\x1b[Aq"] {
            assert!(quits(keys), "{keys:?}");
        }
        // Arrows, F-keys and a mouse-free CSI with a 'q' final byte are not keys.
        for keys in [&b""[..], b"x", b"\x1b[A", b"\x1bOP", b"\x1b[15~", b"\x1b[1 q", b"\x1b["] {
            assert!(!quits(keys), "{keys:?}");
        }
    }
}
