//! `config.json` of a HuggingFace decoder, parsed once into [`DecoderConfig`].
//!
//! Both layouts are read: current transformers (`rope_parameters: {rope_theta, rope_type, ...}`,
//! `dtype`) and the older one (top-level `rope_theta`, `rope_scaling: {rope_type | type, ...}`,
//! `torch_dtype`).

use crate::error::FrontendError;
use edgec_ir::RopeScaling;
use serde_json::{Map, Value};
use std::path::Path;

/// Which normalization a family uses (for every norm of the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// `RMSNorm` with a weight; eps from `rms_norm_eps`.
    Rms,
    /// `LayerNorm` with a weight and a bias; eps from `layer_norm_eps`.
    Layer,
}

/// The MLP's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(act(gate(x)) * up(x))` (SwiGLU); `gate_proj`/`up_proj`/`down_proj`, or one fused
    /// `gate_up_proj` (gate rows first) when `fused` is set.
    Gated { fused: bool },
    /// `fc2(act(fc1(x)))`.
    Plain,
}

/// Which layers use `sliding_window` when config.json has no `layer_types` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlidingRule {
    /// The family has no sliding-window attention.
    Never,
    /// Every layer, when `sliding_window` is set (Mistral, Phi-3).
    AllLayers,
    /// Layers `>= max_window_layers`, when `use_sliding_window` is true (Qwen2, Qwen3).
    FromMaxWindowLayers,
}

/// Which projections carry a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Biases {
    pub qkv: bool,
    /// The attention output projection.
    pub o: bool,
    pub mlp: bool,
    pub lm_head: bool,
}

/// What distinguishes one architecture family from another: a small description that the one
/// decoder-layer builder (`decoder.rs`) follows. Tensor names are HuggingFace's, relative to
/// `model.layers.N.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The `architectures` entry of config.json.
    pub architecture: &'static str,
    pub norm: NormKind,
    /// Attention and MLP both read the one `input_layernorm` output and are added to the
    /// residual together (Phi-2); otherwise the MLP reads `post_attention_layernorm` of the
    /// updated residual.
    pub parallel: bool,
    /// One `self_attn.qkv_proj` (q rows, then k, then v) instead of `q_proj`/`k_proj`/`v_proj`.
    pub fused_qkv: bool,
    /// The attention output projection: `o_proj`, or `dense` (Phi-2).
    pub o_proj: &'static str,
    pub mlp: MlpKind,
    /// Biases the family always has.
    pub biases: Biases,
    /// Per-head RMSNorm of q and k (`self_attn.q_norm`/`k_norm`, over head_dim, before rope).
    pub qk_norm: bool,
    /// `partial_rotary_factor` is honoured (only the first features of each head rotate).
    pub partial_rotary: bool,
    pub sliding: SlidingRule,
    /// The final norm: `model.norm` or `model.final_layernorm`.
    pub final_norm: &'static str,
}

const LLAMA: Family = Family {
    architecture: "LlamaForCausalLM",
    norm: NormKind::Rms,
    parallel: false,
    fused_qkv: false,
    o_proj: "o_proj",
    mlp: MlpKind::Gated { fused: false },
    biases: Biases { qkv: false, o: false, mlp: false, lm_head: false },
    qk_norm: false,
    partial_rotary: false,
    sliding: SlidingRule::Never,
    final_norm: "model.norm",
};

/// The most decoder layers a config may declare (real models have at most a few hundred);
/// per-layer tables are allocated from this count before any tensor is looked up.
/// The default of `--limit layers` ([`crate::limits::Limit::Layers`]).
pub const MAX_LAYERS: u64 = crate::limits::Limit::Layers.default_value();

/// The families this frontend builds. Each one is checked against PyTorch by a fixture.
pub const FAMILIES: &[Family] = &[
    LLAMA,
    Family { architecture: "MistralForCausalLM", sliding: SlidingRule::AllLayers, ..LLAMA },
    Family {
        architecture: "Qwen2ForCausalLM",
        biases: Biases { qkv: true, ..LLAMA.biases },
        sliding: SlidingRule::FromMaxWindowLayers,
        ..LLAMA
    },
    Family { architecture: "Qwen3ForCausalLM", qk_norm: true, sliding: SlidingRule::FromMaxWindowLayers, ..LLAMA },
    Family {
        architecture: "Phi3ForCausalLM",
        fused_qkv: true,
        mlp: MlpKind::Gated { fused: true },
        partial_rotary: true,
        sliding: SlidingRule::AllLayers,
        ..LLAMA
    },
    Family {
        architecture: "PhiForCausalLM",
        norm: NormKind::Layer,
        parallel: true,
        o_proj: "dense",
        mlp: MlpKind::Plain,
        biases: Biases { qkv: true, o: true, mlp: true, lm_head: true },
        partial_rotary: true,
        final_norm: "model.final_layernorm",
        ..LLAMA
    },
];

