//! ONNX Attention (opsets 23–25) lowered to `batch_matmul`, `softmax`, `select` and layout
//! ops, step for step like onnx's reference (`onnx/reference/ops/op_attention.py`, which the
//! node tests' outputs come from): q and k each scaled by √scale, softcap before the bias,
//! the causal and window masks offset by the past length, grouped-query heads repeated
//! interleaved, and rows whose bias is -inf everywhere giving zeros.

use super::{Importer, Val, input};
use crate::onnx::fold;
use crate::onnx::fold::{R, attr_f, attr_i};
use crate::onnx::proto::NodeProto;
use edgec_ir::{BinaryOp, DType, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueRef, WeightSource};

/// The attributes that shape the masks.
struct Masking {
    causal: bool,
    left: i64,
    right: i64,
}

impl Importer<'_> {
    /// The dims of a run-time value, which must all be constants.
    pub(super) fn static_dims(&self, v: ValueRef, what: &str) -> R<Vec<usize>> {
        self.g
            .type_of(v)
            .shape
            .dims()
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{what} has a symbolic dim, which Attention does not support yet"))
    }

    pub(super) fn reshape_to(&mut self, v: ValueRef, dims: &[usize]) -> R<ValueRef> {
        self.reshape(v, &vec![dims.to_vec(); self.nprobes()])
    }

    /// An f32 literal weight of the given dims.
    pub(super) fn literal(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> ValueRef {
        let name = self.unique(name);
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        self.g.add_weight(name, TensorType::new(DType::F32, Shape::of(&dims)), WeightSource::Literal(data))
    }

    /// `[B, S, heads * D]` → `[B, heads, S, D]`.
    fn split_heads(&mut self, x: ValueRef, heads: usize, what: &str) -> R<ValueRef> {
        let d = self.static_dims(x, what)?;
        if heads == 0 || d[2] % heads != 0 {
            return Err(format!("{what}'s hidden size {} is not a multiple of {heads} heads", d[2]));
        }
        let x = self.reshape_to(x, &[d[0], d[1], heads, d[2] / heads])?;
        self.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![x])
    }

    pub(super) fn attention(&mut self, n: &NodeProto) -> R<()> {
        let mut q = self.float_operand(input(n, 0).ok_or("missing Q")?)?;
        let mut k = self.float_operand(input(n, 1).ok_or("missing K")?)?;
        let mut v = self.float_operand(input(n, 2).ok_or("missing V")?)?;
        let rank = self.g.type_of(q).shape.rank();
        if self.g.type_of(k).shape.rank() != rank || self.g.type_of(v).shape.rank() != rank {
            return Err("Q, K and V must have the same rank".into());
        }
        let heads_attr = |name: &str| -> R<Option<usize>> {
            match super::attr(n, name) {
                None => Ok(None),
                Some(_) => usize::try_from(attr_i(n, name, 0)?)
                    .ok()
                    .filter(|&h| h > 0)
                    .map(Some)
                    .ok_or_else(|| format!("{name} must be positive")),
            }
        };
        let (qh, kvh) = (heads_attr("q_num_heads")?, heads_attr("kv_num_heads")?);
        match rank {
            3 => {
                let (Some(qh), Some(kvh)) = (qh, kvh) else {
                    return Err("3-d Q, K, V need the q_num_heads and kv_num_heads attributes".into());
                };
                q = self.split_heads(q, qh, "Q")?;
                k = self.split_heads(k, kvh, "K")?;
                v = self.split_heads(v, kvh, "V")?;
            }
            4 if qh.is_some() || kvh.is_some() => {
                return Err("q_num_heads and kv_num_heads must not be given for 4-d inputs".into());
            }
            4 => {}
            r => return Err(format!("Q, K and V must be 3-d or 4-d, not {r}-d")),
        }
        let qd = self.static_dims(q, "Q")?;
        let (batch, q_heads, q_len, head) = (qd[0], qd[1], qd[2], qd[3]);

        // Each of q and k is scaled by √scale, rounded to f32 like the reference.
        let scale = match super::attr(n, "scale") {
            Some(_) => f64::from(attr_f(n, "scale", 0.0)?),
            None => 1.0 / (head as f64).sqrt(),
        };
        let s = self.scalar(scale.sqrt() as f32);

        let past = match (input(n, 4), input(n, 5)) {
            (Some(pk), Some(pv)) => Some((pk, pv)),
            (None, None) => None,
            _ => return Err("past_key and past_value must be given together".into()),
        };
        let past_len = match past {
            Some((pk, pv)) => {
                let (pk, pv) = (self.float_operand(pk)?, self.float_operand(pv)?);
                let len = self.static_dims(pk, "past_key")?.get(2).copied().ok_or("past_key must be 4-d")?;
                k = self.add(Op::Concat { axis: 2 }, vec![pk, k])?;
                v = self.add(Op::Concat { axis: 2 }, vec![pv, v])?;
                len
            }
            None => 0,
        };
        let (present_k, present_v) = (k, v);
        let kd = self.static_dims(k, "K")?;
        let kv_len = kd[2];
        let masking = Masking {
            causal: attr_i(n, "is_causal", 0)? != 0,
            left: attr_i(n, "left_window_size", -1)?,
            right: attr_i(n, "right_window_size", -1)?,
        };
        let nonpad = match input(n, 6) {
            Some(_) if past.is_some() => {
                return Err("nonpad_kv_seqlen cannot be combined with past_key and past_value".into());
            }
            Some(s) => {
                let s = self.float_operand(s)?;
                Some(self.reshape_to(s, &[batch, 1, 1])?)
            }
            None => None,
        };
        let mut bias = self.attention_bias(n, &masking, q_len, kv_len, past_len, nonpad)?;
        if let Some(nb) = nonpad {
            let pad = self.padding_bias(nb, batch, kv_len)?;
            bias = Some(match bias {
                Some(b) => self.bin(BinaryOp::Add, b, pad)?,
                None => pad,
            });
        }

        // Grouped-query attention: each KV head repeated for its group of query heads.
        if kd[1] != q_heads {
            if kd[1] == 0 || q_heads % kd[1] != 0 {
                return Err(format!("{q_heads} query heads are not a multiple of {} key/value heads", kd[1]));
            }
            k = self.repeat_heads(k, q_heads / kd[1])?;
            v = self.repeat_heads(v, q_heads / kd[1])?;
        }

        let qs = self.bin(BinaryOp::Mul, q, s)?;
        let kt = self.add(Op::Transpose { perm: vec![0, 1, 3, 2] }, vec![k])?;
        let ks = self.bin(BinaryOp::Mul, kt, s)?;
        let mut qk = self.add(Op::BatchMatMul, vec![qs, ks])?;
        let softcap = attr_f(n, "softcap", 0.0)?;
        if softcap > 0.0 {
            let c = self.scalar(softcap);
            let t = self.bin(BinaryOp::Div, qk, c)?;
            let t = self.un(UnaryOp::Tanh, t)?;
            qk = self.bin(BinaryOp::Mul, t, c)?;
        }
        let with_bias = match bias {
            Some(b) => self.bin(BinaryOp::Add, qk, b)?,
            None => qk,
        };
        let mut p = self.add(Op::Softmax, vec![with_bias])?;
        if let Some(b) = bias {
            p = self.zero_masked_rows(p, b)?;
        }
        let mode = attr_i(n, "qk_matmul_output_mode", 0)?;
        let qk_out = match mode {
            0 | 1 => qk,
            2 => with_bias,
            3 => p,
            m => return Err(format!("qk_matmul_output_mode {m} is not one of 0..=3")),
        };
        let mut y = self.add(Op::BatchMatMul, vec![p, v])?;
        if rank == 3 {
            let yd = self.static_dims(y, "the output")?;
            y = self.add(Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![y])?;
            y = self.reshape_to(y, &[batch, q_len, q_heads * yd[3]])?;
        }
        for (o, val) in n.output.iter().zip([y, present_k, present_v, qk_out]) {
            if !o.is_empty() {
                self.set(o, Val::Dyn(val));
            }
        }
        Ok(())
    }

    /// `[B, H, L, D]` → `[B, H * reps, L, D]` with each head repeated `reps` times in a row.
    fn repeat_heads(&mut self, x: ValueRef, reps: usize) -> R<ValueRef> {
        let d = self.static_dims(x, "K/V")?;
        let x5 = self.reshape_to(x, &[d[0], d[1], 1, d[2], d[3]])?;
        let dims: Vec<u64> = [d[0], d[1], reps, d[2], d[3]].iter().map(|&v| v as u64).collect();
        let e = self.add(Op::Expand { shape: Shape::of(&dims) }, vec![x5])?;
        let heads = d[1].checked_mul(reps).ok_or("K/V heads times their repeats overflow")?;
        self.reshape_to(e, &[d[0], heads, d[2], d[3]])
    }

    /// The additive bias (0 or -inf, or the float mask's values): the mask padded to the key
    /// length with -inf, plus the causal and window masks. `None` when there is none.
    fn attention_bias(
        &mut self,
        n: &NodeProto,
        masking: &Masking,
        q_len: usize,
        kv_len: usize,
        past_len: usize,
        nonpad: Option<ValueRef>,
    ) -> R<Option<ValueRef>> {
        let name = n.output.first().cloned().unwrap_or_default();
        let mut bias = match input(n, 3) {
            Some(m) => Some(self.mask_bias(m, kv_len)?),
            None => None,
        };
        let windowed = masking.left >= 0 || masking.right >= 0;
        if let (Some(nb), true) = (nonpad, masking.causal || windowed) {
            let c = self.frontier_bias(&name, masking, q_len, kv_len, nb)?;
            bias = Some(match bias {
                Some(b) => self.bin(BinaryOp::Add, b, c)?,
                None => c,
            });
        } else if masking.causal || windowed {
            let len = q_len
                .checked_mul(kv_len)
                .filter(|&l| l as u64 <= crate::limits::get(crate::limits::Limit::OnnxFoldElements));
            let len = len.ok_or("the causal mask is too large to fold")?;
            let mut data = Vec::with_capacity(len);
            for i in 0..q_len as i64 {
                for j in 0..kv_len as i64 {
                    let diff = i + past_len as i64 - j;
                    let allowed = (!masking.causal || diff >= 0)
                        && (masking.left < 0 || diff <= masking.left)
                        && (masking.right < 0 || -diff <= masking.right);
                    data.push(if allowed { 0.0 } else { f32::NEG_INFINITY });
                }
            }
            let c = self.literal(&format!("{name}.causal_mask"), &[q_len, kv_len], data);
            bias = Some(match bias {
                Some(b) => self.bin(BinaryOp::Add, b, c)?,
                None => c,
            });
        }
        Ok(bias)
    }

    /// The causal and window masks of an external cache, `[B, 1, q, kv]`: per batch, query `i`
    /// sits at `nonpad[b] - q + i`, so with `e = j - i + q` key `j` is before it when
    /// `e <= nonpad[b]`, within the left window when `nonpad[b] <= e + left` and within the
    /// right one when `e - right <= nonpad[b]`.
    fn frontier_bias(&mut self, name: &str, m: &Masking, q_len: usize, kv_len: usize, nb: ValueRef) -> R<ValueRef> {
        let len = q_len
            .checked_mul(kv_len)
            .filter(|&l| l as u64 <= crate::limits::get(crate::limits::Limit::OnnxFoldElements));
        let len = len.ok_or("the causal mask is too large to fold")?;
        let e = |shift: i64| -> Vec<f32> {
            let mut v = Vec::with_capacity(len);
            for i in 0..q_len as i64 {
                for j in 0..kv_len as i64 {
                    v.push((j - i + q_len as i64 + shift) as f32);
                }
            }
            v
        };
        let mut masks = Vec::new();
        if m.causal {
            let ev = self.literal(&format!("{name}.key_offset"), &[q_len, kv_len], e(0));
            masks.push(self.bin(BinaryOp::Gt, ev, nb)?);
        }
        if m.left >= 0 {
            let ev = self.literal(&format!("{name}.left_window"), &[q_len, kv_len], e(m.left));
            masks.push(self.bin(BinaryOp::Gt, nb, ev)?);
        }
        if m.right >= 0 {
            let ev = self.literal(&format!("{name}.right_window"), &[q_len, kv_len], e(-m.right));
            masks.push(self.bin(BinaryOp::Gt, ev, nb)?);
        }
        let (zero, ninf) = (self.scalar(0.0), self.scalar(f32::NEG_INFINITY));
        let mut acc: Option<ValueRef> = None;
        for dis in masks {
            let b = self.add(Op::Select, vec![dis, ninf, zero])?;
            acc = Some(match acc {
                Some(a) => self.bin(BinaryOp::Add, a, b)?,
                None => b,
            });
        }
        let acc = acc.ok_or("no causal or window mask")?;
        let b = self.static_dims(acc, "the mask")?[0];
        self.reshape_to(acc, &[b, 1, q_len, kv_len])
    }

    /// Keys at or past `nonpad[b]` masked: `[B, 1, 1, kv]`.
    fn padding_bias(&mut self, nb: ValueRef, batch: usize, kv_len: usize) -> R<ValueRef> {
        let j = self.literal("key_index", &[kv_len], (0..kv_len).map(|j| j as f32).collect());
        let nb2 = self.reshape_to(nb, &[batch, 1])?;
        let allowed = self.bin(BinaryOp::Lt, j, nb2)?;
        let (zero, ninf) = (self.scalar(0.0), self.scalar(f32::NEG_INFINITY));
        let b = self.add(Op::Select, vec![allowed, zero, ninf])?;
        self.reshape_to(b, &[batch, 1, 1, kv_len])
    }

    /// `attn_mask` as an additive bias: booleans become 0 / -inf; a mask shorter than the keys
    /// is padded with -inf.
    fn mask_bias(&mut self, name: &str, kv_len: usize) -> R<ValueRef> {
        let m = self.operand(name)?;
        let mut m = if self.bools.contains(&m) {
            let (zero, ninf) = (self.scalar(0.0), self.scalar(f32::NEG_INFINITY));
            self.add(Op::Select, vec![m, zero, ninf])?
        } else if self.g.type_of(m).dtype == DType::I32 {
            return Err("attn_mask must be boolean or float".into());
        } else {
            m
        };
        let d = self.static_dims(m, "attn_mask")?;
        let last = *d.last().ok_or("attn_mask must have at least one axis")?;
        if last > kv_len {
            return Err(format!("attn_mask's last axis {last} is longer than the {kv_len} keys"));
        }
        if last < kv_len {
            let mut pd = d.clone();
            *pd.last_mut().ok_or("attn_mask must have at least one axis")? = kv_len - last;
            let count = fold::sized(&pd)?;
            let pad = self.literal(&format!("{name}.pad"), &pd, vec![f32::NEG_INFINITY; count]);
            m = self.add(Op::Concat { axis: (d.len() - 1) as u32 }, vec![m, pad])?;
        }
        Ok(m)
    }

    /// Rows whose bias is -inf at every key give 0 (softmax would give NaN there).
    fn zero_masked_rows(&mut self, p: ValueRef, bias: ValueRef) -> R<ValueRef> {
        let mx = self.add(Op::Reduce(ReduceOp::Max), vec![bias])?;
        let ninf = self.scalar(f32::NEG_INFINITY);
        let masked = self.bin(BinaryOp::Eq, mx, ninf)?;
        let zero = self.scalar(0.0);
        self.add(Op::Select, vec![masked, zero, p])
    }
}
