//! Rotary embeddings: `x * cos + rotate(x) * sin` over `[1, heads, seq, d]` or
//! `[1, seq, heads, d]` values, where `rotate` is rotate-half (Llama's) or rotate-every-two
//! (GPT-J's interleaved pairs), with the tables read off the (folded) constants and checked.

use super::{binary, commuted, unary};
use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{BinaryOp, DType, Dim, IrError, Op, Shape, TensorType, UnaryOp, ValueRef, Weight, WeightSource};

/// The `i32[]` weight (value 0) that recognised `rope` and `attention` nodes take as their
/// start position: an imported graph computes positions `0..seq`. The decoder-signature pass
/// replaces it with the `pos` input.
pub const START_POS: &str = "start_pos";

/// Largest rotary table read to check it (positions × rotary dims).
const MAX_TABLE: u64 = 1 << 24;

/// `x * cos + rotate_half(x) * sin` → `rope`, `x * cos + rotate_every_two(x) * sin` →
/// `rope(interleaved)`, and `concat(rope(x[.., :r]), x[.., r:])` → `rope(rotary_dim = r)`
/// (partial rotary, as Phi-2 and GPT-J do).
pub struct RopeRule;

impl Rule for RopeRule {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let rank = n.ty.shape.rank();
        let (x, (tables, interleaved), rotary) = match (&n.op, n.args.as_slice()) {
            (Op::Binary(BinaryOp::Add), _) => {
                let Some((x, tables)) = match_rope(cx, ValueRef::Node(root)) else { return Ok(None) };
                (x, tables, None)
            }
            // Partial rotary: the rotated first `r` features, then the rest unchanged.
            (Op::Concat { axis }, &[rotated, rest]) if *axis as usize + 1 == rank => {
                let Some((xr, tables)) = match_rope(cx, rotated) else { return Ok(None) };
                let (Some(a), Some(b)) = (cx.def(xr), cx.def(rest)) else { return Ok(None) };
                match (&a.op, &b.op) {
                    (Op::Slice { axis: a1, start: 0, len: r }, Op::Slice { axis: a2, start, .. })
                        if a.args[0] == b.args[0] && *a1 == *axis && *a2 == *axis && Some(*start) == r.as_const() =>
                    {
                        (a.args[0], tables, Some(*start))
                    }
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        // Heads-major `[1, heads, seq, d]` (after the exporter's transpose) or sequence-major
        // `[1, seq, heads, d]` (before it).
        let dims = cx.ty(x).shape.dims().to_vec();
        let (heads, seq, head_dim, seq_major) = match dims[..] {
            [Dim::Const(1), seq @ Dim::Sym(_), Dim::Const(heads), Dim::Const(d)] => (heads, seq, d, true),
            [Dim::Const(1), Dim::Const(heads), seq, Dim::Const(d)] => (heads, seq, d, false),
            _ => return Ok(None),
        };
        let rotary_dim = rotary.unwrap_or(head_dim);
        let (Ok(head_dim32), Ok(rotary32)) = (u32::try_from(head_dim), u32::try_from(rotary_dim)) else {
            return Ok(None);
        };
        let Some((cos, sin)) = rope_tables(cx, tables, rotary_dim, seq, interleaved)? else { return Ok(None) };
        let start = start_pos(cx);
        let x = cx.map(x)?;
        let rows = if seq_major { x } else { cx.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![x])? };
        let rows = cx.reshape(rows, vec![seq, Dim::Const(heads * head_dim)])?;
        let op = Op::Rope { head_dim: head_dim32, rotary_dim: rotary32, interleaved };
        let y = cx.emit(op, vec![rows, cos, sin, start])?;
        let y = cx.reshape(y, vec![Dim::Const(1), seq, Dim::Const(heads), Dim::Const(head_dim)])?;
        if seq_major { Ok(Some(y)) } else { cx.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![y]).map(Some) }
    }
}

