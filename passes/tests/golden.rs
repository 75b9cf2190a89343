//! Golden tests: one readable file per case under `tests/golden/` at the workspace root.
//!
//! A case file is:
//! ```text
//! ; what the case shows, in prose
//! ; run: dce                 (passes, comma-separated, or `plan` for the memory plan)
//! graph g { ... }            (the input, in the IR text form)
//! ; output:
//! graph g { ... }            (the graph after the passes, or the plan's table)
//! ```
//! Each case also checks that every pass kept the interpreter's outputs unchanged.
//! `EDGEC_BLESS=1 cargo test -p edgec-passes --test golden` rewrites the expected outputs.

use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::{text, Graph};
use edgec_passes::plan::plan_memory;
use edgec_passes::PassManager;
use std::path::{Path, PathBuf};

const OUTPUT_MARKER: &str = "; output:";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

struct Case {
    head: String,
    input: String,
    run: Vec<String>,
    expected: String,
}

fn parse_case(path: &Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let (before, expected) = match text.split_once(&format!("\n{OUTPUT_MARKER}\n")) {
        Some((b, e)) => (b.to_string(), e.to_string()),
        None => (text.trim_end().to_string(), String::new()),
    };
    let split = before.lines().take_while(|l| l.starts_with(';')).map(|l| l.len() + 1).sum::<usize>();
    let head = before[..split].to_string();
    let input = before[split..].to_string() + "\n";
    let run = head
        .lines()
        .find_map(|l| l.strip_prefix("; run:"))
        .unwrap_or_else(|| panic!("{}: no '; run:' line", path.display()))
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    Case { head, input, run, expected }
}

/// Deterministic inputs for a graph: ids cycle through a small range, pos is 0.
fn sample_inputs(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|inp| {
            let shape: Vec<usize> = inp.ty.shape.0.iter().map(|&d| g.dim_max(d).min(4) as usize).collect();
            let n: usize = shape.iter().product();
            match inp.ty.dtype {
                edgec_ir::DType::I32 if shape.is_empty() => Tensor::i32(shape, vec![0]),
                edgec_ir::DType::I32 => Tensor::i32(shape, (0..n as i32).map(|i| i % 3).collect()),
                _ => Tensor::f32(shape, (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect()),
            }
        })
        .collect()
}

fn outputs(g: &Graph) -> Vec<Tensor> {
    let mut interp = Interpreter::new(g).expect("interpreter accepts the graph");
    interp.run(&sample_inputs(g)).expect("interpreter runs the graph")
}

fn run_case(path: &Path) -> Option<String> {
    let case = parse_case(path);
    let mut g = text::parse(&case.input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let actual = if case.run == ["plan"] {
        plan_memory(&g).unwrap().to_text(&g)
    } else {
        let before = outputs(&g);
        PassManager::from_names(&case.run).unwrap().verify_each(true).run(&mut g, &mut |_, _| {}).unwrap();
        assert_eq!(outputs(&g), before, "{}: the passes changed the graph's outputs", path.display());
        text::print(&g)
    };
    if actual == case.expected {
        return None;
    }
    if std::env::var_os("EDGEC_BLESS").is_some() {
        std::fs::write(path, format!("{}{}{OUTPUT_MARKER}\n{actual}", case.head, case.input)).unwrap();
        return None;
    }
    Some(format!("{}: output differs (EDGEC_BLESS=1 rewrites it)\n--- expected\n{}--- actual\n{actual}", path.display(), case.expected))
}

#[test]
fn golden_cases() {
    let mut files: Vec<PathBuf> = ["passes", "plan"]
        .iter()
        .flat_map(|d| std::fs::read_dir(golden_dir().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected golden cases under {}", golden_dir().display());
    let failures: Vec<String> = files.iter().filter_map(|p| run_case(p)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
