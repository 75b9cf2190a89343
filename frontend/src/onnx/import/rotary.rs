//! ONNX RotaryEmbedding (opset 23) lowered to slices, elementwise ops and concats, following
//! onnx's reference (`onnx/reference/ops/op_rotary_embedding.py`): in `[B, S, heads, D]`
//! layout, the first `rotary_embedding_dim` features rotated (halves, or even/odd pairs when
//! interleaved) by cos/sin rows picked by `position_ids` (or given per batch and position).

use super::{Importer, input};
use crate::onnx::fold::{R, attr_i};
use crate::onnx::proto::NodeProto;
use edgec_ir::{BinaryOp, Dim, Op, ValueRef};

impl Importer<'_> {
    fn slice_last(&mut self, x: ValueRef, start: usize, len: usize) -> R<ValueRef> {
        let axis = self.g.type_of(x).shape.rank().checked_sub(1).ok_or("slice of a scalar")? as u32;
        self.add(Op::Slice { axis, start: start as u64, len: Dim::Const(len as u64) }, vec![x])
    }

    /// Elements `k, k + 2, k + 4, ...` of the last axis (of even length `2 * half`).
    fn every_other(&mut self, x: ValueRef, k: usize, half: usize) -> R<ValueRef> {
        let axis = self.g.type_of(x).shape.rank().checked_sub(1).ok_or("a rotation of a scalar")?;
        self.strided_slice(x, axis, k as i64, 2, half)
    }

    /// A cos or sin table as `[B, S, 1, half]`: rows picked by the position ids, or given.
    fn rotary_table(&mut self, name: &str, ids: Option<ValueRef>, b: usize, s: usize, half: usize) -> R<ValueRef> {
        let t = self.float_operand(name)?;
        let rows = match ids {
            Some(ids) => {
                let flat = self.reshape_to(ids, &[b * s])?;
                self.add(Op::Gather, vec![t, flat])?
            }
            None => t,
        };
        let last = self.static_dims(rows, "cos/sin cache")?.last().copied();
        if last != Some(half) {
            return Err(format!("the cos/sin cache's last axis is {last:?}, not rotary_embedding_dim / 2 = {half}"));
        }
        self.reshape_to(rows, &[b, s, 1, half])
    }

    pub(super) fn rotary_embedding(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let d = self.static_dims(x, "input")?;
        let x = match d.len() {
            4 => self.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![x])?,
            3 => {
                let heads = usize::try_from(attr_i(n, "num_heads", 0)?).ok().filter(|&h| h > 0);
                let heads = heads.ok_or("3-d input needs a positive num_heads")?;
                if d[2] % heads != 0 {
                    return Err(format!("hidden size {} is not a multiple of {heads} heads", d[2]));
                }
                self.reshape_to(x, &[d[0], d[1], heads, d[2] / heads])?
            }
            r => return Err(format!("the input must be 3-d or 4-d, not {r}-d")),
        };
        let bshd = self.static_dims(x, "input")?;
        let (b, s, head) = (bshd[0], bshd[1], bshd[3]);
        let rd = match attr_i(n, "rotary_embedding_dim", 0)? {
            0 => head,
            r => usize::try_from(r)
                .ok()
                .filter(|&r| r <= head && r % 2 == 0)
                .ok_or_else(|| format!("rotary_embedding_dim {r} must be even and at most the head size {head}"))?,
        };
        let half = rd / 2;
        let ids = match input(n, 3) {
            Some(p) => Some(self.operand(p)?),
            None => None,
        };
        let cos = self.rotary_table(input(n, 1).ok_or("missing cos_cache")?, ids, b, s, half)?;
        let sin = self.rotary_table(input(n, 2).ok_or("missing sin_cache")?, ids, b, s, half)?;
        let rot = if rd == head { x } else { self.slice_last(x, 0, rd)? };
        let interleaved = attr_i(n, "interleaved", 0)? != 0;
        let (x1, x2) = if interleaved {
            (self.every_other(rot, 0, half)?, self.every_other(rot, 1, half)?)
        } else {
            (self.slice_last(rot, 0, half)?, self.slice_last(rot, half, half)?)
        };
        let (c1, s2) = (self.bin(BinaryOp::Mul, cos, x1)?, self.bin(BinaryOp::Mul, sin, x2)?);
        let real = self.bin(BinaryOp::Sub, c1, s2)?;
        let (s1, c2) = (self.bin(BinaryOp::Mul, sin, x1)?, self.bin(BinaryOp::Mul, cos, x2)?);
        let imag = self.bin(BinaryOp::Add, s1, c2)?;
        let mut y = if interleaved {
            let (r5, i5) =
                (self.reshape_to(real, &[b, s, bshd[2], half, 1])?, self.reshape_to(imag, &[b, s, bshd[2], half, 1])?);
            let c = self.add(Op::Concat { axis: 4 }, vec![r5, i5])?;
            self.reshape_to(c, &[b, s, bshd[2], rd])?
        } else {
            self.add(Op::Concat { axis: 3 }, vec![real, imag])?
        };
        if rd < head {
            let pass = self.slice_last(x, rd, head - rd)?;
            y = self.add(Op::Concat { axis: 3 }, vec![y, pass])?;
        }
        if d.len() == 4 { self.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![y]) } else { self.reshape_to(y, &d) }
    }
}
