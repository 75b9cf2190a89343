//! Weights pre-packed for the int8-activation matmul (`kernels/qdot.rs`).
//!
//! A packed `[N, K]` weight interleaves its rows (the matmul's output columns) four at a time,
//! so that one 16-byte load holds four columns' codes and each i32 lane of a dot product is
//! one column: decode needs no horizontal sums, and the per-block float work is shared by
//! four columns. Quads are taken two at a time (a *tile*, [`TILE_QUADS`]; the last one alone
//! when the rows are not a multiple of 8): a tile occupies exactly the bytes its rows occupy
//! unpacked, and holds its quads' packed groups alternately, group 0 of quad 0, group 0 of
//! quad 1, group 1 of quad 0, ... ([`quad_group_at`]), so the kernel reading both quads at
//! once reads one sequential stream. A quad's packed group of `G` elements (`q8_c`: per 32,
//! with no header) holds:
//!
//! - the four rows' headers, field by field: `d` of rows 0..4 (f16 each), then (`q4` with
//!   min) `m` of rows 0..4;
//! - then per 32 elements, the four rows' code bytes as 4-byte words, word-major: word `v` of
//!   row `j` at `16·v + 4·j`. A row's word `v` holds the same bytes as unpacked (`q8`:
//!   elements `4v..4v+4`; `q4`: the low nibbles elements `4v..4v+4`, the high ones
//!   `16+4v..16+4v+4`).
//!
//! `q8_c`'s row scales stay where they are, after the codes. Packing only moves bytes, so the
//! values (and the interpreter's view of the weight) are unchanged. Which weights are packed is
//! decided once, by [`packed_weights`], recorded in the weights layout, and read by the kernel
//! choice: a packed weight is read by `MatMulTI8` kernels and by `gather` (which unpacks its
//! one row), never by another kernel.

use crate::kernels::KernelSpec;
use edgec_ir::quant::Activations;
use edgec_ir::{Graph, Op, Storage, ValueRef};

/// Rows interleaved together.
pub(crate) const QUAD: u64 = 4;
/// Quads a tile of the int8 matmul reads together, interleaved group by group.
pub(crate) const TILE_QUADS: u64 = 2;

/// The storages the int8-activation matmul reads, packed.
pub(crate) fn packable(st: Storage) -> bool {
    matches!(st, Storage::Q8C | Storage::Q8G { .. } | Storage::Q4G { .. })
}

/// One group's shape in a packable storage: (elements, header bytes, code bytes per 32).
pub(crate) fn group_shape(st: Storage) -> (u64, u64, u64) {
    match st {
        Storage::Q8C => (32, 0, 32),
        Storage::Q8G { group } => (u64::from(group), 2, 32),
        Storage::Q4G { group, min } => (u64::from(group), if min { 4 } else { 2 }, 16),
        _ => (32, 0, 0),
    }
}

/// Byte offset, in a packed group, of header field `f` (`d`, then `m`) of the quad's row `j`.
pub(crate) fn field_at(f: u64, j: u64) -> u64 {
    2 * QUAD * f + 2 * j
}

/// Byte offset, in a packed group with `header` bytes and `sub` code bytes per 32 elements
/// (per row), of code word `v` of sub-block `s` of the quad's row `j`.
pub(crate) fn word_at(header: u64, sub: u64, s: u64, v: u64, j: u64) -> u64 {
    QUAD * (header + s * sub) + 16 * v + 4 * j
}

/// The stored weights each node reads (operand indices), for the nodes that may read packed
/// ones: matmul/linear weights and gather tables.
fn stored_operands(op: &Op) -> Vec<usize> {
    match op {
        Op::MatMul { transpose_b: true } => vec![1],
        Op::Linear { gated: true, .. } => vec![1, 2],
        Op::Linear { .. } => vec![1],
        Op::Gather => vec![0],
        _ => Vec::new(),
    }
}

