//! The Debian package (issue 17): scripts/package builds it once for these tests, which read
//! its file list (`dpkg-deb -c`) and metadata (`dpkg-deb -I`), then extract it (`dpkg-deb
//! -x`) into the test's directory and play through the plugin and ALSA snippets it holds. It
//! is never installed on the machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::alsa_plugin::{finish, spawn_tool};
use crate::util::*;

/// A release build of the workspace and the packaging, on a machine busy with the other
/// tests: minutes, not seconds.
const PACKAGE_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// Fails, naming what to install, when `tool` is not on PATH.
fn need(tool: &str, install: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(tool).is_file()));
    assert!(found, "{tool} is not installed: {install} (scripts/quickstart test does)");
}

/// The output of a command that must succeed.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::piped()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Debian's name for this machine's architecture (`amd64`) and its multiarch tuple
/// (`x86_64-linux-gnu`).
fn arch() -> (String, String) {
    need("dpkg-architecture", "install the Debian package dpkg-dev");
    let q = |var: &str| stdout_of(Command::new("dpkg-architecture").arg(format!("-q{var}"))).trim().to_string();
    (q("DEB_HOST_ARCH"), q("DEB_HOST_MULTIARCH"))
}

/// The package, built by scripts/package once for all the tests here (niced: the other tests
/// run beside it, some of them paced).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        need("dpkg-deb", "install the Debian package dpkg");
        need("dpkg-shlibdeps", "install the Debian package dpkg-dev");
        need("cargo-deb", "install the crate cargo-deb: cargo install cargo-deb --locked");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "10"]).arg(root.join("scripts/package")).current_dir(root).stdin(Stdio::null());
        let mut p = Proc::spawn("scripts/package", &mut cmd);
        let status = p.wait_timeout(PACKAGE_DEADLINE);
        let err = p.finished_stderr();
        assert!(status.success(), "scripts/package failed:\n{err}");
        // The script prints the package's path last.
        let path = PathBuf::from(p.stdout().lines().last().unwrap_or_default());
        let (arch, _) = arch();
        let name = format!("dmix_{}-1_{arch}.deb", env!("CARGO_PKG_VERSION"));
        assert!(path.ends_with(Path::new("debian").join(&name)), "scripts/package made {}, not {name}", path.display());
        assert!(path.is_file(), "{} is missing", path.display());
        path
    })
}

/// One line of `dpkg-deb -c`: `-rw-r--r-- 0/0  878 2026-12-01 00:00 ./usr/... [-> target]`.
struct Entry {
    mode: String,
    owner: String,
    path: String,
    link: Option<String>,
}

fn contents(deb: &Path) -> Vec<Entry> {
    stdout_of(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 6, "dpkg-deb -c: {line}");
            let path = f[5].trim_start_matches("./").trim_end_matches('/').to_string();
            let link = (f.get(6) == Some(&"->")).then(|| f[7].to_string());
            Entry { mode: f[0].into(), owner: f[1].into(), path, link }
        })
        .collect()
}

/// Whether an ELF file still has its symbol table (`.symtab`, section type SHT_SYMTAB), which
/// `strip` removes. Reads the ELF64 little-endian section headers (elf(5)): e_shoff at 0x28,
/// e_shentsize at 0x3a, e_shnum at 0x3c; sh_type at 4 in each header.
fn has_symtab(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() > 0x40 && b[..4] == *b"\x7fELF" && b[4] == 2 && b[5] == 1, "{}: not ELF64 LE", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let shoff = u64::from_le_bytes(b[0x28..0x30].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x3a), u16_at(0x3c));
    assert!(size >= 8 && shoff + size * count <= b.len(), "{}: bad section headers", path.display());
    (0..count).any(|i| {
        let at = shoff + i * size + 4;
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) == 2
    })
}

