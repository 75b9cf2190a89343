//! int8-activation `matmul` (transpose_b) for int8 and int4 weights (`q8_c`, `q8_gG`,
//! `q4s_gG`, `q4_gG`, G a multiple of 32), on both ISAs and in every CPU variant.
//!
//! Each activation row is quantized on the fly to int8 in blocks of 32 (scale `d_a` = block
//! max |x| / 127, round to nearest). Every 32-element block of a dot product is then an exact
//! integer dot product per i32 lane (lane `i` sums elements `4i..4i+4` of each 16-byte half,
//! the grouping of `sdot` and `vpdpbusd`), converted to f32 once and scaled:
//!
//! - `q8`: `Σ w·a`, times `d_a · d_w` (`q8_c`'s per-row scale multiplies the finished sum);
//! - `q4s` (`(q - 8)·d`): `Σ q·a - 8·Σ a`, times `d_a · d_w`;
//! - `q4` (`q·d + m`): `Σ q·a` times `d_a · d_w`, plus `Σ a` times `d_a · m_w`.
//!
//! The per-lane activation sums `Σ a` are computed once per row when it is quantized.
//! The integer tree (widening multiply + pairwise adds, [`Dot`]) has the weights signed on
//! aarch64 (Cranelift folds it into `sdot` with `has_dotprod`) and unsigned on x86 (folded into
//! `vpdpbusd` with `has_avx_vnni` / `has_avx512vnni`): there int8 weights enter as `w ^ 0x80 =
//! w + 128` and the lanes start from `-128·Σ a`. Nibbles are 0..15 on both. So every lane holds
//! the same integer on every ISA and variant, the float formula is the same, and results are
//! bit-identical everywhere.
//!
//! Task = a block of [`cols_per_task`] output columns over all rows (like `matmul_tq`): per pair
//! of rows, the rows are quantized into a stack buffer, then 2×4 tiles run over the task's
//! columns (once per `linear` epilogue pass). Quantization is repeated per task, so tasks are
//! wide when there are enough of them (one row in decode would otherwise be quantized again
//! for every 16 columns).

