//! int8-activation `matmul` (transpose_b) for int8 weights (`q8_c`, `q8_g32`), the kernel of
//! the aarch64 `dotprod` variant: each activation row is quantized on the fly to int8 in
//! blocks of 32 (scale = block max |x| / 127, round to nearest), then every 32-element block of
//! a dot product is two exact i8×i8→i32 dot products (the widening multiply + pairwise add tree
//! Cranelift folds into `sdot` with `has_dotprod`), converted to f32 once and scaled by
//! activation scale × weight block scale (`q8_g32`'s f16 `d`; `q8_c`'s per-row scale multiplies
//! the finished sum). The x86 form would need `vpdpbusd`'s unsigned activations (`x ^ 0x80`
//! minus 128 × weight row sums); it is not emitted yet.
//!
//! Task = a block of `MATMUL_COLS_PER_TASK` output columns over all rows (like `matmul_tq`):
//! per pair of rows, the rows are quantized into a stack buffer, then 2×4 tiles run over the
//! task's columns (once per `linear` epilogue pass). Quantization is repeated per task (a per-call scratch buffer would save it).

use super::epilogue::{Epilogue, MatMulArgs, Pass};
use super::{Ext, F32X4, Kargs, MATMUL_COLS_PER_TASK, SLOT_ROWS, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{
    InstBuilder, StackSlotData, StackSlotKind, Value, condcodes::FloatCC, condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use edgec_ir::Storage;

/// Elements per activation block (and per `q8_g32` weight group).
pub(crate) const BLOCK: u64 = 32;
/// Largest K with an int8 twin: two quantized rows (and their scales) live on the stack.
pub(crate) const MAX_K: u64 = 16384;

/// Whether a stored weight layout and inner dim have the int8-activation kernel.
pub(crate) fn supports(st: Storage, kk: u64) -> bool {
    matches!(st, Storage::Q8C | Storage::Q8G { group: 32 }) && kk > 0 && kk.is_multiple_of(BLOCK) && kk <= MAX_K
}

/// `acc + dot4(a, w)`: per i32 lane, the sum of four i8×i8 products; exact. With
/// `has_dotprod` this whole tree is one `sdot`.
fn dot_i8(b: &mut FunctionBuilder, a: Value, w: Value, acc: Value) -> Value {
    let al = b.ins().swiden_low(a);
    let wl = b.ins().swiden_low(w);
    let ah = b.ins().swiden_high(a);
    let wh = b.ins().swiden_high(w);
    let lo = b.ins().imul(al, wl);
    let hi = b.ins().imul(ah, wh);
    let lo_l = b.ins().swiden_low(lo);
    let lo_h = b.ins().swiden_high(lo);
    let hi_l = b.ins().swiden_low(hi);
    let hi_h = b.ins().swiden_high(hi);
    let pl = b.ins().iadd_pairwise(lo_l, lo_h);
    let ph = b.ins().iadd_pairwise(hi_l, hi_h);
    let s = b.ins().iadd_pairwise(pl, ph);
    b.ins().iadd(s, acc)
}

/// Quantizes the `kk` f32 of `x` into `kk` int8 at `q` and `kk / 32` f32 scales at `s`.
fn quantize_row(b: &mut FunctionBuilder, x: Value, q: Value, s: Value, kk: u64) {
    let lo = b.c64(0);
    let hi = b.c64((kk / BLOCK) as i64);
    b.for_range(lo, hi, 1, |b, blk| {
        let xp = b.addr(x, blk, BLOCK as i64 * 4);
        let v: Vec<Value> = (0..8).map(|j| b.ins().load(F32X4, ro(), xp, j * 16)).collect();
        let mut m = b.ins().fabs(v[0]);
        for &vj in &v[1..] {
            let a = b.ins().fabs(vj);
            m = b.ins().fmax(m, a);
        }
        let amax = b.hmax(m);
        let k127 = math::fconst(b, types::F32, 127.0);
        let d = b.ins().fdiv(amax, k127);
        let inv = b.ins().fdiv(k127, amax);
        let zero = math::fconst(b, types::F32, 0.0);
        let pos = b.ins().fcmp(FloatCC::GreaterThan, amax, zero);
        let inv = b.ins().select(pos, inv, zero);
        let sp = b.addr(s, blk, 4);
        b.ins().store(rw(), d, sp, 0);
        let invv = b.ins().splat(F32X4, inv);
        let ints: Vec<Value> = v
            .iter()
            .map(|&vj| {
                let y = b.ins().fmul(vj, invv);
                let y = b.ins().nearest(y);
                b.ins().fcvt_to_sint_sat(types::I32X4, y)
            })
            .collect();
        let qp = b.addr(q, blk, BLOCK as i64);
        for h in 0..2 {
            let a = b.ins().snarrow(ints[4 * h], ints[4 * h + 1]);
            let c = b.ins().snarrow(ints[4 * h + 2], ints[4 * h + 3]);
            let q8 = b.ins().snarrow(a, c);
            b.ins().store(rw(), q8, qp, 16 * h as i32);
        }
    });
}

/// An `rt × ct` tile: rows `0..rt` of the quantized buffer (`q`, `s`; row stride `kk` bytes and
/// `kk / 32` scales) against rows `col0..col0 + ct` of `w` (the weight of `pass`), finished by
/// the epilogue of `a` into output rows `row0..row0 + rt`.
#[allow(clippy::too_many_arguments)]
fn tile(
    b: &mut FunctionBuilder,
    st: Storage,
    q: Value,
    s: Value,
    a: &MatMulArgs,
    pass: Pass,
    w: Value,
    row0: Value,
    col0: Value,
    rt: usize,
    ct: usize,
    kk: u64,
    n: u64,
) {
    let rb = st.row_bytes(kk).expect("checked by the layout") as i64;
    let blocks = kk / BLOCK;
    let wr: Vec<Value> = (0..ct)
        .map(|c| {
            let col = b.ins().iadd_imm_s(col0, c as i64);
            b.addr(w, col, rb)
        })
        .collect();
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
    let lo = b.c64(0);
    let hi = b.c64(blocks as i64);
    b.for_range(lo, hi, 1, |b, blk| {
        let xq: Vec<(Value, Value, Value)> = (0..rt)
            .map(|r| {
                let qp = b.addr(q, blk, BLOCK as i64);
                let qp = b.ins().iadd_imm_s(qp, (r as u64 * kk) as i64);
                // The stack buffer is written by this kernel: plain loads, not `ro()`.
                let a0 = b.ins().load(types::I8X16, rw(), qp, 0);
                let a1 = b.ins().load(types::I8X16, rw(), qp, 16);
                let sp = b.addr(s, blk, 4);
                let xs = b.ins().load(types::F32, rw(), sp, (r as u64 * blocks * 4) as i32);
                (a0, a1, xs)
            })
            .collect();
        for (c, &wp) in wr.iter().enumerate() {
            let (w0, w1, d) = match st {
                Storage::Q8C => {
                    let p = b.addr(wp, blk, BLOCK as i64);
                    (b.ins().load(types::I8X16, ro(), p, 0), b.ins().load(types::I8X16, ro(), p, 16), None)
                }
                _ => {
                    let p = b.addr(wp, blk, BLOCK as i64 + 2);
                    let d = super::quant::load_half(b, p, 0);
                    (b.ins().load(types::I8X16, ro(), p, 2), b.ins().load(types::I8X16, ro(), p, 18), Some(d))
                }
            };
            for (r, &(a0, a1, xs)) in xq.iter().enumerate() {
                let z = b.ins().iconst(types::I32, 0);
                let z = b.ins().splat(types::I32X4, z);
                let t = dot_i8(b, a0, w0, z);
                let t = dot_i8(b, a1, w1, t);
                let f = b.ins().fcvt_from_sint(F32X4, t);
                let sc = match d {
                    Some(d) => b.ins().fmul(xs, d),
                    None => xs,
                };
                let scv = b.ins().splat(F32X4, sc);
                let a = b.use_var(acc[r][c]);
                let a = b.ins().fma(f, scv, a);
                b.def_var(acc[r][c], a);
            }
        }
    });
    for (r, row) in acc.iter().enumerate() {
        let orow = b.ins().iadd_imm_s(row0, r as i64);
        for (c, &sum) in row.iter().enumerate() {
            let sum = b.use_var(sum);
            let mut v = b.hsum(sum);
            if st == Storage::Q8C {
                let col = b.ins().iadd_imm_s(col0, c as i64);
                let sc = super::quant::q8c_scale(b, w, n, kk, col);
                v = b.ins().fmul(v, sc);
            }
            a.store(b, pass, orow, col0, c, v);
        }
    }
}

/// Lowers `matmul` (transpose_b) with int8 activations; `supports(st, kk)` must hold.
pub(crate) fn matmul_tq8(b: &mut FunctionBuilder, k: &Kargs, kk: u64, n: u64, st: Storage, ep: Epilogue) {
    debug_assert!(supports(st, kk));
    let m = k.slot(b, SLOT_ROWS);
    let a = MatMulArgs::load(b, k, ep, n);
    let x = a.x;
    let blocks = kk / BLOCK;
    let qss = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (2 * kk) as u32, 4));
    let sss = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (2 * blocks * 4) as u32, 4));
    let q = b.ins().stack_addr(types::I64, qss, 0);
    let s = b.ins().stack_addr(types::I64, sss, 0);
    let m2 = b.ins().band_imm_s(m, !1);
    each_task(b, k, |b, t| {
        let c0 = b.ins().imul_imm_s(t, MATMUL_COLS_PER_TASK as i64);
        let c1 = b.ins().iadd_imm_s(c0, MATMUL_COLS_PER_TASK as i64);
        let nn = b.c64(n as i64);
        let over = b.ins().icmp(IntCC::SignedGreaterThan, c1, nn);
        let c1 = b.ins().select(over, nn, c1);
        let len = b.ins().isub(c1, c0);
        let len4 = b.ins().band_imm_s(len, !3);
        let c4 = b.ins().iadd(c0, len4);
        let rows = |b: &mut FunctionBuilder, row: Value, rt: usize| {
            for r in 0..rt {
                let xr = b.ins().iadd_imm_s(row, r as i64);
                let xr = b.addr(x, xr, kk as i64 * 4);
                let qr = b.ins().iadd_imm_s(q, (r as u64 * kk) as i64);
                let sr = b.ins().iadd_imm_s(s, (r as u64 * blocks * 4) as i64);
                quantize_row(b, xr, qr, sr, kk);
            }
            for (pass, w) in a.passes() {
                b.for_range(c0, c4, 4, |b, col| tile(b, st, q, s, &a, pass, w, row, col, rt, 4, kk, n));
                if !n.is_multiple_of(4) {
                    b.for_range(c4, c1, 1, |b, col| tile(b, st, q, s, &a, pass, w, row, col, rt, 1, kk, n));
                }
            }
        };
        let zero = b.c64(0);
        b.for_range(zero, m2, 2, |b, row| rows(b, row, 2));
        b.for_range(m2, m, 1, |b, row| rows(b, row, 1));
    });
}
