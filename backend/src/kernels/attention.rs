//! `attention`: causal, grouped-query, optionally windowed, reading the KV state.
//!
//! Compiled as built ([`Schedule::AsBuilt`](super::Schedule)): the task's addresses and
//! constants are computed where they are written, once, and the loops run in the order built.

use super::{Ext, F32X4, Kargs, KvStore, SLOT_POS, each_task, ro, rw};
use crate::math;
use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, condcodes::IntCC, types,
};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::types::{Q8_BLOCK, Q8_BLOCK_BYTES};

/// Where a KV head's values sit in a q8 cache row.
#[derive(Clone, Copy)]
enum Q8Head {
    /// `head_dim` is whole blocks: the row pointer given is the head's first block.
    Aligned,
    /// Otherwise: the index of the head's first value in the row (a run-time value); each
    /// value's block is found from its index.
    At(Value),
}

/// Decodes one KV head of a q8 cache row at `row` in registers, calling `f(b, c, x)` for each
/// accumulator `c` of the head (f32x4 chunks `0..chunks`: values `4c..4c+4`, then scalars for
/// a `head_dim` that is not a multiple of 4) with `x = d × code`, exact in f32 (an f16 scale
/// times an int8). Loads and decodes interleave with `f`'s use of them.
fn q8_head(
    b: &mut FunctionBuilder,
    row: Value,
    head: Q8Head,
    head_dim: u64,
    mut f: impl FnMut(&mut FunctionBuilder, usize, Value),
) {
    let chunks = (head_dim / 4) as usize;
    let tail = (head_dim % 4) as usize;
    let (bs, bb) = (Q8_BLOCK as i64, Q8_BLOCK_BYTES as i64);
    match head {
        Q8Head::Aligned => {
            for blk in 0..head_dim as i64 / bs {
                let d = super::quant::load_half(b, row, (blk * bb) as i32);
                let dv = b.ins().splat(F32X4, d);
                for s in 0..bs / 8 {
                    let q = b.ins().sload8x8(ro(), row, (blk * bb + 2 + 8 * s) as i32);
                    for (h, w) in [b.ins().swiden_low(q), b.ins().swiden_high(q)].into_iter().enumerate() {
                        let x = b.ins().fcvt_from_sint(F32X4, w);
                        let x = b.ins().fmul(x, dv);
                        f(b, (blk * bs / 4 + 2 * s) as usize + h, x);
                    }
                }
            }
            return;
        }
        Q8Head::At(_) => {}
    }
    for c in 0..chunks + tail {
        let x = q8_item(b, row, head, head_dim, c);
        f(b, c, x);
    }
}

/// Four int8 codes at `p + off` as f32x4 (unscaled).
fn q8_codes4(b: &mut FunctionBuilder, p: Value, off: i32) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let q = b.ins().load(types::I32, ro(), p, off);
    let q = b.ins().scalar_to_vector(types::I32X4, q);
    let q = b.ins().bitcast(types::I8X16, le, q);
    let q = b.ins().swiden_low(q);
    let q = b.ins().swiden_low(q);
    b.ins().fcvt_from_sint(F32X4, q)
}

