//! GGUF files of every family llama.cpp's converter writes (`llama`, `qwen2`, `phi2`, `phi3`)
//! reproduce PyTorch on x86_64 and aarch64 (qemu). The files are the fixtures converted by
//! `tests/gguf_fixtures/make_gguf.py` (the converter's names, fused tensors, metadata and Q/K
//! permutation) into `target/gguf-fixtures/` when missing or older than the script.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const FILES: [&str; 5] = ["llama", "qwen2", "phi", "phi-fused", "phi3"];

/// The GGUF fixtures' directory, or `None` (skip) without python3 + gguf + numpy outside CI.
fn gguf_fixtures() -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/gguf_fixtures/make_gguf.py");
    let out = root.join("target/gguf-fixtures");
    let script_time = std::fs::metadata(&script).and_then(|m| m.modified()).unwrap();
    let fresh = FILES.iter().all(|f| {
        std::fs::metadata(out.join(format!("{f}.gguf"))).and_then(|m| m.modified()).is_ok_and(|t| t >= script_time)
    });
    if fresh {
        return Some(out);
    }
    let o = Command::new("python3").arg(&script).arg(root.join("tests/fixtures")).arg(&out).output();
    match o {
        Ok(o) if o.status.success() => Some(out),
        other => {
            let why = other.map_or_else(|e| e.to_string(), |o| String::from_utf8_lossy(&o.stderr).into_owned());
            assert!(std::env::var_os("CI").is_none(), "python3 with gguf and numpy is needed: {why}");
            eprintln!("skipped: python3 with gguf and numpy is not available ({})", why.trim());
            None
        }
    }
}

/// `edgec run FILE.gguf` against the fixture's PyTorch reference.
fn check(file: &str, fixture_name: &str, target: &str) {
    let Some(dir) = gguf_fixtures() else { return };
    check_against_pytorch(&dir.join(format!("{file}.gguf")), fixture_name, target, false);
}

macro_rules! gguf_tests {
    ($($name:ident => $file:literal, $fixture:literal),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn x86_64() {
                    super::check($file, $fixture, "x86_64-unknown-linux-gnu");
                }
                #[test]
                fn aarch64() {
                    super::check($file, $fixture, "aarch64-unknown-linux-gnu");
                }
            }
        )*
    };
}

// llama: the control (Q/K rows permuted by the converter). qwen2: q/k/v biases, theta 1e6.
// phi2: attn_q/k/v as converted from transformers' PhiForCausalLM; phi2_fused: one attn_qkv per
// layer as converted from Phi-2's original checkpoint. phi3: attn_qkv and ffn_up = gate+up.
gguf_tests! {
    llama => "llama", "llama",
    qwen2 => "qwen2", "qwen2",
    phi2 => "phi", "phi",
    phi2_fused => "phi-fused", "phi",
    phi3 => "phi3", "phi3",
}
