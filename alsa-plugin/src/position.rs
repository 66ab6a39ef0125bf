//! The plugin's position arithmetic, and nothing else: where a stream's frames sit in the
//! ring, how far it has played or captured, what an xrun is, what a stop takes back, what
//! `snd_pcm_delay` and avail say, and how pointer() wraps at ALSA's boundary. Every value a
//! ring would give (hw_ptr, the capture writer's position) is an argument: this module never
//! reads a ring, an fd, an atomic or a clock, so each rule is tested here alone.
//!
//! ALSA counts a stream in its own frames from 0 (`prepare`); the ring counts absolute
//! frames. While a stream runs, stream frame `f` is ring frame `base + f`.

use std::ops::Range;

/// alsa-lib's default boundary for a buffer: the largest power-of-two multiple of it that
/// leaves a buffer of room below LONG_MAX. pointer() reports positions up to the boundary
/// (SND_PCM_IOPLUG_FLAG_BOUNDARY_WA) until sw_params gives the real one.
pub(crate) fn default_boundary(buffer: u64) -> u64 {
    let limit = std::ffi::c_long::MAX as u64 - buffer;
    let mut b = buffer.max(1);
    while b * 2 <= limit {
        b *= 2;
    }
    b
}

/// hw_params: an application's buffer is at least a period and leaves at least a period of
/// a ring of `ring_frames` (the mix ring for playback, the monitor or capture ring for
/// capture) to the server.
pub(crate) fn buffer_fits(buffer: u64, period: u64, ring_frames: u64) -> bool {
    buffer >= period && buffer <= ring_frames.saturating_sub(period)
}

/// What pointer() hands alsa-lib: the stream position wrapped at ALSA's boundary, never
/// modulo the buffer: a whole buffer played between two calls (freewheel does that) would
/// look like no progress, and the application would poll for ever.
pub(crate) fn wrap(position: u64, boundary: u64) -> u64 {
    position % boundary
}

/// The hw_ptr from which a playback stream whose last frame written ends at ring frame
/// `end` has room for `avail_min` frames (`Playhead::avail` reaches it): where poll's waiter
/// wakes. avail = buffer - (end - hw_ptr), so that is `end - (buffer - avail_min)`.
pub(crate) fn room_at(end: u64, buffer: u64, avail_min: u64) -> u64 {
    end.saturating_sub(buffer.saturating_sub(avail_min))
}

/// The writer's position from which a capture stream that reads ring frame `read_at` next
/// has `avail_min` frames waiting: where poll's waiter wakes.
pub(crate) fn frames_at(read_at: u64, avail_min: u64) -> u64 {
    read_at + avail_min
}

/// A playback stream's positions.
///
/// Before `start` (and while paused) what the application writes waits outside the ring
/// (anything in the ring plays); `start` puts it at `base + played`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Playhead {
    /// The ring frame of stream frame 0 (meaningful while running).
    pub(crate) base: u64,
    /// Stream frames the application has written (its appl_ptr).
    pub(crate) written: u64,
    /// Stream frames played up to the last stop or pause.
    pub(crate) played: u64,
    /// The stream is in the ring, being played.
    pub(crate) running: bool,
    /// The application's buffer in frames: how far ahead of what plays it may write.
    pub(crate) buffer: u64,
}

impl Playhead {
    /// A stream at frame 0, stopped.
    pub(crate) fn new(buffer: u64) -> Playhead {
        Playhead { base: 0, written: 0, played: 0, running: false, buffer }
    }

