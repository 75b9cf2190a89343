//! End-to-end: a tiny 2-layer Llama through the x86_64 object vs the reference interpreter,
//! with prefill then decode (KV cache reuse), GQA, sliding windows, partial rotary.

mod common;
use common::*;

fn calls() -> Vec<(Vec<i32>, u32)> {
    vec![(vec![3, 17, 42, 0, 49], 0), (vec![7], 5), (vec![11, 12, 13], 6), (vec![1, 2, 3, 4, 5, 6, 7, 8], 8)]
}

#[test]
fn llama_prefill_then_decode_matches_interpreter() {
    check_against_reference(llama_graph(LlamaCfg::default(), 1), &calls(), 1e-4);
}

#[test]
fn llama_gqa_window_partial_rotary_matches_interpreter() {
    let cfg = LlamaCfg {
        heads: 6,
        kv_heads: 2,
        head_dim: 6,
        hidden: 30,
        rotary_dim: 4,
        window: Some(3),
        ..LlamaCfg::default()
    };
    check_against_reference(llama_graph(cfg, 2), &calls(), 1e-4);
}

#[test]
fn llama_mha_single_head_odd_sizes() {
    let cfg = LlamaCfg {
        heads: 1,
        kv_heads: 1,
        head_dim: 13,
        hidden: 13,
        rotary_dim: 10,
        intermediate: 29,
        vocab: 37,
        layers: 1,
        ..LlamaCfg::default()
    };
    let calls = vec![(vec![3, 17, 36], 0), (vec![7], 3), (vec![5, 5, 5, 5, 5, 5, 5, 5], 4)];
    check_against_reference(llama_graph(cfg, 3), &calls, 1e-4);
}
