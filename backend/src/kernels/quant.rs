//! Kernels that read stored weights (f16, bf16, int8 and int4 blocks; layouts in
//! `edgec_ir::quant`) and dequantize them in registers: `matmul` with `transpose_b` and
//! `gather`. The dequantized matrix is never materialized; activations stay f32.
//!
//! A weight row is a sequence of *units* (4 halves, 8 int8, or one group with its f16 scale
//! and min), each decoded into f32x4 vectors of consecutive elements (`each_vec`); `q8_c`'s
//! per-row scale multiplies the finished dot product instead. Rows whose length is not a whole
//! number of units (only f16, bf16 and `q8_c` allow that) finish with scalar elements.
//!
//! `matmul_tq` is compiled as built ([`Schedule::AsBuilt`](super::Schedule)): its tiles make
//! their constants before the loop ([`UnitConsts`]), advance one pointer into `x` and one into
//! the weight, and load each one-vector unit's `x` once for all columns. Tiles are 2×4 for
//! pairs of rows and 1×8 for a single row (decode), whose single-vector units run two per
//! iteration (the 1.1B shape at f16, 2 threads: decode 6.8 → 11.4 tok/s against the
//! optimizer's schedule of 1×4 tiles).

use super::epilogue::{Epilogue, MatMulArgs, Pass};
use super::{Ext, F32X4, Kargs, MATMUL_COLS_PER_TASK, SLOT_ROWS, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use edgec_ir::Storage;

/// Elements and bytes of one unit of a row.
#[derive(Clone, Copy)]
struct Unit {
    elems: u64,
    bytes: u64,
}

fn unit(st: Storage) -> Unit {
    match st {
        Storage::F32 => Unit { elems: 4, bytes: 16 },
        Storage::F16 | Storage::BF16 => Unit { elems: 4, bytes: 8 },
        Storage::Q8C => Unit { elems: 8, bytes: 8 },
        Storage::Q8G { .. } | Storage::Q4G { .. } => {
            Unit { elems: st.group().unwrap(), bytes: st.group_bytes().unwrap() }
        }
    }
}

fn flags_for(ty: types::Type) -> MemFlagsData {
    if ty.is_vector() { MemFlagsData::new().with_endianness(Endianness::Little) } else { MemFlagsData::new() }
}

fn iconst32(b: &mut FunctionBuilder, vector: bool, v: i64) -> Value {
    let s = b.ins().iconst(types::I32, v);
    if vector { b.ins().splat(types::I32X4, s) } else { s }
}

/// IEEE half bits (low 16 bits of an i32 or of each i32x4 lane) to f32: the magnitude shifted
/// into place and scaled by 2^112 (exact, subnormal halves included), then the sign or'ed in.
/// Infinities and NaNs are not preserved (scales and weights are finite).
pub(super) fn half_to_f32(b: &mut FunctionBuilder, bits: Value) -> Value {
    let ity = b.func.dfg.value_type(bits);
    let vector = ity.is_vector();
    let fty = if vector { F32X4 } else { types::F32 };
    let fl = flags_for(ity);
    let m = iconst32(b, vector, 0x7fff);
    let mag = b.ins().band(bits, m);
    let mag = b.ins().ishl_imm_u(mag, 13);
    let sm = iconst32(b, vector, 0x8000);
    let sign = b.ins().band(bits, sm);
    let sign = b.ins().ishl_imm_u(sign, 16);
    let f = b.ins().bitcast(fty, fl, mag);
    let k = math::fconst(b, fty, f32::from_bits(0x7780_0000)); // 2^112
    let f = b.ins().fmul(f, k);
    let fi = b.ins().bitcast(ity, fl, f);
    let r = b.ins().bor(fi, sign);
    b.ins().bitcast(fty, fl, r)
}

/// [`half_to_f32`] of half bits sign-extended to each i32x4 lane (`sload16x4`): the shift puts
/// the sign in bit 31 and the magnitude in place at once, and the scaling keeps the sign, so
/// three operations replace six. The same values, bit for bit.
pub(super) fn half_to_f32_sext(b: &mut FunctionBuilder, bits: Value) -> Value {
    HalfSext::new(b).apply(b, bits)
}

/// [`half_to_f32_sext`]'s constants, made once (before a loop, say).
pub(super) struct HalfSext {
    keep: Value,
    scale: Value,
}

impl HalfSext {
    pub(super) fn new(b: &mut FunctionBuilder) -> HalfSext {
        let keep = iconst32(b, true, 0x8fff_e000u32 as i32 as i64);
        let scale = math::fconst(b, F32X4, f32::from_bits(0x7780_0000)); // 2^112
        HalfSext { keep, scale }
    }

    pub(super) fn apply(&self, b: &mut FunctionBuilder, bits: Value) -> Value {
        let fl = flags_for(types::I32X4);
        let x = b.ins().ishl_imm_u(bits, 13);
        let x = b.ins().band(x, self.keep);
        let f = b.ins().bitcast(F32X4, fl, x);
        b.ins().fmul(f, self.scale)
    }
}

/// f32 (a scalar or each f32x4 lane) to IEEE half bits (the low 16 bits of an i32 or i32x4
/// lane), rounded to nearest even, with integer operations only (no F16C / FP16 needed): the
/// exponent rebiased with the rounding bias added to the bits, subnormal halves by adding 0.5
/// in f32 (which lines the mantissa up with the half's step), magnitudes above the largest half
/// saturated to ±65504 (so a reader without infinities sees the same value), NaN as 0x7e00.
pub(super) fn f32_to_half_bits(b: &mut FunctionBuilder, x: Value) -> Value {
    let fty = b.func.dfg.value_type(x);
    let vector = fty.is_vector();
    let ity = if vector { types::I32X4 } else { types::I32 };
    let fl = flags_for(ity);
    let sel = |b: &mut FunctionBuilder, c: Value, t: Value, f: Value| {
        if vector { b.ins().bitselect(c, t, f) } else { b.ins().select(c, t, f) }
    };
    let cmp = |b: &mut FunctionBuilder, cc: IntCC, a: Value, k: i64| {
        let k = iconst32(b, vector, k);
        b.ins().icmp(cc, a, k)
    };
    let bits = b.ins().bitcast(ity, fl, x);
    let sm = iconst32(b, vector, i64::from(i32::MIN));
    let sign = b.ins().band(bits, sm);
    let a = b.ins().bxor(bits, sign);
    // Normal halves: rebias the exponent (15 - 127), add the rounding bias 0xfff plus the bit
    // that makes ties go to even, drop 13 mantissa bits.
    let odd = b.ins().ushr_imm_u(a, 13);
    let one = iconst32(b, vector, 1);
    let odd = b.ins().band(odd, one);
    let bias = iconst32(b, vector, ((15 - 127) << 23) + 0xfff);
    let n = b.ins().iadd(a, bias);
    let n = b.ins().iadd(n, odd);
    let normal = b.ins().ushr_imm_u(n, 13);
    // Subnormal halves (below 2^-14): |x| + 0.5 in f32 puts the half's bits at the bottom.
    let af = b.ins().bitcast(fty, fl, a);
    let half = math::fconst(b, fty, 0.5);
    let sf = b.ins().fadd(af, half);
    let si = b.ins().bitcast(ity, fl, sf);
    let magic = iconst32(b, vector, 0x3f00_0000);
    let subnormal = b.ins().isub(si, magic);
    let tiny = cmp(b, IntCC::UnsignedLessThan, a, 113 << 23);
    let mut o = sel(b, tiny, subnormal, normal);
    // At or above 65520 (rounds past the largest half): saturate; NaN stays a NaN pattern.
    let big = cmp(b, IntCC::UnsignedGreaterThanOrEqual, a, 0x477f_f000);
    let max = iconst32(b, vector, 0x7bff);
    o = sel(b, big, max, o);
    let nan = cmp(b, IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
    let qnan = iconst32(b, vector, 0x7e00);
    o = sel(b, nan, qnan, o);
    let s16 = b.ins().ushr_imm_u(sign, 16);
    b.ins().bor(o, s16)
}

/// Loads the f16 at `p + off` as a scalar f32.
pub(super) fn load_half(b: &mut FunctionBuilder, p: Value, off: i32) -> Value {
    load_half_with(b, p, off, ro())
}

fn load_half_with(b: &mut FunctionBuilder, p: Value, off: i32, mem: MemFlagsData) -> Value {
    let h = b.ins().uload16(types::I32, mem, p, off);
    half_to_f32(b, h)
}

/// The constants [`each_vec`] uses, made once before a loop.
struct UnitConsts {
    half: HalfSext,
    nibble: Value,
}

impl UnitConsts {
    fn new(b: &mut FunctionBuilder) -> UnitConsts {
        let half = HalfSext::new(b);
        let nibble = b.ins().iconst(types::I8, 0x0f);
        let nibble = b.ins().splat(types::I8X16, nibble);
        UnitConsts { half, nibble }
    }
}

/// Decodes the unit at `p + off` into f32x4 vectors of consecutive elements; `f(b, j, w)` gets
/// vector `j` (elements `4j..4j+4` of the unit). `q8_c` vectors are unscaled codes. `mem`: the
/// loads' flags.
#[allow(clippy::too_many_arguments)]
fn each_vec(
    b: &mut FunctionBuilder,
    st: Storage,
    p: Value,
    off: i32,
    mem: MemFlagsData,
    k: &UnitConsts,
    mut f: impl FnMut(&mut FunctionBuilder, usize, Value),
) {
    let le = flags_for(types::I32X4);
    match st {
        Storage::F32 => {
            let v = b.ins().load(F32X4, mem, p, off);
            f(b, 0, v);
        }
        Storage::F16 => {
            let h = b.ins().sload16x4(mem, p, off);
            let v = k.half.apply(b, h);
            f(b, 0, v);
        }
        Storage::BF16 => {
            let h = b.ins().uload16x4(mem, p, off);
            let h = b.ins().ishl_imm_u(h, 16);
            let v = b.ins().bitcast(F32X4, le, h);
            f(b, 0, v);
        }
        Storage::Q8C => {
            let q = b.ins().sload8x8(mem, p, off);
            let lo = b.ins().swiden_low(q);
            let hi = b.ins().swiden_high(q);
            let lo = b.ins().fcvt_from_sint(F32X4, lo);
            f(b, 0, lo);
            let hi = b.ins().fcvt_from_sint(F32X4, hi);
            f(b, 1, hi);
        }
        Storage::Q8G { group } => {
            let d = load_half_with(b, p, off, mem);
            let dv = b.ins().splat(F32X4, d);
            for s in 0..group as usize / 8 {
                let q = b.ins().sload8x8(mem, p, off + 2 + 8 * s as i32);
                for (h, half) in [b.ins().swiden_low(q), b.ins().swiden_high(q)].into_iter().enumerate() {
                    let v = b.ins().fcvt_from_sint(F32X4, half);
                    let v = b.ins().fmul(v, dv);
                    f(b, 2 * s + h, v);
                }
            }
        }
        Storage::Q4G { group, min } => {
            let d = load_half_with(b, p, off, mem);
            let m = if min {
                load_half_with(b, p, off + 2, mem)
            } else {
                let k = math::fconst(b, types::F32, -8.0);
                b.ins().fmul(d, k)
            };
            let dv = b.ins().splat(F32X4, d);
            let mv = b.ins().splat(F32X4, m);
            let hdr = if min { 4 } else { 2 };
            for s in 0..group as usize / 32 {
                let raw = b.ins().load(types::I8X16, mem, p, off + hdr + 16 * s as i32);
                let lo = b.ins().band(raw, k.nibble);
                let hi = b.ins().ushr_imm_u(raw, 4);
                for (nh, nib) in [lo, hi].into_iter().enumerate() {
                    let w16 = [b.ins().uwiden_low(nib), b.ins().uwiden_high(nib)];
                    for (q16, v16) in w16.into_iter().enumerate() {
                        let w32 = [b.ins().uwiden_low(v16), b.ins().uwiden_high(v16)];
                        for (q32, v32) in w32.into_iter().enumerate() {
                            let v = b.ins().fcvt_from_sint(F32X4, v32);
                            let v = b.ins().fma(v, dv, mv);
                            f(b, 8 * s + 4 * nh + 2 * q16 + q32, v);
                        }
                    }
                }
            }
        }
    }
}

/// Element `i` of the row at `row` as a scalar f32 (tails of f16, bf16 and `q8_c` rows;
/// `q8_c` unscaled).
fn scalar_elem(b: &mut FunctionBuilder, st: Storage, row: Value, i: u64) -> Value {
    match st {
        Storage::F32 => b.ins().load(types::F32, ro(), row, i as i32 * 4),
        Storage::F16 => load_half(b, row, i as i32 * 2),
        Storage::BF16 => {
            let h = b.ins().uload16(types::I32, ro(), row, i as i32 * 2);
            let h = b.ins().ishl_imm_u(h, 16);
            b.ins().bitcast(types::F32, MemFlagsData::new(), h)
        }
        Storage::Q8C => {
            let q = b.ins().sload8(types::I32, ro(), row, i as i32);
            b.ins().fcvt_from_sint(types::F32, q)
        }
        Storage::Q8G { .. } | Storage::Q4G { .. } => unreachable!("grouped rows are whole groups"),
    }
}

/// `q8_c`'s scale of row `r` of a `[rows, k]` weight at `w`.
pub(super) fn q8c_scale(b: &mut FunctionBuilder, w: Value, rows: u64, k: u64, r: Value) -> Value {
    let at = Storage::q8c_scales_offset(rows, k).expect("checked by the layout") as i64;
    let base = b.ins().iadd_imm_s(w, at);
    let a = b.addr(base, r, 4);
    b.ins().load(types::F32, ro(), a, 0)
}

/// An `rt × ct` tile of `x[M,K]·W[N,K]ᵀ` with `W` (the weight of `pass`) stored as `st`.
#[allow(clippy::too_many_arguments)]
fn tile_q(
    b: &mut FunctionBuilder,
    st: Storage,
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
    let x = a.x;
    let u = unit(st);
    let rb = st.row_bytes(kk).expect("checked by the layout") as i64;
    let units = kk / u.elems;
    let x0 = b.addr(x, row0, kk as i64 * 4);
    let w0 = b.addr(w, col0, rb);
    let xr: Vec<Value> = (0..rt).map(|r| b.ins().iadd_imm_s(x0, r as i64 * kk as i64 * 4)).collect();
    let wr: Vec<Value> = (0..ct).map(|c| b.ins().iadd_imm_s(w0, c as i64 * rb)).collect();
    let mut sums: Vec<Vec<Value>> = Vec::with_capacity(rt);
    if units > 0 {
        let k = UnitConsts::new(b);
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
        // The loop advances a pointer into `x` and one into `w`; rows and columns are offsets.
        let xp_var = b.declare_var(types::I64);
        b.def_var(xp_var, x0);
        // Unit `i` of an iteration, at `wp + i·u.bytes` and `xp + i·u.elems·4`.
        let unit_at = |b: &mut FunctionBuilder, wp: Value, xp: Value, i: u64| {
            // A one-vector unit's `x` vectors are loaded once for all columns; a longer unit's
            // as each is used (kept, they would not fit in registers).
            let x_at = |r: usize, j: usize| ((r as u64 * kk + i * u.elems) * 4 + 16 * j as u64) as i32;
            let shared: Option<Vec<Value>> =
                (u.elems == 4).then(|| (0..rt).map(|r| b.ins().load(F32X4, ro(), xp, x_at(r, 0))).collect());
            for c in 0..ct {
                let at = (c as i64 * rb + (i * u.bytes) as i64) as i32;
                each_vec(b, st, wp, at, ro(), &k, |b, j, wv| {
                    for r in 0..rt {
                        let xv = match &shared {
                            Some(x) => x[r],
                            None => b.ins().load(F32X4, ro(), xp, x_at(r, j)),
                        };
                        let s = b.use_var(acc[r][c]);
                        // The decoded weight first: it dies here, so x64 gives it the result (no copy).
                        let s = b.ins().fma(wv, xv, s);
                        b.def_var(acc[r][c], s);
                    }
                });
            }
        };
        // Two units per iteration when they are single vectors (half the loop overhead), then
        // the odd one.
        let per = if u.elems == 4 { 2 } else { 1 };
        let whole = units / per * per;
        for (lo, hi, per) in [(0, whole, per), (whole, units, 1)] {
            if lo == hi {
                continue;
            }
            let from = b.ins().iadd_imm_s(w0, (lo * u.bytes) as i64);
            let to = b.ins().iadd_imm_s(w0, (hi * u.bytes) as i64);
            b.for_range(from, to, (per * u.bytes) as i64, |b, wp| {
                let xp = b.use_var(xp_var);
                for i in 0..per {
                    unit_at(b, wp, xp, i);
                }
                let next = b.ins().iadd_imm_s(xp, (per * u.elems * 4) as i64);
                b.def_var(xp_var, next);
            });
        }
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
    for i in units * u.elems..kk {
        let xs: Vec<Value> = xr.iter().map(|&p| b.ins().load(types::F32, ro(), p, i as i32 * 4)).collect();
        for (c, &p) in wr.iter().enumerate() {
            let ws = scalar_elem(b, st, p, i);
            for (r, &xv) in xs.iter().enumerate() {
                sums[r][c] = b.ins().fma(xv, ws, sums[r][c]);
            }
        }
    }
    if st == Storage::Q8C {
        for c in 0..ct {
            let col = b.ins().iadd_imm_s(col0, c as i64);
            let s = q8c_scale(b, w, n, kk, col);
            for row in sums.iter_mut() {
                row[c] = b.ins().fmul(row[c], s);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        let orow = b.ins().iadd_imm_s(row0, r as i64);
        let out = a.at(b, orow, col0);
        for (c, &s) in row.iter().enumerate() {
            out.store(b, pass, c, s);
        }
    }
}

/// Lowers `matmul` with `transpose_b` and `linear` for stored weights: task = a block of
/// `MATMUL_COLS_PER_TASK` output columns over all rows, like the f32 kernel; 2×4 tiles (each
/// decoded weight vector feeds two rows), then 1×4 tiles, then 1×1 for leftover columns, once
/// per epilogue pass.
/// `st` holds the storage of the weight and of the up projection (gated `linear` only).
pub(crate) fn matmul_tq(b: &mut FunctionBuilder, k: &Kargs, kk: u64, n: u64, st: [Storage; 2], ep: Epilogue) {
    let m = k.slot(b, SLOT_ROWS);
    let a = MatMulArgs::load(b, k, ep, n);
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
        let len8 = b.ins().band_imm_s(len, !7);
        let c8 = b.ins().iadd(c0, len8);
        b.for_range(c0, c4, 4, |b, col| {
            for ((pass, w), st) in a.passes().into_iter().zip(st) {
                let zero = b.c64(0);
                b.for_range(zero, m2, 2, |b, row| tile_q(b, st, &a, pass, w, row, col, 2, 4, kk, n));
            }
        });
        // A single row (decode, or the odd last one): 1×8 tiles, each `x` vector feeding eight
        // columns, then 1×4.
        for (lo, hi, ct) in [(c0, c8, 8), (c8, c4, 4)] {
            b.for_range(lo, hi, ct as i64, |b, col| {
                for ((pass, w), st) in a.passes().into_iter().zip(st) {
                    b.for_range(m2, m, 1, |b, row| tile_q(b, st, &a, pass, w, row, col, 1, ct, kk, n));
                }
            });
        }
        if !n.is_multiple_of(4) {
            b.for_range(c4, c1, 1, |b, col| {
                for ((pass, w), st) in a.passes().into_iter().zip(st) {
                    let zero = b.c64(0);
                    b.for_range(zero, m, 1, |b, row| tile_q(b, st, &a, pass, w, row, col, 1, 1, kk, n));
                }
            });
        }
    });
}

/// Lowers `gather` from a stored `[vocab, h]` table: task `t` decodes row `ids[t]` into output
/// row `t` (ids were range-checked by the entry point). A `packed` table (`pack.rs`) has the
/// row's bytes put back in row order in a stack buffer first.
pub(crate) fn gather_q(b: &mut FunctionBuilder, k: &Kargs, h: u64, vocab: u64, st: Storage, packed: bool) {
    let table = k.ptr(b, 0);
    let ids = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    let u = unit(st);
    let rb = st.row_bytes(h).expect("checked by the layout") as i64;
    let units = h / u.elems;
    let buf = packed.then(|| {
        let ss = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, rb as u32, 4));
        b.ins().stack_addr(types::I64, ss, 0)
    });
    each_task(b, k, |b, t| {
        let ip = b.addr(ids, t, 4);
        let id = b.ins().load(types::I32, ro(), ip, 0);
        let id = b.ins().sextend(types::I64, id);
        let (src, mem) = match buf {
            Some(buf) => {
                unpack_row(b, st, table, id, vocab, h, buf);
                (buf, rw())
            }
            None => (b.addr(table, id, rb), ro()),
        };
        let dst = b.addr(out, t, h as i64 * 4);
        let scale = (st == Storage::Q8C).then(|| q8c_scale(b, table, vocab, h, id));
        let scale_v = scale.map(|s| b.ins().splat(F32X4, s));
        if units > 0 {
            let k = UnitConsts::new(b);
            let lo = b.c64(0);
            let hi = b.c64(units as i64);
            b.for_range(lo, hi, 1, |b, ui| {
                let p = b.addr(src, ui, u.bytes as i64);
                let d = b.addr(dst, ui, u.elems as i64 * 4);
                each_vec(b, st, p, 0, mem, &k, |b, j, wv| {
                    let wv = match scale_v {
                        Some(s) => b.ins().fmul(wv, s),
                        None => wv,
                    };
                    b.ins().store(rw(), wv, d, j as i32 * 16);
                });
            });
        }
        for i in units * u.elems..h {
            let v = scalar_elem(b, st, src, i);
            let v = match scale {
                Some(s) => b.ins().fmul(v, s),
                None => v,
            };
            b.ins().store(rw(), v, dst, i as i32 * 4);
        }
    });
}

/// Copies row `id` of a packed `[rows, h]` table at `table` into `buf` in row layout: per
/// group, its header fields (2 bytes each, 8 apart in the quad) and its code words (4 bytes
/// each, 16 apart), its quad's groups [`pack::quad_group_at`](crate::pack::quad_group_at).
#[allow(clippy::too_many_arguments)]
fn unpack_row(b: &mut FunctionBuilder, st: Storage, table: Value, id: Value, rows: u64, h: u64, buf: Value) {
    let (group, header, sub) = crate::pack::group_shape(st);
    let (quad, tile_quads) = (crate::pack::QUAD as i64, crate::pack::TILE_QUADS as i64);
    let rb = st.row_bytes(h).expect("checked by the layout") as i64;
    let gb = (header + group / 32 * sub) as i64;
    let q = b.ins().ushr_imm_u(id, 2);
    let j = b.ins().band_imm_s(id, 3);
    // The quad's tile: its first quad, and how many quads it holds (fewer only in the last).
    let first = b.ins().band_imm_s(q, -tile_quads);
    let in_full = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, q, rows as i64 / quad / tile_quads * tile_quads);
    let full = b.c64(tile_quads * quad * gb);
    let alone = b.c64(quad * gb);
    let stride = b.ins().select(in_full, full, alone);
    let tile = b.addr(table, first, quad * rb);
    let within = b.ins().isub(q, first);
    let base = b.addr(tile, within, quad * gb);
    let halves = b.addr(base, j, 2);
    let words = b.addr(base, j, 4);
    let lo = b.c64(0);
    let hi = b.c64(h as i64 / group as i64);
    b.for_range(lo, hi, 1, |b, g| {
        let off = b.ins().imul(g, stride);
        let hs = b.ins().iadd(halves, off);
        let ws = b.ins().iadd(words, off);
        let d = b.addr(buf, g, gb);
        for f in 0..header / 2 {
            let v = b.ins().uload16(types::I32, ro(), hs, crate::pack::field_at(f, 0) as i32);
            b.ins().istore16(rw(), v, d, 2 * f as i32);
        }
        for s in 0..group / 32 {
            for v in 0..sub / 4 {
                let at = crate::pack::word_at(header, sub, s, v, 0) as i32;
                let x = b.ins().load(types::I32, ro(), ws, at);
                b.ins().store(rw(), x, d, (header + s * sub + 4 * v) as i32);
            }
        }
    });
}
