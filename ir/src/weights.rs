//! Materializing weights: turning a [`Weight`]'s source into its values.
//!
//! Used by the interpreter (weight by weight, on first use) and by whatever writes a weights file.
//! Only the weight's own byte range of a file is read.

use crate::IrError;
use crate::graph::{BlockFormat, RopePart, RopeScaling, Transform, Weight, WeightSource};
use crate::quant::{Storage, werr};
use crate::types::{DType, Dim};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The number of elements of a weight (its shape must be constant), with overflow checked.
pub fn weight_elements(w: &Weight) -> Result<u64, IrError> {
    w.ty.shape.0.iter().try_fold(1u64, |acc, d| match d {
        Dim::Const(n) => {
            acc.checked_mul(*n).ok_or_else(|| IrError::new(format!("weight '{}': element count overflows", w.name)))
        }
        Dim::Sym(_) => Err(IrError::new(format!("weight '{}': shape must be constant", w.name))),
    })
}

/// How many values the weight's source holds: its element count before a [`Transform::Rows`]
/// keeps part of them.
pub fn source_elements(w: &Weight) -> Result<u64, IrError> {
    let mut n = weight_elements(w)?;
    for t in w.transforms.iter().rev() {
        if let Transform::Rows { rows, len, .. } = *t {
            n = (len > 0 && n % len == 0)
                .then(|| (n / len).checked_mul(rows))
                .flatten()
                .ok_or_else(|| werr(&w.name, format!("rows transform keeps {len} of {rows} rows, not {n} values")))?;
        }
    }
    Ok(n)
}

/// The weight's values as f32, row-major: its source, then its transforms in order. A weight
/// with a `quantize` storage yields the values its stored bytes dequantize to, exactly what the
/// kernels read.
pub fn materialize_f32(w: &Weight) -> Result<Vec<f32>, IrError> {
    let storage = w.storage();
    if storage != Storage::F32 {
        let stored = stored_bytes(w)?;
        let (rows, cols) = shape_rows_cols(w)?;
        return crate::quant::decode(storage, rows, cols, &stored.bytes).map_err(|m| werr(&w.name, m));
    }
    value_f32(w)
}

/// Source then value transforms (not a trailing `quantize`).
fn value_f32(w: &Weight) -> Result<Vec<f32>, IrError> {
    let values = source_f32(w)?;
    let ts = w.value_transforms();
    if ts.is_empty() {
        return Ok(values);
    }
    apply_transforms(&values, ts).map_err(|m| werr(&w.name, m))
}

fn shape_rows_cols(w: &Weight) -> Result<(u64, u64), IrError> {
    crate::quant::rows_cols(w.ty.shape.dims()).ok_or_else(|| werr(&w.name, "shape must be constant"))
}

/// A weight's bytes as the weights file stores them.
#[derive(Clone, Debug)]
pub struct Stored {
    pub storage: Storage,
    pub bytes: Vec<u8>,
    /// ‖W − Ŵ‖ / ‖W‖ between the values before storing and those the bytes decode to; 0 when
    /// the source's bytes were kept as they are (GGUF blocks, f16 tensors).
    pub rel_error: f64,
    /// The source's bytes were copied (rows possibly reordered), not converted.
    pub kept: bool,
}

