//! ONNX's backend node tests compiled to native code: every case that imports and passes in
//! the interpreter (`frontend/tests/onnx_conformance.rs`) is compiled for the host as a general
//! graph (`NAME_run`), linked, run on its inputs and compared with onnx's expected outputs
//! (same tolerance: |got - want| <= 1e-7 + 1e-3 |want|). A case the backend refuses counts as
//! *refused*; a wrong value or a failed call is a failure. Skipped when the cases are missing
//! (the frontend test writes them into `target/onnx-node-cases`).

use edgec::graph_run::CompiledGraph;
use edgec_frontend::onnx::fold::{self, Data, Dense};
use edgec_frontend::onnx::proto::{DataType, TensorProto};
use edgec_frontend::onnx::{ImportOptions, OnnxModel, import};
use edgec_ir::DType;
use edgec_ir::interp::Tensor;
use prost::Message;
use std::path::{Path, PathBuf};

fn read_pb(path: &Path) -> Result<Dense, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = TensorProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let dtype = DataType::try_from(t.data_type).map_err(|_| "unknown dtype".to_string())?;
    fold::decode(dtype, &t.dims, &t.raw_data)
}

fn close(got: &Tensor, want: &Dense) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    let got: Vec<f32> = match (got.as_f32(), got.as_i32()) {
        (Some(v), _) => v.to_vec(),
        (_, Some(v)) => v.iter().map(|&x| x as f32).collect(),
        _ => unreachable!(),
    };
    for (j, (&a, &b)) in got.iter().zip(&want.as_f32()).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-7 + 1e-3 * b.abs();
        if !ok {
            return Err(format!("[{j}] = {a}, expected {b}"));
        }
    }
    Ok(())
}

enum Outcome {
    Passed,
    Failed(String),
    /// Not imported, or wrong in the interpreter already: not this test's business.
    Skipped,
    Refused(String),
}

fn run_case(dir: &Path) -> Outcome {
    let Ok(m) = OnnxModel::open(&dir.join("model.onnx")) else { return Outcome::Skipped };
    let Ok(mut g) = import(&m, &ImportOptions { max_seq: 64, symbols: Vec::new() }) else { return Outcome::Skipped };
    g.name = "case".into();
    let data = dir.join("test_data_set_0");
    let mut inputs = Vec::new();
    for (i, input) in g.inputs.iter().enumerate() {
        let Ok(t) = read_pb(&data.join(format!("input_{i}.pb"))) else { return Outcome::Skipped };
        let t = match (input.ty.dtype, &t.data) {
            (DType::I32, Data::I(v)) => Tensor::i32(t.shape.clone(), v.iter().map(|&x| x as i32).collect()),
            (DType::I32, _) => return Outcome::Skipped,
            _ => Tensor::f32(t.shape.clone(), t.as_f32()),
        };
        inputs.push((input.name.clone(), t));
    }
    let wants: Vec<Dense> = match (0..g.outputs.len()).map(|i| read_pb(&data.join(format!("output_{i}.pb")))).collect()
    {
        Ok(w) => w,
        Err(_) => return Outcome::Skipped,
    };
    // Only cases the interpreter gets right.
    let plain: Vec<Tensor> = inputs.iter().map(|(_, t)| t.clone()).collect();
    match edgec_ir::interp::Interpreter::new(&g).and_then(|mut it| it.run(&plain)) {
        Ok(out) if out.iter().zip(&wants).all(|(o, w)| close(o, w).is_ok()) => {}
        _ => return Outcome::Skipped,
    }
    let c = match CompiledGraph::build(&g, None) {
        Ok(c) => c,
        Err(e) => return Outcome::Refused(format!("{e:#}")),
    };
    let outs = match c.run(&g, &inputs, 1) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("run: {e:#}")),
    };
    for (i, ((_, got), want)) in outs.iter().zip(&wants).enumerate() {
        if let Err(e) = close(got, want) {
            return Outcome::Failed(format!("output {i}{e}"));
        }
    }
    Outcome::Passed
}

#[test]
fn onnx_node_tests_compiled() {
    let dir = std::env::var_os("EDGEC_ONNX_CASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/onnx-node-cases"));
    if !dir.join(".complete").exists() {
        eprintln!(
            "skipped: no ONNX node cases in {} (run the edgec-frontend onnx_conformance test first)",
            dir.display()
        );
        return;
    }
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    let (mut passed, mut skipped) = (0, 0);
    let (mut failures, mut refused) = (Vec::new(), Vec::new());
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match std::panic::catch_unwind(|| run_case(case)).unwrap_or_else(|_| Outcome::Failed("panicked".into())) {
            Outcome::Passed => passed += 1,
            Outcome::Skipped => skipped += 1,
            Outcome::Refused(m) => refused.push(format!("{name}: {m}")),
            Outcome::Failed(m) => failures.push(format!("{name}: {m}")),
        }
    }
    println!(
        "compiled: {passed} passed, {} failed, {} refused by the backend ({skipped} not imported or not passing in the interpreter)",
        failures.len(),
        refused.len()
    );
    for r in &refused {
        println!("REFUSED {r}");
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    assert!(failures.is_empty(), "{} compiled node cases give wrong results:\n{}", failures.len(), failures.join("\n"));
}
