//! Weight storage formats: how a weight's values are stored in the weights file, distinct from
//! its graph dtype (the graph always sees f32 values).
//!
//! A weight gets a storage format through a trailing [`Transform::Quantize`] (printed
//! `then quantize q4_g32`). [`encode`] turns f32 values into the stored bytes and [`decode`]
//! turns them back, exactly as the backend's kernels dequantize in registers; the interpreter
//! runs a quantized graph on `decode(encode(values))` (see [`crate::weights::materialize_f32`]).
//!
//! Layouts (a weight is viewed as `rows × cols`, `cols` its innermost dim; little-endian; every
//! row's bytes are contiguous except for `q8_c`'s scales):
//!
//! | name | bits/weight | layout | value |
//! |---|---|---|---|
//! | `f32` | 32 | `rows × cols` f32 | `x` |
//! | `f16` | 16 | `rows × cols` IEEE half | `x` |
//! | `bf16` | 16 | `rows × cols` bfloat16 | `x` |
//! | `q8_c` | 8 + 32/cols | `rows × cols` i8, zero padding to a multiple of 4 bytes, then `rows` f32 scales `s` | `q * s[row]`, symmetric, `s = max|row| / 127` |
//! | `q8_gG` | 8 + 16/G | per row `cols / G` groups of: f16 `d`, `G` i8 `q` | `q * d` |
//! | `q4s_gG` | 4 + 16/G | per row `cols / G` groups of: f16 `d`, `G / 2` nibble bytes | `(q - 8) * d` |
//! | `q4_gG` | 4 + 32/G | per row `cols / G` groups of: f16 `d`, f16 `m`, `G / 2` nibble bytes | `q * d + m` |
//!
//! Nibbles: a group's nibble bytes are sub-blocks of 16 bytes, one per 32 elements; byte `i` of
//! sub-block `s` holds element `32 s + i` in its low nibble and element `32 s + 16 + i` in its
//! high nibble. So with `G = 32`, `q8_g32`, `q4s_g32` and `q4_g32` are byte for byte ggml's
//! `Q8_0`, `Q4_0` and `Q4_1` (`ggml-common.h`), and GGUF blocks are stored as they are.
//! `G` is 32, 64, 128 or 256.
//!
//! Quantizers: `q8_c` and `q8_gG` round to nearest with the scale from the largest magnitude.
//! `q4_gG` searches the clipping range per group for the least squared error (scale and min
//! rounded to f16 as stored), then refits scale and min by least squares for the chosen codes
//! (kept when better). `q4s_gG` searches the scale per group for the least squared error
//! weighted by the weight's per-column [`crate::graph::Weight::importance`] when it has one
//! (calibration statistics: [`ActivationStats`], [`importance`]), else unweighted; see
//! `search_q4_sym`. Both evaluate the plain max-abs / min-max choice too, so neither does
//! worse than it on its (weighted) error.

use crate::IrError;
use crate::ValueRef;
use crate::graph::{BlockFormat, Graph, Transform, WeightSource};
use crate::op::Op;
use crate::types::{DType, Dim};

/// How a weight's values are stored. See the module docs for the exact layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    F32,
    F16,
    BF16,
    /// int8 per output channel (row), symmetric, f32 scales after the rows.
    Q8C,
    /// int8 groups of `group` with an f16 scale (`group == 32` is ggml's Q8_0).
    Q8G {
        group: u32,
    },
    /// int4 groups of `group` with an f16 scale and, with `min`, an f16 offset (asymmetric);
    /// without it the codes are centered on 8. `group == 32` is ggml's Q4_1 / Q4_0.
    Q4G {
        group: u32,
        min: bool,
    },
}

/// Sub-block of the nibble and int8 layouts: elements per 16 nibble bytes.
pub const SUB_BLOCK: u64 = 32;

impl Storage {
    /// The text-form name (`f16`, `q8_c`, `q8_g32`, `q4s_g32`, `q4_g128`, ...).
    pub fn name(self) -> String {
        match self {
            Storage::F32 => "f32".into(),
            Storage::F16 => "f16".into(),
            Storage::BF16 => "bf16".into(),
            Storage::Q8C => "q8_c".into(),
            Storage::Q8G { group } => format!("q8_g{group}"),
            Storage::Q4G { group, min: false } => format!("q4s_g{group}"),
            Storage::Q4G { group, min: true } => format!("q4_g{group}"),
        }
    }

    /// Parses [`Storage::name`], and ggml's `q8_0`, `q4_0`, `q4_1` as the `G = 32` formats.
    pub fn from_name(s: &str) -> Option<Storage> {
        let group = |rest: &str| rest.parse::<u32>().ok().filter(|g| Storage::GROUPS.contains(g));
        Some(match s {
            "f32" => Storage::F32,
            "f16" => Storage::F16,
            "bf16" => Storage::BF16,
            "q8_c" => Storage::Q8C,
            _ => {
                if let Some(f) = BlockFormat::from_name(s) {
                    return Storage::from_block(f);
                }
                if let Some(r) = s.strip_prefix("q8_g") {
                    Storage::Q8G { group: group(r)? }
                } else if let Some(r) = s.strip_prefix("q4s_g") {
                    Storage::Q4G { group: group(r)?, min: false }
                } else if let Some(r) = s.strip_prefix("q4_g") {
                    Storage::Q4G { group: group(r)?, min: true }
                } else {
                    return None;
                }
            }
        })
    }

