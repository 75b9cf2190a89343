//! Shared by `frontend/tests/onnx_conformance.rs` (interpreter) and
//! `tests/onnx_conformance_compiled.rs` (compiled), included with `#[path]`.
//!
//! `write_cases.py` writes all 1884 node cases of onnx 1.23.2 and `index.tsv` (name, tested op,
//! in-list flag, opset, rtol, atol, written, note) into `$EDGEC_ONNX_CASES` (default
//! `target/onnx-node-cases`). A case loads as an imported graph plus its inputs and expected
//! outputs. Inputs an op needs at compile time (axes, shapes, split sizes, pads fed as graph
//! inputs) are bound to the case's values, as `ImportOptions::constants` documents: the model
//! is specialized to them, which an ahead-of-time compiler has to do.

#![allow(dead_code)]

use edgec_frontend::onnx::fold::{self, Data, Dense};
use edgec_frontend::onnx::proto::{DataType, TensorProto};
use edgec_frontend::onnx::{ImportOptions, OnnxModel, import};
use edgec_ir::interp::Tensor;
use edgec_ir::{DType, Graph};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bumped when `write_cases.py`'s output changes, so a stale cache is rewritten.
const CASES_VERSION: &str = "3";

pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("tests/onnx_conformance").exists() { here.to_path_buf() } else { here.join("..") }
}

pub fn cases_dir() -> PathBuf {
    std::env::var_os("EDGEC_ONNX_CASES").map(PathBuf::from).unwrap_or_else(|| root().join("target/onnx-node-cases"))
}

/// Writes the cases if the directory is missing or stale; false if that is not possible here.
/// Tests of one binary run in parallel: the first writes, the others wait for it.
pub fn ensure_cases(dir: &Path) -> bool {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    if std::fs::read_to_string(dir.join(".complete")).is_ok_and(|v| v == CASES_VERSION) {
        return true;
    }
    let script = root().join("tests/onnx_conformance/write_cases.py");
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
    std::fs::rename(&tmp, dir).is_ok() && std::fs::write(dir.join(".complete"), CASES_VERSION).is_ok()
}

/// One line of `index.tsv`.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub op: String,
    pub in_list: bool,
    pub opset: i64,
    pub rtol: f32,
    pub atol: f32,
    pub written: bool,
    pub note: String,
}

pub fn read_index(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("index.tsv")).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                name: f[0].into(),
                op: f[1].into(),
                in_list: f[2] == "1",
                opset: f[3].parse().unwrap(),
                rtol: f[4].parse().unwrap(),
                atol: f[5].parse().unwrap(),
                written: f[6] == "1",
                note: f.get(7).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

pub fn read_pb(path: &Path) -> Result<Dense, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = TensorProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let dtype = DataType::try_from(t.data_type).map_err(|_| "unknown dtype".to_string())?;
    fold::decode(dtype, &t.dims, &t.raw_data)
}

#[derive(Debug)]
pub enum Outcome {
    Passed,
    Failed(String),
    Unsupported(String),
}

/// An imported case: the graph, its run-time inputs by IR name, the expected outputs.
pub struct Case {
    pub graph: Graph,
    pub inputs: Vec<(String, Tensor)>,
    pub wants: Vec<Dense>,
    /// ONNX inputs bound at compile time.
    pub bound: Vec<String>,
}

/// The ONNX input an import error says must be known at compile time, if any.
fn needs_constant(message: &str, inputs: &[String], bound: &[(String, Dense)]) -> Option<String> {
    inputs
        .iter()
        .find(|i| {
            !bound.iter().any(|(b, _)| b == *i)
                && (message.contains(&format!("'{i}' must be a constant"))
                    || message.contains(&format!("'{i}' must be known at compile time")))
        })
        .cloned()
}

