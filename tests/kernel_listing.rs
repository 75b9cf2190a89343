//! An ONNX export compiles to the same kernels as the checkpoint it was exported from: the
//! `recognize` pass rewrites the export's primitives (and its full-sequence attention, via the
//! decoder signature) into the ops the checkpoint builder emits. `tests/golden/kernels/` holds
//! each fixture's listing, one kernel per line in schedule order, as the decode step runs it,
//! with the kernels launched together as one dispatch group in braces; `EDGEC_BLESS=1`
//! rewrites them.

use edgec::compile::{CompileRequest, build_graph};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kernel listing of a model compiled with the default passes, after checking its plan.
fn listing(model: &Path) -> String {
    let load = edgec_frontend::LoadOptions { max_context: 64, max_tokens: 16 };
    let req = CompileRequest {
        model: model.to_path_buf(),
        out_dir: PathBuf::new(),
        target: target_lexicon::Triple::host(),
        name: None,
        max_context: load.max_context,
        max_tokens: Some(load.max_tokens),
        opt_level: edgec_passes::OptLevel::O2,
        passes: None,
        print_after: Vec::new(),
        emit_ir: false,
        numerics: Default::default(),
    };
    let (g, _) =
        build_graph(&req, &load, &mut std::io::sink()).unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
    // The planned arena stays within 5% of its lower bound (the most bytes live at one step).
    let plan = edgec_passes::plan::plan_memory(&g).unwrap();
    assert!(
        plan.arena_size as f64 <= 1.05 * plan.lower_bound as f64,
        "{}: arena {} bytes, lower bound {}",
        model.display(),
        plan.arena_size,
        plan.lower_bound
    );
    edgec_passes::dispatch::listing(&g)
}

#[test]
fn onnx_exports_compile_to_the_checkpoints_kernels() {
    let mut failures = Vec::new();
    for name in ["llama", "llama3", "mistral", "phi", "phi3", "qwen2", "qwen3"] {
        let dir = root().join("tests/fixtures").join(name);
        let (checkpoint, onnx) = (listing(&dir), listing(&dir.join("model.onnx")));
        let goldens = [(
            format!("{name}.txt"),
            format!(
                "# {name}: kernels of one forward call, from the checkpoint and from model.onnx alike\n{checkpoint}"
            ),
        )];
        if onnx != checkpoint {
            failures.push(format!(
                "{name}: model.onnx compiles to other kernels\n--- checkpoint\n{checkpoint}--- onnx\n{onnx}"
            ));
        }
        // The export with `past_key_values` inputs, where there is one: its cache is the KV state.
        let with_past = dir.join("model-with-past.onnx");
        if with_past.exists() && listing(&with_past) != checkpoint {
            failures.push(format!("{name}: model-with-past.onnx compiles to other kernels"));
        }
        for (file, text) in goldens {
            let golden = root().join("tests/golden/kernels").join(file);
            if std::env::var_os("EDGEC_BLESS").is_some() {
                std::fs::write(&golden, &text).unwrap();
            } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(text.as_str()) {
                failures.push(format!("{}: listing differs (EDGEC_BLESS=1 rewrites it)\n{text}", golden.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