use super::epilogue::{Epilogue, MatMulArgs, Pass};
use super::{Ext, F32X4, Kargs, MATMUL_COLS_PER_TASK, SLOT_ROWS, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{
    InstBuilder, StackSlotData, StackSlotKind, Value, condcodes::FloatCC, condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
use edgec_ir::Storage;

/// Elements per activation block.
pub(crate) const BLOCK: u64 = 32;
/// Largest K with an int8 twin: two quantized rows (codes, scales, lane sums) live on the stack.
pub(crate) const MAX_K: u64 = 16384;

/// The integer dot-product tree of a kernel. All three give the same i32 lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dot {
    /// i8 weights × i8 activations: aarch64 (`sdot` with `has_dotprod`).
    Signed,
    /// u8 weights × i8 activations in VNNI's pattern: x86 variants with `vpdpbusd`.
    Unsigned,
    /// u8 weights × i8 activations for x86 without VNNI: widened to i16 first and multiplied
    /// pairwise, `pmaddwd`'s pattern. Measured against `Unsigned` compiled without VNNI (110M
    /// Llama, q4s): 1539 instead of 2025 instructions per kernel, prefill 57 instead of 48
    /// tokens/s, decode the same within noise.
    UnsignedMadd,
}

/// Whether a stored weight layout and inner dim have the int8-activation kernel.
pub(crate) fn supports(st: Storage, kk: u64) -> bool {
    let grouped = st.group().is_some_and(|g| g.is_multiple_of(BLOCK) && kk.is_multiple_of(g));
    matches!(st, Storage::Q8C | Storage::Q8G { .. } | Storage::Q4G { .. })
        && (st == Storage::Q8C || grouped)
        && kk > 0
        && kk.is_multiple_of(BLOCK)
        && kk <= MAX_K
}

/// Output columns per task: 16 like the other matmuls, wider while at least 24 tasks remain
/// (every task quantizes its rows again).
pub(crate) fn cols_per_task(n: u64) -> u64 {
    [64, 32].into_iter().find(|&c| n / c >= 24).unwrap_or(MATMUL_COLS_PER_TASK)
}

/// `acc + dot4(a, w)`: per i32 lane, the sum of four i8 (activation) × i8 or u8 (weight)
/// products; exact. `Signed`/`Unsigned` are the trees `sdot`/`vpdpbusd` are matched from.
fn dot4(b: &mut FunctionBuilder, dot: Dot, a: Value, w: Value, acc: Value) -> Value {
    let s = match dot {
        Dot::Signed | Dot::Unsigned => {
            let (wl, wh) = if dot == Dot::Signed {
                (b.ins().swiden_low(w), b.ins().swiden_high(w))
            } else {
                (b.ins().uwiden_low(w), b.ins().uwiden_high(w))
            };
            let al = b.ins().swiden_low(a);
            let ah = b.ins().swiden_high(a);
            let lo = b.ins().imul(al, wl);
            let hi = b.ins().imul(ah, wh);
            let lo_l = b.ins().swiden_low(lo);
            let lo_h = b.ins().swiden_high(lo);
            let hi_l = b.ins().swiden_low(hi);
            let hi_h = b.ins().swiden_high(hi);
            let pl = b.ins().iadd_pairwise(lo_l, lo_h);
            let ph = b.ins().iadd_pairwise(hi_l, hi_h);
            b.ins().iadd_pairwise(pl, ph)
        }
        Dot::UnsignedMadd => {
            // pmaddwd(x, y) = iadd_pairwise(imul(swiden_low x, swiden_low y), imul(high, high)):
            // sums of element pairs; one more pairwise add makes the lanes sums of four.
            let madd = |b: &mut FunctionBuilder, x: Value, y: Value| {
                let xl = b.ins().swiden_low(x);
                let yl = b.ins().swiden_low(y);
                let xh = b.ins().swiden_high(x);
                let yh = b.ins().swiden_high(y);
                let l = b.ins().imul(xl, yl);
                let h = b.ins().imul(xh, yh);
                b.ins().iadd_pairwise(l, h)
            };
            let al = b.ins().swiden_low(a);
            let ah = b.ins().swiden_high(a);
            let wl = b.ins().uwiden_low(w);
            let wh = b.ins().uwiden_high(w);
            let pl = madd(b, al, wl);
            let ph = madd(b, ah, wh);
            b.ins().iadd_pairwise(pl, ph)
        }
    };
    b.ins().iadd(s, acc)
}

/// How a stored layout is read, 32 elements at a time.
#[derive(Clone, Copy)]
struct Layout {
    st: Storage,
    /// Elements per weight scale (`q8_c`: any multiple of 32; its scale is per row).
    group: u64,
    /// Bytes per group: header (f16 `d`, then f16 `m` for `q4`) and codes.
    group_bytes: i64,
    header: i32,
    /// Code bytes per 32 elements.
    sub_bytes: i32,
}

impl Layout {
    fn of(st: Storage) -> Layout {
        let group = st.group().unwrap_or(BLOCK);
        let (header, sub_bytes) = match st {
            Storage::Q8C => (0, 32),
            Storage::Q8G { .. } => (2, 32),
            Storage::Q4G { min, .. } => (if min { 4 } else { 2 }, 16),
            _ => unreachable!("checked by supports"),
        };
        Layout { st, group, group_bytes: header as i64 + (group as i64 / 32) * sub_bytes as i64, header, sub_bytes }
    }
    fn int4(&self) -> bool {
        matches!(self.st, Storage::Q4G { .. })
    }
    fn has_min(&self) -> bool {
        matches!(self.st, Storage::Q4G { min: true, .. })
    }
    /// What the integer lanes of a block start from, as a multiple of `Σ a` (the weight codes'
    /// offset from their signed value).
    fn offset(&self, dot: Dot) -> Option<i64> {
        match self.st {
            Storage::Q4G { min: false, .. } => Some(8),
            Storage::Q8C | Storage::Q8G { .. } if dot != Dot::Signed => Some(128),
            _ => None,
        }
    }
    /// Whether the kernel needs the per-lane activation sums.
    fn needs_sums(&self, dot: Dot) -> bool {
        self.offset(dot).is_some() || self.has_min()
    }
    /// The two 16-byte code vectors of the 32 elements at `p` (elements 0..16 and 16..32),
    /// as the tree's weight operand.
    fn codes(&self, b: &mut FunctionBuilder, dot: Dot, p: Value) -> (Value, Value) {
        if self.int4() {
            // Byte i: element i in the low nibble, element 16 + i in the high one.
            let v = b.ins().load(types::I8X16, ro(), p, 0);
            let m = b.ins().iconst(types::I8, 0x0f);
            let m = b.ins().splat(types::I8X16, m);
            let lo = b.ins().band(v, m);
            let hi = b.ins().ushr_imm_u(v, 4);
            return (lo, hi);
        }
        let v0 = b.ins().load(types::I8X16, ro(), p, 0);
        let v1 = b.ins().load(types::I8X16, ro(), p, 16);
        if dot == Dot::Signed {
            return (v0, v1);
        }
        // w + 128 as u8.
        let k = b.ins().iconst(types::I8, 0x80);
        let k = b.ins().splat(types::I8X16, k);
        (b.ins().bxor(v0, k), b.ins().bxor(v1, k))
    }
}

/// The stack buffer one or two quantized rows live in: codes (`kk` bytes per row), block
/// scales (f32 per block) and per-lane block sums (i32x4 per block, when the layout needs
/// them).
#[derive(Clone, Copy)]
struct Scratch {
    q: Value,
    s: Value,
    sum: Value,
    kk: u64,
}

impl Scratch {
    fn blocks(&self) -> u64 {
        self.kk / BLOCK
    }
    /// Row `r`'s codes, scales and sums pointers.
    fn row(&self, b: &mut FunctionBuilder, r: usize) -> (Value, Value, Value) {
        let r = r as i64;
        let q = b.ins().iadd_imm_s(self.q, r * self.kk as i64);
        let s = b.ins().iadd_imm_s(self.s, r * self.blocks() as i64 * 4);
        let sum = b.ins().iadd_imm_s(self.sum, r * self.blocks() as i64 * 16);
        (q, s, sum)
    }
}

/// Quantizes the `kk` f32 of `x` into row `r` of `sc`: int8 codes, block scales and (with
/// `sums`) each block's per-lane activation sums, with the same tree as the dot products.
fn quantize_row(b: &mut FunctionBuilder, x: Value, sc: &Scratch, r: usize, dot: Dot, sums: bool) {
    let (q, s, sum) = sc.row(b, r);
    let lo = b.c64(0);
    let hi = b.c64(sc.blocks() as i64);
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
        let mut q8 = [ints[0]; 2];
        for (h, q8h) in q8.iter_mut().enumerate() {
            let a = b.ins().snarrow(ints[4 * h], ints[4 * h + 1]);
            let c = b.ins().snarrow(ints[4 * h + 2], ints[4 * h + 3]);
            *q8h = b.ins().snarrow(a, c);
            b.ins().store(rw(), *q8h, qp, 16 * h as i32);
        }
        if sums {
            let one = b.ins().iconst(types::I8, 1);
            let ones = b.ins().splat(types::I8X16, one);
            let z = b.ins().iconst(types::I32, 0);
            let z = b.ins().splat(types::I32X4, z);
            let t = dot4(b, dot, q8[0], ones, z);
            let t = dot4(b, dot, q8[1], ones, t);
            let p = b.addr(sum, blk, 16);
            b.ins().store(rw(), t, p, 0);
        }
    });
}

