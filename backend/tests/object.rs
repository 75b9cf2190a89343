//! The object as a whole: entry-point status codes, no undefined symbols on either ISA,
//! determinism, kernel sharing, header, weights file, errors, and aarch64 under qemu.

mod common;
use common::*;
use edgec_backend::{BackendError, CompileOptions, c_header, emit_object, layout_weights, model_info};
use edgec_ir::{BinaryOp, DType, Op, Shape, TensorType, UnaryOp};
use edgec_runtime::abi::*;
use std::process::Command;

fn undefined_symbols(obj: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.o");
    std::fs::write(&p, obj).unwrap();
    let out = Command::new("nm").arg("-u").arg(&p).output().expect("running nm");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect()
}

fn defined_symbols(obj: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.o");
    std::fs::write(&p, obj).unwrap();
    let out = Command::new("nm").arg("--defined-only").arg(&p).output().expect("running nm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

/// Every op at once, so every kernel builder is in the object.
fn all_ops_graph() -> edgec_ir::Graph {
    let mut g = llama_graph(LlamaCfg::default(), 9);
    // Append the non-Llama ops on the way to a second logits-shaped value.
    let out = g.outputs.pop().unwrap().value;
    let mut b = GB {
        g,
        seq: edgec_ir::Dim::Const(0),
        ids: edgec_ir::ValueRef::Input(0),
        pos: edgec_ir::ValueRef::Input(1),
        rng: Rng::new(5),
    };
    let mut x = out;
    for u in UnaryOp::ALL.into_iter().filter(|u| !matches!(u, UnaryOp::Erf | UnaryOp::Log | UnaryOp::IsNan)) {
        let y = b.node(Op::Unary(u), vec![x]);
        x = b.node(Op::Binary(BinaryOp::Max), vec![x, y]);
    }
    let r = b.node(Op::Reduce(edgec_ir::ReduceOp::Mean), vec![x]);
    x = b.node(Op::Binary(BinaryOp::Sub), vec![x, r]);
    x = b.node(Op::Softmax, vec![x]);
    let w = b.weight("plain", &[50, 50], -0.2, 0.2);
    x = b.node(Op::MatMul { transpose_b: false }, vec![x, w]);
    b.finish(x)
}

#[test]
fn status_codes_and_nothing_written() {
    let m = compile(llama_graph(LlamaCfg::default(), 4));
    let mut s = m.session(0);
    let v = m.info.vocab as usize;
    let ctx = s.context();
    let ids = [1i32, 2, 3];
    let mut logits = vec![-7.0f32; 9 * v];
    let state_before = s.state.bytes().to_vec();
    let call = |ctx: *const Context, ids: *const i32, n: u32, pos: u32, l: *mut f32| m.forward_raw(ctx, ids, n, pos, l);
    let lp = logits.as_mut_ptr();
    assert_eq!(call(&ctx, ids.as_ptr(), 0, 0, lp), STATUS_BAD_TOKEN_COUNT);
    assert_eq!(call(&ctx, ids.as_ptr(), 9, 0, lp), STATUS_BAD_TOKEN_COUNT); // max_tokens = 8
    assert_eq!(call(&ctx, ids.as_ptr(), u32::MAX, 0, lp), STATUS_BAD_TOKEN_COUNT);
    assert_eq!(call(&ctx, ids.as_ptr(), 3, 14, lp), STATUS_CONTEXT_OVERFLOW); // max_context = 16
    assert_eq!(call(&ctx, ids.as_ptr(), 1, u32::MAX, lp), STATUS_CONTEXT_OVERFLOW); // no u32 wraparound
    assert_eq!(call(&ctx, [1, 50, 2].as_ptr(), 3, 0, lp), STATUS_BAD_TOKEN_ID);
    assert_eq!(call(&ctx, [1, 2, -1].as_ptr(), 3, 0, lp), STATUS_BAD_TOKEN_ID);
    assert_eq!(call(std::ptr::null(), ids.as_ptr(), 3, 0, lp), STATUS_NULL_ARGUMENT);
    assert_eq!(call(&ctx, std::ptr::null(), 3, 0, lp), STATUS_NULL_ARGUMENT);
    assert_eq!(call(&ctx, ids.as_ptr(), 3, 0, std::ptr::null_mut()), STATUS_NULL_ARGUMENT);
    assert!(logits.iter().all(|&x| x == -7.0), "a failed call wrote logits");
    assert_eq!(s.state.bytes(), &state_before[..], "a failed call wrote the state");
    // Edge cases that are fine: exactly max_tokens, exactly up to max_context.
    assert_eq!(call(&ctx, [1; 8].as_ptr(), 8, 8, lp), STATUS_OK);
    assert!(logits[..8 * v].iter().all(|x| x.is_finite()));
    assert!(logits[8 * v..].iter().all(|&x| x == -7.0), "wrote past n_tokens rows");
    assert_eq!(s.run(&[49], 16).unwrap_err(), STATUS_CONTEXT_OVERFLOW);
}

#[test]
fn no_undefined_symbols_both_isas() {
    let g = all_ops_graph();
    for triple in [x86(), arm64()] {
        let dir = tempfile::tempdir().unwrap();
        let (obj, _, _) = object_for(&g, "model", triple.clone(), dir.path());
        let u = undefined_symbols(&obj);
        assert!(u.is_empty(), "{triple}: undefined symbols {u:?}");
        let d = defined_symbols(&obj);
        assert!(d.iter().any(|s| s == "model_forward") && d.iter().any(|s| s == "model_info"), "{triple}: {d:?}");
    }
}

#[test]
fn emitting_twice_is_byte_identical() {
    let g = all_ops_graph();
    for triple in [x86(), arm64()] {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let (a, ia, _) = object_for(&g, "model", triple.clone(), d1.path());
        let (b, ib, _) = object_for(&g, "model", triple, d2.path());
        assert_eq!(ia, ib);
        assert!(a == b, "objects differ");
        let wa = std::fs::read(d1.path().join("model.weights")).unwrap();
        let wb = std::fs::read(d2.path().join("model.weights")).unwrap();
        assert!(wa == wb, "weights files differ");
    }
}

#[test]
fn all_ops_graph_runs() {
    let calls = vec![(vec![3, 17, 42, 0, 49], 0), (vec![7], 5), (vec![11, 12], 6)];
    check_against_reference(all_ops_graph(), &calls, 1e-4);
}

#[test]
fn layers_share_kernels() {
    let g = llama_graph(LlamaCfg { layers: 3, ..LlamaCfg::default() }, 4);
    let dir = tempfile::tempdir().unwrap();
    let (obj, _, _) = object_for(&g, "model", x86(), dir.path());
    let kernels: Vec<String> = defined_symbols(&obj).into_iter().filter(|s| s.starts_with("model_k")).collect();
    let (groups, nodes): (Vec<&String>, Vec<&String>) = kernels.iter().partition(|s| s.ends_with("_group"));
    // gather, rms_norm, q/o (32x32), k/v (16x32), rope q, rope k, cache_write, attention, add,
    // gate/up (43x32), silu, mul, down (32x43), lm_head (50x32): 14 whatever the layer count.
    assert_eq!(nodes.len(), 14, "{kernels:?}");
    // Dispatch groups of this unfused graph: gather + rms_norm, q/k/v, ropes + cache writes,
    // add + rms_norm (also after the last layer), gate/up, silu + mul.
    assert_eq!(groups.len(), 6, "{kernels:?}");
}

#[test]
fn weights_file_header_and_hash() {
    let g = llama_graph(LlamaCfg::default(), 4);
    let dir = tempfile::tempdir().unwrap();
    let (layout, hash, path) = weights_file(&g, dir.path());
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() as u64, layout.file_size);
    let h = WeightsHeader::from_bytes(bytes[..64].try_into().unwrap());
    assert_eq!(h.magic, WEIGHTS_MAGIC);
    assert_eq!(h.abi_version, ABI_VERSION);
    assert_eq!(h.header_size, 64);
    assert_eq!(h.content_hash, hash);
    assert_eq!(h.file_size, layout.file_size);
    for (w, &off) in g.weights.iter().zip(&layout.offsets) {
        assert_eq!(off % 64, 0);
        assert!(off >= 64);
        let data = edgec_ir::weights::materialize_f32(w).unwrap();
        let got: Vec<f32> = bytes[off as usize..off as usize + data.len() * 4]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, data, "weight {}", w.name);
    }
    // A different weight value changes the hash.
    let mut g2 = g.clone();
    if let edgec_ir::WeightSource::Literal(v) = &mut g2.weights[0].source {
        v[0] += 1.0;
    }
    let d2 = tempfile::tempdir().unwrap();
    let (_, hash2, _) = weights_file(&g2, d2.path());
    assert_ne!(hash, hash2);
}

