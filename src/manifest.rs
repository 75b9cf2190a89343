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
        let v = json!({
            "name": self.name,
            "target": self.target,
            "vocab": self.vocab,
            "max_tokens": self.max_tokens,
            "max_context": self.max_context,
        });
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
        Ok(Manifest {
            name,
            target: str_field("target")?,
            vocab: u32_field("vocab")?,
            max_tokens: u32_field("max_tokens")?,
            max_context: u32_field("max_context")?,
        })
    }
}