/// One activation row's values for one 32-element block of a tile.
struct RowBlock {
    /// The codes of elements 0..16 and 16..32.
    a0: Value,
    a1: Value,
    /// Where the block's integer lanes start (`-offset · Σ a`, or zero).
    start: Value,
    /// `d_a · d` per column (lane c), or `d_a` splat for `q8_c`.
    sc: Value,
    /// q4: `d_a · m` per column and the block's lane sums as f32.
    min: Option<(Value, Value)>,
}

/// An `rt × ct` tile: rows `0..rt` of the scratch against rows `col0..col0 + ct` of `w` (the
/// weight of `pass`), finished by the epilogue of `a` into output rows `row0..row0 + rt`.
#[allow(clippy::too_many_arguments)]
fn tile(
    b: &mut FunctionBuilder,
    l: Layout,
    dot: Dot,
    sc: &Scratch,
    a: &MatMulArgs,
    pass: Pass,
    w: Value,
    row0: Value,
    col0: Value,
    rt: usize,
    ct: usize,
    n: u64,
) {
    let kk = sc.kk;
    let rb = l.st.row_bytes(kk).expect("checked by the layout") as i64;
    let subs = l.group / BLOCK;
    let wr: Vec<Value> = (0..ct)
        .map(|c| {
            let col = b.ins().iadd_imm_s(col0, c as i64);
            b.addr(w, col, rb)
        })
        .collect();
    let rows: Vec<(Value, Value, Value)> = (0..rt).map(|r| sc.row(b, r)).collect();
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
    let hi = b.c64((kk / l.group) as i64);
    b.for_range(lo, hi, 1, |b, g| {
        let gp: Vec<Value> = wr.iter().map(|&wp| b.addr(wp, g, l.group_bytes)).collect();
        // The group's scale `d` and (q4) min `m` of the tile's columns, one per lane, converted
        // from f16 together (q8_c scales the finished sum instead).
        let halves = |b: &mut FunctionBuilder, off: i32| {
            let z = b.ins().iconst(types::I32, 0);
            let mut v = b.ins().splat(types::I32X4, z);
            for (c, &p) in gp.iter().enumerate() {
                let h = b.ins().uload16(types::I32, ro(), p, off);
                v = b.ins().insertlane(v, h, c as u8);
            }
            super::quant::half_to_f32(b, v)
        };
        let d = (l.header > 0).then(|| halves(b, 0));
        let m = l.has_min().then(|| halves(b, 2));
        for s in 0..subs {
            let blk = b.ins().imul_imm_s(g, subs as i64);
            let blk = b.ins().iadd_imm_s(blk, s as i64);
            // Per row: the activation codes, the lanes' start, the scales `d_a·d` per column
            // (lane c; `d_a` splat for q8_c), and for q4 `d_a·m` per column and the lane sums.
            let xq: Vec<RowBlock> = rows
                .iter()
                .map(|&(q, sp, sump)| {
                    // The stack buffer is written by this kernel: plain loads, not `ro()`.
                    let qp = b.addr(q, blk, BLOCK as i64);
                    let a0 = b.ins().load(types::I8X16, rw(), qp, 0);
                    let a1 = b.ins().load(types::I8X16, rw(), qp, 16);
                    let sp = b.addr(sp, blk, 4);
                    let xs = b.ins().load(types::F32, rw(), sp, 0);
                    let sum = l.needs_sums(dot).then(|| {
                        let p = b.addr(sump, blk, 16);
                        b.ins().load(types::I32X4, rw(), p, 0)
                    });
                    let start = match (l.offset(dot), sum) {
                        (Some(off), Some(sum)) => {
                            let sh = b.ins().ishl_imm_u(sum, i64::from(off.trailing_zeros()));
                            let z = b.ins().iconst(types::I32, 0);
                            let z = b.ins().splat(types::I32X4, z);
                            b.ins().isub(z, sh)
                        }
                        _ => {
                            let z = b.ins().iconst(types::I32, 0);
                            b.ins().splat(types::I32X4, z)
                        }
                    };
                    let xsv = b.ins().splat(F32X4, xs);
                    let sc = match d {
                        Some(d) => b.ins().fmul(xsv, d),
                        None => xsv,
                    };
                    let min = match (m, sum) {
                        (Some(m), Some(sum)) => Some((b.ins().fmul(xsv, m), b.ins().fcvt_from_sint(F32X4, sum))),
                        _ => None,
                    };
                    RowBlock { a0, a1, start, sc, min }
                })
                .collect();
            for (c, &p) in gp.iter().enumerate() {
                let cp = b.ins().iadd_imm_s(p, (l.header + s as i32 * l.sub_bytes) as i64);
                let (w0, w1) = l.codes(b, dot, cp);
                let lane = |b: &mut FunctionBuilder, v: Value| {
                    if d.is_none() {
                        return v;
                    }
                    let x = b.ins().extractlane(v, c as u8);
                    b.ins().splat(F32X4, x)
                };
                for (r, x) in xq.iter().enumerate() {
                    let t = dot4(b, dot, x.a0, w0, x.start);
                    let t = dot4(b, dot, x.a1, w1, t);
                    let f = b.ins().fcvt_from_sint(F32X4, t);
                    let scv = lane(b, x.sc);
                    let mut av = b.use_var(acc[r][c]);
                    av = b.ins().fma(f, scv, av);
                    if let Some((mv, sumf)) = x.min {
                        let mv = lane(b, mv);
                        av = b.ins().fma(sumf, mv, av);
                    }
                    b.def_var(acc[r][c], av);
                }
            }
        }
    });
    for (r, row) in acc.iter().enumerate() {
        let orow = b.ins().iadd_imm_s(row0, r as i64);
        for (c, &sum) in row.iter().enumerate() {
            let sum = b.use_var(sum);
            let mut v = b.hsum(sum);
            if l.st == Storage::Q8C {
                let col = b.ins().iadd_imm_s(col0, c as i64);
                let s = super::quant::q8c_scale(b, w, n, kk, col);
                v = b.ins().fmul(v, s);
            }
            a.store(b, pass, orow, col0, c, v);
        }
    }
}

