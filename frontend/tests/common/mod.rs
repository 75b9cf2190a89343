//! Shared helpers for the frontend tests: fixtures, references, rewriting checkpoints.
#![allow(dead_code)]

use edgec_frontend::{LoadOptions, load_checkpoint};
use edgec_ir::Graph;
use edgec_ir::interp::{Interpreter, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

pub const OPTS: LoadOptions = LoadOptions { max_context: 64, max_tokens: 16 };

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

pub struct Reference {
    pub ids: Vec<i32>,
    pub logits: Vec<f32>,
    pub vocab: usize,
    pub greedy: Vec<i32>,
}

fn i64s(t: &TensorView) -> Vec<i32> {
    assert_eq!(t.dtype(), Dtype::I64);
    t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32).collect()
}

pub fn reference(name: &str) -> Reference {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F32);
    let vocab = logits.shape()[2];
    Reference {
        ids: i64s(&st.tensor("input_ids").unwrap()),
        logits: logits.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        vocab,
        greedy: i64s(&st.tensor("greedy_ids").unwrap()),
    }
}

/// One tensor of a checkpoint, owned.
#[derive(Clone)]
pub struct Owned {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn read_tensors(file: &Path) -> Vec<Owned> {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<Owned> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| Owned { name, dtype: t.dtype(), shape: t.shape().to_vec(), data: t.data().to_vec() })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn write_tensors(file: &Path, tensors: &[Owned]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|t| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap())).collect();
    safetensors::serialize_to_file(views, None, file).unwrap();
}

pub fn read_config(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap()
}

pub fn write_config(dir: &Path, cfg: &serde_json::Value) {
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(cfg).unwrap()).unwrap();
}

/// A temp dir holding a copy of fixture `name` with its tensors passed through `edit`.
pub fn edited_copy(name: &str, edit: impl FnOnce(&mut Vec<Owned>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = read_tensors(&fixture(name).join("model.safetensors"));
    edit(&mut tensors);
    write_tensors(&dir.path().join("model.safetensors"), &tensors);
    write_config(dir.path(), &read_config(name));
    dir
}

pub fn load(dir: &Path) -> Graph {
    load_checkpoint(dir, &OPTS).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Runs `ids` at `pos` and returns the logits `[ids.len() * vocab]`.
pub fn forward(it: &mut Interpreter, ids: &[i32], pos: i32) -> Vec<f32> {
    let out = it
        .run(&[Tensor::i32(vec![ids.len()], ids.to_vec()), Tensor::scalar_i32(pos)])
        .unwrap_or_else(|e| panic!("run at pos {pos}: {e}"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape[0], ids.len());
    out[0].as_f32().unwrap().to_vec()
}

/// Logits of the whole prompt in one call from a fresh state.
pub fn prefill_logits(g: &Graph, ids: &[i32]) -> Vec<f32> {
    let mut it = Interpreter::new(g).unwrap();
    forward(&mut it, ids, 0)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn argmax(row: &[f32]) -> i32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i32
}
