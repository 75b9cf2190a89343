//! Shared by `valgrind.rs`, `concurrency.rs` and `entry_contract.rs`: the fixtures compiled for
//! the host, and loaded into this process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The seven fixture families (`tests/fixtures/<name>`, each with PyTorch's reference).
pub const FIXTURES: [&str; 7] = ["llama", "llama3", "qwen2", "phi", "phi3", "mistral", "qwen3"];

pub const X86: &str = "x86_64-unknown-linux-gnu";

/// `edgec compile` of fixture `name` for x86_64 into `dir/name`: context 64 (the 16-token
/// prompt and 8 generated ids fit), `max_tokens` 8 (the prompt is fed in two chunks).
pub fn compile_fixture(name: &str, dir: &Path) -> PathBuf {
    let out = dir.join(name);
    let model = crate::common::fixture(name);
    let o = crate::common::edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--target",
        X86,
        "--max-context",
        "64",
        "--max-tokens",
        "8",
    ]);
    assert!(o.status.success(), "compiling {name}: {}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The compiled fixture linked into a shared library and loaded (`edgec::host::load_model`).
pub fn load(out: &Path) -> edgec_runtime::Model {
    let m = edgec::manifest::Manifest::read(out).unwrap();
    edgec::host::load_model(out, &m, None).unwrap().model
}

pub fn weights_path(out: &Path) -> PathBuf {
    let m = edgec::manifest::Manifest::read(out).unwrap();
    m.weights(out)
}

/// Logits within 1e-3 of PyTorch's (the bar of `tests/e2e.rs`).
pub fn assert_logits_close(what: &str, got: &[f32], want: &[f32]) {
    let diff = crate::common::max_abs_diff(got, want);
    assert!(diff <= 1e-3, "{what}: logits differ from PyTorch by {diff}");
}