    /// The ring frame after the last frame written.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.written
    }

    /// Where the next frame written goes in the ring, if the stream runs (else it waits).
    pub(crate) fn write_at(&self) -> Option<u64> {
        self.running.then(|| self.end())
    }

    /// The application wrote `frames` more.
    pub(crate) fn wrote(&mut self, frames: u64) {
        self.written += frames;
    }

    /// Stream frames played so far, with the server at `hw_ptr`.
    pub(crate) fn played(&self, hw_ptr: u64) -> u64 {
        if self.running { hw_ptr.saturating_sub(self.base).min(self.written) } else { self.played }
    }

    /// The server has played past everything written: an underrun (ALSA's xrun). Exactly
    /// at the end is not one: the last frame was taken, nothing is missing yet.
    pub(crate) fn xrun(&self, hw_ptr: u64) -> bool {
        self.running && hw_ptr > self.end()
    }

    /// Frames written and not yet taken by the server.
    pub(crate) fn queued(&self, hw_ptr: u64) -> u64 {
        self.written - self.played(hw_ptr)
    }

    /// snd_pcm_delay: how long until a frame written now is heard, in frames: what is
    /// queued, then the server's device buffer (an ALSA sink's; 0 for wav and null sinks).
    pub(crate) fn delay(&self, hw_ptr: u64, device_buffer_frames: u64) -> u64 {
        self.queued(hw_ptr) + device_buffer_frames
    }

    /// avail: frames the application may write now.
    pub(crate) fn avail(&self, hw_ptr: u64) -> u64 {
        self.buffer.saturating_sub(self.queued(hw_ptr))
    }

    /// prepare: a new stream from frame 0 (the caller stopped it first).
    pub(crate) fn prepare(&mut self) {
        self.written = 0;
        self.played = 0;
    }

    /// start (and resume): the stream goes on from `played`, at the first ring frame that is
    /// `lead` ahead of `hw_ptr` (a period on a paced server, so the server has not taken it
    /// already; none in freewheel) and not before `first_frame` (where the server counts the
    /// player from). Returns that ring frame: where what waited outside the ring goes.
    pub(crate) fn start(&mut self, hw_ptr: u64, lead: u64, first_frame: u64) -> u64 {
        let at = (hw_ptr + lead).max(first_frame);
        self.base = at - self.played;
        self.running = true;
        at
    }

    /// Stops running (drop or pause) with the server at `hw_ptr`. Returns the ring frames
    /// to take back, if it ran: from hw_ptr to the end, what was queued and not played.
    /// What already played is outside it (it was heard); the ring takes the range back
    /// newest first, so a frame the server takes meanwhile is either whole or silent.
    pub(crate) fn stop_running(&mut self, hw_ptr: u64) -> Option<Range<u64>> {
        if !self.running {
            return None;
        }
        self.running = false;
        let end = self.end();
        Some(hw_ptr.clamp(self.base, end)..end)
    }

    /// After `taken` was taken back, the server at `hw_ptr`: frames it took meanwhile played
    /// (whole or partly), so the stream counts as played up to hw_ptr, never before the
    /// start of `taken`. Returns that ring frame (where the stream stopped); of a kept queue
    /// (pause), the frames before it have played and do not play again on resume.
    pub(crate) fn retracted(&mut self, taken: &Range<u64>, hw_ptr: u64) -> u64 {
        let now = hw_ptr.clamp(taken.start, taken.end);
        self.played = now - self.base;
        now
    }

    /// drop: whatever was written counts as done (nothing of it will play).
    pub(crate) fn dropped(&mut self) {
        self.played = self.written;
    }

    /// drain has nothing to wait for: stopped, and everything written has played (or was
    /// dropped). Stopped with frames waiting, drain starts the stream first.
    pub(crate) fn drained_already(&self) -> bool {
        !self.running && self.written == self.played
    }

    /// drain finished: the last frame was heard, the stream stops.
    pub(crate) fn drained(&mut self) {
        self.played = self.written;
        self.running = false;
    }
}

/// A capture stream's positions. `read` is the application's position (its appl_ptr),
/// `base + f` the ring frame of stream frame `f`; the writer is the server (hw_ptr, for the
/// monitor) or the shared input (cap_ptr).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Capturehead {
    /// The ring frame of stream frame 0.
    pub(crate) base: u64,
    /// Stream frames the application has read.
    pub(crate) read: u64,
    /// Stream frames captured up to the last stop or pause.
    pub(crate) captured: u64,
    /// Capturing.
    pub(crate) running: bool,
    /// The application's buffer in frames: what may wait unread before an overrun.
    pub(crate) buffer: u64,
}

impl Capturehead {
    /// A stream at frame 0, stopped.
    pub(crate) fn new(buffer: u64) -> Capturehead {
        Capturehead { base: 0, read: 0, captured: 0, running: false, buffer }
    }

    /// The ring frame the application reads next: what it publishes as its read position.
    pub(crate) fn read_at(&self) -> u64 {
        self.base + self.read
    }

    /// The application read `frames` more.
    pub(crate) fn was_read(&mut self, frames: u64) {
        self.read += frames;
    }

    /// Stream frames captured while running, the writer at `write_ptr`. A freewheel server
    /// stops a whole ring ahead of what we read, and time is virtual: what lies beyond our
    /// buffer is captured "later", not an overrun.
    fn captured_running(&self, write_ptr: u64, freewheel: bool) -> u64 {
        let captured = write_ptr.saturating_sub(self.base);
        if freewheel { captured.min(self.read + self.buffer) } else { captured }
    }