/// The weight's bytes in its storage format ([`Weight::storage`]), one tensor at a time. When
/// the source already holds that format (GGUF blocks, f16/bf16 files) and the transforms only
/// reorder whole rows, the source's rows are copied without dequantizing; otherwise the values
/// are materialized and quantized.
pub fn stored_bytes(w: &Weight) -> Result<Stored, IrError> {
    let storage = w.storage();
    let (rows, cols) = shape_rows_cols(w)?;
    // Q4_K's sub-blocks of 32 are Q4_1 blocks (scale and min) under its super-block scales:
    // regridded block by block, only rounding each product of scales to f16.
    let q4k_as_q4_1 = matches!(w.source, WeightSource::Blocks { format: BlockFormat::Q4K, .. });
    let src_storage = match &w.source {
        WeightSource::Blocks { .. } if q4k_as_q4_1 => Some(Storage::Q4G { group: 32, min: true }),
        WeightSource::Blocks { format, .. } => Storage::from_block(*format),
        WeightSource::File { dtype: DType::F32, .. } => Some(Storage::F32),
        WeightSource::File { dtype: DType::F16, .. } => Some(Storage::F16),
        WeightSource::File { dtype: DType::BF16, .. } => Some(Storage::BF16),
        _ => None,
    };
    let row_perms: Option<Vec<(Vec<u64>, Vec<u32>)>> =
        w.value_transforms().iter().map(|t| crate::quant::row_permutation_dims(t, cols)).collect();
    if let (Some(src), Some(perms)) = (src_storage, row_perms)
        && src == storage
        && storage != Storage::Q8C
        && storage.check_cols(cols).is_ok()
    {
        let (path, offset) = match &w.source {
            WeightSource::Blocks { path, offset, .. } | WeightSource::File { path, offset, .. } => (path, *offset),
            _ => unreachable!(),
        };
        let fail = |what: String| IrError::new(format!("weight '{}' in {}: {what}", w.name, path.display()));
        let rb = storage.row_bytes(cols).ok_or_else(|| fail("byte size overflows".into()))? as usize;
        let total = storage
            .bytes(rows, cols)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| fail("byte size overflows".into()))?;
        let (mut bytes, rel_error) = if q4k_as_q4_1 {
            let len = rows
                .checked_mul(cols)
                .and_then(|n| BlockFormat::Q4K.bytes_for(n))
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| fail(format!("rows of {cols} are not whole Q4_K blocks")))?;
            let k = read_range(path, offset, len, &fail)?;
            let q = q4_k_to_q4_1(&k);
            let mut exact = Vec::new();
            dequantize_blocks(BlockFormat::Q4K, &k, &mut exact).map_err(&fail)?;
            let back = crate::quant::decode(storage, rows, cols, &q).map_err(&fail)?;
            (q, Some(crate::quant::relative_error(&exact, &back)))
        } else {
            (read_range(path, offset, total, &fail)?, None)
        };
        if !perms.is_empty() {
            let mut order: Vec<u32> = (0..rows as u32).collect();
            for (dims, perm) in &perms {
                check_transforms(rows, &[Transform::Permute { dims: dims.clone(), perm: perm.clone() }])
                    .map_err(|m| werr(&w.name, m))?;
                order = permute(&order, dims, perm);
            }
            let src = bytes;
            bytes = Vec::with_capacity(total);
            for &r in &order {
                bytes.extend_from_slice(&src[r as usize * rb..(r as usize + 1) * rb]);
            }
        }
        let kept = rel_error.is_none();
        return Ok(Stored { storage, bytes, rel_error: rel_error.unwrap_or(0.0), kept });
    }
    let mut enc =
        crate::quant::RowEncoder::new(storage, cols, w.importance.as_deref()).map_err(|m| werr(&w.name, m))?;
    let streamed =
        w.value_transforms().is_empty() && matches!(w.source, WeightSource::File { .. } | WeightSource::Blocks { .. });
    if streamed {
        // A block of rows at a time: a large matrix (an 8B model's 2 GB f32 embedding table)
        // is never whole in memory.
        let block = (STREAM_VALUES / cols.max(1)).max(1);
        let mut r = 0;
        while r < rows {
            let n = block.min(rows - r);
            enc.push(&source_rows_f32(w, r, n, cols)?).map_err(|m| werr(&w.name, m))?;
            r += n;
        }
    } else {
        enc.push(&value_f32(w)?).map_err(|m| werr(&w.name, m))?;
    }
    let (bytes, rel_error) = enc.finish().map_err(|m| werr(&w.name, m))?;
    Ok(Stored { storage, bytes, rel_error, kept: false })
}

/// Values converted at a time when a weight is streamed from its file (64 MB of f32).
const STREAM_VALUES: u64 = 1 << 24;

/// Rows `first..first + n` of an untransformed file or block source, as f32.
fn source_rows_f32(w: &Weight, first: u64, n: u64, cols: u64) -> Result<Vec<f32>, IrError> {
    let (path, offset, row_bytes, blocks) = match &w.source {
        WeightSource::File { path, offset, dtype } => (path, *offset, dtype.bytes(cols, cols), None),
        WeightSource::Blocks { path, offset, format } => (path, *offset, format.bytes_for(cols), Some(*format)),
        _ => return Err(werr(&w.name, "only file sources stream by rows")),
    };
    let fail = |what: String| IrError::new(format!("weight '{}' in {}: {what}", w.name, path.display()));
    if let Some(f) = blocks.filter(|f| !cols.is_multiple_of(f.block())) {
        return Err(fail(format!("rows of {cols} elements are not whole blocks of {}", f.block())));
    }
    let overflow = || fail("byte size overflows".into());
    let row_bytes = row_bytes.ok_or_else(overflow)?;
    let at = first.checked_mul(row_bytes).and_then(|b| b.checked_add(offset)).ok_or_else(overflow)?;
    let len = n.checked_mul(row_bytes).and_then(|b| usize::try_from(b).ok()).ok_or_else(overflow)?;
    let buf = read_range(path, at, len, &fail)?;
    match (&w.source, blocks) {
        (WeightSource::File { dtype, .. }, _) => decode_le(&buf, *dtype).map_err(fail),
        (_, Some(format)) => {
            let mut out = Vec::new();
            dequantize_blocks(format, &buf, &mut out).map_err(fail)?;
            Ok(out)
        }
        _ => Err(fail("not a file source".into())),
    }
}

