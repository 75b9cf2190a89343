//! Qwen2, Phi-2, Phi-3, Mistral and Qwen3 through the one decoder builder, against PyTorch's
//! outputs for their tiny fixtures (the interpreter runs the graphs).

mod common;
use common::*;
use edgec_ir::interp::Interpreter;
use edgec_ir::{Op, WeightSource};

const FAMILIES: [&str; 5] = ["qwen2", "phi", "phi3", "mistral", "qwen3"];

/// Prefill logits within 1e-3 of PyTorch's; greedy tokens equal after a one-call prefill and
/// after a token-by-token prefill (whose logits rows match the one-call ones).
fn check(name: &str) {
    let r = reference(name);
    let g = load(&fixture(name));
    let v = r.vocab;
    let n = r.ids.len();
    let mut it = Interpreter::new(&g).unwrap();
    let prefill = forward(&mut it, &r.ids, 0);
    let d = max_diff(&prefill, &r.logits);
    println!("{name}: max |logits - PyTorch| = {d:e}");
    assert!(d <= 1e-3, "{name}: max diff {d}");

    let decode = |it: &mut Interpreter, last_row: &[f32]| -> Vec<i32> {
        let mut out = vec![argmax(last_row)];
        while out.len() < r.greedy.len() {
            let pos = (n + out.len() - 1) as i32;
            let logits = forward(it, &[*out.last().unwrap()], pos);
            out.push(argmax(&logits));
        }
        out
    };
    let got = decode(&mut it, &prefill[(n - 1) * v..]);
    assert_eq!(got, r.greedy, "{name}: greedy after one-call prefill");

    it.reset_state();
    let mut rows = Vec::new();
    for (p, &id) in r.ids.iter().enumerate() {
        rows.extend(forward(&mut it, &[id], p as i32));
    }
    let d = max_diff(&rows, &prefill);
    assert!(d <= 1e-4, "{name}: token-by-token logits differ by {d}");
    let got = decode(&mut it, &rows[(n - 1) * v..]);
    assert_eq!(got, r.greedy, "{name}: greedy after token-by-token prefill");
}

#[test]
fn qwen2_matches_pytorch() {
    check("qwen2");
}

#[test]
fn phi2_matches_pytorch() {
    check("phi");
}

#[test]
fn phi3_matches_pytorch() {
    check("phi3");
}

#[test]
fn mistral_matches_pytorch() {
    check("mistral");
}

#[test]
fn qwen3_matches_pytorch() {
    check("qwen3");
}

/// The fixtures really exercise what they are for: the graph has the switches' ops.
#[test]
fn graphs_use_the_family_switches() {
    let count = |name: &str, f: &dyn Fn(&Op) -> bool| load(&fixture(name)).nodes.iter().filter(|n| f(&n.op)).count();
    assert_eq!(count("phi", &|op| matches!(op, Op::LayerNorm { .. })), 3);
    assert_eq!(count("phi", &|op| matches!(op, Op::Rope { head_dim: 16, rotary_dim: 8, .. })), 4);
    assert_eq!(count("qwen3", &|op| matches!(op, Op::RmsNorm { group: Some(24), .. })), 4);
    assert_eq!(count("mistral", &|op| matches!(op, Op::Attention { window: Some(8), .. })), 2);
    assert_eq!(count("qwen2", &|op| matches!(op, Op::Attention { window: None, .. })), 2);

    // Phi-3's fused projections are row ranges of the stored tensors: same file, offsets apart
    // by the rows before them.
    let g = load(&fixture("phi3"));
    let offset = |n: &str| match &g.weights.iter().find(|w| w.name == n).unwrap().source {
        WeightSource::File { offset, .. } => *offset,
        s => panic!("{n}: {s:?}"),
    };
    let p = "model.layers.0.self_attn.qkv_proj.weight";
    assert_eq!(offset(&format!("{p}.k")) - offset(&format!("{p}.q")), 64 * 64 * 4);
    assert_eq!(offset(&format!("{p}.v")) - offset(&format!("{p}.k")), 64 * 64 * 4);
    let p = "model.layers.1.mlp.gate_up_proj.weight";
    assert_eq!(offset(&format!("{p}.up")) - offset(&format!("{p}.gate")), 128 * 64 * 4);
}

/// Mistral's window of 8 inside a 16-token prompt changes the logits: without it the model
/// is a different one.
#[test]
fn mistral_window_changes_the_logits() {
    let r = reference("mistral");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("mistral").join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let mut cfg = read_config("mistral");
    cfg.as_object_mut().unwrap().insert("sliding_window".into(), serde_json::Value::Null);
    write_config(dir.path(), &cfg);
    let d = max_diff(&prefill_logits(&load(dir.path()), &r.ids), &r.logits);
    assert!(d > 1e-2, "without the window the logits differ by only {d}");
}

#[test]
fn every_family_fixture_loads() {
    for name in FAMILIES {
        let g = load(&fixture(name));
        edgec_ir::verify::verify(&g).unwrap();
    }
}
