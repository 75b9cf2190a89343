//! `edgec bench`: how fast a model runs on this machine, next to what this machine can do.
//!
//! The model is compiled for the host (unless MODEL is already a compiled directory) with the
//! request's `--quant`, `--kv-dtype` and `--max-context`, linked and loaded as `edgec run`
//! does. One prefill of `prompt_len` tokens and a few decode steps warm it up; then `repeats`
//! rounds each time one prefill (a single forward call over the prompt) and `gen_len` decode
//! steps (one forward call per token, greedy), and the medians are reported. Next to them, the
//! machine's figures, measured here with the same thread count, read like a roofline: decode
//! against the read bandwidth, prefill against the compute peak of the path it runs on.
//!
//! - **read bandwidth**: every thread sums its own contiguous part of a buffer much larger than
//!   the last-level cache (first touched by the thread that reads it); bytes / wall time,
//!   best of several passes (as STREAM reports), measured before the timed rounds and again
//!   after them. Decode is compared with the higher: on a shared or virtual machine the
//!   figure can move between runs (this project's 2-vCPU guest reads either 35-41 or 55-78
//!   GB/s), and against the lower a decode could claim more than all of it. The report gives
//!   the lower too, and says when the two differ by more than 10%;
//! - **f32 FMA peak of the path the f32 kernels use**: Cranelift emits 128-bit vectors only
//!   (f32x4 `vfmadd` on x86_64, `fmla` on aarch64), so every thread runs a loop of 12
//!   independent 128-bit FMA chains (enough to hide the latency on two FMA pipes), calibrated
//!   to run about 0.1 s; flops / wall time, best of several runs. The 256-bit (AVX2) peak is
//!   measured too and printed for reference. The x86 loops are `asm!` (loop included), so
//!   debug and release builds run the same instructions.
//! - **int8 dot-product peak of the path the variant that ran uses** ([`Int8Path`]; the
//!   int8-activation matmuls of `backend/src/kernels/qdot.rs`): the same calibrated loop of
//!   independent chains, of 128-bit `vpdpbusd` (AVX-VNNI's VEX form or AVX512-VNNI's EVEX
//!   form), of `sdot` (aarch64 dotprod), or, on the x86 baseline, of the sequence that
//!   variant's kernels execute per 16 weight bytes (`vpmovzxbw`, `vpxor`, `vpunpckhbw`, two
//!   `vpmaddwd`, `vphaddd`, `vpaddd`; the activations are widened once per row). Ops count 2
//!   per multiply-add, as prefill's do.
//!
//! Model figures: decode bytes per token are the weights file's bytes, less the share of an
//! untied embedding table (decode gathers one row of it) — the KV cache and activations are not
//! counted. Prefill operations are 2 × (every weight that multiplies: all but an untied
//! embedding table) per token, plus causal attention (`4 × head_dim × heads × layers ×
//! T(T+1)/2`). When most of the weights file's elements are int8 or int4 (the `q8*` and `q4*`
//! presets, or a GGUF's Q8_0/Q4_0/Q4_1 blocks kept), prefill's matmuls take int8 activations
//! on every variant, and its operations are compared with the int8 peak; otherwise with the
//! f32x4 FMA peak. (Attention runs in f32 either way; it is counted against the same peak.)

use crate::compile::{CompileRequest, compile};
use crate::manifest::{self, BuildFlags, Manifest};
use anyhow::{Context, Result, bail};
use edgec_frontend::DecoderConfig;
use edgec_ir::quant::{Activations, KvDtype, Preset};
use edgec_passes::OptLevel;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use target_lexicon::Triple;

#[derive(Clone, Debug)]
pub struct BenchRequest {
    /// A checkpoint directory, or a directory written by `edgec compile` for the host.
    pub model: PathBuf,
    /// 0: the runtime's default.
    pub threads: usize,
    pub prompt_len: usize,
    pub gen_len: usize,
    /// Timed rounds; medians are reported.
    pub repeats: usize,
    pub linker: Option<String>,
    /// The bandwidth buffer's size; default 16 × the last-level cache, within 1–4 GiB.
    pub bandwidth_buffer: Option<u64>,
    /// Weight storage for a checkpoint (`None`: compile's default, f32). With a compiled
    /// directory, only the preset it records.
    pub quant: Option<Preset>,
    /// The KV cache's dtype for a checkpoint (`None`: f32); as `quant` for a compiled directory.
    pub kv_dtype: Option<KvDtype>,
    /// How int8/int4-weight matmuls take activations for a checkpoint (`None`: int8); as
    /// `quant` for a compiled directory.
    pub activations: Option<Activations>,
    /// Positions the KV cache holds for a checkpoint (`None`: `prompt_len + gen_len`); with a
    /// compiled directory, only the one it was compiled with.
    pub max_context: Option<u64>,
}

/// What the model costs per token, from its config (unknown for a compiled directory).
#[derive(Clone, Debug)]
pub struct ModelCost {
    pub parameters: u64,
    /// Parameters that multiply activations: the matrices, all but an untied embedding table.
    pub matmul_parameters: u64,
    /// Σ over layers of heads × head_dim: the width causal attention multiplies per pair.
    pub attention_width: u64,
}

impl ModelCost {
    pub fn from_config(cfg: &DecoderConfig) -> Result<ModelCost> {
        let tensors = edgec_frontend::checkpoint_tensors(cfg)?;
        let count = |s: &Vec<u64>| s.iter().product::<u64>();
        let parameters: u64 = tensors.iter().map(|(_, s)| count(s)).sum();
        let multiplies =
            |n: &str, s: &Vec<u64>| s.len() == 2 && (cfg.tie_word_embeddings || n != "model.embed_tokens.weight");
        let matmul_parameters = tensors.iter().filter(|(n, s)| multiplies(n, s)).map(|(_, s)| count(s)).sum();
        let attention_width = cfg
            .layers
            .checked_mul(u64::from(cfg.heads) * u64::from(cfg.head_dim))
            .context("config.json: layers × heads × head_dim overflows")?;
        Ok(ModelCost { parameters, matmul_parameters, attention_width })
    }