/// Imports the case, binding the inputs the importer needs at compile time, and reads its data.
pub fn load(dir: &Path) -> Result<Case, String> {
    let m = OnnxModel::open(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let data = dir.join("test_data_set_0");
    let inits: BTreeSet<&str> = m.graph().initializer.iter().map(|t| t.name.as_str()).collect();
    let names: Vec<String> =
        m.graph().input.iter().filter(|i| !inits.contains(i.name.as_str())).map(|i| i.name.clone()).collect();
    let values: Vec<Dense> = (0..names.len())
        .map(|i| read_pb(&data.join(format!("input_{i}.pb"))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("input: {e}"))?;
    let mut opts = ImportOptions { max_seq: 64, ..ImportOptions::default() };
    let g = loop {
        match import(&m, &opts) {
            Ok(g) => break g,
            Err(e) => {
                let msg = e.to_string();
                let Some(name) = needs_constant(&msg, &names, &opts.constants) else { return Err(msg) };
                let k = names.iter().position(|n| *n == name).unwrap_or_default();
                opts.constants.push((name, values[k].clone()));
            }
        }
    };
    let mut inputs = Vec::new();
    let free = names.iter().zip(&values).filter(|(n, _)| !opts.constants.iter().any(|(b, _)| b == *n));
    for ((_, t), input) in free.zip(&g.inputs) {
        inputs.push((input.name.clone(), to_tensor(input.ty.dtype, t)?));
    }
    let wants = (0..g.outputs.len())
        .map(|i| read_pb(&data.join(format!("output_{i}.pb"))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("output: {e}"))?;
    Ok(Case { graph: g, inputs, wants, bound: opts.constants.into_iter().map(|(n, _)| n).collect() })
}

/// A test input as the IR value it feeds: i64/i32 narrowed to i32 (refused if out of range),
/// bools as 0/1 in the input's dtype, floats as f32.
fn to_tensor(dtype: DType, t: &Dense) -> Result<Tensor, String> {
    match (dtype, &t.data) {
        (DType::I32, Data::F(_)) => Err("a float tensor fed to an integer input".into()),
        (DType::I32, _) => {
            let v = t.as_i64()?;
            let n: Result<Vec<i32>, _> = v.iter().map(|&x| i32::try_from(x)).collect();
            Ok(Tensor::i32(t.shape.clone(), n.map_err(|_| "an i64 input outside the i32 range")?))
        }
        _ => Ok(Tensor::f32(t.shape.clone(), t.as_f32())),
    }
}

/// ONNX's comparison (`numpy.testing.assert_allclose`): |got - want| <= atol + rtol |want|,
/// NaN equal to NaN, infinities equal to themselves.
pub fn close(got: &Tensor, want: &Dense, rtol: f32, atol: f32) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    let got: Vec<f64> = match (got.as_f32(), got.as_i32()) {
        (Some(v), _) => v.iter().map(|&x| f64::from(x)).collect(),
        (_, Some(v)) => v.iter().map(|&x| f64::from(x)).collect(),
        _ => return Err("an output of an unknown dtype".into()),
    };
    let want: Vec<f64> = match &want.data {
        Data::I(v) => v.iter().map(|&x| x as f64).collect(),
        _ => want.as_f32().iter().map(|&x| f64::from(x)).collect(),
    };
    for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= f64::from(atol) + f64::from(rtol) * b.abs();
        if !ok {
            return Err(format!("[{j}] = {a}, expected {b}"));
        }
    }
    Ok(())
}

/// An error without file and node names, so equal causes count together.
pub fn reason(message: &str) -> String {
    if message.contains("edgec follows opsets") {
        return "opset outside the supported range".into();
    }
    if let Some((_, ops)) = message.split_once("use ops edgec does not support at opset") {
        let kinds = ops.split_once('(').and_then(|(_, k)| k.split_once(')')).map_or(ops, |(k, _)| k);
        return format!("unsupported ops: {kinds}");
    }
    let tail = message.rsplit("): ").next().unwrap_or(message);
    let tail = tail.split('[').next().unwrap_or(tail);
    tail.chars().take(90).collect()
}

/// Counts per op: passed, failed, unsupported, and the same for in-list cases.
#[derive(Default)]
pub struct Table {
    rows: BTreeMap<String, [usize; 6]>,
    reasons: BTreeMap<(bool, String), usize>,
    pub failures: Vec<String>,
    /// Failures listed in `known_failures.txt`.
    pub known: Vec<String>,
    pub passed: BTreeSet<String>,
}

/// The reason `known_failures.txt` gives for a case, if it lists it.
fn known_failure(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(root().join("tests/onnx_conformance/known_failures.txt")).ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.split_once(char::is_whitespace).filter(|(n, _)| *n == name).map(|(_, r)| r.trim().to_string()))
}

impl Table {
    pub fn record(&mut self, row: &Row, outcome: Outcome) {
        let r = self.rows.entry(row.op.clone()).or_default();
        let k = match outcome {
            Outcome::Passed => {
                self.passed.insert(row.name.clone());
                0
            }
            Outcome::Failed(m) => {
                if known_failure(&row.name).is_some() {
                    self.known.push(format!("{}: {m}", row.name));
                } else {
                    self.failures.push(format!("{}: {m}", row.name));
                }
                1
            }
            Outcome::Unsupported(m) => {
                // EDGEC_ONNX_VERBOSE=1: why each in-list case is unsupported.
                if row.in_list && std::env::var_os("EDGEC_ONNX_VERBOSE").is_some() {
                    println!("UNSUPPORTED {}: {m}", row.name);
                }
                *self.reasons.entry((row.in_list, reason(&m))).or_default() += 1;
                2
            }
        };
        r[k] += 1;
        if row.in_list {
            r[3 + k] += 1;
        }
    }

