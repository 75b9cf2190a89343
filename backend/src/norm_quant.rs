//! Norms that write int8-activation rows.
//!
//! An int8-activation matmul (`kernels/qdot.rs`) quantizes its f32 input rows itself, again in
//! every task. When every reader of a norm's result is such a matmul, the norm quantizes each
//! row once instead, in its own pass over the row (`kernels/norm.rs`), and the matmuls read the
//! codes and block records it wrote. The norm computes the same f32 values either way and the
//! quantizer is the same code, so results are bit-identical to the unfused pair.
//!
//! The result keeps its planned f32 buffer; quantized rows take 1.5 bytes per element of it
//! (`qdot::row_bytes`), so the plan needs no change.

use edgec_ir::{Graph, Op, ValueRef};

/// Per node, whether its kernel writes int8-activation rows: a whole-row `rms_norm` or a
/// `layer_norm`, not a graph output, read only as the `x` operand of `transpose_b` matmuls and
/// `linear`s whose weight is packed (`packed`: per graph weight, as `WeightsLayout::packed`;
/// a packed weight is read only by int8-activation matmuls).
pub fn quantized_norms(g: &Graph, packed: &[bool]) -> Vec<bool> {
    let mut fused: Vec<bool> =
        g.nodes.iter().map(|n| matches!(n.op, Op::RmsNorm { group: None, .. } | Op::LayerNorm { .. })).collect();
    for n in &g.nodes {
        let weight_packed =
            matches!(n.args.get(1), Some(ValueRef::Weight(w)) if packed.get(*w as usize) == Some(&true));
        let int8_matmul = matches!(n.op, Op::MatMul { transpose_b: true } | Op::Linear { .. }) && weight_packed;
        for (k, a) in n.args.iter().enumerate() {
            if let ValueRef::Node(j) = *a
                && !(int8_matmul && k == 0)
            {
                fused[j as usize] = false;
            }
        }
    }
    for o in &g.outputs {
        if let ValueRef::Node(j) = o.value {
            fused[j as usize] = false;
        }
    }
    fused
}
