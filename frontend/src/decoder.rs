//! The one decoder builder: embedding, N pre-norm decoder layers, final norm, LM head.

use crate::LoadOptions;
use crate::checkpoint::Checkpoint;
use crate::config::DecoderConfig;
use crate::error::FrontendError;
use edgec_ir::{BinaryOp, DType, Graph, Op, RopePart, Shape, TensorType, UnaryOp, ValueRef, WeightSource};

struct Builder<'a> {
    g: Graph,
    ckpt: &'a Checkpoint,
}

impl Builder<'_> {
    /// Adds checkpoint tensor `name` as an f32 weight after checking its dtype and shape.
    fn weight(&mut self, name: &str, expected: &[u64]) -> Result<ValueRef, FrontendError> {
        let e = self.ckpt.get(name)?;
        let dtype = e.ir_dtype().ok_or_else(|| FrontendError::UnsupportedDtype {
            file: e.file.clone(),
            tensor: name.to_string(),
            dtype: format!("{:?}", e.dtype),
        })?;
        let matches = e.shape.len() == expected.len() && e.shape.iter().zip(expected).all(|(&a, &b)| a as u64 == b);
        if !matches {
            return Err(FrontendError::TensorShape {
                file: e.file.clone(),
                tensor: name.to_string(),
                shape: e.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let source = WeightSource::File { path: e.path.clone(), offset: e.offset, dtype };
        Ok(self.g.add_weight(name, TensorType::new(DType::F32, Shape::of(expected)), source))
    }

    fn node(&mut self, op: Op, args: Vec<ValueRef>) -> Result<ValueRef, FrontendError> {
        Ok(self.g.add_node(op, args)?)
    }

    fn linear(&mut self, x: ValueRef, w: ValueRef) -> Result<ValueRef, FrontendError> {
        self.node(Op::MatMul { transpose_b: true }, vec![x, w])
    }
}

pub(crate) fn build(cfg: &DecoderConfig, ckpt: &Checkpoint, opts: &LoadOptions) -> Result<Graph, FrontendError> {
    let too_big = |what: &str| FrontendError::Options(format!("{what} overflows"));
    let (hidden, inter, vocab) = (cfg.hidden, cfg.intermediate, cfg.vocab);
    let q_width = u64::from(cfg.heads) * u64::from(cfg.head_dim);
    let kv_width = u64::from(cfg.kv_heads) * u64::from(cfg.head_dim);
    opts.max_context.checked_mul(kv_width).and_then(|n| n.checked_mul(4)).ok_or_else(|| too_big("KV cache size"))?;

    let mut b = Builder { g: Graph::new(cfg.model_type.clone()), ckpt };
    let seq = b.g.add_symbol("seq", opts.max_tokens);
    let ids = b.g.add_input("ids", TensorType::new(DType::I32, Shape(vec![seq])));
    let pos = b.g.add_input("pos", TensorType::new(DType::I32, Shape::of(&[])));

    let embed = b.weight("model.embed_tokens.weight", &[vocab, hidden])?;
    let rope_ty = TensorType::new(DType::F32, Shape::of(&[opts.max_context, u64::from(cfg.head_dim / 2)]));
    let rope =
        |part| WeightSource::Rope { part, theta: cfg.rope_theta, rotary_dim: cfg.head_dim, scaling: cfg.rope_scaling };
    let cos = b.g.add_weight("rope.cos", rope_ty.clone(), rope(RopePart::Cos));
    let sin = b.g.add_weight("rope.sin", rope_ty, rope(RopePart::Sin));

    let mut h = b.node(Op::Gather, vec![embed, ids])?;
    let eps = cfg.rms_norm_eps;
    for i in 0..cfg.layers {
        let p = format!("model.layers.{i}");
        let cache_ty = TensorType::new(DType::F32, Shape::of(&[opts.max_context, kv_width]));
        let k_cache = b.g.add_state(format!("layers.{i}.k_cache"), cache_ty.clone());
        let v_cache = b.g.add_state(format!("layers.{i}.v_cache"), cache_ty);

        // Attention block.
        let ln1 = b.weight(&format!("{p}.input_layernorm.weight"), &[hidden])?;
        let wq = b.weight(&format!("{p}.self_attn.q_proj.weight"), &[q_width, hidden])?;
        let wk = b.weight(&format!("{p}.self_attn.k_proj.weight"), &[kv_width, hidden])?;
        let wv = b.weight(&format!("{p}.self_attn.v_proj.weight"), &[kv_width, hidden])?;
        let wo = b.weight(&format!("{p}.self_attn.o_proj.weight"), &[hidden, q_width])?;
        let x = b.node(Op::RmsNorm { eps }, vec![h, ln1])?;
        let q = b.linear(x, wq)?;
        let k = b.linear(x, wk)?;
        let v = b.linear(x, wv)?;
        let rope_op = Op::Rope { head_dim: cfg.head_dim, rotary_dim: cfg.head_dim };
        let q = b.node(rope_op.clone(), vec![q, cos, sin, pos])?;
        let k = b.node(rope_op, vec![k, cos, sin, pos])?;
        let kc = b.node(Op::CacheWrite, vec![k_cache, k, pos])?;
        let vc = b.node(Op::CacheWrite, vec![v_cache, v, pos])?;
        let attn = Op::Attention {
            heads: cfg.heads,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            scale: (1.0 / f64::from(cfg.head_dim).sqrt()) as f32,
            window: None,
        };
        let a = b.node(attn, vec![q, kc, vc, pos])?;
        let o = b.linear(a, wo)?;
        h = b.node(Op::Binary(BinaryOp::Add), vec![h, o])?;

        // MLP block (SwiGLU).
        let ln2 = b.weight(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?;
        let wg = b.weight(&format!("{p}.mlp.gate_proj.weight"), &[inter, hidden])?;
        let wu = b.weight(&format!("{p}.mlp.up_proj.weight"), &[inter, hidden])?;
        let wd = b.weight(&format!("{p}.mlp.down_proj.weight"), &[hidden, inter])?;
        let x = b.node(Op::RmsNorm { eps }, vec![h, ln2])?;
        let gate = b.linear(x, wg)?;
        let gate = b.node(Op::Unary(UnaryOp::Silu), vec![gate])?;
        let up = b.linear(x, wu)?;
        let m = b.node(Op::Binary(BinaryOp::Mul), vec![gate, up])?;
        let d = b.linear(m, wd)?;
        h = b.node(Op::Binary(BinaryOp::Add), vec![h, d])?;
    }
    let norm = b.weight("model.norm.weight", &[hidden])?;
    let h = b.node(Op::RmsNorm { eps }, vec![h, norm])?;
    let head = if cfg.tie_word_embeddings { embed } else { b.weight("lm_head.weight", &[vocab, hidden])? };
    let logits = b.linear(h, head)?;
    b.g.add_output("logits", logits);
    Ok(b.g)
}
