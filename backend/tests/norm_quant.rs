//! Norms that quantize their rows for the int8-activation matmuls reading them
//! (`norm_quant.rs`): the fused kernels give the same bits as the unfused ones (the norm
//! writing f32 rows, every matmul task quantizing them), on x86_64 in every CPU variant this
//! machine runs, and on aarch64 under qemu. The fusion must really happen (the fused object has
//! the `*_i8` norm kernels, the unfused one none), and a norm with a reader that is not an
//! int8 matmul stays f32.

mod common;
use common::*;
use edgec_ir::{Op, Storage, ValueRef};

/// Whether the object has a kernel symbol containing `needle`.
fn has_kernel(object: &[u8], needle: &str) -> bool {
    object.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A two-layer Llama with every matmul weight (and the LM head) stored as `st`.
fn llama(st: Storage, seed: u64) -> edgec_ir::Graph {
    let cfg = LlamaCfg {
        vocab: 64,
        hidden: 64,
        intermediate: 128,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        rotary_dim: 16,
        ..Default::default()
    };
    let mut g = llama_graph(cfg, seed);
    for w in &mut g.weights {
        let matmul = ["wq", "wk", "wv", "wo", "wg", "wu", "wd"].iter().any(|m| w.name.ends_with(m));
        if matmul || w.name == "lm_head" {
            w.transforms.push(edgec_ir::Transform::Quantize(st));
        }
    }
    g
}

/// `ids → gather → layer_norm → linear (w stored as st, bias) → logits`.
fn layer_norm_graph(st: Storage, seed: u64) -> edgec_ir::Graph {
    let (h, v) = (96u64, 40u64);
    let mut b = GB::new("ln", 8, seed);
    let table = b.weight("table", &[v, h], -2.0, 3.0);
    let lw = b.weight("ln.w", &[h], 0.5, 1.5);
    let lb = b.weight("ln.b", &[h], -0.5, 0.5);
    let w = b.weight("w", &[v, h], -0.3, 0.3);
    quantize(&mut b, w, st);
    let bias = b.weight("bias", &[v], -0.1, 0.1);
    let ids = b.ids;
    let x = b.node(Op::Gather, vec![table, ids]);
    let xn = b.node(Op::LayerNorm { eps: 1e-5 }, vec![x, lw, lb]);
    let lin = Op::Linear { scale: None, act: None, gated: false, bias: true, residual: false };
    let y = b.node(lin, vec![xn, w, bias]);
    b.finish(y)
}

fn unfused(o: &mut edgec_backend::CompileOptions) {
    o.quantize_in_norms = false;
}

/// Runs `g` fused and unfused on x86_64 (baseline and each VNNI variant the CPU has) and
/// asserts equal bits; returns whether the fused object has a fused norm kernel.
fn same_bits_x86(g: &edgec_ir::Graph, vocab: i32, what: &str) -> bool {
    let fused = compile(g.clone());
    let plain = compile_with(g.clone(), unfused);
    assert!(!has_kernel(&plain.object, "norm_i8"), "{what}: the unfused object has fused norms");
    let variants: Vec<&[u8]> = [&b"model_forward"[..], b"model_forward_avxvnni", b"model_forward_avx512vnni"]
        .into_iter()
        .filter(|s| match *s {
            b"model_forward_avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
            b"model_forward_avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            _ => true,
        })
        .collect();
    for sym in variants {
        let (f, p) = (fused.entry(sym).unwrap(), plain.entry(sym).unwrap());
        let (mut sf, mut sp) = (fused.session(3), plain.session(0));
        for (ids, pos) in tile_calls(vocab) {
            let a = sf.run_entry(f, &ids, pos).unwrap();
            let b = sp.run_entry(p, &ids, pos).unwrap();
            assert!(a.iter().all(|x| x.is_finite()), "{what}: non-finite logits");
            let diff = a.iter().zip(&b).position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(diff.is_none(), "{what} {}: logit {diff:?} differs", String::from_utf8_lossy(sym));
        }
    }
    has_kernel(&fused.object, "norm_i8")
}

#[test]
fn fused_rms_norms_give_the_unfused_bits() {
    for (i, st) in [Storage::Q8C, Storage::Q4G { group: 32, min: false }, Storage::Q4G { group: 64, min: true }]
        .into_iter()
        .enumerate()
    {
        let g = llama(st, 40 + i as u64);
        assert!(same_bits_x86(&g, 64, &st.name()), "{}: no fused norm kernel", st.name());
    }
}

#[test]
fn fused_layer_norm_gives_the_unfused_bits() {
    for st in [Storage::Q8G { group: 32 }, Storage::Q4G { group: 32, min: true }] {
        let g = layer_norm_graph(st, 9);
        assert!(same_bits_x86(&g, 40, &st.name()), "{}: no fused layer norm", st.name());
    }
}

#[test]
fn fused_norms_on_aarch64_give_the_unfused_bits() {
    if !have("qemu-aarch64") || !have("aarch64-linux-gnu-gcc") {
        eprintln!("no qemu-aarch64 / aarch64-linux-gnu-gcc; not run");
        return;
    }
    for st in [Storage::Q8C, Storage::Q4G { group: 32, min: true }] {
        let g = llama(st, 77);
        let calls = tile_calls(64);
        let (a, _) = run_aarch64_with(&g, &calls, |_| {});
        let (b, _) = run_aarch64_with(&g, &calls, unfused);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{}: aarch64 fused vs unfused", st.name());
    }
}

/// A norm that something other than an int8 matmul reads (here the logits' matmul is f32)
/// keeps writing f32 rows; the norms before int8 matmuls still fuse.
#[test]
fn only_norms_read_by_int8_matmuls_fuse() {
    let mut g = llama(Storage::Q8C, 5);
    let head = g.weights.iter().position(|w| w.name == "lm_head").unwrap();
    g.weights[head].transforms.pop();
    let layout = edgec_backend::layout_weights(&g, Default::default()).unwrap();
    let fused = edgec_backend::quantized_norms(&g, &layout.packed);
    let norms: Vec<usize> = (0..g.nodes.len()).filter(|&i| matches!(g.nodes[i].op, Op::RmsNorm { .. })).collect();
    let last = *norms.last().unwrap();
    assert!(!fused[last], "the final norm feeds an f32 matmul");
    assert!(norms[..norms.len() - 1].iter().all(|&i| fused[i]), "layer norms feed int8 matmuls");
    assert!(g.nodes[last + 1].args[0] == ValueRef::Node(last as u32));
    assert!(same_bits_x86(&g, 64, "f32 head"));
}
