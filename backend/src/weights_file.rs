//! The packed weights file: a 64-byte header, then every graph weight at a 64-aligned offset in
//! its storage format (little-endian f32 by default; f16, bf16, int8 or int4 blocks when the
//! weight records a `quantize`, laid out as `edgec_ir::quant` documents and the kernels stream
//! them). Written streaming, one weight materialized and quantized at a time.

use crate::error::BackendError;
use edgec_ir::Graph;
use edgec_ir::quant::Activations;
use edgec_runtime::abi::{ABI_VERSION, ALIGN, WEIGHTS_HEADER_SIZE, WEIGHTS_MAGIC, WeightsHeader};
use std::io::{Seek, SeekFrom, Write};

/// Where each weight lives in the weights file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsLayout {
    /// Per graph weight: byte offset from the file start, 64-aligned, after the header.
    pub offsets: Vec<u64>,
    /// Size of the whole file, header included (a multiple of 64).
    pub file_size: u64,
    /// Whether int8/int4-weight matmuls take int8 activations (`--activations`); it decides
    /// `packed`.
    pub activations: Activations,
    /// Per graph weight: stored with its rows interleaved for the int8-activation matmul
    /// (`pack.rs`); the kernels read what this says.
    pub packed: Vec<bool>,
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

fn weight_bytes(g: &Graph, i: usize) -> Result<u64, BackendError> {
    let w = &g.weights[i];
    let werr = |m: &str| BackendError::Weight { name: w.name.clone(), message: m.into() };
    if w.ty.dtype != edgec_ir::DType::F32 {
        return Err(werr("only f32 weights are supported"));
    }
    let mut n: u64 = 1;
    for d in w.ty.shape.dims() {
        let d = d.as_const().ok_or_else(|| werr("shape must be constant"))?;
        n = n.checked_mul(d).ok_or_else(|| werr("size overflows"))?;
    }
    let (rows, cols) = edgec_ir::quant::rows_cols(w.ty.shape.dims()).ok_or_else(|| werr("shape must be constant"))?;
    debug_assert_eq!(rows.checked_mul(cols), Some(n));
    w.storage().bytes(rows, cols).ok_or_else(|| werr("size overflows"))
}

/// What the writer did with one weight (for `--report`).
#[derive(Clone, Debug, PartialEq)]
pub struct WeightStat {
    pub name: String,
    pub storage: edgec_ir::Storage,
    pub elements: u64,
    pub bytes: u64,
    /// ‖W − Ŵ‖ / ‖W‖ of storing it (0 for f32, and for source blocks kept as they are).
    pub rel_error: f64,
    /// The source's bytes were kept (GGUF blocks, f16 tensors), not converted.
    pub kept: bool,
}

impl WeightStat {
    pub fn bits_per_weight(&self) -> f64 {
        if self.elements == 0 { 0.0 } else { self.bytes as f64 * 8.0 / self.elements as f64 }
    }
}

/// Lays every weight out in graph order, packed for `activations`.
pub fn layout_weights(g: &Graph, activations: Activations) -> Result<WeightsLayout, BackendError> {
    let mut at = WEIGHTS_HEADER_SIZE as u64;
    let mut offsets = Vec::with_capacity(g.weights.len());
    for i in 0..g.weights.len() {
        at = align_up(at);
        offsets.push(at);
        at += weight_bytes(g, i)?;
    }
    Ok(WeightsLayout {
        offsets,
        file_size: align_up(at),
        activations,
        packed: crate::pack::packed_weights(g, activations),
    })
}

/// Streams the weights file and returns its content hash: blake3 over the ABI version, the
/// layout description (names, dtypes, shapes, offsets, file size) and the payload bytes.
pub fn write_weights<W: Write + Seek>(
    g: &Graph,
    layout: &WeightsLayout,
    out: &mut W,
) -> Result<[u8; 32], BackendError> {
    write_weights_with_stats(g, layout, out, &mut |_| {}).map(|(h, _)| h)
}

