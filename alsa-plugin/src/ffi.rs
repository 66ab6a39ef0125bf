//! The fence around alsa-lib: its ioplug structures (hand-written from alsa/pcm_ioplug.h, and
//! pinned against that header by the test below), the entry point alsa-lib looks up, and the
//! callbacks, each of which turns raw pointers into a call on [`Stream`]. Nothing else in the
//! plugin is `unsafe`. No callback lets a panic unwind into C: it becomes -EIO.
#![allow(unsafe_code, non_camel_case_types)]

use std::ffi::{CStr, CString, c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use dmix::format::SampleFormat;
use nix::errno::Errno;

use crate::capture::Recorder;
use crate::config::{Config, Direction};
use crate::playback::Stream;
use crate::position::{default_boundary, wrap};

type snd_pcm_uframes_t = c_ulong;
type snd_pcm_sframes_t = c_long;

#[repr(C)]
pub struct snd_pcm_t {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct snd_config_t {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct snd_config_iterator {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct snd_pcm_hw_params_t {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct snd_pcm_sw_params_t {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct snd_pcm_channel_area_t {
    addr: *mut c_void,
    first: c_uint,
    step: c_uint,
}

#[repr(C)]
pub struct snd_pcm_ioplug_t {
    version: c_uint,
    name: *const c_char,
    flags: c_uint,
    poll_fd: c_int,
    poll_events: c_uint,
    mmap_rw: c_uint,
    callback: *const snd_pcm_ioplug_callback_t,
    private_data: *mut c_void,
    pcm: *mut snd_pcm_t,
    stream: c_int,
    state: c_int,
    appl_ptr: snd_pcm_uframes_t,
    hw_ptr: snd_pcm_uframes_t,
    nonblock: c_int,
    access: c_int,
    format: c_int,
    channels: c_uint,
    rate: c_uint,
    period_size: snd_pcm_uframes_t,
    buffer_size: snd_pcm_uframes_t,
}

type Io = *mut snd_pcm_ioplug_t;
type Unused = Option<unsafe extern "C" fn()>;

#[repr(C)]
pub struct snd_pcm_ioplug_callback_t {
    start: Option<unsafe extern "C" fn(Io) -> c_int>,
    stop: Option<unsafe extern "C" fn(Io) -> c_int>,
    pointer: Option<unsafe extern "C" fn(Io) -> snd_pcm_sframes_t>,
    transfer: Option<
        unsafe extern "C" fn(
            Io,
            *const snd_pcm_channel_area_t,
            snd_pcm_uframes_t,
            snd_pcm_uframes_t,
        ) -> snd_pcm_sframes_t,
    >,
    close: Option<unsafe extern "C" fn(Io) -> c_int>,
    hw_params: Option<unsafe extern "C" fn(Io, *mut snd_pcm_hw_params_t) -> c_int>,
    hw_free: Unused,
    sw_params: Option<unsafe extern "C" fn(Io, *mut snd_pcm_sw_params_t) -> c_int>,
    prepare: Option<unsafe extern "C" fn(Io) -> c_int>,
    drain: Option<unsafe extern "C" fn(Io) -> c_int>,
    pause: Option<unsafe extern "C" fn(Io, c_int) -> c_int>,
    resume: Unused,
    poll_descriptors_count: Unused,
    poll_descriptors: Unused,
    poll_revents: Option<unsafe extern "C" fn(Io, *mut libc::pollfd, c_uint, *mut u16) -> c_int>,
    dump: Unused,
    delay: Option<unsafe extern "C" fn(Io, *mut snd_pcm_sframes_t) -> c_int>,
    query_chmaps: Unused,
    get_chmap: Unused,
    set_chmap: Unused,
}

// SAFETY: the table holds only function pointers and is never written.
unsafe impl Sync for snd_pcm_ioplug_callback_t {}

const IOPLUG_VERSION: c_uint = (1 << 16) | 2; // 1.0.2, the header's
const HW_ACCESS: c_int = 0;
const HW_FORMAT: c_int = 1;
const HW_CHANNELS: c_int = 2;
const HW_RATE: c_int = 3;
const HW_PERIOD_BYTES: c_int = 4;
const HW_BUFFER_BYTES: c_int = 5;
const HW_PERIODS: c_int = 6;
const ACCESS_MMAP_INTERLEAVED: c_uint = 0;
const ACCESS_RW_INTERLEAVED: c_uint = 3;
const FORMAT_S16_LE: c_int = 2;
const FORMAT_S32_LE: c_int = 10;
const FORMAT_FLOAT_LE: c_int = 14;
const STREAM_PLAYBACK: c_int = 0;
const FLAG_BOUNDARY_WA: c_uint = 1 << 2;

#[link(name = "asound")]
unsafe extern "C" {
    fn snd_pcm_ioplug_create(io: Io, name: *const c_char, stream: c_int, mode: c_int) -> c_int;
    fn snd_pcm_ioplug_delete(io: Io) -> c_int;
    fn snd_pcm_ioplug_set_param_list(io: Io, ty: c_int, num: c_uint, list: *const c_uint) -> c_int;
    fn snd_pcm_ioplug_set_param_minmax(io: Io, ty: c_int, min: c_uint, max: c_uint) -> c_int;
    fn snd_pcm_sw_params_get_avail_min(params: *const snd_pcm_sw_params_t, val: *mut snd_pcm_uframes_t) -> c_int;
    fn snd_pcm_sw_params_get_boundary(params: *const snd_pcm_sw_params_t, val: *mut snd_pcm_uframes_t) -> c_int;
    fn snd_config_iterator_first(node: *const snd_config_t) -> *mut snd_config_iterator;
    fn snd_config_iterator_next(it: *mut snd_config_iterator) -> *mut snd_config_iterator;
    fn snd_config_iterator_end(node: *const snd_config_t) -> *mut snd_config_iterator;
    fn snd_config_iterator_entry(it: *mut snd_config_iterator) -> *mut snd_config_t;
    fn snd_config_get_id(config: *const snd_config_t, value: *mut *const c_char) -> c_int;
    fn snd_config_get_string(config: *const snd_config_t, value: *mut *const c_char) -> c_int;
    fn snd_config_get_integer(config: *const snd_config_t, value: *mut c_long) -> c_int;
    fn snd_config_get_real(config: *const snd_config_t, value: *mut f64) -> c_int;
}

static CALLBACKS: snd_pcm_ioplug_callback_t = snd_pcm_ioplug_callback_t {
    start: Some(cb_start),
    stop: Some(cb_stop),
    pointer: Some(cb_pointer),
    transfer: Some(cb_transfer),
    close: Some(cb_close),
    hw_params: Some(cb_hw_params),
    hw_free: None,
    sw_params: Some(cb_sw_params),
    prepare: Some(cb_prepare),
    drain: Some(cb_drain),
    pause: Some(cb_pause),
    resume: None,
    poll_descriptors_count: None,
    poll_descriptors: None,
    poll_revents: Some(cb_poll_revents),
    dump: None,
    delay: Some(cb_delay),
    query_chmaps: None,
    get_chmap: None,
    set_chmap: None,
};

/// A playback or a capture PCM.
enum Pcm {
    Play(Stream),
    Record(Recorder),
}

/// What `private_data` points to; boxed, so `io` keeps the address alsa-lib was given.
struct Plugin {
    io: snd_pcm_ioplug_t,
    pcm: Pcm,
    /// Where ALSA wraps its pointers (sw_params' boundary); pointer() reports positions up
    /// to it (SND_PCM_IOPLUG_FLAG_BOUNDARY_WA).
    boundary: u64,
    _name: CString,
}

/// alsa-lib's error reporter (its SNDERR): the application's handler if it set one
/// (snd_lib_error_set_handler), else alsa-lib's default, which hands the message to the
/// calling thread's local handler (snd_lib_error_set_local) or prints one "ALSA lib" line.
type ErrorHandler = unsafe extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char, ...);

unsafe extern "C" {
    static snd_lib_error: Option<ErrorHandler>;
}

/// Reports an error as alsa-lib's own are reported, so that a program that silences or
/// collects ALSA's messages (a server probing devices, PortAudio, a GUI) gets ours the same
/// way, instead of a line on its stderr it cannot stop.
fn report(what: &str) {
    let text = CString::new(format!("dmixrs: {what}").replace('\0', "?")).unwrap_or_default();
    // SAFETY: snd_lib_error is alsa-lib's exported handler pointer, always initialised
    // (to its default handler) and changed only by snd_lib_error_set_handler, a pointer-
    // sized aligned store; we only read it.
    let handler = unsafe { snd_lib_error };
    match handler {
        // SAFETY: the handler takes (file, line, function, errcode, printf format, ...); all
        // strings are NUL-terminated and live across the call, and "%s" consumes exactly the
        // one string argument given.
        Some(h) => unsafe { h(c"pcm_dmixrs".as_ptr(), 0, c"open".as_ptr(), 0, c"%s".as_ptr(), text.as_ptr()) },
        None => dmix::say!("ALSA lib {}", text.to_string_lossy()),
    }
}

/// alsa-lib checks for this symbol (SND_PCM_PLUGIN_SYMBOL) before calling the entry point.
#[unsafe(no_mangle)]
pub static __snd_pcm_dmixrs_open_dlsym_pcm_001: c_char = 0;

/// The entry point of PCM type `dmixrs` (SND_PCM_PLUGIN_DEFINE_FUNC(dmixrs)).
///
/// # Safety
/// Called by alsa-lib with a valid out pointer, name and configuration node.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _snd_pcm_dmixrs_open(
    pcmp: *mut *mut snd_pcm_t,
    name: *const c_char,
    _root: *mut snd_config_t,
    conf: *mut snd_config_t,
    stream: c_int,
    mode: c_int,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: alsa-lib passes its configuration node for this PCM, valid for the call.
        let cfg = match unsafe { read_config(conf) } {
            Ok(c) => c,
            Err(e) => {
                report(&e);
                return -libc::EINVAL;
            }
        };
        if let Err(e) = cfg.refuse_self() {
            report(&e);
            return -libc::EDEADLK;
        }
        let opened = if stream == STREAM_PLAYBACK {
            Stream::open(&cfg).map(Pcm::Play)
        } else {
            Recorder::open(&cfg, cfg.source.unwrap_or(Direction::Monitor)).map(Pcm::Record)
        };
        let pcm = match opened {
            Ok(p) => p,
            Err(e) => {
                report(&e);
                return -libc::ENODEV;
            }
        };
        let (poll_fd, poll_events, (rate, channels, ring, period)) = match &pcm {
            Pcm::Play(s) => (s.poll_fd(), libc::POLLIN, s.shape()),
            Pcm::Record(r) => (r.poll_fd(), libc::POLLIN, r.shape()),
        };
        // SAFETY: alsa-lib passes a NUL-terminated name (or null).
        let pcm_name = if name.is_null() { CString::from(c"dmixrs") } else { unsafe { CStr::from_ptr(name) }.into() };
        let plugin = Box::new(Plugin {
            io: snd_pcm_ioplug_t {
                version: IOPLUG_VERSION,
                name: c"dmixrs".as_ptr(),
                flags: FLAG_BOUNDARY_WA,
                poll_fd,
                poll_events: poll_events as c_uint,
                mmap_rw: 0,
                callback: &CALLBACKS,
                private_data: std::ptr::null_mut(),
                pcm: std::ptr::null_mut(),
                stream: 0,
                state: 0,
                appl_ptr: 0,
                hw_ptr: 0,
                nonblock: 0,
                access: 0,
                format: 0,
                channels: 0,
                rate: 0,
                period_size: 0,
                buffer_size: 0,
            },
            pcm,
            boundary: c_long::MAX as u64,
            _name: pcm_name,
        });
        let raw = Box::into_raw(plugin);
        // SAFETY: `raw` is a live, leaked box; io is its first field and stays put until
        // cb_close (or the failure path below) frees it.
        unsafe {
            (*raw).io.private_data = raw.cast();
            let io = &raw mut (*raw).io;
            let err = snd_pcm_ioplug_create(io, (*raw)._name.as_ptr(), stream, mode);
            if err < 0 {
                drop(Box::from_raw(raw));
                return err;
            }
            let access = [ACCESS_RW_INTERLEAVED, ACCESS_MMAP_INTERLEAVED];
            let formats = [FORMAT_S16_LE as c_uint, FORMAT_S32_LE as c_uint, FORMAT_FLOAT_LE as c_uint];
            let frame_min = channels * 2;
            let frame_max = channels * 4;
            let results = [
                snd_pcm_ioplug_set_param_list(io, HW_ACCESS, 2, access.as_ptr()),
                snd_pcm_ioplug_set_param_list(io, HW_FORMAT, 3, formats.as_ptr()),
                snd_pcm_ioplug_set_param_minmax(io, HW_CHANNELS, channels, channels),
                snd_pcm_ioplug_set_param_minmax(io, HW_RATE, rate, rate),
                snd_pcm_ioplug_set_param_minmax(io, HW_PERIOD_BYTES, 16 * frame_min, ring / 2 * frame_max),
                // The buffer is our latency: at least a server period, at most the ring
                // less one period (whatever the format, in frames).
                snd_pcm_ioplug_set_param_minmax(io, HW_BUFFER_BYTES, period * frame_max, (ring - period) * frame_min),
                snd_pcm_ioplug_set_param_minmax(io, HW_PERIODS, 2, 1024),
            ];
            if let Some(&err) = results.iter().find(|&&r| r < 0) {
                snd_pcm_ioplug_delete(io);
                return err;
            }
            *pcmp = (*raw).io.pcm;
        }
        0
    }))
    .unwrap_or(-libc::EIO)
}

/// Reads the plugin's keys (`config::KEYS`).
///
/// # Safety
/// `conf` is a valid configuration compound node (or null).
unsafe fn read_config(conf: *mut snd_config_t) -> Result<Config, String> {
    let mut cfg = Config::default();
    if conf.is_null() {
        return Ok(cfg);
    }
    // SAFETY: walking a compound node with alsa-lib's iterator API; every pointer comes
    // from it and the strings it returns live as long as the node.
    unsafe {
        let end = snd_config_iterator_end(conf);
        let mut it = snd_config_iterator_first(conf);
        while it != end {
            let node = snd_config_iterator_entry(it);
            it = snd_config_iterator_next(it);
            let mut id: *const c_char = std::ptr::null();
            if snd_config_get_id(node, &mut id) < 0 || id.is_null() {
                continue;
            }
            let key = CStr::from_ptr(id).to_string_lossy();
            let mut value: *const c_char = std::ptr::null();
            let string = |v: &mut *const c_char| -> Result<String, String> {
                if snd_config_get_string(node, v) < 0 || v.is_null() {
                    return Err(format!("{key}: expected a string"));
                }
                Ok(CStr::from_ptr(*v).to_string_lossy().into_owned())
            };
            match key.as_ref() {
                "comment" | "type" | "hint" => {}
                "server" => cfg.server = Some(string(&mut value)?),
                "name" => cfg.name = Some(string(&mut value)?),
                "volume" => {
                    // `volume -6` is an integer node, `volume -4.5` a real, `volume "-6"` a
                    // string: each is the same number of dB.
                    let (mut int, mut real): (c_long, f64) = (0, 0.0);
                    let text = if snd_config_get_integer(node, &mut int) >= 0 {
                        int.to_string()
                    } else if snd_config_get_real(node, &mut real) >= 0 {
                        real.to_string()
                    } else {
                        string(&mut value).map_err(|_| "volume: expected a number of dB".to_string())?
                    };
                    cfg.volume_db = Some(crate::config::parse_volume(&text)?);
                }
                "source" => {
                    cfg.source = Some(match string(&mut value)?.as_str() {
                        "monitor" => Direction::Monitor,
                        "capture" => Direction::Capture,
                        other => return Err(format!("source {other}: expected monitor or capture")),
                    })
                }
                other => return Err(format!("unknown key {other} (known: {})", crate::config::KEYS)),
            }
        }
    }
    Ok(cfg)
}

/// Runs `f` on the plugin behind `io`, turning a panic into -EIO.
fn with<R>(io: Io, fail: R, f: impl FnOnce(&mut Plugin) -> R) -> R {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: alsa-lib calls back with the io we registered, whose private_data is
        // our live Plugin; alsa-lib serialises the calls on one PCM.
        let plugin = unsafe { &mut *((*io).private_data as *mut Plugin) };
        f(plugin)
    }))
    .unwrap_or(fail)
}

