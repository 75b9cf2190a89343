//! `config.json` of a HuggingFace decoder, parsed once into [`DecoderConfig`].
//!
//! Both layouts are read: current transformers (`rope_parameters: {rope_theta, rope_type, ...}`,
//! `dtype`) and the older one (top-level `rope_theta`, `rope_scaling: {rope_type | type, ...}`,
//! `torch_dtype`).

use crate::error::FrontendError;
use edgec_ir::RopeScaling;
use serde_json::{Map, Value};
use std::path::Path;

/// What distinguishes one architecture family from another. Adding a family (Qwen2 biases,
/// Mistral's sliding window, ...) means adding a description here and teaching the one
/// decoder-layer builder the new switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The `architectures` entry of config.json.
    pub architecture: &'static str,
}

/// The families this frontend builds.
pub const FAMILIES: &[Family] = &[Family { architecture: "LlamaForCausalLM" }];

/// A decoder-only transformer's hyperparameters, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub family: Family,
    pub model_type: String,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab: u64,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// The `dtype` / `torch_dtype` the checkpoint claims (informational: tensor dtypes come
    /// from the safetensors headers).
    pub dtype: Option<String>,
}

struct Fields<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
    /// Prefix for field names in messages (`rope_scaling.`).
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }
    fn missing(&self, field: &str) -> FrontendError {
        FrontendError::MissingField { path: self.path.to_path_buf(), field: self.name(field) }
    }
    fn invalid(&self, field: &str, message: impl Into<String>) -> FrontendError {
        FrontendError::InvalidField { path: self.path.to_path_buf(), field: self.name(field), message: message.into() }
    }
    /// The field, treating `null` as absent.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }
    fn opt_u64(&self, field: &str) -> Result<Option<u64>, FrontendError> {
        self.get(field)
            .map(|v| v.as_u64().ok_or_else(|| self.invalid(field, format!("expected a non-negative integer, got {v}"))))
            .transpose()
    }
    fn u64(&self, field: &str) -> Result<u64, FrontendError> {
        self.opt_u64(field)?.ok_or_else(|| self.missing(field))
    }
    fn positive(&self, field: &str) -> Result<u64, FrontendError> {
        let v = self.u64(field)?;
        if v == 0 {
            return Err(self.invalid(field, "must be positive"));
        }
        Ok(v)
    }
    fn opt_f64(&self, field: &str) -> Result<Option<f64>, FrontendError> {
        self.get(field)
            .map(|v| v.as_f64().ok_or_else(|| self.invalid(field, format!("expected a number, got {v}"))))
            .transpose()
    }
    fn f64(&self, field: &str) -> Result<f64, FrontendError> {
        self.opt_f64(field)?.ok_or_else(|| self.missing(field))
    }
    fn opt_bool(&self, field: &str) -> Result<Option<bool>, FrontendError> {
        self.get(field)
            .map(|v| v.as_bool().ok_or_else(|| self.invalid(field, format!("expected true or false, got {v}"))))
            .transpose()
    }
    fn opt_str(&self, field: &str) -> Result<Option<&'a str>, FrontendError> {
        self.get(field)
            .map(|v| v.as_str().ok_or_else(|| self.invalid(field, format!("expected a string, got {v}"))))
            .transpose()
    }
    fn unsupported(&self, field: &str, value: impl std::fmt::Display, note: &str) -> FrontendError {
        FrontendError::Unsupported {
            path: self.path.to_path_buf(),
            field: self.name(field),
            value: value.to_string(),
            note: note.to_string(),
        }
    }
}

fn to_u32(f: &Fields, field: &str, v: u64) -> Result<u32, FrontendError> {
    u32::try_from(v).map_err(|_| f.invalid(field, format!("{v} is too large")))
}