/// [`write_weights`], also returning per weight its storage, size and quantization error, and
/// telling `on_weight` about each weight as soon as it is written (for a progress bar).
pub fn write_weights_with_stats<W: Write + Seek>(
    g: &Graph,
    layout: &WeightsLayout,
    out: &mut W,
    on_weight: &mut dyn FnMut(&WeightStat),
) -> Result<([u8; 32], Vec<WeightStat>), BackendError> {
    if layout.offsets.len() != g.weights.len() || layout.packed.len() != g.weights.len() {
        return Err(BackendError::Plan(format!(
            "weights layout has {} entries, graph has {} weights",
            layout.offsets.len(),
            g.weights.len()
        )));
    }
    let mut h = blake3::Hasher::new();
    h.update(b"edgec weights\0");
    h.update(&ABI_VERSION.to_le_bytes());
    h.update(&(g.weights.len() as u64).to_le_bytes());
    for ((w, off), &packed) in g.weights.iter().zip(&layout.offsets).zip(&layout.packed) {
        h.update(&(w.name.len() as u64).to_le_bytes());
        h.update(w.name.as_bytes());
        h.update(w.ty.dtype.name().as_bytes());
        if w.storage() != edgec_ir::Storage::F32 {
            // f32 weights hash as before, so unquantized outputs keep their hashes.
            h.update(b"\0storage ");
            h.update(w.storage().name().as_bytes());
        }
        if packed {
            h.update(b"\0packed");
        }
        h.update(&(w.ty.shape.rank() as u64).to_le_bytes());
        for d in w.ty.shape.dims() {
            h.update(&d.as_const().unwrap_or(u64::MAX).to_le_bytes());
        }
        h.update(&off.to_le_bytes());
    }
    h.update(&layout.file_size.to_le_bytes());

    let start = out.stream_position()?;
    out.write_all(&[0u8; WEIGHTS_HEADER_SIZE])?;
    let mut at = WEIGHTS_HEADER_SIZE as u64;
    let zeros = [0u8; ALIGN];
    let mut stats = Vec::with_capacity(g.weights.len());
    for (i, w) in g.weights.iter().enumerate() {
        let off = layout.offsets[i];
        let bytes = weight_bytes(g, i)?;
        if off < at || !off.is_multiple_of(ALIGN as u64) || off + bytes > layout.file_size {
            return Err(BackendError::Weight { name: w.name.clone(), message: format!("bad layout offset {off}") });
        }
        while at < off {
            let n = ((off - at) as usize).min(ALIGN);
            out.write_all(&zeros[..n])?;
            at += n as u64;
        }
        let mut stored = edgec_ir::weights::stored_bytes(w)
            .map_err(|e| BackendError::Weight { name: w.name.clone(), message: e.to_string() })?;
        if stored.bytes.len() as u64 != bytes {
            return Err(BackendError::Weight {
                name: w.name.clone(),
                message: format!("stored {} bytes, the layout needs {bytes}", stored.bytes.len()),
            });
        }
        if layout.packed[i] {
            let (rows, cols) = edgec_ir::quant::rows_cols(w.ty.shape.dims()).ok_or_else(|| BackendError::Weight {
                name: w.name.clone(),
                message: "shape must be constant".into(),
            })?;
            crate::pack::pack(stored.storage, rows, cols, &mut stored.bytes)
                .map_err(|message| BackendError::Weight { name: w.name.clone(), message })?;
        }
        h.update(&stored.bytes);
        out.write_all(&stored.bytes)?;
        at += bytes;
        let elements = edgec_ir::weights::weight_elements(w)
            .map_err(|e| BackendError::Weight { name: w.name.clone(), message: e.to_string() })?;
        stats.push(WeightStat {
            name: w.name.clone(),
            storage: stored.storage,
            elements,
            bytes,
            rel_error: stored.rel_error,
            kept: stored.kept,
        });
        if let Some(stat) = stats.last() {
            on_weight(stat);
        }
    }
    while at < layout.file_size {
        let n = ((layout.file_size - at) as usize).min(ALIGN);
        out.write_all(&zeros[..n])?;
        at += n as u64;
    }
    let hash: [u8; 32] = *h.finalize().as_bytes();
    let header = WeightsHeader {
        magic: WEIGHTS_MAGIC,
        abi_version: ABI_VERSION,
        header_size: WEIGHTS_HEADER_SIZE as u32,
        content_hash: hash,
        file_size: layout.file_size,
        reserved: 0,
    };
    out.seek(SeekFrom::Start(start))?;
    out.write_all(&header.to_bytes())?;
    out.seek(SeekFrom::Start(start + layout.file_size))?;
    out.flush()?;
    Ok((hash, stats))
}
