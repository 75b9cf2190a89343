//! `edgec bench`: how fast a model runs on this machine, next to what this machine can do.
//!
//! The model is compiled for the host (unless MODEL is already a compiled directory), linked and
//! loaded as `edgec run` does. One prefill of `prompt_len` tokens and a few decode steps warm
//! it up; then `repeats` rounds each time one prefill (a single forward call over the prompt)
//! and `gen_len` decode steps (one forward call per token, greedy), and the medians are
//! reported. Next to them, two machine figures measured here with the same thread count:
//!
//! - **read bandwidth**: every thread sums its own contiguous part of a buffer much larger than
//!   the last-level cache (first touched by the thread that reads it); bytes / wall time,
//!   best of several passes (as STREAM reports);
//! - **f32 FMA peak of the path the kernels use**: Cranelift emits 128-bit vectors only
//!   (f32x4 `vfmadd` on x86_64, `fmla` on aarch64), so every thread runs a loop of 12
//!   independent 128-bit FMA chains (enough to hide the latency on two FMA pipes), calibrated
//!   to run about 0.1 s; flops / wall time, best of several runs. The 256-bit (AVX2) peak is
//!   measured too and printed for reference.
//!
//! Model figures: decode bytes per token are the weights file's bytes, less the share of an
//! untied embedding table (decode gathers one row of it) — the KV cache and activations are not
//! counted. Prefill FLOPs are 2 × (every weight that multiplies: all but an untied embedding
//! table) per token, plus causal attention (`4 × head_dim × heads × layers × T(T+1)/2`).

use crate::compile::{CompileRequest, compile};
use crate::manifest::{self, Manifest};
use anyhow::{Context, Result, bail};
use edgec_frontend::DecoderConfig;
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
    /// For a checkpoint: the KV cache's element type (`--kv-dtype`).
    pub kv_dtype: edgec_ir::quant::KvDtype,
}

/// What the model costs per token, from its config (unknown for a compiled directory).
#[derive(Clone, Debug)]
pub struct ModelCost {
    pub parameters: u64,
    /// Parameters that multiply activations (all but an untied embedding table).
    pub matmul_parameters: u64,
    pub layers: u64,
    pub heads: u64,
    pub head_dim: u64,
}

impl ModelCost {
    pub fn from_config(cfg: &DecoderConfig) -> Result<ModelCost> {
        let tensors = edgec_frontend::checkpoint_tensors(cfg)?;
        let count = |s: &Vec<u64>| s.iter().product::<u64>();
        let parameters: u64 = tensors.iter().map(|(_, s)| count(s)).sum();
        let embed: u64 = tensors.iter().filter(|(n, _)| n == "model.embed_tokens.weight").map(|(_, s)| count(s)).sum();
        let matmul_parameters = if cfg.tie_word_embeddings { parameters } else { parameters - embed };
        Ok(ModelCost {
            parameters,
            matmul_parameters,
            layers: cfg.layers,
            heads: u64::from(cfg.heads),
            head_dim: u64::from(cfg.head_dim),
        })
    }

    /// FLOPs of a prefill of `t` tokens from position 0.
    pub fn prefill_flops(&self, t: u64) -> f64 {
        let dense = 2.0 * self.matmul_parameters as f64 * t as f64;
        let pairs = (t * (t + 1) / 2) as f64;
        dense + 4.0 * (self.head_dim * self.heads * self.layers) as f64 * pairs
    }
}