impl DecoderConfig {
    /// Reads and validates `path` (a config.json).
    pub fn load(path: &Path) -> Result<DecoderConfig, FrontendError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FrontendError::MissingConfig { path: path.to_path_buf() });
            }
            Err(e) => return Err(FrontendError::Io { path: path.to_path_buf(), message: e.to_string() }),
        };
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| FrontendError::InvalidJson { path: path.to_path_buf(), message: e.to_string() })?;
        DecoderConfig::from_json(path, &json)
    }

    /// Parses a config.json already read; `path` is only used in messages.
    pub fn from_json(path: &Path, json: &Value) -> Result<DecoderConfig, FrontendError> {
        let obj = json.as_object().ok_or_else(|| FrontendError::InvalidJson {
            path: path.to_path_buf(),
            message: "the top level must be an object".into(),
        })?;
        let f = Fields { path, obj, prefix: "" };
        let family = parse_family(&f)?;

        let hidden = f.positive("hidden_size")?;
        let intermediate = f.positive("intermediate_size")?;
        let layers = f.u64("num_hidden_layers")?;
        let heads = to_u32(&f, "num_attention_heads", f.positive("num_attention_heads")?)?;
        let kv_heads = match f.opt_u64("num_key_value_heads")? {
            Some(k) => to_u32(&f, "num_key_value_heads", k)?,
            None => heads,
        };
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(f.invalid(
                "num_key_value_heads",
                format!("{kv_heads} must be a nonzero divisor of num_attention_heads {heads}"),
            ));
        }
        let head_dim = match f.opt_u64("head_dim")? {
            Some(d) => to_u32(&f, "head_dim", d)?,
            None => {
                if hidden % u64::from(heads) != 0 {
                    return Err(f.invalid(
                        "hidden_size",
                        format!("{hidden} is not a multiple of num_attention_heads {heads} (and no head_dim is given)"),
                    ));
                }
                to_u32(&f, "head_dim", hidden / u64::from(heads))?
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(f.invalid("head_dim", format!("{head_dim} must be even and positive for rotary embeddings")));
        }
        u32::try_from(u64::from(heads) * u64::from(head_dim))
            .map_err(|_| f.invalid("num_attention_heads", "heads * head_dim is too large"))?;
        let vocab = f.positive("vocab_size")?;
        let eps = f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6);
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(f.invalid("rms_norm_eps", format!("{eps} must be finite and non-negative")));
        }
        let tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(false);

        let act = f.opt_str("hidden_act")?.unwrap_or("silu");
        if act != "silu" {
            return Err(f.unsupported("hidden_act", act, "supported: silu"));
        }
        for field in ["attention_bias", "mlp_bias"] {
            if f.opt_bool(field)? == Some(true) {
                return Err(f.unsupported(field, true, "biases are not supported for LlamaForCausalLM yet"));
            }
        }
        let (rope_theta, rope_scaling) = parse_rope(&f)?;
        let dtype = match f.opt_str("dtype")? {
            Some(d) => Some(d.to_string()),
            None => f.opt_str("torch_dtype")?.map(str::to_string),
        };
        let model_type = f.opt_str("model_type")?.unwrap_or("model").to_string();
        Ok(DecoderConfig {
            family,
            model_type,
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            head_dim,
            vocab,
            rms_norm_eps: eps as f32,
            tie_word_embeddings,
            rope_theta,
            rope_scaling,
            dtype,
        })
    }
}

fn parse_family(f: &Fields) -> Result<Family, FrontendError> {
    let list = f.get("architectures").ok_or_else(|| f.missing("architectures"))?;
    let names: Vec<&str> = list
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(|| f.invalid("architectures", format!("expected a list of strings, got {list}")))?;
    names.iter().find_map(|n| FAMILIES.iter().find(|fam| fam.architecture == *n)).copied().ok_or_else(|| {
        FrontendError::UnsupportedArchitecture {
            path: f.path.to_path_buf(),
            found: format!("{names:?}"),
            supported: FAMILIES.iter().map(|fam| fam.architecture).collect::<Vec<_>>().join(", "),
        }
    })
}

/// Rope base and scaling from either config layout.
fn parse_rope(f: &Fields) -> Result<(f64, RopeScaling), FrontendError> {
    let nested = |field: &'static str, prefix: &'static str| -> Result<Option<Fields<'_>>, FrontendError> {
        match f.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_object()
                .map(|obj| Some(Fields { path: f.path, obj, prefix }))
                .ok_or_else(|| f.invalid(field, format!("expected an object, got {v}"))),
        }
    };
    // Current layout: everything inside rope_parameters. Older: top-level rope_theta plus an
    // optional rope_scaling.
    let (theta, params) = if let Some(rp) = nested("rope_parameters", "rope_parameters.")? {
        let theta = match rp.opt_f64("rope_theta")? {
            Some(t) => t,
            None => f.opt_f64("rope_theta")?.unwrap_or(10000.0),
        };
        (theta, Some(rp))
    } else {
        (f.opt_f64("rope_theta")?.unwrap_or(10000.0), nested("rope_scaling", "rope_scaling.")?)
    };
    if !(theta.is_finite() && theta > 0.0) {
        return Err(f.invalid("rope_theta", format!("{theta} must be positive")));
    }
    for (where_, key) in [(Some(f), "partial_rotary_factor"), (params.as_ref(), "partial_rotary_factor")] {
        if let Some(w) = where_
            && let Some(p) = w.opt_f64(key)?
            && p != 1.0
        {
            return Err(w.unsupported(key, p, "LlamaForCausalLM rotates the whole head"));
        }
    }
    let Some(p) = params else { return Ok((theta, RopeScaling::None)) };
    let (type_field, kind) = match p.opt_str("rope_type")? {
        Some(t) => ("rope_type", Some(t)),
        None => ("type", p.opt_str("type")?),
    };
    let kind = match kind {
        Some(k) => k,
        // rope_parameters without a type is the default rope; a rope_scaling object must say.
        None if p.prefix == "rope_parameters." => "default",
        None => return Err(p.missing("rope_type")),
    };
    match kind {
        "default" => Ok((theta, RopeScaling::None)),
        "llama3" => {
            let factor = p.f64("factor")?;
            let low_freq_factor = p.f64("low_freq_factor")?;
            let high_freq_factor = p.f64("high_freq_factor")?;
            let original_max_positions = p.positive("original_max_position_embeddings")?;
            if !(factor.is_finite() && factor > 0.0) {
                return Err(p.invalid("factor", format!("{factor} must be positive")));
            }
            if !(low_freq_factor > 0.0 && high_freq_factor.is_finite() && high_freq_factor > low_freq_factor) {
                return Err(p.invalid(
                    "high_freq_factor",
                    format!("{high_freq_factor} must exceed low_freq_factor {low_freq_factor} > 0"),
                ));
            }
            Ok((theta, RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions }))
        }
        other => Err(p.unsupported(type_field, format!("'{other}'"), "supported: default, llama3")),
    }
}