    /// Allowed group sizes.
    pub const GROUPS: [u32; 4] = [32, 64, 128, 256];

    /// The storage whose layout is `format`'s, byte for byte (none for the K-quants: the
    /// kernels read no 256-element super-blocks).
    pub fn from_block(format: BlockFormat) -> Option<Storage> {
        match format {
            BlockFormat::Q8_0 => Some(Storage::Q8G { group: 32 }),
            BlockFormat::Q4_0 => Some(Storage::Q4G { group: 32, min: false }),
            BlockFormat::Q4_1 => Some(Storage::Q4G { group: 32, min: true }),
            BlockFormat::Q4K | BlockFormat::Q5K | BlockFormat::Q6K => None,
        }
    }

    /// What `--quant keep` stores a `format` source as: its own layout, or for a K-quant the
    /// nearest layout the kernels read, re-quantized (Q4_K's per-32 scale and min → `q4_g32`;
    /// Q5_K and Q6_K → `q8_g32`).
    pub fn kept_as(format: BlockFormat) -> Storage {
        Storage::from_block(format).unwrap_or(match format {
            BlockFormat::Q4K => Storage::Q4G { group: 32, min: true },
            _ => Storage::Q8G { group: 32 },
        })
    }

    /// The group size of a grouped format.
    pub fn group(self) -> Option<u64> {
        match self {
            Storage::Q8G { group } | Storage::Q4G { group, .. } => Some(u64::from(group)),
            _ => None,
        }
    }

    /// Bytes of one group (header included) of a grouped format.
    pub fn group_bytes(self) -> Option<u64> {
        match self {
            Storage::Q8G { group } => Some(2 + u64::from(group)),
            Storage::Q4G { group, min } => Some(if min { 4 } else { 2 } + u64::from(group) / 2),
            _ => None,
        }
    }

    /// Why `cols` per row cannot be stored this way, if it cannot.
    pub fn check_cols(self, cols: u64) -> Result<(), String> {
        if let Some(g) = self.group() {
            if !Storage::GROUPS.contains(&(g as u32)) {
                return Err(format!("{}: group must be one of {:?}", self.name(), Storage::GROUPS));
            }
            if cols == 0 || cols % g != 0 {
                return Err(format!("{}: rows of {cols} elements are not whole groups of {g}", self.name()));
            }
        }
        Ok(())
    }

    /// Bytes of the contiguous part of one row (for `q8_c`, without its scale).
    pub fn row_bytes(self, cols: u64) -> Option<u64> {
        match self {
            Storage::F32 => cols.checked_mul(4),
            Storage::F16 | Storage::BF16 => cols.checked_mul(2),
            Storage::Q8C => Some(cols),
            _ => (cols / self.group()?).checked_mul(self.group_bytes()?),
        }
    }

    /// Byte offset of `q8_c`'s scales: the rows, padded to a multiple of 4.
    pub fn q8c_scales_offset(rows: u64, cols: u64) -> Option<u64> {
        Some(rows.checked_mul(cols)?.checked_add(3)? / 4 * 4)
    }

    /// Bytes of a `rows × cols` tensor, overflow checked (`cols` must pass [`Storage::check_cols`]).
    pub fn bytes(self, rows: u64, cols: u64) -> Option<u64> {
        match self {
            Storage::Q8C => Storage::q8c_scales_offset(rows, cols)?.checked_add(rows.checked_mul(4)?),
            _ => rows.checked_mul(self.row_bytes(cols)?),
        }
    }
}

/// `rows × cols` of a weight shape: `cols` the innermost dim, `rows` the product of the others.
pub fn rows_cols(dims: &[Dim]) -> Option<(u64, u64)> {
    let cols = dims.last().map_or(Some(1), |d| d.as_const())?;
    let rows = dims[..dims.len().saturating_sub(1)].iter().try_fold(1u64, |a, d| a.checked_mul(d.as_const()?))?;
    Some((rows, cols))
}

fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Encodes `values` (`rows × cols`, row-major) as `storage`.
pub fn encode(storage: Storage, rows: u64, cols: u64, values: &[f32]) -> Result<Vec<u8>, String> {
    encode_weighted(storage, rows, cols, values, None)
}

