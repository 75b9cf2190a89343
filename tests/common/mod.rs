//! Helpers shared by the end-to-end tests: fixtures, PyTorch references, running `edgec`.

#![allow(dead_code)]

use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// PyTorch's outputs for a fixture: the prompt, its logits and the greedy continuation.
pub struct Reference {
    pub input_ids: Vec<i64>,
    pub logits: Vec<f32>,
    pub vocab: usize,
    pub greedy_ids: Vec<i64>,
}

pub fn reference(name: &str) -> Reference {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| -> Vec<i64> {
        st.tensor(n).unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let logits = st.tensor("logits").unwrap();
    let vocab = *logits.shape().last().unwrap();
    Reference {
        input_ids: i64s("input_ids"),
        logits: logits.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        vocab,
        greedy_ids: i64s("greedy_ids"),
    }
}

/// What `edgec run --output` wrote.
pub struct RunResult {
    pub logits: Vec<f32>,
    pub logits_shape: Vec<usize>,
    pub generated_ids: Vec<i64>,
}

pub fn read_run_output(path: &Path) -> RunResult {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let logits = st.tensor("logits").unwrap();
    let ids = st.tensor("generated_ids").unwrap();
    assert_eq!(ids.dtype(), safetensors::Dtype::I64);
    RunResult {
        logits: logits.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        logits_shape: logits.shape().to_vec(),
        generated_ids: ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
    }
}

pub fn edgec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgec")).args(args).output().expect("edgec runs")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The cross tools the test command installs; their absence is a failure, not a skip.
pub fn require_aarch64_tools() {
    for tool in ["aarch64-linux-gnu-gcc", "qemu-aarch64"] {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: run ./scripts/test, which installs it");
    }
}

/// `edgec run MODEL` on the prompt of fixture `reference_name`, for `target`, then the bar:
/// logits within 1e-3 of PyTorch's and exactly its greedy ids (8 tokens through the KV cache).
pub fn check_against_pytorch(model: &Path, reference_name: &str, target: &str, stepwise: bool) {
    if target.starts_with("aarch64") {
        require_aarch64_tools();
    }
    let r = reference(reference_name);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let ids: Vec<String> = r.input_ids.iter().map(i64::to_string).collect();
    let ids = ids.join(",");
    let mut args = vec![
        "run",
        model.to_str().unwrap(),
        "--ids",
        &ids,
        "--max-new-tokens",
        "8",
        "--target",
        target,
        "--output",
        out.to_str().unwrap(),
    ];
    if stepwise {
        args.push("--stepwise");
    }
    let o = edgec(&args);
    assert!(o.status.success(), "edgec {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    let got = read_run_output(&out);
    assert_eq!(got.logits_shape, vec![r.input_ids.len(), r.vocab]);
    let what = format!("{} on {target} (stepwise: {stepwise})", model.display());
    let diff = max_abs_diff(&got.logits, &r.logits);
    eprintln!("{what}: max |logits - PyTorch| = {diff:e}");
    assert!(diff <= 1e-3, "{what}: logits differ from PyTorch by {diff}");
    assert_eq!(got.generated_ids, r.greedy_ids, "{what}: greedy tokens differ from PyTorch");
}
