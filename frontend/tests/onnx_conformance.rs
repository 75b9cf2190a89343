//! ONNX's backend node tests (onnx 1.23.2, all 1884) through import and the interpreter.
//!
//! `tests/onnx_conformance/write_cases.py` writes the cases and their index into a cache
//! directory (`$EDGEC_ONNX_CASES`, default `target/onnx-node-cases`); this test writes it on
//! first use when Python's `onnx` is installed, and is skipped (saying so) otherwise. Each case
//! is imported (an import error counts as *unsupported*), run on its inputs, and compared with
//! onnx's expected outputs at the case's tolerances (rtol 1e-3, atol 1e-7 unless it says
//! otherwise); a wrong value, shape or a run-time error is a *failure*. It prints a
//! passed/failed/unsupported table per op, with the cases in issue 3's op and dtype lists
//! counted apart, and fails when a case listed in `tests/onnx_conformance/expected_pass.txt`
//! does not pass (`EDGEC_BLESS=1` rewrites the list).

#[path = "../../tests/onnx_conformance/harness.rs"]
mod harness;

use edgec_ir::interp::{Interpreter, Tensor};
use harness::{Outcome, Row};
use std::path::Path;

fn run_case(dir: &Path, row: &Row) -> Outcome {
    let case = match harness::load(dir) {
        Ok(c) => c,
        Err(e) => return Outcome::Unsupported(e),
    };
    let inputs: Vec<Tensor> = case.inputs.into_iter().map(|(_, t)| t).collect();
    let out = match Interpreter::new(&case.graph).and_then(|mut it| it.run(&inputs)) {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(format!("run: {e}")),
    };
    for (i, (got, want)) in out.iter().zip(&case.wants).enumerate() {
        if let Err(e) = harness::close(got, want, row.rtol, row.atol) {
            return Outcome::Failed(format!("output {i}: {e}"));
        }
    }
    Outcome::Passed
}

#[test]
fn onnx_node_tests() {
    harness::run_all("interpreter", "expected_pass.txt", run_case);
}

/// `frontend/src/onnx/versions.rs` is what `op_versions.py` writes from the installed onnx's
/// schemas (skipped without python3 and onnx, like the node tests).
#[test]
fn op_versions_table_is_current() {
    let root = harness::root();
    let out = std::process::Command::new("python3").arg(root.join("tests/onnx_conformance/op_versions.py")).output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        assert!(std::env::var_os("CI").is_none(), "python3 with onnx==1.23.2 is needed: run ./scripts/test");
        eprintln!("skipped: python3 -c 'import onnx' failed");
        return;
    };
    let want = String::from_utf8(out.stdout).unwrap();
    let have = std::fs::read_to_string(root.join("frontend/src/onnx/versions.rs")).unwrap();
    assert!(have == want, "frontend/src/onnx/versions.rs is stale: rerun tests/onnx_conformance/op_versions.py");
}

#[test]
fn extra_node_cases() {
    harness::run_extra("interpreter", run_case);
}
