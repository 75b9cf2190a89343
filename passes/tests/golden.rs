//! Golden tests: one readable file per case under `tests/golden/` at the workspace root.
//!
//! A case file is:
//! ```text
//! ; what the case shows, in prose
//! ; run: dce                 (passes, comma-separated; a last `plan [STRATEGY..] [no-in-place]
//!                             [no-groups]` prints the memory plan after them)
//! ; tolerance: 1e-5           (optional: the passes may change outputs by this much relative to
//!                             their largest magnitude, e.g. a recognised norm; default exact)
//! graph g { ... }            (the input, in the IR text form)
//! ; output:
//! graph g { ... }            (the graph after the passes, then the plan's table)
//! ```
//! Each case also checks that every pass kept the interpreter's outputs unchanged.
//! `EDGEC_BLESS=1 cargo test -p edgec-passes --test golden` rewrites the expected outputs.

use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::{Graph, text};
use edgec_passes::PassManager;
use edgec_passes::plan::{PlanOptions, Strategy, plan_memory_with};
use std::path::{Path, PathBuf};

const OUTPUT_MARKER: &str = "; output:";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

struct Case {
    head: String,
    input: String,
    run: Vec<String>,
    tolerance: f32,
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
    let tolerance = head
        .lines()
        .find_map(|l| l.strip_prefix("; tolerance:"))
        .map_or(0.0, |t| t.trim().parse().unwrap_or_else(|_| panic!("{}: bad tolerance '{t}'", path.display())));
    Case { head, input, run, tolerance, expected }
}

/// Deterministic inputs for a graph: ids cycle through a small range, pos is 0.
fn sample_inputs(g: &Graph) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|inp| {
            let shape: Vec<usize> = inp
                .ty
                .shape
                .0
                .iter()
                .map(|&d| match d {
                    edgec_ir::Dim::Const(n) => n as usize,
                    edgec_ir::Dim::Sym(_) => g.dim_max(d).min(4) as usize,
                })
                .collect();
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

/// `plan` tries every strategy with in-place reuse; `plan greedy-by-breadth no-in-place` only
/// the named strategies, without in-place reuse.
fn plan_options(spec: &str) -> PlanOptions {
    let mut opts = PlanOptions::default();
    let words: Vec<&str> = spec.split_whitespace().skip(1).collect();
    let named: Vec<Strategy> = words.iter().filter_map(|w| Strategy::from_name(w)).collect();
    if !named.is_empty() {
        opts.strategies = named;
    }
    for w in words {
        match w {
            "no-in-place" => opts.in_place = false,
            "no-groups" => opts.dispatch_groups = false,
            _ => assert!(Strategy::from_name(w).is_some(), "unknown plan option '{w}'"),
        }
    }
    opts
}

fn run_case(path: &Path) -> Option<String> {
    let case = parse_case(path);
    let mut g = text::parse(&case.input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // A trailing `plan [STRATEGY...] [no-in-place]` plans memory after the passes.
    let (passes, plan) = match case.run.split_last() {
        Some((last, rest)) if last.split_whitespace().next() == Some("plan") => (rest, Some(plan_options(last))),
        _ => (&case.run[..], None),
    };
    let mut actual = String::new();
    if !passes.is_empty() {
        let before = outputs(&g);
        PassManager::from_names(passes).unwrap().verify_each(true).run(&mut g, &mut |_, _| {}).unwrap();
        let after = outputs(&g);
        if case.tolerance == 0.0 {
            assert_eq!(after, before, "{}: the passes changed the graph's outputs", path.display());
        } else {
            for (a, b) in after.iter().zip(&before) {
                let (a, b) = (a.as_f32().expect("f32 outputs"), b.as_f32().expect("f32 outputs"));
                let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
                let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    a.len() == b.len() && diff <= case.tolerance * scale,
                    "{}: outputs moved by {diff} (tolerance {} of {scale})",
                    path.display(),
                    case.tolerance
                );
            }
        }
        actual += &text::print(&g);
    }
    if let Some(opts) = plan {
        actual += &plan_memory_with(&g, &opts).unwrap().to_text(&g);
    }
    if actual == case.expected {
        return None;
    }
    if std::env::var_os("EDGEC_BLESS").is_some() {
        std::fs::write(path, format!("{}{}{OUTPUT_MARKER}\n{actual}", case.head, case.input)).unwrap();
        return None;
    }
    Some(format!(
        "{}: output differs (EDGEC_BLESS=1 rewrites it)\n--- expected\n{}--- actual\n{actual}",
        path.display(),
        case.expected
    ))
}

#[test]
fn golden_cases() {
    let mut files: Vec<PathBuf> = ["fuse", "passes", "plan", "recognize"]
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
