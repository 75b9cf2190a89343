//! Row-copy and elementwise kernels: `gather`, `cache_write`, unary ops, binary ops.

use super::{Ext, F32X4, Kargs, SLOT_POS, each_chunk, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{InstBuilder, Type, Value, condcodes::FloatCC, types};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::{BinaryOp, Dim, Shape, UnaryOp};

/// Copies `n` f32s from `src` to `dst`.
fn copy_row(b: &mut FunctionBuilder, src: Value, dst: Value, n: u64) {
    each_chunk(b, n, |b, off, ty| {
        let s = b.ins().iadd(src, off);
        let v = b.ins().load(ty, ro(), s, 0);
        let d = b.ins().iadd(dst, off);
        b.ins().store(rw(), v, d, 0);
    });
}

/// Lowers `gather`: task `t` copies table row `ids[t]` to output row `t`. Ids were range-checked
/// by the entry point.
pub(crate) fn gather(b: &mut FunctionBuilder, k: &Kargs, h: u64) {
    let table = k.ptr(b, 0);
    let ids = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    each_task(b, k, |b, t| {
        let ip = b.addr(ids, t, 4);
        let id = b.ins().load(types::I32, ro(), ip, 0);
        let id = b.ins().sextend(types::I64, id);
        let src = b.addr(table, id, h as i64 * 4);
        let dst = b.addr(out, t, h as i64 * 4);
        copy_row(b, src, dst, h);
    });
}

/// Lowers `cache_write`: task `t` copies row `t` of the rows operand into state row `pos + t`,
/// rounded to f16 for a `half` state (8 elements per 16-byte store, then a scalar tail).
pub(crate) fn cache_write(b: &mut FunctionBuilder, k: &Kargs, w: u64, half: bool) {
    let state = k.ptr(b, 0);
    let rows = k.ptr(b, 1);
    let pos = k.slot(b, SLOT_POS);
    let esize = if half { 2 } else { 4 };
    each_task(b, k, |b, t| {
        let src = b.addr(rows, t, w as i64 * 4);
        let p = b.ins().iadd(pos, t);
        let dst = b.addr(state, p, w as i64 * esize);
        if !half {
            copy_row(b, src, dst, w);
            return;
        }
        let w8 = w / 8 * 8;
        if w8 > 0 {
            let lo = b.c64(0);
            let hi = b.c64(w8 as i64);
            b.for_range(lo, hi, 8, |b, i| {
                let s = b.addr(src, i, 4);
                let x0 = b.ins().load(F32X4, ro(), s, 0);
                let x1 = b.ins().load(F32X4, ro(), s, 16);
                let h0 = super::quant::f32_to_half_bits(b, x0);
                let h1 = super::quant::f32_to_half_bits(b, x1);
                // Every lane is below 2^16, so the unsigned saturating narrow is exact.
                let h = b.ins().unarrow(h0, h1);
                let d = b.addr(dst, i, 2);
                b.ins().store(rw(), h, d, 0);
            });
        }
        for i in w8..w {
            let x = b.ins().load(types::F32, ro(), src, i as i32 * 4);
            let h = super::quant::f32_to_half_bits(b, x);
            b.ins().istore16(rw(), h, dst, i as i32 * 2);
        }
    });
}

pub(crate) fn apply_unary(b: &mut FunctionBuilder, op: UnaryOp, x: Value, ty: Type) -> Value {
    match op {
        UnaryOp::Neg => b.ins().fneg(x),
        UnaryOp::Exp => math::exp(b, x),
        UnaryOp::Sqrt => b.ins().sqrt(x),
        UnaryOp::Rsqrt => {
            // Exact 1/sqrt (no approximate rsqrt instruction): matches the reference.
            let s = b.ins().sqrt(x);
            let one = math::fconst(b, ty, 1.0);
            b.ins().fdiv(one, s)
        }
        UnaryOp::Recip => {
            let one = math::fconst(b, ty, 1.0);
            b.ins().fdiv(one, x)
        }
        UnaryOp::Silu => math::silu(b, x),
        UnaryOp::Sigmoid => math::sigmoid(b, x),
        UnaryOp::GeluTanh => math::gelu_tanh(b, x),
        UnaryOp::Gelu => math::gelu_erf(b, x),
        UnaryOp::Tanh => math::tanh(b, x),
        UnaryOp::Abs => b.ins().fabs(x),
        UnaryOp::Erf => math::erf(b, x),
        UnaryOp::Log => math::log(b, x),
        UnaryOp::IsNan => math::is_nan(b, x),
    }
}

/// Lowers unary ops: task = one row of `cols` elements.
pub(crate) fn unary(b: &mut FunctionBuilder, k: &Kargs, op: UnaryOp, cols: u64) {
    let x = k.ptr(b, 0);
    let out = k.ptr(b, 1);
    each_task(b, k, |b, t| {
        let xr = b.addr(x, t, cols as i64 * 4);
        let or = b.addr(out, t, cols as i64 * 4);
        each_chunk(b, cols, |b, off, ty| {
            let a = b.ins().iadd(xr, off);
            let v = b.ins().load(ty, ro(), a, 0);
            let r = apply_unary(b, op, v, ty);
            let d = b.ins().iadd(or, off);
            b.ins().store(rw(), r, d, 0);
        });
    });
}

/// How one binary operand maps onto the output `[rows, cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bcast {
    /// Same shape as the output.
    Full,
    /// One row `[cols]` reused by every output row (broadcast along the leading dims).
    Row,
    /// One value per row (`[S, 1]` against `[S, H]`).
    Col,
    /// One value for everything.
    Scalar,
}

