//! Activations: `silu` and both forms of GELU (tanh and erf).

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

/// `(x * 0.5) * (1 + erf(x / sqrt(2)))` → `gelu(x)` (the exact form; also `x * (1 / sqrt(2))`
/// inside, and `(x * (1 + erf(..))) * 0.5`), constants checked, products in either order.
pub struct GeluErfRule;

impl Rule for GeluErfRule {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(mul) = binary(n, BinaryOp::Mul) else { return Ok(None) };
        // One side is 0.5·x or x, the other 1 + erf(x/√2), or that times 0.5.
        let x = commuted(mul, |a, b| {
            let x = times_const(cx, a, 0.5)?;
            (one_plus_erf_of(cx, b)? == x).then_some(x)
        })
        .or_else(|| {
            commuted(mul, |a, half| {
                let inner = (cx.scalar(half)? == 0.5).then_some(a)?;
                commuted(binary(cx.def(inner)?, BinaryOp::Mul)?, |x, p| (one_plus_erf_of(cx, p)? == x).then_some(x))
            })
        });
        let Some(x) = x else { return Ok(None) };
        let x = cx.map(x)?;
        cx.emit(Op::Unary(UnaryOp::Gelu), vec![x]).map(Some)
    }
}

/// `x` when `v` is `1 + erf(x / sqrt(2))` (or `erf(x * (1 / sqrt(2)))`), either order.
fn one_plus_erf_of(cx: &Rewrite<'_>, v: ValueRef) -> Option<ValueRef> {
    commuted(binary(cx.def(v)?, BinaryOp::Add)?, |e, one| {
        close(cx.scalar(one)?, 1.0).then_some(())?;
        let z = unary(cx.def(e)?, UnaryOp::Erf)?;
        let zn = cx.def(z)?;
        if let Some((x, c)) = binary(zn, BinaryOp::Div) {
            return close(cx.scalar(c)?, std::f32::consts::SQRT_2).then_some(x);
        }
        times_const(cx, z, std::f32::consts::FRAC_1_SQRT_2)
    })
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