/// The cos and sin operands of a rotation, and whether its pairs are interleaved.
type Tables = ((ValueRef, ValueRef), bool);

/// The values a rotary add reads: `x`, and the cos and sin operands.
fn match_rope(cx: &Rewrite<'_>, v: ValueRef) -> Option<(ValueRef, Tables)> {
    let add = binary(cx.def(v)?, BinaryOp::Add)?;
    commuted(add, |a, b| {
        let (x, cos) = operand_and_table(cx, a)?;
        let (rot, sin) = operand_and_table(cx, b)?;
        if rotate_half_of(cx, rot) == Some(x) {
            return Some((x, ((cos, sin), false)));
        }
        (rotate_every_two_of(cx, rot)? == x).then_some((x, ((cos, sin), true)))
    })
}

/// `(x, table)` when `v` is `x * table` with `table` a (sliced) weight.
fn operand_and_table(cx: &Rewrite<'_>, v: ValueRef) -> Option<(ValueRef, ValueRef)> {
    commuted(binary(cx.def(v)?, BinaryOp::Mul)?, |x, t| table_weight(cx, t).map(|_| (x, t)))
}

/// The weight under a rotary operand: the weight itself, or `slice(weight, axis, 0, seq)`.
fn table_weight(cx: &Rewrite<'_>, t: ValueRef) -> Option<u32> {
    match t {
        ValueRef::Weight(w) => Some(w),
        v => {
            let n = cx.def(v)?;
            match (&n.op, n.args[0]) {
                (Op::Slice { start: 0, .. }, ValueRef::Weight(w)) => Some(w),
                _ => None,
            }
        }
    }
}

/// `x` when `v` is `concat(-x[.., h:], x[.., :h])` along the last axis (`h` = half of it).
fn rotate_half_of(cx: &Rewrite<'_>, v: ValueRef) -> Option<ValueRef> {
    let n = cx.def(v)?;
    let last = (n.ty.shape.rank() - 1) as u32;
    let Op::Concat { axis } = n.op else { return None };
    let width = n.ty.shape.last()?.as_const()?;
    if axis != last || width % 2 != 0 {
        return None;
    }
    let half = width / 2;
    let hi = unary(cx.def(n.args[0])?, UnaryOp::Neg)?;
    let slice_of = |v: ValueRef, from: u64| {
        let s = cx.def(v)?;
        match s.op {
            Op::Slice { axis: a, start, len } if a == last && start == from && len == Dim::Const(half) => {
                Some(s.args[0])
            }
            _ => None,
        }
    };
    let x = slice_of(hi, half)?;
    (slice_of(n.args[1], 0)? == x && cx.ty(x).shape.last() == Some(Dim::Const(width))).then_some(x)
}

/// The value under a chain of reshapes (which never reorder elements).
fn through_reshapes(cx: &Rewrite<'_>, mut v: ValueRef) -> ValueRef {
    while let Some(n) = cx.def(v).filter(|n| matches!(n.op, Op::Reshape { .. })) {
        v = n.args[0];
    }
    v
}

/// `x` when `v` is elements `k, k + 2, ...` of `x`'s last axis (of width `width`), as the
/// importer lowers `x[..., k::2]`: the axis split into `[width / 2, 2]`, slice `k` of the pairs.
fn every_other_of(cx: &Rewrite<'_>, v: ValueRef, k: u64, width: u64) -> Option<ValueRef> {
    let s = cx.def(through_reshapes(cx, v))?;
    let pairs = *s.args.first()?;
    let pd = cx.ty(pairs).shape.dims().to_vec();
    let [.., Dim::Const(half), Dim::Const(2)] = pd[..] else { return None };
    let last = (pd.len() - 1) as u32;
    let ok = matches!(s.op, Op::Slice { axis, start, len: Dim::Const(1) } if axis == last && start == k);
    let x = through_reshapes(cx, pairs);
    (ok && half * 2 == width && cx.ty(x).shape.last() == Some(Dim::Const(width))).then_some(x)
}

