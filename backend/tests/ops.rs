//! One small decoder-signature graph per op, x86_64 object vs the reference interpreter.

mod common;
use common::*;
use edgec_ir::{BinaryOp, Dim, Op, ReduceOp, Shape, UnaryOp, ValueRef};

const MT: u64 = 7;

fn calls(vocab: i32) -> Vec<(Vec<i32>, u32)> {
    let m = |v: &[i32]| v.iter().map(|&i| i % vocab).collect::<Vec<_>>();
    vec![(m(&[0, vocab - 1, 2, 3, 1, 4, 2]), 0), (m(&[5]), 7), (m(&[1, 2]), 8)]
}

/// `ids → gather(table[V,H]) → f(x) → matmul(·, head[V, width]ᵀ) → logits`, or `f` directly as
/// the output when it is already `[seq, V]`.
fn run_op(v: u64, h: u64, lo: f32, hi: f32, seed: u64, f: impl FnOnce(&mut GB, ValueRef) -> ValueRef) {
    let mut b = GB::new("op", MT, seed);
    let table = b.weight("table", &[v, h], lo, hi);
    let (ids, _) = (b.ids, b.pos);
    let x = b.node(Op::Gather, vec![table, ids]);
    let y = f(&mut b, x);
    let ty = b.g.type_of(y).clone();
    let out = if ty.shape.dims().last().and_then(|d| d.as_const()) == Some(v) {
        y
    } else {
        let w = ty.shape.dims().last().unwrap().as_const().unwrap();
        let head = b.weight("head", &[v, w], -0.5, 0.5);
        b.node(Op::MatMul { transpose_b: true }, vec![y, head])
    };
    let g = b.finish(out);
    check_against_reference(g, &calls(v as i32), 1e-4);
}

#[test]
fn gather_copies_rows_odd_width() {
    run_op(11, 11, -2.0, 2.0, 1, |_, x| x);
    run_op(9, 4, -2.0, 2.0, 2, |_, x| x);
}

#[test]
fn matmul_transposed_k_not_multiple_of_4() {
    for (k, n, seed) in [(172u64, 13u64, 3u64), (5, 9, 4), (3, 16, 5), (8, 1, 6), (1, 33, 7)] {
        run_op(n.max(2), k, -1.0, 1.0, seed, |b, x| {
            let w = b.weight("w", &[n, k], -1.0, 1.0);
            b.node(Op::MatMul { transpose_b: true }, vec![x, w])
        });
    }
}

#[test]
fn matmul_plain_layout() {
    for (k, n, seed) in [(7u64, 13u64, 8u64), (4, 8, 9), (9, 3, 10)] {
        run_op(n.max(2), k, -1.0, 1.0, seed, |b, x| {
            let w = b.weight("w", &[k, n], -1.0, 1.0);
            b.node(Op::MatMul { transpose_b: false }, vec![x, w])
        });
    }
}

#[test]
fn unary_ops() {
    for (i, op) in UnaryOp::ALL.into_iter().enumerate() {
        // Positive inputs keep sqrt/rsqrt/recip finite; exp/silu/sigmoid get a wide range.
        let (lo, hi) = match op {
            UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip | UnaryOp::Log => (0.1, 4.0),
            _ => (-12.0, 12.0),
        };
        for h in [13u64, 8, 1] {
            run_op(13, h, lo, hi, 20 + i as u64, |b, x| b.node(Op::Unary(op), vec![x]));
        }
    }
}

#[test]
fn binary_ops_all_broadcasts() {
    for (i, op) in BinaryOp::ALL.into_iter().enumerate() {
        let seed = 40 + i as u64;
        // equal shapes
        run_op(10, 10, 0.5, 2.0, seed, |b, x| {
            let y = b.node(Op::Unary(UnaryOp::Sqrt), vec![x]);
            b.node(Op::Binary(op), vec![x, y])
        });
        // rhs row [H] broadcast along seq, and lhs row
        run_op(10, 7, 0.5, 2.0, seed, |b, x| {
            let w = b.weight("row", &[7], 0.5, 2.0);
            b.node(Op::Binary(op), vec![x, w])
        });
        run_op(10, 7, 0.5, 2.0, seed, |b, x| {
            let w = b.weight("row", &[1, 7], 0.5, 2.0);
            b.node(Op::Binary(op), vec![w, x])
        });
        // column [S,1]
        run_op(10, 9, 0.5, 2.0, seed, |b, x| {
            let c = b.node(Op::Reduce(ReduceOp::Mean), vec![x]);
            b.node(Op::Binary(op), vec![x, c])
        });
        run_op(10, 9, 0.5, 2.0, seed, |b, x| {
            let c = b.node(Op::Reduce(ReduceOp::Max), vec![x]);
            b.node(Op::Binary(op), vec![c, x])
        });
        // scalar
        run_op(10, 5, 0.5, 2.0, seed, |b, x| {
            let s = b.weight_data("s", &[], vec![1.75]);
            b.node(Op::Binary(op), vec![x, s])
        });
    }
}

