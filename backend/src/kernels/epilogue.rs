//! `linear`'s epilogue, shared by the three matmul tile builders (f32, stored weights, int8
//! activations): what happens to each finished dot product before it is stored.
//!
//! A gated `linear` runs its tiles twice over the same output block: the first pass stores
//! `act(x·wᵀ + bias)`, the second multiplies it by `x·upᵀ` (and adds the residual). The block
//! is the task's own, so it is still in cache and no other task touches it.

use super::{Ext, Kargs, rw};
use crate::kernels::elementwise::apply_unary;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use edgec_ir::{Op, UnaryOp};

/// The static part of a `linear`'s epilogue (the plain `transpose_b` matmul has none).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Epilogue {
    pub scale: Option<f32>,
    pub act: Option<UnaryOp>,
    pub gated: bool,
    pub bias: bool,
    pub residual: bool,
}

impl Epilogue {
    pub fn of(op: &Op) -> Epilogue {
        match *op {
            Op::Linear { scale, act, gated, bias, residual } => Epilogue { scale, act, gated, bias, residual },
            _ => Epilogue::default(),
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Epilogue::default()
    }

    /// Operands: `x`, `w`, then `up`, `bias`, `residual` when present; the result follows.
    fn arity(&self) -> u32 {
        2 + u32::from(self.gated) + u32::from(self.bias) + u32::from(self.residual)
    }
}

/// Which pass over the output block a tile belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// `x·wᵀ`: the only pass of an ungated matmul.
    Main,
    /// `x·upᵀ` of a gated one, multiplying what `Main` stored.
    Up,
}

/// The pointers a matmul kernel reads from its argument block, and how it stores results.
pub(crate) struct MatMulArgs {
    pub x: Value,
    pub w: Value,
    pub up: Option<Value>,
    bias: Option<Value>,
    residual: Option<Value>,
    pub out: Value,
    ep: Epilogue,
    /// Output width (row stride of `out` and `residual`, in elements).
    n: u64,
}

impl MatMulArgs {
    pub fn load(b: &mut FunctionBuilder, k: &Kargs, ep: Epilogue, n: u64) -> MatMulArgs {
        let mut next = 2;
        let mut take = |b: &mut FunctionBuilder, present: bool| {
            present.then(|| {
                next += 1;
                k.ptr(b, next - 1)
            })
        };
        let x = k.ptr(b, 0);
        let w = k.ptr(b, 1);
        let up = take(b, ep.gated);
        let bias = take(b, ep.bias);
        let residual = take(b, ep.residual);
        let out = k.ptr(b, ep.arity());
        MatMulArgs { x, w, up, bias, residual, out, ep, n }
    }

    /// The passes each output block gets, with the weight each one reads.
    pub fn passes(&self) -> Vec<(Pass, Value)> {
        let mut p = vec![(Pass::Main, self.w)];
        if let Some(up) = self.up {
            p.push((Pass::Up, up));
        }
        p
    }

    /// Finishes dot product `s` (an f32) of output `[row, col0 + c]` in pass `pass` and stores it.
    pub fn store(&self, b: &mut FunctionBuilder, pass: Pass, row: Value, col0: Value, c: usize, s: Value) {
        self.at(b, row, col0).store(b, pass, c, s);
    }

    /// Where the outputs `[row, col0..]` go: the addresses computed once, for a tile's stores.
    pub fn at(&self, b: &mut FunctionBuilder, row: Value, col0: Value) -> OutputAt<'_> {
        let orow = b.addr(self.out, row, self.n as i64 * 4);
        let out = b.addr(orow, col0, 4);
        let bias = self.bias.map(|bias| b.addr(bias, col0, 4));
        let residual = self.residual.map(|res| {
            let rrow = b.addr(res, row, self.n as i64 * 4);
            b.addr(rrow, col0, 4)
        });
        OutputAt { args: self, out, bias, residual }
    }
}

/// [`MatMulArgs::at`]: a tile's output, bias and residual pointers.
pub(crate) struct OutputAt<'a> {
    args: &'a MatMulArgs,
    out: Value,
    bias: Option<Value>,
    residual: Option<Value>,
}

impl OutputAt<'_> {
    /// Finishes dot product `s` (an f32) of output column `col0 + c` in pass `pass` and stores it.
    pub fn store(&self, b: &mut FunctionBuilder, pass: Pass, c: usize, s: Value) {
        let ep = self.args.ep;
        let off = c as i32 * 4;
        let mut v = s;
        if pass == Pass::Main {
            if let Some(s) = ep.scale {
                let k = crate::math::fconst(b, types::F32, s);
                v = b.ins().fmul(v, k);
            }
            if let Some(p) = self.bias {
                let bv = b.ins().load(types::F32, super::ro(), p, off);
                v = b.ins().fadd(v, bv);
            }
            if let Some(act) = ep.act {
                v = apply_unary(b, act, v, types::F32);
            }
        } else {
            // Written by this task's `Main` pass: a plain load, not `ro()`.
            let g = b.ins().load(types::F32, rw(), self.out, off);
            v = b.ins().fmul(g, v);
        }
        let last = pass == Pass::Up || !ep.gated;
        if let (true, Some(r)) = (last, self.residual) {
            let r = b.ins().load(types::F32, super::ro(), r, off);
            v = b.ins().fadd(v, r);
        }
        b.ins().store(rw(), v, self.out, off);
    }
}
