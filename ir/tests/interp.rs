//! The reference interpreter and weight materialization against naive computations written here.
#![allow(clippy::type_complexity, clippy::needless_range_loop, clippy::nonminimal_bool)]

use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::weights::{materialize_f32, rope_inv_freq};
use edgec_ir::*;

fn f32ty(dims: &[u64]) -> TensorType {
    TensorType::new(DType::F32, Shape::of(dims))
}

fn lit(g: &mut Graph, name: &str, dims: &[u64], v: Vec<f32>) -> ValueRef {
    g.add_weight(name, f32ty(dims), WeightSource::Literal(v))
}

/// Deterministic pseudo-random values in [-1, 1).
fn vals(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
    }
}

fn run1(g: &Graph, inputs: &[Tensor]) -> Tensor {
    Interpreter::new(g).unwrap().run(inputs).unwrap().remove(0)
}

/// A graph `op(inputs...)` over f32 inputs of the given shapes.
fn op_graph(op: Op, shapes: &[&[u64]]) -> Graph {
    let mut g = Graph::new("t");
    let args: Vec<ValueRef> = shapes.iter().enumerate().map(|(i, s)| g.add_input(format!("x{i}"), f32ty(s))).collect();
    let y = g.add_node(op, args).unwrap();
    g.add_output("y", y);
    g
}