/// [`encode`] with per-column importance (`cols` finite values ≥ 0): `q4s_gG` minimises the
/// squared error weighted by it (see [`crate::graph::Weight::importance`]); the other formats
/// ignore it.
pub fn encode_weighted(
    storage: Storage,
    rows: u64,
    cols: u64,
    values: &[f32],
    importance: Option<&[f32]>,
) -> Result<Vec<u8>, String> {
    storage.check_cols(cols)?;
    if let Some(imp) = importance {
        check_importance(imp, cols)?;
    }
    let n = rows.checked_mul(cols).filter(|&n| n == values.len() as u64);
    if n.is_none() {
        return Err(format!("{} values are not {rows} × {cols}", values.len()));
    }
    let total = storage.bytes(rows, cols).ok_or("byte size overflows")? as usize;
    let mut out = Vec::new();
    out.try_reserve_exact(total).map_err(|_| format!("cannot allocate {total} bytes"))?;
    let cols = cols as usize;
    match storage {
        Storage::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        Storage::F16 => out.extend(values.iter().flat_map(|&v| f16_bits(v))),
        Storage::BF16 => out.extend(values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())),
        Storage::Q8C => {
            let mut scales = Vec::with_capacity(rows as usize);
            for row in values.chunks_exact(cols.max(1)).take(rows as usize) {
                let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                let s = amax / 127.0;
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                out.extend(row.iter().map(|&v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8));
                scales.push(s);
            }
            out.resize(Storage::q8c_scales_offset(rows, cols as u64).unwrap() as usize, 0);
            out.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
        }
        Storage::Q8G { group } => {
            for g in values.chunks_exact(group as usize) {
                let amax = g.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = f16_round(amax / 127.0);
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16_bits(d));
                out.extend(g.iter().map(|&v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8));
            }
        }
        Storage::Q4G { group, min } => {
            let group = group as usize;
            let mut q = vec![0u8; group];
            for row in values.chunks_exact(cols) {
                for (k, g) in row.chunks_exact(group).enumerate() {
                    let wg = importance.map(|imp| &imp[k * group..(k + 1) * group]);
                    let (d, m) = if min { search_q4_min(g, &mut q) } else { search_q4_sym(g, wg, &mut q) };
                    out.extend(f16_bits(d));
                    if min {
                        out.extend(f16_bits(m));
                    }
                    pack_nibbles(&q, &mut out);
                }
            }
        }
    }
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

/// Why `imp` is not a per-column importance for rows of `cols` values, if it is not.
pub fn check_importance(imp: &[f32], cols: u64) -> Result<(), String> {
    if imp.len() as u64 != cols {
        return Err(format!("importance has {} values for rows of {cols}", imp.len()));
    }
    if let Some(v) = imp.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(format!("importance value {v} is not finite and ≥ 0"));
    }
    Ok(())
}

/// Appends `q` (codes 0..=15, a multiple of 32) in the sub-block nibble layout.
fn pack_nibbles(q: &[u8], out: &mut Vec<u8>) {
    for s in q.chunks_exact(SUB_BLOCK as usize) {
        out.extend((0..16).map(|i| s[i] | (s[i + 16] << 4)));
    }
}

/// Codes for `x ≈ q * d + m` (q in 0..=15), and their squared error. `d`, `m` already f16.
fn codes_min(g: &[f32], d: f32, m: f32, q: &mut [u8]) -> f32 {
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut err = 0.0;
    for (qi, &x) in q.iter_mut().zip(g) {
        let c = ((x - m) * inv).round().clamp(0.0, 15.0);
        *qi = c as u8;
        let e = c * d + m - x;
        err += e * e;
    }
    err
}

/// Asymmetric int4 for one group: searches the clipped range `[lo + a r, hi - b r]` for the
/// least squared error, then refits `d`, `m` by least squares for the chosen codes. Returns the
/// f16-rounded `(d, m)`; `q` gets the codes.
fn search_q4_min(g: &[f32], q: &mut [u8]) -> (f32, f32) {
    let lo = g.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = g.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let r = hi - lo;
    let mut best = (f32::INFINITY, 0.0, 0.0);
    let mut tmp = vec![0u8; g.len()];
    const STEPS: [f32; 6] = [0.0, 0.02, 0.04, 0.07, 0.1, 0.15];
    for a in STEPS {
        for b in STEPS {
            let (l, h) = (lo + a * r, hi - b * r);
            let d = f16_round((h - l) / 15.0);
            let m = f16_round(l);
            let err = codes_min(g, d, m, &mut tmp);
            if err < best.0 {
                best = (err, d, m);
                q.copy_from_slice(&tmp);
            }
        }
    }
    // Least-squares refit of x ≈ q d + m for the chosen codes.
    let n = g.len() as f32;
    let (sq, sqq, sx, sqx) = q.iter().zip(g).fold((0f32, 0f32, 0f32, 0f32), |(a, b, c, e), (&qi, &x)| {
        let qf = f32::from(qi);
        (a + qf, b + qf * qf, c + x, e + qf * x)
    });
    let det = n * sqq - sq * sq;
    if det > 0.0 {
        let d = f16_round((n * sqx - sq * sx) / det);
        let m = f16_round((sx - d * sq) / n);
        if d >= 0.0 {
            let err = codes_min(g, d, m, &mut tmp);
            if err < best.0 {
                best = (err, d, m);
                q.copy_from_slice(&tmp);
            }
        }
    }
    (best.1, best.2)
}

