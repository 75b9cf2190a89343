//! Decoders exported with their KV cache in the signature: `past_key_values.N.key` /
//! `.value` inputs `[batch, kv_heads, past, head_dim]` and `present.N.key` / `.value` outputs,
//! each the past concatenated with the new positions' keys or values (the layout of optimum's
//! and `torch.onnx`'s exports of HuggingFace models with a cache).
//!
//! edgec's runtime owns the KV cache, so those inputs and outputs are the runtime's state, not
//! tensors the app passes around. The graph is imported as it computes from an empty cache:
//! each past is an empty constant (its `Concat` with the new keys is then the new keys alone,
//! which the decoder signature writes into the cache at the call's position), the attention
//! mask is all ones (batch 1, no padding), the position ids count from 0, and the present
//! outputs are dropped. That is the full-sequence graph, which compiles to `NAME_forward`
//! with KV state like any causal LM export. The mapping is only sound when every present is
//! `Concat(past, new, axis = -2)` of its own past, which [`KvCacheExport::detect`] checks.

use super::fold::{Data, Dense};
use super::import::{Derived, ImportOptions, import};
use super::proto::{TensorShapeProto, tensor_shape_proto::dimension, type_proto};
use super::{OnnxModel, proto::DataType};
use crate::FrontendError;
use edgec_ir::Graph;

const PAST: &str = "past_key_values.";
const PRESENT: &str = "present.";
const IDS: &str = "input_ids";
const MASK: &str = "attention_mask";
const POSITIONS: &str = "position_ids";

/// The cache inputs and outputs of a decoder export, checked to pair up.
#[derive(Debug)]
pub struct KvCacheExport {
    /// Each past input with its empty value.
    pasts: Vec<(String, Dense)>,
    presents: Vec<String>,
    has_mask: bool,
    has_positions: bool,
}

impl KvCacheExport {
    /// The model's cache signature, if its graph inputs include `past_key_values.*`.
    pub fn detect(m: &OnnxModel) -> Result<Option<KvCacheExport>, FrontendError> {
        let fail = |message: String| FrontendError::Onnx { path: m.path.clone(), message };
        let g = m.graph();
        let pasts: Vec<_> = g.input.iter().filter(|i| i.name.starts_with(PAST)).collect();
        if pasts.is_empty() {
            return Ok(None);
        }
        if !g.input.iter().any(|i| i.name == IDS) {
            return Err(fail(format!("a decoder with '{PAST}*' inputs needs an '{IDS}' input for the token ids")));
        }
        let mut out = KvCacheExport {
            pasts: Vec::new(),
            presents: Vec::new(),
            has_mask: g.input.iter().any(|i| i.name == MASK),
            has_positions: g.input.iter().any(|i| i.name == POSITIONS),
        };
        for past in pasts {
            let what = format!("cache input '{}'", past.name);
            let present = format!("{PRESENT}{}", &past.name[PAST.len()..]);
            if !g.output.iter().any(|o| o.name == present) {
                return Err(fail(format!("{what} has no '{present}' output to pair with")));
            }
            let by_concat = g.node.iter().any(|n| {
                n.op_type == "Concat"
                    && n.output.first() == Some(&present)
                    && n.input.first() == Some(&past.name)
                    && n.input.len() == 2
                    && n.attribute.iter().any(|a| a.name == "axis" && (a.i == -2 || a.i == 2))
            });
            if !by_concat {
                return Err(fail(format!(
                    "'{present}' is not Concat('{}', new, axis=-2): edgec maps a cache only when the \
                     graph extends it by concatenating the new positions",
                    past.name
                )));
            }
            let empty = empty_past(&what, past.r#type.as_ref()).map_err(fail)?;
            out.pasts.push((past.name.clone(), empty));
            out.presents.push(present);
        }
        let extra: Vec<&str> = g
            .output
            .iter()
            .map(|o| o.name.as_str())
            .filter(|o| o.starts_with(PRESENT) && !out.presents.iter().any(|p| p == o))
            .collect();
        if !extra.is_empty() {
            return Err(fail(format!("cache outputs {extra:?} have no '{PAST}*' input to pair with")));
        }
        Ok(Some(out))
    }

    /// `base` with the cache inputs, the mask and the position ids fixed as an empty cache
    /// gives them.
    pub fn import_options(&self, base: ImportOptions) -> ImportOptions {
        let mut opts = base;
        opts.constants.extend(self.pasts.iter().cloned());
        if self.has_mask {
            opts.derived.push((MASK.into(), Derived::OnesLike(IDS.into())));
        }
        if self.has_positions {
            opts.derived.push((POSITIONS.into(), Derived::PositionsOf(IDS.into())));
        }
        opts
    }

    /// Imports the graph from an empty cache, without the present outputs.
    pub fn import(&self, m: &OnnxModel, base: ImportOptions) -> Result<Graph, FrontendError> {
        let mut g = import(m, &self.import_options(base))?;
        // The importer adds the graph's outputs in order.
        let outputs = std::mem::take(&mut g.outputs);
        g.outputs = outputs
            .into_iter()
            .zip(&m.graph().output)
            .filter(|(_, o)| !self.presents.contains(&o.name))
            .map(|(out, _)| out)
            .collect();
        Ok(g)
    }
}

/// The empty value of a past input `[batch, heads, past, head_dim]`: the past axis 0, batch 1.
fn empty_past(what: &str, ty: Option<&super::proto::TypeProto>) -> Result<Dense, String> {
    let Some(type_proto::Value::TensorType(t)) = ty.and_then(|t| t.value.as_ref()) else {
        return Err(format!("{what} is not a tensor"));
    };
    if t.elem_type != DataType::Float as i32 && t.elem_type != DataType::Float16 as i32 {
        return Err(format!("{what} is not a float tensor"));
    }
    let dims = t.shape.as_ref().map(|s: &TensorShapeProto| s.dim.as_slice()).unwrap_or_default();
    if dims.len() != 4 {
        return Err(format!("{what} has rank {}, not [batch, heads, past, head_dim]", dims.len()));
    }
    let mut shape = Vec::new();
    for (axis, d) in dims.iter().enumerate() {
        shape.push(match (axis, &d.value) {
            (2, _) => 0,
            (0, Some(dimension::Value::DimParam(_))) => 1,
            (_, Some(dimension::Value::DimValue(v))) if *v >= 0 && (axis != 0 || *v == 1) => *v as usize,
            _ => return Err(format!("{what}: axis {axis} must be a fixed size (batch 1)")),
        });
    }
    Ok(Dense { shape, data: Data::F(Vec::new()) })
}
