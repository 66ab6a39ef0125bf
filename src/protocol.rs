//! The wire messages between a client and `dmix-serve`, and [`PROTOCOL_VERSION`]. Pure
//! encode/decode on byte slices: no I/O, so the decoder can be fuzzed and unit-tested.
//!
//! The socket is SOCK_SEQPACKET: one message is one datagram, so a message is never split or
//! merged, and an oversized one is seen as truncated. All integers are little-endian.
//!
//! ```text
//! Hello (client -> server), 64 bytes
//!   0  magic    "DMXh"
//!   4  version  u32   PROTOCOL_VERSION of the client
//!   8  role     u32   1 play, 2 tee, 3 share, 4 stat, 5 capture
//!  12  channels u32   0: the server's channel count
//!  16  flags    u32   bit 0: `volume` is set (players: their initial volume); other bits 0
//!  20  volume   f32   dB, -120..=+12 (0 unless bit 0 of flags)
//!  24  name     [u8; 40]  UTF-8, NUL-padded
//!
//! Reply (server -> client): a 12-byte head, then a body
//!   0  magic    "DMXr"
//!   4  version  u32   PROTOCOL_VERSION of the server
//!   8  status   u32   0 ok, else a refusal code (see `Refusal`)
//! status 0 (welcome), 96 bytes in all, with 4 fds (status ro, mix, monitor ro, capture ro):
//!  12  slot            u32
//!  16  client_id       u32
//!  20  layout_version  u32
//!  24  rate_hz         u32
//!  28  channels        u32
//!  32  format          u32  1 S16_LE, 2 S32_LE, 3 FLOAT_LE
//!  36  period_frames   u32
//!  40  ring_frames     u32
//!  44  monitor_frames  u32
//!  48  flags           u32  bit 0: freewheel
//!  52  capture_frames  u32  0: no shared input
//!  56  status_bytes    u64
//!  64  mix_bytes       u64
//!  72  monitor_bytes   u64
//!  80  capture_bytes   u64
//!  88  reserved        [u8; 8]
//! status != 0 (refusal): 12..  a UTF-8 reason, at most 244 bytes; no fds. The codes:
//!   1 incompatible, 2 full, 3 denied, 4 bad request, 5 busy, 6 stopping, 8 device,
//!   7 crowded (too many connections waiting to say hello: the oldest silent one is
//!     closed with this code; a client retries within its hello timeout)
//! status 0 and 12 bytes long: "done" (the answer to a share request)
//!
//! Answer (server -> client, to a mixer request): 8 + text bytes
//!   0  magic    "DMXa"
//!   4  version  u32
//!   8  text     UTF-8, at most 248 bytes: the new state in one line, for a person
//!
//! MixerRequest (dmix-stat -> server, after its welcome as a stat client), 192 bytes; the
//! answer is an Answer, or a refusal (4 bad request: no such client, a volume out of range;
//! 8 device: the new sink would not open, and the old one plays on)
//!   0  magic    "DMXm"
//!   4  version  u32
//!   8  op       u32   1 volume, 2 mute, 3 forget a remembered name, 4 switch the sink
//!  12  target   u32   1 client id, 2 pid, 3 every client of a name, 4 master (volume, mute)
//!  16  value    u32   the id or pid
//!  20  how      u32   volume: 0 absolute, 1 relative; mute: 0 off, 1 on, 2 toggle
//!  24  db       f32   volume: the dB (absolute) or the change (relative)
//!  28  reserved u32   0
//!  32  name     [u8; 32]   target 3 and op 3: the client name, NUL-padded
//!  64  spec     [u8; 128]  op 4: the sink, as `dmix-serve --sink` takes it, NUL-padded
//!
//! ShareRequest (dmix-share -> server, after its welcome), 16 + 68 * count bytes
//!   0  magic     "DMXs"
//!   4  version   u32
//!   8  exclusive u32   0 or 1
//!  12  count     u32   1..=16 sub-devices, each:
//!      name      [u8; 32]  a server name, NUL-padded
//!      len       u32       1..=32 channels
//!      map       [u8; 32]  server channel of each sub-device channel; the rest 0
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::format::SampleFormat;
use crate::ring::RingParams;
use crate::ring::layout::truncate_name;

/// The protocol version. Bump on any change to the messages above: [`wire_fingerprint`]
/// covers them, and the version pins (src/pins.rs) fail when it changes under one version.
pub const PROTOCOL_VERSION: u32 = 3;

/// Hello magic.
pub const HELLO_MAGIC: [u8; 4] = *b"DMXh";
/// Reply magic.
pub const REPLY_MAGIC: [u8; 4] = *b"DMXr";
/// Answer magic (a reply to a mixer request, in words).
pub const ANSWER_MAGIC: [u8; 4] = *b"DMXa";
/// Mixer request magic.
pub const MIXER_MAGIC: [u8; 4] = *b"DMXm";
/// Size of a mixer request.
pub const MIXER_BYTES: usize = 192;
/// Bytes of a sink spec in a mixer request.
pub const SPEC_WIRE_BYTES: usize = 128;
/// The loudest volume a client or the master may be given, dB.
pub const MAX_VOLUME_DB: f32 = 12.0;
/// The quietest volume short of mute, dB (anything lower is this).
pub const MIN_VOLUME_DB: f32 = -120.0;
/// Size of a hello.
pub const HELLO_BYTES: usize = 64;
/// Size of a welcome.
pub const WELCOME_BYTES: usize = 96;
/// Largest reply (a refusal with its reason).
pub const MAX_REPLY_BYTES: usize = 256;
/// Bytes of a client name on the wire.
pub const NAME_WIRE_BYTES: usize = 40;

