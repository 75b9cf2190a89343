//! `attention`: causal, grouped-query, optionally windowed, reading the KV state.

use super::{Ext, F32X4, Kargs, SLOT_POS, each_task, fold_row, ro, rw};
use crate::math;
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Type, Value, condcodes::IntCC, types};
use cranelift_frontend::{FunctionBuilder, Variable};

/// Keys scored per block: the block's scores go to a stack buffer, then one running-max update,
/// one rescale of the accumulator and vectorized exps per block instead of per key.
const BLOCK: u64 = 32;

/// Lowers `attention`: task `t` = (query row `s = t / heads`, head `h = t % heads`).
/// Online softmax over cache rows `lo..=p` (`p = pos + s`, `lo = p + 1 − window` clamped at 0),
/// a block of [`BLOCK`] keys at a time: scores `q·k * scale` into a stack buffer, the block max
/// folded into the running max `m` (rescaling the running sum `l` and the `head_dim`
/// accumulator, held in variables, by `exp(m_old − m)`), then `exp(score − m)` four at a time
/// and the values accumulated. Query head `h` reads KV head `h / (heads / kv_heads)`. With
/// `kv_half`, the caches hold f16, widened to f32 as they are loaded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    b: &mut FunctionBuilder,
    k: &Kargs,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    scale: f32,
    window: Option<u32>,
    kv_half: bool,
) {
    let group = heads / kv_heads;
    let qw = (heads * head_dim) as i64 * 4;
    let esize: i64 = if kv_half { 2 } else { 4 };
    let kvw = (kv_heads * head_dim) as i64 * esize;
    let hb = head_dim as i64 * 4;
    let hb_kv = head_dim as i64 * esize;
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
                let dot = fold_row(b, head_dim, false, |b, off, ty| {
                    let qa = b.ins().iadd(qh, off);
                    let qv = b.ins().load(ty, ro(), qa, 0);
                    let kv = load_kv(b, kj, off, ty);
                    b.ins().fmul(qv, kv)
                });
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