/// Lowers `matmul` (transpose_b) with int8 activations; `supports(st, kk)` must hold.
pub(crate) fn matmul_tq8(b: &mut FunctionBuilder, k: &Kargs, kk: u64, n: u64, st: Storage, dot: Dot, ep: Epilogue) {
    debug_assert!(supports(st, kk));
    let l = Layout::of(st);
    let sums = l.needs_sums(dot);
    let m = k.slot(b, SLOT_ROWS);
    let a = MatMulArgs::load(b, k, ep, n);
    let x = a.x;
    let blocks = kk / BLOCK;
    let slot = |b: &mut FunctionBuilder, bytes: u64| {
        let ss = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes.max(16) as u32, 4));
        b.ins().stack_addr(types::I64, ss, 0)
    };
    let sc = Scratch {
        q: slot(b, 2 * kk),
        s: slot(b, 2 * blocks * 4),
        sum: slot(b, if sums { 2 * blocks * 16 } else { 0 }),
        kk,
    };
    let m2 = b.ins().band_imm_s(m, !1);
    let cols = cols_per_task(n) as i64;
    each_task(b, k, |b, t| {
        let c0 = b.ins().imul_imm_s(t, cols);
        let c1 = b.ins().iadd_imm_s(c0, cols);
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
                quantize_row(b, xr, &sc, r, dot, sums);
            }
            for (pass, w) in a.passes() {
                b.for_range(c0, c4, 4, |b, col| tile(b, l, dot, &sc, &a, pass, w, row, col, rt, 4, n));
                if !n.is_multiple_of(4) {
                    b.for_range(c4, c1, 1, |b, col| tile(b, l, dot, &sc, &a, pass, w, row, col, rt, 1, n));
                }
            }
        };
        let zero = b.c64(0);
        b.for_range(zero, m2, 2, |b, row| rows(b, row, 2));
        b.for_range(m2, m, 1, |b, row| rows(b, row, 1));
    });
}