/// Decodes accumulator `c` alone of one KV head of a q8 cache row at `row` (what [`q8_head`]
/// passes as `c`): an f32x4 of values `4c..4c+4` for `c < head_dim / 4`, else one tail value.
fn q8_item(b: &mut FunctionBuilder, row: Value, head: Q8Head, head_dim: u64, c: usize) -> Value {
    let chunks = (head_dim / 4) as usize;
    let (bs, bb) = (Q8_BLOCK as i64, Q8_BLOCK_BYTES as i64);
    let start = match head {
        Q8Head::Aligned => {
            // head_dim is whole blocks, so a multiple of 4: no tail.
            let e = 4 * c as i64;
            let base = (e / bs * bb) as i32;
            let d = super::quant::load_half(b, row, base);
            let x = q8_codes4(b, row, base + 2 + (e % bs) as i32);
            let dv = b.ins().splat(F32X4, d);
            return b.ins().fmul(x, dv);
        }
        Q8Head::At(start) => start,
    };
    // Value `e` of the row: its block's address and the address of its code.
    let locate = |b: &mut FunctionBuilder, e: Value| {
        let blk = b.ins().ushr_imm_u(e, i64::from(Q8_BLOCK.trailing_zeros()));
        let p = b.addr(row, blk, bb);
        let r = b.ins().band_imm_u(e, bs - 1);
        let c = b.ins().iadd(p, r);
        (p, c)
    };
    let scalar = |b: &mut FunctionBuilder, e: Value| {
        let (p, c) = locate(b, e);
        let d = super::quant::load_half(b, p, 0);
        let q = b.ins().sload8(types::I32, ro(), c, 2);
        let x = b.ins().fcvt_from_sint(types::F32, q);
        b.ins().fmul(x, d)
    };
    if c >= chunks {
        let e = b.ins().iadd_imm_s(start, (4 * chunks + (c - chunks)) as i64);
        return scalar(b, e);
    }
    let e = b.ins().iadd_imm_s(start, 4 * c as i64);
    if head_dim.is_multiple_of(4) {
        // Four values from a multiple of 4: never across a block boundary.
        let (p, cp) = locate(b, e);
        let d = super::quant::load_half(b, p, 0);
        let x = q8_codes4(b, cp, 2);
        let dv = b.ins().splat(F32X4, d);
        b.ins().fmul(x, dv)
    } else {
        let x0 = scalar(b, e);
        let mut x = b.ins().splat(F32X4, x0);
        for l in 1..4u8 {
            let el = b.ins().iadd_imm_s(e, i64::from(l));
            let xl = scalar(b, el);
            x = b.ins().insertlane(x, xl, l);
        }
        x
    }
}

/// Keys scored per block: the block's scores go to a stack buffer, then one running-max update,
/// one rescale of the accumulators and the exps per block instead of per key.
const BLOCK: u64 = 32;

/// Query heads one attention task computes together: the largest divisor of the GQA group
/// (`heads / kv_heads`) that is at most 4. They share a KV head, so each key and value is
/// loaded (and decoded) once for all of them, and they are the lanes of the task's score
/// vectors (lanes past it compute copies of nothing: zero scores, never stored).
pub(crate) fn heads_per_task(heads: u64, kv_heads: u64) -> u64 {
    let group = heads / kv_heads;
    (1..=group.min(4)).rev().find(|d| group.is_multiple_of(*d)).unwrap_or(1)
}

/// `shuffle` of two f32x4 vectors by lane indices (`0..4` from `x`, `4..8` from `y`).
fn shuffle32(b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 4]) -> Value {
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let mask: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |i| 4 * l + i)).collect();
    let imm = b.func.dfg.immediates.push(mask.into());
    let xb = b.ins().bitcast(types::I8X16, le, x);
    let yb = b.ins().bitcast(types::I8X16, le, y);
    let r = b.ins().shuffle(xb, yb, imm);
    b.ins().bitcast(F32X4, le, r)
}

/// `[Σa0, Σa1, Σa2, Σa3]`: the lane sums of four vectors at once (a 4×4 transpose folded into
/// the additions: two interleaves of 32-bit lanes, two of 64-bit halves, three adds).
fn sum4(b: &mut FunctionBuilder, a: [Value; 4]) -> Value {
    let pair = |b: &mut FunctionBuilder, x: Value, y: Value| {
        let lo = shuffle32(b, x, y, [0, 4, 1, 5]);
        let hi = shuffle32(b, x, y, [2, 6, 3, 7]);
        b.ins().fadd(lo, hi)
    };
    let s01 = pair(b, a[0], a[1]);
    let s23 = pair(b, a[2], a[3]);
    let lo = shuffle32(b, s01, s23, [0, 1, 4, 5]);
    let hi = shuffle32(b, s01, s23, [2, 3, 6, 7]);
    b.ins().fadd(lo, hi)
}