#[test]
fn unary_ops_match_their_definitions() {
    let x = vec![-2.0f32, -0.5, 0.25, 1.0, 3.0];
    let pos = vec![0.25f32, 1.0, 4.0];
    let cases: Vec<(UnaryOp, &[f32], fn(f32) -> f32)> = vec![
        (UnaryOp::Neg, &x, |v| -v),
        (UnaryOp::Exp, &x, f32::exp),
        (UnaryOp::Sqrt, &pos, f32::sqrt),
        (UnaryOp::Rsqrt, &pos, |v| 1.0 / v.sqrt()),
        (UnaryOp::Recip, &x, |v| 1.0 / v),
        (UnaryOp::Silu, &x, |v| v / (1.0 + (-v).exp())),
        (UnaryOp::Sigmoid, &x, |v| 1.0 / (1.0 + (-v).exp())),
    ];
    for (u, input, f) in cases {
        let g = op_graph(Op::Unary(u), &[&[input.len() as u64]]);
        let y = run1(&g, &[Tensor::f32(vec![input.len()], input.to_vec())]);
        let want: Vec<f32> = input.iter().map(|&v| f(v)).collect();
        close(y.as_f32().unwrap(), &want, 1e-6);
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let a = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
    // [2,3] op [3]
    let g = op_graph(Op::Binary(BinaryOp::Sub), &[&[2, 3], &[3]]);
    let y = run1(&g, &[Tensor::f32(vec![2, 3], a.clone()), Tensor::f32(vec![3], vec![10.0, 20.0, 30.0])]);
    assert_eq!(y.shape, vec![2, 3]);
    assert_eq!(y.as_f32().unwrap(), &[-9.0, -18.0, -27.0, -6.0, -15.0, -24.0]);
    // [2,1] op [1,3] -> [2,3]
    let g = op_graph(Op::Binary(BinaryOp::Mul), &[&[2, 1], &[1, 3]]);
    let y = run1(&g, &[Tensor::f32(vec![2, 1], vec![2.0, 3.0]), Tensor::f32(vec![1, 3], vec![1.0, 10.0, 100.0])]);
    assert_eq!(y.shape, vec![2, 3]);
    assert_eq!(y.as_f32().unwrap(), &[2.0, 20.0, 200.0, 3.0, 30.0, 300.0]);
    // scalar op [2,3], every op
    for op in BinaryOp::ALL {
        let g = op_graph(Op::Binary(op), &[&[], &[2, 3]]);
        let y = run1(&g, &[Tensor::f32(vec![], vec![3.5]), Tensor::f32(vec![2, 3], a.clone())]);
        let want: Vec<f32> = a.iter().map(|&v| op.eval(3.5, v)).collect();
        assert_eq!(y.as_f32().unwrap(), &want[..], "{op:?}");
    }
    // [3,1,2] + [2,1] -> [3,2,2]
    let g = op_graph(Op::Binary(BinaryOp::Add), &[&[3, 1, 2], &[2, 1]]);
    let x = vals(6, 1);
    let z = vals(2, 2);
    let y = run1(&g, &[Tensor::f32(vec![3, 1, 2], x.clone()), Tensor::f32(vec![2, 1], z.clone())]);
    assert_eq!(y.shape, vec![3, 2, 2]);
    let mut want = Vec::new();
    for i in 0..3 {
        for j in 0..2 {
            for k in 0..2 {
                want.push(x[i * 2 + k] + z[j]);
            }
        }
    }
    assert_eq!(y.as_f32().unwrap(), &want[..]);
}

#[test]
fn softmax_rows_sum_to_one_and_match_exp_over_sum() {
    let x = vals(12, 3).iter().map(|v| v * 5.0).collect::<Vec<_>>();
    let g = op_graph(Op::Softmax, &[&[3, 4]]);
    let y = run1(&g, &[Tensor::f32(vec![3, 4], x.clone())]);
    let y = y.as_f32().unwrap();
    for r in 0..3 {
        let row = &x[r * 4..r * 4 + 4];
        let total: f32 = row.iter().map(|v| v.exp()).sum();
        let want: Vec<f32> = row.iter().map(|v| v.exp() / total).collect();
        close(&y[r * 4..r * 4 + 4], &want, 1e-6);
        assert!((y[r * 4..r * 4 + 4].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    // Large values do not overflow.
    let y = run1(&g, &[Tensor::f32(vec![3, 4], vec![1000.0; 12])]);
    close(y.as_f32().unwrap(), &[0.25; 12], 1e-7);
}

#[test]
fn reductions_over_the_last_axis() {
    let x = vec![1.0f32, -2.0, 3.0, 4.0, 5.0, -6.0];
    for (r, want) in [(ReduceOp::Sum, [2.0f32, 3.0]), (ReduceOp::Mean, [2.0 / 3.0, 1.0]), (ReduceOp::Max, [3.0, 5.0])] {
        let g = op_graph(Op::Reduce(r), &[&[2, 3]]);
        let y = run1(&g, &[Tensor::f32(vec![2, 3], x.clone())]);
        assert_eq!(y.shape, vec![2, 1]);
        close(y.as_f32().unwrap(), &want, 1e-6);
    }
}

#[test]
fn matmul_both_layouts() {
    let (m, k, n) = (3, 5, 4);
    let a = vals(m * k, 4);
    let b = vals(k * n, 5); // [K, N]
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // [N, K]
    let mut want = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
        }
    }
    for (transpose_b, w, wshape) in [(false, &b, [k as u64, n as u64]), (true, &bt, [n as u64, k as u64])] {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32ty(&[m as u64, k as u64]));
        let wv = lit(&mut g, "w", &wshape, w.clone());
        let y = g.add_node(Op::MatMul { transpose_b }, vec![x, wv]).unwrap();
        g.add_output("y", y);
        let y = run1(&g, &[Tensor::f32(vec![m, k], a.clone())]);
        assert_eq!(y.shape, vec![m, n]);
        close(y.as_f32().unwrap(), &want, 1e-5);
    }
}

#[test]
fn rms_norm_matches_naive() {
    let x = vals(8, 6);
    let w = vec![0.5f32, 1.0, 1.5, 2.0];
    let mut g = Graph::new("t");
    let xv = g.add_input("x", f32ty(&[2, 4]));
    let wv = lit(&mut g, "w", &[4], w.clone());
    let y = g.add_node(Op::RmsNorm { eps: 1e-5, group: None }, vec![xv, wv]).unwrap();
    g.add_output("y", y);
    let y = run1(&g, &[Tensor::f32(vec![2, 4], x.clone())]);
    let mut want = Vec::new();
    for r in 0..2 {
        let row = &x[r * 4..r * 4 + 4];
        let ms = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
        want.extend(row.iter().zip(&w).map(|(v, w)| v / (ms + 1e-5).sqrt() * w));
    }
    close(y.as_f32().unwrap(), &want, 1e-6);
}

#[test]
fn gather_rows_and_out_of_range_ids() {
    let table = vals(12, 7); // [4, 3]
    let mut g = Graph::new("t");
    let seq = g.add_symbol("seq", 8);
    let ids = g.add_input("ids", TensorType::new(DType::I32, Shape(vec![seq])));
    let t = lit(&mut g, "table", &[4, 3], table.clone());
    let y = g.add_node(Op::Gather, vec![t, ids]).unwrap();
    g.add_output("y", y);
    let mut it = Interpreter::new(&g).unwrap();
    let y = it.run(&[Tensor::i32(vec![3], vec![2, 0, 2])]).unwrap().remove(0);
    assert_eq!(y.shape, vec![3, 3]);
    let want: Vec<f32> = [2, 0, 2].iter().flat_map(|&r| table[r * 3..r * 3 + 3].to_vec()).collect();
    assert_eq!(y.as_f32().unwrap(), &want[..]);
    for bad in [4, -1] {
        let e = it.run(&[Tensor::i32(vec![2], vec![0, bad])]).unwrap_err();
        assert!(e.message.contains("ids") && e.message.contains(&bad.to_string()), "{e}");
    }
}

#[test]
fn symbols_are_bound_and_checked() {
    let mut g = Graph::new("t");
    let seq = g.add_symbol("seq", 4);
    let a = g.add_input("a", TensorType::new(DType::F32, Shape(vec![seq, Dim::Const(2)])));
    let b = g.add_input("b", TensorType::new(DType::F32, Shape(vec![seq, Dim::Const(2)])));
    let y = g.add_node(Op::Binary(BinaryOp::Add), vec![a, b]).unwrap();
    g.add_output("y", y);
    let mut it = Interpreter::new(&g).unwrap();
    let t = |rows: usize| Tensor::f32(vec![rows, 2], vec![1.0; rows * 2]);
    assert_eq!(it.run(&[t(3), t(3)]).unwrap()[0].shape, vec![3, 2]);
    let e = it.run(&[t(5), t(5)]).unwrap_err();
    assert!(e.message.contains("seq") && e.message.contains("exceeds"), "{e}");
    let e = it.run(&[t(3), t(2)]).unwrap_err();
    assert!(e.message.contains("disagrees"), "{e}");
    let e = it.run(&[t(3), Tensor::f32(vec![3, 3], vec![0.0; 9])]).unwrap_err();
    assert!(e.message.contains("'b'"), "{e}");
    let e = it.run(&[t(3)]).unwrap_err();
    assert!(e.message.contains("2 inputs"), "{e}");
    let e = it.run(&[t(3), Tensor::i32(vec![3, 2], vec![0; 6])]).unwrap_err();
    assert!(e.message.contains("must be f32"), "{e}");
    let e = it.run(&[t(3), Tensor::f32(vec![3, 2], vec![0.0; 5])]).unwrap_err();
    assert!(e.message.contains("values"), "{e}");
}

fn rope_weight(part: RopePart, positions: u64, theta: f64, rotary_dim: u32, scaling: RopeScaling) -> Weight {
    Weight::new(
        "rope",
        f32ty(&[positions, u64::from(rotary_dim / 2)]),
        WeightSource::Rope { part, theta, rotary_dim, scaling },
    )
}

#[test]
fn rope_table_default_matches_direct_formula() {
    let cos = materialize_f32(&rope_weight(RopePart::Cos, 5, 10000.0, 4, RopeScaling::None)).unwrap();
    let sin = materialize_f32(&rope_weight(RopePart::Sin, 5, 10000.0, 4, RopeScaling::None)).unwrap();
    // inv_freq = [1, 10000^(-1/2)] = [1, 0.01]
    for p in 0..5 {
        for (i, f) in [1.0f64, 0.01].into_iter().enumerate() {
            assert!((cos[p * 2 + i] - (p as f64 * f).cos() as f32).abs() <= 1e-7);
            assert!((sin[p * 2 + i] - (p as f64 * f).sin() as f32).abs() <= 1e-7);
        }
    }
    let theta = 500000.0f64;
    let inv = rope_inv_freq(theta, 16, &RopeScaling::None);
    for (i, f) in inv.iter().enumerate() {
        assert!((f - theta.powf(-(2.0 * i as f64) / 16.0)).abs() < 1e-15);
    }
}

#[test]
fn rope_table_llama3_matches_transformers_formula() {
    let (theta, dim) = (500000.0f64, 16u32);
    let (factor, lo, hi, old) = (8.0f64, 1.0f64, 4.0f64, 64u64);
    let scaling =
        RopeScaling::Llama3 { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_positions: old };
    // transformers' _compute_llama3_parameters, written as its torch.where chain.
    let want: Vec<f64> = (0..dim / 2)
        .map(|i| {
            let f = 1.0 / theta.powf((2 * i) as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let low_wl = old as f64 / lo;
            let high_wl = old as f64 / hi;
            let llama = if wavelen > low_wl { f / factor } else { f };
            let smooth = (old as f64 / wavelen - lo) / (hi - lo);
            let smoothed = (1.0 - smooth) * llama / factor + smooth * llama;
            let medium = wavelen >= high_wl && wavelen <= low_wl; // ~(w < high) * ~(w > low)
            if medium { smoothed } else { llama }
        })
        .collect();
    let got = rope_inv_freq(theta, dim, &scaling);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-15 * w.abs(), "{g} vs {w}");
    }
    // All three bands occur with these numbers.
    let base = rope_inv_freq(theta, dim, &RopeScaling::None);
    let unchanged = got.iter().zip(&base).filter(|(g, b)| g == b).count();
    let divided = got.iter().zip(&base).filter(|(g, b)| ((*g * factor - *b) / *b).abs() < 1e-12).count();
    assert!(unchanged > 0 && divided > 0 && unchanged + divided < got.len(), "{unchanged} {divided}");
    let cos = materialize_f32(&rope_weight(RopePart::Cos, 40, theta, dim, scaling)).unwrap();
    for p in 0..40 {
        for i in 0..8 {
            assert!((cos[p * 8 + i] - (p as f64 * want[i]).cos() as f32).abs() <= 1e-7);
        }
    }
}