/// Per graph weight, whether the weights file stores it packed: with int8 activations, a
/// decoder graph's weight in a packable storage with a whole number of quads, read only by
/// matmuls that have the int8-activation kernel (every stored operand of such a matmul packed
/// too) and by gathers. With f32 activations, none: every matmul dequantizes its weight.
pub(crate) fn packed_weights(g: &Graph, activations: Activations) -> Vec<bool> {
    if activations == Activations::F32 || crate::signature::check(g).is_err() {
        return vec![false; g.weights.len()];
    }
    let mut packed: Vec<bool> = g
        .weights
        .iter()
        .map(|w| {
            let rows = edgec_ir::quant::rows_cols(w.ty.shape.dims()).map(|(r, _)| r);
            packable(w.storage()) && rows.is_some_and(|r| r > 0 && r.is_multiple_of(QUAD))
        })
        .collect();
    // A weight read any other way stays in rows; a matmul with one unpacked stored operand
    // takes the other kernel, so its other operands stay in rows too. Repeat until stable.
    loop {
        let mut changed = false;
        for (i, node) in g.nodes.iter().enumerate() {
            let stored = stored_operands(&node.op);
            let weights: Vec<usize> = stored
                .iter()
                .filter_map(|&k| match node.args.get(k) {
                    Some(ValueRef::Weight(w)) => Some(*w as usize),
                    _ => None,
                })
                .collect();
            let ok = match &node.op {
                Op::Gather => true,
                _ => {
                    // Whether a twin exists does not depend on the tree it is built with.
                    KernelSpec::of_node(g, i).ok().is_some_and(|s| s.int8_twin(crate::kernels::Dot::Signed).is_some())
                        && weights.iter().all(|&w| packed[w])
                }
            };
            // Every other use of a weight (any operand index not listed) unpacks it.
            let other_uses = node.args.iter().enumerate().filter_map(|(k, a)| match a {
                ValueRef::Weight(w) if !stored.contains(&k) => Some(*w as usize),
                _ => None,
            });
            for w in other_uses.chain(weights.iter().copied().filter(|_| !ok)) {
                if packed[w] {
                    packed[w] = false;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Only weights some int8-activation matmul reads (a table only gathered stays in rows).
    let mut read_by_matmul = vec![false; g.weights.len()];
    for node in &g.nodes {
        if !matches!(node.op, Op::Gather) {
            for k in stored_operands(&node.op) {
                if let Some(ValueRef::Weight(w)) = node.args.get(k) {
                    read_by_matmul[*w as usize] = true;
                }
            }
        }
    }
    packed.iter().zip(read_by_matmul).map(|(&p, m)| p && m).collect()
}

/// Byte offset, in a packed weight of `rows` rows of `rb` bytes (groups of `gb` bytes), of
/// quad `quad`'s packed group `g`. The quads of a tile ([`TILE_QUADS`], the last tile maybe
/// fewer) occupy the bytes their rows occupy unpacked, and alternate group by group, so a tile
/// reads one sequential stream.
pub(crate) fn quad_group_at(rows: u64, rb: u64, gb: u64, quad: u64, g: u64) -> u64 {
    let first = quad / TILE_QUADS * TILE_QUADS;
    let quads = (rows / QUAD - first).min(TILE_QUADS);
    first * QUAD * rb + (g * quads + quad - first) * QUAD * gb
}

/// Rewrites the row-layout bytes of a `[rows, cols]` weight stored as `st` into the packed
/// layout, in place (`rows` a multiple of [`QUAD`], `bytes` exactly the stored tensor).
pub(crate) fn pack(st: Storage, rows: u64, cols: u64, bytes: &mut [u8]) -> Result<(), String> {
    let (group, header, sub) = group_shape(st);
    if !packable(st) || !rows.is_multiple_of(QUAD) || !cols.is_multiple_of(group) {
        return Err(format!("{} [{rows}, {cols}] cannot be packed", st.name()));
    }
    let rb = st.row_bytes(cols).ok_or("row size overflows")?;
    let codes_end = rb.checked_mul(rows).ok_or("size overflows")? as usize;
    if st.bytes(rows, cols) != Some(bytes.len() as u64) || codes_end > bytes.len() {
        return Err(format!("{} [{rows}, {cols}]: {} bytes is not the tensor's size", st.name(), bytes.len()));
    }
    let gb = header + group / 32 * sub;
    let groups = rb / gb;
    let tile_bytes = (TILE_QUADS * QUAD * rb) as usize;
    // One tile at a time: its rows' bytes are exactly the bytes its packed quads occupy.
    let mut tile = vec![0u8; tile_bytes];
    for (t, rows8) in bytes[..codes_end].chunks_mut(tile_bytes).enumerate() {
        let first = t as u64 * TILE_QUADS;
        let base = quad_group_at(rows, rb, gb, first, 0);
        let dst = &mut tile[..rows8.len()];
        for r in 0..rows8.len() as u64 / rb {
            let (quad, j) = (first + r / QUAD, r % QUAD);
            for g in 0..groups {
                let at = (quad_group_at(rows, rb, gb, quad, g) - base) as usize;
                let src = (r * rb + g * gb) as usize;
                for f in 0..header / 2 {
                    let to = at + field_at(f, j) as usize;
                    let from = src + 2 * f as usize;
                    dst[to..to + 2].copy_from_slice(&rows8[from..from + 2]);
                }
                for s in 0..group / 32 {
                    for v in 0..sub / 4 {
                        let to = at + word_at(header, sub, s, v, j) as usize;
                        let from = src + (header + s * sub + 4 * v) as usize;
                        dst[to..to + 4].copy_from_slice(&rows8[from..from + 4]);
                    }
                }
            }
        }
        rows8.copy_from_slice(dst);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing moves every byte exactly once, and the documented addresses hold the row
    /// layout's bytes.
    #[test]
    fn pack_is_the_documented_permutation() {
        for st in [
            Storage::Q8C,
            Storage::Q8G { group: 64 },
            Storage::Q4G { group: 32, min: false },
            Storage::Q4G { group: 128, min: true },
        ] {
            // One tile of two quads, then a quad alone.
            let (rows, cols) = (12u64, 256u64);
            let n = st.bytes(rows, cols).unwrap() as usize;
            // Distinct-enough bytes: position mod 251.
            let orig: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut p = orig.clone();
            pack(st, rows, cols, &mut p).unwrap();
            let mut a = orig.clone();
            let mut b = p.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "{}: a permutation", st.name());
            let (group, header, sub) = group_shape(st);
            let (group, header, sub) = (group as usize, header as usize, sub as usize);
            let rb = st.row_bytes(cols).unwrap() as usize;
            let gb = header + group / 32 * sub;
            for r in 0..rows as usize {
                let (quad, j) = (r / 4, r % 4);
                for g in 0..rb / gb {
                    let base = if quad < 2 { (g * 2 + quad) * 4 * gb } else { 8 * rb + g * 4 * gb };
                    let row = r * rb + g * gb;
                    if header >= 2 {
                        assert_eq!(p[base + 2 * j..base + 2 * j + 2], orig[row..row + 2], "{} d", st.name());
                    }
                    if header == 4 {
                        assert_eq!(p[base + 8 + 2 * j..base + 10 + 2 * j], orig[row + 2..row + 4], "{} m", st.name());
                    }
                    for s in 0..group / 32 {
                        for v in 0..sub / 4 {
                            let at = base + 4 * header + s * 4 * sub + 16 * v + 4 * j;
                            let from = row + header + s * sub + 4 * v;
                            assert_eq!(p[at..at + 4], orig[from..from + 4], "{} word", st.name());
                        }
                    }
                }
            }
            if st == Storage::Q8C {
                let at = Storage::q8c_scales_offset(rows, cols).unwrap() as usize;
                assert_eq!(p[at..], orig[at..], "q8_c scales stay");
            }
        }
    }

    #[test]
    fn pack_refuses_partial_quads_and_wrong_sizes() {
        let st = Storage::Q4G { group: 32, min: false };
        let mut b = vec![0u8; st.bytes(6, 64).unwrap() as usize];
        assert!(pack(st, 6, 64, &mut b).is_err());
        let mut b = vec![0u8; 10];
        assert!(pack(st, 4, 64, &mut b).is_err());
        assert!(pack(Storage::F16, 4, 64, &mut vec![0u8; 512]).is_err());
    }
}