/// Calls the same method on either kind of PCM.
macro_rules! either {
    ($pcm:expr, $p:ident => $e:expr) => {
        match $pcm {
            Pcm::Play($p) => $e,
            Pcm::Record($p) => $e,
        }
    };
}

fn status(r: Result<(), Errno>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => -(e as c_int),
    }
}

unsafe extern "C" fn cb_start(io: Io) -> c_int {
    with(io, -libc::EIO, |p| status(either!(&mut p.pcm, s => s.start())))
}

unsafe extern "C" fn cb_stop(io: Io) -> c_int {
    with(io, -libc::EIO, |p| {
        either!(&mut p.pcm, s => s.stop());
        0
    })
}

unsafe extern "C" fn cb_pointer(io: Io) -> snd_pcm_sframes_t {
    with(io, -(libc::EIO as snd_pcm_sframes_t), |p| match either!(&p.pcm, s => s.pointer()) {
        Ok(pos) => wrap(pos, p.boundary) as snd_pcm_sframes_t,
        Err(e) => -(e as snd_pcm_sframes_t),
    })
}

unsafe extern "C" fn cb_transfer(
    io: Io,
    areas: *const snd_pcm_channel_area_t,
    offset: snd_pcm_uframes_t,
    size: snd_pcm_uframes_t,
) -> snd_pcm_sframes_t {
    with(io, -(libc::EIO as snd_pcm_sframes_t), |p| {
        // SAFETY: for an interleaved PCM alsa-lib passes one area per channel, the first of
        // which starts at the frames; `size` frames of `step` bits each follow `offset`, in
        // the application's buffer (read for playback, written for capture).
        let (start, len) = unsafe {
            let a = &*areas;
            if a.step == 0 || !a.step.is_multiple_of(8) || !a.first.is_multiple_of(8) {
                return -(libc::EINVAL as snd_pcm_sframes_t);
            }
            let start = (a.addr as *mut u8).add(a.first as usize / 8 + offset as usize * a.step as usize / 8);
            (start, size as usize * a.step as usize / 8)
        };
        let done = match &mut p.pcm {
            // SAFETY: as above; alsa-lib does not touch these bytes during the call.
            Pcm::Play(s) => s.transfer(unsafe { std::slice::from_raw_parts(start, len) }, size as usize),
            // SAFETY: as above.
            Pcm::Record(r) => r.transfer(unsafe { std::slice::from_raw_parts_mut(start, len) }, size as usize),
        };
        match done {
            Ok(n) => n as snd_pcm_sframes_t,
            Err(e) => -(e as snd_pcm_sframes_t),
        }
    })
}