/// The MLP activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`.
    Silu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation of GELU.
    GeluTanh,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
}

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
    /// The epsilon of every norm (`rms_norm_eps`, or `layer_norm_eps` for LayerNorm families).
    pub norm_eps: f32,
    pub tie_word_embeddings: bool,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Features of each head that rotate (`head_dim * partial_rotary_factor`; even).
    pub rotary_dim: u32,
    pub activation: Activation,
    /// The family's biases (config.json's `attention_bias`/`mlp_bias` must not ask for more).
    pub biases: Biases,
    /// Sliding-window attention of every layer (`None`: full causal attention).
    pub sliding_window: Option<u64>,
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
        let max = crate::limits::get(crate::limits::Limit::Layers);
        if layers > max {
            return Err(f.invalid(
                "num_hidden_layers",
                format!("{layers} exceeds the limit of {max} layers (--limit layers=N raises it)"),
            ));
        }
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
        let eps_field = match family.norm {
            NormKind::Rms => "rms_norm_eps",
            NormKind::Layer => "layer_norm_eps",
        };
        let eps = f.opt_f64(eps_field)?.unwrap_or(if family.norm == NormKind::Rms { 1e-6 } else { 1e-5 });
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(f.invalid(eps_field, format!("{eps} must be finite and non-negative")));
        }
        let tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(false);

        let activation = match f.opt_str("hidden_act")?.unwrap_or("silu") {
            "silu" | "swish" => Activation::Silu,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => {
                return Err(f.unsupported("hidden_act", other, "supported: silu, gelu, gelu_new, gelu_pytorch_tanh"));
            }
        };
        // Llama's and Qwen3's `attention_bias`/`mlp_bias` switches: no fixture checks them yet.
        for field in ["attention_bias", "mlp_bias"] {
            if f.opt_bool(field)? == Some(true) {
                let note = format!("biases are not supported for {} yet", family.architecture);
                return Err(f.unsupported(field, true, &note));
            }
        }
        let biases = family.biases;
        if f.opt_bool("qk_layernorm")? == Some(true) {
            return Err(f.unsupported("qk_layernorm", true, "per-head LayerNorm of q and k is not supported yet"));
        }
        let (rope_theta, rope_scaling, partial) = parse_rope(&f)?;
        let rotary_dim = match partial {
            None => head_dim,
            Some((field, p)) => {
                if !family.partial_rotary {
                    let note = format!("{} rotates the whole head", family.architecture);
                    return Err(field.unsupported("partial_rotary_factor", p, &note));
                }
                // transformers: int(head_dim * partial_rotary_factor).
                let r = (f64::from(head_dim) * p) as u32;
                if !(p > 0.0 && p <= 1.0) || r == 0 || !r.is_multiple_of(2) {
                    return Err(field.invalid(
                        "partial_rotary_factor",
                        format!("{p} gives {r} rotary features of {head_dim}; need an even number >= 2"),
                    ));
                }
                r
            }
        };
        let sliding_window = parse_sliding(&f, &family, layers)?;
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
            norm_eps: eps as f32,
            tie_word_embeddings,
            rope_theta,
            rope_scaling,
            rotary_dim,
            activation,
            biases,
            sliding_window,
            dtype,
        })
    }
}

/// The window every layer uses, from `layer_types` when given, else from the family's rule.
/// Mixed full/sliding layers are refused (the builder would honour them, but no fixture checks
/// them against PyTorch yet).
fn parse_sliding(f: &Fields, family: &Family, layers: u64) -> Result<Option<u64>, FrontendError> {
    let window = f.opt_u64("sliding_window")?;
    if window == Some(0) {
        return Err(f.invalid("sliding_window", "must be positive"));
    }
    // Which layers slide, and the field that said so (for messages).
    let (sliding, field): (Vec<bool>, &str) = if let Some(list) = f.get("layer_types") {
        let kinds = list
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| f.invalid("layer_types", format!("expected a list of strings, got {list}")))?;
        if kinds.len() as u64 != layers {
            return Err(f.invalid("layer_types", format!("has {} entries for {layers} layers", kinds.len())));
        }
        let sliding = kinds
            .iter()
            .map(|k| match *k {
                "full_attention" => Ok(false),
                "sliding_attention" => Ok(true),
                other => Err(f.unsupported(
                    "layer_types",
                    format!("'{other}'"),
                    "supported layer kinds: full_attention, sliding_attention",
                )),
            })
            .collect::<Result<Vec<bool>, _>>()?;
        (sliding, "layer_types")
    } else {
        match family.sliding {
            SlidingRule::Never => (vec![false; layers as usize], "sliding_window"),
            SlidingRule::AllLayers => (vec![window.is_some(); layers as usize], "sliding_window"),
            SlidingRule::FromMaxWindowLayers => {
                let on = f.opt_bool("use_sliding_window")?.unwrap_or(false) && window.is_some();
                let first = f.opt_u64("max_window_layers")?.unwrap_or(28);
                ((0..layers).map(|i| on && i >= first).collect(), "max_window_layers")
            }
        }
    };
    let n = sliding.iter().filter(|&&s| s).count();
    if n == 0 {
        return Ok(None);
    }
    if n != sliding.len() {
        let value = if field == "layer_types" {
            format!("{n} of {} layers sliding", sliding.len())
        } else {
            f.get(field).map_or("28".to_string(), Value::to_string)
        };
        return Err(f.unsupported(field, value, "mixed full and sliding-window layers are not supported yet"));
    }
    match window {
        Some(w) => Ok(Some(w)),
        None => Err(f.invalid("sliding_window", "layers use sliding_attention but sliding_window is null")),
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

/// A `partial_rotary_factor` other than 1, with the object it was found in.
type Partial<'a> = Option<(Fields<'a>, f64)>;

/// Rope base, scaling and partial rotary factor from either config layout.
fn parse_rope<'a>(f: &Fields<'a>) -> Result<(f64, RopeScaling, Partial<'a>), FrontendError> {
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
    let mut partial = None;
    for w in [Some(f), params.as_ref()].into_iter().flatten() {
        if let Some(p) = w.opt_f64("partial_rotary_factor")?
            && p != 1.0
        {
            partial = Some((Fields { path: w.path, obj: w.obj, prefix: w.prefix }, p));
        }
    }
    let Some(p) = params else { return Ok((theta, RopeScaling::None, partial)) };
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
        "default" => Ok((theta, RopeScaling::None, partial)),
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
            let scaling = RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions };
            Ok((theta, scaling, partial))
        }
        other => Err(p.unsupported(type_field, format!("'{other}'"), "supported: default, llama3")),
    }
}
