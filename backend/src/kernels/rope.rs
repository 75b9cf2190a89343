//! `rope`: rotary embedding, rotate-half or interleaved.

use super::{Ext, Kargs, SLOT_POS, each_chunk, each_task, ro, rw};
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Lowers `rope`: task = one row `t` at position `pos + t`. For every head, features `i` and
/// `i + half` (interleaved: `2i` and `2i + 1`) of the first `rotary_dim` rotate by the table
/// angle `i`; the rest pass through.
pub(crate) fn rope(b: &mut FunctionBuilder, k: &Kargs, width: u64, head_dim: u64, rotary_dim: u64, interleaved: bool) {
    let half = rotary_dim / 2;
    let heads = width / head_dim;
    let x = k.ptr(b, 0);
    let cos = k.ptr(b, 1);
    let sin = k.ptr(b, 2);
    let out = k.ptr(b, 4);
    let pos = k.slot(b, SLOT_POS);
    each_task(b, k, |b, t| {
        let p = b.ins().iadd(pos, t);
        let cr = b.addr(cos, p, half as i64 * 4);
        let sr = b.addr(sin, p, half as i64 * 4);
        let xr = b.addr(x, t, width as i64 * 4);
        let or = b.addr(out, t, width as i64 * 4);
        let lo = b.c64(0);
        let hi = b.c64(heads as i64);
        // A loop over heads, not an unrolled body: the function stays small for any head count.
        b.for_range(lo, hi, 1, |b, h| {
            let xh = b.addr(xr, h, head_dim as i64 * 4);
            let oh = b.addr(or, h, head_dim as i64 * 4);
            if interleaved {
                rotate_pairs(b, xh, oh, cr, sr, half);
            } else {
                each_chunk(b, half, |b, off, ty| {
                    let a1 = b.ins().iadd(xh, off);
                    let x1 = b.ins().load(ty, ro(), a1, 0);
                    let x2 = b.ins().load(ty, ro(), a1, half as i32 * 4);
                    let ca = b.ins().iadd(cr, off);
                    let c = b.ins().load(ty, ro(), ca, 0);
                    let sa = b.ins().iadd(sr, off);
                    let s = b.ins().load(ty, ro(), sa, 0);
                    let (o1, o2) = rotate(b, x1, x2, c, s);
                    let d = b.ins().iadd(oh, off);
                    b.ins().store(rw(), o1, d, 0);
                    b.ins().store(rw(), o2, d, half as i32 * 4);
                });
            }
            let pass = head_dim - rotary_dim;
            if pass > 0 {
                let xp = b.ins().iadd_imm_s(xh, rotary_dim as i64 * 4);
                let op = b.ins().iadd_imm_s(oh, rotary_dim as i64 * 4);
                each_chunk(b, pass, |b, off, ty| {
                    let a = b.ins().iadd(xp, off);
                    let v = b.ins().load(ty, ro(), a, 0);
                    let d = b.ins().iadd(op, off);
                    b.ins().store(rw(), v, d, 0);
                });
            }
        });
    });
}

/// Interleaved pairs `(2i, 2i + 1)` of one head, one pair per step (scalar: a pair straddles
/// vector lanes, and rope is a sliver of a token's work).
fn rotate_pairs(b: &mut FunctionBuilder, xh: Value, oh: Value, cr: Value, sr: Value, half: u64) {
    let lo = b.c64(0);
    let hi = b.c64(half as i64);
    b.for_range(lo, hi, 1, |b, i| {
        let xa = b.addr(xh, i, 8);
        let x1 = b.ins().load(types::F32, ro(), xa, 0);
        let x2 = b.ins().load(types::F32, ro(), xa, 4);
        let ca = b.addr(cr, i, 4);
        let c = b.ins().load(types::F32, ro(), ca, 0);
        let sa = b.addr(sr, i, 4);
        let s = b.ins().load(types::F32, ro(), sa, 0);
        let (o1, o2) = rotate(b, x1, x2, c, s);
        let d = b.addr(oh, i, 8);
        b.ins().store(rw(), o1, d, 0);
        b.ins().store(rw(), o2, d, 4);
    });
}

/// `(x1·c − x2·s, x2·c + x1·s)`: one pair rotated (scalars or f32x4 lanes).
fn rotate(b: &mut FunctionBuilder, x1: Value, x2: Value, c: Value, s: Value) -> (Value, Value) {
    let x2s = b.ins().fmul(x2, s);
    let o1 = b.ins().fmul(x1, c);
    let o1 = b.ins().fsub(o1, x2s);
    let x1s = b.ins().fmul(x1, s);
    let o2 = b.ins().fmul(x2, c);
    let o2 = b.ins().fadd(o2, x1s);
    (o1, o2)
}
