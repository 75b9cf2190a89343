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

/// `cond ? x : y` for a comparison result `cond` of `x`'s type (scalar or f32x4 mask).
fn sel(b: &mut FunctionBuilder, cond: Value, x: Value, y: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    if ty.is_vector() {
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let m = b.ins().bitcast(ty, le, cond);
        b.ins().bitselect(m, x, y)
    } else {
        b.ins().select(cond, x, y)
    }
}

/// `1.0` where `x` is NaN, else `0.0`.
pub fn is_nan(b: &mut FunctionBuilder, x: Value) -> Value {
    use cranelift_codegen::ir::condcodes::FloatCC;
    let ty = b.func.dfg.value_type(x);
    let c = b.ins().fcmp(FloatCC::Unordered, x, x);
    let one = fconst(b, ty, 1.0);
    let zero = fconst(b, ty, 0.0);
    sel(b, c, one, zero)
}

/// Natural log (Cephes `logf`): split `x = m · 2^e` with `m` in `[sqrt(1/2), sqrt(2))` from the
/// bits, a degree-9 polynomial in `m - 1`, then `e · ln2` (hi/lo). Relative error about 1e-7
/// for normal inputs; `log(0) = -inf`, negative → NaN, `+inf` and NaN pass through.
/// Subnormal inputs are not handled specially.
#[allow(clippy::excessive_precision)]
pub fn log(b: &mut FunctionBuilder, x: Value) -> Value {
    use cranelift_codegen::ir::condcodes::FloatCC;
    let ty = b.func.dfg.value_type(x);
    let ity = if ty.is_vector() { types::I32X4 } else { types::I32 };
    let le = if ty.is_vector() {
        MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
    } else {
        MemFlagsData::new()
    };
    let bits = b.ins().bitcast(ity, le, x);
    let e = b.ins().ushr_imm_u(bits, 23);
    let mask_e = iconst32(b, ity, 0xff);
    let e = b.ins().band(e, mask_e);
    let bias = iconst32(b, ity, 126);
    let e = b.ins().isub(e, bias);
    let mmask = iconst32(b, ity, 0x807f_ffff);
    let m = b.ins().band(bits, mmask);
    let half = iconst32(b, ity, 0x3f00_0000);
    let m = b.ins().bor(m, half);
    let m = b.ins().bitcast(ty, le, m); // [0.5, 1)
    let mut ef = b.ins().fcvt_from_sint(ty, e);
    // m < sqrt(1/2): m = 2m - 1, e -= 1; else m = m - 1.
    let sqrthf = fconst(b, ty, std::f32::consts::FRAC_1_SQRT_2);
    let small = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    let one = fconst(b, ty, 1.0);
    let zero = fconst(b, ty, 0.0);
    let m2 = b.ins().fadd(m, m);
    let mm = sel(b, small, m2, m);
    let xm = b.ins().fsub(mm, one);
    let dec = sel(b, small, one, zero);
    ef = b.ins().fsub(ef, dec);
    const L: [f32; 9] = [
        7.037_683_6e-2,
        -1.151_461_0e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_5e-1,
        -2.499_999_4e-1,
        3.333_333_1e-1,
    ];
    let mut y = fconst(b, ty, L[0]);
    for &c in &L[1..] {
        let cc = fconst(b, ty, c);
        y = b.ins().fma(y, xm, cc);
    }
    let z = b.ins().fmul(xm, xm);
    let y = b.ins().fmul(y, xm);
    let y = b.ins().fmul(y, z);
    let c1 = fconst(b, ty, -2.121_944_4e-4);
    let y = b.ins().fma(ef, c1, y);
    let mh = fconst(b, ty, -0.5);
    let y = b.ins().fma(z, mh, y);
    let r = b.ins().fadd(xm, y);
    let c2 = fconst(b, ty, 0.693_359_4);
    let r = b.ins().fma(ef, c2, r);
    // Special values.
    let inf = fconst(b, ty, f32::INFINITY);
    let ninf = fconst(b, ty, f32::NEG_INFINITY);
    let nan = fconst(b, ty, f32::NAN);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = sel(b, is_inf, inf, r);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let r = sel(b, is_zero, ninf, r);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let r = sel(b, neg, nan, r);
    let is_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
    sel(b, is_nan, x, r)
}

/// The error function: below |x| = 1 its Maclaurin series (degree 23), above it
/// The pieces of `erf(x)` (f32 or f32x4): below |x| = 1 its Maclaurin series (`small`, 12
/// terms: the last is 1e-9 at |x| = 1); from 1 on, `erfc(|x|)` by Abramowitz & Stegun 7.1.26,
/// `t·p(t)·exp(-x²)` with `t = 1/(1 + 0.3275911|x|)` (absolute error under 1.5e-7).
struct ErfParts {
    small: Value,
    erfc_abs: Value,
    negative: Value,
    is_small: Value,
}