#[test]
fn rope_op_rotates_halves_per_head() {
    let (heads, hd, rd, s, pos) = (2usize, 6usize, 4usize, 3usize, 2i32);
    let positions = 8u64;
    let mut g = Graph::new("t");
    let x = g.add_input("x", f32ty(&[s as u64, (heads * hd) as u64]));
    let p = g.add_input("pos", TensorType::new(DType::I32, Shape::of(&[])));
    let cw = rope_weight(RopePart::Cos, positions, 100.0, rd as u32, RopeScaling::None);
    let sw = rope_weight(RopePart::Sin, positions, 100.0, rd as u32, RopeScaling::None);
    let cos_t = materialize_f32(&cw).unwrap();
    let sin_t = materialize_f32(&sw).unwrap();
    let c = g.add_weight("cos", cw.ty, cw.source);
    let sn = g.add_weight("sin", sw.ty, sw.source);
    let y = g
        .add_node(Op::Rope { head_dim: hd as u32, rotary_dim: rd as u32, interleaved: false }, vec![x, c, sn, p])
        .unwrap();
    g.add_output("y", y);
    let xs = vals(s * heads * hd, 8);
    let mut it = Interpreter::new(&g).unwrap();
    let out = it.run(&[Tensor::f32(vec![s, heads * hd], xs.clone()), Tensor::scalar_i32(pos)]).unwrap().remove(0);
    let out = out.as_f32().unwrap();
    let half = rd / 2;
    for r in 0..s {
        let t = pos as usize + r;
        for h in 0..heads {
            let base = r * heads * hd + h * hd;
            for i in 0..hd {
                let want = if i < half {
                    xs[base + i] * cos_t[t * half + i] - xs[base + i + half] * sin_t[t * half + i]
                } else if i < rd {
                    let j = i - half;
                    xs[base + i] * cos_t[t * half + j] + xs[base + j] * sin_t[t * half + j]
                } else {
                    xs[base + i]
                };
                assert!((out[base + i] - want).abs() < 1e-6, "row {r} head {h} feature {i}");
            }
        }
    }
    // Past the table's end or a negative position: an error, not a panic.
    let e = it.run(&[Tensor::f32(vec![s, heads * hd], xs.clone()), Tensor::scalar_i32(6)]).unwrap_err();
    assert!(e.message.contains("rope table"), "{e}");
    let e = it.run(&[Tensor::f32(vec![s, heads * hd], xs), Tensor::scalar_i32(-1)]).unwrap_err();
    assert!(e.message.contains("negative"), "{e}");
}

