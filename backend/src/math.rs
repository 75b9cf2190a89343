//! Transcendental functions as CLIF polynomials: the object may not import libm.
//!
//! Every builder works on `f32` and on `f32x4` alike (the type of `x` decides).

use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// A constant of `ty` (scalar f32, or splatted into f32x4).
pub fn fconst(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
    let s = b.ins().f32const(Ieee32::with_float(v));
    if ty.is_vector() { b.ins().splat(ty, s) } else { s }
}

fn iconst32(b: &mut FunctionBuilder, ty: Type, v: i64) -> Value {
    let s = b.ins().iconst(types::I32, v);
    if ty.is_vector() { b.ins().splat(ty, s) } else { s }
}

// Cephes expf constants. The upper clamp keeps 2^n finite (n <= 127); below the lower one the
// result would be subnormal, and 2^-126 * p(r) is what we return instead.
const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_55;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
#[allow(clippy::excessive_precision)]
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1_f32];

/// `exp(x)` for f32 or f32x4: clamp, `n = round(x·log2e)`, `r = x − n·ln2` (hi/lo split),
/// degree-6 polynomial, then scale by `2^n` built by adding `n` into the exponent bits.
/// Relative error about 1e-7 on [-87, 88].
pub fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = if ty.is_vector() { types::I32X4 } else { types::I32 };
    let hi = fconst(b, ty, EXP_HI);
    let lo = fconst(b, ty, EXP_LO);
    let x = b.ins().fmin(x, hi);
    let x = b.ins().fmax(x, lo);
    let log2e = fconst(b, ty, LOG2E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let c1 = fconst(b, ty, -LN2_HI);
    let c2 = fconst(b, ty, -LN2_LO);
    let r = b.ins().fma(n, c1, x);
    let r = b.ins().fma(n, c2, r);
    let mut y = fconst(b, ty, P[0]);
    for &p in &P[1..] {
        let pc = fconst(b, ty, p);
        y = b.ins().fma(y, r, pc);
    }
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fma(y, r2, r);
    let one = fconst(b, ty, 1.0);
    let y = b.ins().fadd(y, one);
    let ni = b.ins().fcvt_to_sint_sat(ity, n);
    let bias = iconst32(b, ity, 127);
    let e = b.ins().iadd(ni, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let flags = if ty.is_vector() {
        MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
    } else {
        MemFlagsData::new()
    };
    let pow2n = b.ins().bitcast(ty, flags, e);
    b.ins().fmul(y, pow2n)
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let nx = b.ins().fneg(x);
    let e = exp(b, nx);
    let one = fconst(b, ty, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(one, d)
}

/// `x / (1 + exp(-x))`.
pub fn silu(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let nx = b.ins().fneg(x);
    let e = exp(b, nx);
    let one = fconst(b, ty, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(x, d)
}

/// `tanh(x) = 1 - 2 / (exp(2x) + 1)`: saturates cleanly at ±1 (exp clamps, never overflows to
/// NaN). Absolute error about 1e-7.
pub fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let x2 = b.ins().fadd(x, x);
    let e = exp(b, x2);
    let one = fconst(b, ty, 1.0);
    let two = fconst(b, ty, 2.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    b.ins().fsub(one, q)
}

/// GELU, tanh form: `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x³)`, computed as
/// the identical `x / (1 + exp(-2u))`, which keeps full relative precision for negative `x`
/// (where `1 + tanh(u)` would cancel).
pub fn gelu_tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let x2 = b.ins().fmul(x, x);
    let c = fconst(b, ty, 0.044_715);
    let one = fconst(b, ty, 1.0);
    let inner = b.ins().fma(x2, c, one);
    let inner = b.ins().fmul(x, inner);
    // -2 * sqrt(2 / pi)
    let k = fconst(b, ty, -2.0 * (2.0 / std::f64::consts::PI).sqrt() as f32);
    let t = b.ins().fmul(inner, k);
    let e = exp(b, t);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(x, d)
}

/// `a.max(b)` / `a.min(b)` with Rust's (IEEE maxNum) semantics, which the IR's reference uses:
/// a NaN operand yields the other one. Cranelift's `fmax`/`fmin` propagate NaN instead, so the
/// NaN lanes are patched with a select.
pub fn max_num(b: &mut FunctionBuilder, x: Value, y: Value, min: bool) -> Value {
    use cranelift_codegen::ir::condcodes::FloatCC;
    let ty = b.func.dfg.value_type(x);
    let r = if min { b.ins().fmin(x, y) } else { b.ins().fmax(x, y) };
    let x_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    let y_nan = b.ins().fcmp(FloatCC::Unordered, y, y);
    if ty.is_vector() {
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let mx = b.ins().bitcast(ty, le, x_nan);
        let my = b.ins().bitcast(ty, le, y_nan);
        let r = b.ins().bitselect(mx, y, r);
        b.ins().bitselect(my, x, r)
    } else {
        let r = b.ins().select(x_nan, y, r);
        b.ins().select(y_nan, x, r)
    }
}
