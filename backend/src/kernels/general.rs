//! Kernels with run-time shapes for general (ONNX) graphs: one strided elementwise kernel
//! (layout ops, broadcasting unary/binary/select), `concat`, `batch_matmul`, and softmax /
//! reductions whose last axis is symbolic.
//!
//! Every dim is `c · n^p` ([`Prod`]) with `n` the graph's one symbol (slot 0 of the block), so
//! a kernel computes its extents and strides from `n` at run time. These kernels are scalar:
//! correct first; the static-shape kernels stay the fast path wherever they apply.

use super::{Ext, Kargs, SLOT_N_TOKENS, each_task, ro, rw};
use crate::kernels::elementwise::{apply_binary, apply_unary};
use crate::math;
use cranelift_codegen::ir::{
    InstBuilder, Type, Value,
    condcodes::{FloatCC, IntCC},
    types,
};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::{BinaryOp, DType, Dim, ReduceOp, UnaryOp};

/// `c · n^p`: a run-time extent, stride or offset (in elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prod {
    pub c: u64,
    pub p: u32,
}

impl Prod {
    pub const ONE: Prod = Prod { c: 1, p: 0 };
    pub const ZERO: Prod = Prod { c: 0, p: 0 };
    pub fn of(d: Dim) -> Prod {
        match d {
            Dim::Const(c) => Prod { c, p: 0 },
            Dim::Sym(_) => Prod { c: 1, p: 1 },
        }
    }
    pub fn mul(self, o: Prod) -> Option<Prod> {
        Some(Prod { c: self.c.checked_mul(o.c)?, p: self.p + o.p })
    }
    /// Product of dims.
    pub fn of_dims(d: &[Dim]) -> Option<Prod> {
        d.iter().try_fold(Prod::ONE, |acc, &x| acc.mul(Prod::of(x)))
    }
    /// Row-major strides of `d`.
    pub fn strides(d: &[Dim]) -> Option<Vec<Prod>> {
        let mut s = vec![Prod::ONE; d.len()];
        for i in (0..d.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1].mul(Prod::of(d[i + 1]))?;
        }
        Some(s)
    }
    pub fn emit(self, b: &mut FunctionBuilder, n: Value) -> Value {
        let mut v = b.c64(self.c as i64);
        for _ in 0..self.p {
            v = b.ins().imul(v, n);
        }
        v
    }
}

/// What the strided kernel computes per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SOp {
    /// A 4-byte copy (any dtype): reshape, expand, transpose, slice.
    Copy,
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `cond != 0 ? a : b` (`a`, `b` moved as 4-byte words, so any 4-byte dtype).
    Select,
    /// A binary op on i32 operands (comparisons store an f32 0/1).
    BinaryI32(BinaryOp),
    /// f32 ↔ i32 (to the given dtype).
    Cast(DType),
}

impl SOp {
    /// The type operand `j` is loaded as.
    fn load_type(self, j: usize) -> Type {
        match self {
            SOp::Copy | SOp::BinaryI32(_) | SOp::Cast(DType::F32) => types::I32,
            SOp::Select if j > 0 => types::I32,
            _ => types::F32,
        }
    }
}

/// `a OP b` on i32 as the IR defines it (wrapping; division truncates, x / 0 = 0,
/// `MIN / -1` wraps); comparisons give an f32 0/1.
fn apply_binary_i32(b: &mut FunctionBuilder, op: BinaryOp, x: Value, y: Value) -> Value {
    let cmp = |b: &mut FunctionBuilder, cc: IntCC| {
        let c = b.ins().icmp(cc, x, y);
        let (one, zero) = (math::fconst(b, types::F32, 1.0), math::fconst(b, types::F32, 0.0));
        b.ins().select(c, one, zero)
    };
    match op {
        BinaryOp::Add => b.ins().iadd(x, y),
        BinaryOp::Sub => b.ins().isub(x, y),
        BinaryOp::Mul => b.ins().imul(x, y),
        BinaryOp::Max => b.ins().smax(x, y),
        BinaryOp::Min => b.ins().smin(x, y),
        BinaryOp::Div => {
            // sdiv traps on 0 and on MIN / -1: divide by 1 there, then fix the result up.
            let zero = b.ins().iconst(types::I32, 0);
            let one = b.ins().iconst(types::I32, 1);
            let minus1 = b.ins().iconst(types::I32, -1);
            let is0 = b.ins().icmp(IntCC::Equal, y, zero);
            let is_m1 = b.ins().icmp(IntCC::Equal, y, minus1);
            let odd = b.ins().bor(is0, is_m1);
            let d = b.ins().select(odd, one, y);
            let q = b.ins().sdiv(x, d);
            let neg = b.ins().ineg(x);
            let q = b.ins().select(is_m1, neg, q);
            b.ins().select(is0, zero, q)
        }
        // infer.rs refuses pow on i32.
        BinaryOp::Pow => x,
        BinaryOp::Eq => cmp(b, IntCC::Equal),
        BinaryOp::Lt => cmp(b, IntCC::SignedLessThan),
        BinaryOp::Gt => cmp(b, IntCC::SignedGreaterThan),
    }
}

