//! Scaled-dot-product attention with a causal (optionally sliding-window) mask and grouped
//! KV heads, as transformers' eager attention spells it over `[1, heads, seq, head_dim]`:
//! `softmax(q·kᵀ · scale + mask) · v`, with `repeat_kv`'s expand for grouped-query attention.

use super::rope::start_pos;
use super::{binary, commuted, unary};
use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{BinaryOp, Dim, IrError, Op, UnaryOp, ValueRef};

/// Largest mask read to check it (positions²).
const MAX_MASK: u64 = 1 << 26;

/// The mask value below which a score counts as masked out (transformers uses the dtype's
/// minimum, -3.4e38, or -inf).
const MASKED: f32 = -1e30;

pub struct AttentionRule;

impl Rule for AttentionRule {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let Some(m) = match_attention(cx, ValueRef::Node(root)) else { return Ok(None) };
        let [Dim::Const(1), Dim::Const(heads), seq, Dim::Const(head_dim)] = cx.ty(m.q).shape.dims()[..] else {
            return Ok(None);
        };
        let Dim::Const(kv_heads) = cx.ty(m.k).shape.dims()[1] else { return Ok(None) };
        let (Ok(heads32), Ok(kv32), Ok(hd32)) =
            (u32::try_from(heads), u32::try_from(kv_heads), u32::try_from(head_dim))
        else {
            return Ok(None);
        };
        let start = start_pos(cx);
        let rows = |v: ValueRef, h: u64, cx: &mut Rewrite<'_>| -> Result<ValueRef, IrError> {
            let v = cx.map(v)?;
            let t = cx.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![v])?;
            cx.reshape(t, vec![seq, Dim::Const(h * head_dim)])
        };
        let q = rows(m.q, heads, cx)?;
        let k = rows(m.k, kv_heads, cx)?;
        let v = rows(m.v, kv_heads, cx)?;
        let op = Op::Attention { heads: heads32, kv_heads: kv32, head_dim: hd32, scale: m.scale, window: m.window };
        let a = cx.emit(op, vec![q, k, v, start])?;
        let a = cx.reshape(a, vec![Dim::Const(1), seq, Dim::Const(heads), Dim::Const(head_dim)])?;
        cx.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![a]).map(Some)
    }
}

struct Match {
    /// `[1, heads, seq, d]`, `[1, kv_heads, seq, d]` (before `repeat_kv`).
    q: ValueRef,
    k: ValueRef,
    v: ValueRef,
    scale: f32,
    window: Option<u32>,
}

fn match_attention(cx: &Rewrite<'_>, root: ValueRef) -> Option<Match> {
    let out = cx.def_op(root, |op| *op == Op::BatchMatMul)?;
    let (probs, v_rep) = (out.args[0], out.args[1]);
    let probs = nan_guarded(cx, probs).unwrap_or(probs);
    let softmax = cx.def_op(probs, |op| *op == Op::Softmax)?;
    let (scores, window) =
        commuted(binary(cx.def(softmax.args[0])?, BinaryOp::Add)?, |s, mask| Some((s, causal_window(cx, mask)?)))?;
    let (scores, post) = scaled(cx, scores);
    let qk = cx.def_op(scores, |op| *op == Op::BatchMatMul)?;
    let (q, q_scale) = scaled(cx, qk.args[0]);
    let (kt, k_scale) = scaled(cx, qk.args[1]);
    let k_rep = transposed_last_two(cx, kt)?;
    let ((k, kn), (v, vn)) = (repeated_kv(cx, k_rep), repeated_kv(cx, v_rep));
    let rank4 = |x: ValueRef| cx.ty(x).shape.rank() == 4;
    if !(rank4(q) && rank4(k) && rank4(v)) || cx.ty(k).shape != cx.ty(v).shape || kn != vn {
        return None;
    }
    let (qd, kd) = (cx.ty(q).shape.dims(), cx.ty(k).shape.dims());
    let heads_match = match (qd[1], kd[1]) {
        (Dim::Const(h), Dim::Const(kv)) => kv.checked_mul(kn) == Some(h),
        _ => false,
    };
    if qd[0] != Dim::Const(1) || qd[2] != kd[2] || qd[3] != kd[3] || !heads_match {
        return None;
    }
    Some(Match { q, k, v, scale: q_scale * k_scale * post, window })
}

/// `p` when `v` is `select(is_nan(p), 0, p)` (transformers' guard for fully masked rows, which a
/// causal mask never produces).
fn nan_guarded(cx: &Rewrite<'_>, v: ValueRef) -> Option<ValueRef> {
    let n = cx.def_op(v, |op| *op == Op::Select)?;
    let (cond, zero, p) = (n.args[0], n.args[1], n.args[2]);
    (unary(cx.def(cond)?, UnaryOp::IsNan)? == p && cx.scalar(zero)? == 0.0).then_some(p)
}

/// `(x, c)` for `x * c` or `x / (1 / c)` with a scalar constant; `(v, 1)` otherwise.
fn scaled(cx: &Rewrite<'_>, v: ValueRef) -> (ValueRef, f32) {
    let Some(n) = cx.def(v) else { return (v, 1.0) };
    if let Some(m) = binary(n, BinaryOp::Mul) {
        if let Some(found) = commuted(m, |x, c| Some((x, cx.scalar(c)?))) {
            return found;
        }
    }
    if let Some((x, c)) = binary(n, BinaryOp::Div) {
        if let Some(c) = cx.scalar(c).filter(|&c| c != 0.0) {
            return (x, 1.0 / c);
        }
    }
    (v, 1.0)
}

