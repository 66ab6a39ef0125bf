//! The live view, a mixer: the server and its clients as `dmix-stat` prints them, then one
//! row per volume (the master, then each player, with its level meters), a status line and
//! the keys. Up and down select a row, left and right change its volume by [`STEP_DB`], m
//! mutes or unmutes it: each a mixer request on the inspector's own connection, as
//! `dmix-stat --volume` sends. Alternate screen, raw mode for single keys, restored on every
//! exit path (a guard's Drop), including errors.
//!
//! Keys are read here, from the terminal's fd, not through crossterm's event reader:
//! crossterm 0.29 reads the tty in a loop inside `event::poll` that leaves only on an
//! event or EAGAIN, so a terminal that went away (a hung-up tty reads 0 bytes, a closed
//! pty EIO, at once and forever) kept it reading at 100 % of a core, and the stop flag
//! raised by SIGHUP or SIGTERM was never looked at again. Here the wait for a key is a
//! poll of at most [`SLICE`], the stop flag is checked between slices, and end of input,
//! EIO or a hang-up end the view. So the arrows' escape sequences are parsed here too
//! ([`keys`]).
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crossterm::style::{Attribute, Print, SetAttribute};
use crossterm::{cursor, execute, queue, terminal};
use dmix::protocol::{MuteHow, Target};
use dmix::ring::Volume;
use nix::poll::{PollFd, PollFlags, poll};

use super::*;

/// The longest the loop waits without looking at the stop flag: a signal interrupts the
/// poll at once, but one that lands just before it is seen only at the end of the slice.
const SLICE: Duration = Duration::from_millis(100);

/// What one press of left or right changes a volume by, dB: alsamixer's step on most cards.
const STEP_DB: f32 = 1.0;

/// How long a read that ends inside an escape sequence waits for the rest of it before a
/// lone ESC counts as the Esc key. A terminal writes a key's sequence at once, but a slow
/// link (ssh) may split it across reads, and a split arrow must not quit. vim's ttimeoutlen
/// is 100 ms; curses waits a second.
const ESC_WAIT_MS: u16 = 50;

/// How long the view waits for the server to answer a key: the server's control thread
/// answers a volume at once, so only a server that stopped answering takes this long.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The last line of the screen.
const KEY_HELP: &str = "↑↓ select  ←→ volume  m mute  q quit";

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

/// A key the view acts on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    /// q, Esc or Ctrl-C.
    Quit,
    /// Up or k.
    Up,
    /// Down or j.
    Down,
    /// Right, +, = (+ unshifted) or l.
    Louder,
    /// Left, - or h.
    Softer,
    /// m: mute or unmute.
    Mute,
}

/// What came from the keyboard.
#[derive(Debug, PartialEq)]
enum Input {
    /// Keys, in the order pressed (never none).
    Keys(Vec<Key>),
    /// The time to redraw came, or the stop flag.
    Nothing,
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

    /// Reads until a key, `until`, the stop flag or the end of the terminal, whichever
    /// comes first.
    fn wait(&self, until: Instant, stop: &AtomicBool) -> Result<Input> {
        let mut buf = [0u8; 256];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.load(Ordering::Relaxed) {
                return Ok(Input::Nothing);
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
                return Ok(Input::Gone);
            }
            match nix::unistd::read(self, &mut buf) {
                // A hung-up terminal reads as end of file; a pty whose other side closed, EIO.
                Ok(0) | Err(nix::Error::EIO) => return Ok(Input::Gone),
                Ok(mut n) => {
                    if unfinished_escape(&buf[..n]) {
                        n += self.rest_of_escape(&mut buf[n..]);
                    }
                    let keys = keys(&buf[..n]);
                    if !keys.is_empty() {
                        return Ok(Input::Keys(keys));
                    }
                }
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                Err(e) => return Err(Error::sys("read terminal", e)),
            }
        }
    }

    /// Reads what follows an unfinished escape sequence into `buf` if it comes within
    /// [`ESC_WAIT_MS`]; the bytes read. Nothing, or an error, leaves the read as it was (a
    /// lone ESC is the Esc key); the next wait sees any error again.
    fn rest_of_escape(&self, buf: &mut [u8]) -> usize {
        let mut fds = [PollFd::new(self.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ESC_WAIT_MS) {
            Ok(1..) if fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) => {
                nix::unistd::read(self, buf).unwrap_or(0)
            }
            _ => 0,
        }
    }
}