/// The package holds the five tools, their man pages (gzipped) and completions where Debian
/// looks for them, the plugin in alsa-lib's directory for this architecture, the ALSA snippet
/// and the link in /etc/alsa/conf.d that enables it, the opt-in default device (not enabled),
/// the user units, and the copyright and changelog: those files and no others, owned by
/// root, programs 0755 and the rest 0644, the programs and the plugin stripped.
#[test]
fn package_deb_holds_the_tools_plugin_snippets_and_units() {
    let deb = deb();
    let (_, multiarch) = arch();
    let tools = ["dmix-play", "dmix-serve", "dmix-share", "dmix-stat", "dmix-tee"];
    let plugin = format!("usr/lib/{multiarch}/alsa-lib/libasound_module_pcm_dmixrs.so");
    let mut want: BTreeSet<String> = BTreeSet::new();
    for t in tools {
        want.insert(format!("usr/bin/{t}"));
        want.insert(format!("usr/share/man/man1/{t}.1.gz"));
        want.insert(format!("usr/share/bash-completion/completions/{t}"));
        want.insert(format!("usr/share/zsh/vendor-completions/_{t}"));
        want.insert(format!("usr/share/fish/vendor_completions.d/{t}.fish"));
    }
    for f in [
        plugin.as_str(),
        "usr/share/alsa/alsa.conf.d/50-dmixrs.conf",
        "etc/alsa/conf.d/50-dmixrs.conf",
        "usr/share/alsa/dmixrs-default.conf",
        "usr/share/doc/dmix/examples/99-dmixrs-default.conf",
        "usr/lib/systemd/user/dmix-serve.service",
        "usr/lib/systemd/user/dmix-serve.socket",
        "usr/lib/systemd/user/dmix-snapcast.service",
        "usr/share/doc/dmix/README.md",
        "usr/share/doc/dmix/copyright",
        "usr/share/doc/dmix/changelog.Debian.gz",
    ] {
        want.insert(f.to_string());
    }
    let entries = contents(deb);
    let files: BTreeSet<String> = entries.iter().filter(|e| !e.mode.starts_with('d')).map(|e| e.path.clone()).collect();
    assert_eq!(
        files,
        want,
        "missing: {:?}; unexpected: {:?}",
        want.difference(&files).collect::<Vec<_>>(),
        files.difference(&want).collect::<Vec<_>>()
    );
    for e in &entries {
        assert_eq!(e.owner, "root/root", "{}", e.path);
        let mode = if e.mode.starts_with('d') {
            "drwxr-xr-x"
        } else if e.path.starts_with("usr/bin/") {
            "-rwxr-xr-x"
        } else if e.link.is_some() {
            "lrwxrwxrwx"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(e.mode, mode, "{}", e.path);
    }
    // Enabled as pipewire-alsa enables its snippet: a link in /etc/alsa/conf.d, and nothing
    // there for the default device.
    let link = entries.iter().find(|e| e.path == "etc/alsa/conf.d/50-dmixrs.conf").unwrap();
    assert_eq!(link.link.as_deref(), Some("/usr/share/alsa/alsa.conf.d/50-dmixrs.conf"));

    let env = Env::new();
    let root = env.path("root");
    let x = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root).status().unwrap();
    assert!(x.success());
    for f in tools.iter().map(|t| format!("usr/bin/{t}")).chain([plugin.clone()]) {
        assert!(!has_symtab(&root.join(&f)), "{f} is not stripped");
    }
    // The snippet names the plugin where the package puts it.
    let snippet = std::fs::read_to_string(root.join("usr/share/alsa/alsa.conf.d/50-dmixrs.conf")).unwrap();
    assert!(snippet.contains(&format!("lib \"/{plugin}\"")), "{snippet}");
    assert!(!snippet.contains("pcm.!default"), "the snippet takes over the default device:\n{snippet}");
    // The units start the packaged server.
    let service = std::fs::read_to_string(root.join("usr/lib/systemd/user/dmix-serve.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/dmix-serve $DMIX_SERVE_ARGS"), "{service}");
    let bridge = std::fs::read_to_string(root.join("usr/lib/systemd/user/dmix-snapcast.service")).unwrap();
    assert!(bridge.contains("ExecStart=/usr/bin/dmix-tee --name snapcast -t raw"), "{bridge}");
    let verify = systemd_verify(
        &root.join("usr/lib/systemd/user"),
        &["dmix-serve.service", "dmix-serve.socket", "dmix-snapcast.service"],
    );
    // verify checks that ExecStart exists: /usr/bin/dmix-serve and dmix-tee are not
    // installed here.
    let err = String::from_utf8_lossy(&verify.stderr);
    let other: Vec<&str> =
        err.lines().filter(|l| !l.contains("/usr/bin/dmix-serve") && !l.contains("/usr/bin/dmix-tee")).collect();
    assert!(other.is_empty(), "{err}");
}