/// Codes for `x ≈ (q - 8) d` (q in 0..=15) and their squared error, weighted by `w` (1 when
/// `None`). `d` already f16.
fn codes_sym(g: &[f32], w: Option<&[f32]>, d: f32, q: &mut [u8]) -> f32 {
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut err = 0.0;
    for (i, (qi, &x)) in q.iter_mut().zip(g).enumerate() {
        let c = (x * inv + 8.0).round().clamp(0.0, 15.0);
        *qi = c as u8;
        let e = (c - 8.0) * d - x;
        err += w.map_or(1.0, |w| w[i]) * e * e;
    }
    err
}

/// Symmetric int4 for one group (`x ≈ (q - 8) d`), minimising the squared error weighted by
/// `w` (per element, ≥ 0; unweighted when `None`). In the manner of llama.cpp's
/// `make_qx_quants`, with a wider range: the value of largest magnitude `max` (sign kept) is
/// mapped to code `-n` or `+n` for `n` in 3..=12 by steps of 0.5, then ±0.4 around the best by
/// steps of 0.1 (ggml's plain `d = -max / 8` is `-8`); each candidate's rounded codes are
/// scored by the weighted error at their least-squares scale. The best one's scale is rounded
/// to f16, its codes rounded again for that scale, and the scale refit (up to twice more)
/// while the exact weighted error falls. ggml's plain scale, rounded to nearest, is evaluated
/// too and kept unless beaten, so the result is never worse than it. On skewed weights this
/// reaches the exhaustive optimum over every f16 scale (`ir/tests/storage.rs`).
fn search_q4_sym(g: &[f32], w: Option<&[f32]>, q: &mut [u8]) -> (f32, f32) {
    let max = g.iter().copied().fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
    let mut tmp = vec![0u8; g.len()];
    let plain = f16_round(-max / 8.0);
    let mut best = (codes_sym(g, w, plain, q), plain);
    if max == 0.0 {
        return (best.1, 0.0);
    }
    let wt = |i: usize| w.map_or(1.0, |w| w[i]);
    // Weighted least-squares scale for the codes in `q` (0 when all codes are 8).
    let ls = |q: &[u8]| {
        let (mut sxl, mut sll) = (0f32, 0f32);
        for (i, (&qi, &x)) in q.iter().zip(g).enumerate() {
            let l = f32::from(qi) - 8.0;
            sxl += wt(i) * x * l;
            sll += wt(i) * l * l;
        }
        if sll > 0.0 { sxl / sll } else { 0.0 }
    };
    // Candidates by the weighted error at their least-squares scale, Σw x² − (Σw x l)² / Σw l²
    // (one pass each); the best one is then evaluated exactly, with its scale rounded to f16.
    let gain = |inv: f32| {
        let (mut sxl, mut sll) = (0f32, 0f32);
        for (i, &x) in g.iter().enumerate() {
            let l = (x * inv).round().clamp(-8.0, 7.0);
            let wx = wt(i) * l;
            sxl += wx * x;
            sll += wx * l;
        }
        if sll > 0.0 { sxl * sxl / sll } else { 0.0 }
    };
    let (mut top, mut top_gain) = (0f32, 0f32);
    let mut consider = |inv: f32| {
        let gn = gain(inv);
        if gn > top_gain {
            (top, top_gain) = (inv, gn);
        }
        top
    };
    // Coarse: `max` at code ∓n for n in 3..=12 by 0.5; then ±0.4 around the best by 0.1.
    let mut coarse = 0.0;
    for side in [-1.0f32, 1.0] {
        for k in 0..=18 {
            coarse = consider(side * (3.0 + 0.5 * k as f32) / max);
        }
    }
    let n = coarse * max;
    for k in -4..=4 {
        if k != 0 {
            consider((n + 0.1 * k as f32 * n.signum()) / max);
        }
    }
    if top != 0.0 {
        for (qi, &x) in tmp.iter_mut().zip(g) {
            *qi = (x * top + 8.0).round().clamp(0.0, 15.0) as u8;
        }
        let d = f16_round(ls(&tmp));
        let err = codes_sym(g, w, d, &mut tmp);
        if err < best.0 {
            best = (err, d);
            q.copy_from_slice(&tmp);
        }
    }
    for _ in 0..2 {
        let d = f16_round(ls(q));
        let err = codes_sym(g, w, d, &mut tmp);
        if err < best.0 {
            best = (err, d);
            q.copy_from_slice(&tmp);
        } else {
            break;
        }
    }
    (best.1, 0.0)
}