#[test]
fn header_is_self_contained_c() {
    let g = llama_graph(LlamaCfg::default(), 4);
    let dir = tempfile::tempdir().unwrap();
    let (_, info, _) = object_for(&g, "tiny", x86(), dir.path());
    let opts = CompileOptions::new(x86(), "tiny");
    let h = c_header(&g, &info, &opts);
    assert!(h.contains("extern const edgec_model_info tiny_info;"));
    assert!(h.contains("int32_t tiny_forward(const edgec_context *ctx"));
    assert!(h.contains("vocab        50") && h.contains("max_context  16"));
    let p = dir.path().join("tiny.h");
    std::fs::write(&p, &h).unwrap();
    let c = dir.path().join("t.c");
    std::fs::write(&c, "#include \"tiny.h\"\n#include \"tiny.h\"\nint main(void){return tiny_info.vocab == 0;}\n")
        .unwrap();
    let st = Command::new("cc").args(["-fsyntax-only", "-Wall", "-Werror"]).arg(&c).status().unwrap();
    assert!(st.success());
}

fn err_of(g: &edgec_ir::Graph, triple: target_lexicon::Triple) -> BackendError {
    let plan = test_plan(g);
    let layout = layout_weights(g, Default::default()).unwrap();
    let info = match model_info(g, &plan, &layout, [0; 32]) {
        Ok(i) => i,
        Err(e) => return e,
    };
    emit_object(g, &plan, &layout, &info, &CompileOptions::new(triple, "m")).unwrap_err()
}

