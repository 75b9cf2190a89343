//! ONNX's backend node tests compiled to native code: every case that imports and passes in
//! the interpreter (`frontend/tests/onnx_conformance.rs`) is compiled for the host as a general
//! graph (`NAME_run`), linked, run on its inputs and compared with onnx's expected outputs
//! (same tolerances). A case the backend refuses counts as *unsupported*; a wrong value or a
//! failed call is a failure; a case in `tests/onnx_conformance/expected_pass_compiled.txt`
//! that does not pass is a regression (`EDGEC_BLESS=1` rewrites the list). Skipped when the
//! cases are missing and cannot be written.

mod common;
#[path = "onnx_conformance/harness.rs"]
mod harness;

use edgec::graph_run::CompiledGraph;
use edgec_ir::interp::Tensor;
use harness::{Outcome, Row};
use std::path::Path;

fn run_case(dir: &Path, row: &Row) -> Outcome {
    let mut case = match harness::load(dir) {
        Ok(c) => c,
        Err(e) => return Outcome::Unsupported(format!("import: {e}")),
    };
    case.graph.name = "case".into();
    // Only cases the interpreter gets right.
    let plain: Vec<Tensor> = case.inputs.iter().map(|(_, t)| t.clone()).collect();
    match edgec_ir::interp::Interpreter::new(&case.graph).and_then(|mut it| it.run(&plain)) {
        Ok(out) if out.iter().zip(&case.wants).all(|(o, w)| harness::close(o, w, row.rtol, row.atol).is_ok()) => {}
        _ => return Outcome::Unsupported("not passing in the interpreter".into()),
    }
    let c = match CompiledGraph::build(&case.graph, None) {
        Ok(c) => c,
        Err(e) => return Outcome::Unsupported(format!("backend: {e:#}")),
    };
    let outs = match c.run(&case.graph, &case.inputs, 1) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("run: {e:#}")),
    };
    for (i, ((_, got), want)) in outs.iter().zip(&case.wants).enumerate() {
        if let Err(e) = harness::close(got, want, row.rtol, row.atol) {
            return Outcome::Failed(format!("output {i}: {e}"));
        }
    }
    Outcome::Passed
}

#[test]
fn onnx_node_tests_compiled() {
    harness::run_all("compiled (host)", "expected_pass_compiled.txt", run_case);
}

/// Every fifth case of `expected_pass_compiled.txt` (at least 100) compiled for aarch64, linked
/// with the general-graph C driver and run under qemu: each must pass. The cross tools are
/// required, as for every aarch64 test (the test command installs them).
#[test]
fn onnx_node_tests_aarch64_sample() {
    common::require_aarch64_tools();
    let dir = harness::cases_dir();
    if !harness::ensure_cases(&dir) {
        assert!(std::env::var_os("CI").is_none(), "python3 with onnx==1.23.2 is needed: run ./scripts/test");
        eprintln!("skipped: no ONNX node cases and python3 -c 'import onnx' failed");
        return;
    }
    let listed =
        std::fs::read_to_string(harness::root().join("tests/onnx_conformance/expected_pass_compiled.txt")).unwrap();
    let sample: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).step_by(5).collect();
    assert!(sample.len() >= 100, "the sample has only {} cases", sample.len());
    let rows = harness::read_index(&dir);
    let target: target_lexicon::Triple = "aarch64-unknown-linux-gnu".parse().unwrap();
    let mut failures = Vec::new();
    for name in &sample {
        let row = rows.iter().find(|r| r.name == *name).unwrap();
        let mut case = harness::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        case.graph.name = "case".into();
        let outs = CompiledGraph::build_for(&case.graph, &target, None, None)
            .and_then(|c| c.run(&case.graph, &case.inputs, 1))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        for (i, ((_, got), want)) in outs.iter().zip(&case.wants).enumerate() {
            if let Err(e) = harness::close(got, want, row.rtol, row.atol) {
                failures.push(format!("{name}: output {i}: {e}"));
            }
        }
    }
    println!("aarch64 (qemu): {} of {} sampled node cases pass", sample.len() - failures.len(), sample.len());
    assert!(failures.is_empty(), "{} cases give wrong results on aarch64:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn extra_node_cases() {
    harness::run_extra("compiled (host)", run_case);
}