/// `cache_write(k), cache_write(v) -> attention(q, ...)`, with q, k, v, pos inputs.
fn attention_graph(heads: u32, kv_heads: u32, hd: u32, cache: u64, window: Option<u32>) -> Graph {
    let mut g = Graph::new("t");
    let seq = g.add_symbol("seq", 8);
    let row = |w: u32| TensorType::new(DType::F32, Shape(vec![seq, Dim::Const(u64::from(w))]));
    let q = g.add_input("q", row(heads * hd));
    let k = g.add_input("k", row(kv_heads * hd));
    let v = g.add_input("v", row(kv_heads * hd));
    let pos = g.add_input("pos", TensorType::new(DType::I32, Shape::of(&[])));
    let kc = g.add_state("k_cache", f32ty(&[cache, u64::from(kv_heads * hd)]));
    let vc = g.add_state("v_cache", f32ty(&[cache, u64::from(kv_heads * hd)]));
    let kc = g.add_node(Op::CacheWrite, vec![kc, k, pos]).unwrap();
    let vc = g.add_node(Op::CacheWrite, vec![vc, v, pos]).unwrap();
    let scale = 1.0 / (hd as f32).sqrt();
    let a = g.add_node(Op::Attention { heads, kv_heads, head_dim: hd, scale, window }, vec![q, kc, vc, pos]).unwrap();
    g.add_output("a", a);
    g
}