/// The control fields: name, version (the crate's, revision 1), architecture, section, the
/// Depends that dpkg-shlibdeps found (ALSA and the C library, once each), libasound2-plugins
/// recommended for its rate converters, a synopsis that fits a line; md5sums, and no
/// conffiles (a link in /etc/alsa/conf.d left behind by `apt remove` would break every ALSA
/// program).
#[test]
fn package_deb_metadata_has_shlibdeps_depends_and_no_conffiles() {
    let deb = deb();
    let (arch, _) = arch();
    let info = stdout_of(Command::new("dpkg-deb").arg("-I").arg(deb));
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!(" {name}: ")))
            .unwrap_or_else(|| panic!("no {name} field:\n{info}"))
            .to_string()
    };
    assert_eq!(field("Package"), "dmix");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Architecture"), arch);
    assert_eq!(field("Section"), "sound");
    assert!(!field("Maintainer").is_empty());
    // Each library once, at the highest version any file needs (as dpkg-shlibdeps run on all
    // the files at once says it).
    let depends = field("Depends");
    let names: Vec<&str> = depends.split(',').filter_map(|d| d.split_whitespace().next()).collect();
    assert_eq!(names, ["libasound2", "libc6"], "Depends: {depends}");
    assert!(depends.split(',').all(|d| d.contains("(>=")), "Depends: {depends}");
    assert!(field("Recommends").contains("libasound2-plugins"), "{info}");
    let synopsis = field("Description");
    assert!(synopsis.len() < 80, "synopsis of {} characters: {synopsis}", synopsis.len());
    // The control archive's members, as dpkg-deb -I lists them: "  939 bytes, 19 lines  control".
    let members: Vec<&str> =
        info.lines().filter(|l| l.contains(" bytes, ")).filter_map(|l| l.split_whitespace().last()).collect();
    assert!(members.contains(&"control") && members.contains(&"md5sums"), "{info}");
    assert!(!members.contains(&"conffiles"), "{info}");
    // The changelog names the version being packaged.
    let changelog = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pkg/deb/changelog")).unwrap();
    let first = changelog.lines().next().unwrap_or_default();
    assert!(first.starts_with(&format!("dmix ({}-1) ", env!("CARGO_PKG_VERSION"))), "pkg/deb/changelog: {first}");
}