#[test]
fn softmax_last_axis() {
    for h in [10u64, 3, 16] {
        run_op(10, h, -8.0, 8.0, 60 + h, |b, x| b.node(Op::Softmax, vec![x]));
    }
}

#[test]
fn reductions_last_axis() {
    for (i, op) in ReduceOp::ALL.into_iter().enumerate() {
        for h in [10u64, 1, 12] {
            run_op(10, h, -3.0, 3.0, 70 + i as u64, |b, x| {
                let r = b.node(Op::Reduce(op), vec![x]);
                // [S,1] back to [S,H] so the output keeps the logits shape.
                b.node(Op::Binary(BinaryOp::Add), vec![x, r])
            });
        }
    }
}

#[test]
fn rms_norm_odd_width() {
    for h in [10u64, 13, 1, 64] {
        run_op(10, h, -3.0, 3.0, 80 + h, |b, x| {
            let w = b.weight("norm", &[h], 0.5, 1.5);
            b.node(Op::RmsNorm { eps: 1e-6, group: None }, vec![x, w])
        });
    }
}

#[test]
fn rms_norm_in_groups() {
    // Qwen3's per-head norm: groups of head_dim features, one weight shared by all groups.
    for (h, group) in [(12u64, 3u32), (48, 24), (10, 5), (7, 7), (26, 13)] {
        run_op(10, h, -3.0, 3.0, 130 + h, |b, x| {
            let w = b.weight("norm", &[u64::from(group)], 0.5, 1.5);
            b.node(Op::RmsNorm { eps: 1e-6, group: Some(group) }, vec![x, w])
        });
    }
}

#[test]
fn layer_norm_odd_width() {
    for h in [10u64, 13, 1, 64, 3] {
        // Inputs offset from zero so the mean matters.
        run_op(10, h, 1.0, 4.0, 140 + h, |b, x| {
            let w = b.weight("ln_w", &[h], 0.5, 1.5);
            let bias = b.weight("ln_b", &[h], -0.5, 0.5);
            b.node(Op::LayerNorm { eps: 1e-5 }, vec![x, w, bias])
        });
    }
}

#[test]
fn rope_full_and_partial_rotate_half_and_interleaved() {
    for interleaved in [false, true] {
        for (hd, rd, heads) in [(8u32, 8u32, 2u64), (6, 4, 3), (10, 2, 1), (16, 16, 1)] {
            let w = heads * u64::from(hd);
            run_op(12, w, -1.0, 1.0, 90 + u64::from(hd), |b, x| {
                let (c, s) = b.rope_tables(32, rd, 10000.0);
                let p = b.pos;
                b.node(Op::Rope { head_dim: hd, rotary_dim: rd, interleaved }, vec![x, c, s, p])
            });
        }
    }
}

#[test]
fn cache_write_and_attention_gqa() {
    // q from the gathered rows, k/v from two projections, cached across calls.
    for (heads, kv, hd, window) in
        [(4u32, 2u32, 6u32, None), (2, 2, 4, Some(2u32)), (3, 1, 5, Some(4)), (1, 1, 8, None)]
    {
        let qw = u64::from(heads * hd);
        let kvw = u64::from(kv * hd);
        run_op(9, qw, -1.0, 1.0, 100 + u64::from(heads * hd), |b, x| {
            let wk = b.weight("wk", &[kvw, qw], -0.7, 0.7);
            let wv = b.weight("wv", &[kvw, qw], -0.7, 0.7);
            let k = b.node(Op::MatMul { transpose_b: true }, vec![x, wk]);
            let v = b.node(Op::MatMul { transpose_b: true }, vec![x, wv]);
            let ks = b.state("k", 16, kvw);
            let vs = b.state("v", 16, kvw);
            let p = b.pos;
            let kc = b.node(Op::CacheWrite, vec![ks, k, p]);
            let vc = b.node(Op::CacheWrite, vec![vs, v, p]);
            let att = Op::Attention { heads, kv_heads: kv, head_dim: hd, scale: 0.9, window };
            b.node(att, vec![x, kc, vc, p])
        });
    }
}