/// Whether `bytes` end inside an escape sequence: after an ESC, an ESC [ with no final byte
/// yet, or an ESC O.
fn unfinished_escape(bytes: &[u8]) -> bool {
    let Some(at) = bytes.iter().rposition(|&b| b == ESC) else { return false };
    match &bytes[at + 1..] {
        [] | [b'O'] => true,
        [b'[', rest @ ..] => rest.iter().all(|b| !(0x40..=0x7e).contains(b)),
        _ => false,
    }
}

/// The keys in a read from the raw terminal. Ctrl-C is a byte there, not a SIGINT. A
/// terminal sends a key's escape sequence in one write (an arrow: ESC [ A, or ESC O A in
/// application cursor mode), so an ESC that ends the read (after [`ESC_WAIT_MS`] for the
/// rest of a split one) is the Esc key, and the sequence after any other ESC is read whole: an arrow is a key, any other sequence (F-keys, Home,
/// a CSI whose final byte is q) none, and its letters are never keys.
fn keys(bytes: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let key = match bytes[i] {
            ESC if i + 1 == bytes.len() => {
                i += 1;
                Some(Key::Quit)
            }
            ESC => match bytes[i + 1] {
                // CSI: parameter and intermediate bytes up to one final byte (ECMA-48); a
                // modified arrow (ESC [ 1 ; 5 A, Ctrl-Up) is the arrow.
                b'[' => {
                    let mut end = i + 2;
                    while end < bytes.len() && !(0x40..=0x7e).contains(&bytes[end]) {
                        end += 1;
                    }
                    i = end + 1;
                    bytes.get(end).copied().and_then(arrow)
                }
                // SS3: one more byte (F1-F4, arrows in application mode).
                b'O' => {
                    let key = bytes.get(i + 2).copied().and_then(arrow);
                    i += 3;
                    key
                }
                // Alt with a key: the key counts (Alt-q quits, as q does).
                _ => {
                    i += 1;
                    None
                }
            },
            b => {
                i += 1;
                match b {
                    b'q' | CTRL_C => Some(Key::Quit),
                    b'k' => Some(Key::Up),
                    b'j' => Some(Key::Down),
                    b'+' | b'=' | b'l' => Some(Key::Louder),
                    b'-' | b'h' => Some(Key::Softer),
                    b'm' => Some(Key::Mute),
                    _ => None,
                }
            }
        };
        out.extend(key);
    }
    out
}

/// The key an escape sequence's final byte names: the four arrows.
fn arrow(last: u8) -> Option<Key> {
    match last {
        b'A' => Some(Key::Up),
        b'B' => Some(Key::Down),
        b'C' => Some(Key::Louder),
        b'D' => Some(Key::Softer),
        _ => None,
    }
}

/// A row of the mixer: the master, or a player by client id.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Row {
    Master,
    Player(u32),
}

/// The mixer's rows in a snapshot: the master, then each player (the clients with a
/// volume), by id. Never empty.
fn rows(s: &Snapshot) -> Vec<Row> {
    let players = s.clients.iter().filter(|c| c.volume_db.is_some()).map(|c| Row::Player(c.id));
    std::iter::once(Row::Master).chain(players).collect()
}

/// The selected row, held by identity: a player stays selected while others come and go;
/// when it leaves, the row that took its place is (or the last one).
#[derive(Debug, PartialEq)]
struct Selection {
    row: Row,
    /// Where it was last seen.
    at: usize,
}

impl Selection {
    fn new() -> Selection {
        Selection { row: Row::Master, at: 0 }
    }

    /// Finds the selected row in `rows` (a new snapshot's).
    fn follow(&mut self, rows: &[Row]) {
        match rows.iter().position(|&r| r == self.row) {
            Some(at) => self.at = at,
            None => {
                self.at = self.at.min(rows.len().saturating_sub(1));
                self.row = rows.get(self.at).copied().unwrap_or(Row::Master);
            }
        }
    }

    /// Moves one row down (or up), stopping at the ends.
    fn step(&mut self, rows: &[Row], down: bool) {
        self.follow(rows);
        let at = if down { self.at + 1 } else { self.at.saturating_sub(1) };
        if let Some(&row) = rows.get(at) {
            *self = Selection { row, at };
        }
    }
}