/// Lowers `attention`: task `t` = (query row `s`, query heads `h0..h0 + n`), `n =`
/// [`heads_per_task`], `h0 = n · (t mod heads / n)`, `s = t / (heads / n)`; they read KV head
/// `h0 / (heads / kv_heads)`. Online softmax over cache rows `lo..=p` (`p = pos + s`,
/// `lo = p + 1 − window` clamped at 0), a block of [`BLOCK`] keys at a time, every softmax
/// quantity an f32x4 whose lanes are the task's heads:
/// - scores: per key, each chunk of the key is loaded (f16 widened, q8 decoded in registers,
///   [`q8_head`]) once and multiplied into every head's query chunk (a few partial
///   accumulators per head), the heads' sums formed at once ([`sum4`]), times `scale`, into a
///   stack buffer, their max into the block max;
/// - the running max `m` takes the block max, `corr = exp(m_old − m)`, the probabilities
///   `exp(score − m)` replace the scores, `l = l · corr + Σ p`;
/// - values: the `n × head_dim` accumulator lives in a stack buffer; a few chunks at a time
///   it is loaded into registers (rescaled by `corr`), every key's value chunk is loaded once
///   and accumulated into each head with its probability, and stored back.
///
/// Finally each head's accumulator over its `l` goes to the output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    b: &mut FunctionBuilder,
    k: &Kargs,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    scale: f32,
    window: Option<u32>,
    kv: KvStore,
) {
    let group = heads / kv_heads;
    let hg = heads_per_task(heads, kv_heads) as usize;
    let per_row = heads / hg as u64;
    let qw = (heads * head_dim) as i64 * 4;
    let kv_half = kv == KvStore::F16;
    let hb = head_dim as i64 * 4;
    // Bytes of a cache row, and from one KV head to the next (0 for a q8 head that starts
    // inside a block: `q8_head` finds its values by index).
    let (kvw, hb_kv) = match kv {
        KvStore::F32 | KvStore::F16 => {
            let esize: i64 = if kv_half { 2 } else { 4 };
            ((kv_heads * head_dim) as i64 * esize, head_dim as i64 * esize)
        }
        KvStore::Q8 => {
            let row = (kv_heads * head_dim / Q8_BLOCK * Q8_BLOCK_BYTES) as i64;
            (row, if head_dim.is_multiple_of(Q8_BLOCK) { (head_dim / Q8_BLOCK * Q8_BLOCK_BYTES) as i64 } else { 0 })
        }
    };
    let chunks = (head_dim / 4) as usize;
    let tail = (head_dim % 4) as usize;
    let items = chunks + tail;
    // Item `c` of a head (an f32x4 chunk, then tail scalars): its type and f32 byte offset.
    let item = move |c: usize| -> (Type, i32) {
        if c < chunks { (F32X4, 16 * c as i32) } else { (types::F32, (16 * chunks + 4 * (c - chunks)) as i32) }
    };
    // Item `c` of an f32 or f16 cache head at `row`, as f32 (sign-extended halves widen in
    // three operations, `half_to_f32_sext`).
    let load_item = move |b: &mut FunctionBuilder, row: Value, c: usize| -> Value {
        let (ty, off) = item(c);
        if !kv_half {
            return b.ins().load(ty, ro(), row, off);
        }
        if ty.is_vector() {
            let bits = b.ins().sload16x4(ro(), row, off / 2);
            super::quant::half_to_f32_sext(b, bits)
        } else {
            let bits = b.ins().uload16(types::I32, ro(), row, off / 2);
            super::quant::half_to_f32(b, bits)
        }
    };
    let q = k.ptr(b, 0);
    let kc = k.ptr(b, 1);
    let vc = k.ptr(b, 2);
    let out = k.ptr(b, 4);
    let pos = k.slot(b, SLOT_POS);
    let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (BLOCK * 16) as u32, 4));
    let scores = b.ins().stack_addr(types::I64, slot, 0);
    // The heads' accumulators, `hs` bytes apart.
    let hs = head_dim.next_multiple_of(4) as i32 * 4;
    let aslot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, hg as u32 * hs as u32, 4));
    let accs = b.ins().stack_addr(types::I64, aslot, 0);
    // Partial q·k accumulators per head (independent FMA chains), and value chunks per pass
    // (`hg × cw` accumulators plus `hg` probabilities stay within ~12 vector registers).
    let rp = (8 / hg).clamp(1, chunks.max(1));
    let cw = (12 / hg).saturating_sub(1).clamp(1, 8);
    each_task(b, k, |b, t| {
        let s = b.ins().udiv_imm_u(t, per_row as i64);
        let r = b.ins().urem_imm_u(t, per_row as i64);
        let h0 = b.ins().imul_imm_s(r, hg as i64);
        let kvh = b.ins().udiv_imm_u(h0, group as i64);
        let p = b.ins().iadd(pos, s);
        let hi = b.ins().iadd_imm_s(p, 1);
        let lo = match window {
            Some(w) => {
                let l = b.ins().iadd_imm_s(hi, -i64::from(w));
                let zero = b.c64(0);
                let neg = b.ins().icmp(IntCC::SignedLessThan, l, zero);
                b.ins().select(neg, zero, l)
            }
            None => b.c64(0),
        };
        let qrow = b.addr(q, s, qw);
        let qh = b.addr(qrow, h0, hb);
        let kh = b.addr(kc, kvh, hb_kv);
        let vh = b.addr(vc, kvh, hb_kv);
        let q8 = (kv == KvStore::Q8).then(|| {
            if head_dim.is_multiple_of(Q8_BLOCK) {
                Q8Head::Aligned
            } else {
                let hd = b.c64(head_dim as i64);
                Q8Head::At(b.ins().imul(kvh, hd))
            }
        });
        let zv = math::fconst(b, F32X4, 0.0);
        let zs = math::fconst(b, types::F32, 0.0);
        for h in 0..hg {
            for c in 0..items {
                let (ty, off) = item(c);
                let z = if ty.is_vector() { zv } else { zs };
                b.ins().store(rw(), z, accs, h as i32 * hs + off);
            }
        }
        let m = b.declare_var(F32X4);
        let l = b.declare_var(F32X4);
        let ninf = math::fconst(b, F32X4, f32::NEG_INFINITY);
        b.def_var(m, ninf);
        b.def_var(l, zv);
        b.for_range(lo, hi, BLOCK as i64, |b, j0| {
            let j1 = b.ins().iadd_imm_s(j0, BLOCK as i64);
            let past = b.ins().icmp(IntCC::SignedGreaterThan, j1, hi);
            let j1 = b.ins().select(past, hi, j1);
            // Scores of the block's keys, lanes = heads, and their max.
            let bm = b.declare_var(F32X4);
            let ninfv = math::fconst(b, F32X4, f32::NEG_INFINITY);
            b.def_var(bm, ninfv);
            b.for_range(j0, j1, 1, |b, j| {
                let kj = b.addr(kh, j, kvw);
                let mut pa = vec![vec![zv; rp]; hg];
                let mut ts = vec![zs; hg];
                let mut step = |b: &mut FunctionBuilder, c: usize, x: Value| {
                    let (ty, off) = item(c);
                    for h in 0..hg {
                        let qv = b.ins().load(ty, ro(), qh, h as i32 * hb as i32 + off);
                        if c < chunks {
                            pa[h][c % rp] = b.ins().fma(qv, x, pa[h][c % rp]);
                        } else {
                            ts[h] = b.ins().fma(qv, x, ts[h]);
                        }
                    }
                };
                match q8 {
                    Some(head) => q8_head(b, kj, head, head_dim, &mut step),
                    None => {
                        for c in 0..items {
                            let x = load_item(b, kj, c);
                            step(b, c, x);
                        }
                    }
                }
                let mut a = [zv; 4];
                for (h, parts) in pa.iter().enumerate() {
                    let mut parts = parts.clone();
                    while parts.len() > 1 {
                        let (x, y) = (parts.remove(0), parts.remove(0));
                        let xy = b.ins().fadd(x, y);
                        parts.push(xy);
                    }
                    a[h] = parts[0];
                }
                let mut sv = sum4(b, a);
                if tail > 0 {
                    let mut tv = zv;
                    for (h, &x) in ts.iter().enumerate() {
                        tv = b.ins().insertlane(tv, x, h as u8);
                    }
                    sv = b.ins().fadd(sv, tv);
                }
                let sc = math::fconst(b, F32X4, scale);
                let sv = b.ins().fmul(sv, sc);
                let i = b.ins().isub(j, j0);
                let ad = b.addr(scores, i, 16);
                b.ins().store(rw(), sv, ad, 0);
                let old = b.use_var(bm);
                let new = b.ins().fmax(old, sv);
                b.def_var(bm, new);
            });
            // The running max, and the rescale of what was accumulated under the old one.
            let bmv = b.use_var(bm);
            let m_old = b.use_var(m);
            let m_new = b.ins().fmax(m_old, bmv);
            let d = b.ins().fsub(m_old, m_new);
            // exp(-inf) on the first block is harmless: the accumulators are still 0.
            let corr = math::exp(b, d);
            // Probabilities back into the buffer; their sum into `l`.
            let sum = b.declare_var(F32X4);
            b.def_var(sum, zv);
            b.for_range(j0, j1, 1, |b, j| {
                let i = b.ins().isub(j, j0);
                let ad = b.addr(scores, i, 16);
                let v = b.ins().load(F32X4, rw(), ad, 0);
                let v = b.ins().fsub(v, m_new);
                let e = math::exp(b, v);
                b.ins().store(rw(), e, ad, 0);
                let s = b.use_var(sum);
                let s = b.ins().fadd(s, e);
                b.def_var(sum, s);
            });
            let sum = b.use_var(sum);
            let l_old = b.use_var(l);
            let l_new = b.ins().fma(l_old, corr, sum);
            b.def_var(l, l_new);
            b.def_var(m, m_new);
            // Values, `cw` items of every head at a time.
            for c0 in (0..items).step_by(cw) {
                let its = c0..(c0 + cw).min(items);
                let mut vars = Vec::new();
                for h in 0..hg {
                    let ch = b.ins().extractlane(corr, h as u8);
                    let chv = b.ins().splat(F32X4, ch);
                    for c in its.clone() {
                        let (ty, off) = item(c);
                        let v = b.declare_var(ty);
                        let x = b.ins().load(ty, rw(), accs, h as i32 * hs + off);
                        let x = b.ins().fmul(x, if ty.is_vector() { chv } else { ch });
                        b.def_var(v, x);
                        vars.push(v);
                    }
                }
                let n = its.len();
                // Key `j` into the accumulators.
                let key = |b: &mut FunctionBuilder, j: Value| {
                    let i = b.ins().isub(j, j0);
                    let ad = b.addr(scores, i, 16);
                    let pe: Vec<Value> = (0..hg).map(|h| b.ins().load(types::F32, rw(), ad, 4 * h as i32)).collect();
                    let pev: Vec<Value> = pe.iter().map(|&x| b.ins().splat(F32X4, x)).collect();
                    let vj = b.addr(vh, j, kvw);
                    for (ci, c) in its.clone().enumerate() {
                        let x = match q8 {
                            Some(head) => q8_item(b, vj, head, head_dim, c),
                            None => load_item(b, vj, c),
                        };
                        for h in 0..hg {
                            let e = if c < chunks { pev[h] } else { pe[h] };
                            let v = vars[h * n + ci];
                            let a = b.use_var(v);
                            let a = b.ins().fma(e, x, a);
                            b.def_var(v, a);
                        }
                    }
                };
                // Two keys per iteration (half the loop's register moves), then an odd one.
                let span = b.ins().isub(j1, j0);
                let even = b.ins().band_imm_u(span, -2);
                let j2 = b.ins().iadd(j0, even);
                b.for_range(j0, j2, 2, |b, j| {
                    key(b, j);
                    let j = b.ins().iadd_imm_s(j, 1);
                    key(b, j);
                });
                b.for_range(j2, j1, 1, key);
                for h in 0..hg {
                    for (ci, c) in its.clone().enumerate() {
                        let (_, off) = item(c);
                        let a = b.use_var(vars[h * n + ci]);
                        b.ins().store(rw(), a, accs, h as i32 * hs + off);
                    }
                }
            }
        });
        let lf = b.use_var(l);
        let one = math::fconst(b, F32X4, 1.0);
        let inv = b.ins().fdiv(one, lf);
        let orow = b.addr(out, s, qw);
        let oh = b.addr(orow, h0, hb);
        for h in 0..hg {
            let ih = b.ins().extractlane(inv, h as u8);
            let ihv = b.ins().splat(F32X4, ih);
            for c in 0..items {
                let (ty, off) = item(c);
                let v = b.ins().load(ty, rw(), accs, h as i32 * hs + off);
                let r = b.ins().fmul(v, if ty.is_vector() { ihv } else { ih });
                b.ins().store(rw(), r, oh, h as i32 * hb as i32 + off);
            }
        }
    });
}
