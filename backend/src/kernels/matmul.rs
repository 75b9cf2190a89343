//! `matmul`, both weight layouts.

use super::epilogue::{Epilogue, MatMulArgs, Pass};
use super::{Ext, F32X4, Kargs, MATMUL_COLS_PER_TASK, SLOT_ROWS, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{InstBuilder, Value, condcodes::IntCC, types};
use cranelift_frontend::{FunctionBuilder, Variable};

/// An `rt × ct` register tile of `x[M,K]·W[N,K]ᵀ`: rows `row0..row0+rt`, columns
/// `col0..col0+ct`. f32x4 FMAs over K in a loop, lanes summed once, then a scalar K tail
/// (K need not be a multiple of 4). Each weight vector loaded is reused for `rt` rows.
/// `w` is the weight of `pass`; the results go through the epilogue of `a`.
#[allow(clippy::too_many_arguments)]
fn tile_t(
    b: &mut FunctionBuilder,
    a: &MatMulArgs,
    pass: Pass,
    w: Value,
    row0: Value,
    col0: Value,
    rt: usize,
    ct: usize,
    kk: u64,
) {
    let x = a.x;
    let kb = kk as i64 * 4;
    let xr: Vec<Value> = (0..rt)
        .map(|r| {
            let row = b.ins().iadd_imm_s(row0, r as i64);
            b.addr(x, row, kb)
        })
        .collect();
    let wr: Vec<Value> = (0..ct)
        .map(|c| {
            let col = b.ins().iadd_imm_s(col0, c as i64);
            b.addr(w, col, kb)
        })
        .collect();
    let k4 = kk / 4 * 4;
    let mut sums: Vec<Vec<Value>> = Vec::with_capacity(rt);
    if k4 > 0 {
        let zero = math::fconst(b, F32X4, 0.0);
        let acc: Vec<Vec<Variable>> = (0..rt)
            .map(|_| {
                (0..ct)
                    .map(|_| {
                        let v = b.declare_var(F32X4);
                        b.def_var(v, zero);
                        v
                    })
                    .collect()
            })
            .collect();
        // Loop-carried row pointers bumped by 16 bytes: addresses computed from a base and
        // an offset get rematerialized inside the loop by the optimizer.
        let xp: Vec<Variable> = xr
            .iter()
            .map(|&p| {
                let v = b.declare_var(types::I64);
                b.def_var(v, p);
                v
            })
            .collect();
        let wp: Vec<Variable> = wr
            .iter()
            .map(|&p| {
                let v = b.declare_var(types::I64);
                b.def_var(v, p);
                v
            })
            .collect();
        let lo = b.c64(0);
        let hi = b.c64(k4 as i64 * 4);
        b.for_range(lo, hi, 16, |b, _off| {
            let xv: Vec<Value> = xp
                .iter()
                .map(|&p| {
                    let a = b.use_var(p);
                    let v = b.ins().load(F32X4, ro(), a, 0);
                    let a2 = b.ins().iadd_imm_s(a, 16);
                    b.def_var(p, a2);
                    v
                })
                .collect();
            for (c, &p) in wp.iter().enumerate() {
                let a = b.use_var(p);
                let wv = b.ins().load(F32X4, ro(), a, 0);
                let a2 = b.ins().iadd_imm_s(a, 16);
                b.def_var(p, a2);
                for (r, &xv) in xv.iter().enumerate() {
                    let s = b.use_var(acc[r][c]);
                    let s = b.ins().fma(xv, wv, s);
                    b.def_var(acc[r][c], s);
                }
            }
        });
        for row in &acc {
            let v: Vec<Value> = row
                .iter()
                .map(|&a| {
                    let a = b.use_var(a);
                    b.hsum(a)
                })
                .collect();
            sums.push(v);
        }
    } else {
        let z = math::fconst(b, types::F32, 0.0);
        sums = vec![vec![z; ct]; rt];
    }
    for i in k4..kk {
        let off = i as i32 * 4;
        let xs: Vec<Value> = xr.iter().map(|&p| b.ins().load(types::F32, ro(), p, off)).collect();
        for (c, &p) in wr.iter().enumerate() {
            let ws = b.ins().load(types::F32, ro(), p, off);
            for (r, &xv) in xs.iter().enumerate() {
                sums[r][c] = b.ins().fma(xv, ws, sums[r][c]);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        let orow = b.ins().iadd_imm_s(row0, r as i64);
        for (c, &s) in row.iter().enumerate() {
            a.store(b, pass, orow, col0, c, s);
        }
    }
}

/// Lowers `matmul` with `transpose_b` (`x[M,K]·W[N,K]ᵀ`, the hot one) and `linear`: task = a
/// block of `MATMUL_COLS_PER_TASK` output columns over all M rows. Inside, 4-column groups run
/// 3×4 tiles (12 accumulators fit the 16 xmm registers) then 1×4 tiles for the leftover rows
/// (the decode case: 4 independent FMA chains), once per epilogue pass; leftover columns run 1×1.
pub(crate) fn matmul_t(b: &mut FunctionBuilder, k: &Kargs, kk: u64, n: u64, ep: Epilogue) {
    let m = k.slot(b, SLOT_ROWS);
    let a = MatMulArgs::load(b, k, ep, n);
    let three = b.c64(3);
    let m3 = b.ins().udiv(m, three);
    let m3 = b.ins().imul_imm_s(m3, 3);
    each_task(b, k, |b, t| {
        let c0 = b.ins().imul_imm_s(t, MATMUL_COLS_PER_TASK as i64);
        let c1 = b.ins().iadd_imm_s(c0, MATMUL_COLS_PER_TASK as i64);
        let nn = b.c64(n as i64);
        let over = b.ins().icmp(IntCC::SignedGreaterThan, c1, nn);
        let c1 = b.ins().select(over, nn, c1);
        let len = b.ins().isub(c1, c0);
        let len4 = b.ins().band_imm_s(len, !3);
        let c4 = b.ins().iadd(c0, len4);
        b.for_range(c0, c4, 4, |b, col| {
            for (pass, w) in a.passes() {
                let zero = b.c64(0);
                b.for_range(zero, m3, 3, |b, row| tile_t(b, &a, pass, w, row, col, 3, 4, kk));
                b.for_range(m3, m, 1, |b, row| tile_t(b, &a, pass, w, row, col, 1, 4, kk));
            }
        });
        if !n.is_multiple_of(4) {
            b.for_range(c4, c1, 1, |b, col| {
                for (pass, w) in a.passes() {
                    let zero = b.c64(0);
                    b.for_range(zero, m, 1, |b, row| tile_t(b, &a, pass, w, row, col, 1, 1, kk));
                }
            });
        }
    });
}

/// Lowers `matmul` without transpose (`x[M,K]·B[K,N]`): task = 4 output columns (one f32x4)
/// over all rows, accumulating `x[r,k] · B[k, c..c+4]`; the last task of an N that is not a
/// multiple of 4 runs scalar columns.
pub(crate) fn matmul_n(b: &mut FunctionBuilder, k: &Kargs, kk: u64, n: u64) {
    let m = k.slot(b, SLOT_ROWS);
    let x = k.ptr(b, 0);
    let bm = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    let nb = n as i64 * 4;
    each_task(b, k, |b, t| {
        let c = b.ins().imul_imm_s(t, 4);
        let c_end = b.ins().iadd_imm_s(c, 4);
        let nn = b.c64(n as i64);
        let full = b.ins().icmp(IntCC::SignedLessThanOrEqual, c_end, nn);
        let vec_block = b.create_block();
        let tail_block = b.create_block();
        let done = b.create_block();
        b.ins().brif(full, vec_block, &[], tail_block, &[]);

        b.switch_to_block(vec_block);
        let bc = b.addr(bm, c, 4);
        let zero = b.c64(0);
        b.for_range(zero, m, 1, |b, r| {
            let xr = b.addr(x, r, kk as i64 * 4);
            let acc = b.declare_var(F32X4);
            let z = math::fconst(b, F32X4, 0.0);
            b.def_var(acc, z);
            let lo = b.c64(0);
            let hi = b.c64(kk as i64);
            b.for_range(lo, hi, 1, |b, i| {
                let xa = b.addr(xr, i, 4);
                let xs = b.ins().load(types::F32, ro(), xa, 0);
                let xv = b.ins().splat(F32X4, xs);
                let ba = b.addr(bc, i, nb);
                let bv = b.ins().load(F32X4, ro(), ba, 0);
                let s = b.use_var(acc);
                let s = b.ins().fma(xv, bv, s);
                b.def_var(acc, s);
            });
            let orow = b.addr(out, r, nb);
            let o = b.addr(orow, c, 4);
            let s = b.use_var(acc);
            b.ins().store(rw(), s, o, 0);
        });
        b.ins().jump(done, &[]);

        b.switch_to_block(tail_block);
        if !n.is_multiple_of(4) {
            b.for_range(c, nn, 1, |b, col| {
                let bc = b.addr(bm, col, 4);
                let zero = b.c64(0);
                b.for_range(zero, m, 1, |b, r| {
                    let xr = b.addr(x, r, kk as i64 * 4);
                    let acc = b.declare_var(types::F32);
                    let z = math::fconst(b, types::F32, 0.0);
                    b.def_var(acc, z);
                    let lo = b.c64(0);
                    let hi = b.c64(kk as i64);
                    b.for_range(lo, hi, 1, |b, i| {
                        let xa = b.addr(xr, i, 4);
                        let xs = b.ins().load(types::F32, ro(), xa, 0);
                        let ba = b.addr(bc, i, nb);
                        let bs = b.ins().load(types::F32, ro(), ba, 0);
                        let s = b.use_var(acc);
                        let s = b.ins().fma(xs, bs, s);
                        b.def_var(acc, s);
                    });
                    let orow = b.addr(out, r, nb);
                    let o = b.addr(orow, col, 4);
                    let s = b.use_var(acc);
                    b.ins().store(rw(), s, o, 0);
                });
            });
        }
        b.ins().jump(done, &[]);
        b.switch_to_block(done);
    });
}
