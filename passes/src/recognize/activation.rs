//! Activations: `silu` and the tanh form of GELU.

use super::{binary, commuted, unary};
use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{BinaryOp, IrError, Op, UnaryOp, ValueRef};

/// `x * sigmoid(x)` → `silu(x)`. (SwiGLU's `silu(gate) * up` is then the plain `mul` the
/// checkpoint builder emits too.)
pub struct SiluRule;

impl Rule for SiluRule {
    fn name(&self) -> &'static str {
        "silu"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(mul) = binary(n, BinaryOp::Mul) else { return Ok(None) };
        let Some(x) = commuted(mul, |x, s| (unary(cx.def(s)?, UnaryOp::Sigmoid)? == x).then_some(x)) else {
            return Ok(None);
        };
        let x = cx.map(x)?;
        cx.emit(Op::Unary(UnaryOp::Silu), vec![x]).map(Some)
    }
}

/// `(0.5 * x) * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x³)))` → `gelu_tanh(x)`, with the
/// constants checked and the products in either order.
pub struct GeluTanhRule;

impl Rule for GeluTanhRule {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(mul) = binary(n, BinaryOp::Mul) else { return Ok(None) };
        let Some(x) = commuted(mul, |half, one_plus| {
            let x = times_const(cx, half, 0.5)?;
            let t =
                commuted(binary(cx.def(one_plus)?, BinaryOp::Add)?, |t, one| close(cx.scalar(one)?, 1.0).then_some(t))?;
            let inner = times_const(cx, unary(cx.def(t)?, UnaryOp::Tanh)?, (2.0 / std::f32::consts::PI).sqrt())?;
            let cubic = commuted(binary(cx.def(inner)?, BinaryOp::Add)?, |x2, c| {
                (x2 == x && is_cube_of(cx, times_const(cx, c, 0.044715)?, x)).then_some(())
            });
            cubic.map(|()| x)
        }) else {
            return Ok(None);
        };
        let x = cx.map(x)?;
        cx.emit(Op::Unary(UnaryOp::GeluTanh), vec![x]).map(Some)
    }
}

/// `x` when `v` is `x * c` (either order) for a scalar constant `c` close to `value`.
fn times_const(cx: &Rewrite<'_>, v: ValueRef, value: f32) -> Option<ValueRef> {
    commuted(binary(cx.def(v)?, BinaryOp::Mul)?, |x, c| close(cx.scalar(c)?, value).then_some(x))
}

/// Whether `v` is `x * x * x` (any association) or `pow(x, 3)`.
fn is_cube_of(cx: &Rewrite<'_>, v: ValueRef, x: ValueRef) -> bool {
    let Some(n) = cx.def(v) else { return false };
    if let Some((a, e)) = binary(n, BinaryOp::Pow) {
        return a == x && cx.scalar(e) == Some(3.0);
    }
    let is_square = |s: ValueRef| cx.def(s).and_then(|s| binary(s, BinaryOp::Mul)) == Some((x, x));
    binary(n, BinaryOp::Mul).is_some_and(|(a, b)| (a == x && is_square(b)) || (b == x && is_square(a)))
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}