/// The strided kernel: output dims `out`; operand `j` reads element
/// `off[j] + Σ i_k · strides[j][k]` for output index `i`. Task = one output row (all axes
/// but the last), so tasks = `Π out[..r-1]`.
pub(crate) fn strided(b: &mut FunctionBuilder, k: &Kargs, op: SOp, out: &[Prod], ins: &[(Prod, Vec<Prod>)]) {
    let n = k.slot(b, SLOT_N_TOKENS);
    let r = out.len();
    let ptrs: Vec<Value> = (0..ins.len()).map(|j| k.ptr(b, j as u32)).collect();
    let optr = k.ptr(b, ins.len() as u32);
    let dims: Vec<Value> = out.iter().map(|d| d.emit(b, n)).collect();
    let offs: Vec<Value> = ins.iter().map(|(o, _)| o.emit(b, n)).collect();
    let strides: Vec<Vec<Value>> = ins.iter().map(|(_, s)| s.iter().map(|x| x.emit(b, n)).collect()).collect();
    let last = if r == 0 { b.c64(1) } else { dims[r - 1] };
    let zero = b.c64(0);
    let lstr: Vec<Value> = strides.iter().map(|s| if r == 0 { zero } else { s[r - 1] }).collect();
    each_task(b, k, |b, t| {
        let mut base = offs.clone();
        let mut rem = t;
        for ax in (0..r.saturating_sub(1)).rev() {
            if out[ax] == Prod::ONE {
                continue;
            }
            let i = b.ins().urem(rem, dims[ax]);
            rem = b.ins().udiv(rem, dims[ax]);
            for j in 0..ins.len() {
                if ins[j].1[ax] != Prod::ZERO {
                    let d = b.ins().imul(i, strides[j][ax]);
                    base[j] = b.ins().iadd(base[j], d);
                }
            }
        }
        let obase = b.ins().imul(t, last);
        let orow = b.addr(optr, obase, 4);
        let rows: Vec<Value> = (0..ins.len()).map(|j| b.addr(ptrs[j], base[j], 4)).collect();
        let lo = b.c64(0);
        b.for_range(lo, last, 1, |b, e| {
            let vals: Vec<Value> = (0..ins.len())
                .map(|j| {
                    let off = b.ins().imul(e, lstr[j]);
                    let a = b.addr(rows[j], off, 4);
                    b.ins().load(op.load_type(j), ro(), a, 0)
                })
                .collect();
            let v = match op {
                SOp::Copy => vals[0],
                SOp::Unary(u) => apply_unary(b, u, vals[0], types::F32),
                SOp::Binary(o) => apply_binary(b, o, vals[0], vals[1]),
                SOp::Select => {
                    let z = math::fconst(b, types::F32, 0.0);
                    let c = b.ins().fcmp(FloatCC::NotEqual, vals[0], z);
                    b.ins().select(c, vals[1], vals[2])
                }
                SOp::BinaryI32(o) => apply_binary_i32(b, o, vals[0], vals[1]),
                SOp::Cast(DType::I32) => b.ins().fcvt_to_sint_sat(types::I32, vals[0]),
                SOp::Cast(_) => b.ins().fcvt_from_sint(types::F32, vals[0]),
            };
            let d = b.addr(orow, e, 4);
            b.ins().store(rw(), v, d, 0);
        });
    });
}

/// `concat`: task = one index of the axes before the concat axis; copies `a` elements of the
/// first operand, then `bb` of the second (4-byte elements, any dtype).
pub(crate) fn concat(b: &mut FunctionBuilder, k: &Kargs, a: Prod, bb: Prod) {
    let n = k.slot(b, SLOT_N_TOKENS);
    let pa = k.ptr(b, 0);
    let pb = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    let na = a.emit(b, n);
    let nb = bb.emit(b, n);
    let row = b.ins().iadd(na, nb);
    each_task(b, k, |b, t| {
        let o = b.ins().imul(t, row);
        let orow = b.addr(out, o, 4);
        for (src, len, skip) in [(pa, na, None), (pb, nb, Some(na))] {
            let s = b.ins().imul(t, len);
            let srow = b.addr(src, s, 4);
            let dst = match skip {
                None => orow,
                Some(x) => b.addr(orow, x, 4),
            };
            let lo = b.c64(0);
            b.for_range(lo, len, 1, |b, e| {
                let sa = b.addr(srow, e, 4);
                let v = b.ins().load(types::I32, ro(), sa, 0);
                let da = b.addr(dst, e, 4);
                b.ins().store(rw(), v, da, 0);
            });
        }
    });
}

