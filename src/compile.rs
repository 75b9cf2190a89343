//! The compile pipeline: frontend → passes → memory plan → weights file, object, header.

use crate::atomic::AtomicFiles;
use crate::manifest::{self, Manifest};
use anyhow::{Context, Result, bail};
use edgec_ir::Graph;
use edgec_passes::{OptLevel, PassManager, PassTiming, plan::plan_memory};
use std::io::Write;
use std::path::{Path, PathBuf};
use target_lexicon::Triple;

/// What to compile and how.
#[derive(Clone, Debug)]
pub struct CompileRequest {
    /// A HuggingFace checkpoint directory (config.json + safetensors).
    pub model: PathBuf,
    pub out_dir: PathBuf,
    pub target: Triple,
    /// Symbol prefix and file stem; derived from the model directory when `None`.
    pub name: Option<String>,
    /// Positions the KV cache holds.
    pub max_context: u64,
    /// Most tokens per forward call (prefill chunk); the arena is sized for it.
    /// `None` means `min(max_context, 128)`.
    pub max_tokens: Option<u64>,
    pub opt_level: OptLevel,
    /// Overrides the preset's pipeline.
    pub passes: Option<Vec<String>>,
    pub print_after: Vec<String>,
    /// Also write `NAME.ir` (the graph after passes) and `NAME.plan` (the memory plan).
    pub emit_ir: bool,
    /// How weights, the KV cache and activations are stored.
    pub numerics: Numerics,
}

/// How a model's numbers are stored and multiplied: the choices `--quant`, `--kv-dtype`,
/// `--activations` and `--calibrate` make. The default is f32 throughout.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Numerics {
    /// How matmul weights and embedding tables are stored (`--quant`).
    pub quant: edgec_ir::quant::Preset,
    /// The KV cache's element type (`--kv-dtype`).
    pub kv_dtype: edgec_ir::quant::KvDtype,
    /// How int8/int4-weight matmuls take their activations (`--activations`; int8 by default).
    pub activations: edgec_ir::quant::Activations,
    /// A calibration text (`--calibrate`): the f32 model runs over its first tokens in the
    /// interpreter, and `q4s` weighs each weight's error by its input's mean squares.
    pub calibrate: Option<PathBuf>,
}

impl Numerics {
    /// Whether any choice differs from the default (they apply only when compiling).
    pub fn is_set(&self) -> bool {
        *self != Numerics::default()
    }

    /// e.g. `q8`, `q4s, KV q8` or `q8, f32 activations`: the non-default choices after the
    /// preset.
    pub fn describe(&self) -> String {
        let mut s = self.quant.name().to_string();
        if self.kv_dtype != edgec_ir::quant::KvDtype::F32 {
            s += &format!(", KV {}", self.kv_dtype.name());
        }
        if self.activations != edgec_ir::quant::Activations::default() {
            s += &format!(", {} activations", self.activations.name());
        }
        s
    }
}

/// What a compile produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub arena_size: u64,
    pub state_size: u64,
    pub lower_bound: u64,
    /// The memory planner's winning strategy (`greedy-by-size`, ...).
    pub plan_strategy: &'static str,
    pub weights_size: u64,
    pub timings: Vec<PassTiming>,
    /// Per weight: storage format, bytes and quantization error (`--report`).
    pub weights: Vec<edgec_backend::WeightStat>,
}

impl Compiled {
    /// The per-tensor weights report: format, bits per weight, relative quantization error
    /// ‖W − Ŵ‖ / ‖W‖, then totals per format.
    pub fn weights_report(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from("weights: tensor, format, elements, bytes, bits/weight, rel. error\n");
        let width = self.weights.iter().map(|w| w.name.len()).max().unwrap_or(0);
        let mut totals: Vec<(String, u64, u64)> = Vec::new();
        for w in &self.weights {
            let how = if w.kept && w.storage != edgec_ir::Storage::F32 { " (kept)" } else { "" };
            let _ = writeln!(
                s,
                "  {:<width$}  {:<8} {:>12} {:>12} {:>6.2}  {:.2e}{how}",
                w.name,
                w.storage.name(),
                w.elements,
                w.bytes,
                w.bits_per_weight(),
                w.rel_error
            );
            let name = w.storage.name();
            match totals.iter_mut().find(|t| t.0 == name) {
                Some(t) => {
                    t.1 += w.elements;
                    t.2 += w.bytes;
                }
                None => totals.push((name, w.elements, w.bytes)),
            }
        }
        for (name, elements, bytes) in totals {
            let bits = if elements == 0 { 0.0 } else { bytes as f64 * 8.0 / elements as f64 };
            let _ = writeln!(s, "  total {name}: {elements} weights in {bytes} bytes ({bits:.2} bits/weight)");
        }
        s
    }
}

