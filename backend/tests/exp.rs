//! The polynomial exp (and sigmoid/silu/gelu_tanh built on it), erf and exact GELU against
//! libm or an f64 reference over a sweep.

mod common;
use common::*;
use edgec_ir::{Op, UnaryOp};

/// A square `[w, w]` table of sweep points, gathered row by row, through `op`: the output is
/// `[seq, w]` so every row is one call's logits row.
fn sweep(op: UnaryOp, w: u64, lo: f32, hi: f32) -> (Vec<f32>, Vec<f32>) {
    let n = (w * w) as usize;
    let data: Vec<f32> = (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect();
    let mut b = GB::new("exp", w, 1);
    let t = b.weight_data("t", &[w, w], data.clone());
    let ids = b.ids;
    let x = b.node(Op::Gather, vec![t, ids]);
    let y = b.node(Op::Unary(op), vec![x]);
    let m = compile(b.finish(y));
    let ids: Vec<i32> = (0..w as i32).collect();
    let got = m.session(0).run(&ids, 0).unwrap();
    (data, got)
}

#[test]
fn exp_relative_error_sweep() {
    // 128² = 16384 points on the f32x4 path, 67² on a path with a 3-element scalar tail.
    for w in [128u64, 67] {
        let (x, got) = sweep(UnaryOp::Exp, w, -87.0, 88.0);
        let mut worst = 0f64;
        for (&x, &y) in x.iter().zip(&got) {
            let want = (x as f64).exp();
            let rel = ((y as f64 - want) / want).abs();
            worst = worst.max(rel);
            assert!(rel < 4e-7, "exp({x}) = {y}, want {want} (rel err {rel:e})");
        }
        eprintln!("exp width {w}: worst relative error {worst:e}");
    }
}

#[test]
fn exp_small_arguments_and_extremes() {
    let (x, got) = sweep(UnaryOp::Exp, 64, -1.0, 1.0);
    for (&x, &y) in x.iter().zip(&got) {
        let want = (x as f64).exp();
        assert!(((y as f64 - want) / want).abs() < 3e-7, "exp({x}) = {y}");
    }
    // Far below the range: tiny and non-negative; far above: large and finite (clamped).
    let (_, got) = sweep(UnaryOp::Exp, 4, -1000.0, -200.0);
    assert!(got.iter().all(|&y| (0.0..1e-37).contains(&y)), "{got:?}");
    let (_, got) = sweep(UnaryOp::Exp, 4, 200.0, 1000.0);
    assert!(got.iter().all(|&y| y.is_finite() && y > 1e38), "{got:?}");
}

#[test]
fn sigmoid_and_silu_sweep() {
    for op in [UnaryOp::Sigmoid, UnaryOp::Silu] {
        let (x, got) = sweep(op, 64, -30.0, 30.0);
        for (&x, &y) in x.iter().zip(&got) {
            let want = op.eval(x);
            assert!((y - want).abs() <= 2e-6 * want.abs().max(1e-3), "{}({x}) = {y}, want {want}", op.name());
        }
    }
}

#[test]
fn gelu_tanh_sweep() {
    // Wide range: the tails saturate to 0 and x; near zero the result is tiny.
    for (lo, hi) in [(-30.0, 30.0), (-4.0, 4.0)] {
        let (x, got) = sweep(UnaryOp::GeluTanh, 64, lo, hi);
        for (&x, &y) in x.iter().zip(&got) {
            let want = UnaryOp::GeluTanh.eval(x);
            assert!((y - want).abs() <= 2e-6 * want.abs().max(1e-3), "gelu_tanh({x}) = {y}, want {want}");
        }
    }
}

#[test]
fn gelu_erf_sweep() {
    // The reference is f64 (`UnaryOp::eval`). erfc's absolute error (1.5e-7) times 0.5|x|, plus
    // f32 rounding: within 2e-7 · max(1, |x|). (PyTorch's f32 `1 + erf` cancels to 0 in the
    // negative tail, so no tighter relative bound matters there.)
    for (w, lo, hi) in [(64u64, -10.0, 10.0), (67, -3.0, 3.0)] {
        let (x, got) = sweep(UnaryOp::Gelu, w, lo, hi);
        let mut worst = 0f64;
        for (&x, &y) in x.iter().zip(&got) {
            let want = f64::from(UnaryOp::Gelu.eval(x));
            let err = (f64::from(y) - want).abs() / f64::from(x.abs()).max(1.0);
            worst = worst.max(err);
            assert!(err <= 2e-7, "gelu({x}) = {y}, want {want} (err {err:e})");
        }
        eprintln!("gelu [{lo}, {hi}]: worst error / max(1, |x|) {worst:e}");
    }
}

#[test]
fn erf_sweep() {
    // Both branches (series below 0.5, A&S above), the f32x4 path and a scalar tail.
    for (w, lo, hi) in [(64u64, -6.0, 6.0), (67, -1.2, 1.2)] {
        let (x, got) = sweep(UnaryOp::Erf, w, lo, hi);
        let mut worst = 0f64;
        for (&x, &y) in x.iter().zip(&got) {
            let want = f64::from(UnaryOp::Erf.eval(x));
            let err = (f64::from(y) - want).abs();
            worst = worst.max(err);
            assert!(err <= 2.5e-7, "erf({x}) = {y}, want {want} (err {err:e})");
        }
        eprintln!("erf [{lo}, {hi}]: worst absolute error {worst:e}");
    }
}

#[test]
fn log_relative_error_sweep_and_specials() {
    for (w, lo, hi) in [(64u64, 1e-30, 1e30), (67, 0.01, 10.0), (64, 0.5, 2.0)] {
        let (x, got) = sweep(UnaryOp::Log, w, lo, hi);
        for (&x, &y) in x.iter().zip(&got) {
            let want = (x as f64).ln();
            let err = (f64::from(y) - want).abs();
            assert!(err <= 2e-7 * want.abs().max(1.0), "log({x}) = {y}, want {want} (err {err:e})");
        }
    }
    let (_, got) = sweep(UnaryOp::Log, 2, -1.0, 0.0);
    assert!(got[0].is_nan() && got[3] == f32::NEG_INFINITY, "{got:?}");
    let (_, got) = sweep(UnaryOp::IsNan, 2, -1.0, 1.0);
    assert_eq!(got, vec![0.0; 4]);
}