/// Checks that `transforms` apply to `elements` values: each permutation's dims multiply to
/// the element count and its `perm` is a permutation of its axes; a row range lies inside
/// whole rows. Returns the element count they leave.
pub fn check_transforms(elements: u64, transforms: &[Transform]) -> Result<u64, String> {
    let mut elements = elements;
    for (i, t) in transforms.iter().enumerate() {
        match t {
            Transform::Quantize(_) => {
                if i + 1 != transforms.len() {
                    return Err("quantize must be the last transform".into());
                }
            }
            Transform::Permute { dims, perm } => {
                let product = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
                if product != Some(elements) {
                    return Err(format!(
                        "permute dims {dims:?} hold {} elements, the weight has {elements}",
                        product.map_or("too many".to_string(), |p| p.to_string())
                    ));
                }
                let mut seen = vec![false; dims.len()];
                if perm.len() != dims.len()
                    || !perm.iter().all(|&p| seen.get_mut(p as usize).is_some_and(|s| !std::mem::replace(s, true)))
                {
                    return Err(format!("permute perm {perm:?} is not a permutation of {} axes", dims.len()));
                }
            }
            Transform::Rows { rows, start, len } => {
                let inside = start.checked_add(*len).is_some_and(|end| end <= *rows);
                if *rows == 0 || *len == 0 || !elements.is_multiple_of(*rows) || !inside {
                    return Err(format!("rows {start}..{} of {rows} do not fit {elements} values", start + len));
                }
                elements = elements / rows * len;
            }
        }
    }
    Ok(elements)
}

/// Applies `transforms` to row-major `values`, in order.
pub fn apply_transforms(values: &[f32], transforms: &[Transform]) -> Result<Vec<f32>, String> {
    check_transforms(values.len() as u64, transforms)?;
    let mut cur = values.to_vec();
    for t in transforms {
        match t {
            Transform::Permute { dims, perm } => cur = permute(&cur, dims, perm),
            Transform::Rows { rows, start, len } => {
                let cols = cur.len() / *rows as usize;
                cur = cur[*start as usize * cols..(start + len) as usize * cols].to_vec();
            }
            Transform::Quantize(s) => {
                return Err(format!("quantize {} needs the weight's shape (use materialize_f32)", s.name()));
            }
        }
    }
    Ok(cur)
}

/// `values` viewed as row-major `dims`, axes permuted by `perm` (checked by the caller).
fn permute<T: Copy>(values: &[T], dims: &[u64], perm: &[u32]) -> Vec<T> {
    let rank = dims.len();
    // Strides of the input view, and the output's dims and their input strides.
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * dims[i + 1] as usize;
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p as usize] as usize).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p as usize]).collect();
    let mut out = Vec::with_capacity(values.len());
    let mut idx = vec![0usize; rank];
    let mut src = 0usize;
    for _ in 0..values.len() {
        out.push(values[src]);
        // Advance the output index (row-major), keeping `src` in step.
        for a in (0..rank).rev() {
            idx[a] += 1;
            src += strides[a];
            if idx[a] < out_dims[a] {
                break;
            }
            src -= strides[a] * idx[a];
            idx[a] = 0;
        }
    }
    out
}