/// The machine's figures, measured with `threads` threads.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpu: String,
    pub threads: usize,
    pub read_bytes_per_s: f64,
    pub bandwidth_buffer_bytes: u64,
    /// The 128-bit f32 FMA peak (the kernels' path), if this architecture is measured.
    pub fma128_flops_per_s: Option<f64>,
    /// The 256-bit (AVX2) f32 FMA peak, for reference (x86_64 with FMA only).
    pub fma256_flops_per_s: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    pub model: PathBuf,
    pub name: String,
    pub threads: usize,
    pub prompt_len: usize,
    pub gen_len: usize,
    pub repeats: usize,
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
    pub fn prefill_flops(&self) -> Option<f64> {
        self.cost.as_ref().map(|c| c.prefill_flops(self.prompt_len as u64))
    }
    pub fn prefill_flops_per_s(&self) -> Option<f64> {
        self.prefill_flops().map(|f| f / self.prefill_seconds)
    }
    pub fn prefill_peak_pct(&self) -> Option<f64> {
        Some(100.0 * self.prefill_flops_per_s()? / self.machine.fma128_flops_per_s?)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.machine;
        json!({
            "model": self.model.display().to_string(),
            "name": self.name,
            "threads": self.threads,
            "prompt_len": self.prompt_len,
            "gen_len": self.gen_len,
            "repeats": self.repeats,
            "parameters": self.cost.as_ref().map(|c| c.parameters),
            "weights_file_bytes": self.weights_file_bytes,
            "variant": self.variant,
            "prefill_tokens_per_s": self.prefill_tokens_per_s(),
            "prefill_seconds": self.prefill_seconds,
            "prefill_flops": self.prefill_flops(),
            "prefill_flops_per_s": self.prefill_flops_per_s(),
            "prefill_peak_pct": self.prefill_peak_pct(),
            "decode_tokens_per_s": self.decode_tokens_per_s(),
            "decode_weight_bytes_per_token": self.decode_weight_bytes_per_token,
            "decode_weight_bytes_per_s": self.decode_weight_bytes_per_s(),
            "decode_bandwidth_pct": self.decode_bandwidth_pct(),
            "machine": {
                "cpu": m.cpu,
                "threads": m.threads,
                "read_bytes_per_s": m.read_bytes_per_s,
                "bandwidth_buffer_bytes": m.bandwidth_buffer_bytes,
                "fma_path": FMA_PATH,
                "fma_peak_flops_per_s": m.fma128_flops_per_s,
                "fma256_peak_flops_per_s": m.fma256_flops_per_s,
            },
        })
    }

    pub fn to_text(&self) -> String {
        let m = &self.machine;
        let g = |x: f64| x / 1e9;
        let mut s = format!(
            "model    {} ({}), {} variant, {} threads, prompt {} tokens, {} generated, median of {} rounds\n",
            self.model.display(),
            self.name,
            self.variant,
            self.threads,
            self.prompt_len,
            self.gen_len,
            self.repeats
        );
        s += &format!(
            "machine  {}: read bandwidth {:.1} GB/s (sum over a {} MiB buffer, best pass), \
f32 FMA peak {} ({}, calibrated loop, best run){}\n",
            m.cpu,
            g(m.read_bytes_per_s),
            m.bandwidth_buffer_bytes >> 20,
            m.fma128_flops_per_s.map_or("not measured on this architecture".into(), |f| format!("{:.1} GFLOP/s", g(f))),
            FMA_PATH,
            m.fma256_flops_per_s.map_or(String::new(), |f| format!("; 256-bit AVX2 FMA {:.1} GFLOP/s", g(f)))
        );
        s += &format!("prefill  {:.1} tokens/s ({:.3} s)", self.prefill_tokens_per_s(), self.prefill_seconds);
        if let (Some(f), Some(p)) = (self.prefill_flops_per_s(), self.prefill_peak_pct()) {
            s += &format!(", {:.1} GFLOP/s = {p:.1}% of the FMA peak", g(f));
        }
        s += "\n";
        s += &format!(
            "decode   {:.1} tokens/s, {:.1} MB of weights per token, {:.1} GB/s = {:.1}% of the read bandwidth\n",
            self.decode_tokens_per_s(),
            self.decode_weight_bytes_per_token / 1e6,
            g(self.decode_weight_bytes_per_s()),
            self.decode_bandwidth_pct()
        );
        s += "how      decode bytes = weights file less an untied embedding table's share (KV cache not counted); \
prefill FLOPs = 2 x multiplying weights x tokens + causal attention. int8/int4 weights take int8 activations.\n";
        s
    }
}