fn run_attn(it: &mut Interpreter, s: usize, q: &[f32], k: &[f32], v: &[f32], pos: i32) -> Result<Vec<f32>, IrError> {
    let t = |d: &[f32]| Tensor::f32(vec![s, d.len() / s], d.to_vec());
    Ok(it.run(&[t(q), t(k), t(v), Tensor::scalar_i32(pos)])?.remove(0).as_f32().unwrap().to_vec())
}

/// Naive causal GQA attention over full K/V histories `[T, kv_heads*hd]`; the queries sit at
/// positions `first_pos..`.
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    hd: usize,
    first_pos: usize,
    window: Option<usize>,
) -> Vec<f32> {
    let s = q.len() / (heads * hd);
    let kw = kv_heads * hd;
    let mut out = vec![0f32; q.len()];
    for r in 0..s {
        let p = first_pos + r;
        for h in 0..heads {
            let kvh = h * kv_heads / heads;
            let js: Vec<usize> = (0..=p).filter(|&j| window.is_none_or(|w| j + w > p)).collect();
            let sc: Vec<f32> = js
                .iter()
                .map(|&j| {
                    (0..hd).map(|d| q[r * heads * hd + h * hd + d] * k[j * kw + kvh * hd + d]).sum::<f32>()
                        / (hd as f32).sqrt()
                })
                .collect();
            let m = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = sc.iter().map(|x| (x - m).exp()).collect();
            let tot: f32 = e.iter().sum();
            for d in 0..hd {
                out[r * heads * hd + h * hd + d] =
                    js.iter().zip(&e).map(|(&j, w)| w / tot * v[j * kw + kvh * hd + d]).sum();
            }
        }
    }
    out
}

#[test]
fn attention_with_one_position_returns_v() {
    let g = attention_graph(4, 2, 3, 8, None);
    let mut it = Interpreter::new(&g).unwrap();
    let (q, k, v) = (vals(12, 9), vals(6, 10), vals(6, 11));
    let out = run_attn(&mut it, 1, &q, &k, &v, 0).unwrap();
    // Heads 0,1 read KV head 0; heads 2,3 read KV head 1.
    let want: Vec<f32> = [0, 0, 1, 1].iter().flat_map(|&kvh| v[kvh * 3..kvh * 3 + 3].to_vec()).collect();
    close(&out, &want, 1e-6);
}

