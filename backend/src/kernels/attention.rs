//! `attention`: causal, grouped-query, optionally windowed, reading the KV state.

use super::{Ext, F32X4, Kargs, KvStore, SLOT_POS, each_task, fold_row, ro, rw};
use crate::math;
use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, condcodes::IntCC, types,
};
use cranelift_frontend::{FunctionBuilder, Variable};
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
    let start = match head {
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
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    for c in 0..chunks {
        let e = b.ins().iadd_imm_s(start, 4 * c as i64);
        let x = if head_dim.is_multiple_of(4) {
            // Four values from a multiple of 4: never across a block boundary.
            let (p, cp) = locate(b, e);
            let d = super::quant::load_half(b, p, 0);
            let q = b.ins().load(types::I32, ro(), cp, 2);
            let q = b.ins().scalar_to_vector(types::I32X4, q);
            let q = b.ins().bitcast(types::I8X16, le, q);
            let q = b.ins().swiden_low(q);
            let q = b.ins().swiden_low(q);
            let x = b.ins().fcvt_from_sint(F32X4, q);
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
        };
        f(b, c, x);
    }
    for t in 0..tail {
        let e = b.ins().iadd_imm_s(start, (4 * chunks + t) as i64);
        let x = scalar(b, e);
        f(b, chunks + t, x);
    }
}

/// Keys scored per block: the block's scores go to a stack buffer, then one running-max update,
/// one rescale of the accumulator and vectorized exps per block instead of per key.
const BLOCK: u64 = 32;