    /// The cost a compiled directory's edgec.json records (`None` before edgec recorded it).
    pub fn from_build(b: &BuildFlags) -> Option<ModelCost> {
        Some(ModelCost {
            parameters: b.weight_elements,
            matmul_parameters: b.matmul_weight_elements?,
            attention_width: b.attention_width?,
        })
    }

    /// Operations (2 per multiply-add) of a prefill of `t` tokens from position 0.
    pub fn prefill_ops(&self, t: u64) -> f64 {
        self.prefill_matmul_ops(t) + self.prefill_attention_ops(t)
    }

    /// The weight matmuls' share of [`ModelCost::prefill_ops`].
    pub fn prefill_matmul_ops(&self, t: u64) -> f64 {
        2.0 * self.matmul_parameters as f64 * t as f64
    }

    /// Causal attention's share of [`ModelCost::prefill_ops`] (scores and weighted values).
    pub fn prefill_attention_ops(&self, t: u64) -> f64 {
        let pairs = (t * (t + 1) / 2) as f64;
        4.0 * self.attention_width as f64 * pairs
    }
}

/// The int8 dot-product instructions of a variant's int8-activation matmuls (`qdot.rs`'s
/// `Dot` trees as the variant compiles them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Path {
    /// x86_64 `avxvnni`: VEX `vpdpbusd` on xmm registers.
    AvxVnni,
    /// x86_64 `avx512vnni`: EVEX `vpdpbusd` on xmm registers.
    Avx512Vnni,
    /// x86_64 baseline (AVX2): weights widened to i16, `vpmaddwd` pairs, `vphaddd`.
    Madd,
    /// aarch64 `dotprod`: `sdot`.
    Sdot,
}

impl Int8Path {
    /// The path of the variant (`baseline`, `avxvnni`, ...) that ran on this architecture;
    /// `None` where no peak loop exists (aarch64's baseline, whose widening multiplies are
    /// not measured).
    pub fn of_variant(variant: &str) -> Option<Int8Path> {
        match variant {
            "avxvnni" => Some(Int8Path::AvxVnni),
            "avx512vnni" => Some(Int8Path::Avx512Vnni),
            "dotprod" => Some(Int8Path::Sdot),
            "baseline" if cfg!(target_arch = "x86_64") => Some(Int8Path::Madd),
            _ => None,
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Int8Path::AvxVnni => "int8 vpdpbusd xmm (AVX-VNNI)",
            Int8Path::Avx512Vnni => "int8 vpdpbusd xmm (AVX512-VNNI)",
            Int8Path::Madd => "int8 vpmaddwd (AVX2)",
            Int8Path::Sdot => "int8 sdot (dotprod)",
        }
    }
}

/// The machine's figures, measured with `threads` threads.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu: String,
    pub threads: usize,
    /// The higher of the read bandwidths measured before and after the timed rounds.
    pub read_bytes_per_s: f64,
    /// The lower of the two (equal to the higher when only one was measured).
    pub read_bytes_per_s_low: f64,
    pub bandwidth_buffer_bytes: u64,
    /// The 128-bit f32 FMA peak (the f32 kernels' path), if this architecture is measured.
    pub fma128_flops_per_s: Option<f64>,
    /// The 256-bit (AVX2) f32 FMA peak, for reference (x86_64 with FMA only).
    pub fma256_flops_per_s: Option<f64>,
    /// The int8 path of the variant that ran, if it has a peak loop.
    pub int8_path: Option<Int8Path>,
    /// Its peak in ops/s (2 per multiply-add), if the CPU runs it.
    pub int8_ops_per_s: Option<f64>,
}

/// Which arithmetic prefill's matmuls ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillPath {
    /// f32 activations (f32, f16 or bf16 weights): f32x4 FMAs.
    F32,
    /// int8 activations (int8 or int4 weights): the variant's [`Int8Path`].
    Int8,
}