#[test]
fn attention_gqa_causal_and_incremental() {
    let (heads, kvh, hd) = (4usize, 2usize, 4usize);
    let g = attention_graph(heads as u32, kvh as u32, hd as u32, 8, None);
    let t = 6;
    let (q, k, v) = (vals(t * heads * hd, 12), vals(t * kvh * hd, 13), vals(t * kvh * hd, 14));
    let want = naive_attention(&q, &k, &v, heads, kvh, hd, 0, None);
    let mut it = Interpreter::new(&g).unwrap();
    close(&run_attn(&mut it, t, &q, &k, &v, 0).unwrap(), &want, 1e-5);
    // The same in two calls (4 rows then 2), through the persistent cache.
    it.reset_state();
    let (qw, kw) = (heads * hd, kvh * hd);
    let a = run_attn(&mut it, 4, &q[..4 * qw], &k[..4 * kw], &v[..4 * kw], 0).unwrap();
    let b = run_attn(&mut it, 2, &q[4 * qw..], &k[4 * kw..], &v[4 * kw..], 4).unwrap();
    close(&[a, b].concat(), &want, 1e-5);
    // The state holds what was written; reset zeroes it.
    let kc = it.state(0).unwrap().as_f32().unwrap();
    assert_eq!(&kc[..t * kw], &k[..]);
    assert!(kc[t * kw..].iter().all(|&x| x == 0.0));
    it.reset_state();
    assert!(it.state(0).unwrap().as_f32().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn attention_sliding_window() {
    let (heads, kvh, hd, w) = (2usize, 1usize, 4usize, 3usize);
    let g = attention_graph(heads as u32, kvh as u32, hd as u32, 8, Some(w as u32));
    let t = 7;
    let (q, k, v) = (vals(t * heads * hd, 15), vals(t * kvh * hd, 16), vals(t * kvh * hd, 17));
    let want = naive_attention(&q, &k, &v, heads, kvh, hd, 0, Some(w));
    let full = naive_attention(&q, &k, &v, heads, kvh, hd, 0, None);
    let mut it = Interpreter::new(&g).unwrap();
    let out = run_attn(&mut it, t, &q, &k, &v, 0).unwrap();
    close(&out, &want, 1e-5);
    assert!(out.iter().zip(&full).any(|(a, b)| (a - b).abs() > 1e-3), "the window must matter");
}

#[test]
fn cache_overflow_is_an_error() {
    let g = attention_graph(2, 1, 2, 4, None);
    let mut it = Interpreter::new(&g).unwrap();
    let (q, k) = (vals(3 * 4, 1), vals(3 * 2, 2));
    let e = run_attn(&mut it, 3, &q, &k, &k, 2).unwrap_err();
    assert!(e.message.contains("k_cache") && e.message.contains("overflows"), "{e}");
    assert!(run_attn(&mut it, 3, &q, &k, &k, 1).is_ok());
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("edgec-ir-test-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn file_weights_read_only_their_range() {
    let values = [1.5f32, -2.25, 3.0, 0.125, 65504.0, -0.0];
    let shape = Shape::of(&[2, 3]);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let mut bytes = vec![0xAAu8; 13]; // junk before
        for &v in &values {
            match dtype {
                DType::F32 => bytes.extend(v.to_le_bytes()),
                DType::F16 => bytes.extend(half::f16::from_f32(v).to_le_bytes()),
                _ => bytes.extend(half::bf16::from_f32(v).to_le_bytes()),
            }
        }
        bytes.extend([0x55u8; 7]); // junk after
        let path = temp_file(dtype.name(), &bytes);
        let w = Weight::new(
            "w",
            TensorType::new(DType::F32, shape.clone()),
            WeightSource::File { path: path.clone(), offset: 13, dtype },
        );
        let got = materialize_f32(&w).unwrap();
        let want: Vec<f32> = values
            .iter()
            .map(|&v| match dtype {
                DType::F32 => v,
                DType::F16 => half::f16::from_f32(v).to_f32(),
                _ => half::bf16::from_f32(v).to_f32(),
            })
            .collect();
        assert_eq!(got, want, "{dtype}");
        // Too short: names the weight and the file.
        let w2 = Weight { source: WeightSource::File { path: path.clone(), offset: 30, dtype }, ..w };
        let e = materialize_f32(&w2).unwrap_err();
        assert!(e.message.contains("'w'") && e.message.contains(&path.display().to_string()), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = materialize_f32(&w2).unwrap_err();
        assert!(e.message.contains("cannot open"), "{e}");
    }
}

#[test]
fn bad_weights_are_errors_in_the_interpreter() {
    let mut g = Graph::new("t");
    let x = g.add_input("x", f32ty(&[1, 2]));
    let w = lit(&mut g, "w", &[2], vec![1.0, 2.0, 3.0]); // wrong length
    let y = g.add_node(Op::Binary(BinaryOp::Add), vec![x, w]).unwrap();
    g.add_output("y", y);
    let e = Interpreter::new(&g).unwrap().run(&[Tensor::f32(vec![1, 2], vec![0.0; 2])]).unwrap_err();
    assert!(e.message.contains("'w'"), "{e}");
}