#[test]
fn max_min_ignore_nan_like_the_reference() {
    for op in [BinaryOp::Max, BinaryOp::Min] {
        run_op(10, 9, -2.0, 2.0, 120, |b, x| {
            let mut row: Vec<f32> = (0..9).map(|i| i as f32 * 0.3 - 1.0).collect();
            row[2] = f32::NAN;
            row[8] = f32::NAN; // the scalar tail
            let w = b.weight_data("nanrow", &[9], row);
            let y = b.node(Op::Binary(op), vec![w, x]);
            // reduce_max over a row holding NaNs ignores them too.
            let xw = b.node(Op::Binary(BinaryOp::Add), vec![x, w]);
            let r = b.node(Op::Reduce(ReduceOp::Max), vec![xw]);
            b.node(Op::Binary(BinaryOp::Add), vec![y, r])
        });
    }
}

// Layout ops and the run-time-shape kernels of general (ONNX) graphs, inside the decoder
// harness: `seq` is symbolic, sizes are odd.

fn shape(b: &GB, dims: &[Option<u64>]) -> Shape {
    Shape(dims.iter().map(|d| d.map_or(b.seq, Dim::Const)).collect())
}

#[test]
fn reshape_transpose_roundtrip_permutations() {
    // [seq, 12] -> [seq, 3, 4] -> every permutation -> raw reshape back to [seq, 12].
    for (i, perm) in [[0u32, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]].into_iter().enumerate() {
        run_op(11, 12, -2.0, 2.0, 200 + i as u64, |b, x| {
            let s = shape(b, &[None, Some(3), Some(4)]);
            let r = b.node(Op::Reshape { shape: s }, vec![x]);
            let t = b.node(Op::Transpose { perm: perm.to_vec() }, vec![r]);
            let y = b.node(Op::Unary(UnaryOp::Neg), vec![t]);
            let s = shape(b, &[None, Some(12)]);
            b.node(Op::Reshape { shape: s }, vec![y])
        });
    }
}

#[test]
fn concat_any_axis() {
    for axis in [0u32, 1, 2] {
        run_op(9, 7, -2.0, 2.0, 210 + u64::from(axis), |b, x| {
            let (a, other) = match axis {
                0 => {
                    // [1, seq, 7] ++ |expand to [2, seq, 7]|
                    let s = shape(b, &[Some(1), None, Some(7)]);
                    let a = b.node(Op::Reshape { shape: s }, vec![x]);
                    let s = shape(b, &[Some(2), None, Some(7)]);
                    let e = b.node(Op::Expand { shape: s }, vec![a]);
                    (a, b.node(Op::Unary(UnaryOp::Abs), vec![e]))
                }
                1 => {
                    // [seq, 1, 7] ++ a [1, 2, 7] table (cut from [1, 5, 7]) expanded to [seq, 2, 7]
                    let s = shape(b, &[None, Some(1), Some(7)]);
                    let a = b.node(Op::Reshape { shape: s }, vec![x]);
                    let w = b.weight("w", &[1, 5, 7], -1.0, 1.0);
                    let w = b.node(Op::Slice { axis: 1, start: 2, len: Dim::Const(2) }, vec![w]);
                    let s = shape(b, &[None, Some(2), Some(7)]);
                    (a, b.node(Op::Expand { shape: s }, vec![w]))
                }
                _ => {
                    // [1, seq, 7] ++ a [1, 1, 2] weight expanded to [1, seq, 2]
                    let s = shape(b, &[Some(1), None, Some(7)]);
                    let a = b.node(Op::Reshape { shape: s }, vec![x]);
                    let w = b.weight("w", &[1, 1, 2], -1.0, 1.0);
                    let s = shape(b, &[Some(1), None, Some(2)]);
                    (a, b.node(Op::Expand { shape: s }, vec![w]))
                }
            };
            let c = b.node(Op::Concat { axis }, vec![a, other]);
            let total = b.g.type_of(c).shape.dims().iter().map(|d| d.as_const().unwrap_or(1)).product::<u64>();
            let s = shape(b, &[None, Some(total)]);
            b.node(Op::Reshape { shape: s }, vec![c])
        });
    }
}

