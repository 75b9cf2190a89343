//! `edgec inspect` from config.json alone: parameter counts of real-size published models
//! against their published sizes, and the CLI's printout.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs").join(name)
}

#[test]
fn parameter_counts_match_the_published_sizes() {
    // Published sizes (model cards), in billions.
    for (file, arch, published) in [
        ("phi-2.json", "PhiForCausalLM", 2.78),
        ("qwen2-7b.json", "Qwen2ForCausalLM", 7.62),
        ("llama-3-8b.json", "LlamaForCausalLM", 8.03),
        ("phi-3-mini-4k.json", "Phi3ForCausalLM", 3.82),
    ] {
        let i = edgec::inspect::inspect(&config(file), 2048, None).unwrap();
        assert_eq!(i.config.family.architecture, arch);
        let billions = i.parameters as f64 / 1e9;
        let rel = (billions - published).abs() / published;
        eprintln!("{file}: {} parameters ({billions:.3} B, published {published} B)", i.parameters);
        assert!(rel < 0.01, "{file}: {billions} B vs published {published} B");
        // The planner ran: activations for 128 tokens need some MiB, and the plan is never
        // below its lower bound.
        assert!(i.arena_size >= i.arena_lower_bound && i.arena_lower_bound > 1 << 20, "{i:?}");
        assert_eq!(i.state_size, i.kv_bytes_per_token * 2048);
        // The per-dtype figures: f32 is the plan's, q8 is 34/128 of it (these rows are whole
        // 64-byte lines in every dtype, so no padding).
        let kv = |kv| i.kv_by_dtype.iter().find(|(k, _)| *k == kv).unwrap().1.clone().unwrap();
        let size = |per_token, state| edgec::inspect::KvSize { per_token, state };
        assert_eq!(kv(edgec::KvDtype::F32), size(i.kv_bytes_per_token, i.state_size));
        assert_eq!(kv(edgec::KvDtype::Q8), size(i.kv_bytes_per_token * 34 / 128, i.state_size * 34 / 128));
    }
    // Exact counts, computed by hand from the configs.
    let exact = |f: &str| edgec::inspect::inspect(&config(f), 2048, None).unwrap().parameters;
    assert_eq!(exact("llama-3-8b.json"), 8_030_261_248);
    assert_eq!(exact("phi-2.json"), 2_779_683_840);
}

#[test]
fn inspect_prints_the_figures_for_a_dir_or_a_file() {
    let o = edgec(&["inspect", config("llama-3-8b.json").to_str().unwrap(), "--max-tokens", "64"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "LlamaForCausalLM",
        "8,030,261,248",
        "by --quant preset: f32 29.92 GiB, f16 14.96 GiB",
        "per 1k tokens",
        "256.00 MiB",
        // --kv-dtype q8: 34 bytes per 32 values (32 layers × K, V × 1024 values per token).
        "by --kv-dtype for max context 2048: f32 512.00 MiB (256.00 KiB per token), f16 256.00 MiB (128.00 KiB per token), q8 136.00 MiB (68.00 KiB per token)",
        "max tokens 64",
        "258 launches per forward call",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // A checkpoint directory works too (its weights are not read).
    let o = edgec(&["inspect", fixture("mistral").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("sliding window 8"));
    // KV rows of 48 (qwen3's 2 KV heads of 24) cannot be q8 blocks; inspect says so.
    let o = edgec(&["inspect", fixture("qwen3").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("q8 not possible (rows of 48 are not whole blocks of 32)"), "{out}");
}

#[test]
fn inspect_refuses_a_config_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config("phi-2.json")).unwrap()).unwrap();
    cfg["hidden_act"] = "relu".into();
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let o = edgec(&["inspect", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("hidden_act = relu") && err.lines().count() == 1, "{err}");
}
