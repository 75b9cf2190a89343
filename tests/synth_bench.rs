//! `edgec synth` (random-weight checkpoints) and `edgec bench` (its JSON report). Nothing here
//! asserts a speed: benchmarks measure, tests check shapes, bytes and keys.

mod common;
use common::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// Every tensor of a checkpoint directory (single file or shards): name → (dtype, shape).
fn tensors(dir: &Path) -> BTreeMap<String, (Dtype, Vec<usize>)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            for (name, t) in st.tensors() {
                assert!(out.insert(name, (t.dtype(), t.shape().to_vec())).is_none());
            }
        }
    }
    out
}

fn synth(config: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["synth", "--config", config.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = edgec(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn synth_writes_what_a_real_checkpoint_of_each_family_holds() {
    let tmp = tempfile::tempdir().unwrap();
    // The fixtures are real HF checkpoints (saved by transformers): same names and shapes.
    for family in ["llama", "llama3", "mistral", "qwen2", "qwen3", "phi", "phi3"] {
        let out = tmp.path().join(family);
        synth(&fixture(family).join("config.json"), &out, &["--dtype", "f16"]);
        let expected: BTreeMap<_, _> =
            tensors(&fixture(family)).into_iter().map(|(n, (_, shape))| (n, (Dtype::F16, shape))).collect();
        assert_eq!(tensors(&out), expected, "{family}");
        assert_eq!(
            std::fs::read(out.join("config.json")).unwrap(),
            std::fs::read(fixture(family).join("config.json")).unwrap()
        );
    }
}

#[test]
fn synth_is_deterministic_and_scaled() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fixture("llama").join("config.json");
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    synth(&config, &a, &["--seed", "7"]);
    synth(&config, &b, &["--seed", "7"]);
    synth(&config, &c, &["--seed", "8"]);
    let file = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(file(&a), file(&b), "same seed, same bytes");
    assert_ne!(file(&a), file(&c), "another seed, other bytes");

    let bytes = file(&a);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| -> Vec<f32> {
        st.tensor(n).unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    assert!(f32s("model.norm.weight").iter().all(|&v| v == 1.0));
    let w = f32s("model.layers.0.self_attn.q_proj.weight");
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / w.len() as f64;
    let std = (w.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    assert!(mean.abs() < 0.002 && (std - 0.02).abs() < 0.002, "mean {mean}, std {std}");
    // Two tensors of the same shape differ (each has its own generator).
    assert_ne!(w, f32s("model.layers.1.self_attn.q_proj.weight"));
}

#[test]
fn synthesized_checkpoints_compile_and_run_sharded_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fixture("llama").join("config.json");
    let (single, sharded) = (tmp.path().join("single"), tmp.path().join("sharded"));
    synth(&config, &single, &["--dtype", "bf16", "--seed", "1"]);
    synth(&config, &sharded, &["--dtype", "bf16", "--seed", "1", "--shard-size", "100KB"]);
    assert!(!sharded.join("model.safetensors").exists());
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap()).unwrap();
    let shards: std::collections::BTreeSet<&str> =
        index["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    assert!(shards.len() > 1 && shards.contains("model-00001-of-00004.safetensors"), "{shards:?}");
    assert_eq!(tensors(&single), tensors(&sharded));

    let run = |dir: &Path| {
        let o = edgec(&["run", dir.to_str().unwrap(), "--ids", "1,15,42,7", "--max-new-tokens", "6"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let ids = run(&single);
    assert_eq!(ids.trim().split(',').count(), 6, "{ids}");
    assert_eq!(ids, run(&sharded), "the same tensors, sharded, give the same tokens");
}

#[test]
fn bench_reports_every_figure_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    synth(&fixture("llama").join("config.json"), &model, &[]);
    let o = edgec(&[
        "bench",
        model.to_str().unwrap(),
        "--prompt-len",
        "8",
        "--gen-len",
        "4",
        "--repeats",
        "2",
        "--threads",
        "2",
        "--bandwidth-mib",
        "32",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "prefill_tokens_per_s",
        "prefill_seconds",
        "prefill_ops",
        "prefill_ops_per_s",
        "prefill_peak_ops_per_s",
        "prefill_peak_pct",
        "decode_tokens_per_s",
        "decode_weight_bytes_per_token",
        "decode_weight_bytes_per_s",
        "decode_bandwidth_pct",
        "weights_file_bytes",
        "parameters",
    ] {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"));
        assert!(x > 0.0 && x.is_finite(), "{key} = {x}");
    }
    let m = &v["machine"];
    for key in ["read_bytes_per_s", "read_bytes_per_s_low", "fma_peak_flops_per_s", "bandwidth_buffer_bytes"] {
        assert!(m[key].as_f64().is_some_and(|x| x > 0.0), "machine.{key} in {v}");
    }
    // Decode is compared with the higher of the bandwidths measured before and after the rounds.
    assert!(m["read_bytes_per_s_low"].as_f64() <= m["read_bytes_per_s"].as_f64(), "{v}");
    // f32 weights: prefill is compared with the f32x4 FMA peak; the int8 peak of the variant
    // that ran is measured too.
    assert_eq!((&v["quant"], &v["kv_dtype"], &v["max_context"]), (&"f32".into(), &"f32".into(), &12.into()), "{v}");
    assert_eq!(v["prefill_path"], "f32");
    assert_eq!(v["prefill_peak"], m["fma_path"]);
    assert_eq!(v["prefill_peak_ops_per_s"], m["fma_peak_flops_per_s"]);
    assert_eq!(v["int8_weight_share"], 0.0);
    check_int8_peak(&v);
    assert_eq!(v["threads"], 2);
    assert_eq!(v["prompt_len"], 8);
    assert_eq!(v["gen_len"], 4);
    assert_eq!(v["parameters"], 156_480);
    // The untied embedding table (512 x 64) is not read by decode.
    let per_token = v["decode_weight_bytes_per_token"].as_f64().unwrap();
    assert!(per_token < v["weights_file_bytes"].as_f64().unwrap());
    // The text report says what it measured and how.
    let o = edgec(&[
        "bench",
        model.to_str().unwrap(),
        "--prompt-len",
        "4",
        "--gen-len",
        "2",
        "--repeats",
        "1",
        "--bandwidth-mib",
        "32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for needle in ["read bandwidth", "f32x4 FMA", "GFLOP/s", "decode: ", "% of read bandwidth", "prefill: ", "how"] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    assert!(text.contains(&format!("% of the {} peak", v["machine"]["fma_path"].as_str().unwrap())), "{text}");

    // int8 and int4 weights: prefill runs on int8 activations, against the int8 peak.
    let o = edgec(&[
        "bench",
        model.to_str().unwrap(),
        "--prompt-len",
        "8",
        "--gen-len",
        "4",
        "--repeats",
        "1",
        "--bandwidth-mib",
        "32",
        "--quant",
        "q4s",
        "--kv-dtype",
        "f16",
        "--max-context",
        "40",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((&v["quant"], &v["kv_dtype"], &v["max_context"]), (&"q4s".into(), &"f16".into(), &40.into()), "{v}");
    assert!(v["int8_weight_share"].as_f64().is_some_and(|x| x > 0.9 && x <= 1.0), "{v}");
    assert_eq!(v["prefill_path"], "int8");
    let m = &v["machine"];
    check_int8_peak(&v);
    if !m["int8_path"].is_null() {
        assert_eq!(v["prefill_peak"], m["int8_path"]);
        assert_eq!(v["prefill_peak_ops_per_s"], m["int8_peak_ops_per_s"]);
        let pct = v["prefill_peak_pct"].as_f64().unwrap_or_else(|| panic!("prefill_peak_pct in {v}"));
        assert!(pct > 0.0 && pct.is_finite(), "{v}");
    }
    assert!(v["decode_bandwidth_pct"].as_f64().is_some_and(|x| x > 0.0 && x.is_finite()), "{v}");
}

/// The int8 peak of the variant that ran: present where the variant has a peak loop (every
/// x86_64 variant, aarch64's dotprod), and above the f32x4 FMA peak in ops/s with dot-product
/// instructions (16 multiply-adds per 128-bit instruction against 4).
fn check_int8_peak(v: &serde_json::Value) {
    let m = &v["machine"];
    let variant = v["variant"].as_str().unwrap();
    let expected = match variant {
        "avx512vnni" | "avxvnni" => Some("vpdpbusd"),
        "dotprod" => Some("sdot"),
        "baseline" if cfg!(target_arch = "x86_64") => Some("vpmaddwd"),
        _ => None,
    };
    let Some(insn) = expected else {
        assert!(m["int8_path"].is_null(), "{v}");
        return;
    };
    assert!(m["int8_path"].as_str().is_some_and(|p| p.contains(insn)), "{variant}: {v}");
    let int8 = m["int8_peak_ops_per_s"].as_f64().unwrap_or_else(|| panic!("int8_peak_ops_per_s in {v}"));
    assert!(int8 > 0.0 && int8.is_finite(), "{v}");
    if insn != "vpmaddwd" {
        let fma = m["fma_peak_flops_per_s"].as_f64().unwrap();
        assert!(int8 > fma, "int8 peak {int8} not above the f32x4 FMA peak {fma}: {v}");
    }
}

#[test]
fn bench_takes_compile_flags_only_for_checkpoints_or_matching_a_compiled_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    synth(&fixture("llama").join("config.json"), &model, &[]);
    let out = tmp.path().join("out");
    let o = edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--quant",
        "q8",
        "--max-context",
        "32",
        "--max-tokens",
        "8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("edgec.json")).unwrap()).unwrap();
    assert_eq!((&manifest["quant"], &manifest["kv_dtype"]), (&"q8".into(), &"f32".into()), "{manifest}");
    let bench = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["bench", dir.to_str().unwrap(), "--prompt-len", "8", "--gen-len", "2", "--repeats", "1"];
        args.extend_from_slice(&["--bandwidth-mib", "32", "--json"]);
        args.extend_from_slice(extra);
        edgec(&args)
    };
    // The flags it was compiled with are accepted, and the path is known from edgec.json.
    let o = bench(&out, &["--quant", "q8", "--kv-dtype", "f32", "--max-context", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((&v["quant"], &v["prefill_path"], &v["max_context"]), (&"q8".into(), &"int8".into(), &32.into()));
    // Its operation count comes from what edgec.json records of the graph (matrices, attention
    // width), and equals the one counted from the checkpoint's tensor list and config.
    let o = bench(&model, &["--quant", "q8", "--max-context", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_checkpoint: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["prefill_ops"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    for k in ["prefill_ops", "prefill_attention_ops"] {
        assert_eq!(v[k], from_checkpoint[k], "{k}: compiled dir {v} against checkpoint {from_checkpoint}");
    }
    assert!(v["prefill_peak_pct"].is_number(), "{v}");
    // Others are refused, saying what it was compiled with.
    for (flag, value, had) in [
        ("--quant", "q4s", "--quant q8"),
        ("--kv-dtype", "f16", "--kv-dtype f32"),
        ("--max-context", "64", "--max-context 32"),
    ] {
        let o = bench(&out, &[flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("already compiled") && err.contains(had), "{flag}: {err}");
    }
    // A manifest from before edgec recorded the flags: they cannot be checked, so are refused.
    let mut old = manifest.as_object().unwrap().clone();
    for k in ["quant", "kv_dtype", "weight_elements", "int8_weight_elements"] {
        old.remove(k);
    }
    std::fs::write(out.join("edgec.json"), serde_json::to_string(&old).unwrap()).unwrap();
    let o = bench(&out, &["--quant", "q8"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("does not record its --quant"), "{err}");
    // A checkpoint's --max-context must hold the benchmark.
    let o = bench(&model, &["--max-context", "9"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--max-context 9 is too small"), "{err}");
    let o = bench(&model, &["--quant", "q3"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not a quantization preset"));
}

#[test]
fn bench_and_synth_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let o = edgec(&["synth", "--config", "/nonexistent/config.json", "-o", tmp.path().join("x").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(!tmp.path().join("x").join("config.json").exists());
    let o = edgec(&[
        "synth",
        "--config",
        fixture("llama").join("config.json").to_str().unwrap(),
        "-o",
        "x",
        "--dtype",
        "i8",
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--dtype"));
    let o = edgec(&["bench", fixture("llama").to_str().unwrap(), "--gen-len", "0"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--gen-len"));
}