impl PrefillPath {
    pub fn name(self) -> &'static str {
        match self {
            PrefillPath::F32 => "f32",
            PrefillPath::Int8 => "int8",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: PathBuf,
    pub name: String,
    pub threads: usize,
    pub prompt_len: usize,
    pub gen_len: usize,
    pub repeats: usize,
    pub max_context: u32,
    /// The compile flags and weight formats, when known (a checkpoint compiled here, or an
    /// OUTDIR whose `edgec.json` records them).
    pub build: Option<BuildFlags>,
    pub weights_file_bytes: u64,
    /// The entry point that ran: `baseline` or a CPU-feature variant (`avx512vnni`, ...).
    pub variant: &'static str,
    pub cost: Option<ModelCost>,
    /// Median over the rounds.
    pub prefill_seconds: f64,
    pub decode_seconds_per_token: f64,
    pub decode_weight_bytes_per_token: f64,
    pub machine: Machine,
}

impl BenchReport {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_len as f64 / self.prefill_seconds
    }
    pub fn decode_tokens_per_s(&self) -> f64 {
        1.0 / self.decode_seconds_per_token
    }
    pub fn decode_weight_bytes_per_s(&self) -> f64 {
        self.decode_weight_bytes_per_token * self.decode_tokens_per_s()
    }
    pub fn decode_bandwidth_pct(&self) -> f64 {
        100.0 * self.decode_weight_bytes_per_s() / self.machine.read_bytes_per_s
    }
    pub fn prefill_ops(&self) -> Option<f64> {
        self.cost.as_ref().map(|c| c.prefill_ops(self.prompt_len as u64))
    }
    pub fn prefill_ops_per_s(&self) -> Option<f64> {
        self.prefill_ops().map(|f| f / self.prefill_seconds)
    }
    /// Which arithmetic prefill's matmuls ran on (unknown for an OUTDIR whose manifest does not
    /// record its weight formats).
    pub fn prefill_path(&self) -> Option<PrefillPath> {
        let b = self.build.as_ref()?;
        Some(if b.int8_matmuls() { PrefillPath::Int8 } else { PrefillPath::F32 })
    }
    /// The peak prefill is compared with: its name and ops/s (if measured here).
    pub fn prefill_peak(&self) -> Option<(&'static str, Option<f64>)> {
        let m = &self.machine;
        Some(match self.prefill_path()? {
            PrefillPath::F32 => (FMA_PATH, m.fma128_flops_per_s),
            PrefillPath::Int8 => (m.int8_path.map_or("int8", Int8Path::name), m.int8_ops_per_s),
        })
    }
    pub fn prefill_peak_pct(&self) -> Option<f64> {
        Some(100.0 * self.prefill_ops_per_s()? / self.prefill_peak()?.1?)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.machine;
        let b = self.build.as_ref();
        let peak = self.prefill_peak();
        json!({
            "model": self.model.display().to_string(),
            "name": self.name,
            "threads": self.threads,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "repeats": self.repeats,
            "max_context": self.max_context,
            "quant": b.map(|b| b.quant.name()),
            "kv_dtype": b.map(|b| b.kv_dtype.name()),
            "activations": b.map(|b| b.activations.name()),
            "int8_weight_share": b.map(|b| b.int8_weight_elements as f64 / b.weight_elements.max(1) as f64),
            "parameters": self.cost.as_ref().map(|c| c.parameters),
            "weights_file_bytes": self.weights_file_bytes,
            "variant": self.variant,
            "prefill_tokens_per_s": self.prefill_tokens_per_s(),
            "prefill_seconds": self.prefill_seconds,
            "prefill_ops": self.prefill_ops(),
            "prefill_attention_ops": self.cost.as_ref().map(|c| c.prefill_attention_ops(self.prompt_len as u64)),
            "prefill_ops_per_s": self.prefill_ops_per_s(),
            "prefill_path": self.prefill_path().map(PrefillPath::name),
            "prefill_peak": peak.map(|p| p.0),
            "prefill_peak_ops_per_s": peak.and_then(|p| p.1),
            "prefill_peak_pct": self.prefill_peak_pct(),
            "decode_tokens_per_s": self.decode_tokens_per_s(),
            "decode_weight_bytes_per_token": self.decode_weight_bytes_per_token,
            "decode_weight_bytes_per_s": self.decode_weight_bytes_per_s(),
            "decode_bandwidth_pct": self.decode_bandwidth_pct(),
            "machine": {
                "cpu": m.cpu,
                "threads": m.threads,
                "read_bytes_per_s": m.read_bytes_per_s,
                "read_bytes_per_s_low": m.read_bytes_per_s_low,
                "bandwidth_buffer_bytes": m.bandwidth_buffer_bytes,
                "fma_path": FMA_PATH,
                "fma_peak_flops_per_s": m.fma128_flops_per_s,
                "fma256_peak_flops_per_s": m.fma256_flops_per_s,
                "int8_path": m.int8_path.map(Int8Path::name),
                "int8_peak_ops_per_s": m.int8_ops_per_s,
            },
        })
    }

    pub fn to_text(&self) -> String {
        let m = &self.machine;
        let g = |x: f64| x / 1e9;
        let mut s = format!(
            "model    {} ({}), {} variant, {}, prompt {} tokens, {} generated, median of {} rounds\n",
            self.model.display(),
            self.name,
            self.variant,
            threads_text(self.threads),
            self.prompt_len,
            self.gen_len,
            self.repeats
        );
        s += &format!("weights  {:.1} MB file", self.weights_file_bytes as f64 / 1e6);
        match &self.build {
            Some(b) => {
                s += &format!(
                    ", --quant {} ({:.1}% of the weights int8/int4), --kv-dtype {}, --activations {}",
                    b.quant.name(),
                    100.0 * b.int8_weight_elements as f64 / b.weight_elements.max(1) as f64,
                    b.kv_dtype.name(),
                    b.activations.name()
                );
            }
            None => s += " (its edgec.json does not record --quant and --kv-dtype)",
        }
        s += &format!(", --max-context {}\n", self.max_context);
        s += &format!(
            "machine  {}, {}: read bandwidth {:.1} GB/s (sum over a {} MiB buffer, best pass before and after the rounds",
            m.cpu,
            threads_text(m.threads),
            g(m.read_bytes_per_s),
            m.bandwidth_buffer_bytes >> 20
        );
        if m.read_bytes_per_s_low < 0.9 * m.read_bytes_per_s {
            s += &format!(
                "; the other measured {:.1} GB/s: this machine's bandwidth moved while it ran, so decode's share of it is uncertain",
                g(m.read_bytes_per_s_low)
            );
        }
        s += ")\n";
        let peak = |name: &str, unit: &str, x: Option<f64>| match x {
            Some(x) => format!("{name} {:.1} {unit}", g(x)),
            None => format!("{name} not measured on this CPU"),
        };
        s += &format!(
            "peaks    {}, {}{} (calibrated loops of independent instructions, best run)\n",
            peak(&format!("{FMA_PATH} peak"), "GFLOP/s", m.fma128_flops_per_s),
            match m.int8_path {
                Some(p) => peak(&format!("{} peak", p.name()), "GOP/s", m.int8_ops_per_s),
                None => format!("no int8 peak loop for the {} variant", self.variant),
            },
            m.fma256_flops_per_s
                .map_or(String::new(), |f| format!("; 256-bit AVX2 FMA {:.1} GFLOP/s for reference", g(f)))
        );
        s += &format!(
            "decode:  {:.1} tok/s, {:.1} GB/s = {:.1}% of read bandwidth {:.1} GB/s ({:.1} MB of weights per token)\n",
            self.decode_tokens_per_s(),
            g(self.decode_weight_bytes_per_s()),
            self.decode_bandwidth_pct(),
            g(m.read_bytes_per_s),
            self.decode_weight_bytes_per_token / 1e6,
        );
        s += &format!("prefill: {:.1} tok/s", self.prefill_tokens_per_s());
        match (self.prefill_ops_per_s(), self.prefill_peak()) {
            (Some(f), Some((name, Some(p)))) => {
                s += &format!(", {:.1} GOP/s = {:.1}% of the {name} peak {:.1} GOP/s", g(f), 100.0 * f / p, g(p));
            }
            (Some(f), Some((name, None))) => {
                s += &format!(", {:.1} GOP/s (no peak measured for the {name} path)", g(f))
            }
            (Some(f), None) => s += &format!(", {:.1} GOP/s (path unknown)", g(f)),
            (None, _) => s += " (operations unknown: its edgec.json is from an older edgec; bench the checkpoint)",
        }
        s += &format!(" ({:.3} s for {} tokens)\n", self.prefill_seconds, self.prompt_len);
        s += "how      decode bytes = weights file less an untied embedding table's share (KV cache not counted); \
prefill ops = 2 x multiplying weights x tokens + causal attention, compared with the int8 peak when most \
weights are int8/int4 and their matmuls take int8 activations, else with the f32x4 FMA peak.\n";
        s
    }
}

