//! `edgec perplexity`: the llama-perplexity protocol on the compiled model.
//!
//! - On the fixtures, the protocol's NLLs computed from the compiled model's logits match the
//!   same protocol over PyTorch's logits (`reference.safetensors`, a full-sequence forward).
//! - On the real SmolLM2-135M GGUF (fetched like `tests/smollm2.rs` does, through
//!   `scripts/fetch-smollm2`), the CLI's perplexity equals one computed here, independently of
//!   `src/perplexity.rs`, from `edgec run --output` logits of each window, with llama.cpp's rules
//!   written out again (windows of n_ctx, rows n_ctx/2 ..= n_ctx-2 scored, exp of the mean NLL,
//!   standard error times the perplexity).
//! - Bad input: one clear line each.

mod common;
use common::*;
use edgec::perplexity::{Estimate, Protocol, WindowModel, score};
use std::path::PathBuf;
use std::process::Command;

/// The first verses of Genesis (KJV, public domain): about 180 SmolLM2 tokens.
const TEXT: &str = "In the beginning God created the heaven and the earth.
And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.
And God said, Let there be light: and there was light.
And God saw the light, that it was good: and God divided the light from the darkness.
And God called the light Day, and the darkness he called Night. And the evening and the morning were the first day.
And God said, Let there be a firmament in the midst of the waters, and let it divide the waters from the waters.
";

/// NLL of `target` under `row`, by the textbook formula in f64.
fn reference_nll(row: &[f32], target: usize) -> f64 {
    let log_sum: f64 = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
    log_sum - row[target] as f64
}

#[test]
fn protocol_on_the_compiled_model_matches_pytorch_logits() {
    for name in ["llama", "qwen2", "phi"] {
        let r = reference(name);
        let ids: Vec<u32> = r.input_ids.iter().map(|&i| i as u32).collect();
        let n = ids.len();
        // One window over the whole reference prompt (the logits PyTorch computed from
        // position 0), and one of half of it: rows n/2 ..= n-2 and n/4 ..= n/2-2 scored.
        for ctx in [n, n / 2] {
            let p = Protocol { ctx, bos: None };
            let pytorch = score(
                &ids,
                &p,
                1,
                r.vocab,
                |_, window| {
                    assert_eq!(window, &ids[..ctx]);
                    Ok(r.logits[..ctx * r.vocab].to_vec())
                },
                |_, _| {},
            )
            .unwrap();
            let mut model = WindowModel::open(&fixture(name), ctx, &Default::default(), 1, None).unwrap();
            assert_eq!(model.vocab, r.vocab);
            let compiled = score(&ids, &p, 1, r.vocab, |_, w| model.logits(w), |_, _| {}).unwrap();
            // The protocol picked the second half against the next token, as written out here.
            let expected: Vec<f64> = (ctx / 2..ctx - 1)
                .map(|j| reference_nll(&r.logits[j * r.vocab..(j + 1) * r.vocab], ids[j + 1] as usize))
                .collect();
            assert_eq!(pytorch.len(), ctx - 1 - ctx / 2);
            for (a, b) in pytorch.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-9, "{name}: protocol NLL {a} vs textbook {b}");
            }
            let diff = compiled.iter().zip(&pytorch).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let (pc, pp) = (Estimate::from_nlls(&compiled).perplexity, Estimate::from_nlls(&pytorch).perplexity);
            eprintln!("{name} ctx {ctx}: perplexity {pc:.6} compiled vs {pp:.6} PyTorch, max |NLL diff| {diff:e}");
            assert!(diff < 1e-3, "{name} ctx {ctx}: NLLs differ from PyTorch's by {diff}");
            assert!((pc / pp - 1.0).abs() < 1e-3);
        }
    }
}

/// The SmolLM2 GGUF, fetched by `scripts/fetch-smollm2` when missing (as `tests/smollm2.rs`).
fn smollm2() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new(format!("{root}/scripts/fetch-smollm2")).output().expect("scripts/fetch-smollm2 runs");
    assert!(o.status.success(), "scripts/fetch-smollm2 failed: {}", String::from_utf8_lossy(&o.stderr));
    let path = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    if path.is_absolute() { path } else { PathBuf::from(root).join(path) }
}

