//! Lowering of ONNX's neural-network ops that have no IR op of their own: activations
//! (HardSigmoid, HardSwish, LeakyRelu), the norms over several trailing axes
//! (RMSNormalization, LayerNormalization with its Mean/InvStdDev outputs) and integer Pow.
//! Each follows onnx's reference implementation (`onnx/reference/ops/op_*.py`) step by step,
//! so it rounds where the reference rounds.

use super::{Importer, input};
use crate::onnx::fold::{self, R, attr_f, attr_i, norm_axis};
use crate::onnx::proto::NodeProto;
use edgec_ir::{BinaryOp, DType, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueRef, WeightSource};

/// One shape per probe.
type Shapes = Vec<Vec<usize>>;

impl Importer<'_> {
    pub(super) fn bin(&mut self, op: BinaryOp, a: ValueRef, b: ValueRef) -> R<ValueRef> {
        self.add(Op::Binary(op), vec![a, b])
    }

    pub(super) fn un(&mut self, op: UnaryOp, a: ValueRef) -> R<ValueRef> {
        self.add(Op::Unary(op), vec![a])
    }

    /// HardSigmoid, HardSwish and LeakyRelu as min/max/select over scalar constants.
    pub(super) fn activation(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        match n.op_type.as_str() {
            "LeakyRelu" => {
                // where(x > 0, x, x * alpha): exact, like the reference's x * (0/1 or alpha).
                let (zero, alpha) = (self.scalar(0.0), self.scalar(attr_f(n, "alpha", 0.01)?));
                let pos = self.bin(BinaryOp::Gt, x, zero)?;
                let neg = self.bin(BinaryOp::Mul, x, alpha)?;
                self.add(Op::Select, vec![pos, x, neg])
            }
            "HardSigmoid" => self.hard_sigmoid(x, attr_f(n, "alpha", 0.2)?, attr_f(n, "beta", 0.5)?),
            _ => {
                // HardSwish is x * HardSigmoid(x) with alpha 1/6 and beta 1/2.
                let h = self.hard_sigmoid(x, 1.0 / 6.0, 0.5)?;
                self.bin(BinaryOp::Mul, x, h)
            }
        }
    }

    /// max(0, min(1, x * alpha + beta)).
    fn hard_sigmoid(&mut self, x: ValueRef, alpha: f32, beta: f32) -> R<ValueRef> {
        let (a, b, zero, one) = (self.scalar(alpha), self.scalar(beta), self.scalar(0.0), self.scalar(1.0));
        let ax = self.bin(BinaryOp::Mul, x, a)?;
        let y = self.bin(BinaryOp::Add, ax, b)?;
        let y = self.bin(BinaryOp::Min, y, one)?;
        self.bin(BinaryOp::Max, y, zero)
    }

    /// Pow with an integer base: computed in f32 and converted back like numpy's
    /// `power(a, b).astype(a.dtype)` (truncation), except that a result within f32 pow's error
    /// of an integer is that integer (the kernel's pow may land just below it).
    pub(super) fn int_pow(&mut self, x: ValueRef, e: ValueRef) -> R<ValueRef> {
        let xf = self.add(Op::Cast { to: DType::F32 }, vec![x])?;
        let ef =
            if self.g.type_of(e).dtype == DType::I32 { self.add(Op::Cast { to: DType::F32 }, vec![e])? } else { e };
        let p = self.bin(BinaryOp::Pow, xf, ef)?;
        // Nearest integer: truncate p ± 0.5.
        let (zero, half, mhalf) = (self.scalar(0.0), self.scalar(0.5), self.scalar(-0.5));
        let neg = self.bin(BinaryOp::Lt, p, zero)?;
        let off = self.add(Op::Select, vec![neg, mhalf, half])?;
        let shifted = self.bin(BinaryOp::Add, p, off)?;
        let nearest = self.add(Op::Cast { to: DType::I32 }, vec![shifted])?;
        let truncated = self.add(Op::Cast { to: DType::I32 }, vec![p])?;
        // |p - nearest| <= 1e-5 * max(1, |p|) counts as integral.
        let nf = self.add(Op::Cast { to: DType::F32 }, vec![nearest])?;
        let d = self.bin(BinaryOp::Sub, p, nf)?;
        let d = self.un(UnaryOp::Abs, d)?;
        let (one, tol) = (self.scalar(1.0), self.scalar(1e-5));
        let mag = self.un(UnaryOp::Abs, p)?;
        let mag = self.bin(BinaryOp::Max, mag, one)?;
        let bound = self.bin(BinaryOp::Mul, mag, tol)?;
        let far = self.bin(BinaryOp::Gt, d, bound)?;
        self.add(Op::Select, vec![far, truncated, nearest])
    }

    /// The dims from `axis` on, per probe, and the rows/columns the norm sees.
    fn norm_split(&mut self, x: ValueRef, axis_attr: i64) -> R<(usize, Shapes, Shapes)> {
        let shapes = self.shapes_of(x);
        let r = shapes[0].len();
        let axis = norm_axis(axis_attr, r)?;
        let rows = shapes.iter().map(|s| vec![fold::numel(&s[..axis]), fold::numel(&s[axis..])]).collect();
        Ok((axis, shapes, rows))
    }

    /// A norm's scale or bias as the `[H]` vector of the flattened normalized axes: broadcast to
    /// them first when it is smaller (ONNX allows any shape broadcastable to them).
    fn norm_param(&mut self, v: ValueRef, normalized: &[usize]) -> R<ValueRef> {
        let s = self.shapes_of(v);
        if s.iter().any(|s| s.len() > normalized.len()) {
            return Err(format!(
                "a scale or bias of shape {:?} does not broadcast to the normalized axes {normalized:?}",
                s[0]
            ));
        }
        let target = fold::broadcast(&s[0], normalized)?;
        if target != normalized {
            return Err(format!(
                "a scale or bias of shape {:?} does not broadcast to the normalized axes {normalized:?}",
                s[0]
            ));
        }
        let v = if s[0] != normalized {
            let dims: Vec<u64> = normalized.iter().map(|&d| d as u64).collect();
            self.add(Op::Expand { shape: Shape::of(&dims) }, vec![v])?
        } else {
            v
        };
        let h = fold::numel(normalized);
        self.reshape(v, &vec![vec![h]; self.nprobes()])
    }

    /// The normalized axes' dims, which must not depend on the symbols.
    fn normalized_dims(shapes: &[Vec<usize>], axis: usize) -> R<Vec<usize>> {
        let d = shapes[0][axis..].to_vec();
        if shapes.iter().any(|s| s[axis..] != d[..]) {
            return Err("normalizing over a symbolic axis is not supported".into());
        }
        Ok(d)
    }

    /// RMSNormalization (opset 23) over the axes from `axis` on: the IR's `rms_norm` over the
    /// flattened rows.
    pub(super) fn rms_normalization(&mut self, n: &NodeProto) -> R<ValueRef> {
        Self::stash_type(n)?;
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let (axis, shapes, rows) = self.norm_split(x, attr_i(n, "axis", -1)?)?;
        let normalized = Self::normalized_dims(&shapes, axis)?;
        let scale = self.operand(input(n, 1).ok_or("missing scale")?)?;
        let scale = self.norm_param(scale, &normalized)?;
        let x2 = self.reshape(x, &rows)?;
        let y = self.add(Op::RmsNorm { eps: attr_f(n, "epsilon", 1e-5)?, group: None }, vec![x2, scale])?;
        self.reshape(y, &shapes)
    }

    /// Only stash_type 1 (float32 statistics), the one the reference implements.
    fn stash_type(n: &NodeProto) -> R<()> {
        match attr_i(n, "stash_type", 1)? {
            1 => Ok(()),
            s => Err(format!("stash_type {s} is not supported (only 1, float32 statistics)")),
        }
    }

    /// LayerNormalization over the axes from `axis` on (the IR's `layer_norm` over the flattened
    /// rows), with its optional Mean and InvStdDev outputs computed like the reference.
    pub(super) fn layer_normalization(&mut self, n: &NodeProto) -> R<()> {
        Self::stash_type(n)?;
        let out = n.output.first().cloned().unwrap_or_default();
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let (axis, shapes, rows) = self.norm_split(x, attr_i(n, "axis", -1)?)?;
        let normalized = Self::normalized_dims(&shapes, axis)?;
        let h = fold::numel(&normalized);
        let x2 = self.reshape(x, &rows)?;
        let scale = self.operand(input(n, 1).ok_or("missing scale")?)?;
        let scale = self.norm_param(scale, &normalized)?;
        let bias = match input(n, 2) {
            Some(b) => {
                let b = self.operand(b)?;
                self.norm_param(b, &normalized)?
            }
            None => {
                let name = self.unique(&format!("{out}.zero_bias"));
                self.g.add_weight(
                    name,
                    TensorType::new(DType::F32, Shape::of(&[h as u64])),
                    WeightSource::Literal(vec![0.0; h]),
                )
            }
        };
        let eps = attr_f(n, "epsilon", 1e-5)?;
        let y = self.add(Op::LayerNorm { eps }, vec![x2, scale, bias])?;
        let y = self.reshape(y, &shapes)?;
        self.set(&out, super::Val::Dyn(y));
        let (mean_out, inv_out) =
            (n.output.get(1).filter(|o| !o.is_empty()), n.output.get(2).filter(|o| !o.is_empty()));
        if mean_out.is_none() && inv_out.is_none() {
            return Ok(());
        }
        let reduced: Vec<Vec<usize>> =
            shapes.iter().map(|s| s.iter().enumerate().map(|(a, &d)| if a < axis { d } else { 1 }).collect()).collect();
        let mean = self.add(Op::Reduce(ReduceOp::Mean), vec![x2])?;
        if let Some(o) = mean_out {
            let m = self.reshape(mean, &reduced)?;
            self.set(o, super::Val::Dyn(m));
        }
        if let Some(o) = inv_out {
            let d = self.bin(BinaryOp::Sub, x2, mean)?;
            let d2 = self.bin(BinaryOp::Mul, d, d)?;
            let var = self.add(Op::Reduce(ReduceOp::Mean), vec![d2])?;
            let e = self.scalar(eps);
            let ve = self.bin(BinaryOp::Add, var, e)?;
            let sd = self.un(UnaryOp::Sqrt, ve)?;
            let inv = self.un(UnaryOp::Recip, sd)?;
            let inv = self.reshape(inv, &reduced)?;
            self.set(o, super::Val::Dyn(inv));
        }
        Ok(())
    }
}
