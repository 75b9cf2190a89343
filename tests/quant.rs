//! Quantized weights end to end (`--quant`): the fixtures compiled with int8 / int4 / f16 weight
//! storage still track PyTorch's f32 logits and greedy tokens, on x86_64 and aarch64 (qemu).

mod common;
use common::*;

struct Measured {
    /// max |logits − PyTorch| / (max − min of PyTorch's logits).
    rel_range: f32,
    /// Positions where the generated greedy ids equal PyTorch's (of 8): free-running, so one
    /// flipped near tie changes every later position.
    greedy_match: usize,
    /// Positions where the model's greedy choice, given PyTorch's tokens before it (teacher
    /// forcing), is PyTorch's (of 8): each position judged on its own.
    forced_match: usize,
    weights_bytes: u64,
    /// The prompt's logits.
    logits: Vec<f32>,
}

fn run(fixture_name: &str, target: &str, quant: &str) -> Measured {
    run_with(fixture_name, target, quant, &[])
}

/// Compiles with `--quant quant` and the `extra` compile flags, then runs the prompt.
fn run_with(fixture_name: &str, target: &str, quant: &str, extra: &[&str]) -> Measured {
    if target.starts_with("aarch64") {
        require_aarch64_tools();
    }
    let r = reference(fixture_name);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("c");
    let model = fixture(fixture_name);
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    let o = edgec(&args);
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

    // Teacher forcing: the prompt and PyTorch's first 7 greedy tokens in one call; row
    // `prompt_len - 1 + j` holds the model's choice for greedy position j.
    let mut forced: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    forced.extend(r.greedy_ids[..7].iter().map(i64::to_string));
    let forced = forced.join(",");
    let out2 = dir.path().join("forced.safetensors");
    let args = [
        "run",
        out_dir.to_str().unwrap(),
        "--ids",
        &forced,
        "--max-new-tokens",
        "1",
        "--output",
        out2.to_str().unwrap(),
    ];
    let o = edgec(&args);
    assert!(o.status.success(), "edgec {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let f = read_run_output(&out2);
    let argmax = |row: &[f32]| row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best });
    let forced_match = (0..8)
        .filter(|&j| {
            let row = r.input_ids.len() - 1 + j;
            argmax(&f.logits[row * r.vocab..(row + 1) * r.vocab]) as i64 == r.greedy_ids[j]
        })
        .count();
    eprintln!(
        "{fixture_name} {target} --quant {quant} {}: max |Δlogit| / range = {rel_range:.4}, greedy {greedy_match}/8 free-running, {forced_match}/8 teacher-forced, weights {weights_bytes} bytes",
        extra.join(" ")
    );
    Measured { rel_range, greedy_match, forced_match, weights_bytes, logits: got.logits }
}

/// The bar for q8: logits within 10% of the logit range, and the greedy choice PyTorch's in
/// ≥ 7 of 8 positions, each position judged given PyTorch's tokens before it (teacher forcing;
/// free-running, one flipped near tie would change every later position too). `min_free` is the
/// free-running count the fixture is also held to.
///
/// Both ISAs run q8 matmuls with int8 activations (blocks of 32, scale = max |x| / 127,
/// `backend/src/kernels/qdot.rs`). Rounding an activation to its block's step adds a uniform error
/// of rms step/√12 = max|x| / (127·√12) ≈ 0.23% of the block max; these blocks' max is 2.5-4×
/// their rms, so 0.6-0.9% per element: as large as q8's weight error (0.6%) or larger, and
/// independent of it. The fixtures turn q8's 0.6% into 3-5% of the logit range (measured with
/// `--activations f32`: 0.9-4.7%, held to 5% below); the two sources together give at most about
/// twice that, hence 10% (measured: llama 8.8%, qwen2 5.9%, phi3 4.5%, llama3 4.2%, mistral
/// 3.3%, qwen3 2.1%, phi 0.8%).
fn q8(fixture_name: &str, target: &str, preset: &str, min_free: usize) -> Measured {
    let m = run(fixture_name, target, preset);
    assert!(m.rel_range <= 0.10, "{fixture_name} {preset} on {target}: {} of the logit range", m.rel_range);
    assert!(
        m.forced_match >= 7,
        "{fixture_name} {preset} on {target}: the greedy choice matches in {}/8 positions",
        m.forced_match
    );
    assert!(
        m.greedy_match >= min_free,
        "{fixture_name} {preset} on {target}: free-running greedy ids match in {}/8",
        m.greedy_match
    );
    m
}

