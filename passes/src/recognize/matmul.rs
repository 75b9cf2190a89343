//! Matmul weight layout: ONNX's `x @ W` with `W: [K, N]` becomes the `transpose_b` matmul over
//! `[N, K]` that checkpoints use, so the same kernels (and weight quantization, which stores
//! rows of `transpose_b` weights) apply.

use crate::rewrite::{Rewrite, Rule};
use edgec_ir::{IrError, Op, Shape, Transform, ValueRef, Weight};

pub struct WeightLayoutRule;

impl Rule for WeightLayoutRule {
    fn name(&self) -> &'static str {
        "matmul-weight-layout"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let (Op::MatMul { transpose_b: false }, &[x, ValueRef::Weight(w)]) = (&n.op, n.args.as_slice()) else {
            return Ok(None);
        };
        let old = &cx.old.weights[w as usize];
        let (Some(k), Some(cols)) = (old.ty.shape.dims()[0].as_const(), old.ty.shape.dims()[1].as_const()) else {
            return Ok(None);
        };
        if old.storage() != edgec_ir::Storage::F32 {
            return Ok(None);
        }
        let mut transposed = Weight {
            name: String::new(),
            ty: edgec_ir::TensorType::new(old.ty.dtype, Shape::of(&[cols, k])),
            source: old.source.clone(),
            transforms: old.transforms.clone(),
            importance: None,
        };
        transposed.transforms.push(Transform::Permute { dims: vec![k, cols], perm: vec![1, 0] });
        let wt = cx.weight(&format!("{}.t", old.name), || transposed);
        let x = cx.map(x)?;
        cx.emit(Op::MatMul { transpose_b: true }, vec![x, wt]).map(Some)
    }
}

/// A fused projection split into its parts: each last-axis `slice` of a `transpose_b` matmul
/// by a weight becomes a matmul by that slice's weight rows (a recorded `rows` transform), when
/// slices are all the matmul's result feeds. Phi-3's export multiplies by `qkv_proj` and
/// `gate_up_proj` once and slices; the checkpoint builder reads each part as its own weight,
/// and so the two compile to the same kernels (the parts then fuse as a GLU or launch together).
pub struct SplitFusedProjectionRule;

impl Rule for SplitFusedProjectionRule {
    fn name(&self) -> &'static str {
        "split-fused-projection"
    }

    fn apply(&self, cx: &mut Rewrite<'_>, root: u32) -> Result<Option<ValueRef>, IrError> {
        let n = &cx.old.nodes[root as usize];
        let (Op::Slice { axis: 1, start, len: edgec_ir::Dim::Const(len) }, &[m]) = (&n.op, n.args.as_slice()) else {
            return Ok(None);
        };
        let Some(mm) = cx.def_op(m, |op| matches!(op, Op::MatMul { transpose_b: true })) else { return Ok(None) };
        let (x, ValueRef::Weight(w)) = (mm.args[0], mm.args[1]) else { return Ok(None) };
        let old = &cx.old.weights[w as usize];
        let (Some(rows), Some(k)) = (old.ty.shape.dims()[0].as_const(), old.ty.shape.dims()[1].as_const()) else {
            return Ok(None);
        };
        if old.storage() != edgec_ir::Storage::F32 || !only_sliced_by_columns(cx, m) {
            return Ok(None);
        }
        let mut part = Weight {
            name: String::new(),
            ty: edgec_ir::TensorType::new(old.ty.dtype, Shape::of(&[*len, k])),
            source: old.source.clone(),
            transforms: old.transforms.clone(),
            importance: None,
        };
        part.transforms.push(Transform::Rows { rows, start: *start, len: *len });
        let wp = cx.weight(&format!("{}.rows{start}", old.name), || part);
        let x = cx.map(x)?;
        cx.emit(Op::MatMul { transpose_b: true }, vec![x, wp]).map(Some)
    }
}

/// Whether every use of `m` (a rank-2 value) is a `slice` of its columns.
fn only_sliced_by_columns(cx: &Rewrite<'_>, m: ValueRef) -> bool {
    let slices = cx
        .old
        .nodes
        .iter()
        .filter(|n| n.args.contains(&m))
        .all(|n| matches!(n.op, Op::Slice { axis: 1, len: edgec_ir::Dim::Const(_), .. }) && n.args.len() == 1);
    slices && !cx.old.outputs.iter().any(|o| o.value == m)
}