/// The request a key makes of the selected row; None for the keys that ask nothing.
fn request(row: Row, key: Key) -> Option<MixerRequest> {
    let target = match row {
        Row::Master => Target::Master,
        Row::Player(id) => Target::Id(id),
    };
    match key {
        Key::Louder => Some(MixerRequest::Volume { target, db: STEP_DB, relative: true }),
        Key::Softer => Some(MixerRequest::Volume { target, db: -STEP_DB, relative: true }),
        Key::Mute => Some(MixerRequest::Mute { target, how: MuteHow::Toggle }),
        Key::Quit | Key::Up | Key::Down => None,
    }
}

/// Sends a key's request and returns what the status line shows: the server's answer, or
/// why it did not do it (the player left, say). Only the server going away is an error.
fn ask(conn: &Connection, req: &MixerRequest) -> Result<String> {
    match dmix::stat::mixer_request(conn, req, ANSWER_WAIT) {
        Ok(answer) => Ok(answer),
        Err(Error::RequestRefused { reason, .. }) => Ok(format!("refused: {reason}")),
        Err(Error::ServerGone) => Err(Error::ServerGone),
        Err(e) => Ok(e.to_string()),
    }
}

fn meter(db: Option<f64>, width: usize) -> String {
    let level = db.map_or(0.0, |d| ((d + 60.0) / 60.0).clamp(0.0, 1.0));
    let n = (level * width as f64).round() as usize;
    format!("{}{}", "#".repeat(n), ".".repeat(width - n))
}

/// One line of the screen; a selected one is drawn in reverse video.
#[derive(Debug)]
struct Line {
    text: String,
    selected: bool,
}

impl Line {
    fn plain(text: impl Into<String>) -> Line {
        Line { text: text.into(), selected: false }
    }
}

/// `s` cut to `n` characters, or padded to them.
fn cell(s: &str, n: usize) -> String {
    format!("{:<n$}", s.chars().take(n).collect::<String>())
}

/// The mixer's lines: a heading, then each row (the selected one marked with `>`), a
/// player's meters beside and under it, one per channel, `meter_width` wide.
fn mixer_lines(s: &Snapshot, sel: &Selection, meter_width: usize) -> Vec<Line> {
    let mut lines = vec![Line::plain(format!("  {} {} LEVEL (peak dBFS)", cell("MIXER", 28), cell("VOLUME", 16)))];
    let master = Volume { db: s.server.master_volume_db as f32, muted: s.server.master_muted };
    let mut row = |this: Row, label: String, volume: Volume, peaks: &[Option<f64>]| {
        let selected = sel.row == this;
        let head =
            format!("{} {} {}", if selected { ">" } else { " " }, cell(&label, 28), cell(&volume.describe(), 16));
        let indent = " ".repeat(head.chars().count());
        if peaks.is_empty() {
            lines.push(Line { text: head.trim_end().to_string(), selected });
        }
        for (ch, p) in peaks.iter().enumerate() {
            let db = p.map_or("-inf".to_string(), |d| format!("{d:5.1}"));
            let first = if ch == 0 { &head } else { &indent };
            let text = format!("{first} ch{ch:<2} {} {db:>6}", meter(*p, meter_width));
            lines.push(Line { text, selected });
        }
    };
    row(Row::Master, "master".into(), master, &[]);
    for c in &s.clients {
        let (Some(db), Some(muted)) = (c.volume_db, c.muted) else { continue };
        let volume = Volume { db: db as f32, muted };
        row(Row::Player(c.id), format!("{:>4} {}", c.id, c.name), volume, &c.peak_dbfs);
    }
    lines
}

/// Everything on the screen: the table, the mixer, the status line and the keys.
fn screen_lines(s: &Snapshot, sel: &Selection, status: &str, width: usize) -> Vec<Line> {
    let mut lines: Vec<Line> = render_text(s).lines().map(Line::plain).collect();
    lines.push(Line::plain(""));
    // Room for the meters beside the row's label and volume (about 60 columns).
    lines.extend(mixer_lines(s, sel, width.saturating_sub(64).clamp(10, 40)));
    lines.push(Line::plain(""));
    lines.push(Line::plain(status));
    lines.push(Line::plain(KEY_HELP));
    lines
}

