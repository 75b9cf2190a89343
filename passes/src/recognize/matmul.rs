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
        };
        transposed.transforms.push(Transform::Permute { dims: vec![k, cols], perm: vec![1, 0] });
        let wt = cx.weight(&format!("{}.t", old.name), || transposed);
        let x = cx.map(x)?;
        cx.emit(Op::MatMul { transpose_b: true }, vec![x, wt]).map(Some)
    }
}
