//! ONNX's backend node tests (onnx 1.23.2) through import and the interpreter.
//!
//! `tests/onnx_conformance/write_cases.py` writes the cases whose nodes use only ops of the
//! first import layer into a cache directory (`$EDGEC_ONNX_CASES`, default
//! `target/onnx-node-cases`); this test writes it on first use when Python's `onnx` is
//! installed, and is skipped (saying so) otherwise. Each case is imported (an import error
//! counts as *unsupported*), run on its inputs, and compared with onnx's expected outputs
//! (|got - want| <= 1e-7 + 1e-3 |want|); a wrong value, shape or a run-time error is a
//! *failure*. It prints a passed/failed/unsupported table per op.

use edgec_frontend::onnx::fold::{self, Data, Dense};
use edgec_frontend::onnx::proto::{DataType, TensorProto};
use edgec_frontend::onnx::{ImportOptions, OnnxModel, import};
use edgec_ir::DType;
use edgec_ir::interp::{Interpreter, Tensor};
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    std::env::var_os("EDGEC_ONNX_CASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/onnx-node-cases"))
}

/// Writes the cases if the directory is missing; false if that is not possible here.
fn ensure_cases(dir: &Path) -> bool {
    if dir.join(".complete").exists() {
        return true;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/onnx_conformance/write_cases.py");
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let ok = std::process::Command::new("python3")
        .arg(&script)
        .arg(&tmp)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return false;
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).is_ok() && std::fs::write(dir.join(".complete"), b"").is_ok()
}

fn read_pb(path: &Path) -> Result<Dense, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = TensorProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let dtype = DataType::try_from(t.data_type).map_err(|_| "unknown dtype".to_string())?;
    fold::decode(dtype, &t.dims, &t.raw_data)
}

enum Outcome {
    Passed,
    Failed(String),
    Unsupported(String),
}

fn run_case(dir: &Path) -> Outcome {
    let m = match OnnxModel::open(&dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Outcome::Unsupported(e.to_string()),
    };
    let g = match import(&m, &ImportOptions { max_seq: 64, symbols: Vec::new() }) {
        Ok(g) => g,
        Err(e) => return Outcome::Unsupported(e.to_string()),
    };
    let data = dir.join("test_data_set_0");
    let mut inputs = Vec::new();
    for (i, input) in g.inputs.iter().enumerate() {
        let t = match read_pb(&data.join(format!("input_{i}.pb"))) {
            Ok(t) => t,
            Err(e) => return Outcome::Unsupported(format!("input {i}: {e}")),
        };
        inputs.push(match (input.ty.dtype, &t.data) {
            (DType::I32, Data::I(v)) => Tensor::i32(t.shape.clone(), v.iter().map(|&x| x as i32).collect()),
            (DType::I32, _) => return Outcome::Unsupported(format!("input {i} is not an integer tensor")),
            _ => Tensor::f32(t.shape.clone(), t.as_f32()),
        });
    }
    let out = match Interpreter::new(&g).and_then(|mut it| it.run(&inputs)) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("run: {e}")),
    };
    for (i, got) in out.iter().enumerate() {
        let want = match read_pb(&data.join(format!("output_{i}.pb"))) {
            Ok(t) => t,
            Err(e) => return Outcome::Unsupported(format!("output {i}: {e}")),
        };
        if got.shape != want.shape {
            return Outcome::Failed(format!("output {i}: shape {:?}, expected {:?}", got.shape, want.shape));
        }
        let got: Vec<f32> = match (got.as_f32(), got.as_i32()) {
            (Some(v), _) => v.to_vec(),
            (_, Some(v)) => v.iter().map(|&x| x as f32).collect(),
            _ => unreachable!(),
        };
        for (j, (&a, &b)) in got.iter().zip(&want.as_f32()).enumerate() {
            let close = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-7 + 1e-3 * b.abs();
            if !close {
                return Outcome::Failed(format!("output {i}[{j}] = {a}, expected {b}"));
            }
        }
    }
    Outcome::Passed
}

/// An import error without the file and node names, so equal causes count together.
fn reason(message: &str) -> String {
    if message.contains("is not supported (edgec follows opsets") {
        return "opset outside 13..=21".into();
    }
    let tail = message.rsplit("): ").next().unwrap_or(message);
    let tail = tail.split('[').next().unwrap_or(tail);
    tail.chars().take(80).collect()
}

/// The op a case tests: its single node's, or `(N nodes)` for expanded/function cases.
fn case_op(dir: &Path) -> String {
    match OnnxModel::open(&dir.join("model.onnx")) {
        Ok(m) if m.graph().node.len() == 1 => m.graph().node[0].op_type.clone(),
        Ok(_) => "(several nodes)".into(),
        Err(_) => "(unreadable)".into(),
    }
}

#[test]
fn onnx_node_tests() {
    let dir = cases_dir();
    if !ensure_cases(&dir) {
        // The test command installs onnx, so under CI a missing package is a failure.
        assert!(std::env::var_os("CI").is_none(), "python3 with onnx==1.23.2 is needed: run ./scripts/test");
        eprintln!("skipped: no ONNX node cases in {} and python3 -c 'import onnx' failed", dir.display());
        return;
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    // op -> (passed, failed, unsupported)
    let mut table: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let outcome =
            std::panic::catch_unwind(|| run_case(case)).unwrap_or_else(|_| Outcome::Failed("panicked".into()));
        let row = table.entry(case_op(case)).or_default();
        match outcome {
            Outcome::Passed => row.0 += 1,
            Outcome::Failed(m) => {
                row.1 += 1;
                failures.push(format!("{name}: {m}"));
            }
            Outcome::Unsupported(m) => {
                row.2 += 1;
                *reasons.entry(reason(&m)).or_default() += 1;
            }
        }
    }
    println!("{:<20} {:>6} {:>6} {:>11}", "op", "passed", "failed", "unsupported");
    let mut total = (0, 0, 0);
    for (op, (p, f, u)) in &table {
        println!("{op:<20} {p:>6} {f:>6} {u:>11}");
        total = (total.0 + p, total.1 + f, total.2 + u);
    }
    println!("{:<20} {:>6} {:>6} {:>11}", "total", total.0, total.1, total.2);
    let mut reasons: Vec<(usize, String)> = reasons.into_iter().map(|(r, n)| (n, r)).collect();
    reasons.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    println!("most common reasons for unsupported cases:");
    for (n, r) in reasons.iter().take(10) {
        println!("{n:>5}  {r}");
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} node cases give wrong results:\n{}", failures.len(), failures.join("\n"));
}
