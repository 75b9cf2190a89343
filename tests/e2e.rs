//! The acceptance bar: compiled models reproduce PyTorch on x86_64 and on aarch64 (qemu).

mod common;
use common::*;

fn check(fixture_name: &str, target: &str, stepwise: bool) {
    check_against_pytorch(&fixture(fixture_name), fixture_name, target, stepwise);
}

/// The fixture's ONNX export, recognised and given the decoder signature: greedy decoding
/// through the KV cache, as from the checkpoint.
fn check_onnx(fixture_name: &str, target: &str, stepwise: bool) {
    check_against_pytorch(&fixture(fixture_name).join("model.onnx"), fixture_name, target, stepwise);
}

/// An export with the KV cache in its signature (`past_key_values.N.*` in, `present.N.*`
/// out; `tests/fixtures/make_exports_with_past.py`): the runtime's KV state is that cache.
fn check_onnx_with_past(fixture_name: &str, target: &str, stepwise: bool) {
    check_against_pytorch(&fixture(fixture_name).join("model-with-past.onnx"), fixture_name, target, stepwise);
}

#[test]
fn llama_onnx_with_past_x86_64_stepwise() {
    check_onnx_with_past("llama", "x86_64-unknown-linux-gnu", true);
}

#[test]
fn llama_onnx_with_past_aarch64_prefill() {
    check_onnx_with_past("llama", "aarch64-unknown-linux-gnu", false);
}

// GPT-J: interleaved (rotate-every-two) partial rotary, parallel block, LayerNorm, gelu_new,
// biased head; ONNX only (edgec reads no GPT-J checkpoint).
#[test]
fn gptj_onnx_x86_64_stepwise() {
    check_onnx("gptj", "x86_64-unknown-linux-gnu", true);
}

#[test]
fn gptj_onnx_aarch64_prefill() {
    check_onnx("gptj", "aarch64-unknown-linux-gnu", false);
}

#[test]
fn qwen2_onnx_with_past_x86_64_prefill() {
    check_onnx_with_past("qwen2", "x86_64-unknown-linux-gnu", false);
}

/// Six tests per fixture: x86_64 and aarch64 (qemu), one-call prefill and token by token, and
/// the ONNX export token by token on x86_64 and as one prefill on aarch64.
macro_rules! family_tests {
    ($($name:ident => $fixture:literal),* $(,)?) => {
        $(
            mod $name {
                const X86: &str = "x86_64-unknown-linux-gnu";
                const ARM: &str = "aarch64-unknown-linux-gnu";
                #[test]
                fn x86_64_prefill() {
                    super::check($fixture, X86, false);
                }
                #[test]
                fn x86_64_stepwise() {
                    super::check($fixture, X86, true);
                }
                #[test]
                fn aarch64_prefill() {
                    super::check($fixture, ARM, false);
                }
                #[test]
                fn aarch64_stepwise() {
                    super::check($fixture, ARM, true);
                }
                #[test]
                fn onnx_x86_64_stepwise() {
                    super::check_onnx($fixture, X86, true);
                }
                #[test]
                fn onnx_aarch64_prefill() {
                    super::check_onnx($fixture, ARM, false);
                }
            }
        )*
    };
}

// Llama: GQA 4/2. Llama 3: rope scaling, one KV head, tied embeddings, theta 5e5.
// Qwen2: q/k/v biases, theta 1e6. Phi-2: parallel block, LayerNorm with bias, partial rotary,
// gelu_new, biased dense layers and head. Phi-3: fused qkv and gate_up. Mistral: sliding window
// 8 inside the 16-token prompt. Qwen3: per-head q/k RMSNorm, head_dim 24, tied embeddings.
family_tests! {
    llama => "llama",
    llama3 => "llama3",
    qwen2 => "qwen2",
    phi2 => "phi",
    phi3 => "phi3",
    mistral => "mistral",
    qwen3 => "qwen3",
}

#[test]
fn compile_writes_object_weights_header_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--target",
        "aarch64-unknown-linux-gnu",
        "--name",
        "tiny",
        "--max-context",
        "64",
        "--emit-ir",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("arena") && stdout.contains("lower bound"), "the planned size is printed: {stdout}");
    for f in ["tiny.o", "tiny.weights", "tiny.h", "tiny.ir", "tiny.plan", "edgec.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The header names the entry points with the chosen prefix.
    let h = std::fs::read_to_string(out.join("tiny.h")).unwrap();
    assert!(h.contains("tiny_forward") && h.contains("tiny_info"));
    // The emitted IR is the text form: it parses back to the same text.
    let ir = std::fs::read_to_string(out.join("tiny.ir")).unwrap();
    assert_eq!(edgec_ir::text::print(&edgec_ir::text::parse(&ir).unwrap()), ir);

    // Same inputs and flags: byte-identical outputs.
    let out2 = dir.path().join("out2");
    let o = edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
        "--target",
        "aarch64-unknown-linux-gnu",
        "--name",
        "tiny",
        "--max-context",
        "64",
    ]);
    assert!(o.status.success());
    for f in ["tiny.o", "tiny.weights", "tiny.h"] {
        assert_eq!(std::fs::read(out.join(f)).unwrap(), std::fs::read(out2.join(f)).unwrap(), "{f} differs");
    }

    // A compiled directory runs as is.
    let r = reference("llama");
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let o = edgec(&["run", out.to_str().unwrap(), "--ids", &ids.join(","), "--max-new-tokens", "8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: Vec<String> = r.greedy_ids.iter().map(i64::to_string).collect();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), expected.join(","));
}

#[test]
fn a_model_with_embedded_weights_runs_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama3");
    let o = edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--max-context",
        "32",
        "--embed-weights",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("llama3.weights").exists(), "the weights are in the object");
    let r = reference("llama3");
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let o = edgec(&["run", out.to_str().unwrap(), "--ids", &ids.join(","), "--max-new-tokens", "8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: Vec<String> = r.greedy_ids.iter().map(i64::to_string).collect();
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next().unwrap(), expected.join(","));
}
