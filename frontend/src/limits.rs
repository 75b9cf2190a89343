//! The limits the readers check sizes from a file against before allocating, where a real
//! model could need more than the default. Each has a name for `edgec --limit NAME=VALUE`;
//! [`set`] changes it for the whole process (the readers consult [`get`]). The fixed limits
//! that follow from the formats themselves (a GGUF tensor has at most 4 dims, arrays nest at
//! most 4 deep) are constants in their readers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A configurable limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The most elements of a value the ONNX import-time folder computes or reads (a folded
    /// causal mask is max_context² elements).
    OnnxFoldElements,
    /// The most nodes of an ONNX graph once model-local functions are inlined.
    OnnxNodes,
    /// The longest GGUF metadata string or key, in bytes.
    GgufStringBytes,
    /// The most decoder layers of a config (config.json or GGUF metadata).
    Layers,
}

pub const ALL: [Limit; 4] = [Limit::OnnxFoldElements, Limit::OnnxNodes, Limit::GgufStringBytes, Limit::Layers];

static VALUES: [AtomicU64; 4] = [
    AtomicU64::new(Limit::OnnxFoldElements.default_value()),
    AtomicU64::new(Limit::OnnxNodes.default_value()),
    AtomicU64::new(Limit::GgufStringBytes.default_value()),
    AtomicU64::new(Limit::Layers.default_value()),
];

impl Limit {
    pub const fn name(self) -> &'static str {
        match self {
            Limit::OnnxFoldElements => "onnx-fold-elements",
            Limit::OnnxNodes => "onnx-nodes",
            Limit::GgufStringBytes => "gguf-string-bytes",
            Limit::Layers => "layers",
        }
    }

    pub const fn default_value(self) -> u64 {
        match self {
            Limit::OnnxFoldElements => 1 << 20,
            Limit::OnnxNodes => 1 << 20,
            Limit::GgufStringBytes => 16 << 20,
            Limit::Layers => 4096,
        }
    }

    /// What the limit bounds, for `--help`.
    pub const fn what(self) -> &'static str {
        match self {
            Limit::OnnxFoldElements => "elements of a value the ONNX import folds (a causal mask is max_context²)",
            Limit::OnnxNodes => "nodes of an ONNX graph with its functions inlined",
            Limit::GgufStringBytes => "bytes of a GGUF metadata string or key",
            Limit::Layers => "decoder layers of a config",
        }
    }

    const fn index(self) -> usize {
        match self {
            Limit::OnnxFoldElements => 0,
            Limit::OnnxNodes => 1,
            Limit::GgufStringBytes => 2,
            Limit::Layers => 3,
        }
    }

    pub fn from_name(name: &str) -> Option<Limit> {
        ALL.into_iter().find(|l| l.name() == name)
    }
}

/// The limit's current value.
pub fn get(limit: Limit) -> u64 {
    VALUES[limit.index()].load(Ordering::Relaxed)
}

/// Sets a limit for the whole process.
pub fn set(limit: Limit, value: u64) {
    VALUES[limit.index()].store(value, Ordering::Relaxed);
}

/// Parses `NAME=VALUE` (VALUE a positive integer; `_` separators and a `k`, `M` or `G`
/// suffix for 2^10, 2^20, 2^30 are accepted) and sets that limit.
pub fn set_from_str(s: &str) -> Result<(Limit, u64), String> {
    let names = || ALL.map(Limit::name).join(", ");
    let (name, value) =
        s.split_once('=').ok_or_else(|| format!("--limit '{s}': expected NAME=VALUE (NAME one of {})", names()))?;
    let limit =
        Limit::from_name(name).ok_or_else(|| format!("--limit: unknown limit '{name}' (known: {})", names()))?;
    let digits = value.replace('_', "");
    let (digits, shift) = match digits.strip_suffix(['k', 'K']) {
        Some(d) => (d.to_string(), 10),
        None => match digits.strip_suffix('M') {
            Some(d) => (d.to_string(), 20),
            None => match digits.strip_suffix('G') {
                Some(d) => (d.to_string(), 30),
                None => (digits.clone(), 0),
            },
        },
    };
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--limit {name}: '{value}' is not a positive integer"))?;
    set(limit, n);
    Ok((limit, n))
}