/// What a client is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Adds audio into the mix ring.
    Play,
    /// Records the monitor ring.
    Tee,
    /// Splits channels into sub-devices.
    Share,
    /// Inspects the status.
    Stat,
    /// Records the shared input (`dmix-serve --capture`).
    Capture,
}

impl Role {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Role::Play => 1,
            Role::Tee => 2,
            Role::Share => 3,
            Role::Stat => 4,
            Role::Capture => 5,
        }
    }

    /// Every role.
    pub const ALL: [Role; 5] = [Role::Play, Role::Tee, Role::Share, Role::Stat, Role::Capture];

    /// Decodes a wire code.
    pub fn from_code(code: u32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The name dmix-stat shows.
    pub fn name(self) -> &'static str {
        match self {
            Role::Play => "play",
            Role::Tee => "tee",
            Role::Share => "share",
            Role::Stat => "stat",
            Role::Capture => "capture",
        }
    }
}

/// A client's hello.
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// The client's protocol version.
    pub version: u32,
    /// Its role.
    pub role: Role,
    /// Channels wanted (0: the server's).
    pub channels: u32,
    /// Its name (shown by dmix-stat).
    pub name: String,
    /// A player's initial volume in dB (`dmix-play --volume`, the plugin's `volume` key);
    /// `None`: what the server remembers for the name, else 0 dB.
    pub volume_db: Option<f32>,
}

/// Why the server refused a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Protocol version mismatch.
    Incompatible = 1,
    /// No free slot.
    Full = 2,
    /// Peer credentials not allowed.
    Denied = 3,
    /// Malformed hello.
    BadRequest = 4,
    /// An exclusive resource is held.
    Busy = 5,
    /// The server is shutting down.
    Stopping = 6,
    /// Too many connections were waiting to say hello: this one, the oldest still silent,
    /// was closed to make room. A client that meant to say hello retries.
    Crowded = 7,
    /// A device would not open (a live sink switch); what played before plays on.
    Device = 8,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 8] = [
        Refusal::Incompatible,
        Refusal::Full,
        Refusal::Denied,
        Refusal::BadRequest,
        Refusal::Busy,
        Refusal::Stopping,
        Refusal::Crowded,
        Refusal::Device,
    ];

    /// Decodes a wire code; an unknown one (from a newer server) is a bad request.
    fn from_code(code: u32) -> Refusal {
        Refusal::ALL.into_iter().find(|r| *r as u32 == code).unwrap_or(Refusal::BadRequest)
    }

    /// The error kind a client reports for it.
    pub fn kind(self) -> ErrorKind {
        match self {
            Refusal::Incompatible => ErrorKind::Incompatible,
            Refusal::Full => ErrorKind::Full,
            Refusal::Denied => ErrorKind::Permission,
            Refusal::BadRequest => ErrorKind::InvalidInput,
            Refusal::Busy => ErrorKind::Busy,
            Refusal::Stopping => ErrorKind::ServerGone,
            Refusal::Crowded => ErrorKind::Busy,
            Refusal::Device => ErrorKind::Device,
        }
    }
}

/// The server's welcome: the client's slot and the ring parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The slot index.
    pub slot: u32,
    /// The unique client id.
    pub client_id: u32,
    /// The server's ring layout version.
    pub layout_version: u32,
    /// The ring parameters.
    pub params: RingParams,
    /// Sizes of the status, mix and monitor regions.
    pub region_bytes: [u64; 4],
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Admitted.
    Welcome(Welcome),
    /// A request (share) was carried out.
    Done,
    /// A mixer request was carried out: the new state, in one line.
    Answer(String),
    /// Refused, with the server's reason.
    Refused(Refusal, String),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        put_u32(&mut b, 4, self.version);
        put_u32(&mut b, 8, self.role.code());
        put_u32(&mut b, 12, self.channels);
        if let Some(db) = self.volume_db {
            put_u32(&mut b, 16, 1);
            put_u32(&mut b, 20, db.to_bits());
        }
        let name = truncate_name(&self.name, NAME_WIRE_BYTES).as_bytes();
        b[24..24 + name.len()].copy_from_slice(name);
        b
    }

    /// Decodes a hello. A version other than ours is reported as `Error::Version` (the caller
    /// refuses with `Refusal::Incompatible`); everything is range-checked.
    pub fn decode(b: &[u8]) -> Result<Hello> {
        let bad = |r: String| Err(Error::invalid("hello", r));
        if b.len() < 8 {
            return bad(format!("{} bytes, too short", b.len()));
        }
        if b[0..4] != HELLO_MAGIC {
            return bad("bad magic: not a dmix client".into());
        }
        let version = u32_at(b, 4);
        if version != PROTOCOL_VERSION {
            return Err(Error::Version { what: "protocol", ours: PROTOCOL_VERSION, theirs: version });
        }
        if b.len() != HELLO_BYTES {
            return bad(format!("{} bytes, expected {HELLO_BYTES}", b.len()));
        }
        let Some(role) = Role::from_code(u32_at(b, 8)) else {
            return bad(format!("unknown role {}", u32_at(b, 8)));
        };
        let channels = u32_at(b, 12);
        if channels as usize > crate::ring::layout::MAX_CHANNELS {
            return bad(format!("{channels} channels is too many"));
        }
        let volume_db = match u32_at(b, 16) {
            0 if u32_at(b, 20) == 0 => None,
            1 => Some(check_volume(f32::from_bits(u32_at(b, 20))).map_err(|r| Error::invalid("hello", r))?),
            _ => return bad("reserved fields are not zero".into()),
        };
        let raw = &b[24..24 + NAME_WIRE_BYTES];
        let len = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        if raw[len..].iter().any(|&c| c != 0) {
            return bad("name is not NUL-padded".into());
        }
        let Ok(name) = std::str::from_utf8(&raw[..len]) else {
            return bad("name is not UTF-8".into());
        };
        if name.chars().any(char::is_control) {
            return bad("name has control characters".into());
        }
        Ok(Hello { version, role, channels, name: name.to_string(), volume_db })
    }
}