/// Decodes `rows × cols` of `storage` into f32 values, as the kernels dequantize them:
/// `q8_c` `q * s`, `q8_gG` `q * d`, `q4s_gG` `(q - 8) * d`, `q4_gG` `q * d + m` (each product
/// and sum rounded to f32; the kernels may fuse them).
pub fn decode(storage: Storage, rows: u64, cols: u64, bytes: &[u8]) -> Result<Vec<f32>, String> {
    storage.check_cols(cols)?;
    let total = storage.bytes(rows, cols).ok_or("byte size overflows")?;
    if bytes.len() as u64 != total {
        return Err(format!("{} bytes of {} for {rows} × {cols}, need {total}", bytes.len(), storage.name()));
    }
    let n = (rows * cols) as usize;
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| format!("cannot allocate {n} values"))?;
    match storage {
        Storage::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        Storage::F16 => out.extend(bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
        Storage::BF16 => out.extend(bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        Storage::Q8C => {
            let at = Storage::q8c_scales_offset(rows, cols).unwrap() as usize;
            for r in 0..rows as usize {
                let s = f32::from_le_bytes(bytes[at + 4 * r..at + 4 * r + 4].try_into().unwrap());
                let row = &bytes[r * cols as usize..(r + 1) * cols as usize];
                out.extend(row.iter().map(|&q| f32::from(q as i8) * s));
            }
        }
        Storage::Q8G { group } => {
            for g in bytes.chunks_exact(2 + group as usize) {
                let d = f16_at(g, 0);
                out.extend(g[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        Storage::Q4G { min, .. } => {
            let gb = storage.group_bytes().unwrap() as usize;
            for g in bytes.chunks_exact(gb) {
                let d = f16_at(g, 0);
                let (m, qs) = if min { (f16_at(g, 2), &g[4..]) } else { (0.0, &g[2..]) };
                for s in qs.chunks_exact(16) {
                    let lo = s.iter().map(|&b| b & 0x0f);
                    let hi = s.iter().map(|&b| b >> 4);
                    for c in lo.chain(hi) {
                        out.push(if min { f32::from(c) * d + m } else { f32::from(c as i8 - 8) * d });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// ‖a − b‖ / ‖a‖ (0 for an all-zero `a` equal to `b`), in f64.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let (num, den) = error_sums(a, b);
    error_ratio(num, den)
}

/// `(‖a − b‖², ‖a‖²)` in f64.
fn error_sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (f64::from(x) - f64::from(y)).powi(2);
        den += f64::from(x).powi(2);
    }
    (num, den)
}

fn error_ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { if num == 0.0 { 0.0 } else { f64::INFINITY } } else { (num / den).sqrt() }
}

/// Encodes a matrix a block of rows at a time, on every core (rows are independent in every
/// format), so that a large tensor is never whole in memory as f32: the result is [`encode`]'s
/// bytes for all the rows pushed, and the relative error of their round trip.
pub struct RowEncoder<'a> {
    storage: Storage,
    cols: u64,
    importance: Option<&'a [f32]>,
    rows: u64,
    /// Everything but `q8_c`'s per-row scales, which follow all the rows' values.
    data: Vec<u8>,
    scales: Vec<u8>,
    err: (f64, f64),
}

impl<'a> RowEncoder<'a> {
    /// An encoder of rows of `cols`, weighting columns by `importance` as [`encode_weighted`].
    pub fn new(storage: Storage, cols: u64, importance: Option<&'a [f32]>) -> Result<RowEncoder<'a>, String> {
        storage.check_cols(cols)?;
        if let Some(imp) = importance {
            check_importance(imp, cols)?;
        }
        Ok(RowEncoder { storage, cols, importance, rows: 0, data: Vec::new(), scales: Vec::new(), err: (0.0, 0.0) })
    }

    /// Appends whole rows.
    pub fn push(&mut self, values: &[f32]) -> Result<(), String> {
        use rayon::prelude::*;
        let cols = self.cols as usize;
        if values.is_empty() {
            return Ok(());
        }
        if cols == 0 || values.len() % cols != 0 {
            return Err(format!("{} values are not whole rows of {cols}", values.len()));
        }
        let rows = values.len() / cols;
        // A few blocks per core, of whole rows.
        let per = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        let storage = self.storage;
        let lossy = storage != Storage::F32;
        let parts: Vec<(Vec<u8>, (f64, f64))> = values
            .par_chunks(per * cols)
            .map(|block| {
                let n = (block.len() / cols) as u64;
                let bytes = encode_weighted(storage, n, self.cols, block, self.importance)?;
                let err = if lossy { error_sums(block, &decode(storage, n, self.cols, &bytes)?) } else { (0.0, 0.0) };
                Ok((bytes, err))
            })
            .collect::<Result<_, String>>()?;
        for (block, (bytes, (num, den))) in values.chunks(per * cols).zip(parts) {
            let n = (block.len() / cols) as u64;
            if storage == Storage::Q8C {
                let at = Storage::q8c_scales_offset(n, self.cols).ok_or("byte size overflows")? as usize;
                self.data.extend_from_slice(&bytes[..block.len()]);
                self.scales.extend_from_slice(&bytes[at..]);
            } else {
                self.data.extend_from_slice(&bytes);
            }
            self.err = (self.err.0 + num, self.err.1 + den);
            self.rows += n;
        }
        Ok(())
    }

    /// The encoded bytes and ‖W − Ŵ‖ / ‖W‖ over every row pushed.
    pub fn finish(mut self) -> Result<(Vec<u8>, f64), String> {
        if self.storage == Storage::Q8C {
            let at = Storage::q8c_scales_offset(self.rows, self.cols).ok_or("byte size overflows")?;
            self.data.resize(at as usize, 0);
            self.data.extend_from_slice(&self.scales);
        }
        Ok((self.data, error_ratio(self.err.0, self.err.1)))
    }
}

/// A `--quant` preset: which storage each eligible weight gets. Eligible weights are the
/// matrices only used where [`Op::reads_stored_weight`] allows (`transpose_b` matmul and
/// `linear` weights, `gather` tables): the kernels that read quantized blocks. Everything else (norm weights, biases,
/// rope tables) stays f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preset {
    /// Everything f32 (the default).
    #[default]
    F32,
    F16,
    /// `q8_c`: int8 per output channel (embedding tables per row).
    Q8,
    /// `q8_g32` (ggml's Q8_0: int8 groups of 32 with an f16 scale); rows not a multiple of 32
    /// fall back to `q8_c`.
    Q8G32,
    /// `q4_g32` (asymmetric, searched); rows not a multiple of 32 fall back to `q8_c`.
    Q4,
    /// `q4s_g32` (symmetric, ggml's Q4_0 layout: int4 groups of 32 with an f16 scale, 4.5 bits
    /// per weight; scale searched, weighted by calibration statistics when given: see
    /// [`apply_preset_with`]); rows not a multiple of 32 fall back to `q8_c`.
    Q4S,
    /// `q4_g128`; rows not a multiple of 128 fall back to `q4_g32`, then `q8_c`.
    Q4G128,
    /// Keep the source's format where the weights file can store it (GGUF Q8_0/Q4_0/Q4_1
    /// blocks, f16/bf16 tensors) without converting; f32 otherwise.
    Keep,
}

impl Preset {
    pub const NAMES: &'static str = "f32, f16, q8, q8-g32, q4, q4s, q4-g128, keep";

    pub fn from_name(s: &str) -> Option<Preset> {
        Some(match s {
            "f32" => Preset::F32,
            "f16" => Preset::F16,
            "q8" => Preset::Q8,
            "q8-g32" => Preset::Q8G32,
            "q4" => Preset::Q4,
            "q4s" => Preset::Q4S,
            "q4-g128" => Preset::Q4G128,
            "keep" => Preset::Keep,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::F32 => "f32",
            Preset::F16 => "f16",
            Preset::Q8 => "q8",
            Preset::Q8G32 => "q8-g32",
            Preset::Q4 => "q4",
            Preset::Q4S => "q4s",
            Preset::Q4G128 => "q4-g128",
            Preset::Keep => "keep",
        }
    }
}

/// How matmuls with int8 or int4 weights take their activations (`--activations`): `int8`
/// quantizes each activation row to int8 blocks of 32 on the fly and multiplies with integer
/// dot products (VNNI, sdot); `f32` dequantizes the weights in registers and multiplies in f32
/// (slower; no activation rounding, so about half the logit error of `int8` on small models).
/// Both are the same in every CPU variant of both ISAs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    #[default]
    Int8,
    F32,
}

impl Activations {
    pub const NAMES: &'static str = "int8, f32";
    pub const ALL: [Activations; 2] = [Activations::Int8, Activations::F32];

    pub fn from_name(s: &str) -> Option<Activations> {
        Activations::ALL.into_iter().find(|a| a.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Activations::Int8 => "int8",
            Activations::F32 => "f32",
        }
    }
}

/// The KV cache's element type (`--kv-dtype`): f32, f16 (half the memory; rows are rounded
/// to nearest even when written and widened when attention reads them), or q8 (34 bytes per 32
/// values, [`DType::Q8`]: rows quantized by blocks when written, dequantized in registers when
/// attention reads them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
    Q8,
}

impl KvDtype {
    pub const NAMES: &'static str = "f32, f16, q8";
    pub const ALL: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::Q8];

    pub fn from_name(s: &str) -> Option<KvDtype> {
        KvDtype::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Q8 => "q8",
        }
    }

    /// The state dtype.
    pub fn dtype(self) -> DType {
        match self {
            KvDtype::F32 => DType::F32,
            KvDtype::F16 => DType::F16,
            KvDtype::Q8 => DType::Q8,
        }
    }

    /// Bytes of one cache row of `width` values ([`DType::bytes`]); `None` when a q8 row is not
    /// whole blocks (or on overflow).
    pub fn row_bytes(self, width: u64) -> Option<u64> {
        self.dtype().bytes(width, width)
    }
}

/// Gives every f32 state written by `cache_write` the KV dtype (and the `cache_write` results,
/// which are the state). Returns how many states changed; refuses (changing nothing) a q8
/// state whose rows are not whole blocks of 32, naming it.
pub fn apply_kv_dtype(g: &mut Graph, kv: KvDtype) -> Result<usize, IrError> {
    let written =
        |i: usize| g.nodes.iter().any(|n| n.op == Op::CacheWrite && n.args.first() == Some(&ValueRef::State(i as u32)));
    let targets: Vec<usize> =
        (0..g.states.len()).filter(|&i| written(i) && g.states[i].ty.dtype == DType::F32).collect();
    if kv == KvDtype::F32 {
        return Ok(0);
    }
    for &i in &targets {
        let st = &g.states[i];
        let row = st.ty.shape.last().map_or(1, |d| g.dim_max(d));
        kv.dtype()
            .check_row(row)
            .map_err(|m| IrError::new(format!("--kv-dtype {}: KV state '{}': {m}", kv.name(), st.name)))?;
    }
    for &i in &targets {
        g.states[i].ty.dtype = kv.dtype();
    }
    let changed = targets.len();
    for n in &mut g.nodes {
        if let (Op::CacheWrite, Some(&ValueRef::State(s))) = (&n.op, n.args.first()) {
            n.ty.dtype = g.states[s as usize].ty.dtype;
        }
    }
    Ok(changed)
}

/// Whether weight `i` is only read by kernels that take quantized weights.
pub fn quantizable(g: &Graph, i: usize) -> bool {
    let me = ValueRef::Weight(i as u32);
    let mut used = false;
    for n in &g.nodes {
        for (k, &a) in n.args.iter().enumerate() {
            if a != me {
                continue;
            }
            used = true;
            if !n.op.reads_stored_weight(k) {
                return false;
            }
        }
    }
    let w = &g.weights[i];
    used && w.ty.dtype == DType::F32 && w.ty.shape.rank() == 2 && !g.outputs.iter().any(|o| o.value == me)
}

/// The storage a preset gives weight `i`, or `None` to leave it f32.
pub fn choose(g: &Graph, i: usize, preset: Preset) -> Option<Storage> {
    if preset == Preset::F32 || !quantizable(g, i) {
        return None;
    }
    let w = &g.weights[i];
    if w.storage() != Storage::F32 {
        return None;
    }
    let (_, cols) = rows_cols(w.ty.shape.dims())?;
    let fits = |s: Storage| s.check_cols(cols).is_ok();
    let q4 = |group| Storage::Q4G { group, min: true };
    match preset {
        Preset::F32 => None,
        Preset::F16 => Some(Storage::F16),
        Preset::Q8 => Some(Storage::Q8C),
        Preset::Q8G32 => Some(if fits(Storage::Q8G { group: 32 }) { Storage::Q8G { group: 32 } } else { Storage::Q8C }),
        Preset::Q4 => Some(if fits(q4(32)) { q4(32) } else { Storage::Q8C }),
        Preset::Q4S => {
            let q4s = Storage::Q4G { group: 32, min: false };
            Some(if fits(q4s) { q4s } else { Storage::Q8C })
        }
        Preset::Q4G128 => Some([q4(128), q4(32)].into_iter().find(|&s| fits(s)).unwrap_or(Storage::Q8C)),
        Preset::Keep => {
            let rows_kept = w.transforms.iter().all(|t| row_permutation_dims(t, cols).is_some());
            let s = match &w.source {
                WeightSource::Blocks { format, .. } => Storage::kept_as(*format),
                WeightSource::File { dtype: DType::F16, .. } => Storage::F16,
                WeightSource::File { dtype: DType::BF16, .. } => Storage::BF16,
                _ => return None,
            };
            (rows_kept && fits(s)).then_some(s)
        }
    }
}

/// Calibration statistics: for every value that a storable matmul weight multiplies (operand 0
/// of a `transpose_b` matmul or `linear`), the mean square of each of its features over the
/// rows seen, `E[x_j²]`. Fed by [`crate::interp::Interpreter::run_observed`] on a calibration
/// text; read by [`apply_preset_with`] as the weights' importance (llama.cpp's "imatrix").
#[derive(Clone, Debug, Default)]
pub struct ActivationStats {
    /// Per node index: sums of squares per feature, and rows seen.
    sums: std::collections::HashMap<usize, (Vec<f64>, u64)>,
}

impl ActivationStats {
    /// Statistics to gather for `g`: the inputs of its matmul-like nodes.
    pub fn for_graph(g: &Graph) -> ActivationStats {
        let mut sums = std::collections::HashMap::new();
        for n in &g.nodes {
            if matches!(n.op, Op::MatMul { transpose_b: true } | Op::Linear { .. })
                && let Some(&ValueRef::Node(x)) = n.args.first()
                && let Some(&Dim::Const(cols)) = g.nodes.get(x as usize).and_then(|x| x.ty.shape.dims().last())
            {
                sums.insert(x as usize, (vec![0f64; cols as usize], 0));
            }
        }
        ActivationStats { sums }
    }

    /// Adds node `i`'s result (`rows × cols` f32 values) when it is one of the watched inputs.
    pub fn observe(&mut self, i: usize, values: &[f32]) {
        if let Some((sum, rows)) = self.sums.get_mut(&i)
            && !sum.is_empty()
            && values.len().is_multiple_of(sum.len())
        {
            for row in values.chunks_exact(sum.len()) {
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += f64::from(v) * f64::from(v);
                }
                *rows += 1;
            }
        }
    }

    /// `E[x_j²]` of node `i`'s features, when it was watched and seen.
    pub fn mean_square(&self, i: usize) -> Option<Vec<f32>> {
        let (sum, rows) = self.sums.get(&i)?;
        (*rows > 0).then(|| sum.iter().map(|s| (s / *rows as f64) as f32).collect())
    }

    /// Rows seen, over all watched values.
    pub fn rows(&self) -> u64 {
        self.sums.values().map(|s| s.1).sum()
    }
}

/// Records the preset's storage on every weight it applies to (a trailing
/// [`Transform::Quantize`]). Returns how many weights it changed.
pub fn apply_preset(g: &mut Graph, preset: Preset) -> usize {
    apply_preset_with(g, preset, None)
}

/// [`apply_preset`], and with calibration statistics, each `q4s_gG` weight's
/// [`importance`] (see [`crate::graph::Weight::importance`]).
pub fn apply_preset_with(g: &mut Graph, preset: Preset, stats: Option<&ActivationStats>) -> usize {
    let mut changed = 0;
    for i in 0..g.weights.len() {
        if let Some(s) = choose(g, i, preset) {
            if let (Storage::Q4G { min: false, .. }, Some(stats)) = (s, stats) {
                g.weights[i].importance = importance(g, i, stats).map(Into::into);
            }
            g.weights[i].transforms.push(Transform::Quantize(s));
            changed += 1;
        }
    }
    changed
}

/// How much a `gather` use (rows looked up, each element read once) counts against a matmul
/// use in [`importance`]: a tied embedding table and LM head.
pub const GATHER_SHARE: f32 = 1.0;

/// Per-column importance of weight `i` for the quantizer: the mean over its uses of each use's
/// importance, normalised to mean 1. A `transpose_b` matmul or `linear` use whose input has
/// calibration statistics brings that input's `E[x_j²]` (the expected squared error of the
/// product is `Σ_j E[x_j²] (W_ij − Ŵ_ij)²`); a `gather` use (an embedding lookup) brings
/// uniform importance with weight [`GATHER_SHARE`]; any other use uniform importance. `None`
/// when no use has statistics.
pub fn importance(g: &Graph, i: usize, stats: &ActivationStats) -> Option<Vec<f32>> {
    let me = ValueRef::Weight(i as u32);
    let (_, cols) = rows_cols(g.weights[i].ty.shape.dims())?;
    let cols = cols as usize;
    let mut sum = vec![0f64; cols];
    let (mut uses, mut found) = (0f64, false);
    for n in &g.nodes {
        for (k, &a) in n.args.iter().enumerate() {
            if a != me {
                continue;
            }
            let (share, ms) = match (&n.op, k, n.args.first()) {
                (Op::MatMul { transpose_b: true } | Op::Linear { .. }, 1 | 2, Some(&ValueRef::Node(x))) => {
                    (1.0, stats.mean_square(x as usize))
                }
                (Op::Gather, 0, _) => (f64::from(GATHER_SHARE), None),
                _ => (1.0, None),
            };
            uses += share;
            let mean = ms.as_ref().map_or(0.0, |m| m.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64);
            match ms {
                Some(m) if m.len() == cols && mean > 0.0 && mean.is_finite() => {
                    found = true;
                    sum.iter_mut().zip(&m).for_each(|(s, &v)| *s += share * f64::from(v) / mean);
                }
                _ => sum.iter_mut().for_each(|s| *s += share),
            }
        }
    }
    (found && uses > 0.0).then(|| sum.into_iter().map(|s| (s / uses) as f32).collect())
}

/// For a permute that keeps the innermost axis (of `cols` elements) in place, the dims and
/// permutation of the rows (innermost axis dropped): it moves whole rows.
pub fn row_permutation_dims(t: &Transform, cols: u64) -> Option<(Vec<u64>, Vec<u32>)> {
    match t {
        Transform::Permute { dims, perm } => {
            let last = dims.len().checked_sub(1)?;
            (dims[last] == cols && perm.get(last) == Some(&(last as u32)))
                .then(|| (dims[..last].to_vec(), perm[..last].to_vec()))
        }
        Transform::Quantize(_) | Transform::Rows { .. } => None,
    }
}

/// Checks a weight's storage against its shape (for the verifier).
pub fn check_storage(storage: Storage, dims: &[Dim]) -> Result<(), String> {
    if storage == Storage::F32 {
        return Err("f32 is the default storage; drop the quantize".into());
    }
    let (rows, cols) = rows_cols(dims).ok_or("a stored weight must have a constant shape")?;
    storage.check_cols(cols)?;
    storage.bytes(rows, cols).ok_or("byte size overflows")?;
    Ok(())
}

/// The error a weight's stored bytes could not be produced with.
pub(crate) fn werr(name: &str, m: impl std::fmt::Display) -> IrError {
    IrError::new(format!("weight '{name}': {m}"))
}

#[cfg(test)]
mod preset_tests {
    use super::Preset;

    #[test]
    fn every_listed_preset_parses_back_to_its_name() {
        for name in Preset::NAMES.split(", ") {
            let p = Preset::from_name(name).unwrap_or_else(|| panic!("{name} is listed but does not parse"));
            assert_eq!(p.name(), name);
        }
        assert_eq!(Preset::from_name("q4s"), Some(Preset::Q4S));
    }
}