#[allow(clippy::excessive_precision)]
fn erf_parts(b: &mut FunctionBuilder, x: Value) -> ErfParts {
    use cranelift_codegen::ir::condcodes::FloatCC;
    let ty = b.func.dfg.value_type(x);
    let a = b.ins().fabs(x);
    let one = fconst(b, ty, 1.0);
    // Series: 2/sqrt(pi) · x · Σ (-1)^n x^2n / (n! (2n+1)).
    let x2 = b.ins().fmul(x, x);
    let coef: Vec<f64> = (0..12)
        .map(|n| {
            let fact: f64 = (1..=n).map(f64::from).product();
            (-1f64).powi(n) / (fact * f64::from(2 * n + 1))
        })
        .collect();
    let mut s = fconst(b, ty, coef[11] as f32);
    for &c in coef[..11].iter().rev() {
        let cc = fconst(b, ty, c as f32);
        s = b.ins().fma(s, x2, cc);
    }
    let k = fconst(b, ty, (2.0 / std::f64::consts::PI.sqrt()) as f32);
    let s = b.ins().fmul(s, k);
    let small = b.ins().fmul(s, x);
    let p = fconst(b, ty, 0.327_591_1);
    let d = b.ins().fma(p, a, one);
    let t = b.ins().fdiv(one, d);
    let ac: [f32; 5] = [0.254_829_592, -0.284_496_736, 1.421_413_741, -1.453_152_027, 1.061_405_429];
    let mut q = fconst(b, ty, ac[4]);
    for &c in ac[..4].iter().rev() {
        let cc = fconst(b, ty, c);
        q = b.ins().fma(q, t, cc);
    }
    let q = b.ins().fmul(q, t);
    let nx2 = b.ins().fneg(x2);
    let e = exp(b, nx2);
    let erfc_abs = b.ins().fmul(q, e);
    let zero = fconst(b, ty, 0.0);
    let negative = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, one);
    ErfParts { small, erfc_abs, negative, is_small }
}

/// The error function: the series below |x| = 1, `±(1 - erfc(|x|))` above.
pub fn erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let p = erf_parts(b, x);
    let one = fconst(b, ty, 1.0);
    let big = b.ins().fsub(one, p.erfc_abs);
    // fcopysign has no f32x4 lowering on x86: restore the sign with a select.
    let nbig = b.ins().fneg(big);
    let big = sel(b, p.negative, nbig, big);
    sel(b, p.is_small, p.small, big)
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt(2)))`. For negative arguments `1 + erf` is taken as
/// `erfc(|z|)` directly instead of cancelling in `1 - erfc`.
pub fn gelu_erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let c = fconst(b, ty, std::f32::consts::FRAC_1_SQRT_2);
    let z = b.ins().fmul(x, c);
    let p = erf_parts(b, z);
    let one = fconst(b, ty, 1.0);
    let two = fconst(b, ty, 2.0);
    let small = b.ins().fadd(one, p.small);
    let upper = b.ins().fsub(two, p.erfc_abs);
    let big = sel(b, p.negative, p.erfc_abs, upper);
    let one_plus = sel(b, p.is_small, small, big);
    let half = fconst(b, ty, 0.5);
    let hx = b.ins().fmul(x, half);
    b.ins().fmul(hx, one_plus)
}

/// `x^y` as `exp(y · log|x|)`, with `x^0 = 1`, the sign of a negative base restored for an
/// odd integer exponent, NaN for a negative base and a fractional exponent.
pub fn pow(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    use cranelift_codegen::ir::condcodes::FloatCC;
    let ty = b.func.dfg.value_type(x);
    let a = b.ins().fabs(x);
    let l = log(b, a);
    let t = b.ins().fmul(y, l);
    let r = exp(b, t);
    let zero = fconst(b, ty, 0.0);
    let one = fconst(b, ty, 1.0);
    let half = fconst(b, ty, 0.5);
    // |x| = 0 and y > 0: exactly 0 (exp's clamp would leave 2^-126).
    let az = b.ins().fcmp(FloatCC::Equal, a, zero);
    let ypos = b.ins().fcmp(FloatCC::GreaterThan, y, zero);
    let zpos = b.ins().band(az, ypos);
    let r = sel(b, zpos, zero, r);
    let yr = b.ins().nearest(y);
    let is_int = b.ins().fcmp(FloatCC::Equal, yr, y);
    let h = b.ins().fmul(y, half);
    let hr = b.ins().nearest(h);
    let even = b.ins().fcmp(FloatCC::Equal, hr, h);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let nr = b.ins().fneg(r);
    let odd_r = sel(b, even, r, nr);
    let nan = fconst(b, ty, f32::NAN);
    let negr = sel(b, is_int, odd_r, nan);
    let r = sel(b, neg, negr, r);
    let y0 = b.ins().fcmp(FloatCC::Equal, y, zero);
    sel(b, y0, one, r)
}