/// `batch_matmul`: task = one output row (batch index, m). `batch` are the output's leading
/// dims, `sa`/`sb` the operands' element strides per leading dim (0 where broadcast).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_matmul(
    b: &mut FunctionBuilder,
    k: &Kargs,
    batch: &[Prod],
    sa: &[Prod],
    sb: &[Prod],
    m: Prod,
    kk: Prod,
    nn: Prod,
) {
    let n = k.slot(b, SLOT_N_TOKENS);
    let pa = k.ptr(b, 0);
    let pb = k.ptr(b, 1);
    let out = k.ptr(b, 2);
    let dims: Vec<Value> = batch.iter().map(|d| d.emit(b, n)).collect();
    let sav: Vec<Value> = sa.iter().map(|d| d.emit(b, n)).collect();
    let sbv: Vec<Value> = sb.iter().map(|d| d.emit(b, n)).collect();
    let mv = m.emit(b, n);
    let kv = kk.emit(b, n);
    let nv = nn.emit(b, n);
    each_task(b, k, |b, t| {
        let mi = b.ins().urem(t, mv);
        let mut rem = b.ins().udiv(t, mv);
        let mut oa = b.ins().imul(mi, kv);
        let mut ob = b.c64(0);
        for ax in (0..batch.len()).rev() {
            let i = b.ins().urem(rem, dims[ax]);
            rem = b.ins().udiv(rem, dims[ax]);
            let d = b.ins().imul(i, sav[ax]);
            oa = b.ins().iadd(oa, d);
            let d = b.ins().imul(i, sbv[ax]);
            ob = b.ins().iadd(ob, d);
        }
        let arow = b.addr(pa, oa, 4);
        let bmat = b.addr(pb, ob, 4);
        let o = b.ins().imul(t, nv);
        let orow = b.addr(out, o, 4);
        let lo = b.c64(0);
        // out[j] = 0, then out[j] += a[kk] * b[kk, j] row by row (contiguous inner loop).
        b.for_range(lo, nv, 1, |b, j| {
            let z = math::fconst(b, types::F32, 0.0);
            let d = b.addr(orow, j, 4);
            b.ins().store(rw(), z, d, 0);
        });
        b.for_range(lo, kv, 1, |b, kx| {
            let aa = b.addr(arow, kx, 4);
            let av = b.ins().load(types::F32, ro(), aa, 0);
            let r = b.ins().imul(kx, nv);
            let brow = b.addr(bmat, r, 4);
            b.for_range(lo, nv, 1, |b, j| {
                let ba = b.addr(brow, j, 4);
                let bv = b.ins().load(types::F32, ro(), ba, 0);
                let d = b.addr(orow, j, 4);
                let acc = b.ins().load(types::F32, rw(), d, 0);
                let acc = b.ins().fma(av, bv, acc);
                b.ins().store(rw(), acc, d, 0);
            });
        });
    });
}

/// Softmax (`op == None`) or a reduction over a last axis of `cols` run-time elements:
/// task = one row.
pub(crate) fn row_op(b: &mut FunctionBuilder, k: &Kargs, op: Option<ReduceOp>, cols: Prod) {
    let n = k.slot(b, SLOT_N_TOKENS);
    let x = k.ptr(b, 0);
    let out = k.ptr(b, 1);
    let cv = cols.emit(b, n);
    let lo = b.c64(0);
    each_task(b, k, |b, t| {
        let o = b.ins().imul(t, cv);
        let xr = b.addr(x, o, 4);
        let fold = |b: &mut FunctionBuilder, base: Value, max: bool, writable: bool| -> Value {
            let acc = b.declare_var(types::F32);
            let init = math::fconst(b, types::F32, if max { f32::NEG_INFINITY } else { 0.0 });
            b.def_var(acc, init);
            b.for_range(lo, cv, 1, |b, e| {
                let a = b.addr(base, e, 4);
                let v = b.ins().load(types::F32, if writable { rw() } else { ro() }, a, 0);
                let s = b.use_var(acc);
                let r = if max { math::max_num(b, s, v, false) } else { b.ins().fadd(s, v) };
                b.def_var(acc, r);
            });
            b.use_var(acc)
        };
        match op {
            Some(r) => {
                let v = fold(b, xr, r == ReduceOp::Max, false);
                let v = if r == ReduceOp::Mean {
                    let c = b.ins().fcvt_from_uint(types::F32, cv);
                    b.ins().fdiv(v, c)
                } else {
                    v
                };
                let d = b.addr(out, t, 4);
                b.ins().store(rw(), v, d, 0);
            }
            None => {
                let or = b.addr(out, o, 4);
                let m = fold(b, xr, true, false);
                b.for_range(lo, cv, 1, |b, e| {
                    let a = b.addr(xr, e, 4);
                    let v = b.ins().load(types::F32, ro(), a, 0);
                    let v = b.ins().fsub(v, m);
                    let v = math::exp(b, v);
                    let d = b.addr(or, e, 4);
                    b.ins().store(rw(), v, d, 0);
                });
                let s = fold(b, or, false, true);
                let one = math::fconst(b, types::F32, 1.0);
                let inv = b.ins().fdiv(one, s);
                b.for_range(lo, cv, 1, |b, e| {
                    let d = b.addr(or, e, 4);
                    let v = b.ins().load(types::F32, rw(), d, 0);
                    let v = b.ins().fmul(v, inv);
                    b.ins().store(rw(), v, d, 0);
                });
            }
        }
    });
}