/// `x` when `v` is GPT-J's `rotate_every_two(x)`: `(-x1, x0, -x3, x2, ...)`, the odd elements
/// negated and the even ones stacked on a new last axis, flattened.
fn rotate_every_two_of(cx: &Rewrite<'_>, v: ValueRef) -> Option<ValueRef> {
    let width = cx.ty(v).shape.last()?.as_const()?;
    let c = cx.def(through_reshapes(cx, v))?;
    let cd = c.ty.shape.dims();
    let pairs = matches!(cd, [.., h, Dim::Const(2)] if *h == Dim::Const(width / 2));
    if !pairs || !matches!(c.op, Op::Concat { axis } if axis as usize + 1 == cd.len()) || c.args.len() != 2 {
        return None;
    }
    let neg = unary(cx.def(through_reshapes(cx, c.args[0]))?, UnaryOp::Neg)?;
    let x = every_other_of(cx, neg, 1, width)?;
    (every_other_of(cx, c.args[1], 0, width)? == x).then_some(x)
}

/// Checks the cos and sin operands are rotary tables (`[positions, rotary_dim]` with unit
/// dims around, the position axis the node's sequence axis, read from position 0; each row its
/// first half twice, or interleaved each value twice in a row) and returns them as the
/// `[positions, rotary_dim / 2]` weights `rope` takes, shared by every layer that reads the
/// same tables.
fn rope_tables(
    cx: &mut Rewrite<'_>,
    (cos, sin): (ValueRef, ValueRef),
    rotary_dim: u64,
    seq: Dim,
    interleaved: bool,
) -> Result<Option<(ValueRef, ValueRef)>, IrError> {
    let mut out = [cos; 2];
    for (slot, t) in out.iter_mut().zip([cos, sin]) {
        let Some(w) = table_weight(cx, t) else { return Ok(None) };
        let dims = cx.old.weights[w as usize].ty.shape.dims().to_vec();
        let Some((&last, lead)) = dims.split_last() else { return Ok(None) };
        // The operand's position axis is the node's sequence axis (a slice from 0 of it): the
        // last such axis, every other one a unit.
        let used = cx.ty(t).shape.dims().to_vec();
        let Some(axis) = (0..lead.len()).rev().find(|&i| used.get(i) == Some(&seq)) else { return Ok(None) };
        let units = (0..lead.len()).filter(|&i| i != axis).all(|i| lead[i] == Dim::Const(1));
        let (Some(positions), true) = (lead[axis].as_const(), units) else { return Ok(None) };
        if last != Dim::Const(rotary_dim) {
            return Ok(None);
        }
        let half = rotary_dim / 2;
        let Some(values) = cx.weight_values(ValueRef::Weight(w), MAX_TABLE) else { return Ok(None) };
        let mut table = Vec::with_capacity((positions * half) as usize);
        for row in values.chunks_exact(rotary_dim as usize) {
            if interleaved {
                if row.chunks_exact(2).any(|p| p[0] != p[1]) {
                    return Ok(None);
                }
                table.extend(row.iter().step_by(2));
            } else {
                let (a, b) = row.split_at(half as usize);
                if a != b {
                    return Ok(None);
                }
                table.extend_from_slice(a);
            }
        }
        let name = format!("{}.rope_table", cx.old.weights[w as usize].name);
        let ty = TensorType::new(DType::F32, Shape::of(&[positions, half]));
        *slot = cx.weight(&name, || Weight::new("", ty, WeightSource::Literal(table)));
    }
    Ok(Some((out[0], out[1])))
}

/// The shared `start_pos` weight (an `i32[]` zero).
pub(super) fn start_pos(cx: &mut Rewrite<'_>) -> ValueRef {
    cx.weight(START_POS, || {
        Weight::new("", TensorType::new(DType::I32, Shape(vec![])), WeightSource::Literal(vec![0.0]))
    })
}