impl Bcast {
    /// Classifies `a` against the output shape `o` (leading 1-dims ignored on both).
    pub fn classify(a: &Shape, o: &Shape) -> Option<Bcast> {
        let strip = |s: &Shape| -> Vec<Dim> {
            let d = s.dims();
            let first = d.iter().position(|&x| x != Dim::Const(1)).unwrap_or(d.len());
            d[first..].to_vec()
        };
        let (a, o) = (strip(a), strip(o));
        if a == o {
            return Some(Bcast::Full);
        }
        if a.is_empty() {
            return Some(Bcast::Scalar);
        }
        if a.len() == 1 && o.last() == a.last() {
            return Some(Bcast::Row);
        }
        if a.last() == Some(&Dim::Const(1)) && a.len() == o.len() && a[..a.len() - 1] == o[..o.len() - 1] {
            return Some(Bcast::Col);
        }
        None
    }
}

pub(crate) fn apply_binary(b: &mut FunctionBuilder, op: BinaryOp, x: Value, y: Value) -> Value {
    match op {
        BinaryOp::Add => b.ins().fadd(x, y),
        BinaryOp::Sub => b.ins().fsub(x, y),
        BinaryOp::Mul => b.ins().fmul(x, y),
        BinaryOp::Div => b.ins().fdiv(x, y),
        BinaryOp::Max => math::max_num(b, x, y, false),
        BinaryOp::Min => math::max_num(b, x, y, true),
        BinaryOp::Pow => math::pow(b, x, y),
        // Scalar only: the vectorized static kernels never get comparisons (general_spec).
        BinaryOp::Eq | BinaryOp::Lt | BinaryOp::Gt => {
            let cc = match op {
                BinaryOp::Eq => FloatCC::Equal,
                BinaryOp::Lt => FloatCC::LessThan,
                _ => FloatCC::GreaterThan,
            };
            let ty = b.func.dfg.value_type(x);
            let c = b.ins().fcmp(cc, x, y);
            let (one, zero) = (math::fconst(b, ty, 1.0), math::fconst(b, ty, 0.0));
            b.ins().select(c, one, zero)
        }
    }
}

/// Lowers binary ops with the supported broadcasts: task = one output row.
pub(crate) fn binary(b: &mut FunctionBuilder, k: &Kargs, op: BinaryOp, cols: u64, lhs: Bcast, rhs: Bcast) {
    let pa = k.ptr(b, 0);
    let pb = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    each_task(b, k, |b, t| {
        // Per operand: either a row base address, or a per-row scalar (splatted when needed).
        let prep = |b: &mut FunctionBuilder, p: Value, m: Bcast| -> (Option<Value>, Option<Value>) {
            match m {
                Bcast::Full => (Some(b.addr(p, t, cols as i64 * 4)), None),
                Bcast::Row => (Some(p), None),
                Bcast::Col => {
                    let a = b.addr(p, t, 4);
                    (None, Some(b.ins().load(types::F32, ro(), a, 0)))
                }
                Bcast::Scalar => (None, Some(b.ins().load(types::F32, ro(), p, 0))),
            }
        };
        let (ra, sa) = prep(b, pa, lhs);
        let (rb, sb) = prep(b, pb, rhs);
        let va = sa.map(|s| b.ins().splat(super::F32X4, s));
        let vb = sb.map(|s| b.ins().splat(super::F32X4, s));
        let or = b.addr(out, t, cols as i64 * 4);
        each_chunk(b, cols, |b, off, ty| {
            let get = |b: &mut FunctionBuilder, r: Option<Value>, s: Option<Value>, v: Option<Value>| match r {
                Some(r) => {
                    let a = b.ins().iadd(r, off);
                    b.ins().load(ty, ro(), a, 0)
                }
                None => {
                    if ty.is_vector() {
                        v.unwrap()
                    } else {
                        s.unwrap()
                    }
                }
            };
            let x = get(b, ra, sa, va);
            let y = get(b, rb, sb, vb);
            let r = apply_binary(b, op, x, y);
            let d = b.ins().iadd(or, off);
            b.ins().store(rw(), r, d, 0);
        });
    });
}