/// `x` when `v` is `x` with its last two axes swapped, through transposes and reshapes that
/// only add or drop unit dims. `x` is `v`'s base or a value of `v`'s rank on the way down to it
/// (keys transposed to heads-major and then swapped, as GPT-J's export does).
fn transposed_last_two(cx: &Rewrite<'_>, v: ValueRef) -> Option<ValueRef> {
    let (base, order) = view(cx, v);
    let n = order.len();
    let mut want = order;
    want.swap(n.checked_sub(2)?, n - 1);
    let mut u = cx.def(v).filter(|d| matches!(d.op, Op::Reshape { .. } | Op::Transpose { .. }))?.args[0];
    loop {
        if cx.ty(u).shape.rank() == cx.ty(v).shape.rank() && view(cx, u) == (base, want.clone()) {
            return Some(u);
        }
        let d = cx.def(u).filter(|d| matches!(d.op, Op::Reshape { .. } | Op::Transpose { .. }))?;
        u = d.args[0];
    }
}

/// `v` as a view of a base value through transposes and unit-dim reshapes: the base, and for
/// each non-unit axis of `v` the base's non-unit axis it is.
fn view(cx: &Rewrite<'_>, v: ValueRef) -> (ValueRef, Vec<usize>) {
    let non_unit =
        |x: ValueRef| -> Vec<Dim> { cx.ty(x).shape.dims().iter().copied().filter(|&d| d != Dim::Const(1)).collect() };
    let identity = || (v, (0..non_unit(v).len()).collect());
    let Some(n) = cx.def(v) else { return identity() };
    match &n.op {
        Op::Reshape { .. } if non_unit(n.args[0]) == non_unit(v) => view(cx, n.args[0]),
        Op::Transpose { perm } => {
            let (base, inner) = view(cx, n.args[0]);
            let arg_dims = cx.ty(n.args[0]).shape.dims();
            // Non-unit index of each axis of the operand.
            let mut index = vec![usize::MAX; arg_dims.len()];
            let mut k = 0;
            for (i, &d) in arg_dims.iter().enumerate() {
                if d != Dim::Const(1) {
                    index[i] = k;
                    k += 1;
                }
            }
            let order = perm
                .iter()
                .map(|&p| p as usize)
                .filter(|&p| arg_dims[p] != Dim::Const(1))
                .map(|p| inner[index[p]])
                .collect();
            (base, order)
        }
        _ => identity(),
    }
}

/// `(k, n)` when `v` is transformers' `repeat_kv(k, n)`: `reshape(expand(reshape(k,
/// [1, kv, 1, s, d]), [1, kv, n, s, d]), [1, kv * n, s, d])` (the outer reshape may be gone
/// when a view walked through it); `(v, 1)` otherwise.
fn repeated_kv(cx: &Rewrite<'_>, v: ValueRef) -> (ValueRef, u64) {
    let found = || {
        let expand = match cx.def_op(v, |op| matches!(op, Op::Reshape { .. })) {
            Some(merged) => cx.def_op(merged.args[0], |op| matches!(op, Op::Expand { .. }))?,
            None => cx.def_op(v, |op| matches!(op, Op::Expand { .. }))?,
        };
        let split = cx.def_op(expand.args[0], |op| matches!(op, Op::Reshape { .. }))?;
        let k = split.args[0];
        let [one, kv, s, d] = cx.ty(k).shape.dims()[..] else { return None };
        let (split_dims, expand_dims) = (split.ty.shape.dims(), expand.ty.shape.dims());
        let Dim::Const(n) = *expand_dims.get(2)? else { return None };
        let ok = one == Dim::Const(1)
            && split_dims == [one, kv, Dim::Const(1), s, d]
            && expand_dims == [one, kv, Dim::Const(n), s, d];
        ok.then_some((k, n))
    };
    found().unwrap_or((v, 1))
}

/// `Some(window)` when `mask` is a causal mask read from position 0 (`slice`s of a constant
/// `[.., positions, positions]` table): 0 where key `j <= i` (and `j > i - window`), at most
/// -1e30 elsewhere. `Some(None)` for a plain causal mask.
fn causal_window(cx: &Rewrite<'_>, mask: ValueRef) -> Option<Option<u32>> {
    let mut w = mask;
    while let Some(n) = cx.def(w) {
        match n.op {
            Op::Slice { start: 0, .. } => w = n.args[0],
            _ => return None,
        }
    }
    let dims = cx.ty(w).shape.dims();
    let (rows, cols) = match dims {
        [.., Dim::Const(r), Dim::Const(c)] if dims[..dims.len() - 2].iter().all(|&d| d == Dim::Const(1)) => (*r, *c),
        _ => return None,
    };
    let values = cx.weight_values(w, MAX_MASK)?;
    let mut window: Option<u64> = None;
    for i in 0..rows {
        let row = &values[(i * cols) as usize..((i + 1) * cols) as usize];
        let first = row.iter().position(|&x| x == 0.0)? as u64;
        for (j, &x) in row.iter().enumerate() {
            let j = j as u64;
            let open = j >= first && j <= i;
            if (open && x != 0.0) || (!open && !(x <= MASKED)) {
                return None;
            }
        }
        if first > 0 {
            let w = i + 1 - first;
            if window.is_some_and(|old| old != w) {
                return None;
            }
            window = Some(w);
        } else if window.is_some_and(|w| i + 1 > w) {
            return None;
        }
    }
    match window {
        None => Some(None),
        Some(w) => u32::try_from(w).ok().map(Some),
    }
}