impl Reply {
    /// Encodes the reply; returns the bytes and their length.
    pub fn encode(&self) -> ([u8; MAX_REPLY_BYTES], usize) {
        let mut b = [0u8; MAX_REPLY_BYTES];
        b[0..4].copy_from_slice(&REPLY_MAGIC);
        put_u32(&mut b, 4, PROTOCOL_VERSION);
        match self {
            Reply::Welcome(w) => {
                let p = &w.params;
                put_u32(&mut b, 8, 0);
                put_u32(&mut b, 12, w.slot);
                put_u32(&mut b, 16, w.client_id);
                put_u32(&mut b, 20, w.layout_version);
                put_u32(&mut b, 24, p.rate_hz);
                put_u32(&mut b, 28, p.channels);
                put_u32(&mut b, 32, p.format.code());
                put_u32(&mut b, 36, p.period_frames);
                put_u32(&mut b, 40, p.ring_frames);
                put_u32(&mut b, 44, p.monitor_frames);
                put_u32(&mut b, 48, u32::from(p.freewheel));
                put_u64(&mut b, 56, w.region_bytes[0]);
                put_u64(&mut b, 64, w.region_bytes[1]);
                put_u64(&mut b, 72, w.region_bytes[2]);
                put_u32(&mut b, 52, p.capture_frames);
                put_u64(&mut b, 80, w.region_bytes[3]);
                (b, WELCOME_BYTES)
            }
            Reply::Done => {
                put_u32(&mut b, 8, 0);
                (b, 12)
            }
            Reply::Answer(text) => {
                b[0..4].copy_from_slice(&ANSWER_MAGIC);
                let text = truncate_name(text, MAX_REPLY_BYTES - 8).as_bytes();
                b[8..8 + text.len()].copy_from_slice(text);
                (b, 8 + text.len())
            }
            Reply::Refused(r, reason) => {
                put_u32(&mut b, 8, *r as u32);
                let text = truncate_name(reason, MAX_REPLY_BYTES - 12).as_bytes();
                b[12..12 + text.len()].copy_from_slice(text);
                (b, 12 + text.len())
            }
        }
    }

    /// Decodes a reply. A server speaking another protocol version is `Error::Version`
    /// naming both, whatever else it sent.
    pub fn decode(b: &[u8]) -> Result<Reply> {
        let bad = |r: String| Err(Error::invalid("server reply", r));
        if b.len() >= 8 && b[0..4] == ANSWER_MAGIC {
            let version = u32_at(b, 4);
            if version != PROTOCOL_VERSION {
                return Err(Error::Version { what: "protocol", ours: PROTOCOL_VERSION, theirs: version });
            }
            return Ok(Reply::Answer(String::from_utf8_lossy(&b[8..]).trim_end_matches('\0').to_string()));
        }
        if b.len() < 12 {
            return bad(format!("{} bytes, too short", b.len()));
        }
        if b[0..4] != REPLY_MAGIC {
            return bad("bad magic: not a dmix server".into());
        }
        let version = u32_at(b, 4);
        if version != PROTOCOL_VERSION {
            return Err(Error::Version { what: "protocol", ours: PROTOCOL_VERSION, theirs: version });
        }
        let status = u32_at(b, 8);
        if status != 0 {
            let reason = String::from_utf8_lossy(&b[12..]).trim_end_matches('\0').to_string();
            return Ok(Reply::Refused(Refusal::from_code(status), reason));
        }
        if b.len() == 12 {
            return Ok(Reply::Done);
        }
        if b.len() != WELCOME_BYTES {
            return bad(format!("welcome of {} bytes, expected {WELCOME_BYTES}", b.len()));
        }
        let Some(format) = SampleFormat::from_code(u32_at(b, 32)) else {
            return bad(format!("unknown sample format {}", u32_at(b, 32)));
        };
        let params = RingParams {
            rate_hz: u32_at(b, 24),
            channels: u32_at(b, 28),
            format,
            period_frames: u32_at(b, 36),
            ring_frames: u32_at(b, 40),
            monitor_frames: u32_at(b, 44),
            capture_frames: u32_at(b, 52),
            freewheel: u32_at(b, 48) & 1 != 0,
        };
        params.validate()?;
        let slot = u32_at(b, 12);
        if slot as usize >= crate::ring::layout::MAX_SLOTS {
            return bad(format!("slot {slot} out of range"));
        }
        Ok(Reply::Welcome(Welcome {
            slot,
            client_id: u32_at(b, 16),
            layout_version: u32_at(b, 20),
            params,
            region_bytes: [u64_at(b, 56), u64_at(b, 64), u64_at(b, 72), u64_at(b, 80)],
        }))
    }
}

