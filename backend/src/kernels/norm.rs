//! Row-wise kernels: `rms_norm`, `softmax`, reductions over the last axis.

use super::{Ext, Kargs, each_chunk, each_task, fold_row, ro, rw};
use crate::math;
use cranelift_codegen::ir::{InstBuilder, types};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::ReduceOp;

/// Lowers `rms_norm`: task = one row; `x / sqrt(mean(x²) + eps) * weight`.
pub(crate) fn rms_norm(b: &mut FunctionBuilder, k: &Kargs, h: u64, eps: f32) {
    let x = k.ptr(b, 0);
    let w = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    each_task(b, k, |b, t| {
        let xr = b.addr(x, t, h as i64 * 4);
        let or = b.addr(out, t, h as i64 * 4);
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
        let inv = b.ins().fdiv(one, s);
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