pub const DEFAULT_MAX_TOKENS: u64 = 128;

/// Which artifacts a compile writes (`--emit obj,staticlib,header,weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emit {
    /// `NAME.o`.
    pub obj: bool,
    /// `libNAME.a`, holding `NAME.o` (written by edgec; no `ar` needed).
    pub staticlib: bool,
    /// `NAME.h`.
    pub header: bool,
    /// `NAME.weights` (never with `--embed-weights`).
    pub weights: bool,
    /// `report.md`, `report.json` and `memory.svg`: kernels, memory plan, KV state, weights by
    /// storage format, estimated peak DRAM, and the arena as a timeline of buffers.
    pub report: bool,
}

impl Default for Emit {
    /// obj, weights, header.
    fn default() -> Emit {
        Emit { obj: true, staticlib: false, header: true, weights: true, report: false }
    }
}

impl Emit {
    pub const KINDS: &'static str = "obj, staticlib, header, weights, report";

    /// Parses a comma-separated list of `obj`, `staticlib`, `header`, `weights`, `report`.
    pub fn parse(list: &str) -> Result<Emit> {
        let mut e = Emit { obj: false, staticlib: false, header: false, weights: false, report: false };
        for kind in list.split(',').map(str::trim) {
            match kind {
                "obj" => e.obj = true,
                "staticlib" => e.staticlib = true,
                "header" => e.header = true,
                "weights" => e.weights = true,
                "report" => e.report = true,
                _ => bail!("--emit: unknown kind '{kind}' (expected a comma-separated list of {})", Emit::KINDS),
            }
        }
        Ok(e)
    }
}

/// How a compile is packaged for an app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packaging {
    pub emit: Emit,
    /// Put the weights file image into the object as the read-only, 64-byte aligned data symbol
    /// `NAME_weights` instead of writing `NAME.weights`. For small models: the image is built
    /// in memory.
    pub embed_weights: bool,
    /// The CPU-feature variants to emit (`edgec targets` names); `None` emits all of them.
    pub cpu_variants: Option<Vec<String>>,
}

/// Compiles a model with the default packaging (`NAME.o`, `NAME.weights`, `NAME.h`).
/// Diagnostics that the user asked for (`--print-after`) go to `log`.
/// Either every output file appears in `out_dir`, or none does.
pub fn compile(req: &CompileRequest, log: &mut dyn Write) -> Result<Compiled> {
    compile_with(req, &Packaging::default(), log)
}

