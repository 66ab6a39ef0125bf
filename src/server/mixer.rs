//! The live mixer: what a mixer request (`dmix-stat --volume/--mute/--forget`) does, and the
//! volumes remembered by client name across restarts.
//!
//! [`decide`] is pure (the clients and volumes in, the words to write and the answer out),
//! so that every rule has a unit test; the control thread writes the words through
//! [`ServerSlot::set_volume`](crate::ring::server::ServerSlot::set_volume) and keeps the file.
//!
//! Remembered: a change made with a name target (and the master) is kept for that name and
//! given to every later client of it, in `$XDG_STATE_HOME/dmix/SERVER.volumes` (written
//! whole to a temporary file and renamed over, so a crash leaves the old file or the new
//! one). One line a name: `NAME<TAB>DB<TAB>muted|unmuted`; names hold no control characters
//! (the hello refuses them), so a tab cannot be part of one. A file that does not read is
//! reported in one line and ignored, never a refused start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::protocol::{Hello, MAX_VOLUME_DB, MIN_VOLUME_DB, MixerRequest, MuteHow, Refusal, Role, Target};
use crate::ring::Volume;
use crate::ring::layout::{NAME_BYTES, truncate_name};

/// The name under which the master is remembered (a client by that name cannot be a
/// target: `master` means the master).
const MASTER: &str = "master";

/// A player as the mixer sees it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Client {
    pub slot: usize,
    pub id: u32,
    pub pid: u32,
    pub name: String,
    pub role: Role,
    pub volume: Volume,
}

/// What a request decided.
#[derive(Debug, PartialEq)]
pub(super) struct Decision {
    /// New volumes of slots.
    pub slots: Vec<(usize, Volume)>,
    /// A new master volume.
    pub master: Option<Volume>,
    /// The remembered volumes changed: write the file.
    pub save: bool,
    /// The new state, in one line.
    pub answer: String,
}

/// The remembered volumes, and whether they are given to new clients.
pub(super) struct Mixer {
    remembered: BTreeMap<String, Volume>,
    path: Option<PathBuf>,
    restore: bool,
}

impl Mixer {
    /// Reads the remembered volumes from `path` (none if it does not exist). Returns the
    /// mixer and, when the file could not be used, the one line that says why.
    pub fn load(path: Option<PathBuf>, restore: bool) -> (Mixer, Option<String>) {
        let mut warning = None;
        let remembered = match path.as_deref().map(std::fs::read_to_string) {
            None => BTreeMap::new(),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Some(Err(e)) => {
                warning = Some(format!("{}: {e}; no volume is restored", shown(path.as_deref())));
                BTreeMap::new()
            }
            Some(Ok(text)) => parse(&text).unwrap_or_else(|why| {
                warning = Some(format!("{}: {why}; ignored, no volume is restored", shown(path.as_deref())));
                BTreeMap::new()
            }),
        };
        (Mixer { remembered, path, restore }, warning)
    }

    /// The master volume to start with, when restoring.
    pub fn master_at_start(&self) -> Option<Volume> {
        self.restore.then(|| self.remembered.get(MASTER).copied()).flatten()
    }

    /// The volume a new client starts with: its hello's, else what is remembered for its
    /// name (when restoring), else 0 dB.
    pub fn initial(&self, hello: &Hello) -> Volume {
        if let Some(db) = hello.volume_db {
            return Volume { db, muted: false };
        }
        // As the slot table keeps it, which is the name dmix-stat shows and targets.
        let name = truncate_name(&hello.name, NAME_BYTES);
        let remembered = || self.remembered.get(name).copied().filter(|_| name != MASTER);
        match hello.role {
            Role::Play if self.restore => remembered().unwrap_or(Volume::UNITY),
            _ => Volume::UNITY,
        }
    }

    /// Decides `req` against the players now and the master volume.
    pub fn decide(
        &mut self,
        req: &MixerRequest,
        clients: &[Client],
        master: Volume,
    ) -> Result<Decision, (Refusal, String)> {
        decide(&mut self.remembered, req, clients, master)
    }

