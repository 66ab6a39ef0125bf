//! man/ and completions/ are generated from the clap definitions (each binary's hidden
//! `--generate`); this fails when a committed file is stale. `scripts/generate` (that is,
//! this test with DMIX_REGENERATE=1) rewrites them.

use std::path::PathBuf;
use std::process::Command;

use crate::util::bin;

const TOOLS: [&str; 5] = ["dmix-serve", "dmix-play", "dmix-stat", "dmix-tee", "dmix-share"];

fn target(tool: &str, what: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match what {
        "man" => root.join("man").join(format!("{tool}.1")),
        "bash" => root.join("completions").join(format!("{tool}.bash")),
        "zsh" => root.join("completions").join(format!("_{tool}")),
        "fish" => root.join("completions").join(format!("{tool}.fish")),
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn generated_man_pages_and_completions_are_fresh() {
    let rewrite = std::env::var_os("DMIX_REGENERATE").is_some();
    let mut stale = Vec::new();
    for tool in TOOLS {
        for what in dmix::cli::GENERATE_KINDS {
            let out = Command::new(bin(tool)).args(["--generate", what]).output().unwrap();
            assert!(out.status.success(), "{tool} --generate {what}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(!out.stdout.is_empty());
            let path = target(tool, what);
            if rewrite {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &out.stdout).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&out.stdout[..]) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale generated files (run scripts/generate): {stale:?}");
}

#[test]
fn generated_man_pages_document_exit_status_and_json() {
    let man = std::fs::read_to_string(target("dmix-stat", "man")).unwrap();
    assert!(man.contains(".SH \"EXIT STATUS\""));
    assert!(man.contains(".SH \"JSON FIELDS\"") && man.contains("queued_ms"));
}
