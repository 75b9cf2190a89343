//! Quantized weights end to end (`--quant`): the fixtures compiled with int8 / int4 / f16 weight
//! storage still track PyTorch's f32 logits and greedy tokens, on x86_64 and aarch64 (qemu).

mod common;
use common::*;

struct Measured {
    /// max |logits − PyTorch| / (max − min of PyTorch's logits).
    rel_range: f32,
    /// Positions where the greedy ids equal PyTorch's (of 8).
    greedy_match: usize,
    weights_bytes: u64,
}

fn run(fixture_name: &str, target: &str, quant: &str) -> Measured {
    if target.starts_with("aarch64") {
        require_aarch64_tools();
    }
    let r = reference(fixture_name);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("c");
    let model = fixture(fixture_name);
    let o = edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--target",
        target,
        "--max-context",
        "32",
        "--quant",
        quant,
        "--report",
    ]);
    assert!(o.status.success(), "compile --quant {quant}: {}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("bits/weight") && stdout.contains("rel. error"), "{stdout}");
    let weights_bytes = std::fs::metadata(out_dir.join(format!("{fixture_name}.weights"))).unwrap().len();

    let out = dir.path().join("out.safetensors");
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let ids = ids.join(",");
    let args =
        ["run", out_dir.to_str().unwrap(), "--ids", &ids, "--max-new-tokens", "8", "--output", out.to_str().unwrap()];
    let o = edgec(&args);
    assert!(o.status.success(), "edgec {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let got = read_run_output(&out);
    assert_eq!(got.logits_shape, vec![r.input_ids.len(), r.vocab]);
    let lo = r.logits.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = r.logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let rel_range = max_abs_diff(&got.logits, &r.logits) / (hi - lo);
    let greedy_match = got.generated_ids.iter().zip(&r.greedy_ids).filter(|(a, b)| a == b).count();
    eprintln!(
        "{fixture_name} {target} --quant {quant}: max |Δlogit| / range = {rel_range:.4}, greedy {greedy_match}/8, weights {weights_bytes} bytes"
    );
    Measured { rel_range, greedy_match, weights_bytes }
}

/// The bar for q8: logits within 5% of the logit range, greedy ids in ≥ 7 of 8
/// positions. `min_greedy` is lower only for llama (see `q8_tests!`).
fn q8(fixture_name: &str, target: &str, min_greedy: usize) {
    let m = run(fixture_name, target, "q8");
    assert!(m.rel_range <= 0.05, "{fixture_name} q8 on {target}: {} of the logit range", m.rel_range);
    assert!(m.greedy_match >= min_greedy, "{fixture_name} q8 on {target}: greedy ids match in {}/8", m.greedy_match);
}

macro_rules! q8_tests {
    ($($name:ident => $fixture:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                q8($fixture, "x86_64-unknown-linux-gnu", 7);
            }
        )*
    };
}

/// The llama fixture's greedy continuation has a near tie at its third generated token: PyTorch's
/// top two logits there are 5.4251 and 5.3224 (0.10 apart, 0.7% of the logit range), inside
/// int8's noise (these random fixtures amplify weight error: 0.7% per weight becomes 3-5% of
/// the logit range). q8 picks the runner-up and the continuation diverges after two matching
/// tokens; the logits stay within the 5% bar.
#[test]
fn q8_llama() {
    q8("llama", "x86_64-unknown-linux-gnu", 2);
}

q8_tests! {
    q8_llama3 => "llama3",
    q8_qwen2 => "qwen2",
    q8_phi2 => "phi",
    q8_phi3 => "phi3",
    q8_mistral => "mistral",
    q8_qwen3 => "qwen3",
}

#[test]
fn q8_llama3_aarch64() {
    // Tied embeddings: the same int8 table feeds the gather and the LM head.
    q8("llama3", "aarch64-unknown-linux-gnu", 7);
}

#[test]
fn f16_is_nearly_exact() {
    let m = run("qwen3", "x86_64-unknown-linux-gnu", "f16");
    assert!(m.rel_range <= 2e-3, "f16: {}", m.rel_range);
    assert_eq!(m.greedy_match, 8);
}

/// int4 groups of 32 with f16 scale and min (down_proj's 172-wide rows fall back to q8_c).
/// The fixtures' weights are uniform random (std 0.25, no outliers, nothing for the clipping
/// search to exploit), so int4 leaves its full step: ‖W − Ŵ‖/‖W‖ ≈ 7% per tensor (`--report`),
/// ten times q8's 0.7%. At q8 these random models turn 0.7% of weight error into 3-5% of the
/// logit range (≈ 5×); the same gain on 7% predicts ≈ 35%, which is the bound (measured 23%).
/// Greedy ids are not compared: at that noise the near-flat random logits reorder (a trained
/// model at int4 is checked by SmolLM2 in `tests/smollm2.rs`: still " Paris").
fn q4(fixture_name: &str, target: &str, quant: &str) {
    let m = run(fixture_name, target, quant);
    assert!(m.rel_range <= 0.35, "{fixture_name} {quant} on {target}: {} of the logit range", m.rel_range);
}

#[test]
fn q4_llama_x86_64() {
    q4("llama", "x86_64-unknown-linux-gnu", "q4");
}

#[test]
fn q4_llama_aarch64() {
    q4("llama", "aarch64-unknown-linux-gnu", "q4");
}

#[test]
fn sizes_shrink_with_the_preset() {
    let f32 = run("llama3", "x86_64-unknown-linux-gnu", "f32").weights_bytes;
    let f16 = run("llama3", "x86_64-unknown-linux-gnu", "f16").weights_bytes;
    let q8 = run("llama3", "x86_64-unknown-linux-gnu", "q8").weights_bytes;
    let q4 = run("llama3", "x86_64-unknown-linux-gnu", "q4-g128").weights_bytes;
    assert!(f16 < f32 * 55 / 100 && q8 < f32 * 30 / 100 && q4 < q8, "f32 {f32}, f16 {f16}, q8 {q8}, q4 {q4}");
}

#[test]
fn bad_preset_is_one_line() {
    let model = fixture("llama");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", "/nonexistent/never", "--quant", "q3"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("'q3' is not a quantization preset") && e.contains("q4-g128"), "{e}");
}
