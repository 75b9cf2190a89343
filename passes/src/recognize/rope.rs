//! Rotary embeddings: `x * cos + rotate_half(x) * sin` over heads-major `[1, heads, seq, d]`
//! values, with the tables read off the (folded) constants and checked.

use super::{binary, commuted, unary};
use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{BinaryOp, DType, Dim, IrError, Op, Shape, TensorType, UnaryOp, ValueRef, Weight, WeightSource};

/// The `i32[]` weight (value 0) that recognised `rope` and `attention` nodes take as their
/// start position: an imported graph computes positions `0..seq`. The decoder-signature pass
/// replaces it with the `pos` input.
pub const START_POS: &str = "start_pos";

/// Largest rotary table read to check it (positions × rotary dims).
const MAX_TABLE: u64 = 1 << 24;

/// `x * cos + rotate_half(x) * sin` → `rope`, and `concat(rope(x[.., :r]), x[.., r:])` →
/// `rope(rotary_dim = r)` (partial rotary, as Phi-2 does).
pub struct RopeRule;

impl Rule for RopeRule {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let rank = n.ty.shape.rank();
        let (x, tables, rotary) = match (&n.op, n.args.as_slice()) {
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
        let dims = cx.ty(x).shape.dims().to_vec();
        let [Dim::Const(1), Dim::Const(heads), seq, Dim::Const(head_dim)] = dims[..] else { return Ok(None) };
        let rotary_dim = rotary.unwrap_or(head_dim);
        let (Ok(head_dim32), Ok(rotary32)) = (u32::try_from(head_dim), u32::try_from(rotary_dim)) else {
            return Ok(None);
        };
        let Some((cos, sin)) = rope_tables(cx, tables, rotary_dim, seq)? else { return Ok(None) };
        let start = start_pos(cx);
        let x = cx.map(x)?;
        let rows = cx.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![x])?;
        let rows = cx.reshape(rows, vec![seq, Dim::Const(heads * head_dim)])?;
        let y = cx.emit(Op::Rope { head_dim: head_dim32, rotary_dim: rotary32 }, vec![rows, cos, sin, start])?;
        let y = cx.reshape(y, vec![Dim::Const(1), seq, Dim::Const(heads), Dim::Const(head_dim)])?;
        cx.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![y]).map(Some)
    }
}

/// The values a rotary add reads: `x`, and the cos and sin operands.
fn match_rope(cx: &Rewrite<'_>, v: ValueRef) -> Option<(ValueRef, (ValueRef, ValueRef))> {
    let add = binary(cx.def(v)?, BinaryOp::Add)?;
    commuted(add, |a, b| {
        let (x, cos) = operand_and_table(cx, a)?;
        let (rot, sin) = operand_and_table(cx, b)?;
        (rotate_half_of(cx, rot)? == x).then_some((x, (cos, sin)))
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

/// Checks the cos and sin operands are rotate-half tables (`[.., positions, rotary_dim]`, each
/// row its first half twice, read from position 0) and returns them as the `[positions,
/// rotary_dim / 2]` weights `rope` takes, shared by every layer that reads the same tables.
fn rope_tables(
    cx: &mut Rewrite<'_>,
    (cos, sin): (ValueRef, ValueRef),
    rotary_dim: u64,
    seq: Dim,
) -> Result<Option<(ValueRef, ValueRef)>, IrError> {
    let mut out = [cos; 2];
    for (slot, t) in out.iter_mut().zip([cos, sin]) {
        let Some(w) = table_weight(cx, t) else { return Ok(None) };
        let ty = &cx.old.weights[w as usize].ty;
        let dims = ty.shape.dims();
        let Some((&last, lead)) = dims.split_last() else { return Ok(None) };
        let Some((&positions, units)) = lead.split_last() else { return Ok(None) };
        let (Some(positions), true) = (positions.as_const(), units.iter().all(|&d| d == Dim::Const(1))) else {
            return Ok(None);
        };
        // The operand's position axis must be the node's sequence axis (a slice from 0 of it).
        if last != Dim::Const(rotary_dim) || cx.ty(t).shape.dims()[lead.len() - 1] != seq {
            return Ok(None);
        }
        let half = rotary_dim / 2;
        let Some(values) = cx.weight_values(ValueRef::Weight(w), MAX_TABLE) else { return Ok(None) };
        let mut table = Vec::with_capacity((positions * half) as usize);
        for row in values.chunks_exact(rotary_dim as usize) {
            let (a, b) = row.split_at(half as usize);
            if a != b {
                return Ok(None);
            }
            table.extend_from_slice(a);
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
