//! Where servers live: the runtime directory, socket names, and turning a user's `-D` into a
//! socket path. Never creates anything but the private runtime directory.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The server name used when none is given.
pub const DEFAULT_NAME: &str = "default";

/// Where a server keeps the volumes remembered by client name:
/// `$XDG_STATE_HOME/dmix/NAME.volumes`, `$HOME/.local/state/dmix/NAME.volumes` without it;
/// None when neither is set (nothing is kept).
pub fn volumes_file(name: &str) -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    let state = nonempty("XDG_STATE_HOME").or_else(|| nonempty("HOME").map(|h| h.join(".local/state")))?;
    Some(state.join("dmix").join(format!("{name}.volumes")))
}

/// The directory holding the sockets: `$XDG_RUNTIME_DIR/dmix`, or `/tmp/dmix-$UID` when
/// XDG_RUNTIME_DIR is unset or empty.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("dmix"),
        _ => PathBuf::from(format!("/tmp/dmix-{}", nix::unistd::getuid())),
    }
}

/// Creates the runtime directory (mode 0700) if needed, and refuses one that another user
/// owns or that others can enter: a socket there could be swapped under us. With `group`
/// (`dmix-serve --group`), the directory may also be open to that one group (0750, or 0770
/// with the sticky bit), and one we create is made so.
pub fn ensure_runtime_dir(dir: &Path, group: Option<u32>) -> Result<()> {
    let mode = if group.is_some() { 0o750 } else { 0o700 };
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            if let Some(g) = group {
                std::os::unix::fs::chown(dir, None, Some(g))
                    .map_err(|e| Error::sys(format!("chgrp {} {}", g, dir.display()), e))?;
                // The umask may have taken the group bits.
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
                    .map_err(|e| Error::sys(format!("chmod {}", dir.display()), e))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::sys(format!("create {}", dir.display()), e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::sys(format!("stat {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(dir.display().to_string(), "exists and is not a directory"));
    }
    if meta.uid() != nix::unistd::getuid().as_raw() {
        return Err(Error::invalid(dir.display().to_string(), format!("owned by uid {}, not by us", meta.uid())));
    }
    let open_to_group = group.is_some_and(|g| meta.gid() == g);
    let forbidden = if open_to_group { 0o002 } else { 0o077 };
    if meta.mode() & forbidden != 0 || (open_to_group && meta.mode() & 0o020 != 0 && meta.mode() & 0o1000 == 0) {
        let want = if open_to_group { "0750 (or 0770 with the sticky bit)" } else { "0700" };
        return Err(Error::invalid(
            dir.display().to_string(),
            format!("mode {:o} lets others in; it must be {want}", meta.mode() & 0o7777),
        ));
    }
    Ok(())
}

/// Checks a server name: 1 to 64 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("server name '{name}'"),
            "use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'",
        ))
    }
}

/// The socket path of the server named `name`.
pub fn socket_for_name(name: &str) -> Result<PathBuf> {
    validate_name(name)?;
    Ok(runtime_dir().join(format!("{name}.sock")))
}

/// The user's `-D NAME|PATH`: anything with a '/' is a socket path, else a server name.
pub fn resolve_device(device: &str) -> Result<PathBuf> {
    if device.contains('/') { Ok(PathBuf::from(device)) } else { socket_for_name(device) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_names_are_checked() {
        for good in ["default", "a", "front-left", "x_1.2"] {
            validate_name(good).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "sp ace", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_device_with_a_slash_is_a_path() {
        assert_eq!(resolve_device("/tmp/x.sock").unwrap(), PathBuf::from("/tmp/x.sock"));
        assert!(resolve_device("main").unwrap().ends_with("main.sock"));
        assert!(resolve_device("../x").is_ok() && resolve_device("bad name").is_err());
    }

    #[test]
    fn paths_runtime_dir_must_be_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("dmix");
        ensure_runtime_dir(&d, None).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure_runtime_dir(&d, None).is_err());
    }
}
