//! The one decoder builder: embedding, N decoder layers, final norm, LM head.
//!
//! Every family is the same layer with switches from its [`Family`] description and the
//! validated config: norm kind (RMSNorm, or LayerNorm with bias), biases, a parallel
//! attention+MLP block, fused q/k/v and gate/up projections (split at import into row ranges of
//! the stored tensor: a different file offset, no copy), per-head q/k RMSNorm, partial rotary,
//! a sliding window, and the MLP's shape and activation.

use crate::LoadOptions;
use crate::checkpoint::Checkpoint;
use crate::config::{Activation, DecoderConfig, Family, MlpKind, NormKind};
use crate::error::FrontendError;
use edgec_ir::{BinaryOp, DType, Graph, Op, RopePart, Shape, TensorType, UnaryOp, ValueRef, WeightSource};
use std::path::PathBuf;

/// Where weights come from.
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a> {
    /// A checkpoint: every tensor is checked for presence, dtype and shape.
    Checkpoint(&'a Checkpoint),
    /// No weights at all (`edgec inspect`): every weight is a placeholder `File` reference with an
    /// empty path, good for counting, typing and memory planning but never for materializing.
    Placeholder,
    /// Another format (GGUF, [`crate::gguf`]) that maps HuggingFace tensor names onto its own.
    Lookup(&'a dyn WeightLookup),
    /// Like `Placeholder`, and records each checkpoint tensor's name and whole shape once, in
    /// build order (`edgec synth` writes exactly these).
    Record(&'a std::cell::RefCell<Vec<(String, Vec<u64>)>>),
}

/// A weight source other than a safetensors checkpoint: given a HuggingFace tensor name, its
/// expected whole shape and the rows wanted (`first..first + rows`), the stored tensor (checked)
/// and the transforms that bring those rows to the HF layout.
pub(crate) trait WeightLookup {
    fn lookup(
        &self,
        name: &str,
        full: &[u64],
        first: u64,
        rows: u64,
    ) -> Result<(WeightSource, Vec<edgec_ir::Transform>), FrontendError>;
}

struct Builder<'a> {
    g: Graph,
    weights: Weights<'a>,
}

impl Builder<'_> {
    /// Adds checkpoint tensor `name` as an f32 weight after checking its dtype and shape.
    fn weight(&mut self, name: &str, expected: &[u64]) -> Result<ValueRef, FrontendError> {
        self.weight_rows(name, name, expected, 0, expected.first().copied().unwrap_or(1))
    }

    /// Adds rows `first..first + rows` of checkpoint tensor `name` (whose whole shape is `full`)
    /// as weight `label`. A row range of a row-major tensor is a contiguous byte range: only the
    /// offset changes.
    fn weight_rows(
        &mut self,
        label: &str,
        name: &str,
        full: &[u64],
        first: u64,
        rows: u64,
    ) -> Result<ValueRef, FrontendError> {
        let mut shape = full.to_vec();
        if let Some(r) = shape.first_mut() {
            *r = rows;
        }
        let row_elems: u64 = full.iter().skip(1).product();
        let ty = TensorType::new(DType::F32, Shape::of(&shape));
        let ckpt = match self.weights {
            Weights::Placeholder => {
                let source = WeightSource::File { path: PathBuf::new(), offset: 0, dtype: DType::F32 };
                return Ok(self.g.add_weight(label, ty, source));
            }
            Weights::Record(seen) => {
                let mut seen = seen.borrow_mut();
                if !seen.iter().any(|(n, _)| n == name) {
                    seen.push((name.to_string(), full.to_vec()));
                }
                let source = WeightSource::File { path: PathBuf::new(), offset: 0, dtype: DType::F32 };
                return Ok(self.g.add_weight(label, ty, source));
            }
            Weights::Checkpoint(c) => c,
            Weights::Lookup(l) => {
                let (source, transforms) = l.lookup(name, full, first, rows)?;
                return Ok(self.g.add_weight_transformed(label, ty, source, transforms));
            }
        };
        let e = ckpt.get(name)?;
        let (dtype, elem) =
            e.ir_dtype().and_then(|d| Some((d, d.size()?))).ok_or_else(|| FrontendError::UnsupportedDtype {
                file: e.file.clone(),
                tensor: name.to_string(),
                dtype: format!("{:?}", e.dtype),
            })?;
        let matches = e.shape.len() == full.len() && e.shape.iter().zip(full).all(|(&a, &b)| a as u64 == b);
        if !matches {
            return Err(FrontendError::TensorShape {
                file: e.file.clone(),
                tensor: name.to_string(),
                shape: e.shape.clone(),
                expected: full.to_vec(),
            });
        }
        let offset = e.offset + first * row_elems * elem;
        let source = WeightSource::File { path: e.path.clone(), offset, dtype };
        Ok(self.g.add_weight(label, ty, source))
    }

    fn node(&mut self, op: Op, args: Vec<ValueRef>) -> Result<ValueRef, FrontendError> {
        Ok(self.g.add_node(op, args)?)
    }

    fn add(&mut self, a: ValueRef, b: ValueRef) -> Result<ValueRef, FrontendError> {
        self.node(Op::Binary(BinaryOp::Add), vec![a, b])
    }

    /// `x · wᵀ (+ bias)` for a HuggingFace `Linear` weight `w [out, in]`.
    fn linear(&mut self, x: ValueRef, w: ValueRef, bias: Option<ValueRef>) -> Result<ValueRef, FrontendError> {
        let y = self.node(Op::MatMul { transpose_b: true }, vec![x, w])?;
        match bias {
            Some(b) => self.add(y, b),
            None => Ok(y),
        }
    }

    /// `Linear` `{prefix}.weight [out, in]` with `{prefix}.bias [out]` when `bias`.
    fn dense(&mut self, x: ValueRef, prefix: &str, out: u64, inp: u64, bias: bool) -> Result<ValueRef, FrontendError> {
        let w = self.weight(&format!("{prefix}.weight"), &[out, inp])?;
        let b = if bias { Some(self.weight(&format!("{prefix}.bias"), &[out])?) } else { None };
        self.linear(x, w, b)
    }

    /// The outputs of a fused `Linear` `{prefix}.weight [sum(parts), in]` (and its bias), split
    /// into consecutive row ranges named `{prefix}.weight.{part}`.
    fn fused(
        &mut self,
        x: ValueRef,
        prefix: &str,
        parts: &[(&str, u64)],
        inp: u64,
        bias: bool,
    ) -> Result<Vec<ValueRef>, FrontendError> {
        let total: u64 = parts.iter().map(|p| p.1).sum();
        let mut first = 0;
        let mut outs = Vec::with_capacity(parts.len());
        for &(part, rows) in parts {
            let (wn, bn) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
            let w = self.weight_rows(&format!("{wn}.{part}"), &wn, &[total, inp], first, rows)?;
            let b =
                if bias { Some(self.weight_rows(&format!("{bn}.{part}"), &bn, &[total], first, rows)?) } else { None };
            outs.push(self.linear(x, w, b)?);
            first += rows;
        }
        Ok(outs)
    }

    /// The family's norm `{prefix}.weight` (and `.bias` for LayerNorm) over `hidden` features.
    fn norm(&mut self, cfg: &DecoderConfig, x: ValueRef, prefix: &str) -> Result<ValueRef, FrontendError> {
        let eps = cfg.norm_eps;
        let w = self.weight(&format!("{prefix}.weight"), &[cfg.hidden])?;
        match cfg.family.norm {
            NormKind::Rms => self.node(Op::RmsNorm { eps, group: None }, vec![x, w]),
            NormKind::Layer => {
                let b = self.weight(&format!("{prefix}.bias"), &[cfg.hidden])?;
                self.node(Op::LayerNorm { eps }, vec![x, w, b])
            }
        }
    }

    fn act(&mut self, cfg: &DecoderConfig, x: ValueRef) -> Result<ValueRef, FrontendError> {
        let op = match cfg.activation {
            Activation::Silu => UnaryOp::Silu,
            Activation::GeluTanh => UnaryOp::GeluTanh,
            Activation::Gelu => UnaryOp::Gelu,
        };
        self.node(Op::Unary(op), vec![x])
    }
}

/// Graph-wide values every layer reads.
struct Shared {
    pos: ValueRef,
    cos: ValueRef,
    sin: ValueRef,
    window: Option<u32>,
}

pub(crate) fn build(cfg: &DecoderConfig, weights: Weights, opts: &LoadOptions) -> Result<Graph, FrontendError> {
    let too_big = |what: &str| FrontendError::Options(format!("{what} overflows"));
    let (hidden, vocab) = (cfg.hidden, cfg.vocab);
    let kv_width = u64::from(cfg.kv_heads) * u64::from(cfg.head_dim);
    opts.max_context.checked_mul(kv_width).and_then(|n| n.checked_mul(4)).ok_or_else(|| too_big("KV cache size"))?;

    let mut b = Builder { g: Graph::new(cfg.model_type.clone()), weights };
    let seq = b.g.add_symbol("seq", opts.max_tokens);
    let ids = b.g.add_input("ids", TensorType::new(DType::I32, Shape(vec![seq])));
    let pos = b.g.add_input("pos", TensorType::new(DType::I32, Shape::of(&[])));

    let embed = b.weight("model.embed_tokens.weight", &[vocab, hidden])?;
    let rope_ty = TensorType::new(DType::F32, Shape::of(&[opts.max_context, u64::from(cfg.rotary_dim / 2)]));
    let rope = |part| WeightSource::Rope {
        part,
        theta: cfg.rope_theta,
        rotary_dim: cfg.rotary_dim,
        scaling: cfg.rope_scaling,
    };
    let cos = b.g.add_weight("rope.cos", rope_ty.clone(), rope(RopePart::Cos));
    let sin = b.g.add_weight("rope.sin", rope_ty, rope(RopePart::Sin));
    // A window at least as long as the context never excludes a position.
    let window = match cfg.sliding_window {
        Some(w) if w < opts.max_context => Some(u32::try_from(w).map_err(|_| too_big("sliding_window"))?),
        _ => None,
    };
    let shared = Shared { pos, cos, sin, window };

    let mut h = b.node(Op::Gather, vec![embed, ids])?;
    for i in 0..cfg.layers {
        h = layer(&mut b, cfg, opts, &shared, i, h)?;
    }
    let h = b.norm(cfg, h, cfg.family.final_norm)?;
    let head = if cfg.tie_word_embeddings { embed } else { b.weight("lm_head.weight", &[vocab, hidden])? };
    let head_bias = if cfg.biases.lm_head { Some(b.weight("lm_head.bias", &[vocab])?) } else { None };
    let logits = b.linear(h, head, head_bias)?;
    b.g.add_output("logits", logits);
    Ok(b.g)
}

/// Decoder layer `i`: returns the new residual stream.
fn layer(
    b: &mut Builder,
    cfg: &DecoderConfig,
    opts: &LoadOptions,
    s: &Shared,
    i: u64,
    h: ValueRef,
) -> Result<ValueRef, FrontendError> {
    let fam: &Family = &cfg.family;
    let hidden = cfg.hidden;
    let hd = u64::from(cfg.head_dim);
    let q_width = u64::from(cfg.heads) * hd;
    let kv_width = u64::from(cfg.kv_heads) * hd;
    let p = format!("model.layers.{i}");
    let cache_ty = TensorType::new(DType::F32, Shape::of(&[opts.max_context, kv_width]));
    let k_cache = b.g.add_state(format!("layers.{i}.k_cache"), cache_ty.clone());
    let v_cache = b.g.add_state(format!("layers.{i}.v_cache"), cache_ty);

    // Attention block.
    let x = b.norm(cfg, h, &format!("{p}.input_layernorm"))?;
    let bias = cfg.biases.qkv;
    // Qwen3's per-head q/k norm follows its projection directly (the order exports use).
    let qk_norm = |b: &mut Builder, x: ValueRef, which: &str| -> Result<ValueRef, FrontendError> {
        if !fam.qk_norm {
            return Ok(x);
        }
        let w = b.weight(&format!("{p}.self_attn.{which}_norm.weight"), &[hd])?;
        b.node(Op::RmsNorm { eps: cfg.norm_eps, group: Some(cfg.head_dim) }, vec![x, w])
    };
    let (q, k, v) = if fam.fused_qkv {
        let parts = [("q", q_width), ("k", kv_width), ("v", kv_width)];
        let o = b.fused(x, &format!("{p}.self_attn.qkv_proj"), &parts, hidden, bias)?;
        (qk_norm(b, o[0], "q")?, qk_norm(b, o[1], "k")?, o[2])
    } else {
        let q = b.dense(x, &format!("{p}.self_attn.q_proj"), q_width, hidden, bias)?;
        let q = qk_norm(b, q, "q")?;
        let k = b.dense(x, &format!("{p}.self_attn.k_proj"), kv_width, hidden, bias)?;
        let k = qk_norm(b, k, "k")?;
        let v = b.dense(x, &format!("{p}.self_attn.v_proj"), kv_width, hidden, bias)?;
        (q, k, v)
    };
    let rope_op = Op::Rope { head_dim: cfg.head_dim, rotary_dim: cfg.rotary_dim, interleaved: false };
    let q = b.node(rope_op.clone(), vec![q, s.cos, s.sin, s.pos])?;
    let k = b.node(rope_op, vec![k, s.cos, s.sin, s.pos])?;
    let kc = b.node(Op::CacheWrite, vec![k_cache, k, s.pos])?;
    let vc = b.node(Op::CacheWrite, vec![v_cache, v, s.pos])?;
    let attn = Op::Attention {
        heads: cfg.heads,
        kv_heads: cfg.kv_heads,
        head_dim: cfg.head_dim,
        scale: (1.0 / f64::from(cfg.head_dim).sqrt()) as f32,
        window: s.window,
    };
    let a = b.node(attn, vec![q, kc, vc, s.pos])?;
    let o = b.dense(a, &format!("{p}.self_attn.{}", fam.o_proj), hidden, q_width, cfg.biases.o)?;

    if fam.parallel {
        // transformers: `attn_outputs + feed_forward_hidden_states + residual`.
        let m = mlp(b, cfg, &p, x)?;
        let sum = b.add(o, m)?;
        b.add(sum, h)
    } else {
        let h = b.add(h, o)?;
        let x = b.norm(cfg, h, &format!("{p}.post_attention_layernorm"))?;
        let m = mlp(b, cfg, &p, x)?;
        b.add(h, m)
    }
}

fn mlp(b: &mut Builder, cfg: &DecoderConfig, p: &str, x: ValueRef) -> Result<ValueRef, FrontendError> {
    let (hidden, inter, bias) = (cfg.hidden, cfg.intermediate, cfg.biases.mlp);
    match cfg.family.mlp {
        MlpKind::Gated { fused } => {
            // The activation right after its matmul (as transformers' exports order it), so
            // the gate's buffer is rewritten in place before the up projection needs memory.
            let (gate, up) = if fused {
                let o =
                    b.fused(x, &format!("{p}.mlp.gate_up_proj"), &[("gate", inter), ("up", inter)], hidden, bias)?;
                (b.act(cfg, o[0])?, o[1])
            } else {
                let gate = b.dense(x, &format!("{p}.mlp.gate_proj"), inter, hidden, bias)?;
                let gate = b.act(cfg, gate)?;
                (gate, b.dense(x, &format!("{p}.mlp.up_proj"), inter, hidden, bias)?)
            };
            let m = b.node(Op::Binary(BinaryOp::Mul), vec![gate, up])?;
            b.dense(m, &format!("{p}.mlp.down_proj"), hidden, inter, bias)
        }
        MlpKind::Plain => {
            let f = b.dense(x, &format!("{p}.mlp.fc1"), inter, hidden, bias)?;
            let f = b.act(cfg, f)?;
            b.dense(f, &format!("{p}.mlp.fc2"), hidden, inter, bias)
        }
    }
}
