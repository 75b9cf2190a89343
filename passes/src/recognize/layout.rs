//! Layout rules: reshapes and transposes that cancel, and reshapes sunk below elementwise ops.

use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{Dim, IrError, Op, ValueRef};

/// `reshape(reshape(x))` → `reshape(x)`, or `x` when the shapes agree.
pub struct ReshapeOfReshape;

impl Rule for ReshapeOfReshape {
    fn name(&self) -> &'static str {
        "reshape-of-reshape"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Op::Reshape { shape } = &n.op else { return Ok(None) };
        let Some(inner) = cx.def_op(n.args[0], |op| matches!(op, Op::Reshape { .. })) else { return Ok(None) };
        let x = cx.map(inner.args[0])?;
        cx.reshape(x, shape.0.clone()).map(Some)
    }
}

/// `transpose(transpose(x, p), q)` → `transpose(x, p∘q)`, or `x` when that is the identity.
pub struct TransposeOfTranspose;

impl Rule for TransposeOfTranspose {
    fn name(&self) -> &'static str {
        "transpose-of-transpose"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Op::Transpose { perm: outer } = &n.op else { return Ok(None) };
        let Some(inner) = cx.def(n.args[0]) else { return Ok(None) };
        let Op::Transpose { perm: first } = &inner.op else { return Ok(None) };
        let perm: Vec<u32> = outer.iter().map(|&p| first[p as usize]).collect();
        let x = cx.map(inner.args[0])?;
        if is_identity(&perm) {
            return Ok(Some(x));
        }
        cx.emit(Op::Transpose { perm }, vec![x]).map(Some)
    }
}

/// Layout ops that change nothing: a reshape or expand to the operand's own shape, an
/// identity transpose. A transpose that only moves unit dims becomes a reshape (which the other
/// rules can merge).
pub struct NoopLayout;

impl Rule for NoopLayout {
    fn name(&self) -> &'static str {
        "noop-layout"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let same_shape = cx.ty(n.args[0]).shape == n.ty.shape;
        match &n.op {
            Op::Reshape { .. } | Op::Expand { .. } if same_shape => Ok(Some(cx.map(n.args[0])?)),
            Op::Transpose { perm } if is_identity(perm) => Ok(Some(cx.map(n.args[0])?)),
            Op::Transpose { perm } => {
                let dims = cx.ty(n.args[0]).shape.dims();
                let moved: Vec<u32> = perm.iter().copied().filter(|&p| dims[p as usize] != Dim::Const(1)).collect();
                if moved.windows(2).all(|w| w[0] < w[1]) {
                    let x = cx.map(n.args[0])?;
                    return cx.reshape(x, n.ty.shape.0.clone()).map(Some);
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// Moves a reshape below an elementwise op so reshapes meet and cancel:
/// `f(reshape(a))` → `reshape(f(a))` for unary ops, softmax and last-axis reductions that
/// keep the last dim, and slices of a reshape that only prepends unit dims; `f(reshape(a), reshape(b))` when both reshapes map the same shapes the
/// same way (or both only prepend the same number of unit dims); and `f(reshape(a), c)` when
/// `c` broadcasts the same against `a` as against the reshape.
pub struct SinkReshape;

impl Rule for SinkReshape {
    fn name(&self) -> &'static str {
        "sink-reshape"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let reshape_source = |v: ValueRef| cx.def_op(v, |op| matches!(op, Op::Reshape { .. })).map(|r| r.args[0]);
        match &n.op {
            Op::Unary(_) | Op::Softmax | Op::Reduce(_) => {
                let Some(a) = reshape_source(n.args[0]) else { return Ok(None) };
                let (from, to) = (cx.ty(a).shape.dims(), cx.ty(n.args[0]).shape.dims());
                if !matches!(n.op, Op::Unary(_)) && from.last() != to.last() {
                    return Ok(None);
                }
                let inner = cx.emit(n.op.clone(), vec![cx.map(a)?])?;
                cx.reshape(inner, n.ty.shape.0.clone()).map(Some)
            }
            // A slice of a unit-prepending reshape: slice the source.
            Op::Slice { axis, start, len } => {
                let Some(a) = reshape_source(n.args[0]) else { return Ok(None) };
                let (from, to) = (cx.ty(a).shape.dims(), cx.ty(n.args[0]).shape.dims());
                let Some(k) = prepended_units(from, to).filter(|&k| *axis as usize >= k) else { return Ok(None) };
                let op = Op::Slice { axis: *axis - k as u32, start: *start, len: *len };
                let inner = cx.emit(op, vec![cx.map(a)?])?;
                cx.reshape(inner, n.ty.shape.0.clone()).map(Some)
            }
            Op::Binary(op) => {
                let (x, y) = (n.args[0], n.args[1]);
                // With one reshaped side, the other must not broadcast it up.
                let keeps_shape = |r: ValueRef| cx.ty(r).shape == n.ty.shape;
                let operands = match (reshape_source(x), reshape_source(y)) {
                    (Some(a), Some(b)) if same_reshape(cx, (a, x), (b, y)) => (a, b),
                    (Some(a), _) if keeps_shape(x) && neutral_broadcast(cx, a, x, y) => (a, y),
                    (_, Some(b)) if keeps_shape(y) && neutral_broadcast(cx, b, y, x) => (x, b),
                    _ => return Ok(None),
                };
                let inner = cx.emit(Op::Binary(*op), vec![cx.map(operands.0)?, cx.map(operands.1)?])?;
                cx.reshape(inner, n.ty.shape.0.clone()).map(Some)
            }
            _ => Ok(None),
        }
    }
}

fn is_identity(perm: &[u32]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| p as usize == i)
}

/// How many unit dims `to` prepends to `from` (`to = [1; k] ++ from`), if that is all it does.
fn prepended_units(from: &[Dim], to: &[Dim]) -> Option<usize> {
    let k = to.len().checked_sub(from.len())?;
    (to[..k].iter().all(|&d| d == Dim::Const(1)) && &to[k..] == from).then_some(k)
}

/// Whether `reshape(a) ⊙ reshape(b)` equals `reshape(a ⊙ b)`.
fn same_reshape(cx: &Rewrite<'_>, (a, ra): (ValueRef, ValueRef), (b, rb): (ValueRef, ValueRef)) -> bool {
    let (sa, sb) = (cx.ty(a).shape.dims(), cx.ty(b).shape.dims());
    let (ta, tb) = (cx.ty(ra).shape.dims(), cx.ty(rb).shape.dims());
    if sa == sb && ta == tb {
        return true;
    }
    match (prepended_units(sa, ta), prepended_units(sb, tb)) {
        (Some(i), Some(j)) => i == j && sa.len() == sb.len(),
        _ => false,
    }
}

/// Whether `c` broadcasts against `a` exactly as it does against `reshape(a)` (= `ra`): its
/// rank is at most the number of trailing dims the reshape keeps, and it adds no dims.
fn neutral_broadcast(cx: &Rewrite<'_>, a: ValueRef, ra: ValueRef, c: ValueRef) -> bool {
    let (from, to, other) = (cx.ty(a).shape.dims(), cx.ty(ra).shape.dims(), cx.ty(c).shape.dims());
    let kept = from.iter().rev().zip(to.iter().rev()).take_while(|(x, y)| x == y).count();
    other.len() <= kept
}
