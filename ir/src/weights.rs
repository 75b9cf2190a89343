//! Materializing weights: turning a [`Weight`]'s source into its values.
//!
//! Used by the interpreter (weight by weight, on first use) and by whatever writes a weights file.
//! Only the weight's own byte range of a file is read.

use crate::IrError;
use crate::graph::{RopePart, RopeScaling, Weight, WeightSource};
use crate::types::{DType, Dim};
use std::io::{Read, Seek, SeekFrom};

/// The number of elements of a weight (its shape must be constant), with overflow checked.
pub fn weight_elements(w: &Weight) -> Result<u64, IrError> {
    w.ty.shape.0.iter().try_fold(1u64, |acc, d| match d {
        Dim::Const(n) => {
            acc.checked_mul(*n).ok_or_else(|| IrError::new(format!("weight '{}': element count overflows", w.name)))
        }
        Dim::Sym(_) => Err(IrError::new(format!("weight '{}': shape must be constant", w.name))),
    })
}

/// The weight's values as f32, row-major.
pub fn materialize_f32(w: &Weight) -> Result<Vec<f32>, IrError> {
    let elements = weight_elements(w)?;
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
            let bytes = elements
                .checked_mul(dtype.size())
                .and_then(|b| usize::try_from(b).ok())
                .ok_or_else(|| fail("byte size overflows".into()))?;
            let mut file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
            file.seek(SeekFrom::Start(*offset)).map_err(|e| fail(format!("cannot seek to {offset}: {e}")))?;
            let mut buf = Vec::new();
            buf.try_reserve_exact(bytes).map_err(|_| fail(format!("cannot allocate {bytes} bytes")))?;
            let read = file.take(bytes as u64).read_to_end(&mut buf).map_err(|e| fail(format!("cannot read: {e}")))?;
            if read != bytes {
                return Err(fail(format!("file too short: wanted {bytes} bytes at offset {offset}, got {read}")));
            }
            decode_le(&buf, *dtype).map_err(fail)
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
    })
}
