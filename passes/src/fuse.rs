//! `fuse-epilogues`: a `transpose_b` matmul absorbs the elementwise ops that follow it into one
//! `linear`: a scaling by a constant, the bias add, the activation, the GLU product with a
//! second matmul of the same input, and the residual add, in that order
//! (`act(scale * (x·wᵀ) + bias) * (x·upᵀ) + residual`).
//! Their intermediate results never reach memory, and a Llama layer's MLP becomes two kernels.
//!
//! A rule fires only when the matmul's result has no other use, and only in epilogue order (a
//! bias after the activation is a different function), so the result is the same f32 values:
//! each step rounds exactly as the unfused op did.

use crate::recognize::{binary, commuted};
use crate::rewrite::{Fired, Rewrite, Rule, rewrite_to_fixpoint};
use crate::{Changed, Pass, PassError};
use edgec_ir::{BinaryOp, DType, Graph, IrError, Op, UnaryOp, ValueRef};

pub struct FuseEpilogues;

impl Pass for FuseEpilogues {
    fn name(&self) -> &'static str {
        "fuse-epilogues"
    }

    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let fired: Fired = rewrite_to_fixpoint(g, RULES, MAX_SWEEPS)
            .map_err(|error| PassError::Failed { pass: self.name(), error })?;
        Ok(if fired.iter().any(|&(_, n)| n > 0) { Changed::Yes } else { Changed::No })
    }
}

const RULES: &[&dyn Rule] = &[&ScaleRule, &BiasRule, &ActRule, &GateRule, &ResidualRule];

/// Each sweep fuses at least one epilogue stage per matmul; there are five.
const MAX_SWEEPS: usize = 8;

/// A matmul seen as a `linear` under construction (a plain `transpose_b` matmul has no epilogue).
struct LinearView {
    scale: Option<f32>,
    act: Option<UnaryOp>,
    gated: bool,
    bias: bool,
    residual: bool,
    /// Old-graph operands in `linear`'s order.
    args: Vec<ValueRef>,
}

impl LinearView {
    /// `v` as a matmul whose result only the root uses, if it is one.
    fn of(cx: &Rewrite<'_>, v: ValueRef) -> Option<LinearView> {
        let n = cx.def(v)?;
        if cx.uses(v) != 1 || n.ty.dtype != DType::F32 {
            return None;
        }
        match n.op {
            Op::MatMul { transpose_b: true } => {
                let args = n.args.clone();
                Some(LinearView { scale: None, act: None, gated: false, bias: false, residual: false, args })
            }
            Op::Linear { scale, act, gated, bias, residual } => {
                Some(LinearView { scale, act, gated, bias, residual, args: n.args.clone() })
            }
            _ => None,
        }
    }

    fn is_plain(&self) -> bool {
        self.scale.is_none() && self.act.is_none() && !self.gated && !self.bias && !self.residual
    }

    /// Emits the `linear`, with `extra` (an old value) inserted at its operand index if given.
    fn emit(self, cx: &mut Rewrite<'_>, extra: Option<(usize, ValueRef)>) -> Result<Option<ValueRef>, IrError> {
        let mut args = self.args;
        if let Some((at, v)) = extra {
            args.insert(at, v);
        }
        let args = args.into_iter().map(|a| cx.map(a)).collect::<Result<Vec<_>, _>>()?;
        let op = Op::Linear {
            scale: self.scale,
            act: self.act,
            gated: self.gated,
            bias: self.bias,
            residual: self.residual,
        };
        cx.emit(op, args).map(Some)
    }
}

/// `matmul * c` with `c` a scalar constant → `linear(scale=c)`.
struct ScaleRule;

impl Rule for ScaleRule {
    fn name(&self) -> &'static str {
        "scale"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(mul) = binary(n, BinaryOp::Mul) else { return Ok(None) };
        let found = commuted(mul, |m, c| {
            let view = LinearView::of(cx, m).filter(LinearView::is_plain)?;
            Some((view, cx.scalar(c)?))
        });
        let Some((mut view, c)) = found else { return Ok(None) };
        view.scale = Some(c);
        view.emit(cx, None)
    }
}

/// `matmul + bias` with a bias `[N]` (broadcast over the rows) → `linear(bias)`.
struct BiasRule;

impl Rule for BiasRule {
    fn name(&self) -> &'static str {
        "bias"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(add) = binary(n, BinaryOp::Add) else { return Ok(None) };
        let found = commuted(add, |m, bias| {
            let view = LinearView::of(cx, m)?;
            let bt = cx.ty(bias);
            let fits = bt.dtype == DType::F32 && bt.shape.dims() == [n.ty.shape.dims()[1]];
            let bare = view.act.is_none() && !view.gated && !view.bias && !view.residual;
            (bare && fits).then_some((view, bias))
        });
        let Some((mut view, bias)) = found else { return Ok(None) };
        view.bias = true;
        view.emit(cx, Some((2, bias)))
    }
}

/// `act(matmul)` → `linear(act)`, for any elementwise function.
struct ActRule;

impl Rule for ActRule {
    fn name(&self) -> &'static str {
        "act"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let (Op::Unary(act), &[m]) = (&n.op, n.args.as_slice()) else { return Ok(None) };
        let Some(mut view) = LinearView::of(cx, m).filter(|v| v.act.is_none() && !v.gated && !v.residual) else {
            return Ok(None);
        };
        view.act = Some(*act);
        view.emit(cx, None)
    }
}

/// `act(x·gateᵀ [+ bias]) * (x·upᵀ)` → `linear(act, gated)`: the GLU of Llama-style MLPs.
struct GateRule;

impl Rule for GateRule {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(mul) = binary(n, BinaryOp::Mul) else { return Ok(None) };
        let found = commuted(mul, |g, u| {
            let gate = LinearView::of(cx, g).filter(|v| !v.gated && !v.residual)?;
            let up = LinearView::of(cx, u).filter(LinearView::is_plain)?;
            let same_x = gate.args[0] == up.args[0];
            let same_shape = cx.ty(gate.args[1]) == cx.ty(up.args[1]);
            (same_x && same_shape && g != u).then_some((gate, up.args[1]))
        });
        let Some((mut gate, up)) = found else { return Ok(None) };
        gate.gated = true;
        gate.emit(cx, Some((2, up)))
    }
}

/// `linear + r` with `r` of the result's type → `linear(residual)`.
struct ResidualRule;

impl Rule for ResidualRule {
    fn name(&self) -> &'static str {
        "residual"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let Some(add) = binary(n, BinaryOp::Add) else { return Ok(None) };
        let found = commuted(add, |m, r| {
            let view = LinearView::of(cx, m).filter(|v| !v.residual)?;
            (m != r && cx.ty(r) == &n.ty && cx.ty(m) == &n.ty).then_some((view, r))
        });
        let Some((mut view, r)) = found else { return Ok(None) };
        view.residual = true;
        let at = view.args.len();
        view.emit(cx, Some((at, r)))
    }
}