#[test]
fn slice_symbolic_and_constant_lengths() {
    run_op(9, 13, -2.0, 2.0, 220, |b, x| {
        // Columns 3..10 of x, plus rows 0..seq of a [16, 7] table (the folded-table pattern).
        let c = b.node(Op::Slice { axis: 1, start: 3, len: Dim::Const(7) }, vec![x]);
        let t = b.weight("table", &[16, 7], -1.0, 1.0);
        let seq = b.seq;
        let r = b.node(Op::Slice { axis: 0, start: 0, len: seq }, vec![t]);
        b.node(Op::Binary(BinaryOp::Add), vec![c, r])
    });
    run_op(9, 12, -2.0, 2.0, 221, |b, x| {
        // A middle axis with a start: [seq, 3, 4] -> [seq, 2, 4] from index 1.
        let s = shape(b, &[None, Some(3), Some(4)]);
        let r = b.node(Op::Reshape { shape: s }, vec![x]);
        let sl = b.node(Op::Slice { axis: 1, start: 1, len: Dim::Const(2) }, vec![r]);
        let s = shape(b, &[None, Some(8)]);
        b.node(Op::Reshape { shape: s }, vec![sl])
    });
}

#[test]
fn general_broadcasts_and_symbolic_last_axis() {
    // [3, seq, 4] * [1, seq, 4] (a table cut to seq rows): the rotary pattern.
    run_op(9, 12, -2.0, 2.0, 230, |b, x| {
        let s = shape(b, &[None, Some(3), Some(4)]);
        let r = b.node(Op::Reshape { shape: s }, vec![x]);
        let t = b.node(Op::Transpose { perm: vec![1, 0, 2] }, vec![r]);
        let tab = b.weight("table", &[1, 16, 4], -1.0, 1.0);
        let seq = b.seq;
        let cut = b.node(Op::Slice { axis: 1, start: 0, len: seq }, vec![tab]);
        let m = b.node(Op::Binary(BinaryOp::Mul), vec![t, cut]);
        let p = b.node(Op::Binary(BinaryOp::Pow), vec![m, m]); // general path: NaN for x<0, like powf
        let p = b.node(Op::Unary(UnaryOp::IsNan), vec![p]);
        let m = b.node(Op::Binary(BinaryOp::Sub), vec![m, p]);
        let back = b.node(Op::Transpose { perm: vec![1, 0, 2] }, vec![m]);
        let s = shape(b, &[None, Some(12)]);
        b.node(Op::Reshape { shape: s }, vec![back])
    });
    // Reductions and softmax over a symbolic last axis: x [seq, 5] transposed to [5, seq].
    for (i, op) in ReduceOp::ALL.into_iter().enumerate() {
        run_op(9, 5, -2.0, 2.0, 240 + i as u64, |b, x| {
            let t = b.node(Op::Transpose { perm: vec![1, 0] }, vec![x]);
            let sm = b.node(Op::Softmax, vec![t]);
            let e = b.node(Op::Unary(UnaryOp::Exp), vec![t]);
            let sm = b.node(Op::Binary(BinaryOp::Add), vec![sm, e]);
            let r = b.node(Op::Reduce(op), vec![sm]); // [5, 1]
            let s = shape(b, &[Some(1), Some(5)]);
            let r = b.node(Op::Reshape { shape: s }, vec![r]);
            let y = b.node(Op::Binary(BinaryOp::Mul), vec![x, r]);
            let back = b.node(Op::Transpose { perm: vec![1, 0] }, vec![sm]);
            b.node(Op::Binary(BinaryOp::Add), vec![y, back])
        });
    }
}

#[test]
fn batch_matmul_broadcast_and_symbolic_inner() {
    run_op(9, 12, -1.0, 1.0, 250, |b, x| {
        // q = [3, seq, 4]; scores = q · qᵀ [3, seq, seq]; masked-free softmax; · q again; then a
        // broadcast [1, 4, 5] weight: [3, seq, 5] -> [seq, 15].
        let s = shape(b, &[None, Some(3), Some(4)]);
        let r = b.node(Op::Reshape { shape: s }, vec![x]);
        let q = b.node(Op::Transpose { perm: vec![1, 0, 2] }, vec![r]);
        let qt = b.node(Op::Transpose { perm: vec![0, 2, 1] }, vec![q]);
        let sc = b.node(Op::BatchMatMul, vec![q, qt]);
        let p = b.node(Op::Softmax, vec![sc]);
        let o = b.node(Op::BatchMatMul, vec![p, q]);
        let w = b.weight("w", &[1, 4, 5], -1.0, 1.0);
        let o = b.node(Op::BatchMatMul, vec![o, w]);
        let w2 = b.weight("w2", &[5, 3], -1.0, 1.0); // rank-2 operand broadcast over the batch
        let o2 = b.node(Op::BatchMatMul, vec![o, w2]);
        let o = b.node(Op::Concat { axis: 2 }, vec![o, o2]);
        let back = b.node(Op::Transpose { perm: vec![1, 0, 2] }, vec![o]);
        let s = shape(b, &[None, Some(24)]);
        b.node(Op::Reshape { shape: s }, vec![back])
    });
}

