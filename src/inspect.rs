//! `edgec inspect`: what a model costs, from its config alone (a config.json, or a GGUF file's
//! metadata; no weights are read).
//!
//! The graph is built from the config with placeholder weight references
//! ([`edgec_frontend::build_from_config`]), run through the default pass pipeline and
//! memory-planned exactly as a compile would, so the arena figure is the one a compile prints.

use anyhow::{Context, Result};
use edgec_frontend::{DecoderConfig, LoadOptions};
use edgec_ir::WeightSource;
use edgec_ir::quant::{KvDtype, Preset};
use edgec_passes::{OptLevel, PassManager, plan::plan_memory};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The figures `edgec inspect` prints.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub config_path: PathBuf,
    pub config: DecoderConfig,
    /// Elements of every checkpoint weight (tied embeddings counted once; rope tables, which the
    /// compiler computes, not counted).
    pub parameters: u64,
    /// f32 bytes of the rotary tables the weights file also holds at this `max_context`.
    pub rope_table_bytes: u64,
    /// f32 KV cache bytes per position (all layers, K and V).
    pub kv_bytes_per_token: u64,
    /// Under each `--kv-dtype`: KV bytes per position and the state block at `max_context`
    /// (as a compile plans it), or why that dtype cannot hold these rows (q8 needs whole blocks
    /// of 32).
    pub kv_by_dtype: Vec<(KvDtype, Result<KvSize, String>)>,
    pub max_tokens: u64,
    pub max_context: u64,
    pub arena_size: u64,
    pub arena_lower_bound: u64,
    /// The memory planner's winning strategy.
    pub plan_strategy: &'static str,
    /// Nodes computed in place over a dying operand.
    pub in_place: usize,
    pub state_size: u64,
    /// Kernel launches per forward call (dispatch groups) and how many nodes they run.
    pub launches: usize,
    pub nodes: usize,
    /// Fused kernels (op and attributes) and how many nodes run each.
    pub fused: Vec<(String, usize)>,
    /// Bytes of the weights file's tensors under each `--quant` preset (rope tables excluded).
    pub weights_by_preset: Vec<(Preset, u64)>,
}

/// The KV cache's size under one `--kv-dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvSize {
    /// Bytes per position, all layers, K and V.
    pub per_token: u64,
    /// The planned state block at `max_context`.
    pub state: u64,
}

/// The presets `inspect` sizes the weights under.
const SIZED_PRESETS: [Preset; 5] = [Preset::F32, Preset::F16, Preset::Q8, Preset::Q4, Preset::Q4S];

/// `path` is a config.json, a directory holding one, or a GGUF file (its metadata).
pub fn inspect(path: &Path, max_context: u64, max_tokens: Option<u64>) -> Result<Inspection> {
    let config_path = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    let config = if edgec_frontend::is_gguf(&config_path) {
        edgec_frontend::GgufFile::open(&config_path)?.decoder_config()?
    } else {
        DecoderConfig::load(&config_path)?
    };
    let max_tokens = max_tokens.unwrap_or(crate::compile::DEFAULT_MAX_TOKENS.min(max_context));
    let opts = LoadOptions { max_context, max_tokens };
    let mut graph = edgec_frontend::build_from_config(&config, &opts)?;
    let mut parameters = 0u64;
    let mut rope_table_bytes = 0u64;
    for w in &graph.weights {
        let n = edgec_ir::weights::weight_elements(w)?;
        match w.source {
            WeightSource::Rope { .. } => rope_table_bytes += n * 4,
            _ => parameters += n,
        }
    }
    PassManager::preset(OptLevel::O2).run(&mut graph, &mut |_, _| {})?;
    let plan = plan_memory(&graph).context("planning memory")?;
    let mut fused: std::collections::BTreeMap<String, usize> = Default::default();
    for n in graph.nodes.iter().filter(|n| matches!(n.op, edgec_ir::Op::Linear { .. })) {
        *fused.entry(edgec_ir::text::op_to_string(&n.op)).or_default() += 1;
    }
    let weights_by_preset = SIZED_PRESETS.iter().map(|&p| (p, preset_bytes(&graph, p))).collect();
    let kv_width = u64::from(config.kv_heads) * u64::from(config.head_dim);
    let kv_by_dtype = KvDtype::ALL.iter().map(|&kv| (kv, kv_figures(&graph, kv, config.layers, kv_width))).collect();
    Ok(Inspection {
        config_path,
        kv_bytes_per_token: config.layers * 2 * kv_width * 4,
        kv_by_dtype,
        config,
        parameters,
        rope_table_bytes,
        max_tokens,
        max_context,
        arena_size: plan.arena_size,
        arena_lower_bound: plan.lower_bound,
        plan_strategy: plan.strategy.name(),
        in_place: plan.in_place.iter().filter(|x| x.is_some()).count(),
        state_size: plan.state_size,
        launches: plan.groups.len(),
        nodes: graph.nodes.len(),
        fused: fused.into_iter().collect(),
        weights_by_preset,
    })
}

