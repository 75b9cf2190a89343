//! Row-copy and elementwise kernels: `gather`, `cache_write`, unary ops, binary ops.

use super::{Ext, F32X4, Kargs, KvStore, SLOT_POS, each_chunk, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, condcodes::FloatCC, types};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::types::{Q8_BLOCK, Q8_BLOCK_BYTES};
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
/// rounded to f16 for an f16 state (8 elements per 16-byte store, then a scalar tail), or
/// quantized to q8 blocks ([`q8_block`]).
pub(crate) fn cache_write(b: &mut FunctionBuilder, k: &Kargs, w: u64, kv: KvStore) {
    let state = k.ptr(b, 0);
    let rows = k.ptr(b, 1);
    let pos = k.slot(b, SLOT_POS);
    let row_bytes = match kv {
        KvStore::F32 => w * 4,
        KvStore::F16 => w * 2,
        KvStore::Q8 => w / Q8_BLOCK * Q8_BLOCK_BYTES,
    };
    each_task(b, k, |b, t| {
        let src = b.addr(rows, t, w as i64 * 4);
        let p = b.ins().iadd(pos, t);
        let dst = b.addr(state, p, row_bytes as i64);
        match kv {
            KvStore::F32 => {
                copy_row(b, src, dst, w);
                return;
            }
            KvStore::Q8 => {
                let lo = b.c64(0);
                let hi = b.c64((w / Q8_BLOCK) as i64);
                b.for_range(lo, hi, 1, |b, blk| {
                    let s = b.addr(src, blk, Q8_BLOCK as i64 * 4);
                    let d = b.addr(dst, blk, Q8_BLOCK_BYTES as i64);
                    q8_block(b, s, d);
                });
                return;
            }
            KvStore::F16 => {}
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

/// Quantizes the 32 f32 values at `src` into one q8 block at `dst` (ggml's Q8_0, exactly what
/// `edgec_ir::quant`'s `q8_g32` encoder writes, which the interpreter uses): the scale
/// `d = max|x| / 127` rounded to the nearest f16 (saturated at 65504, like an f16 cache), then
/// codes `x × (1 / d)` (the rounded `d`; 0 when it is 0) rounded half away from zero (Rust's
/// `f32::round`, exactly: `trunc` plus ±1 where the exact remainder is at least 0.5) and
/// clamped to ±127. `qdot::quantize_row` does the same for activations with an f32 scale and
/// ties to even.
fn q8_block(b: &mut FunctionBuilder, src: Value, dst: Value) {
    let (v, amax) = super::qdot::load_block(b, src);
    let k127 = math::fconst(b, types::F32, 127.0);
    let d = b.ins().fdiv(amax, k127);
    let dh = super::quant::f32_to_half_bits(b, d);
    b.ins().istore16(rw(), dh, dst, 0);
    let d = super::quant::half_to_f32(b, dh);
    let one = math::fconst(b, types::F32, 1.0);
    let inv = b.ins().fdiv(one, d);
    let zero = math::fconst(b, types::F32, 0.0);
    let pos = b.ins().fcmp(FloatCC::GreaterThan, d, zero);
    let inv = b.ins().select(pos, inv, zero);
    let invv = b.ins().splat(F32X4, inv);
    let halfv = math::fconst(b, F32X4, 0.5);
    let signv = b.ins().iconst(types::I32, i64::from(i32::MIN));
    let signv = b.ins().splat(types::I32X4, signv);
    let onev = b.ins().iconst(types::I32, 0x3f80_0000);
    let onev = b.ins().splat(types::I32X4, onev);
    let hi = math::fconst(b, F32X4, 127.0);
    let lo = math::fconst(b, F32X4, -127.0);
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let ints: Vec<Value> = v
        .iter()
        .map(|&x| {
            let y = b.ins().fmul(x, invv);
            let t = b.ins().trunc(y);
            let r = b.ins().fsub(y, t);
            let r = b.ins().fabs(r);
            let up = b.ins().fcmp(FloatCC::GreaterThanOrEqual, r, halfv);
            // ±1.0 with y's sign (no vector fcopysign on x86), kept where rounding goes up.
            let yb = b.ins().bitcast(types::I32X4, le, y);
            let sign = b.ins().band(yb, signv);
            let step = b.ins().bor(sign, onev);
            let step = b.ins().band(step, up);
            let step = b.ins().bitcast(F32X4, le, step);
            let y = b.ins().fadd(t, step);
            let y = b.ins().fmin(y, hi);
            let y = b.ins().fmax(y, lo);
            b.ins().fcvt_to_sint_sat(types::I32X4, y)
        })
        .collect();
    for h in 0..2 {
        let a = b.ins().snarrow(ints[4 * h], ints[4 * h + 1]);
        let c = b.ins().snarrow(ints[4 * h + 2], ints[4 * h + 3]);
        let q = b.ins().snarrow(a, c);
        b.ins().store(rw(), q, dst, 2 + 16 * h as i32);
    }
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
