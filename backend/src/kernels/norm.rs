//! Row-wise kernels: `rms_norm`, `layer_norm`, `softmax`, reductions over the last axis.

use super::{Ext, Kargs, each_chunk, each_task, fold_row, qdot, ro, rw};
use crate::math;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::ReduceOp;

/// Lowers `rms_norm`: task = one row of `h` features, normalized in groups of `group` features
/// (`group == h` for the whole row); `x / sqrt(mean(x²) + eps) * weight`, with the weight of
/// length `group` reused by every group. `to_int8` (whole rows only): the row is written as
/// int8-activation blocks ([`to_int8_row`]).
pub(crate) fn rms_norm(b: &mut FunctionBuilder, k: &Kargs, h: u64, group: u64, eps: f32, to_int8: bool) {
    let x = k.ptr(b, 0);
    let w = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    let groups = h / group;
    each_task(b, k, |b, t| {
        let xrow = b.addr(x, t, h as i64 * 4);
        if to_int8 {
            debug_assert_eq!(group, h);
            let inv = rms_inverse(b, xrow, h, eps);
            let invv = b.ins().splat(super::F32X4, inv);
            return to_int8_row(b, out, t, h, |b, off| {
                let v = load_at(b, xrow, off);
                let wv = load_at(b, w, off);
                let r = b.ins().fmul(v, invv);
                b.ins().fmul(r, wv)
            });
        }
        let orow = b.addr(out, t, h as i64 * 4);
        let lo = b.c64(0);
        let hi = b.c64(groups as i64);
        // A loop over groups (one iteration for a whole-row norm).
        b.for_range(lo, hi, 1, |b, gi| {
            let xr = b.addr(xrow, gi, group as i64 * 4);
            let or = b.addr(orow, gi, group as i64 * 4);
            rms_norm_span(b, xr, w, or, group, eps);
        });
    });
}

/// `1 / sqrt(mean(x²) + eps)` over the `h` features at `xr`.
fn rms_inverse(b: &mut FunctionBuilder, xr: Value, h: u64, eps: f32) -> Value {
    let ss = fold_row(b, h, false, |b, off, ty| {
        let a = b.ins().iadd(xr, off);
        let v = b.ins().load(ty, ro(), a, 0);
        b.ins().fmul(v, v)
    });
    let inv_h = math::fconst(b, types::F32, 1.0 / h as f32);
    let mean = b.ins().fmul(ss, inv_h);
    let e = math::fconst(b, types::F32, eps);
    let d = b.ins().fadd(mean, e);
    let s = b.ins().sqrt(d);
    let one = math::fconst(b, types::F32, 1.0);
    b.ins().fdiv(one, s)
}

/// The f32x4 at byte offset `off` of `p`.
fn load_at(b: &mut FunctionBuilder, p: Value, off: Value) -> Value {
    let a = b.ins().iadd(p, off);
    b.ins().load(super::F32X4, ro(), a, 0)
}

/// Writes row `t` of `out` as quantized activation rows (`qdot::QRow`), block by block: `value(b,
/// byte_offset)` gives the normalized f32x4 at that offset of the row, computed exactly as the
/// f32 kernel computes it, so the codes are those a matmul would quantize from the f32 row.
fn to_int8_row(
    b: &mut FunctionBuilder,
    out: Value,
    t: Value,
    h: u64,
    mut value: impl FnMut(&mut FunctionBuilder, Value) -> Value,
) {
    let row = qdot::QRow::at(b, out, t, h);
    let lo = b.c64(0);
    let hi = b.c64((h / qdot::BLOCK) as i64);
    b.for_range(lo, hi, 1, |b, blk| {
        let base = b.ins().imul_imm_s(blk, qdot::BLOCK as i64 * 4);
        let v: Vec<Value> = (0..8)
            .map(|j| {
                let off = b.ins().iadd_imm_s(base, 16 * j);
                value(b, off)
            })
            .collect();
        let amax = qdot::block_amax(b, &v);
        qdot::quantize_block(b, &v, amax, row, blk, None);
    });
}

/// One normalized span of `h` features at `xr`, written to `or`.
fn rms_norm_span(b: &mut FunctionBuilder, xr: Value, w: Value, or: Value, h: u64, eps: f32) {
    let inv = rms_inverse(b, xr, h, eps);
    let invv = b.ins().splat(super::F32X4, inv);
    each_chunk(b, h, |b, off, ty| {
        let a = b.ins().iadd(xr, off);
        let v = b.ins().load(ty, ro(), a, 0);
        let wa = b.ins().iadd(w, off);
        let wv = b.ins().load(ty, ro(), wa, 0);
        let sc = if ty.is_vector() { invv } else { inv };
        let r = b.ins().fmul(v, sc);
        let r = b.ins().fmul(r, wv);
        let d = b.ins().iadd(or, off);
        b.ins().store(rw(), r, d, 0);
    });
}