/// Lowers `attention`: task `t` = (query row `s = t / heads`, head `h = t % heads`).
/// Online softmax over cache rows `lo..=p` (`p = pos + s`, `lo = p + 1 − window` clamped at 0),
/// a block of [`BLOCK`] keys at a time: scores `q·k * scale` into a stack buffer, the block max
/// folded into the running max `m` (rescaling the running sum `l` and the `head_dim`
/// accumulator, held in variables, by `exp(m_old − m)`), then `exp(score − m)` four at a time
/// and the values accumulated. Query head `h` reads KV head `h / (heads / kv_heads)`. f16
/// caches are widened to f32 as they are loaded; q8 caches are decoded in registers
/// ([`q8_head`]; no f32 copy of a row exists).
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
    // A cache element at f32 byte offset `off` of a row at `row`, as f32 (or f32x4).
    let load_kv = move |b: &mut FunctionBuilder, row: Value, off: Value, ty: Type| -> Value {
        if !kv_half {
            let a = b.ins().iadd(row, off);
            return b.ins().load(ty, ro(), a, 0);
        }
        let half_off = b.ins().ushr_imm_u(off, 1);
        let a = b.ins().iadd(row, half_off);
        let bits = if ty.is_vector() { b.ins().uload16x4(ro(), a, 0) } else { b.ins().uload16(types::I32, ro(), a, 0) };
        super::quant::half_to_f32(b, bits)
    };
    let q = k.ptr(b, 0);
    let kc = k.ptr(b, 1);
    let vc = k.ptr(b, 2);
    let out = k.ptr(b, 4);
    let pos = k.slot(b, SLOT_POS);
    let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (BLOCK * 4) as u32, 4));
    let scores = b.ins().stack_addr(types::I64, slot, 0);
    let chunks = (head_dim / 4) as usize;
    let tail = (head_dim % 4) as usize;
    each_task(b, k, |b, t| {
        let s = b.ins().udiv_imm_u(t, heads as i64);
        let h = b.ins().urem_imm_u(t, heads as i64);
        let kvh = b.ins().udiv_imm_u(h, group as i64);
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
        let qh = b.addr(qrow, h, hb);
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
        // The accumulator: f32x4 chunks, then scalars for a head_dim that is not a multiple of 4.
        let zv = math::fconst(b, F32X4, 0.0);
        let zs = math::fconst(b, types::F32, 0.0);
        let acc: Vec<Variable> = (0..chunks + tail)
            .map(|c| {
                let (ty, z) = if c < chunks { (F32X4, zv) } else { (types::F32, zs) };
                let v = b.declare_var(ty);
                b.def_var(v, z);
                v
            })
            .collect();
        let m = b.declare_var(types::F32);
        let l = b.declare_var(types::F32);
        let ninf = math::fconst(b, types::F32, f32::NEG_INFINITY);
        b.def_var(m, ninf);
        b.def_var(l, zs);
        b.for_range(lo, hi, BLOCK as i64, |b, j0| {
            let j1 = b.ins().iadd_imm_s(j0, BLOCK as i64);
            let past = b.ins().icmp(IntCC::SignedGreaterThan, j1, hi);
            let j1 = b.ins().select(past, hi, j1);
            // Scores; the slots past the block's keys stay -inf (their exp is ~0, never used).
            let ninfv = math::fconst(b, F32X4, f32::NEG_INFINITY);
            for c in 0..BLOCK as i32 / 4 {
                b.ins().store(rw(), ninfv, scores, 16 * c);
            }
            b.for_range(j0, j1, 1, |b, j| {
                let kj = b.addr(kh, j, kvw);
                let dot = match q8 {
                    None => fold_row(b, head_dim, false, |b, off, ty| {
                        let qa = b.ins().iadd(qh, off);
                        let qv = b.ins().load(ty, ro(), qa, 0);
                        let kv = load_kv(b, kj, off, ty);
                        b.ins().fmul(qv, kv)
                    }),
                    Some(head) => {
                        let mut accv = zv;
                        let mut accs = zs;
                        q8_head(b, kj, head, head_dim, |b, c, x| {
                            if c < chunks {
                                let qv = b.ins().load(F32X4, ro(), qh, 16 * c as i32);
                                accv = b.ins().fma(qv, x, accv);
                            } else {
                                let qs = b.ins().load(types::F32, ro(), qh, 4 * (4 * chunks + c - chunks) as i32);
                                accs = b.ins().fma(qs, x, accs);
                            }
                        });
                        let s = b.hsum(accv);
                        b.ins().fadd(s, accs)
                    }
                };
                let sc = math::fconst(b, types::F32, scale);
                let score = b.ins().fmul(dot, sc);
                let i = b.ins().isub(j, j0);
                let a = b.addr(scores, i, 4);
                b.ins().store(rw(), score, a, 0);
            });
            // The running max, and what was accumulated under the old one rescaled.
            let mut bm = b.ins().load(F32X4, rw(), scores, 0);
            for c in 1..BLOCK as i32 / 4 {
                let v = b.ins().load(F32X4, rw(), scores, 16 * c);
                bm = b.ins().fmax(bm, v);
            }
            let bm = b.hmax(bm);
            let m_old = b.use_var(m);
            let m_new = b.ins().fmax(m_old, bm);
            let d = b.ins().fsub(m_old, m_new);
            // exp(-inf) on the first block is harmless: the accumulators are still 0.
            let corr = math::exp(b, d);
            let corrv = b.ins().splat(F32X4, corr);
            for (c, &a) in acc.iter().enumerate() {
                let v = b.use_var(a);
                let v = b.ins().fmul(v, if c < chunks { corrv } else { corr });
                b.def_var(a, v);
            }
            // Probabilities, four at a time, back into the buffer; their sum into `l`.
            let mv = b.ins().splat(F32X4, m_new);
            let mut sum = zv;
            for c in 0..BLOCK as i32 / 4 {
                let v = b.ins().load(F32X4, rw(), scores, 16 * c);
                let v = b.ins().fsub(v, mv);
                let e = math::exp(b, v);
                b.ins().store(rw(), e, scores, 16 * c);
                sum = b.ins().fadd(sum, e);
            }
            let sum = b.hsum(sum);
            let l_old = b.use_var(l);
            let l_new = b.ins().fma(l_old, corr, sum);
            b.def_var(l, l_new);
            b.def_var(m, m_new);
            // Values.
            b.for_range(j0, j1, 1, |b, j| {
                let i = b.ins().isub(j, j0);
                let a = b.addr(scores, i, 4);
                let pe = b.ins().load(types::F32, rw(), a, 0);
                let pev = b.ins().splat(F32X4, pe);
                let vj = b.addr(vh, j, kvw);
                if let Some(head) = q8 {
                    q8_head(b, vj, head, head_dim, |b, c, vv| {
                        let e = if c < chunks { pev } else { pe };
                        let s = b.use_var(acc[c]);
                        let s = b.ins().fma(e, vv, s);
                        b.def_var(acc[c], s);
                    });
                    return;
                }
                for (c, &av) in acc.iter().enumerate() {
                    let (ty, e) = if c < chunks { (F32X4, pev) } else { (types::F32, pe) };
                    let off = if c < chunks { 16 * c as i64 } else { (4 * chunks + (c - chunks)) as i64 * 4 };
                    let off = b.c64(off);
                    let vv = load_kv(b, vj, off, ty);
                    let s = b.use_var(av);
                    let s = b.ins().fma(e, vv, s);
                    b.def_var(av, s);
                }
            });
        });
        let lf = b.use_var(l);
        let one = math::fconst(b, types::F32, 1.0);
        let inv = b.ins().fdiv(one, lf);
        let invv = b.ins().splat(F32X4, inv);
        let orow = b.addr(out, s, qw);
        let oh = b.addr(orow, h, hb);
        for (c, &av) in acc.iter().enumerate() {
            let v = b.use_var(av);
            let (r, off) = if c < chunks {
                (b.ins().fmul(v, invv), 16 * c as i32)
            } else {
                (b.ins().fmul(v, inv), (4 * chunks + (c - chunks)) as i32 * 4)
            };
            b.ins().store(rw(), r, oh, off);
        }
    });
}