/// Compiles a model and writes the artifacts `pkg` asks for (all at once or none).
pub fn compile_with(req: &CompileRequest, pkg: &Packaging, log: &mut dyn Write) -> Result<Compiled> {
    if pkg.embed_weights && pkg.emit.weights {
        bail!("--embed-weights puts the weights into the object; do not also --emit weights");
    }
    let name = match &req.name {
        Some(n) => n.clone(),
        None => default_name(&req.model),
    };
    check_c_identifier(&name)?;
    // Reject a bad target or variant list before reading the model.
    edgec_backend::Target::from_triple(&req.target)?;
    let mut opts = edgec_backend::CompileOptions::new(req.target.clone(), name.clone());
    if let Some(variants) = &pkg.cpu_variants {
        opts = opts.with_variants(variants)?;
    }
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS.min(req.max_context));
    let load = edgec_frontend::LoadOptions { max_context: req.max_context, max_tokens };
    let (mut graph, timings) = build_graph(req, &load, log)?;
    graph.name = name.clone();
    let tokenizer = crate::tokenizer::for_model(&req.model)?;
    let num = &req.numerics;
    if num.calibrate.is_some() && num.quant != edgec_ir::quant::Preset::Q4S {
        bail!("--calibrate only applies to --quant q4s (got --quant {})", num.quant.name());
    }
    if num.quant != edgec_ir::quant::Preset::F32 {
        let stats = match &num.calibrate {
            Some(text) => Some(crate::calibrate::calibrate(&graph, &req.model, text, &mut std::io::stderr())?),
            None => None,
        };
        edgec_ir::quant::apply_preset_with(&mut graph, num.quant, stats.as_ref());
        edgec_ir::verify::verify(&graph).context("after --quant")?;
    }
    if num.kv_dtype != edgec_ir::quant::KvDtype::F32 {
        edgec_ir::quant::apply_kv_dtype(&mut graph, num.kv_dtype)?;
        edgec_ir::verify::verify(&graph).context("after --kv-dtype")?;
    }

    let plan = plan_memory(&graph)?;
    let layout = edgec_backend::layout_weights(&graph, num.activations)?;

    std::fs::create_dir_all(&req.out_dir)
        .with_context(|| format!("cannot create output directory {}", req.out_dir.display()))?;
    let mut manifest = Manifest {
        name: name.clone(),
        target: req.target.to_string(),
        vocab: vocab_of(&graph)?,
        max_tokens: u32::try_from(max_tokens).context("--max-tokens is too large")?,
        max_context: u32::try_from(req.max_context).context("--max-context is too large")?,
        build: None,
    };
    let mut files = AtomicFiles::default();
    let mut image = None;
    // A progress bar on a terminal (indicatif draws nothing otherwise): quantizing a large
    // model's weights is most of its compile time.
    let bar = indicatif::ProgressBar::new(layout.file_size).with_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta})")
            .map_err(|e| anyhow::anyhow!("progress bar: {e}"))?
            .progress_chars("=> "),
    );
    bar.set_message("weights");
    let mut on_weight = |stat: &edgec_backend::WeightStat| bar.inc(stat.bytes);
    let (hash, weight_stats) = if pkg.embed_weights {
        let mut buf = std::io::Cursor::new(Vec::new());
        let hash = edgec_backend::write_weights_with_stats(&graph, &layout, &mut buf, &mut on_weight)?;
        image = Some(buf.into_inner());
        hash
    } else {
        // Without `weights` in --emit the file is still streamed (for the hash), then dropped.
        let path = manifest.weights(&req.out_dir);
        let weights_file = files.create(&path)?;
        let mut writer = std::io::BufWriter::new(weights_file.as_file_mut());
        let hash = edgec_backend::write_weights_with_stats(&graph, &layout, &mut writer, &mut on_weight)
            .with_context(|| format!("{}", path.display()))?;
        writer.flush().with_context(|| format!("cannot write {}", path.display()))?;
        drop(writer);
        if !pkg.emit.weights {
            files.discard_last();
        }
        hash
    };
    bar.finish_and_clear();
    manifest.build = Some(manifest::BuildFlags::new(num, &graph, &weight_stats));
    let info = edgec_backend::model_info(&graph, &plan, &layout, hash)?;
    let object = edgec_backend::emit_object_with(&graph, &plan, &layout, &info, &opts, image.as_deref())?;
    drop(image);
    if pkg.emit.obj {
        files.write(&manifest.object(&req.out_dir), &object)?;
    }
    if pkg.emit.staticlib {
        let target = edgec_backend::Target::from_triple(&req.target)?;
        let member = format!("{name}.o");
        let lib = edgec_backend::archive::static_library(target.format(), &[(member.as_str(), &object)])
            .context("cannot build the static library")?;
        files.write(&req.out_dir.join(format!("lib{name}.a")), &lib)?;
    }
    if pkg.emit.header {
        let header = edgec_backend::c_header_with(&graph, &info, &opts, pkg.embed_weights);
        files.write(&manifest.header(&req.out_dir), header.as_bytes())?;
    }
    if req.emit_ir {
        files.write(&req.out_dir.join(format!("{name}.ir")), edgec_ir::text::print(&graph).as_bytes())?;
        files.write(&req.out_dir.join(format!("{name}.plan")), plan.to_text(&graph).as_bytes())?;
    }
    if pkg.emit.report {
        use crate::report;
        let r = report::build(
            &graph,
            &plan,
            &manifest.target,
            max_tokens,
            req.max_context,
            u64::from(manifest.vocab),
            &layout,
            object.len() as u64,
        );
        files.write(&req.out_dir.join(report::MARKDOWN), r.to_markdown().as_bytes())?;
        files.write(&req.out_dir.join(report::JSON), r.to_json().as_bytes())?;
        files.write(&req.out_dir.join(report::SVG), report::memory_svg(&graph, &plan).as_bytes())?;
    }
    if let Some(t) = &tokenizer {
        files.write(&req.out_dir.join(crate::tokenizer::file_name(&name)), &t.to_bytes())?;
    }
    files.write(&req.out_dir.join(manifest::FILE_NAME), manifest.to_json().as_bytes())?;
    files.commit()?;

    Ok(Compiled {
        dir: req.out_dir.clone(),
        manifest,
        arena_size: plan.arena_size,
        state_size: plan.state_size,
        lower_bound: plan.lower_bound,
        plan_strategy: plan.strategy.name(),
        weights_size: layout.file_size,
        timings,
        weights: weight_stats,
    })
}