#[cfg(target_arch = "aarch64")]
const FMA_PATH: &str = "f32x4 fmla (NEON)";
#[cfg(not(target_arch = "aarch64"))]
const FMA_PATH: &str = "f32x4 FMA (128-bit)";

/// Prompt ids: a fixed spread over the vocabulary.
fn prompt_ids(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u64).map(|i| ((i * 7919 + 13) % u64::from(vocab)) as u32).collect()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Refuses compile flags given with an already-compiled directory, unless they are the ones it
/// was compiled with (as far as its manifest records them).
fn check_compiled_flags(req: &BenchRequest, m: &Manifest) -> Result<()> {
    let dir = req.model.display();
    let refuse = |flag: &str, asked: &str, had: Option<&str>| -> Result<()> {
        match had {
            Some(had) if had == asked => Ok(()),
            Some(had) => bail!(
                "{dir} is already compiled, with --{flag} {had}: --{flag} {asked} applies only when MODEL is a \
checkpoint (omit --{flag}, or bench the checkpoint)"
            ),
            None => bail!(
                "{dir} is already compiled, and its {} does not record its --{flag} (an older edgec wrote it): \
--{flag} applies only when MODEL is a checkpoint (omit --{flag}, or compile it again)",
                manifest::FILE_NAME
            ),
        }
    };
    if let Some(n) = req.max_context {
        refuse("max-context", &n.to_string(), Some(&m.max_context.to_string()))?;
    }
    if let Some(q) = req.quant {
        refuse("quant", q.name(), m.build.as_ref().map(|b| b.quant.name()))?;
    }
    if let Some(k) = req.kv_dtype {
        refuse("kv-dtype", k.name(), m.build.as_ref().map(|b| b.kv_dtype.name()))?;
    }
    if let Some(a) = req.activations {
        refuse("activations", a.name(), m.build.as_ref().map(|b| b.activations.name()))?;
    }
    Ok(())
}

pub fn bench(req: &BenchRequest, log: &mut dyn std::io::Write) -> Result<BenchReport> {
    if req.prompt_len == 0 || req.gen_len == 0 || req.repeats == 0 {
        bail!("--prompt-len, --gen-len and --repeats must be positive");
    }
    let needed = (req.prompt_len + req.gen_len) as u64;
    let mut _scratch = None;
    let (dir, m, cost) = if req.model.join(manifest::FILE_NAME).is_file() {
        let m = Manifest::read(&req.model)?;
        check_compiled_flags(req, &m)?;
        if u64::from(m.max_context) < needed {
            bail!(
                "{} was compiled with --max-context {}, and the benchmark needs {needed} positions",
                req.model.display(),
                m.max_context
            );
        }
        let cost = m.build.as_ref().and_then(ModelCost::from_build);
        (req.model.clone(), m, cost)
    } else {
        let max_context = req.max_context.unwrap_or(needed);
        if max_context < needed {
            bail!(
                "--max-context {max_context} is too small: the benchmark needs {needed} positions \
(--prompt-len {} + --gen-len {})",
                req.prompt_len,
                req.gen_len
            );
        }
        let cfg = DecoderConfig::load(&req.model.join("config.json"))?;
        let cost = ModelCost::from_config(&cfg)?;
        let tmp =
            tempfile::Builder::new().prefix("edgec-bench-").tempdir().context("cannot create a temporary directory")?;
        let numerics = crate::Numerics {
            quant: req.quant.unwrap_or_default(),
            kv_dtype: req.kv_dtype.unwrap_or_default(),
            activations: req.activations.unwrap_or_default(),
            calibrate: None,
        };
        writeln!(
            log,
            "compiling {} for the host (--quant {}, --kv-dtype {}, --activations {}, max context {max_context}, prefill in one call)",
            req.model.display(),
            numerics.quant.name(),
            numerics.kv_dtype.name(),
            numerics.activations.name()
        )?;
        let t = Instant::now();
        let compiled = compile(
            &CompileRequest {
                model: req.model.clone(),
                out_dir: tmp.path().to_path_buf(),
                target: Triple::host(),
                name: None,
                max_context,
                max_tokens: Some(req.prompt_len as u64),
                opt_level: OptLevel::O2,
                passes: None,
                print_after: Vec::new(),
                emit_ir: false,
                numerics,
            },
            &mut std::io::sink(),
        )?;
        writeln!(log, "compiled in {:.1?}", t.elapsed())?;
        let dir = tmp.path().to_path_buf();
        _scratch = Some(tmp);
        (dir, compiled.manifest, Some(cost))
    };
    if m.target != Triple::host().to_string() {
        bail!("{} was compiled for {}; `edgec bench` runs on the host ({})", dir.display(), m.target, Triple::host());
    }
    if (m.max_tokens as usize) < req.prompt_len {
        writeln!(log, "note: the prompt is fed in chunks of {} tokens (the compiled --max-tokens)", m.max_tokens)?;
    }
    let threads = edgec_runtime::pool::resolve_threads(req.threads);

    let (mut session, variant) = crate::host::open_session_variant(&dir, &m, threads, req.linker.as_deref())?;
    writeln!(log, "measuring the machine with {}", threads_text(threads))?;
    let machine = measure_machine(threads, req.bandwidth_buffer, Int8Path::of_variant(variant));

    let info = session.info();
    let weights_file_bytes = info.weights_size;
    let decode_weight_bytes_per_token = match &cost {
        Some(c) => weights_file_bytes as f64 * c.matmul_parameters as f64 / c.parameters as f64,
        None => weights_file_bytes as f64,
    };
    let prompt = prompt_ids(req.prompt_len, info.vocab);
    let mut logits = Vec::new();

    // One round: prefill, then gen_len decode steps; returns (prefill, decode total).
    let mut round = |session: &mut edgec_runtime::Session, steps: usize| -> Result<(Duration, Duration)> {
        session.reset();
        let t = Instant::now();
        session.forward(&prompt, &mut logits)?;
        let prefill = t.elapsed();
        let vocab = info.vocab as usize;
        let mut tok = argmax(&logits[logits.len() - vocab..]);
        let mut decode = Duration::ZERO;
        for _ in 0..steps {
            let t = Instant::now();
            session.forward(&[tok], &mut logits)?;
            decode += t.elapsed();
            tok = argmax(&logits);
        }
        Ok((prefill, decode))
    };
    writeln!(log, "warming up")?;
    round(&mut session, req.gen_len.min(4))?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for i in 0..req.repeats {
        let (p, d) = round(&mut session, req.gen_len)?;
        writeln!(log, "round {}: prefill {:.3?}, decode {:.3?} for {} tokens", i + 1, p, d, req.gen_len)?;
        prefill.push(p.as_secs_f64());
        decode.push(d.as_secs_f64() / req.gen_len as f64);
    }
    writeln!(log, "measuring the read bandwidth again")?;
    let mut machine = machine;
    let again = read_bandwidth(threads, machine.bandwidth_buffer_bytes as usize, BANDWIDTH_PASSES);
    machine.read_bytes_per_s_low = machine.read_bytes_per_s.min(again);
    machine.read_bytes_per_s = machine.read_bytes_per_s.max(again);
    Ok(BenchReport {
        model: req.model.clone(),
        name: m.name.clone(),
        threads: session.threads(),
        prompt_len: req.prompt_len,
        gen_len: req.gen_len,
        repeats: req.repeats,
        max_context: m.max_context,
        build: m.build.clone(),
        weights_file_bytes,
        variant,
        cost,
        prefill_seconds: median(&mut prefill),
        decode_seconds_per_token: median(&mut decode),
        decode_weight_bytes_per_token,
        machine,
    })
}