fn draw(s: &Snapshot, sel: &Selection, status: &str) -> std::io::Result<()> {
    let (width, height) = terminal::size().map_or((120, 40), |(w, h)| (usize::from(w), usize::from(h)));
    let lines = screen_lines(s, sel, status, width);
    // On a short terminal the top (the table) gives way: the mixer and the keys stay.
    let shown = &lines[lines.len().saturating_sub(height.max(1))..];
    let mut out = std::io::stdout().lock();
    queue!(out, cursor::MoveTo(0, 0), terminal::Clear(terminal::ClearType::All))?;
    for (n, line) in shown.iter().enumerate() {
        // Cut, not wrapped: a wrapped line would push the keys off the screen.
        let text: String = line.text.chars().take(width).collect();
        if line.selected {
            queue!(out, SetAttribute(Attribute::Reverse), Print(text), SetAttribute(Attribute::Reset))?;
        } else {
            queue!(out, Print(text))?;
        }
        // No newline after the last row: on the screen's last line it would scroll.
        if n + 1 < shown.len() {
            queue!(out, Print("\r\n"))?;
        }
    }
    out.flush()
}

/// Runs the view until a quit key, a stop signal (SIGINT, SIGTERM, SIGHUP) or the
/// terminal going away, all of which are a normal end; the server going away is an error.
/// A key redraws at once; otherwise the view redraws every `interval`.
pub fn run(conn: &Connection, socket: &std::path::Path, interval: Duration) -> Result<()> {
    let stop = dmix::cli::stop_flag();
    let keyboard = Keyboard::open()?;
    let _screen = Screen::enter()?;
    let mut sel = Selection::new();
    let mut status = String::new();
    while !stop.load(Ordering::Relaxed) {
        conn.check_alive()?;
        let s = snapshot(conn, socket)?;
        let rows = rows(&s);
        sel.follow(&rows);
        match draw(&s, &sel, &status) {
            Ok(()) => {}
            // A write to a terminal that hung up: the same end as reading it.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => return Err(Error::sys("write stdout", e)),
        }
        let keys = match keyboard.wait(Instant::now() + interval, &stop)? {
            Input::Keys(keys) => keys,
            Input::Nothing => continue,
            Input::Gone => break,
        };
        // The keys act on the rows as drawn: what the user saw when pressing them.
        for key in keys {
            match key {
                Key::Quit => return Ok(()),
                Key::Up | Key::Down => sel.step(&rows, key == Key::Down),
                _ => {
                    if let Some(req) = request(sel.row, key) {
                        status = ask(conn, &req)?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmix::stat::ClientSnapshot;

    fn quits(bytes: &[u8]) -> bool {
        keys(bytes).contains(&Key::Quit)
    }

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

    #[test]
    fn stat_watch_keys_read_arrows_in_both_modes_and_their_letters() {
        use Key::*;
        let cases: [(&[u8], &[Key]); 11] = [
            (b"\x1b[A\x1b[B\x1b[C\x1b[D", &[Up, Down, Louder, Softer]),
            (b"\x1bOA\x1bOB\x1bOC\x1bOD", &[Up, Down, Louder, Softer]),
            // Ctrl-Left: an arrow with a modifier is the arrow.
            (b"\x1b[1;5D", &[Softer]),
            (b"kjhl", &[Up, Down, Softer, Louder]),
            (b"+=-m", &[Louder, Louder, Softer, Mute]),
            // Three presses in one read, as a held key or a quick typist sends them.
            (b"\x1b[D\x1b[D\x1b[D", &[Softer, Softer, Softer]),
            (b"\x1b[Bm\x1b[A", &[Down, Mute, Up]),
            // Home, F5, F1: sequences whose letters are no keys.
            (b"\x1b[H\x1b[15~\x1bOP", &[]),
            // Alt-m is m.
            (b"\x1bm", &[Mute]),
            (b"\x1b[Aq", &[Up, Quit]),
            // A sequence cut short at the end of the read: nothing, not Esc.
            (b"\x1bO", &[]),
        ];
        for (bytes, want) in cases {
            assert_eq!(keys(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn stat_watch_keys_wait_for_the_rest_of_an_escape_sequence_only_when_it_is_unfinished() {
        for bytes in [&b"\x1b"[..], b"q\x1b", b"\x1b[", b"\x1b[1;5", b"\x1bO", b"\x1b[A\x1b"] {
            assert!(unfinished_escape(bytes), "{bytes:?}");
        }
        for bytes in [&b""[..], b"q", b"\x1b[A", b"\x1bOB", b"\x1bq", b"\x1b[15~", b"\x1b[1;5Dj"] {
            assert!(!unfinished_escape(bytes), "{bytes:?}");
        }
    }

    #[test]
    fn stat_watch_selection_follows_the_player_as_others_come_and_go() {
        use Row::*;
        let mut sel = Selection::new();
        sel.step(&[Master], true);
        assert_eq!(sel.row, Master, "nothing below the master");
        let rows = [Master, Player(3), Player(5)];
        sel.step(&rows, true);
        sel.step(&rows, true);
        assert_eq!(sel, Selection { row: Player(5), at: 2 });
        sel.step(&rows, true);
        assert_eq!(sel.row, Player(5), "the last row stays");
        // Player 3 leaves, 7 joins: 5 stays selected, at its new place.
        let rows = [Master, Player(5), Player(7)];
        sel.follow(&rows);
        assert_eq!(sel, Selection { row: Player(5), at: 1 });
        sel.step(&rows, false);
        assert_eq!(sel.row, Master);
        sel.step(&rows, false);
        assert_eq!(sel.row, Master, "the first row stays");
        // The selected player leaves: the row in its place is selected, else the last.
        let mut sel = Selection { row: Player(5), at: 1 };
        sel.follow(&[Master, Player(7)]);
        assert_eq!(sel, Selection { row: Player(7), at: 1 });
        sel.follow(&[Master]);
        assert_eq!(sel, Selection { row: Master, at: 0 });
    }

    #[test]
    fn stat_watch_keys_ask_a_step_or_a_toggle_of_the_selected_row() {
        let v = |target, db| Some(MixerRequest::Volume { target, db, relative: true });
        assert_eq!(request(Row::Player(4), Key::Softer), v(Target::Id(4), -1.0));
        assert_eq!(request(Row::Master, Key::Louder), v(Target::Master, 1.0));
        assert_eq!(
            request(Row::Player(4), Key::Mute),
            Some(MixerRequest::Mute { target: Target::Id(4), how: MuteHow::Toggle })
        );
        assert_eq!(request(Row::Master, Key::Down), None);
    }

    fn snapshot_with(clients: Vec<ClientSnapshot>) -> Snapshot {
        let mut s = crate::json_fields_tests::full_snapshot();
        let v = &mut s.server;
        (v.sink_lost_s, v.sinks, v.device_buffer_frames, v.capture) = (None, Vec::new(), None, None);
        v.master_volume_db = 2.0;
        s.clients = clients;
        s
    }

    fn client(id: u32, role: &str, volume: Option<(f64, bool)>, peaks: Vec<Option<f64>>) -> ClientSnapshot {
        ClientSnapshot {
            id,
            slot: id,
            pid: 100 + id,
            uid: 1000,
            name: format!("{role}-{id}"),
            role: role.into(),
            channels: 2,
            queued_ms: None,
            latency_ms: None,
            started: Some(true),
            underruns: 0,
            late_frames: 0,
            peak_dbfs: peaks,
            volume_db: volume.map(|v| v.0),
            muted: volume.map(|v| v.1),
        }
    }

    #[test]
    fn stat_watch_screen_shows_each_volume_the_selection_and_the_keys() {
        let s = snapshot_with(vec![
            client(1, "stat", None, Vec::new()),
            client(2, "play", Some((-3.0, true)), vec![Some(-6.0), None]),
        ]);
        assert_eq!(rows(&s), [Row::Master, Row::Player(2)], "only players have a row");
        let sel = Selection { row: Row::Player(2), at: 1 };
        let lines = screen_lines(&s, &sel, "refused: no client 2", 120);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        let at = texts.iter().position(|t| t.starts_with("  master")).expect("a master row");
        assert!(texts[at].contains("+2.0 dB"), "{}", texts[at]);
        assert!(!lines[at].selected);
        // The player's two lines (one per channel) are the selection; only the first has
        // the marker, the volume and the name.
        let (first, second) = (&lines[at + 1], &lines[at + 2]);
        assert!(first.selected && second.selected, "{lines:?}");
        assert!(first.text.starts_with(">    2 play-2"), "{}", first.text);
        assert!(first.text.contains("-3.0 dB, muted") && first.text.contains("ch0 "), "{}", first.text);
        assert!(second.text.starts_with("   ") && second.text.contains("ch1 ") && second.text.ends_with("-inf"));
        assert_eq!(texts[texts.len() - 2..], ["refused: no client 2", KEY_HELP]);
        assert_eq!(lines.iter().filter(|l| l.selected).count(), 2);
    }
}
