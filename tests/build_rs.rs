//! `edgec::Build` from a build script: examples/two-models links two fixture models (one with
//! a weights file, one embedded) into one binary; running it matches both references. A second
//! build with nothing changed compiles no model; when Cargo reruns the build script with the
//! inputs' contents unchanged, the content-hash cache answers.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf()
}

fn cargo_build() {
    let o = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "-p", "two-models", "--target-dir"])
        .arg(target_dir())
        .output()
        .expect("cargo runs");
    assert!(o.status.success(), "cargo build -p two-models failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

/// The build log of the most recently run two-models build script.
fn build_log() -> Vec<String> {
    let build = target_dir().join("debug/build");
    let newest = std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("two-models-"))
        .map(|e| e.path().join("out/edgec-build.log"))
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .expect("a two-models build log");
    std::fs::read_to_string(newest).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn two_models_build_link_run_and_cache() {
    cargo_build();
    let exe = target_dir().join("debug/two-models");
    let o = Command::new(&exe).output().expect("two-models runs");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "two-models failed:\n{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("llama: ok (weights file)"), "{stdout}");
    assert!(stdout.contains("qwen3: ok (embedded weights)"), "{stdout}");
    let log = build_log();
    assert!(log.iter().any(|l| l.ends_with(" llama")) && log.iter().any(|l| l.ends_with(" qwen3")), "{log:?}");

    // Nothing changed: Cargo does not even rerun the build script.
    cargo_build();
    assert_eq!(build_log(), log, "a second build with nothing changed ran the build script");

    // A touched (but unchanged) model makes Cargo rerun the script; the content hash matches,
    // so neither model is compiled again.
    let config = root().join("tests/fixtures/llama/config.json");
    let f = std::fs::File::options().append(true).open(&config).unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    cargo_build();
    let after = build_log();
    let new: Vec<&String> = after.iter().skip(log.len()).collect();
    assert!(!new.is_empty(), "the build script did not rerun after the model was touched");
    assert!(new.iter().all(|l| l.starts_with("cached ")), "recompiled with unchanged inputs: {new:?}");
    let o = Command::new(&exe).output().unwrap();
    assert!(o.status.success());
}