/// "1 thread", "2 threads".
fn threads_text(n: usize) -> String {
    if n == 1 { "1 thread".into() } else { format!("{n} threads") }
}

/// The CPU's model name (`/proc/cpuinfo`), or the architecture.
fn cpu_name() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "model name" | "Hardware" | "CPU part").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The last-level cache size from sysfs (0 if unknown).
fn llc_bytes() -> u64 {
    let mut best = 0;
    for i in 0..8 {
        let p = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(s) = std::fs::read_to_string(p) else { continue };
        let s = s.trim();
        let (num, mult) = match s.strip_suffix('K') {
            Some(n) => (n, 1 << 10),
            None => match s.strip_suffix('M') {
                Some(n) => (n, 1 << 20),
                None => (s, 1),
            },
        };
        best = best.max(num.parse::<u64>().unwrap_or(0) * mult);
    }
    best
}

/// Passes over the buffer per read-bandwidth measurement (the best is kept).
const BANDWIDTH_PASSES: usize = 5;

/// The machine's figures with `threads` threads: read bandwidth over a `buffer`-byte buffer
/// (default 16 × the last-level cache, within 1–4 GiB), the f32 FMA peaks, and the peak of
/// `int8` (the int8 path of the variant that runs).
pub fn measure_machine(threads: usize, buffer: Option<u64>, int8: Option<Int8Path>) -> Machine {
    let buffer = buffer.unwrap_or_else(|| (16 * llc_bytes()).clamp(1 << 30, 4 << 30)).max(1 << 20);
    let read = read_bandwidth(threads, buffer as usize, BANDWIDTH_PASSES);
    Machine {
        cpu: cpu_name(),
        threads,
        read_bytes_per_s: read,
        read_bytes_per_s_low: read,
        bandwidth_buffer_bytes: buffer,
        fma128_flops_per_s: fma_peak(threads, false),
        fma256_flops_per_s: fma_peak(threads, true),
        int8_path: int8,
        int8_ops_per_s: int8.and_then(|p| int8_peak(threads, p)),
    }
}

/// Bytes/s of `threads` threads each summing its own part of a `bytes`-byte buffer, best of
/// `passes` passes.
pub fn read_bandwidth(threads: usize, bytes: usize, passes: usize) -> f64 {
    let words = bytes / 8;
    let mut buf: Vec<u64> = Vec::with_capacity(words);
    let spare = buf.spare_capacity_mut();
    let part = words.div_ceil(threads);
    // First touch by the thread that reads the part (its NUMA node, its pages).
    std::thread::scope(|s| {
        for (t, chunk) in spare.chunks_mut(part).enumerate() {
            s.spawn(move || {
                for (i, w) in chunk.iter_mut().enumerate() {
                    w.write((t * part + i) as u64);
                }
            });
        }
    });
    // SAFETY: every element was written above.
    unsafe { buf.set_len(words) };
    let barrier = std::sync::Barrier::new(threads + 1);
    let mut best = f64::INFINITY;
    let mut sink = 0u64;
    for _ in 0..passes {
        let (elapsed, sum) = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(part)
                .map(|chunk| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        sum_words(chunk)
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            let sum = handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .fold(0u64, u64::wrapping_add);
            (t.elapsed().as_secs_f64(), sum)
        });
        sink = sink.wrapping_add(sum);
        best = best.min(elapsed);
    }
    std::hint::black_box(sink);
    (words * 8) as f64 / best
}

/// A sum the compiler vectorizes (8 independent lanes), so memory is the limit.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = words.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    chunks.remainder().iter().chain(&acc).fold(0, |a, &b| a.wrapping_add(b))
}

/// FLOP/s of `threads` threads each running the FMA loop (128-bit or 256-bit vectors), best of
/// five runs of a loop calibrated to about 0.1 s on one thread. `None` if the architecture (or
/// the CPU, for 256-bit) has no such FMA.
pub fn fma_peak(threads: usize, wide: bool) -> Option<f64> {
    let flops_per_iter = fma::CHAINS as f64 * if wide { 8.0 } else { 4.0 } * 2.0;
    peak(threads, flops_per_iter, |iters| fma::run(iters, wide).map(std::hint::black_box).is_some())
}