unsafe extern "C" fn cb_close(io: Io) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: alsa-lib is done with the io; private_data is the box leaked at open.
        drop(unsafe { Box::from_raw((*io).private_data as *mut Plugin) });
        0
    }))
    .unwrap_or(-libc::EIO)
}

unsafe extern "C" fn cb_hw_params(io: Io, _params: *mut snd_pcm_hw_params_t) -> c_int {
    with(io, -libc::EIO, |p| {
        let format = match p.io.format {
            FORMAT_S16_LE => SampleFormat::S16Le,
            FORMAT_S32_LE => SampleFormat::S32Le,
            FORMAT_FLOAT_LE => SampleFormat::FloatLe,
            _ => return -libc::EINVAL,
        };
        // c_ulong is u32 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        let buffer = u64::from(p.io.buffer_size);
        p.boundary = default_boundary(buffer);
        status(either!(&mut p.pcm, s => s.hw_params(format, buffer)))
    })
}

unsafe extern "C" fn cb_sw_params(io: Io, params: *mut snd_pcm_sw_params_t) -> c_int {
    with(io, -libc::EIO, |p| {
        let (mut avail_min, mut boundary): (snd_pcm_uframes_t, snd_pcm_uframes_t) = (1, 0);
        // SAFETY: alsa-lib passes the sw_params being set.
        unsafe {
            if snd_pcm_sw_params_get_avail_min(params, &mut avail_min) < 0 {
                avail_min = 1;
            }
            if snd_pcm_sw_params_get_boundary(params, &mut boundary) == 0 && boundary > 0 {
                #[allow(clippy::useless_conversion)]
                let b = u64::from(boundary);
                p.boundary = b;
            }
        }
        #[allow(clippy::useless_conversion)]
        let avail_min = u64::from(avail_min);
        either!(&mut p.pcm, s => s.sw_params(avail_min));
        0
    })
}