    /// The per-op table, the totals, the in-list pass rate and the commonest reasons.
    pub fn print(&self, what: &str) {
        println!(
            "{:<24} {:>6} {:>6} {:>6} | {:>8} {:>8} {:>8}",
            "op", "passed", "failed", "unsupp", "in-list", "passed", "unsupp"
        );
        let mut t = [0usize; 6];
        for (op, r) in &self.rows {
            let inl = r[3] + r[4] + r[5];
            println!("{op:<24} {:>6} {:>6} {:>6} | {inl:>8} {:>8} {:>8}", r[0], r[1], r[2], r[3], r[5]);
            for (a, b) in t.iter_mut().zip(r) {
                *a += b;
            }
        }
        let all = t[0] + t[1] + t[2];
        let inl = t[3] + t[4] + t[5];
        println!("{:<24} {:>6} {:>6} {:>6} | {inl:>8} {:>8} {:>8}", "total", t[0], t[1], t[2], t[3], t[5]);
        println!(
            "{what}: {} of {all} node cases pass ({} failed, {} unsupported); in the issue's lists: {} of {inl} ({:.1}%)",
            t[0],
            t[1],
            t[2],
            t[3],
            100.0 * t[3] as f64 / inl.max(1) as f64
        );
        for in_list in [true, false] {
            let mut rs: Vec<(usize, &str)> =
                self.reasons.iter().filter(|((l, _), _)| *l == in_list).map(|((_, r), &n)| (n, r.as_str())).collect();
            rs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            println!("commonest reasons, {} cases:", if in_list { "in-list" } else { "other" });
            for (n, r) in rs.iter().take(if in_list { 40 } else { 15 }) {
                println!("{n:>5}  {r}");
            }
        }
        for f in &self.known {
            println!("FAILED (known, known_failures.txt) {f}");
        }
        for f in &self.failures {
            println!("FAILED {f}");
        }
    }

    /// Checks the passes against the checked-in list (`EDGEC_BLESS=1` rewrites it): a listed
    /// case that does not pass is a regression.
    pub fn check_expected(&self, file: &str) -> Vec<String> {
        let path = root().join("tests/onnx_conformance").join(file);
        if std::env::var_os("EDGEC_BLESS").is_some() {
            let mut text: String = self.passed.iter().map(|n| format!("{n}\n")).collect();
            if text.is_empty() {
                text.push('\n');
            }
            std::fs::write(&path, text).unwrap();
            return Vec::new();
        }
        let listed: BTreeSet<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let new = self.passed.difference(&listed).count();
        if new > 0 {
            println!("{new} cases pass that {file} does not list (EDGEC_BLESS=1 records them)");
        }
        listed.difference(&self.passed).map(|n| format!("{n}: listed in {file} but does not pass")).collect()
    }
}

/// Runs every case through `run_case` (a panic counts as a failure; a case the writer could not
/// write is unsupported), prints the table under `what`, and fails on a wrong result or on a
/// case of `expected` (a list in this directory) that no longer passes. Skipped, saying so,
/// without python3 and onnx, except under CI.
pub fn run_all(what: &str, expected: &str, run_case: impl Fn(&Path, &Row) -> Outcome) {
    let dir = cases_dir();
    if !ensure_cases(&dir) {
        // The test command installs onnx, so under CI a missing package is a failure.
        assert!(std::env::var_os("CI").is_none(), "python3 with onnx==1.23.2 is needed: run ./scripts/test");
        eprintln!("skipped: no ONNX node cases in {} and python3 -c 'import onnx' failed", dir.display());
        return;
    }
    let mut table = Table::default();
    for row in read_index(&dir) {
        let outcome = if row.written {
            let case = dir.join(&row.name);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&case, &row)))
                .unwrap_or_else(|_| Outcome::Failed("panicked".into()))
        } else {
            Outcome::Unsupported(row.note.clone())
        };
        table.record(&row, outcome);
    }
    table.print(what);
    let regressions = table.check_expected(expected);
    assert!(
        table.failures.is_empty(),
        "{what}: {} node cases give wrong results:\n{}",
        table.failures.len(),
        table.failures.join("\n")
    );
    assert!(regressions.is_empty(), "{what}: {} node cases regressed:\n{}", regressions.len(), regressions.join("\n"));
}

/// Runs the cases of `tests/onnx_cases/` (ops or attributes onnx's node tests leave out, in
/// their layout, expected outputs from onnx's reference implementation: `make_cases.py`)
/// through `run_case`; every one must pass.
pub fn run_extra(what: &str, run_case: impl Fn(&Path, &Row) -> Outcome) {
    let dir = root().join("tests/onnx_cases");
    let mut failures = Vec::new();
    for row in read_index(&dir) {
        match run_case(&dir.join(&row.name), &row) {
            Outcome::Passed => eprintln!("{what}: {} passed", row.name),
            other => failures.push(format!("{}: {other:?}", row.name)),
        }
    }
    assert!(failures.is_empty(), "{what}: {}", failures.join("\n"));
}