/// Ops/s (2 per multiply-add) of `threads` threads each running `path`'s int8 dot-product loop,
/// measured as [`fma_peak`]. `None` if this CPU does not run `path`.
pub fn int8_peak(threads: usize, path: Int8Path) -> Option<f64> {
    let ops_per_iter = int8::units(path) as f64 * int8::PRODUCTS_PER_UNIT as f64 * 2.0;
    peak(threads, ops_per_iter, |iters| int8::run(path, iters).map(std::hint::black_box).is_some())
}

/// `ops_per_iter × iterations / wall time` of `threads` threads each calling `run(iters)` at
/// once, best of five runs, with `iters` calibrated so that one thread's call takes about
/// 0.1 s. `run` returns false if the loop cannot run here (then `None`).
fn peak(threads: usize, ops_per_iter: f64, run: impl Fn(u64) -> bool + Sync) -> Option<f64> {
    if !run(1) {
        return None;
    }
    let mut iters = 1u64 << 12;
    loop {
        let t = Instant::now();
        run(iters);
        if t.elapsed() >= Duration::from_millis(100) || iters >= 1 << 40 {
            break;
        }
        iters *= 2;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let barrier = std::sync::Barrier::new(threads + 1);
        let elapsed = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (barrier, run) = (&barrier, &run);
                    s.spawn(move || {
                        barrier.wait();
                        run(iters)
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            for h in handles {
                std::hint::black_box(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            t.elapsed().as_secs_f64()
        });
        best = best.min(elapsed);
    }
    Some(threads as f64 * iters as f64 * ops_per_iter / best)
}

/// Runs `$iters` (at least 1) iterations of a loop, written in `asm!` so that it runs the same
/// instructions in debug and release builds, of 12 independent chains of `$insn acc, $x, $y`
/// (Intel operand order: the accumulator is the destination) on registers of `$class`.
#[cfg(target_arch = "x86_64")]
macro_rules! chains12 {
    ($insn:literal, $class:ident, $iters:expr, $x:expr, $y:expr, $acc:expr) => {{
        let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = &mut $acc;
        std::arch::asm!(
            "2:",
            concat!($insn, " {a0}, {x}, {y}"),
            concat!($insn, " {a1}, {x}, {y}"),
            concat!($insn, " {a2}, {x}, {y}"),
            concat!($insn, " {a3}, {x}, {y}"),
            concat!($insn, " {a4}, {x}, {y}"),
            concat!($insn, " {a5}, {x}, {y}"),
            concat!($insn, " {a6}, {x}, {y}"),
            concat!($insn, " {a7}, {x}, {y}"),
            concat!($insn, " {a8}, {x}, {y}"),
            concat!($insn, " {a9}, {x}, {y}"),
            concat!($insn, " {a10}, {x}, {y}"),
            concat!($insn, " {a11}, {x}, {y}"),
            "dec {n}",
            "jnz 2b",
            n = inout(reg) $iters.max(1) => _,
            x = in($class) $x,
            y = in($class) $y,
            a0 = inout($class) *a0,
            a1 = inout($class) *a1,
            a2 = inout($class) *a2,
            a3 = inout($class) *a3,
            a4 = inout($class) *a4,
            a5 = inout($class) *a5,
            a6 = inout($class) *a6,
            a7 = inout($class) *a7,
            a8 = inout($class) *a8,
            a9 = inout($class) *a9,
            a10 = inout($class) *a10,
            a11 = inout($class) *a11,
            options(nomem, nostack),
        );
    }};
}

mod fma {
    /// Independent FMA chains: latency (4 cycles) × FMA pipes (2), with room to spare.
    pub const CHAINS: usize = 12;

    /// Runs `iters` iterations of CHAINS dependent-per-chain FMAs; `None` without FMA.
    #[cfg(target_arch = "x86_64")]
    pub fn run(iters: u64, wide: bool) -> Option<f32> {
        if !std::is_x86_feature_detected!("fma") || !std::is_x86_feature_detected!("avx") {
            return None;
        }
        // SAFETY: the features were detected above.
        Some(unsafe { if wide { run256(iters) } else { run128(iters) } })
    }

    /// `vfmadd213ps xmm` (`acc = acc · m + c`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,fma")]
    fn run128(iters: u64) -> f32 {
        use std::arch::x86_64::*;
        let m = _mm_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm_set1_ps(1.0); CHAINS];
        // SAFETY: register-only FMA instructions (the caller checked the features).
        unsafe { chains12!("vfmadd213ps", xmm_reg, iters, m, c, acc) };
        let mut s = _mm_setzero_ps();
        for a in acc {
            s = _mm_add_ps(s, a);
        }
        _mm_cvtss_f32(s)
    }

    /// `vfmadd213ps ymm`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,fma")]
    fn run256(iters: u64) -> f32 {
        use std::arch::x86_64::*;
        let m = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        // SAFETY: as in `run128`.
        unsafe { chains12!("vfmadd213ps", ymm_reg, iters, m, c, acc) };
        let mut s = _mm256_setzero_ps();
        for a in acc {
            s = _mm256_add_ps(s, a);
        }
        _mm256_cvtss_f32(s)
    }

    #[cfg(target_arch = "aarch64")]
    pub fn run(iters: u64, wide: bool) -> Option<f32> {
        use std::arch::aarch64::*;
        if wide {
            return None; // NEON is 128-bit
        }
        // SAFETY: NEON is part of the aarch64 baseline.
        unsafe {
            let m = vdupq_n_f32(std::hint::black_box(0.999_999));
            let c = vdupq_n_f32(std::hint::black_box(1e-7));
            let mut acc = [vdupq_n_f32(1.0); CHAINS];
            for _ in 0..iters {
                for a in &mut acc {
                    *a = vfmaq_f32(c, *a, m);
                }
            }
            let mut s = vdupq_n_f32(0.0);
            for a in acc {
                s = vaddq_f32(s, a);
            }
            Some(vgetq_lane_f32::<0>(s))
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub fn run(_iters: u64, _wide: bool) -> Option<f32> {
        None
    }
}

/// The int8 dot-product loops, one per [`Int8Path`]. A unit is one 128-bit dot product of 16
/// int8 activations with 16 weight bytes (16 multiply-adds) accumulated into an i32x4 lane
/// vector, as the kernels' inner loop does per 16 weight bytes and column.
mod int8 {
    use super::Int8Path;

    pub const PRODUCTS_PER_UNIT: usize = 16;
    /// Independent accumulator chains of `vpdpbusd` / `sdot` (latency 4-5 × up to 2 pipes,
    /// with room to spare).
    pub const CHAINS: usize = 12;
    /// Units per iteration of the x86 baseline's loop (each ends in one dependent `vpaddd`;
    /// eight accumulators, two temporaries and three operands fill the 16 xmm registers).
    #[cfg(target_arch = "x86_64")]
    pub const MADD_UNITS: usize = 8;

    /// Units per iteration of `path`'s loop.
    pub fn units(path: Int8Path) -> usize {
        match path {
            #[cfg(target_arch = "x86_64")]
            Int8Path::Madd => MADD_UNITS,
            _ => CHAINS,
        }
    }

    /// Runs `iters` iterations of `path`'s loop; `None` if this CPU (or architecture) does not
    /// run it.
    #[cfg(target_arch = "x86_64")]
    pub fn run(path: Int8Path, iters: u64) -> Option<i32> {
        use std::arch::is_x86_feature_detected as has;
        // SAFETY: each loop runs only when the features it is compiled with are detected.
        unsafe {
            match path {
                Int8Path::Avx512Vnni if has!("avx512f") && has!("avx512vl") && has!("avx512vnni") => {
                    Some(vpdpbusd_evex(iters))
                }
                Int8Path::AvxVnni if has!("avxvnni") => Some(vpdpbusd_vex(iters)),
                Int8Path::Madd if has!("avx2") => Some(madd(iters)),
                _ => None,
            }
        }
    }

    /// Activations (signed) and weights (unsigned, as `vpdpbusd` takes them) that the
    /// compiler cannot see.
    #[cfg(target_arch = "x86_64")]
    fn operands() -> (i8, i8) {
        (std::hint::black_box(3), std::hint::black_box(-7))
    }

    #[cfg(target_arch = "x86_64")]
    fn fold(acc: &[std::arch::x86_64::__m128i]) -> i32 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe {
            let mut s = _mm_setzero_si128();
            for a in acc {
                s = _mm_add_epi32(s, *a);
            }
            _mm_cvtsi128_si32(s)
        }
    }

    /// EVEX `vpdpbusd xmm` (AVX512-VNNI with AVX512VL).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
    fn vpdpbusd_evex(iters: u64) -> i32 {
        use std::arch::x86_64::*;
        let (a, w) = operands();
        let (a, w) = (_mm_set1_epi8(a), _mm_set1_epi8(w));
        let mut acc = [_mm_setzero_si128(); CHAINS];
        // SAFETY: register-only AVX512-VNNI instructions (the caller checked the features).
        unsafe { chains12!("{{evex}} vpdpbusd", xmm_reg, iters, w, a, acc) };
        fold(&acc)
    }

    /// VEX `vpdpbusd xmm` (AVX-VNNI).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avxvnni")]
    fn vpdpbusd_vex(iters: u64) -> i32 {
        use std::arch::x86_64::*;
        let (a, w) = operands();
        let (a, w) = (_mm_set1_epi8(a), _mm_set1_epi8(w));
        let mut acc = [_mm_setzero_si128(); CHAINS];
        // SAFETY: register-only AVX-VNNI instructions (the caller checked the feature).
        unsafe { chains12!("{{vex}} vpdpbusd", xmm_reg, iters, w, a, acc) };
        fold(&acc)
    }

    /// The x86 baseline variant's `Dot::UnsignedMadd` tree as Cranelift compiles it (see
    /// `qdot.rs`'s disassembly): per unit, the 16 weight bytes widened to two u16x8 halves
    /// (`vpmovzxbw`; `vpxor` + `vpunpckhbw`), multiplied with the activation halves (widened
    /// once per row, so outside the loop) and summed in pairs by two `vpmaddwd`, the halves
    /// merged by `vphaddd` and added to the unit's accumulator.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn madd(iters: u64) -> i32 {
        use std::arch::x86_64::*;
        let (a, w) = operands();
        let (alo, ahi, w) = (_mm_set1_epi16(i16::from(a)), _mm_set1_epi16(i16::from(a)), _mm_set1_epi8(w));
        let mut acc = [_mm_setzero_si128(); MADD_UNITS];
        let [a0, a1, a2, a3, a4, a5, a6, a7] = &mut acc;
        macro_rules! unit {
            ($acc:literal) => {
                concat!(
                    "vpmovzxbw {t0}, {w}\n",
                    "vpxor {t1}, {t1}, {t1}\n",
                    "vpunpckhbw {t1}, {w}, {t1}\n",
                    "vpmaddwd {t0}, {alo}, {t0}\n",
                    "vpmaddwd {t1}, {ahi}, {t1}\n",
                    "vphaddd {t0}, {t0}, {t1}\n",
                    "vpaddd {",
                    $acc,
                    "}, {",
                    $acc,
                    "}, {t0}"
                )
            };
        }
        // SAFETY: register-only AVX2 instructions (the caller checked AVX2).
        unsafe {
            std::arch::asm!(
                "2:",
                unit!("a0"),
                unit!("a1"),
                unit!("a2"),
                unit!("a3"),
                unit!("a4"),
                unit!("a5"),
                unit!("a6"),
                unit!("a7"),
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                w = in(xmm_reg) w,
                alo = in(xmm_reg) alo,
                ahi = in(xmm_reg) ahi,
                t0 = out(xmm_reg) _,
                t1 = out(xmm_reg) _,
                a0 = inout(xmm_reg) *a0,
                a1 = inout(xmm_reg) *a1,
                a2 = inout(xmm_reg) *a2,
                a3 = inout(xmm_reg) *a3,
                a4 = inout(xmm_reg) *a4,
                a5 = inout(xmm_reg) *a5,
                a6 = inout(xmm_reg) *a6,
                a7 = inout(xmm_reg) *a7,
                options(nomem, nostack),
            );
        }
        fold(&acc)
    }

    /// `sdot` (FEAT_DotProd), in `asm!` (its intrinsic is not stable).
    #[cfg(target_arch = "aarch64")]
    pub fn run(path: Int8Path, iters: u64) -> Option<i32> {
        if path != Int8Path::Sdot || !std::arch::is_aarch64_feature_detected!("dotprod") {
            return None;
        }
        // SAFETY: dotprod was detected above.
        Some(unsafe { sdot(iters) })
    }

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "dotprod")]
    fn sdot(iters: u64) -> i32 {
        use std::arch::aarch64::*;
        // SAFETY: NEON is part of the aarch64 baseline; dotprod is enabled for this function,
        // and the loop only touches registers.
        unsafe {
            let a = vdupq_n_s8(std::hint::black_box(3));
            let w = vdupq_n_s8(std::hint::black_box(-7));
            let mut acc = [vdupq_n_s32(0); CHAINS];
            let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11] = &mut acc;
            std::arch::asm!(
                "2:",
                "sdot {a0:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a1:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a2:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a3:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a4:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a5:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a6:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a7:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a8:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a9:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a10:v}.4s, {w:v}.16b, {a:v}.16b",
                "sdot {a11:v}.4s, {w:v}.16b, {a:v}.16b",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) iters.max(1) => _,
                w = in(vreg) w,
                a = in(vreg) a,
                a0 = inout(vreg) *a0,
                a1 = inout(vreg) *a1,
                a2 = inout(vreg) *a2,
                a3 = inout(vreg) *a3,
                a4 = inout(vreg) *a4,
                a5 = inout(vreg) *a5,
                a6 = inout(vreg) *a6,
                a7 = inout(vreg) *a7,
                a8 = inout(vreg) *a8,
                a9 = inout(vreg) *a9,
                a10 = inout(vreg) *a10,
                a11 = inout(vreg) *a11,
                options(nomem, nostack),
            );
            let mut s = vdupq_n_s32(0);
            for c in acc {
                s = vaddq_s32(s, c);
            }
            vgetq_lane_s32::<0>(s)
        }
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub fn run(_path: Int8Path, _iters: u64) -> Option<i32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_names_its_int8_path() {
        assert_eq!(Int8Path::of_variant("avx512vnni"), Some(Int8Path::Avx512Vnni));
        assert_eq!(Int8Path::of_variant("avxvnni"), Some(Int8Path::AvxVnni));
        assert_eq!(Int8Path::of_variant("dotprod"), Some(Int8Path::Sdot));
        let baseline = if cfg!(target_arch = "x86_64") { Some(Int8Path::Madd) } else { None };
        assert_eq!(Int8Path::of_variant("baseline"), baseline);
    }

    /// Every loop computes what it claims: per unit and i32 lane, four products of an
    /// unsigned weight byte (-7 as u8 = 249) with an activation (3).
    #[test]
    fn int8_loops_do_sixteen_multiply_adds_per_unit() {
        for path in [Int8Path::AvxVnni, Int8Path::Avx512Vnni, Int8Path::Madd, Int8Path::Sdot] {
            let Some(lane0) = int8::run(path, 10) else { continue };
            let signed_weights = path == Int8Path::Sdot;
            let per_lane = 4 * if signed_weights { -7 * 3 } else { 249 * 3 };
            assert_eq!(lane0, int8::units(path) as i32 * 10 * per_lane, "{path:?}");
        }
    }

    #[test]
    fn prefill_is_compared_with_the_peak_of_its_path() {
        let machine = Machine {
            cpu: "test".into(),
            threads: 1,
            read_bytes_per_s: 20e9,
            read_bytes_per_s_low: 20e9,
            bandwidth_buffer_bytes: 1 << 30,
            fma128_flops_per_s: Some(50e9),
            fma256_flops_per_s: None,
            int8_path: Some(Int8Path::Avx512Vnni),
            int8_ops_per_s: Some(200e9),
        };
        let cost = ModelCost { parameters: 1_000_000, matmul_parameters: 1_000_000, attention_width: 1 };
        let build = |quant, int8| BuildFlags {
            quant,
            kv_dtype: KvDtype::F32,
            activations: Activations::Int8,
            matmul_weight_elements: None,
            attention_width: None,
            weight_elements: 1_000_000,
            int8_weight_elements: int8,
        };
        let mut r = BenchReport {
            model: "m".into(),
            name: "m".into(),
            threads: 1,
            prompt_len: 100,
            gen_len: 10,
            repeats: 1,
            max_context: 110,
            build: Some(build(Preset::Q4S, 999_000)),
            weights_file_bytes: 1_000_000,
            variant: "avx512vnni",
            cost: Some(cost),
            prefill_seconds: 0.1,
            decode_seconds_per_token: 0.01,
            decode_weight_bytes_per_token: 1e8,
            machine,
        };
        // 2 × 1e6 × 100 + 4 × 5050 ops in 0.1 s.
        let ops_per_s = (2e8 + 4.0 * 5050.0) / 0.1;
        assert_eq!(r.prefill_path(), Some(PrefillPath::Int8));
        assert!((r.prefill_peak_pct().unwrap() - 100.0 * ops_per_s / 200e9).abs() < 1e-9);
        let text = r.to_text();
        assert!(text.contains("decode:  100.0 tok/s, 10.0 GB/s = 50.0% of read bandwidth 20.0 GB/s"), "{text}");
        assert!(
            text.contains(
                "prefill: 1000.0 tok/s, 2.0 GOP/s = 1.0% of the int8 vpdpbusd xmm (AVX512-VNNI) peak 200.0 GOP/s"
            ),
            "{text}"
        );
        r.build = Some(build(Preset::F16, 0));
        assert_eq!(r.prefill_path(), Some(PrefillPath::F32));
        assert!((r.prefill_peak_pct().unwrap() - 100.0 * ops_per_s / 50e9).abs() < 1e-9);
        assert!(r.to_text().contains(&format!("= 4.0% of the {FMA_PATH} peak 50.0 GOP/s")), "{}", r.to_text());
        r.build = None;
        assert_eq!((r.prefill_path(), r.prefill_peak_pct()), (None, None));
    }
}