/// Dequantizes whole blocks of `format` (`bytes.len()` a multiple of the block size) into f32,
/// as ggml's reference `dequantize_row_q8_0`, `_q4_0` and `_q4_1` define it: f16 scales
/// widened to f32, then `q * d` (Q4_0: `(q - 8) * d`) or `q * d + m` per element.
pub fn dequantize_blocks(format: BlockFormat, bytes: &[u8], out: &mut Vec<f32>) -> Result<(), String> {
    let bb = format.block_bytes() as usize;
    if bytes.len() % bb != 0 {
        return Err(format!("{} bytes are not whole {} blocks of {bb} bytes", bytes.len(), format.name()));
    }
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    for block in bytes.chunks_exact(bb) {
        match format {
            BlockFormat::Q8_0 => {
                let d = f16(&block[0..2]);
                out.extend(block[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
            BlockFormat::Q4_0 => {
                let d = f16(&block[0..2]);
                let qs = &block[2..18];
                out.extend(qs.iter().map(|&q| f32::from((q & 0x0f) as i8 - 8) * d));
                out.extend(qs.iter().map(|&q| f32::from((q >> 4) as i8 - 8) * d));
            }
            BlockFormat::Q4_1 => {
                let (d, m) = (f16(&block[0..2]), f16(&block[2..4]));
                let qs = &block[4..20];
                out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
                out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
            }
            // ggml's dequantize_row_q4_K / q5_K: 4 pairs of sub-blocks, each pair 32 bytes of
            // nibbles (low nibbles the first sub-block, high the second), Q5_K's fifth bits
            // from `qh`, bit 2i and 2i + 1 for pair i.
            BlockFormat::Q4K | BlockFormat::Q5K => {
                let (d, dmin) = (f16(&block[0..2]), f16(&block[2..4]));
                let scales = &block[4..16];
                let (qh, qs) = if format == BlockFormat::Q5K {
                    (&block[16..48], &block[48..176])
                } else {
                    (&[][..], &block[16..144])
                };
                for pair in 0..4 {
                    let q = &qs[32 * pair..32 * pair + 32];
                    for half in 0..2 {
                        let (sc, m) = scale_min_k4(2 * pair + half, scales);
                        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
                        let bit = 1u8 << (2 * pair + half);
                        out.extend(q.iter().enumerate().map(|(l, &b)| {
                            let nib = if half == 0 { b & 0x0f } else { b >> 4 };
                            let high = if qh.is_empty() || qh[l] & bit == 0 { 0 } else { 16 };
                            d1 * f32::from(nib + high) - m1
                        }));
                    }
                }
            }
            // ggml's dequantize_row_q6_K: two halves of 128, each from 64 `ql` and 32 `qh` bytes
            // and 8 scales.
            BlockFormat::Q6K => {
                let (ql, qh, sc) = (&block[0..128], &block[128..192], &block[192..208]);
                let d = f16(&block[208..210]);
                for n in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = [
                            (ql[l] & 0x0f) | (qh[l] & 3) << 4,
                            (ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4,
                            (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4,
                            (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4,
                        ];
                        for (k, &q) in q.iter().enumerate() {
                            let s = f32::from(sc[is + 2 * k] as i8);
                            y[l + 32 * k] = d * s * f32::from(q as i8 - 32);
                        }
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
    }
    Ok(())
}

/// Q4_K blocks as Q4_1 blocks (`q4_g32`): sub-block `j` of a super-block with `d`, `dmin`
/// and 6-bit `sc`, `m` is `q * (d·sc) − dmin·m`, i.e. Q4_1 with `d' = d·sc` and `m' = −dmin·m`
/// rounded to f16, and the same nibbles (Q4_K keeps a pair of sub-blocks as the low and high
/// nibbles of 32 bytes; Q4_1 a block's first 16 elements in the low nibbles of its 16 bytes).
fn q4_k_to_q4_1(k: &[u8]) -> Vec<u8> {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(k.len() / 144 * 160);
    for block in k.chunks_exact(144) {
        let (d, dmin, scales, qs) = (f16(&block[0..2]), f16(&block[2..4]), &block[4..16], &block[16..144]);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, scales);
            out.extend(half::f16::from_f32(d * f32::from(sc)).to_le_bytes());
            out.extend(half::f16::from_f32(-(dmin * f32::from(m))).to_le_bytes());
            let pair = &qs[32 * (j / 2)..32 * (j / 2) + 32];
            let nib = |b: u8| if j % 2 == 0 { b & 0x0f } else { b >> 4 };
            out.extend((0..16).map(|i| nib(pair[i]) | nib(pair[i + 16]) << 4));
        }
    }
    out
}

/// Sub-block `j`'s 6-bit scale and min in a K-quant block's 12 packed bytes (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Reads `bytes` bytes at `offset` of `path`; `fail` words the error.
fn read_range(path: &Path, offset: u64, bytes: usize, fail: &dyn Fn(String) -> IrError) -> Result<Vec<u8>, IrError> {
    let mut file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| fail(format!("cannot seek to {offset}: {e}")))?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(bytes).map_err(|_| fail(format!("cannot allocate {bytes} bytes")))?;
    let read = file.take(bytes as u64).read_to_end(&mut buf).map_err(|e| fail(format!("cannot read: {e}")))?;
    if read != bytes {
        return Err(fail(format!("file too short: wanted {bytes} bytes at offset {offset}, got {read}")));
    }
    Ok(buf)
}

/// The source's values as f32, before transforms.
fn source_f32(w: &Weight) -> Result<Vec<f32>, IrError> {
    let elements = source_elements(w)?;
    let n = usize::try_from(elements)
        .map_err(|_| IrError::new(format!("weight '{}': {elements} elements do not fit in memory", w.name)))?;
    match &w.source {
        WeightSource::Literal(values) => {
            if values.len() != n {
                return Err(IrError::new(format!(
                    "weight '{}': literal has {} values, shape needs {n}",
                    w.name,
                    values.len()
                )));
            }
            Ok(values.clone())
        }
        WeightSource::File { path, offset, dtype } => {
            let fail = |what: String| IrError::new(format!("weight '{}' in {}: {what}", w.name, path.display()));
            let bytes = dtype
                .bytes(elements, 1)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| fail("byte size overflows".into()))?;
            let buf = read_range(path, *offset, bytes, &fail)?;
            decode_le(&buf, *dtype).map_err(fail)
        }
        WeightSource::Blocks { path, offset, format } => {
            let fail = |what: String| IrError::new(format!("weight '{}' in {}: {what}", w.name, path.display()));
            let innermost = w.ty.shape.last().and_then(|d| d.as_const()).unwrap_or(1);
            if !innermost.is_multiple_of(format.block()) {
                return Err(fail(format!(
                    "{} rows of {innermost} elements are not whole blocks of {}",
                    format.name(),
                    format.block()
                )));
            }
            let bytes = format
                .bytes_for(elements)
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| fail("byte size overflows".into()))?;
            let buf = read_range(path, *offset, bytes, &fail)?;
            let mut out = Vec::new();
            out.try_reserve_exact(n).map_err(|_| fail(format!("cannot allocate {n} values")))?;
            dequantize_blocks(*format, &buf, &mut out).map_err(fail)?;
            Ok(out)
        }
        WeightSource::Rope { part, theta, rotary_dim, scaling } => {
            let dims = &w.ty.shape.0;
            let (positions, width) = match dims.as_slice() {
                [Dim::Const(p), Dim::Const(h)] => (*p, *h),
                _ => {
                    return Err(IrError::new(format!(
                        "weight '{}': a rope table must be [positions, rotary_dim / 2]",
                        w.name
                    )));
                }
            };
            if *rotary_dim == 0 || rotary_dim % 2 != 0 || u64::from(rotary_dim / 2) != width {
                return Err(IrError::new(format!(
                    "weight '{}': rotary_dim {rotary_dim} does not match table width {width}",
                    w.name
                )));
            }
            let inv = rope_inv_freq(*theta, *rotary_dim, scaling);
            let mut out = Vec::new();
            out.try_reserve_exact(n)
                .map_err(|_| IrError::new(format!("weight '{}': cannot allocate {n} values", w.name)))?;
            for p in 0..positions {
                for &f in &inv {
                    let angle = p as f64 * f;
                    out.push(match part {
                        RopePart::Cos => angle.cos() as f32,
                        RopePart::Sin => angle.sin() as f32,
                    });
                }
            }
            Ok(out)
        }
    }
}

/// The rotary inverse frequencies `[rotary_dim / 2]`, as HuggingFace transformers computes them
/// (`_compute_default_rope_parameters`, `_compute_llama3_parameters`), in f64.
pub fn rope_inv_freq(theta: f64, rotary_dim: u32, scaling: &RopeScaling) -> Vec<f64> {
    let half = rotary_dim / 2;
    let base: Vec<f64> = (0..half).map(|i| 1.0 / theta.powf(f64::from(2 * i) / f64::from(rotary_dim))).collect();
    match *scaling {
        RopeScaling::None => base,
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
            let old = original_max_positions as f64;
            let low_freq_wavelen = old / low_freq_factor;
            let high_freq_wavelen = old / high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen > low_freq_wavelen {
                        f / factor
                    } else if wavelen < high_freq_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// Little-endian elements of `dtype` to f32.
fn decode_le(buf: &[u8], dtype: DType) -> Result<Vec<f32>, String> {
    Ok(match dtype {
        DType::F32 => buf.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::F16 => buf.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::BF16 => buf.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        DType::I32 => buf.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        DType::I64 => buf
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        DType::Q8 => return Err("q8 is a KV state dtype, not a file's".into()),
    })
}