unsafe extern "C" fn cb_prepare(io: Io) -> c_int {
    with(io, -libc::EIO, |p| status(either!(&mut p.pcm, s => s.prepare())))
}

unsafe extern "C" fn cb_drain(io: Io) -> c_int {
    with(io, -libc::EIO, |p| match &mut p.pcm {
        Pcm::Play(s) => status(s.drain()),
        // Capture: alsa-lib drops the stream after this.
        Pcm::Record(_) => 0,
    })
}

unsafe extern "C" fn cb_pause(io: Io, enable: c_int) -> c_int {
    with(io, -libc::EIO, |p| status(either!(&mut p.pcm, s => s.pause(enable != 0))))
}

unsafe extern "C" fn cb_poll_revents(io: Io, pfd: *mut libc::pollfd, nfds: c_uint, revents: *mut u16) -> c_int {
    with(io, -libc::EIO, |p| {
        if nfds != 1 || pfd.is_null() || revents.is_null() {
            return -libc::EINVAL;
        }
        let r = either!(&p.pcm, s => s.revents());
        // SAFETY: alsa-lib passes our one pollfd and a place for the result.
        unsafe { *revents = r as u16 };
        0
    })
}

unsafe extern "C" fn cb_delay(io: Io, delayp: *mut snd_pcm_sframes_t) -> c_int {
    with(io, -libc::EIO, |p| {
        let d = either!(&p.pcm, s => s.delay());
        // SAFETY: alsa-lib passes a place for the delay.
        unsafe { *delayp = d as snd_pcm_sframes_t };
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The structures above against alsa/pcm_ioplug.h, as the C compiler lays them out.
    #[test]
    fn ffi_layouts_match_pcm_ioplug_h() {
        let dir = std::env::temp_dir().join(format!("dmixrs-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("layout.c");
        let mut src = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <alsa/asoundlib.h>\n#include <alsa/pcm_ioplug.h>\nint main(void) {\n",
        );
        let io_fields = [
            "version",
            "name",
            "flags",
            "poll_fd",
            "poll_events",
            "mmap_rw",
            "callback",
            "private_data",
            "pcm",
            "stream",
            "state",
            "appl_ptr",
            "hw_ptr",
            "nonblock",
            "access",
            "format",
            "channels",
            "rate",
            "period_size",
            "buffer_size",
        ];
        let cb_fields = [
            "start",
            "stop",
            "pointer",
            "transfer",
            "close",
            "hw_params",
            "hw_free",
            "sw_params",
            "prepare",
            "drain",
            "pause",
            "resume",
            "poll_descriptors_count",
            "poll_descriptors",
            "poll_revents",
            "dump",
            "delay",
            "query_chmaps",
            "get_chmap",
            "set_chmap",
        ];
        for f in io_fields {
            src += &format!("printf(\"io.{f} %zu\\n\", offsetof(snd_pcm_ioplug_t, {f}));\n");
        }
        for f in cb_fields {
            src += &format!("printf(\"cb.{f} %zu\\n\", offsetof(snd_pcm_ioplug_callback_t, {f}));\n");
        }
        for f in ["addr", "first", "step"] {
            src += &format!("printf(\"area.{f} %zu\\n\", offsetof(snd_pcm_channel_area_t, {f}));\n");
        }
        src += "printf(\"size.io %zu\\nsize.cb %zu\\nsize.area %zu\\n\", sizeof(snd_pcm_ioplug_t), sizeof(snd_pcm_ioplug_callback_t), sizeof(snd_pcm_channel_area_t));\n";
        src += "printf(\"const %d %d %d %d %d %d %d %d %d %d %d %d\\n\", SND_PCM_IOPLUG_VERSION, SND_PCM_IOPLUG_HW_ACCESS, SND_PCM_IOPLUG_HW_FORMAT, SND_PCM_IOPLUG_HW_CHANNELS, SND_PCM_IOPLUG_HW_RATE, SND_PCM_IOPLUG_HW_PERIOD_BYTES, SND_PCM_IOPLUG_HW_BUFFER_BYTES, SND_PCM_IOPLUG_HW_PERIODS, SND_PCM_ACCESS_RW_INTERLEAVED, SND_PCM_FORMAT_S16_LE, SND_PCM_FORMAT_S32_LE, SND_PCM_FORMAT_FLOAT_LE);\nreturn 0; }\n";
        std::fs::write(&c, src).unwrap();
        let exe = dir.join("layout");
        let cc = std::process::Command::new("cc").arg(&c).arg("-o").arg(&exe).output().expect("cc (build-essential)");
        assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
        let out = std::process::Command::new(&exe).output().unwrap();
        let out = String::from_utf8(out.stdout).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let ours: Vec<(String, usize)> = vec![
            ("io.version".into(), offset_of!(snd_pcm_ioplug_t, version)),
            ("io.name".into(), offset_of!(snd_pcm_ioplug_t, name)),
            ("io.flags".into(), offset_of!(snd_pcm_ioplug_t, flags)),
            ("io.poll_fd".into(), offset_of!(snd_pcm_ioplug_t, poll_fd)),
            ("io.poll_events".into(), offset_of!(snd_pcm_ioplug_t, poll_events)),
            ("io.mmap_rw".into(), offset_of!(snd_pcm_ioplug_t, mmap_rw)),
            ("io.callback".into(), offset_of!(snd_pcm_ioplug_t, callback)),
            ("io.private_data".into(), offset_of!(snd_pcm_ioplug_t, private_data)),
            ("io.pcm".into(), offset_of!(snd_pcm_ioplug_t, pcm)),
            ("io.stream".into(), offset_of!(snd_pcm_ioplug_t, stream)),
            ("io.state".into(), offset_of!(snd_pcm_ioplug_t, state)),
            ("io.appl_ptr".into(), offset_of!(snd_pcm_ioplug_t, appl_ptr)),
            ("io.hw_ptr".into(), offset_of!(snd_pcm_ioplug_t, hw_ptr)),
            ("io.nonblock".into(), offset_of!(snd_pcm_ioplug_t, nonblock)),
            ("io.access".into(), offset_of!(snd_pcm_ioplug_t, access)),
            ("io.format".into(), offset_of!(snd_pcm_ioplug_t, format)),
            ("io.channels".into(), offset_of!(snd_pcm_ioplug_t, channels)),
            ("io.rate".into(), offset_of!(snd_pcm_ioplug_t, rate)),
            ("io.period_size".into(), offset_of!(snd_pcm_ioplug_t, period_size)),
            ("io.buffer_size".into(), offset_of!(snd_pcm_ioplug_t, buffer_size)),
            ("cb.start".into(), offset_of!(snd_pcm_ioplug_callback_t, start)),
            ("cb.stop".into(), offset_of!(snd_pcm_ioplug_callback_t, stop)),
            ("cb.pointer".into(), offset_of!(snd_pcm_ioplug_callback_t, pointer)),
            ("cb.transfer".into(), offset_of!(snd_pcm_ioplug_callback_t, transfer)),
            ("cb.close".into(), offset_of!(snd_pcm_ioplug_callback_t, close)),
            ("cb.hw_params".into(), offset_of!(snd_pcm_ioplug_callback_t, hw_params)),
            ("cb.hw_free".into(), offset_of!(snd_pcm_ioplug_callback_t, hw_free)),
            ("cb.sw_params".into(), offset_of!(snd_pcm_ioplug_callback_t, sw_params)),
            ("cb.prepare".into(), offset_of!(snd_pcm_ioplug_callback_t, prepare)),
            ("cb.drain".into(), offset_of!(snd_pcm_ioplug_callback_t, drain)),
            ("cb.pause".into(), offset_of!(snd_pcm_ioplug_callback_t, pause)),
            ("cb.resume".into(), offset_of!(snd_pcm_ioplug_callback_t, resume)),
            ("cb.poll_descriptors_count".into(), offset_of!(snd_pcm_ioplug_callback_t, poll_descriptors_count)),
            ("cb.poll_descriptors".into(), offset_of!(snd_pcm_ioplug_callback_t, poll_descriptors)),
            ("cb.poll_revents".into(), offset_of!(snd_pcm_ioplug_callback_t, poll_revents)),
            ("cb.dump".into(), offset_of!(snd_pcm_ioplug_callback_t, dump)),
            ("cb.delay".into(), offset_of!(snd_pcm_ioplug_callback_t, delay)),
            ("cb.query_chmaps".into(), offset_of!(snd_pcm_ioplug_callback_t, query_chmaps)),
            ("cb.get_chmap".into(), offset_of!(snd_pcm_ioplug_callback_t, get_chmap)),
            ("cb.set_chmap".into(), offset_of!(snd_pcm_ioplug_callback_t, set_chmap)),
            ("area.addr".into(), offset_of!(snd_pcm_channel_area_t, addr)),
            ("area.first".into(), offset_of!(snd_pcm_channel_area_t, first)),
            ("area.step".into(), offset_of!(snd_pcm_channel_area_t, step)),
            ("size.io".into(), size_of::<snd_pcm_ioplug_t>()),
            ("size.cb".into(), size_of::<snd_pcm_ioplug_callback_t>()),
            ("size.area".into(), size_of::<snd_pcm_channel_area_t>()),
        ];
        for (name, off) in ours {
            let line = out.lines().find(|l| l.split(' ').next() == Some(&name)).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(line, format!("{name} {off}"), "layout of {name}");
        }
        let consts = format!(
            "const {IOPLUG_VERSION} {HW_ACCESS} {HW_FORMAT} {HW_CHANNELS} {HW_RATE} {HW_PERIOD_BYTES} {HW_BUFFER_BYTES} {HW_PERIODS} {ACCESS_RW_INTERLEAVED} {FORMAT_S16_LE} {FORMAT_S32_LE} {FORMAT_FLOAT_LE}"
        );
        assert!(out.lines().any(|l| l == consts), "constants differ: ours {consts}\n{out}");
    }
}