macro_rules! q8_tests {
    ($($name:ident => $fixture:literal, $min_free:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                q8($fixture, "x86_64-unknown-linux-gnu", "q8", $min_free);
            }
        )*
    };
}

/// The llama fixture's greedy continuation has a near tie at its third generated token: PyTorch's
/// top two logits there are 5.4251 and 5.3224 (0.10 apart, 0.7% of the logit range), inside
/// int8's noise (these random fixtures amplify weight error: 0.6% per weight becomes 2-5% of
/// the logit range). q8 picks the runner-up there, and only there: 7/8 positions given
/// PyTorch's prefix. Running free, the continuation then diverges after two matching tokens.
/// A finer int8 layout does not cure the tie: the weights are uniform random, so a group of 32
/// has almost the row's range and `q8_g32` cuts the per-tensor error only from 5.9e-3 to 5.3e-3.
/// llama3 and mistral (7/8 given PyTorch's prefix) diverge at a tie too with int8 activations.
#[test]
fn q8_llama() {
    q8("llama", "x86_64-unknown-linux-gnu", "q8", 2);
}

q8_tests! {
    q8_llama3 => "llama3", 3,
    q8_qwen2 => "qwen2", 7,
    q8_phi2 => "phi", 7,
    q8_phi3 => "phi3", 7,
    q8_mistral => "mistral", 3,
    q8_qwen3 => "qwen3", 7,
}

/// The bar, 5% of the logit range and PyTorch's greedy choice in ≥ 7 of 8 positions,
/// holds for q8 weights with `--activations f32` (dequantized in registers, multiplied in f32):
/// the weights' rounding alone (measured: llama 4.7%). The object has no int8-activation
/// kernel.
fn q8_f32_activations(fixture_name: &str, target: &str) -> Measured {
    let m = run_with(fixture_name, target, "q8", &["--activations", "f32"]);
    assert!(m.rel_range <= 0.05, "{fixture_name} q8, f32 activations, on {target}: {} of the logit range", m.rel_range);
    assert!(m.forced_match >= 7, "{fixture_name} q8, f32 activations: greedy matches in {}/8", m.forced_match);
    m
}

macro_rules! q8_f32_activation_tests {
    ($($name:ident => $fixture:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                q8_f32_activations($fixture, "x86_64-unknown-linux-gnu");
            }
        )*
    };
}

q8_f32_activation_tests! {
    q8_f32_activations_llama => "llama",
    q8_f32_activations_llama3 => "llama3",
    q8_f32_activations_qwen2 => "qwen2",
    q8_f32_activations_phi2 => "phi",
    q8_f32_activations_phi3 => "phi3",
    q8_f32_activations_mistral => "mistral",
    q8_f32_activations_qwen3 => "qwen3",
}

#[test]
fn q8_f32_activations_llama_aarch64() {
    q8_f32_activations("llama", "aarch64-unknown-linux-gnu");
}

/// `q8-g32` (ggml's Q8_0 for every matrix whose rows are whole groups of 32; the 172-wide
/// `down_proj` falls back to `q8_c`): same bar, on the fixture farthest from a tie.
#[test]
fn q8_g32_phi2() {
    let m = q8("phi", "x86_64-unknown-linux-gnu", "q8-g32", 7);
    let q8c = run("phi", "x86_64-unknown-linux-gnu", "q8").weights_bytes;
    assert!(m.weights_bytes <= q8c * 105 / 100, "q8-g32 {} bytes vs q8 {q8c}", m.weights_bytes);
}