#[test]
fn clear_errors() {
    let g = llama_graph(LlamaCfg::default(), 4);
    let e = err_of(&g, "riscv64gc-unknown-linux-gnu".parse().unwrap()).to_string();
    assert!(
        e.contains("riscv64gc-unknown-linux-gnu")
            && e.contains("x86_64-unknown-linux-gnu")
            && e.contains("aarch64-unknown-linux-gnu"),
        "{e}"
    );

    // Not the decoder signature: a third input.
    let mut g2 = g.clone();
    g2.add_input("extra", TensorType::new(DType::F32, Shape::of(&[3])));
    let e = err_of(&g2, x86()).to_string();
    assert!(e.contains("decoder signature"), "{e}");

    // A kernel refusal names the node: gather indices that are not a (reshaped) graph input
    // (the entry point could not range-check them). Any numpy broadcast now has a kernel.
    let mut b = GB::new("bad", 4, 1);
    let t = b.weight("t", &[6, 6], -1.0, 1.0);
    let ids = b.ids;
    let seq = b.seq;
    let cut = b.node(Op::Slice { axis: 0, start: 0, len: seq }, vec![ids]);
    let x = b.node(Op::Gather, vec![t, cut]);
    let g4 = b.finish(x);
    let e = err_of(&g4, x86()).to_string();
    assert!(e.contains("%1 (gather)") && e.contains("indices"), "{e}");

    // Not a C identifier.
    let plan = test_plan(&g);
    let layout = layout_weights(&g, Default::default()).unwrap();
    let info = model_info(&g, &plan, &layout, [0; 32]).unwrap();
    let e = emit_object(&g, &plan, &layout, &info, &CompileOptions::new(x86(), "9-x")).unwrap_err();
    assert!(e.to_string().contains("9-x"), "{e}");
}

#[test]
fn aarch64_object_under_qemu_matches_x86() {
    if !(have("aarch64-linux-gnu-gcc") && have("qemu-aarch64")) {
        eprintln!("skipping: aarch64-linux-gnu-gcc or qemu-aarch64 not on PATH");
        return;
    }
    for (cfg, seed) in [
        (LlamaCfg::default(), 11u64),
        (
            LlamaCfg {
                heads: 6,
                kv_heads: 2,
                head_dim: 6,
                hidden: 30,
                rotary_dim: 4,
                window: Some(3),
                ..LlamaCfg::default()
            },
            12,
        ),
    ] {
        let g = llama_graph(cfg, seed);
        let calls: Vec<(Vec<i32>, u32)> = vec![(vec![3, 17, 42, 0, 49], 0), (vec![7], 5), (vec![11, 12, 13], 6)];
        let x86_logits = check_against_reference(g.clone(), &calls, 1e-4);

        let arm = run_aarch64(&g, &calls);
        let want: Vec<f32> = x86_logits.concat();
        assert_close(&arm, &want, 1e-4, "aarch64 vs x86_64");
    }
}