/// KV bytes per position and the planned state block with the KV states in `kv`.
fn kv_figures(g: &edgec_ir::Graph, kv: KvDtype, layers: u64, width: u64) -> Result<KvSize, String> {
    if kv.dtype().check_row(width).is_err() {
        return Err(format!("rows of {width} are not whole blocks of 32"));
    }
    let mut g = g.clone();
    edgec_ir::quant::apply_kv_dtype(&mut g, kv).map_err(|e| e.message)?;
    let (_, state) = edgec_passes::plan::state_layout(&g).map_err(|e| e.0)?;
    let row = kv.row_bytes(width).ok_or("row size overflows")?;
    Ok(KvSize { per_token: layers.saturating_mul(2).saturating_mul(row), state })
}

/// Bytes of the graph's checkpoint tensors (not the computed rope tables) stored as `preset`
/// would store them (weights a preset does not quantize stay f32).
fn preset_bytes(g: &edgec_ir::Graph, preset: Preset) -> u64 {
    let mut total = 0u64;
    for (i, w) in g.weights.iter().enumerate() {
        if matches!(w.source, WeightSource::Rope { .. }) {
            continue;
        }
        let elements = edgec_ir::weights::weight_elements(w).unwrap_or(0);
        let stored = edgec_ir::quant::choose(g, i, preset).and_then(|st| {
            let (rows, cols) = edgec_ir::quant::rows_cols(w.ty.shape.dims())?;
            st.bytes(rows, cols)
        });
        total = total.saturating_add(stored.unwrap_or(elements.saturating_mul(4)));
    }
    total
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes with a binary unit.
fn size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", units[u]) }
}

impl Inspection {
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let mut line = |k: &str, v: String| {
            let _ = writeln!(s, "{k:<13}{v}");
        };
        line("config", self.config_path.display().to_string());
        line("architecture", format!("{} (model_type {})", c.family.architecture, c.model_type));
        line(
            "shape",
            format!(
                "{} layers, hidden {}, {} heads / {} KV heads of {}, MLP {}, vocab {}{}",
                c.layers,
                c.hidden,
                c.heads,
                c.kv_heads,
                c.head_dim,
                c.intermediate,
                c.vocab,
                if c.tie_word_embeddings { ", tied embeddings" } else { "" }
            ),
        );
        let window = match c.sliding_window {
            Some(w) if w < self.max_context => format!("sliding window {w}"),
            Some(w) => format!("full causal (sliding window {w} >= max context)"),
            None => "full causal".into(),
        };
        line(
            "attention",
            format!("{window}; rope theta {} over {} of {} features", c.rope_theta, c.rotary_dim, c.head_dim),
        );
        let p = self.parameters;
        line("parameters", format!("{} ({:.2} B)", grouped(p), p as f64 / 1e9));
        let by_preset: Vec<String> =
            self.weights_by_preset.iter().map(|(p, b)| format!("{} {}", p.name(), size(*b))).collect();
        line("weights", format!("by --quant preset: {}", by_preset.join(", ")));
        line(
            "rope tables",
            format!(
                "{} (f32, computed at compile time for max context {})",
                size(self.rope_table_bytes),
                self.max_context
            ),
        );
        line(
            "KV cache",
            format!(
                "{} per token, {} per 1k tokens (f32); {} for max context {}",
                size(self.kv_bytes_per_token),
                size(self.kv_bytes_per_token * 1024),
                size(self.state_size),
                self.max_context
            ),
        );
        let by_dtype: Vec<String> = self
            .kv_by_dtype
            .iter()
            .map(|(kv, f)| match f {
                Ok(k) => format!("{} {} ({} per token)", kv.name(), size(k.state), size(k.per_token)),
                Err(why) => format!("{} not possible ({why})", kv.name()),
            })
            .collect();
        line("", format!("by --kv-dtype for max context {}: {}", self.max_context, by_dtype.join(", ")));
        line(
            "arena",
            format!(
                "{} bytes ({}) for max tokens {} per call (lower bound {} bytes; {}, {} nodes in place)",
                grouped(self.arena_size),
                size(self.arena_size),
                self.max_tokens,
                grouped(self.arena_lower_bound),
                self.plan_strategy,
                self.in_place
            ),
        );
        let fused: Vec<String> = self.fused.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        line(
            "kernels",
            format!(
                "{} launches per forward call for {} nodes; fused: {}",
                self.launches,
                self.nodes,
                if fused.is_empty() { "none".to_string() } else { fused.join(", ") }
            ),
        );
        let weights = p * 4 + self.rope_table_bytes;
        let logits = self.max_tokens * c.vocab * 4;
        let runtime = crate::report::RUNTIME_OVERHEAD_ESTIMATE;
        line(
            "peak DRAM",
            format!(
                "{} estimated: weights {} (f32, mapped) + arena + KV cache + logits {} + runtime {} (code not counted)",
                size(weights + self.arena_size + self.state_size + logits + runtime),
                size(weights),
                size(logits),
                size(runtime)
            ),
        );
        s
    }
}
