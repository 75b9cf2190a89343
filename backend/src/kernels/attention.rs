//! `attention`: causal, grouped-query, optionally windowed, reading the KV state.

use super::{Ext, F32X4, Kargs, SLOT_POS, each_chunk, each_task, fold_row, ro, rw};
use crate::math;
use cranelift_codegen::ir::{InstBuilder, StackSlotData, StackSlotKind, Type, Value, condcodes::IntCC, types};
use cranelift_frontend::FunctionBuilder;

/// Lowers `attention`: task `t` = (query row `s = t / heads`, head `h = t % heads`).
/// Online softmax over cache rows `lo..=p` (`p = pos + s`, `lo = p + 1 − window` clamped at 0):
/// a running max `m`, a running sum `l` and a `head_dim` accumulator in a stack slot, so no
/// score buffer is needed. Query head `h` reads KV head `h / (heads / kv_heads)`. With
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
    let slot =
        b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (head_dim * 4).max(16) as u32, 4));
    let acc = b.ins().stack_addr(types::I64, slot, 0);
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
        each_chunk(b, head_dim, |b, off, ty| {
            let z = math::fconst(b, ty, 0.0);
            let a = b.ins().iadd(acc, off);
            b.ins().store(rw(), z, a, 0);
        });
        let m = b.declare_var(types::F32);
        let l = b.declare_var(types::F32);
        let ninf = math::fconst(b, types::F32, f32::NEG_INFINITY);
        let zero = math::fconst(b, types::F32, 0.0);
        b.def_var(m, ninf);
        b.def_var(l, zero);
        b.for_range(lo, hi, 1, |b, j| {
            let kj = b.addr(kh, j, kvw);
            let vj = b.addr(vh, j, kvw);
            let dot = fold_row(b, head_dim, false, |b, off, ty| {
                let qa = b.ins().iadd(qh, off);
                let qv = b.ins().load(ty, ro(), qa, 0);
                let kv = load_kv(b, kj, off, ty);
                b.ins().fmul(qv, kv)
            });
            let sc = math::fconst(b, types::F32, scale);
            let score = b.ins().fmul(dot, sc);
            let m_old = b.use_var(m);
            let m_new = b.ins().fmax(m_old, score);
            // corr rescales what was accumulated under the old max; exp(-inf) on the first
            // row is harmless (the accumulators are still 0).
            let d = b.ins().fsub(m_old, m_new);
            let corr = math::exp(b, d);
            let d = b.ins().fsub(score, m_new);
            let pe = math::exp(b, d);
            let l_old = b.use_var(l);
            let l_new = b.ins().fma(l_old, corr, pe);
            b.def_var(l, l_new);
            b.def_var(m, m_new);
            let corrv = b.ins().splat(F32X4, corr);
            let pev = b.ins().splat(F32X4, pe);
            each_chunk(b, head_dim, |b, off, ty| {
                let (c, e) = if ty.is_vector() { (corrv, pev) } else { (corr, pe) };
                let aa = b.ins().iadd(acc, off);
                let av = b.ins().load(ty, rw(), aa, 0);
                let vv = load_kv(b, vj, off, ty);
                let av = b.ins().fmul(av, c);
                let av = b.ins().fma(e, vv, av);
                b.ins().store(rw(), av, aa, 0);
            });
        });
        let lf = b.use_var(l);
        let one = math::fconst(b, types::F32, 1.0);
        let inv = b.ins().fdiv(one, lf);
        let invv = b.ins().splat(F32X4, inv);
        let orow = b.addr(out, s, qw);
        let oh = b.addr(orow, h, hb);
        each_chunk(b, head_dim, |b, off, ty| {
            let aa = b.ins().iadd(acc, off);
            let av = b.ins().load(ty, rw(), aa, 0);
            let r = b.ins().fmul(av, if ty.is_vector() { invv } else { inv });
            let d = b.ins().iadd(oh, off);
            b.ins().store(rw(), r, d, 0);
        });
    });
}