/// The package's own plugin and ALSA snippets, extracted, with ALSA_CONFIG_PATH pointing at
/// them (never /etc or ~/.asoundrc): `aplay -D dmixrs` plays into the package's dmix-serve,
/// exactly; the opt-in default device plays there too, converting the rate with the Speex
/// resampler from libasound2-plugins; and without the package's files the copied opt-in does
/// nothing.
#[test]
fn package_extracted_plugin_and_snippets_play_through_dmixrs() {
    let deb = deb();
    let (_, multiarch) = arch();
    let mut env = Env::new();
    let root = env.path("root");
    let x = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root).status().unwrap();
    assert!(x.success());
    // What /etc/alsa/conf.d holds once the package is installed (and the opt-in copied
    // there), with the package's absolute paths moved under the extracted tree: the snippet
    // names /usr/lib/<multiarch>/alsa-lib, the opt-in /usr/share/alsa.
    let conf_d = env.path("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let under_root = |file: &str, from: &str| {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains(from), "{file} does not name {from}");
        text.replace(from, &root.join(from.trim_start_matches('/')).display().to_string())
    };
    let plugin_dir = format!("/usr/lib/{multiarch}/alsa-lib");
    std::fs::write(conf_d.join("50-dmixrs.conf"), under_root("usr/share/alsa/alsa.conf.d/50-dmixrs.conf", &plugin_dir))
        .unwrap();
    std::fs::write(
        conf_d.join("99-dmixrs-default.conf"),
        under_root("usr/share/doc/dmix/examples/99-dmixrs-default.conf", "/usr/share/alsa/dmixrs-default.conf"),
    )
    .unwrap();
    // The stock configuration, then this directory, loaded as alsa.conf loads /etc/alsa/conf.d.
    let top = env.path("asound.conf");
    std::fs::write(&top, format!("@hooks [ {{ func load files [ \"{}\" ] errors false }} ]\n", conf_d.display()))
        .unwrap();
    env.set_env("ALSA_CONFIG_PATH", &format!("/usr/share/alsa/alsa.conf:{}", top.display()));

    let serve = |env: &Env| {
        let args = ["--sink", "wav:out.wav", "--freewheel", "--wait-clients", "1", "--exit-when-idle"];
        let mut p = Proc::spawn(
            "dmix-serve (packaged)",
            env.program(root.join("usr/bin/dmix-serve")).args(args).stdin(Stdio::null()),
        );
        p.wait_for_stderr("serving on");
        p
    };

    // aplay -D dmixrs: the render is the file, then silence to the end of the last period.
    let s = signal(30000, 2, 440.0, 0.4, 171);
    write_wav_i16(&env.path("s16.wav"), 48000, 2, &s);
    let mut server = serve(&env);
    let r = finish(spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "dmixrs", "s16.wav"]));
    assert!(r.status.success(), "aplay -D dmixrs: {}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    let (_, got) = read_wav(&env.path("out.wav"));
    let want: Vec<i32> = s.iter().map(|&v| i32::from(v)).collect();
    assert!(
        got.len() >= want.len() && got[..want.len()] == *want && got[want.len()..].iter().all(|&v| v == 0),
        "the render is not the file ({} samples, want {})",
        got.len(),
        want.len()
    );

    // The opt-in default device: one second at 44.1 kHz becomes one second at 48 kHz,
    // converted by libspeex, not by alsa-lib's linear interpolation.
    assert!(
        Path::new(&format!("/usr/lib/{multiarch}/alsa-lib/libasound_module_rate_speexrate.so")).exists(),
        "the Speex rate converter is not installed: install the Debian package libasound2-plugins"
    );
    let frames = 44100;
    let tone: Vec<i16> = (0..frames)
        .flat_map(|i| {
            let v = (0.4 * 32767.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 44100.0).sin()) as i16;
            [v, v]
        })
        .collect();
    write_wav_i16(&env.path("a44.wav"), 44100, 2, &tone);
    let mut server = serve(&env);
    let r = finish(spawn_tool(&env, "aplay", "alsa-utils", &["-v", "a44.wav"]));
    assert!(r.status.success(), "aplay (default device): {}", r.stderr);
    assert!(server.wait().success(), "{}", server.finished_stderr());
    assert!(r.stderr.contains("Converter: libspeex"), "not the Speex resampler:\n{}", r.stderr);
    let (_, got) = read_wav(&env.path("out.wav"));
    let mut left: Vec<i32> = got.iter().step_by(2).copied().collect();
    while left.last() == Some(&0) {
        left.pop();
    }
    assert!((47500..=48600).contains(&left.len()), "{} frames at 48 kHz for one second", left.len());

    // The package removed (its files gone), the copy in conf.d is inert: ALSA still opens
    // its devices.
    std::fs::remove_file(root.join("usr/share/alsa/dmixrs-default.conf")).unwrap();
    std::fs::remove_file(conf_d.join("50-dmixrs.conf")).unwrap();
    let r = finish(spawn_tool(&env, "aplay", "alsa-utils", &["-q", "-D", "null", "s16.wav"]));
    assert!(r.status.success(), "aplay -D null with the opt-in left behind: {}", r.stderr);
}