#[test]
fn cli_matches_llama_cpp_rules_over_run_logits_on_smollm2() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("genesis-1.txt");
    std::fs::write(&text, TEXT).unwrap();
    let (ctx, chunks) = (32, 2);
    let o = edgec(&[
        "perplexity",
        model,
        "--text",
        text.to_str().unwrap(),
        "--ctx",
        &ctx.to_string(),
        "--chunks",
        &chunks.to_string(),
        "--quant",
        "keep",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "edgec perplexity failed: {stderr}");
    assert!(stderr.contains("[1/2] window") && stderr.contains("[2/2] window"), "progress per window: {stderr}");
    let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    // The reference: tokenize (llama.cpp drops one trailing newline of the file; SmolLM2 adds
    // no BOS), cut windows of ctx, get each window's logits from `edgec run`, score rows
    // ctx/2 ..= ctx-2 against the next token.
    let tokenizer = edgec::tokenizer::for_model(std::path::Path::new(model)).unwrap().unwrap();
    assert!(!tokenizer.add_bos);
    let tokens = tokenizer.encode(TEXT.strip_suffix('\n').unwrap()).unwrap();
    assert!(tokens.len() >= 2 * ctx);
    let mut nlls = Vec::new();
    for w in 0..chunks {
        let window = &tokens[w * ctx..(w + 1) * ctx];
        let ids: Vec<String> = window.iter().map(u32::to_string).collect();
        let out = dir.path().join(format!("window{w}.safetensors"));
        let o = edgec(&[
            "run",
            model,
            "--ids",
            &ids.join(","),
            "--max-new-tokens",
            "1",
            "--quant",
            "keep",
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "edgec run failed: {}", String::from_utf8_lossy(&o.stderr));
        let r = read_run_output(&out);
        let vocab = r.logits_shape[1];
        for j in ctx / 2..ctx - 1 {
            nlls.push(reference_nll(&r.logits[j * vocab..(j + 1) * vocab], window[j + 1] as usize));
        }
    }
    let count = nlls.len() as f64;
    let mean = nlls.iter().sum::<f64>() / count;
    let var = nlls.iter().map(|v| v * v).sum::<f64>() / count - mean * mean;
    let ppl = mean.exp();
    let plus_minus = (var / (count - 1.0)).sqrt() * ppl;
    eprintln!("smollm2 ctx {ctx}, {chunks} windows: edgec perplexity {got}, reference {ppl} +/- {plus_minus}");

    assert_eq!(got["scored"], 2 * (ctx - 1 - ctx / 2));
    assert_eq!(got["windows"], chunks);
    assert_eq!(got["tokens"], tokens.len());
    let p = got["perplexity"].as_f64().unwrap();
    let e = got["plus_minus"].as_f64().unwrap();
    assert!((p / ppl - 1.0).abs() < 1e-4, "perplexity {p} vs reference {ppl}");
    assert!((e / plus_minus - 1.0).abs() < 1e-3, "+/- {e} vs reference {plus_minus}");
    // A trained model on well-known English text: far below its vocabulary size (49152).
    assert!(p > 1.0 && p < 50.0, "implausible perplexity {p}");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let empty = write("empty.txt", "\n");
    let short = write("short.txt", "In the beginning God created the heaven and the earth.");
    let missing = dir.path().join("missing.txt").to_str().unwrap().to_string();
    let llama = fixture("llama");
    let llama = llama.to_str().unwrap();
    let model = smollm2();
    let model = model.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["perplexity", model, "--text", &empty], "the text is empty"),
        (&["perplexity", model, "--text", &short, "--ctx", "512"], "too short for --ctx 512"),
        (&["perplexity", model, "--text", &short, "--ctx", "2"], "--ctx 2 is too small"),
        (&["perplexity", model, "--text", &missing], "cannot read the text file"),
        (&["perplexity", model, "--text", &short, "--chunks", "0"], "--chunks 0"),
        (&["perplexity", llama, "--text", &short], "has no tokenizer"),
    ];
    for (args, expected) in cases {
        let o = edgec(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: expected '{expected}' in: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_compiled_directory_runs_as_is_and_must_hold_a_window() {
    let model = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("genesis-1.txt");
    std::fs::write(&text, TEXT).unwrap();
    let out = dir.path().join("out");
    let (model, text, out) = (model.to_str().unwrap(), text.to_str().unwrap(), out.to_str().unwrap());
    let o = edgec(&["compile", model, "-o", out, "--max-context", "32", "--quant", "keep"]);
    assert!(o.status.success(), "edgec compile failed: {}", String::from_utf8_lossy(&o.stderr));
    let ppl = |m: &str| {
        let o = edgec(&["perplexity", m, "--text", text, "--ctx", "32", "--chunks", "2", "--json"]);
        assert!(o.status.success(), "edgec perplexity {m} failed: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["perplexity"].as_f64().unwrap()
    };
    let compiled = ppl(out);
    let o = edgec(&["perplexity", model, "--text", text, "--ctx", "32", "--chunks", "2", "--quant", "keep", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_gguf = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["perplexity"].as_f64().unwrap();
    assert!((compiled / from_gguf - 1.0).abs() < 1e-6, "compiled dir {compiled} vs GGUF {from_gguf}");
    // A window longer than the compiled context, and --quant on a compiled directory.
    for (args, expected) in [
        (vec!["--ctx", "64"], "was compiled with --max-context 32, which cannot hold a window of --ctx 64"),
        (vec!["--ctx", "32", "--quant", "q8"], "already compiled"),
    ] {
        let mut all = vec!["perplexity", out, "--text", text];
        all.extend(args);
        let o = edgec(&all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && stderr.contains(expected), "{all:?}: expected '{expected}' in: {stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{all:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{all:?}: {stderr}");
    }
}
