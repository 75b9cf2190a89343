//! ONNX exports compiled to native code: the fixtures' torch.onnx graphs imported as general
//! graphs, compiled for the host (`NAME_run`), and their logits checked against PyTorch's.

mod common;

use edgec::graph_run::{GraphRunRequest, read_inputs, run_graph};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn fixtures_compiled_from_onnx_match_pytorch() {
    for name in ["llama", "llama3", "mistral", "phi", "phi3", "qwen2", "qwen3"] {
        let dir = fixture(name);
        let reference = read_inputs(&dir.join("reference.safetensors")).unwrap();
        let get = |n: &str| reference.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let ids = get("input_ids");
        let want = get("logits");
        let req = GraphRunRequest {
            model: dir.join("model.onnx"),
            max_seq: 32,
            threads: 2,
            target: None,
            linker: None,
            runner: None,
        };
        let outs = run_graph(&req, &[("input_ids".to_string(), ids)]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let (oname, got) = &outs[0];
        assert_eq!(got.shape, want.shape, "{name}: {oname}");
        let (g, w) = (got.as_f32().unwrap(), want.as_f32().unwrap());
        let d = g.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("{name}: compiled ONNX graph, output `{oname}` {:?}, max |logits - PyTorch| = {d:e}", got.shape);
        assert!(d <= 1e-3, "{name}: max diff {d}");
    }
}

#[test]
fn one_object_runs_any_length_and_refuses_bad_ids() {
    use edgec::graph_run::CompiledGraph;
    use edgec_ir::interp::Tensor;
    let dir = fixture("llama");
    let reference = read_inputs(&dir.join("reference.safetensors")).unwrap();
    let get = |n: &str| reference.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let (ids, want) = (get("input_ids"), get("logits"));
    let m = edgec_frontend::onnx::OnnxModel::open(&dir.join("model.onnx")).unwrap();
    let opts = edgec_frontend::onnx::ImportOptions { max_seq: 32, ..Default::default() };
    let mut g = edgec_frontend::onnx::import(&m, &opts).unwrap();
    g.name = "llama_onnx".into();
    let c = CompiledGraph::build(&g, None).unwrap();
    let vocab = want.shape[2];
    for len in [5usize, 1, 16] {
        let prefix = Tensor::i32(vec![1, len], ids.as_i32().unwrap()[..len].to_vec());
        let out = c.run(&g, &[("input_ids".into(), prefix)], 1).unwrap();
        let got = out[0].1.as_f32().unwrap();
        let d = got.iter().zip(&want.as_f32().unwrap()[..len * vocab]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(d <= 1e-3, "{len} tokens: max diff {d}");
    }
    // An id past the embedding table: the entry refuses it (STATUS_BAD_TOKEN_ID) and runs nothing.
    let bad = Tensor::i32(vec![1, 3], vec![1, 100_000, 2]);
    let e = c.run(&g, &[("input_ids".into(), bad)], 1).unwrap_err();
    assert!(e.to_string().contains("status 3"), "{e}");
    let neg = Tensor::i32(vec![1, 2], vec![-1, 2]);
    assert!(c.run(&g, &[("input_ids".into(), neg)], 1).is_err());
    // Too long for the symbol's bound.
    let long = Tensor::i32(vec![1, 33], vec![1; 33]);
    assert!(c.run(&g, &[("input_ids".into(), long)], 1).is_err());
}

#[test]
fn cli_runs_an_onnx_file_and_writes_outputs_by_name() {
    let dir = fixture("phi");
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("out.safetensors");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_edgec"))
        .args(["run", dir.join("model.onnx").to_str().unwrap(), "--input"])
        .arg(dir.join("reference.safetensors"))
        .arg("--output")
        .arg(&path)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(String::from_utf8_lossy(&st.stdout).contains("output logits: [1, 16, 400]"));
    let got = read_inputs(&path).unwrap();
    let want = read_inputs(&dir.join("reference.safetensors")).unwrap();
    let l = |v: &[(String, edgec_ir::interp::Tensor)]| v.iter().find(|(n, _)| n == "logits").unwrap().1.clone();
    let d = l(&got)
        .as_f32()
        .unwrap()
        .iter()
        .zip(l(&want).as_f32().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d <= 1e-3, "{d}");
}

#[test]
fn general_graph_header_declares_run_and_compiles_as_c() {
    let dir = fixture("llama");
    let m = edgec_frontend::onnx::OnnxModel::open(&dir.join("model.onnx")).unwrap();
    let opts = edgec_frontend::onnx::ImportOptions { max_seq: 32, ..Default::default() };
    let g = edgec_frontend::onnx::import(&m, &opts).unwrap();
    let plan = edgec_passes::plan::plan_memory(&g).unwrap();
    let layout = edgec_backend::layout_weights(&g, Default::default()).unwrap();
    let info = edgec_backend::model_info(&g, &plan, &layout, [0; 32]).unwrap();
    assert_eq!((info.vocab, info.max_tokens, info.max_context), (0, 32, 0));
    let copts = edgec_backend::CompileOptions::new(target_lexicon::Triple::host(), "lm");
    let h = edgec_backend::c_header(&g, &info, &copts);
    assert!(h.contains("int32_t lm_run(const edgec_context *ctx, const void *const *inputs"), "{h}");
    assert!(h.contains("inputs[0]  input_ids: i32[1, sequence]") && h.contains("dims[0]    sequence in 1..=32"), "{h}");
    assert!(!h.contains("lm_forward"));
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("lm.h"), &h).unwrap();
    let c = t.path().join("t.c");
    std::fs::write(&c, "#include \"lm.h\"\nint main(void){ edgec_run_fn f = lm_run; return f == 0; }\n").unwrap();
    let st = std::process::Command::new("cc").args(["-fsyntax-only", "-Wall", "-Werror"]).arg(&c).status().unwrap();
    assert!(st.success());
}

#[test]
fn aarch64_under_qemu_matches_pytorch() {
    common::require_aarch64_tools();
    for name in ["llama", "llama3", "mistral", "phi", "phi3", "qwen2", "qwen3"] {
        let dir = fixture(name);
        let reference = read_inputs(&dir.join("reference.safetensors")).unwrap();
        let get = |n: &str| reference.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let req = GraphRunRequest {
            model: dir.join("model.onnx"),
            max_seq: 32,
            threads: 1,
            target: Some("aarch64-unknown-linux-gnu".parse().unwrap()),
            linker: None,
            runner: None,
        };
        let outs =
            run_graph(&req, &[("input_ids".to_string(), get("input_ids"))]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let want = get("logits");
        let d = outs[0]
            .1
            .as_f32()
            .unwrap()
            .iter()
            .zip(want.as_f32().unwrap())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{name}: aarch64 (qemu) compiled ONNX graph, max |logits - PyTorch| = {d:e}");
        assert!(d <= 1e-3, "{name}: max diff {d}");
    }
}

#[test]
fn general_graph_objects_import_nothing_on_both_isas() {
    use object::{Object, ObjectSymbol};
    let dir = fixture("phi3");
    let m = edgec_frontend::onnx::OnnxModel::open(&dir.join("model.onnx")).unwrap();
    let opts = edgec_frontend::onnx::ImportOptions { max_seq: 32, ..Default::default() };
    let g = edgec_frontend::onnx::import(&m, &opts).unwrap();
    let plan = edgec_passes::plan::plan_memory(&g).unwrap();
    let layout = edgec_backend::layout_weights(&g, Default::default()).unwrap();
    let info = edgec_backend::model_info(&g, &plan, &layout, [0; 32]).unwrap();
    for triple in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let copts = edgec_backend::CompileOptions::new(triple.parse().unwrap(), "g");
        let obj = edgec_backend::emit_object(&g, &plan, &layout, &info, &copts).unwrap();
        let file = object::File::parse(&*obj).unwrap();
        let undefined: Vec<String> = file
            .symbols()
            .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
            .map(|s| s.name().unwrap().to_string())
            .collect();
        assert!(undefined.is_empty(), "{triple}: {undefined:?}");
        let names: Vec<&str> = file.symbols().filter_map(|s| s.name().ok()).collect();
        assert!(names.contains(&"g_run") && names.contains(&"g_info") && !names.contains(&"g_forward"), "{names:?}");
    }
}