/// Checks a volume in dB: a number, at most [`MAX_VOLUME_DB`]; anything below
/// [`MIN_VOLUME_DB`] is that. The error says why in words.
pub fn check_volume(db: f32) -> std::result::Result<f32, String> {
    if !db.is_finite() {
        return Err(format!("volume {db} dB is not a number"));
    }
    if db > MAX_VOLUME_DB {
        return Err(format!("volume {db} dB is above the most, +{MAX_VOLUME_DB} dB"));
    }
    Ok(db.max(MIN_VOLUME_DB))
}

/// Whose volume or mute a mixer request changes.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// One client, by the id in dmix-stat's table.
    Id(u32),
    /// The clients of one process.
    Pid(u32),
    /// Every client of this name, now and later (remembered).
    Name(String),
    /// The server's own output gain, applied to the mix.
    Master,
}

/// What a mixer request does to mute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuteHow {
    /// Unmute.
    Off = 0,
    /// Mute.
    On = 1,
    /// Mute if unmuted, else unmute.
    Toggle = 2,
}

/// A live change asked of the server by dmix-stat.
#[derive(Clone, Debug, PartialEq)]
pub enum MixerRequest {
    /// Sets a volume in dB, or changes it by `db` when `relative`.
    Volume {
        /// Whose.
        target: Target,
        /// dB, or the change in dB.
        db: f32,
        /// `db` is a change.
        relative: bool,
    },
    /// Mutes or unmutes.
    Mute {
        /// Whose.
        target: Target,
        /// On, off or toggle.
        how: MuteHow,
    },
    /// Drops what the server remembers for a client name.
    Forget {
        /// The name.
        name: String,
    },
    /// Moves the server to another sink, which becomes its first preference.
    Sink {
        /// As `dmix-serve --sink` takes it.
        spec: String,
    },
}

impl MixerRequest {
    /// Encodes the request ([`MIXER_BYTES`]).
    pub fn encode(&self) -> [u8; MIXER_BYTES] {
        let mut b = [0u8; MIXER_BYTES];
        b[0..4].copy_from_slice(&MIXER_MAGIC);
        put_u32(&mut b, 4, PROTOCOL_VERSION);
        let put_target = |b: &mut [u8], t: &Target| {
            let (kind, value, name) = match t {
                Target::Id(id) => (1, *id, ""),
                Target::Pid(pid) => (2, *pid, ""),
                Target::Name(n) => (3, 0, n.as_str()),
                Target::Master => (4, 0, ""),
            };
            put_u32(b, 12, kind);
            put_u32(b, 16, value);
            let name = truncate_name(name, 32).as_bytes();
            b[32..32 + name.len()].copy_from_slice(name);
        };
        match self {
            MixerRequest::Volume { target, db, relative } => {
                put_u32(&mut b, 8, 1);
                put_target(&mut b, target);
                put_u32(&mut b, 20, u32::from(*relative));
                put_u32(&mut b, 24, db.to_bits());
            }
            MixerRequest::Mute { target, how } => {
                put_u32(&mut b, 8, 2);
                put_target(&mut b, target);
                put_u32(&mut b, 20, *how as u32);
            }
            MixerRequest::Forget { name } => {
                put_u32(&mut b, 8, 3);
                let name = truncate_name(name, 32).as_bytes();
                b[32..32 + name.len()].copy_from_slice(name);
            }
            MixerRequest::Sink { spec } => {
                put_u32(&mut b, 8, 4);
                let spec = truncate_name(spec, SPEC_WIRE_BYTES).as_bytes();
                b[64..64 + spec.len()].copy_from_slice(spec);
            }
        }
        b
    }