/// The model's graph after the passes `req` asks for (printing those `--print-after` names to
/// `log`); an ONNX export also gets the decoder signature.
pub fn build_graph(
    req: &CompileRequest,
    load: &edgec_frontend::LoadOptions,
    log: &mut dyn Write,
) -> Result<(Graph, Vec<PassTiming>)> {
    let onnx = is_onnx(&req.model);
    let mut graph = if onnx { import_onnx(&req.model, load)? } else { edgec_frontend::load_model(&req.model, load)? };
    let manager = match &req.passes {
        Some(names) => PassManager::from_names(names)?,
        None => PassManager::preset(req.opt_level),
    }
    .print_after(&req.print_after)?;
    let mut print_err = Ok(());
    let timings = manager.run(&mut graph, &mut |pass, g| {
        if print_err.is_ok() {
            print_err = write!(log, "; after {pass}\n{}", edgec_ir::text::print(g));
        }
    })?;
    print_err?;
    if onnx {
        to_decoder(&mut graph, load).with_context(|| format!("{}", req.model.display()))?;
    }
    Ok((graph, timings))
}

/// Whether `model` is an ONNX file: imported, then recognised and given the decoder signature.
pub(crate) fn is_onnx(model: &Path) -> bool {
    model.is_file() && model.extension().is_some_and(|e| e == "onnx")
}

/// Imports an ONNX causal LM with its sequence bounded by `max_context`, so the folded rotary
/// tables and causal mask cover every position the KV cache will hold (the recognition rules
/// check them over that whole range).
fn import_onnx(model: &Path, load: &edgec_frontend::LoadOptions) -> Result<Graph> {
    load.validate()?;
    let limit = edgec_frontend::limits::get(edgec_frontend::limits::Limit::OnnxFoldElements);
    if load.max_context.checked_mul(load.max_context).is_none_or(|n| n > limit) {
        bail!(
            "{}: an ONNX causal LM compiles with --max-context up to {} for now: its causal mask is \
             folded at max_context² elements, and the import-time folder stops at {limit} \
             (--limit onnx-fold-elements=N raises it)",
            model.display(),
            limit.isqrt()
        );
    }
    let m = edgec_frontend::onnx::OnnxModel::open(model)?;
    let opts = edgec_frontend::onnx::ImportOptions { max_seq: load.max_context, ..Default::default() };
    // An export with `past_key_values` inputs: the runtime's KV state is that cache.
    match edgec_frontend::onnx::KvCacheExport::detect(&m)? {
        Some(kv) => Ok(kv.import(&m, opts)?),
        None => Ok(edgec_frontend::onnx::import(&m, &opts)?),
    }
}

/// After the passes: the decoder signature (ids, pos, KV states, logits), then a schedule for it.
fn to_decoder(g: &mut Graph, load: &edgec_frontend::LoadOptions) -> Result<()> {
    use edgec_passes::{DecoderSignature, Pass, ReorderForMemory};
    DecoderSignature { max_context: load.max_context, max_tokens: load.max_tokens }
        .run(g)
        .context("cannot give it the decoder signature (the recognition passes run at -O1 and above)")?;
    ReorderForMemory.run(g)?;
    edgec_ir::verify::verify(g).context("after the decoder signature")?;
    Ok(())
}

fn vocab_of(g: &Graph) -> Result<u32> {
    let logits = g.outputs.iter().find(|o| o.name == "logits").context("the graph has no 'logits' output")?;
    let last = g.type_of(logits.value).shape.last().and_then(|d| d.as_const());
    match last.and_then(|v| u32::try_from(v).ok()) {
        Some(v) => Ok(v),
        None => bail!("the 'logits' output must end in a constant vocabulary dim"),
    }
}

/// The model directory's name, made into a C identifier (`Llama-3.2-1B` → `llama_3_2_1b`).
pub(crate) fn default_name(model: &Path) -> String {
    let stem = std::fs::canonicalize(model)
        .ok()
        .and_then(|p| if p.is_file() { p.file_stem() } else { p.file_name() }.map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "model_");
    }
    name
}

fn check_c_identifier(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("--name '{name}' is not a C identifier (letters, digits and '_', not starting with a digit)");
    }
    Ok(())
}
