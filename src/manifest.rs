//! `edgec.json`: what a compile wrote into its output directory, so `edgec run OUTDIR` can find
//! and check the pieces.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "edgec.json";

#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The C symbol prefix and file stem.
    pub name: String,
    pub target: String,
    pub vocab: u32,
    pub max_tokens: u32,
    pub max_context: u32,
    /// How it was compiled (`None` in a manifest written before edgec recorded them).
    pub build: Option<BuildFlags>,
}

/// The compile flags a compiled directory cannot be told from its files alone, and what they
/// gave: recorded so `edgec bench OUTDIR --quant ...` can check them and report which
/// arithmetic prefill runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildFlags {
    pub quant: edgec_ir::quant::Preset,
    pub kv_dtype: edgec_ir::quant::KvDtype,
    pub activations: edgec_ir::quant::Activations,
    /// Elements of the matrices that multiply activations (all but an untied embedding table),
    /// and Σ over attention ops of heads × head_dim: what `edgec bench` counts prefill's
    /// operations from (`None` in manifests from before they were recorded).
    pub matmul_weight_elements: Option<u64>,
    pub attention_width: Option<u64>,
    /// Weight elements in the weights file, and those of them stored as int8 or int4 (`q8_c`,
    /// `q8_gG`, `q4s_gG`, `q4_gG`: the formats whose matmuls take int8 activations).
    pub weight_elements: u64,
    pub int8_weight_elements: u64,
}

impl BuildFlags {
    /// Whether most weights are int8/int4 and their matmuls take int8 activations, so that
    /// prefill's matmuls run on the int8 path.
    pub fn int8_matmuls(&self) -> bool {
        self.activations == edgec_ir::quant::Activations::Int8 && 2 * self.int8_weight_elements > self.weight_elements
    }

    /// Counts `stats` (the weights file's tensors) and `g`'s matmuls and attention into the
    /// flags.
    pub fn new(numerics: &crate::Numerics, g: &edgec_ir::Graph, stats: &[edgec_backend::WeightStat]) -> BuildFlags {
        use edgec_ir::{Op, Storage, ValueRef};
        let int8 = |s: Storage| matches!(s, Storage::Q8C | Storage::Q8G { .. } | Storage::Q4G { .. });
        // A matrix read by a matmul (a tied table too); an untied table is only gathered.
        let mut multiplies = vec![false; g.weights.len()];
        let mut attention_width = 0u64;
        for n in &g.nodes {
            match n.op {
                Op::MatMul { .. } | Op::Linear { .. } => {
                    for a in &n.args {
                        if let ValueRef::Weight(w) = a
                            && let Some(m) = multiplies.get_mut(*w as usize)
                        {
                            *m = true;
                        }
                    }
                }
                Op::Attention { heads, head_dim, .. } => {
                    attention_width = attention_width.saturating_add(u64::from(heads) * u64::from(head_dim));
                }
                _ => {}
            }
        }
        let matmul_weight_elements = g
            .weights
            .iter()
            .zip(&multiplies)
            .filter(|(w, m)| **m && w.ty.shape.0.len() == 2)
            .map(|(w, _)| edgec_ir::weights::weight_elements(w).unwrap_or(0))
            .sum();
        BuildFlags {
            quant: numerics.quant,
            kv_dtype: numerics.kv_dtype,
            activations: numerics.activations,
            matmul_weight_elements: Some(matmul_weight_elements),
            attention_width: Some(attention_width),
            weight_elements: stats.iter().map(|w| w.elements).sum(),
            int8_weight_elements: stats.iter().filter(|w| int8(w.storage)).map(|w| w.elements).sum(),
        }
    }
}

impl Manifest {
    pub fn object(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.o", self.name))
    }
    pub fn weights(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.weights", self.name))
    }
    pub fn header(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.h", self.name))
    }

    pub fn to_json(&self) -> String {
        let mut v = json!({
            "name": self.name,
            "target": self.target,
            "vocab": self.vocab,
            "max_tokens": self.max_tokens,
            "max_context": self.max_context,
        });
        if let (Some(b), Some(o)) = (&self.build, v.as_object_mut()) {
            o.insert("quant".into(), json!(b.quant.name()));
            o.insert("kv_dtype".into(), json!(b.kv_dtype.name()));
            o.insert("activations".into(), json!(b.activations.name()));
            o.insert("weight_elements".into(), json!(b.weight_elements));
            o.insert("int8_weight_elements".into(), json!(b.int8_weight_elements));
            if let (Some(m), Some(a)) = (b.matmul_weight_elements, b.attention_width) {
                o.insert("matmul_weight_elements".into(), json!(m));
                o.insert("attention_width".into(), json!(a));
            }
        }
        #[allow(clippy::expect_used, reason = "a serde_json::Value always serializes")]
        let text = serde_json::to_string_pretty(&v).expect("a JSON object serializes");
        text + "\n"
    }

    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
        let str_field = |k: &str| -> Result<String> {
            match v.get(k).and_then(Value::as_str) {
                Some(s) => Ok(s.to_string()),
                None => bail!("{}: missing string field '{k}'", path.display()),
            }
        };
        let u32_field = |k: &str| -> Result<u32> {
            match v.get(k).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Ok(n),
                None => bail!("{}: missing or invalid field '{k}'", path.display()),
            }
        };
        // The name becomes file names in `dir` and symbol names: a C identifier, never a path.
        let name = str_field("name")?;
        let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            bail!("{}: field 'name' = {name:?} is not a C identifier", path.display());
        }
        // Recorded since `edgec bench --quant`; all four or none.
        let build = if v.get("quant").is_some() {
            let quant = str_field("quant")?;
            let kv_dtype = str_field("kv_dtype")?;
            let u64_field = |k: &str| -> Result<u64> {
                match v.get(k).and_then(Value::as_u64) {
                    Some(n) => Ok(n),
                    None => bail!("{}: missing or invalid field '{k}'", path.display()),
                }
            };
            Some(BuildFlags {
                quant: edgec_ir::quant::Preset::from_name(&quant)
                    .with_context(|| format!("{}: field 'quant' = {quant:?} is not a preset", path.display()))?,
                kv_dtype: edgec_ir::quant::KvDtype::from_name(&kv_dtype)
                    .with_context(|| format!("{}: field 'kv_dtype' = {kv_dtype:?} is not a dtype", path.display()))?,
                // Written since `--activations`; directories from before took int8.
                activations: match v.get("activations") {
                    None => edgec_ir::quant::Activations::Int8,
                    Some(a) => a
                        .as_str()
                        .and_then(edgec_ir::quant::Activations::from_name)
                        .with_context(|| format!("{}: field 'activations' = {a} is not int8 or f32", path.display()))?,
                },
                // Written since `edgec bench` counts a compiled directory's prefill; optional.
                matmul_weight_elements: v.get("matmul_weight_elements").and_then(Value::as_u64),
                attention_width: v.get("attention_width").and_then(Value::as_u64),
                weight_elements: u64_field("weight_elements")?,
                int8_weight_elements: u64_field("int8_weight_elements")?,
            })
        } else {
            None
        };
        Ok(Manifest {
            name,
            target: str_field("target")?,
            vocab: u32_field("vocab")?,
            max_tokens: u32_field("max_tokens")?,
            max_context: u32_field("max_context")?,
            build,
        })
    }
}