    /// Decodes and checks a request: sizes, codes, names, the volume's range.
    pub fn decode(b: &[u8]) -> Result<MixerRequest> {
        let bad = |r: String| Err(Error::invalid("mixer request", r));
        if b.len() < 8 || b[0..4] != MIXER_MAGIC {
            return bad("not a mixer request".into());
        }
        let version = u32_at(b, 4);
        if version != PROTOCOL_VERSION {
            return Err(Error::Version { what: "protocol", ours: PROTOCOL_VERSION, theirs: version });
        }
        if b.len() != MIXER_BYTES {
            return bad(format!("{} bytes, expected {MIXER_BYTES}", b.len()));
        }
        let text = |raw: &[u8], what: &str| -> Result<String> {
            let len = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
            if raw[len..].iter().any(|&c| c != 0) {
                return Err(Error::invalid("mixer request", format!("{what} is not NUL-padded")));
            }
            match std::str::from_utf8(&raw[..len]) {
                Ok(t) if !t.chars().any(char::is_control) => Ok(t.to_string()),
                _ => Err(Error::invalid("mixer request", format!("{what} is not printable UTF-8"))),
            }
        };
        let name = text(&b[32..64], "the name")?;
        let spec = text(&b[64..64 + SPEC_WIRE_BYTES], "the sink")?;
        let op = u32_at(b, 8);
        let how = u32_at(b, 20);
        if u32_at(b, 28) != 0 {
            return bad("reserved fields are not zero".into());
        }
        let target = || -> Result<Target> {
            let value = u32_at(b, 16);
            match u32_at(b, 12) {
                1 => Ok(Target::Id(value)),
                2 => Ok(Target::Pid(value)),
                3 if !name.is_empty() => Ok(Target::Name(name.clone())),
                3 => Err(Error::invalid("mixer request", "an empty client name")),
                4 => Ok(Target::Master),
                k => Err(Error::invalid("mixer request", format!("unknown target kind {k}"))),
            }
        };
        match op {
            1 => {
                let relative = match how {
                    0 => false,
                    1 => true,
                    _ => return bad(format!("volume mode {how}")),
                };
                let db = f32::from_bits(u32_at(b, 24));
                let db = if relative {
                    if !db.is_finite() {
                        return bad(format!("a change of {db} dB"));
                    }
                    db
                } else {
                    check_volume(db).map_err(|r| Error::invalid("mixer request", r))?
                };
                Ok(MixerRequest::Volume { target: target()?, db, relative })
            }
            2 => {
                let how = match how {
                    0 => MuteHow::Off,
                    1 => MuteHow::On,
                    2 => MuteHow::Toggle,
                    _ => return bad(format!("mute mode {how}")),
                };
                Ok(MixerRequest::Mute { target: target()?, how })
            }
            3 if !name.is_empty() => Ok(MixerRequest::Forget { name }),
            4 if !spec.is_empty() => Ok(MixerRequest::Sink { spec }),
            3 | 4 => bad("nothing named".into()),
            _ => bad(format!("unknown operation {op}")),
        }
    }
}

/// Share request magic.
pub const SHARE_MAGIC: [u8; 4] = *b"DMXs";
/// Most sub-devices one dmix-share may create.
pub const MAX_SUBDEVICES: usize = 16;
const SHARE_ENTRY_BYTES: usize = 68;
/// Largest share request.
pub const MAX_SHARE_BYTES: usize = 16 + SHARE_ENTRY_BYTES * MAX_SUBDEVICES;

/// One sub-device: a name and the server channels it maps to, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubDevice {
    /// Its server name (`-D NAME`).
    pub name: String,
    /// Server channel of each of its channels.
    pub map: Vec<u8>,
}

/// dmix-share's request: sub-devices to create for as long as it stays connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRequest {
    /// A channel belongs to one client at a time.
    pub exclusive: bool,
    /// The sub-devices.
    pub subs: Vec<SubDevice>,
}

impl ShareRequest {
    /// Encodes the request (at most [`MAX_SHARE_BYTES`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 16 + SHARE_ENTRY_BYTES * self.subs.len()];
        b[0..4].copy_from_slice(&SHARE_MAGIC);
        put_u32(&mut b, 4, PROTOCOL_VERSION);
        put_u32(&mut b, 8, u32::from(self.exclusive));
        put_u32(&mut b, 12, self.subs.len() as u32);
        for (i, sub) in self.subs.iter().enumerate() {
            let at = 16 + i * SHARE_ENTRY_BYTES;
            let name = truncate_name(&sub.name, 32).as_bytes();
            b[at..at + name.len()].copy_from_slice(name);
            put_u32(&mut b, at + 32, sub.map.len().min(32) as u32);
            for (j, &c) in sub.map.iter().take(32).enumerate() {
                b[at + 36 + j] = c;
            }
        }
        b
    }

    /// Decodes and checks a request against a server of `channels` channels: sizes, names,
    /// channel ranges, duplicates, and overlaps between exclusive sub-devices.
    pub fn decode(b: &[u8], channels: u32) -> Result<ShareRequest> {
        let bad = |r: String| Err(Error::invalid("share request", r));
        // Found by fuzzing: a server of 0 channels made the range message underflow.
        if channels == 0 || channels as usize > crate::ring::layout::MAX_CHANNELS {
            return bad(format!("a server of {channels} channels cannot be shared"));
        }
        if b.len() < 16 || b[0..4] != SHARE_MAGIC {
            return bad("not a share request".into());
        }
        let version = u32_at(b, 4);
        if version != PROTOCOL_VERSION {
            return Err(Error::Version { what: "protocol", ours: PROTOCOL_VERSION, theirs: version });
        }
        let exclusive = match u32_at(b, 8) {
            0 => false,
            1 => true,
            v => return bad(format!("exclusive flag {v}")),
        };
        let count = u32_at(b, 12) as usize;
        if count == 0 || count > MAX_SUBDEVICES {
            return bad(format!("{count} sub-devices (1 to {MAX_SUBDEVICES})"));
        }
        if b.len() != 16 + count * SHARE_ENTRY_BYTES {
            return bad(format!("{} bytes for {count} sub-devices", b.len()));
        }
        let mut subs: Vec<SubDevice> = Vec::with_capacity(count);
        for i in 0..count {
            let at = 16 + i * SHARE_ENTRY_BYTES;
            let raw = &b[at..at + 32];
            let len = raw.iter().position(|&c| c == 0).unwrap_or(32);
            let Ok(name) = std::str::from_utf8(&raw[..len]) else { return bad("a name is not UTF-8".into()) };
            crate::paths::validate_name(name)?;
            if subs.iter().any(|s| s.name == name) {
                return bad(format!("'{name}' is named twice"));
            }
            let n = u32_at(b, at + 32) as usize;
            if n == 0 || n > 32 {
                return bad(format!("'{name}' has {n} channels"));
            }
            let map = b[at + 36..at + 36 + n].to_vec();
            if let Some(&c) = map.iter().find(|&&c| u32::from(c) >= channels) {
                return bad(format!(
                    "'{name}': channel {c} is out of range (the server has {channels}: 0 to {})",
                    channels - 1
                ));
            }
            let mut seen = 0u64;
            for &c in &map {
                if seen & (1 << c) != 0 {
                    return bad(format!("'{name}': channel {c} is listed twice"));
                }
                seen |= 1 << c;
            }
            if exclusive && let Some(other) = subs.iter().find(|s| s.map.iter().any(|c| map.contains(c))) {
                return bad(format!("'{name}' and '{}' share channels, which --exclusive forbids", other.name));
            }
            subs.push(SubDevice { name: name.to_string(), map });
        }
        Ok(ShareRequest { exclusive, subs })
    }
}