#[cfg(target_arch = "aarch64")]
const FMA_PATH: &str = "f32x4 fmla, NEON";
#[cfg(not(target_arch = "aarch64"))]
const FMA_PATH: &str = "f32x4 FMA, 128-bit";

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

pub fn bench(req: &BenchRequest, log: &mut dyn std::io::Write) -> Result<BenchReport> {
    if req.prompt_len == 0 || req.gen_len == 0 || req.repeats == 0 {
        bail!("--prompt-len, --gen-len and --repeats must be positive");
    }
    let needed = (req.prompt_len + req.gen_len) as u64;
    let mut _scratch = None;
    let (dir, m, cost) = if req.model.join(manifest::FILE_NAME).is_file() {
        let m = Manifest::read(&req.model)?;
        if req.kv_dtype != edgec_ir::quant::KvDtype::F32 {
            bail!("{} is already compiled; --kv-dtype applies only to checkpoints", req.model.display());
        }
        if u64::from(m.max_context) < needed {
            bail!(
                "{} was compiled with --max-context {}, and the benchmark needs {needed} positions",
                req.model.display(),
                m.max_context
            );
        }
        (req.model.clone(), m, None)
    } else {
        let cfg = DecoderConfig::load(&req.model.join("config.json"))?;
        let cost = ModelCost::from_config(&cfg)?;
        let tmp =
            tempfile::Builder::new().prefix("edgec-bench-").tempdir().context("cannot create a temporary directory")?;
        writeln!(log, "compiling {} for the host (max context {needed}, prefill in one call)", req.model.display())?;
        let t = Instant::now();
        let compiled = compile(
            &CompileRequest {
                model: req.model.clone(),
                out_dir: tmp.path().to_path_buf(),
                target: Triple::host(),
                name: None,
                max_context: needed,
                max_tokens: Some(req.prompt_len as u64),
                opt_level: OptLevel::O2,
                passes: None,
                print_after: Vec::new(),
                emit_ir: false,
                quant: Default::default(),
                kv_dtype: req.kv_dtype,
                calibrate: None,
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

    writeln!(log, "measuring the machine with {threads} threads")?;
    let machine = measure_machine(threads, req.bandwidth_buffer);

    let (mut session, variant) = crate::host::open_session_variant(&dir, &m, threads, req.linker.as_deref())?;
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
    Ok(BenchReport {
        model: req.model.clone(),
        name: m.name.clone(),
        threads: session.threads(),
        prompt_len: req.prompt_len,
        gen_len: req.gen_len,
        repeats: req.repeats,
        weights_file_bytes,
        variant,
        cost,
        prefill_seconds: median(&mut prefill),
        decode_seconds_per_token: median(&mut decode),
        decode_weight_bytes_per_token,
        machine,
    })
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

pub fn measure_machine(threads: usize, buffer: Option<u64>) -> Machine {
    let buffer = buffer.unwrap_or_else(|| (16 * llc_bytes()).clamp(1 << 30, 4 << 30)).max(1 << 20);
    Machine {
        cpu: cpu_name(),
        threads,
        read_bytes_per_s: read_bandwidth(threads, buffer as usize, 5),
        bandwidth_buffer_bytes: buffer,
        fma128_flops_per_s: fma_peak(threads, false),
        fma256_flops_per_s: fma_peak(threads, true),
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
    let run = |iters: u64| fma::run(iters, wide);
    run(1)?;
    let mut iters = 1u64 << 12;
    loop {
        let t = Instant::now();
        run(iters)?;
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
                    let barrier = &barrier;
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
    Some(threads as f64 * iters as f64 * flops_per_iter / best)
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

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,fma")]
    fn run128(iters: u64) -> f32 {
        use std::arch::x86_64::*;
        let m = _mm_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm_fmadd_ps(*a, m, c);
            }
        }
        let mut s = _mm_setzero_ps();
        for a in acc {
            s = _mm_add_ps(s, a);
        }
        _mm_cvtss_f32(s)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx,fma")]
    fn run256(iters: u64) -> f32 {
        use std::arch::x86_64::*;
        let m = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let c = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
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