#[test]
fn select_with_nan_mask() {
    run_op(10, 9, -2.0, 2.0, 260, |b, x| {
        let mut row: Vec<f32> = (0..9).map(|i| i as f32 * 0.3 - 1.0).collect();
        row[2] = f32::NAN;
        row[8] = f32::NAN;
        let w = b.weight_data("nanrow", &[1, 9], row);
        let xw = b.node(Op::Binary(BinaryOp::Add), vec![x, w]);
        let m = b.node(Op::Unary(UnaryOp::IsNan), vec![xw]);
        let zero = b.weight_data("zero", &[], vec![0.25]);
        let y = b.node(Op::Select, vec![m, zero, xw]);
        let s = shape(b, &[None, Some(1), Some(9)]);
        let y = b.node(Op::Reshape { shape: s }, vec![y]);
        let s = shape(b, &[None, Some(2), Some(9)]);
        let y = b.node(Op::Expand { shape: s }, vec![y]);
        let s = shape(b, &[None, Some(18)]);
        b.node(Op::Reshape { shape: s }, vec![y])
    });
}

#[test]
fn middle_axis_broadcast() {
    // [2, 3, 4] + [2, 1, 4] (numpy broadcasting along a middle axis), then added to x [seq, 24].
    run_op(9, 24, -1.0, 1.0, 270, |b, x| {
        let p = b.weight("p", &[2, 3, 4], -1.0, 1.0);
        let q = b.weight("q", &[2, 1, 4], -1.0, 1.0);
        let s = b.node(Op::Binary(BinaryOp::Add), vec![p, q]);
        let s = b.node(Op::Reshape { shape: Shape::of(&[1, 24]) }, vec![s]);
        b.node(Op::Binary(BinaryOp::Mul), vec![x, s])
    });
}

/// Attention over more keys than one block of the kernel (32): prefill chunks of 40 tokens up
/// to 120 cached positions, then single tokens, with and without a window that crosses block
/// boundaries, f32 and f16 caches.
#[test]
fn attention_across_many_key_blocks() {
    for (heads, kv, hd, window, half) in [
        (4u32, 2u32, 8u32, None, false),
        (2, 1, 6, Some(45u32), false),
        (3, 3, 4, Some(33), true),
        // GQA groups of 8 and 4: tasks of four query heads sharing a KV head.
        (8, 1, 12, None, true),
        (8, 2, 16, Some(40), false),
        (4, 1, 7, None, false),
    ] {
        // Many distinct tokens, so later blocks hold new maxima (the running max must rescale).
        let (v, qw, kvw) = (97u64, u64::from(heads * hd), u64::from(kv * hd));
        let mut b = GB::new("blocks", 40, 200 + u64::from(hd));
        let table = b.weight("table", &[v, qw], -1.0, 1.0);
        let wk = b.weight("wk", &[kvw, qw], -0.7, 0.7);
        let wv = b.weight("wv", &[kvw, qw], -0.7, 0.7);
        let head = b.weight("head", &[v, qw], -0.5, 0.5);
        let (ids, p) = (b.ids, b.pos);
        let x = b.node(Op::Gather, vec![table, ids]);
        let k = b.node(Op::MatMul { transpose_b: true }, vec![x, wk]);
        let vv = b.node(Op::MatMul { transpose_b: true }, vec![x, wv]);
        let ks = b.state("k", 160, kvw);
        let vs = b.state("v", 160, kvw);
        let kc = b.node(Op::CacheWrite, vec![ks, k, p]);
        let vc = b.node(Op::CacheWrite, vec![vs, vv, p]);
        let att = Op::Attention { heads, kv_heads: kv, head_dim: hd, scale: 0.7, window };
        let a = b.node(att, vec![x, kc, vc, p]);
        let out = b.node(Op::MatMul { transpose_b: true }, vec![a, head]);
        let mut g = b.finish(out);
        if half {
            edgec_ir::quant::apply_kv_dtype(&mut g, edgec_ir::quant::KvDtype::F16).unwrap();
        }
        let chunk =
            |start: u32| -> (Vec<i32>, u32) { ((0..40).map(|i| ((i + start as i32) * 37 + 11) % 97).collect(), start) };
        let calls = vec![chunk(0), chunk(40), chunk(80), (vec![3], 120), (vec![5], 121)];
        check_against_reference(g, &calls, 1e-4);
    }
}