/// What the wire format is, as one number: every message encoded from fixed values (with
/// the version field zeroed: the version is what the pins compare this against), the sizes,
/// magics and codes. Peers whose fingerprints differ may misread each other;
/// [`PROTOCOL_VERSION`] says so in every message, and the pins (src/pins.rs) make sure it
/// changes whenever this does.
pub fn wire_fingerprint() -> u64 {
    let mut h = crate::ring::layout::Fnv::new();
    let mut message = |name: &str, bytes: &[u8]| {
        let mut b = bytes.to_vec();
        b[4..8].fill(0);
        h.str(name).bytes(&b);
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Capture,
        channels: 6,
        name: "fingerprint é".into(),
        volume_db: Some(-6.5),
    };
    message("hello", &hello.encode());
    let (b, n) = Reply::Answer("answer".into()).encode();
    message("answer", &b[..n]);
    for (i, m) in [
        MixerRequest::Volume { target: Target::Id(7), db: -3.5, relative: true },
        MixerRequest::Volume { target: Target::Pid(9), db: 2.0, relative: false },
        MixerRequest::Mute { target: Target::Name("mpv".into()), how: MuteHow::Toggle },
        MixerRequest::Mute { target: Target::Master, how: MuteHow::On },
        MixerRequest::Forget { name: "mpv".into() },
        MixerRequest::Sink { spec: "wav:/tmp/x.wav".into() },
    ]
    .iter()
    .enumerate()
    {
        message(&format!("mixer {i}"), &m.encode());
    }
    let params = RingParams {
        rate_hz: 44100,
        channels: 6,
        format: SampleFormat::FloatLe,
        period_frames: 128,
        ring_frames: 1024,
        monitor_frames: 22528,
        capture_frames: 22528,
        freewheel: true,
    };
    let welcome = Reply::Welcome(Welcome {
        slot: 5,
        client_id: 0x0102_0304,
        layout_version: 0x0a0b_0c0d,
        params,
        region_bytes: [1, 2, 3, 4],
    });
    let (b, n) = welcome.encode();
    message("welcome", &b[..n]);
    let (b, n) = Reply::Done.encode();
    message("done", &b[..n]);
    for r in Refusal::ALL {
        let (b, n) = Reply::Refused(r, "why".into()).encode();
        message("refused", &b[..n]);
    }
    let share = ShareRequest {
        exclusive: true,
        subs: vec![
            SubDevice { name: "front".into(), map: vec![0, 1] },
            SubDevice { name: "rear".into(), map: vec![5, 4, 3] },
        ],
    };
    message("share", &share.encode());
    for r in Role::ALL {
        h.str(r.name()).num(u64::from(r.code()));
    }
    for f in SampleFormat::ALL {
        h.str(f.name()).num(u64::from(f.code()));
    }
    for (name, value) in [
        ("HELLO_MAGIC", u64::from(u32::from_le_bytes(HELLO_MAGIC))),
        ("REPLY_MAGIC", u64::from(u32::from_le_bytes(REPLY_MAGIC))),
        ("SHARE_MAGIC", u64::from(u32::from_le_bytes(SHARE_MAGIC))),
        ("ANSWER_MAGIC", u64::from(u32::from_le_bytes(ANSWER_MAGIC))),
        ("MIXER_MAGIC", u64::from(u32::from_le_bytes(MIXER_MAGIC))),
        ("MIXER_BYTES", MIXER_BYTES as u64),
        ("SPEC_WIRE_BYTES", SPEC_WIRE_BYTES as u64),
        ("MAX_VOLUME_DB", u64::from(MAX_VOLUME_DB.to_bits())),
        ("MIN_VOLUME_DB", u64::from(MIN_VOLUME_DB.to_bits())),
        ("HELLO_BYTES", HELLO_BYTES as u64),
        ("WELCOME_BYTES", WELCOME_BYTES as u64),
        ("MAX_REPLY_BYTES", MAX_REPLY_BYTES as u64),
        ("NAME_WIRE_BYTES", NAME_WIRE_BYTES as u64),
        ("MAX_SUBDEVICES", MAX_SUBDEVICES as u64),
        ("MAX_SHARE_BYTES", MAX_SHARE_BYTES as u64),
        ("MAX_FDS", crate::sys::MAX_FDS as u64),
    ] {
        h.str(name).num(value);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role: Role::Play,
            channels: 2,
            name: "dmix-play: a.flac".into(),
            volume_db: None,
        }
    }

    fn params() -> RingParams {
        RingParams {
            rate_hz: 48000,
            channels: 2,
            format: SampleFormat::S16Le,
            period_frames: 256,
            ring_frames: 1024,
            monitor_frames: 4096,
            capture_frames: 0,
            freewheel: true,
        }
    }

    #[test]
    fn protocol_hello_round_trips() {
        let h = hello();
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn protocol_hello_name_is_cut_on_a_char_boundary() {
        let h = Hello { name: "é".repeat(30), ..hello() };
        let d = Hello::decode(&h.encode()).unwrap();
        assert_eq!(d.name, "é".repeat(20));
    }

    #[test]
    fn protocol_hello_rejects_bad_messages() {
        let good = hello().encode();
        assert!(Hello::decode(&good[..3]).is_err());
        assert!(Hello::decode(&good[..40]).is_err());
        let mut long = good.to_vec();
        long.push(0);
        assert!(Hello::decode(&long).is_err());
        let mut b = good;
        b[0] = b'X';
        assert_eq!(Hello::decode(&b).unwrap_err().kind(), ErrorKind::InvalidInput);
        let mut b = good;
        b[8] = 9;
        assert!(Hello::decode(&b).is_err());
        let mut b = good;
        b[12] = 200;
        assert!(Hello::decode(&b).is_err());
        // Flags other than "volume set" are refused; so is a volume without the flag, and a
        // volume out of range.
        let mut b = good;
        b[16] = 2;
        assert!(Hello::decode(&b).is_err());
        let mut b = good;
        b[20..24].copy_from_slice(&(-6f32).to_bits().to_le_bytes());
        assert!(Hello::decode(&b).is_err());
        b[16] = 1;
        assert_eq!(Hello::decode(&b).unwrap().volume_db, Some(-6.0));
        b[20..24].copy_from_slice(&13f32.to_bits().to_le_bytes());
        assert!(Hello::decode(&b).is_err());
        b[20..24].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
        assert!(Hello::decode(&b).is_err());
        let mut b = good;
        b[24] = 0xff;
        assert!(Hello::decode(&b).is_err());
        let mut b = good;
        b[24] = b'\n';
        assert!(Hello::decode(&b).is_err());
        let mut b = [0u8; HELLO_BYTES];
        b[..24].copy_from_slice(&good[..24]);
        b[30] = b'x'; // garbage after the NUL padding starts
        assert!(Hello::decode(&b).is_err());
    }

    #[test]
    fn protocol_version_mismatch_names_both_versions() {
        let mut b = hello().encode();
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        let e = Hello::decode(&b).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Incompatible);
        let msg = e.to_string();
        assert!(msg.contains(&PROTOCOL_VERSION.to_string()) && msg.contains('7'), "{msg}");
        // A future server's reply of any length is reported the same way.
        let mut r = [0u8; 12];
        r[0..4].copy_from_slice(&REPLY_MAGIC);
        r[4..8].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        assert_eq!(Reply::decode(&r).unwrap_err().kind(), ErrorKind::Incompatible);
    }

    #[test]
    fn protocol_reply_round_trips() {
        let w = Reply::Welcome(Welcome {
            slot: 3,
            client_id: 17,
            layout_version: 1,
            params: params(),
            region_bytes: [8192, 32768, 40960, 4096],
        });
        let (b, n) = w.encode();
        assert_eq!(n, WELCOME_BYTES);
        assert_eq!(Reply::decode(&b[..n]).unwrap(), w);
        // Every refusal code survives the trip (7, crowded, was added for issue 14).
        for code in Refusal::ALL {
            let r = Reply::Refused(code, "server full: 64 clients".into());
            let (b, n) = r.encode();
            assert_eq!(Reply::decode(&b[..n]).unwrap(), r);
        }
        assert_eq!(Refusal::Crowded as u32, 7);
    }

    #[test]
    fn protocol_share_request_round_trips_and_is_checked() {
        let req = ShareRequest {
            exclusive: true,
            subs: vec![
                SubDevice { name: "front".into(), map: vec![0, 1] },
                SubDevice { name: "rear".into(), map: vec![3, 2] },
            ],
        };
        assert_eq!(ShareRequest::decode(&req.encode(), 4).unwrap(), req);
        let check = |r: ShareRequest, channels: u32, why: &str| {
            let e = ShareRequest::decode(&r.encode(), channels).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        };
        check(req.clone(), 3, "channel 3 is out of range");
        let mut dup = req.clone();
        dup.subs[1].name = "front".into();
        check(dup, 4, "named twice");
        let mut overlap = req.clone();
        overlap.subs[1].map = vec![1, 2];
        check(overlap.clone(), 4, "share channels");
        overlap.exclusive = false;
        assert!(ShareRequest::decode(&overlap.encode(), 4).is_ok());
        let mut twice = req.clone();
        twice.subs[0].map = vec![1, 1];
        check(twice, 4, "listed twice");
        let mut badname = req.clone();
        badname.subs[0].name = ".x".into();
        check(badname, 4, "server name");
        assert!(ShareRequest::decode(b"DMXs", 4).is_err());
        // Fuzz finding (fuzz/fuzz_targets/protocol.rs): channel counts the server never has
        // are refused, not a panic (0 underflowed, over 64 would overflow the duplicate mask).
        for channels in [0, 33, 64, 65, u32::MAX] {
            assert!(ShareRequest::decode(&req.encode(), channels).is_err(), "{channels}");
        }
        assert_eq!(Reply::decode(&Reply::Done.encode().0[..12]).unwrap(), Reply::Done);
    }

    #[test]
    fn protocol_reply_rejects_bad_messages() {
        let w = Reply::Welcome(Welcome {
            slot: 3,
            client_id: 17,
            layout_version: 1,
            params: params(),
            region_bytes: [0; 4],
        });
        let (b, n) = w.encode();
        assert!(Reply::decode(&b[..n - 1]).is_err());
        let mut bad = b;
        bad[32] = 9; // format
        assert!(Reply::decode(&bad[..n]).is_err());
        let mut bad = b;
        bad[36..40].copy_from_slice(&0u32.to_le_bytes()); // period 0
        assert!(Reply::decode(&bad[..n]).is_err());
        let mut bad = b;
        bad[12] = 200; // slot
        assert!(Reply::decode(&bad[..n]).is_err());
        let mut bad = b;
        bad[1] = b'?';
        assert!(Reply::decode(&bad[..n]).is_err());
    }

    #[test]
    fn protocol_mixer_requests_round_trip() {
        for m in [
            MixerRequest::Volume { target: Target::Id(7), db: -3.5, relative: true },
            MixerRequest::Volume { target: Target::Pid(9), db: 12.0, relative: false },
            MixerRequest::Volume { target: Target::Name("mpv é".into()), db: -120.0, relative: false },
            MixerRequest::Mute { target: Target::Master, how: MuteHow::Toggle },
            MixerRequest::Mute { target: Target::Name("x".into()), how: MuteHow::Off },
            MixerRequest::Forget { name: "mpv".into() },
            MixerRequest::Sink { spec: "alsa:hdmi:CARD=PCH,DEV=0".into() },
        ] {
            assert_eq!(MixerRequest::decode(&m.encode()).unwrap(), m);
        }
        let (b, n) = Reply::Answer("mpv (2 players): -10.0 dB; remembered".into()).encode();
        assert_eq!(Reply::decode(&b[..n]).unwrap(), Reply::Answer("mpv (2 players): -10.0 dB; remembered".into()));
        let (b, n) = Reply::Refused(Refusal::Device, "no".into()).encode();
        assert_eq!(Reply::decode(&b[..n]).unwrap(), Reply::Refused(Refusal::Device, "no".into()));
    }

    #[test]
    fn protocol_mixer_request_rejects_bad_messages() {
        let good = MixerRequest::Volume { target: Target::Id(1), db: 0.0, relative: false }.encode();
        assert!(MixerRequest::decode(&good[..100]).is_err());
        let mut b = good;
        b[24..28].copy_from_slice(&12.5f32.to_bits().to_le_bytes());
        let e = MixerRequest::decode(&b).unwrap_err().to_string();
        assert!(e.contains("above the most, +12 dB"), "{e}");
        let mut b = good;
        b[24..28].copy_from_slice(&f32::INFINITY.to_bits().to_le_bytes());
        assert!(MixerRequest::decode(&b).is_err());
        for (at, v) in [(8, 9u8), (12, 7), (20, 5), (28, 1)] {
            let mut b = good;
            b[at] = v;
            assert!(MixerRequest::decode(&b).is_err(), "byte {at} = {v}");
        }
        // A name target with no name; a forget with none; a name with a newline.
        let mut b = good;
        b[12] = 3;
        assert!(MixerRequest::decode(&b).is_err());
        let mut b = MixerRequest::Forget { name: "a".into() }.encode();
        b[32] = 0;
        assert!(MixerRequest::decode(&b).is_err());
        b[32] = b'\n';
        assert!(MixerRequest::decode(&b).is_err());
        // Out of range relative changes are fine (the server clamps the result).
        let rel = MixerRequest::Volume { target: Target::Master, db: 40.0, relative: true };
        assert_eq!(MixerRequest::decode(&rel.encode()).unwrap(), rel);
    }
}