/// aarch64 multiplies signed int8 weights, x86 unsigned ones (`w + 128`, corrected by the
/// activation sums): the integer lanes are equal, and so are the logits, bit for bit.
fn q8_int8_activations(fixture_name: &str, min_greedy: usize) {
    let m = q8(fixture_name, "aarch64-unknown-linux-gnu", "q8", min_greedy);
    let x86 = run(fixture_name, "x86_64-unknown-linux-gnu", "q8");
    assert_eq!(m.logits.len(), x86.logits.len());
    let diff = m.logits.iter().zip(&x86.logits).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(diff, 0, "{fixture_name} q8: {diff} logits differ between aarch64 and x86_64");
}

#[test]
fn q8_llama3_aarch64() {
    // Tied embeddings: the same int8 table feeds the gather and the LM head.
    q8_int8_activations("llama3", 0);
}

#[test]
fn q8_llama_aarch64() {
    q8_int8_activations("llama", 0);
}

#[test]
fn q8_phi2_aarch64() {
    q8_int8_activations("phi", 7);
}

/// Issue 7: an aarch64 object carries a baseline and a `dotprod` entry point; the C driver picks
/// one from the CPU's features (HWCAP_ASIMDDP) and records it. qemu's cortex-a53 has no dotprod,
/// `max` has it. Both variants run the same int8 arithmetic (only `sdot` versus its widening
/// multiply + pairwise add expansion differs), so logits are bit-identical, tokens too.
#[test]
fn aarch64_variants_agree_and_are_picked_by_cpu() {
    require_aarch64_tools();
    let r = reference("llama");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("c");
    let model = fixture("llama");
    let args = [
        "compile",
        model.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--target",
        "aarch64-unknown-linux-gnu",
        "--max-context",
        "32",
        "--quant",
        "q8",
    ];
    let o = edgec(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let nm = std::process::Command::new("nm").arg(out_dir.join("llama.o")).output().unwrap();
    let syms = String::from_utf8_lossy(&nm.stdout);
    for s in ["T llama_forward\n", "T llama_forward_dotprod\n", "_matmul_t_i8_dotprod\n"] {
        assert!(syms.contains(s), "no {s:?} in\n{syms}");
    }
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let ids = ids.join(",");
    let mut outs = Vec::new();
    for (cpu, variant) in [("cortex-a53", "baseline"), ("max", "dotprod")] {
        let out = dir.path().join(format!("{cpu}.safetensors"));
        let runner = format!("qemu-aarch64 -cpu {cpu}");
        let args = [
            "run",
            out_dir.to_str().unwrap(),
            "--ids",
            &ids,
            "--max-new-tokens",
            "8",
            "--runner",
            &runner,
            "--output",
            out.to_str().unwrap(),
        ];
        let o = edgec(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "edgec {args:?}: {err}");
        assert!(err.contains(&format!("ran the {variant} variant")), "{cpu}: {err}");
        outs.push(read_run_output(&out));
    }
    assert_eq!(outs[0].generated_ids, outs[1].generated_ids);
    assert!(outs[0].logits.iter().zip(&outs[1].logits).all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// x86_64 objects carry `NAME_forward` (AVX2+FMA, `pmaddwd`), `NAME_forward_avxvnni` (VEX
/// `vpdpbusd`) and `NAME_forward_avx512vnni` (EVEX `vpdpbusd`); `edgec run` and the C driver
/// (`-DEDGEC_X86_VNNI_VARIANTS`, cpuid) pick the best this CPU runs, and `EDGEC_VARIANT=baseline`
/// forces `NAME_forward`. The int8 lanes are exact and the float formula shared, so int8 (q8)
/// and int4 (q4s) models give bit-identical logits and tokens in every variant and runner.
#[test]
fn x86_variants_agree_and_are_picked_by_cpu() {
    let r = reference("llama");
    let best = if std::arch::is_x86_feature_detected!("avxvnni") {
        "avxvnni"
    } else if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
    {
        "avx512vnni"
    } else {
        "baseline"
    };
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let ids = ids.join(",");
    for quant in ["q8", "q4s"] {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("c");
        let model = fixture("llama");
        let args = [
            "compile",
            model.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
            "--max-context",
            "32",
            "--quant",
            quant,
        ];
        let o = edgec(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let obj = out_dir.join("llama.o");
        let nm = std::process::Command::new("nm").arg(&obj).output().unwrap();
        let syms = String::from_utf8_lossy(&nm.stdout);
        for s in ["T llama_forward\n", "T llama_forward_avxvnni\n", "T llama_forward_avx512vnni\n"] {
            assert!(syms.contains(s), "no {s:?} in\n{syms}");
        }
        let mut logits = Vec::new();
        for (force, variant) in [(true, "baseline"), (false, best)] {
            let out = dir.path().join(format!("{variant}.safetensors"));
            let args = ["run", out_dir.to_str().unwrap(), "--ids", &ids, "--max-new-tokens", "8"];
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edgec"));
            cmd.args(args).args(["--output", out.to_str().unwrap()]);
            if force {
                cmd.env("EDGEC_VARIANT", "baseline");
            } else {
                cmd.env_remove("EDGEC_VARIANT");
            }
            let o = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{quant} edgec run: {err}");
            assert!(err.contains(&format!("ran the {variant} variant")), "{quant}: {err}");
            let got = read_run_output(&out);
            logits.push((got.logits, got.generated_ids));
        }
        // The C driver, natively, in prefill mode (one call for the prompt, as `edgec run`).
        let rt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime");
        let exe = dir.path().join("driver");
        let o = std::process::Command::new("cc")
            .args([
                "-std=c99",
                "-O1",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-DEDGEC_MODEL=llama",
                "-DEDGEC_X86_VNNI_VARIANTS",
            ])
            .arg("-I")
            .arg(rt.join("include"))
            .arg(rt.join("c/edgec_driver.c"))
            .arg(&obj)
            .arg("-o")
            .arg(&exe)
            .arg("-lm")
            .output()
            .unwrap();
        assert!(o.status.success(), "building the C driver: {}", String::from_utf8_lossy(&o.stderr));
        let bin = dir.path().join("driver.bin");
        let w = out_dir.join("llama.weights");
        let o = std::process::Command::new(&exe)
            .args([w.to_str().unwrap(), &ids, "8", "prefill", bin.to_str().unwrap()])
            .env_remove("EDGEC_VARIANT")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "C driver: {err}");
        assert!(err.contains(&format!("variant {best}")), "C driver: {err}");
        let d = edgec_runtime::driver_output::parse_driver_output(&std::fs::read(&bin).unwrap()).unwrap();
        assert_eq!(d.variant_name(), best);
        let generated: Vec<i64> = d.generated.iter().map(|&t| i64::from(t)).collect();
        logits.push((d.logits, generated));
        for (l, g) in &logits[1..] {
            assert_eq!(g, &logits[0].1, "{quant}: generated ids differ between variants");
            assert!(l.iter().zip(&logits[0].0).all(|(a, b)| a.to_bits() == b.to_bits()), "{quant}: logits differ");
        }
    }
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

/// `--kv-dtype f16`: the KV cache rounded to f16 (half its memory) costs little: logits within
/// 0.5% of PyTorch's range and every greedy token, on x86_64 and on aarch64; with q8 weights
/// on top, the q8 bar still holds.
#[test]
fn f16_kv_cache_tracks_pytorch() {
    for (fixture_name, target) in [
        ("llama", "x86_64-unknown-linux-gnu"),
        ("qwen2", "x86_64-unknown-linux-gnu"),
        ("phi", "aarch64-unknown-linux-gnu"),
    ] {
        let m = run_with(fixture_name, target, "f32", &["--kv-dtype", "f16"]);
        assert!(m.rel_range <= 0.005, "{fixture_name} f16 KV on {target}: {} of the logit range", m.rel_range);
        assert_eq!((m.greedy_match, m.forced_match), (8, 8), "{fixture_name} f16 KV on {target}");
    }
    let m = run_with("mistral", "x86_64-unknown-linux-gnu", "q8", &["--kv-dtype", "f16"]);
    assert!(m.rel_range <= 0.05 && m.forced_match >= 7, "mistral q8 + f16 KV: {} of the range", m.rel_range);
}

/// `--kv-dtype q8`: the KV cache in ggml's Q8_0 blocks (34 bytes per 32 values, 27% of f32)
/// stays within the q8 weights' bar on the llama fixture (KV rows of 32: two heads of 16 per
/// block): logits within 5% of PyTorch's range and ≥ 7 of 8 greedy tokens teacher-forced, on
/// x86_64 and on aarch64. With f32 weights the cache is the only quantization; with q8 weights
/// on top, the q8 weights' 10% bar.
#[test]
fn q8_kv_cache_tracks_pytorch() {
    for target in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let m = run_with("llama", target, "f32", &["--kv-dtype", "q8"]);
        assert!(m.rel_range <= 0.05, "llama q8 KV on {target}: {} of the logit range", m.rel_range);
        assert!(m.forced_match >= 7 && m.greedy_match >= 7, "llama q8 KV on {target}");
    }
    let m = run_with("llama", "x86_64-unknown-linux-gnu", "q8", &["--kv-dtype", "q8"]);
    assert!(m.rel_range <= 0.10 && m.forced_match >= 7, "llama q8 + q8 KV: {} of the range", m.rel_range);
}

/// `q4s` blocks chosen with importance weights are still ggml's Q4_0: the Python `gguf`
/// package's dequantizer (llama.cpp's reference) reads the bytes `encode_weighted` wrote as
/// `decode` does, when python3 has `gguf` and `numpy` (scripts/test installs them).
#[test]
fn weighted_q4s_bytes_dequantize_like_gguf_q4_0() {
    let (rows, cols) = (4u64, 96u64);
    let v: Vec<f32> =
        (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1.0 + (i % 13) as f32)).collect();
    let imp: Vec<f32> = (0..cols).map(|j| if j % 11 == 0 { 0.0 } else { 1.0 + (j % 7) as f32 * 30.0 }).collect();
    let s = edgec_ir::Storage::Q4G { group: 32, min: false };
    let bytes = edgec_ir::quant::encode_weighted(s, rows, cols, &v, Some(&imp)).unwrap();
    let ours = edgec_ir::quant::decode(s, rows, cols, &bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q4_0.bin");
    std::fs::write(&path, &bytes).unwrap();
    let script = "import sys, numpy as np\nfrom gguf import quants, GGMLQuantizationType as T\n\
                  raw = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(int(sys.argv[2]), -1)\n\
                  print(' '.join(repr(float(x)) for x in quants.dequantize(raw, T.Q4_0).reshape(-1)))";
    let o =
        std::process::Command::new("python3").args(["-c", script, path.to_str().unwrap(), &rows.to_string()]).output();
    let out = match o {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        other => {
            let why = other.map_or_else(|e| e.to_string(), |o| String::from_utf8_lossy(&o.stderr).into_owned());
            assert!(std::env::var_os("CI").is_none(), "python3 with gguf and numpy is needed: {why}");
            eprintln!("skipped: python3 with gguf and numpy is not available ({})", why.trim());
            return;
        }
    };
    let theirs: Vec<f32> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(theirs, ours);
}