/// Lowers `layer_norm`: task = one row; mean pass, variance pass (of `x - mean`), then
/// `(x - mean) / sqrt(var + eps) * weight + bias`. `to_int8`: the row is written as
/// int8-activation blocks ([`to_int8_row`]).
pub(crate) fn layer_norm(b: &mut FunctionBuilder, k: &Kargs, h: u64, eps: f32, to_int8: bool) {
    let x = k.ptr(b, 0);
    let w = k.ptr(b, 1);
    let bias = k.ptr(b, 2);
    let out = k.ptr(b, 3);
    each_task(b, k, |b, t| {
        let xr = b.addr(x, t, h as i64 * 4);
        let or = b.addr(out, t, h as i64 * 4);
        let sum = fold_row(b, h, false, |b, off, ty| {
            let a = b.ins().iadd(xr, off);
            b.ins().load(ty, ro(), a, 0)
        });
        let inv_h = math::fconst(b, types::F32, 1.0 / h as f32);
        let mean = b.ins().fmul(sum, inv_h);
        let meanv = b.ins().splat(super::F32X4, mean);
        let ss = fold_row(b, h, false, |b, off, ty| {
            let a = b.ins().iadd(xr, off);
            let v = b.ins().load(ty, ro(), a, 0);
            let d = b.ins().fsub(v, if ty.is_vector() { meanv } else { mean });
            b.ins().fmul(d, d)
        });
        let var = b.ins().fmul(ss, inv_h);
        let e = math::fconst(b, types::F32, eps);
        let d = b.ins().fadd(var, e);
        let s = b.ins().sqrt(d);
        let one = math::fconst(b, types::F32, 1.0);
        let inv = b.ins().fdiv(one, s);
        let invv = b.ins().splat(super::F32X4, inv);
        if to_int8 {
            return to_int8_row(b, out, t, h, |b, off| {
                let v = load_at(b, xr, off);
                let c = b.ins().fsub(v, meanv);
                let r = b.ins().fmul(c, invv);
                let wv = load_at(b, w, off);
                let bv = load_at(b, bias, off);
                b.ins().fma(r, wv, bv)
            });
        }
        each_chunk(b, h, |b, off, ty| {
            let vec = ty.is_vector();
            let a = b.ins().iadd(xr, off);
            let v = b.ins().load(ty, ro(), a, 0);
            let c = b.ins().fsub(v, if vec { meanv } else { mean });
            let r = b.ins().fmul(c, if vec { invv } else { inv });
            let wa = b.ins().iadd(w, off);
            let wv = b.ins().load(ty, ro(), wa, 0);
            let ba = b.ins().iadd(bias, off);
            let bv = b.ins().load(ty, ro(), ba, 0);
            let r = b.ins().fma(r, wv, bv);
            let d = b.ins().iadd(or, off);
            b.ins().store(rw(), r, d, 0);
        });
    });
}

/// Lowers `softmax` over the last axis: task = one row. Max pass, exp pass (writing the output),
/// sum pass over the output, scale pass.
pub(crate) fn softmax(b: &mut FunctionBuilder, k: &Kargs, cols: u64) {
    let x = k.ptr(b, 0);
    let out = k.ptr(b, 1);
    each_task(b, k, |b, t| {
        let xr = b.addr(x, t, cols as i64 * 4);
        let or = b.addr(out, t, cols as i64 * 4);
        let m = fold_row(b, cols, true, |b, off, ty| {
            let a = b.ins().iadd(xr, off);
            b.ins().load(ty, ro(), a, 0)
        });
        let mv = b.ins().splat(super::F32X4, m);
        each_chunk(b, cols, |b, off, ty| {
            let a = b.ins().iadd(xr, off);
            let v = b.ins().load(ty, ro(), a, 0);
            let v = b.ins().fsub(v, if ty.is_vector() { mv } else { m });
            let e = math::exp(b, v);
            let d = b.ins().iadd(or, off);
            b.ins().store(rw(), e, d, 0);
        });
        // The output was just written: plain loads, not readonly.
        let s = fold_row(b, cols, false, |b, off, ty| {
            let a = b.ins().iadd(or, off);
            b.ins().load(ty, rw(), a, 0)
        });
        let one = math::fconst(b, types::F32, 1.0);
        let inv = b.ins().fdiv(one, s);
        let invv = b.ins().splat(super::F32X4, inv);
        each_chunk(b, cols, |b, off, ty| {
            let a = b.ins().iadd(or, off);
            let v = b.ins().load(ty, rw(), a, 0);
            let r = b.ins().fmul(v, if ty.is_vector() { invv } else { inv });
            b.ins().store(rw(), r, a, 0);
        });
    });
}

/// Lowers `reduce_sum` / `reduce_mean` / `reduce_max` over the last axis: task = one row,
/// writing one value.
pub(crate) fn reduce(b: &mut FunctionBuilder, k: &Kargs, op: ReduceOp, cols: u64) {
    let x = k.ptr(b, 0);
    let out = k.ptr(b, 1);
    each_task(b, k, |b, t| {
        let xr = b.addr(x, t, cols as i64 * 4);
        let r = fold_row(b, cols, op == ReduceOp::Max, |b, off, ty| {
            let a = b.ins().iadd(xr, off);
            b.ins().load(ty, ro(), a, 0)
        });
        let r = if op == ReduceOp::Mean {
            let c = math::fconst(b, types::F32, cols as f32);
            b.ins().fdiv(r, c)
        } else {
            r
        };
        let d = b.addr(out, t, 4);
        b.ins().store(rw(), r, d, 0);
    });
}
