//! `rms_norm` and `layer_norm` from their primitive spellings.

use super::{binary, commuted, rows_features, unary};
use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{BinaryOp, Dim, IrError, Op, ReduceOp, UnaryOp, ValueRef};

/// `w * (x * recip(sqrt(mean(x * x) + eps)))` (also `x / sqrt(..)`, `rsqrt`, `pow(x, 2)`) →
/// `rms_norm(eps)`. Trailing constant dims are merged into features with a `group` of the
/// last dim, so a per-head norm over `[.., heads, head_dim]` becomes Qwen3's grouped form.
pub struct RmsNormRule;

impl Rule for RmsNormRule {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(mul) = binary(n, BinaryOp::Mul) else { return Ok(None) };
        let Some((x, w, eps)) = commuted(mul, |w, t| {
            let (x, eps) = normalized(cx, t)?;
            Some((x, w, eps))
        }) else {
            return Ok(None);
        };
        norm_node(cx, root, x, &[w], |group| Some(Op::RmsNorm { eps, group }))
    }
}

/// `(x - mean(x)) / sqrt(mean((x - mean(x))²) + eps) * w + b` → `layer_norm(eps)`.
pub struct LayerNormRule;

impl Rule for LayerNormRule {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(add) = binary(n, BinaryOp::Add) else { return Ok(None) };
        let Some((x, w, b, eps)) = commuted(add, |t, b| {
            let scaled = binary(cx.def(t)?, BinaryOp::Mul)?;
            commuted(scaled, |u, w| {
                let (d, eps) = scaled_by_inv_sqrt(cx, u, |s| {
                    let mean = cx.def_op(s, |op| *op == Op::Reduce(ReduceOp::Mean))?;
                    let (d, d2) = square_of(cx, mean.args[0])?;
                    (d == d2).then_some(d)
                })?;
                let (x, centre) = binary(cx.def(d)?, BinaryOp::Sub)?;
                let mean = cx.def_op(centre, |op| *op == Op::Reduce(ReduceOp::Mean))?;
                (mean.args[0] == x).then_some((x, w, b, eps))
            })
        }) else {
            return Ok(None);
        };
        norm_node(cx, root, x, &[w, b], |group| group.is_none().then_some(Op::LayerNorm { eps }))
    }
}

/// `(x, eps)` when `t` is `x` divided by `sqrt(mean(x²) + eps)` in one of its spellings.
fn normalized(cx: &Rewrite<'_>, t: ValueRef) -> Option<(ValueRef, f32)> {
    scaled_by_inv_sqrt(cx, t, |s| {
        let mean = cx.def_op(s, |op| *op == Op::Reduce(ReduceOp::Mean))?;
        let (a, b) = square_of(cx, mean.args[0])?;
        (a == b).then_some(a)
    })
}

/// `(x, eps)` when `t` is `x * recip(sqrt(s + eps))`, `x * rsqrt(s + eps)` or
/// `x / sqrt(s + eps)`, with `stat(s)` returning `x`.
fn scaled_by_inv_sqrt(
    cx: &Rewrite<'_>,
    t: ValueRef,
    stat: impl Fn(ValueRef) -> Option<ValueRef>,
) -> Option<(ValueRef, f32)> {
    let n = cx.def(t)?;
    let (x, denom) = if let Some(m) = binary(n, BinaryOp::Mul) {
        commuted(m, |x, r| {
            let r = cx.def(r)?;
            let s = unary(r, UnaryOp::Rsqrt).or_else(|| unary(cx.def(unary(r, UnaryOp::Recip)?)?, UnaryOp::Sqrt))?;
            Some((x, s))
        })?
    } else {
        let (x, sq) = binary(n, BinaryOp::Div)?;
        (x, unary(cx.def(sq)?, UnaryOp::Sqrt)?)
    };
    let sum = binary(cx.def(denom)?, BinaryOp::Add)?;
    commuted(sum, |s, e| {
        let eps = cx.scalar(e)?;
        (stat(s)? == x).then_some((x, eps))
    })
}

/// `(a, b)` when `v` is `a * b` or `pow(a, 2)` (then `b = a`).
fn square_of(cx: &Rewrite<'_>, v: ValueRef) -> Option<(ValueRef, ValueRef)> {
    let n = cx.def(v)?;
    if let Some(ab) = binary(n, BinaryOp::Mul) {
        return Some(ab);
    }
    let (a, e) = binary(n, BinaryOp::Pow)?;
    (cx.scalar(e)? == 2.0).then_some((a, a))
}

fn last_dim(cx: &Rewrite<'_>, x: ValueRef) -> Option<u64> {
    cx.ty(x).shape.last()?.as_const()
}

/// Emits `op(reshape(x, [rows, features]), weights..)` reshaped back to `root`'s shape. Each
/// weight must be a vector over `x`'s last dim; when the features span more dims than the last,
/// `op` gets `Some(group)` and returns `None` if it cannot normalize per group.
fn norm_node(
    cx: &mut Rewrite<'_>,
    root: u32,
    x: ValueRef,
    weights: &[ValueRef],
    op: impl Fn(Option<u32>) -> Option<Op>,
) -> Result<Option<ValueRef>, IrError> {
    let Some(last) = last_dim(cx, x) else { return Ok(None) };
    let Some((rows, features)) = rows_features(cx.ty(x).shape.dims()) else { return Ok(None) };
    if weights.iter().any(|&w| !matches!(w, ValueRef::Weight(_)) || cx.ty(w).shape.dims() != [Dim::Const(last)]) {
        return Ok(None);
    }
    let group = if features == last { None } else { u32::try_from(last).ok() };
    if features != last && group.is_none() {
        return Ok(None);
    }
    let Some(op) = op(group) else { return Ok(None) };
    let x2 = cx.map(x)?;
    let x2 = cx.reshape(x2, vec![rows, Dim::Const(features)])?;
    let mut args = vec![x2];
    args.extend_from_slice(weights);
    let y = cx.emit(op, args)?;
    let shape = cx.old.nodes[root as usize].ty.shape.0.clone();
    cx.reshape(y, shape).map(Some)
}