    /// Writes the remembered volumes; the error says where and why.
    pub fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        save(path, &self.remembered).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn shown(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| p.display().to_string())
}

/// Parses the file's text; the error names the line.
fn parse(text: &str) -> Result<BTreeMap<String, Volume>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {} is not NAME<TAB>DB<TAB>muted|unmuted", n + 1);
        let mut parts = line.split('\t');
        let (Some(name), Some(db), Some(mute), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let db: f32 = db.parse().map_err(|_| bad())?;
        let muted = match mute {
            "muted" => true,
            "unmuted" => false,
            _ => return Err(bad()),
        };
        if name.is_empty() || !(MIN_VOLUME_DB..=MAX_VOLUME_DB).contains(&db) {
            return Err(bad());
        }
        out.insert(name.to_string(), Volume { db, muted });
    }
    Ok(out)
}

fn save(path: &Path, remembered: &BTreeMap<String, Volume>) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut text = String::from("# dmix-serve: volumes remembered by client name (dmix-stat --volume NAME=DB)\n");
    for (name, v) in remembered {
        text.push_str(&format!("{name}\t{}\t{}\n", v.db, if v.muted { "muted" } else { "unmuted" }));
    }
    let tmp = path.with_extension(format!("volumes.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// "client 3 (dmix-play: a.wav, pid 12)".
fn who(c: &Client) -> String {
    format!("client {} ({}, pid {})", c.id, c.name, c.pid)
}

/// The new volume of one whose volume is `old`.
fn changed(old: Volume, req: &MixerRequest) -> Volume {
    match *req {
        MixerRequest::Volume { db, relative: true, .. } => {
            Volume { db: (old.db + db).clamp(MIN_VOLUME_DB, MAX_VOLUME_DB), ..old }
        }
        MixerRequest::Volume { db, .. } => Volume { db, ..old },
        MixerRequest::Mute { how, .. } => Volume {
            muted: match how {
                MuteHow::On => true,
                MuteHow::Off => false,
                MuteHow::Toggle => !old.muted,
            },
            ..old
        },
        MixerRequest::Forget { .. } | MixerRequest::Sink { .. } => old,
    }
}

fn decide(
    remembered: &mut BTreeMap<String, Volume>,
    req: &MixerRequest,
    clients: &[Client],
    master: Volume,
) -> Result<Decision, (Refusal, String)> {
    let refuse = |why: String| Err((Refusal::BadRequest, why));
    let target = match req {
        MixerRequest::Volume { target, .. } | MixerRequest::Mute { target, .. } => target,
        MixerRequest::Forget { name } => {
            return match remembered.remove(name) {
                Some(_) => {
                    Ok(Decision { slots: Vec::new(), master: None, save: true, answer: format!("{name}: forgotten") })
                }
                None => refuse(format!("no volume is remembered for '{name}'")),
            };
        }
        MixerRequest::Sink { .. } => return refuse("a sink switch is not a volume".into()),
    };
    let players = || clients.iter().filter(|c| c.role == Role::Play);
    match target {
        Target::Master => {
            let v = changed(master, req);
            remembered.insert(MASTER.to_string(), v);
            Ok(Decision {
                slots: Vec::new(),
                master: Some(v),
                save: true,
                answer: format!("master: {}; remembered", v.describe()),
            })
        }
        Target::Id(id) => {
            let Some(c) = clients.iter().find(|c| c.id == *id) else {
                return refuse(format!("no client {id}"));
            };
            if c.role != Role::Play {
                return refuse(format!("client {id} is a {}: only players have a volume", c.role.name()));
            }
            let v = changed(c.volume, req);
            Ok(Decision {
                slots: vec![(c.slot, v)],
                master: None,
                save: false,
                answer: format!("{}: {}", who(c), v.describe()),
            })
        }
        Target::Pid(pid) => {
            let mine: Vec<&Client> = players().filter(|c| c.pid == *pid).collect();
            let slots: Vec<(usize, Volume)> = mine.iter().map(|c| (c.slot, changed(c.volume, req))).collect();
            let answer = match (mine.as_slice(), slots.as_slice()) {
                ([], _) => return refuse(format!("no player of pid {pid}")),
                ([c], [(_, v)]) => format!("{}: {}", who(c), v.describe()),
                (_, [(_, v), ..]) if slots.iter().all(|(_, w)| w == v) => {
                    format!("pid {pid} ({} players): {}", slots.len(), v.describe())
                }
                _ => {
                    let each: Vec<String> =
                        mine.iter().zip(&slots).map(|(c, (_, v))| format!("{} {}", c.id, v.describe())).collect();
                    format!("pid {pid}: {}", each.join("; "))
                }
            };
            Ok(Decision { slots, master: None, save: false, answer })
        }
        // dmix-stat sends `master` as Target::Master; spelled as a name it is refused, since
        // a client of that name could not be told from the master in the file.
        Target::Name(name) if name == MASTER => refuse("'master' names the master volume, not a client".into()),
        Target::Name(name) => {
            let mine: Vec<&Client> = players().filter(|c| &c.name == name).collect();
            // The name's volume: what is remembered for it, else its first player's.
            let base =
                remembered.get(name).copied().or_else(|| mine.first().map(|c| c.volume)).unwrap_or(Volume::UNITY);
            let v = changed(base, req);
            remembered.insert(name.clone(), v);
            let now = match mine.len() {
                0 => "no player now".to_string(),
                1 => "1 player".to_string(),
                n => format!("{n} players"),
            };
            Ok(Decision {
                slots: mine.iter().map(|c| (c.slot, v)).collect(),
                master: None,
                save: true,
                answer: format!("{name} ({now}): {}; remembered", v.describe()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(slot: usize, id: u32, pid: u32, name: &str, db: f32) -> Client {
        Client { slot, id, pid, name: name.into(), role: Role::Play, volume: Volume { db, muted: false } }
    }

    fn clients() -> Vec<Client> {
        let mut tee = client(3, 4, 50, "dmix-tee", 0.0);
        tee.role = Role::Tee;
        vec![client(0, 1, 10, "mpv", -3.0), client(1, 2, 10, "mpv", -6.0), client(2, 3, 20, "aplay", 0.0), tee]
    }

    fn vol(target: Target, db: f32, relative: bool) -> MixerRequest {
        MixerRequest::Volume { target, db, relative }
    }

    #[test]
    fn mixer_by_id_sets_one_client_and_remembers_nothing() {
        let mut r = BTreeMap::new();
        let d = decide(&mut r, &vol(Target::Id(2), 3.0, true), &clients(), Volume::UNITY).unwrap();
        assert_eq!(d.slots, vec![(1, Volume { db: -3.0, muted: false })]);
        assert!(!d.save && r.is_empty());
        assert_eq!(d.answer, "client 2 (mpv, pid 10): -3.0 dB");
        let e = decide(&mut r, &vol(Target::Id(9), 0.0, false), &clients(), Volume::UNITY).unwrap_err();
        assert_eq!(e, (Refusal::BadRequest, "no client 9".into()));
        let e = decide(&mut r, &vol(Target::Id(4), 0.0, false), &clients(), Volume::UNITY).unwrap_err();
        assert_eq!(e.1, "client 4 is a tee: only players have a volume");
    }

    #[test]
    fn mixer_by_pid_changes_each_of_its_players() {
        let mut r = BTreeMap::new();
        let d = decide(&mut r, &vol(Target::Pid(10), -1.0, true), &clients(), Volume::UNITY).unwrap();
        assert_eq!(d.slots, vec![(0, Volume { db: -4.0, muted: false }), (1, Volume { db: -7.0, muted: false })]);
        assert_eq!(d.answer, "pid 10: 1 -4.0 dB; 2 -7.0 dB");
        let d = decide(
            &mut r,
            &MixerRequest::Mute { target: Target::Pid(20), how: MuteHow::On },
            &clients(),
            Volume::UNITY,
        )
        .unwrap();
        assert_eq!(d.answer, "client 3 (aplay, pid 20): 0.0 dB, muted");
        assert!(decide(&mut r, &vol(Target::Pid(50), 0.0, false), &clients(), Volume::UNITY).is_err());
    }

    #[test]
    fn mixer_by_name_sets_all_of_the_name_and_remembers_it() {
        let mut r = BTreeMap::new();
        let d = decide(&mut r, &vol(Target::Name("mpv".into()), 1.0, true), &clients(), Volume::UNITY).unwrap();
        // Relative to the name's first player (nothing remembered yet).
        let v = Volume { db: -2.0, muted: false };
        assert_eq!(d.slots, vec![(0, v), (1, v)]);
        assert!(d.save);
        assert_eq!(r.get("mpv"), Some(&v));
        assert_eq!(d.answer, "mpv (2 players): -2.0 dB; remembered");
        // Then relative to what is remembered; a name with no player now is remembered too.
        let d = decide(
            &mut r,
            &MixerRequest::Mute { target: Target::Name("mpv".into()), how: MuteHow::Toggle },
            &[],
            Volume::UNITY,
        )
        .unwrap();
        assert_eq!(d.answer, "mpv (no player now): -2.0 dB, muted; remembered");
        let d = decide(&mut r, &MixerRequest::Forget { name: "mpv".into() }, &[], Volume::UNITY).unwrap();
        assert_eq!((d.answer.as_str(), d.save, r.is_empty()), ("mpv: forgotten", true, true));
        assert!(decide(&mut r, &MixerRequest::Forget { name: "mpv".into() }, &[], Volume::UNITY).is_err());
    }

    #[test]
    fn mixer_master_is_remembered_and_relative_changes_clamp() {
        let mut r = BTreeMap::new();
        let d = decide(&mut r, &vol(Target::Master, 30.0, true), &[], Volume { db: -3.0, muted: false }).unwrap();
        assert_eq!(d.master, Some(Volume { db: 12.0, muted: false }));
        assert_eq!(d.answer, "master: +12.0 dB; remembered");
        assert_eq!(r.get(MASTER), Some(&Volume { db: 12.0, muted: false }));
        let d = decide(&mut r, &vol(Target::Id(1), -500.0, true), &clients(), Volume::UNITY).unwrap();
        assert_eq!(d.slots[0].1.db, MIN_VOLUME_DB);
    }

    #[test]
    fn mixer_file_round_trips_and_a_bad_one_is_ignored_with_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/dmix/default.volumes");
        let mut m = Mixer::load(Some(path.clone()), true).0;
        m.remembered.insert("mpv".into(), Volume { db: -10.5, muted: true });
        m.remembered.insert(MASTER.into(), Volume { db: -3.0, muted: false });
        m.save().unwrap();
        let (m2, warning) = Mixer::load(Some(path.clone()), true);
        assert_eq!((m2.remembered.clone(), warning), (m.remembered.clone(), None));
        assert_eq!(m2.master_at_start(), Some(Volume { db: -3.0, muted: false }));
        let hello = |volume_db| Hello { version: 0, role: Role::Play, channels: 0, name: "mpv".into(), volume_db };
        assert_eq!(m2.initial(&hello(None)), Volume { db: -10.5, muted: true });
        assert_eq!(m2.initial(&hello(Some(-1.0))), Volume { db: -1.0, muted: false });
        // Not restoring: nothing is given, though it is kept.
        let (m3, _) = Mixer::load(Some(path.clone()), false);
        assert_eq!((m3.initial(&hello(None)), m3.master_at_start()), (Volume::UNITY, None));
        std::fs::write(&path, "mpv\tloud\tmuted\n").unwrap();
        let (m4, warning) = Mixer::load(Some(path.clone()), true);
        assert!(m4.remembered.is_empty());
        let warning = warning.unwrap();
        assert!(
            warning.ends_with("line 1 is not NAME<TAB>DB<TAB>muted|unmuted; ignored, no volume is restored"),
            "{warning}"
        );
    }
}