    /// Stream frames captured so far.
    pub(crate) fn captured(&self, write_ptr: u64, freewheel: bool) -> u64 {
        if self.running { self.captured_running(write_ptr, freewheel) } else { self.captured }
    }

    /// More than the buffer waits unread (a paced server waits for no reader): an overrun.
    pub(crate) fn overrun(&self, captured: u64) -> bool {
        captured.saturating_sub(self.read) > self.buffer
    }

    /// delay (and what poll weighs against avail_min): frames captured and not yet read.
    pub(crate) fn delay(&self, write_ptr: u64, freewheel: bool) -> u64 {
        self.captured(write_ptr, freewheel).saturating_sub(self.read)
    }

    /// prepare: a new stream from frame 0 (the caller stopped it first).
    pub(crate) fn prepare(&mut self) {
        self.read = 0;
        self.captured = 0;
    }

    /// start (and resume): stream frame `captured` is ring frame `at`. Returns the read
    /// position to publish.
    pub(crate) fn start(&mut self, at: u64) -> u64 {
        self.base = at - self.captured;
        self.running = true;
        self.read_at()
    }

    /// stop (and pause): what the writer brings from now on is not captured.
    pub(crate) fn stop(&mut self, write_ptr: u64, freewheel: bool) {
        if self.running {
            self.running = false;
            self.captured = self.captured_running(write_ptr, freewheel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A playhead started at ring frame `base` with `written` frames in the ring.
    fn running(base: u64, written: u64, buffer: u64) -> Playhead {
        Playhead { base, written, played: 0, running: true, buffer }
    }

    /// Bug of 425d4cd: pointer() returned the position modulo the buffer, so a whole buffer
    /// played between two calls (freewheel does that) looked like no progress and the
    /// application polled for ever.
    /// hw_params takes a buffer from one period to the ring less one period.
    #[test]
    fn buffer_from_a_period_to_the_ring_less_a_period() {
        assert!(!buffer_fits(255, 256, 4096));
        assert!(buffer_fits(256, 256, 4096));
        assert!(buffer_fits(3840, 256, 4096));
        assert!(!buffer_fits(3841, 256, 4096));
    }

    #[test]
    fn pointer_a_whole_buffer_played_between_calls_is_progress() {
        let buffer = 1024;
        let boundary = default_boundary(buffer);
        let mut pos = running(5000, 0, buffer);
        pos.wrote(buffer);
        let before = wrap(pos.played(5000), boundary);
        let after = wrap(pos.played(5000 + buffer), boundary);
        assert_eq!((before, after), (0, buffer));
    }

    #[test]
    fn pointer_wraps_at_the_boundary() {
        for buffer in [1, 1024, 3000, 48000] {
            let boundary = default_boundary(buffer);
            // alsa-lib's rule: a multiple of the buffer, doubled while a buffer still fits
            // below LONG_MAX.
            assert_eq!(boundary % buffer, 0, "buffer {buffer}");
            assert!((boundary / buffer).is_power_of_two());
            assert!(boundary + buffer <= i64::MAX as u64);
            assert!(boundary * 2 + buffer > i64::MAX as u64);
        }
        let (buffer, boundary) = (1024, default_boundary(1024));
        assert_eq!(boundary, 1 << 62);
        // A stream that has played past the boundary: ALSA sees positions from 0 again,
        // and what is queued (appl_ptr - hw_ptr, modulo the boundary) is unchanged.
        let pos = running(7, boundary + buffer, buffer);
        let hw_ptr = 7 + boundary + 10;
        let (hw, appl) = (wrap(pos.played(hw_ptr), boundary), wrap(pos.written, boundary));
        assert_eq!((hw, appl), (10, buffer));
        assert_eq!((appl + boundary - hw) % boundary, pos.queued(hw_ptr));
        assert_eq!(wrap(boundary - 1, boundary), boundary - 1);
        assert_eq!(wrap(boundary, boundary), 0);
    }

    /// 76e11c1 counts each xrun pointer() reports: it is the server passing the end of
    /// what was written, not reaching it.
    #[test]
    fn playback_xrun_once_hw_ptr_passes_the_end() {
        let pos = running(1000, 512, 4096);
        assert!(!pos.xrun(1000));
        assert!(!pos.xrun(1512), "the last frame taken is no xrun yet");
        assert!(pos.xrun(1513));
        assert_eq!(pos.played(1513), 512, "played never counts past what was written");
        let stopped = Playhead { running: false, played: 512, ..pos };
        assert!(!stopped.xrun(1_000_000), "a stopped stream cannot underrun");
        assert_eq!(stopped.played(1_000_000), 512);
    }

    /// f40317e/ccef56e: what waited goes a period ahead of hw_ptr on a paced server, on
    /// hw_ptr itself in freewheel, and never before the frame the server counts us from.
    #[test]
    fn playback_start_goes_a_lead_ahead_and_not_before_first_frame() {
        let mut pos = Playhead::new(4096);
        pos.wrote(300);
        assert_eq!(pos.write_at(), None, "before start, frames wait outside the ring");
        assert_eq!(pos.start(1000, 256, 0), 1256);
        assert_eq!((pos.base, pos.end(), pos.write_at()), (1256, 1556, Some(1556)));
        let mut fw = Playhead::new(4096);
        assert_eq!(fw.start(1000, 0, 0), 1000);
        let mut late = Playhead::new(4096);
        assert_eq!(late.start(1000, 0, 1024), 1024, "the server counts us from 1024");
    }

    /// 0e46177 (drain returned at once): drain waits for the ring frame after the last one
    /// written, wherever start put the stream; a stopped stream with frames waiting starts.
    #[test]
    fn playback_drain_ends_at_the_last_frame_written() {
        let mut pos = Playhead::new(4096);
        assert!(pos.drained_already(), "nothing written, nothing to drain");
        pos.wrote(300);
        assert!(!pos.drained_already(), "written, not started: drain must start it");
        pos.start(1000, 256, 0);
        pos.wrote(700);
        assert_eq!(pos.end(), 1256 + 1000);
        assert!(!pos.drained_already());
        pos.drained();
        assert!(!pos.running);
        assert_eq!((pos.played(1_000_000), pos.queued(0)), (1000, 0));
        assert!(pos.drained_already());
        // Dropped: nothing of it will play, drain has nothing to wait for.
        let mut dropped = running(1000, 800, 4096);
        dropped.stop_running(1100);
        dropped.dropped();
        assert!(dropped.drained_already());
    }

    /// d28d5fd, f40317e (a SIGINTed aplay leaves no trace of its queue): a stop takes back
    /// what was queued and not played, from hw_ptr on; what played stays.
    #[test]
    fn playback_drop_takes_back_only_what_has_not_played() {
        let mut pos = running(1000, 800, 4096);
        assert_eq!(pos.stop_running(1200), Some(1200..1800));
        assert!(!pos.running);
        assert_eq!(pos.stop_running(1200), None, "stopped twice takes back nothing more");
        // Not yet reached (the lead): all of it; already all played: nothing.
        assert_eq!(running(1000, 800, 4096).stop_running(900), Some(1000..1800));
        assert_eq!(running(1000, 800, 4096).stop_running(5000), Some(1800..1800));
        let mut pos = running(1000, 800, 4096);
        let taken = pos.stop_running(1200).unwrap();
        assert_eq!(pos.retracted(&taken, 1200), 1200);
        pos.dropped();
        assert_eq!(pos.played(0), 800, "after a drop, pointer says everything is done");
    }

    /// Pause keeps what was taken back and plays it on resume right after what had played:
    /// frames the server took while we retracted played, and do not play twice.
    #[test]
    fn playback_pause_keeps_the_unplayed_queue_and_resumes_after_it() {
        let mut pos = running(1000, 800, 4096);
        let taken = pos.stop_running(1200).unwrap();
        // The server took a period while we retracted.
        let now = pos.retracted(&taken, 1264);
        assert_eq!(now, 1264);
        assert_eq!(pos.played(9999), 264);
        let kept = taken.end - now;
        assert_eq!(pos.played + kept, pos.written, "played and kept are the stream, once");
        // hw_ptr before `from` (cannot happen, but clamped): nothing counts as unplayed.
        let mut odd = running(1000, 800, 4096);
        let t = odd.stop_running(1200).unwrap();
        assert_eq!(odd.retracted(&t, 1100), 1200);
        // Resume: the kept frames go at `at`, which is stream frame `played`.
        let at = pos.start(5000, 64, 0);
        assert_eq!(at, 5064);
        assert_eq!(pos.base + pos.played, at);
        assert_eq!(pos.end(), at + kept);
        assert_eq!(pos.queued(5064), kept);
    }

    /// snd_pcm_delay is what is queued plus the server's device buffer (afebe7d; snapclient
    /// syncs on it), avail is the buffer less what is queued.
    #[test]
    fn playback_delay_and_avail() {
        let pos = running(1000, 3000, 4096);
        assert_eq!(pos.queued(2000), 2000);
        assert_eq!(pos.avail(2000), 2096);
        assert_eq!(pos.delay(2000, 1024), 3024);
        assert_eq!(pos.delay(2000, 0), 2000);
        // Before hw_ptr reaches the stream (the lead), everything is queued.
        assert_eq!(pos.queued(500), 3000);
        // Underrun: nothing queued, all the buffer free.
        assert_eq!((pos.queued(9000), pos.avail(9000)), (0, 4096));
        // Stopped: what waits outside the ring counts; more than the buffer leaves no room.
        let mut waiting = Playhead::new(1024);
        waiting.wrote(1500);
        assert_eq!((waiting.queued(123), waiting.avail(123), waiting.delay(123, 10)), (1500, 0, 1510));
    }

    /// The waiter wakes exactly where poll_revents starts to say POLLOUT (or POLLIN): a
    /// later wake-up is a late application, an earlier one a spin. (Playback, from the
    /// stream's first ring frame on: before it, in the lead after start, avail does not move
    /// and the application's own call, start or transfer, has set the eventfd already.)
    #[test]
    fn waiter_wakes_where_avail_reaches_avail_min() {
        for (written, avail_min) in [(0, 256), (1000, 256), (4096, 256), (4096, 4096), (4000, 1)] {
            let pos = running(10_000, written, 4096);
            let target = room_at(pos.end(), pos.buffer, avail_min);
            for hw_ptr in pos.base..pos.end() + 10 {
                assert_eq!(
                    pos.avail(hw_ptr) >= avail_min,
                    hw_ptr >= target,
                    "written {written}, avail_min {avail_min}, hw_ptr {hw_ptr}, target {target}"
                );
            }
        }
        for freewheel in [false, true] {
            let cap = capturing(10_000, 500, 4096);
            let target = frames_at(cap.read_at(), 256);
            for write_ptr in 9_000..20_000 {
                assert_eq!(cap.delay(write_ptr, freewheel) >= 256, write_ptr >= target, "write_ptr {write_ptr}");
            }
        }
    }

    fn capturing(base: u64, read: u64, buffer: u64) -> Capturehead {
        Capturehead { base, read, captured: 0, running: true, buffer }
    }

    /// 425d4cd: in freewheel the server runs a whole ring ahead of the reader and time is
    /// virtual, so what lies beyond the buffer is captured later, not an overrun.
    #[test]
    fn capture_freewheel_beyond_the_buffer_is_not_an_overrun() {
        let cap = capturing(1000, 100, 1024);
        let captured = cap.captured(1000 + 5000, true);
        assert_eq!(captured, 100 + 1024);
        assert!(!cap.overrun(captured));
        assert_eq!(cap.delay(6000, true), 1024);
    }

    /// 425d4cd: a paced server waits for no reader: more than the buffer unread is an
    /// overrun (EPIPE), exactly the buffer is not.
    #[test]
    fn capture_paced_more_than_the_buffer_unread_is_an_overrun() {
        let cap = capturing(1000, 100, 1024);
        assert!(!cap.overrun(cap.captured(1000 + 100 + 1024, false)));
        assert!(cap.overrun(cap.captured(1000 + 100 + 1025, false)));
        assert_eq!(cap.delay(1000 + 100 + 1025, false), 1025);
        // A writer behind our base (started at the admission frame) has captured nothing.
        assert_eq!(capturing(1000, 0, 1024).captured(900, false), 0);
    }

    /// Pause stops capturing where the writer is; resume goes on from there, and what came
    /// meanwhile is not recorded.
    #[test]
    fn capture_pause_resume_skips_what_came_meanwhile() {
        let mut cap = Capturehead::new(1024);
        assert_eq!(cap.start(1000), 1000);
        cap.was_read(200);
        cap.stop(1300, false);
        assert!(!cap.running);
        assert_eq!((cap.captured(99_999, false), cap.delay(99_999, false)), (300, 100));
        cap.stop(5000, false);
        assert_eq!(cap.captured, 300, "stopping twice changes nothing");
        let read_at = cap.start(8000);
        assert_eq!((cap.base, read_at), (7700, 7900));
        assert_eq!(cap.captured(8050, false), 350);
        cap.prepare();
        assert_eq!((cap.read, cap.captured), (0, 0));
    }
}
