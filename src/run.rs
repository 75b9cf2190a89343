//! `edgec run`: compile if needed, link, run a prompt and greedy (or sampled) generation.

use crate::compile::{CompileRequest, Numerics, compile};
use crate::manifest::{self, Manifest};
use anyhow::{Context, Result, bail};
use edgec_passes::OptLevel;
use edgec_runtime::SamplerConfig;
use std::path::{Path, PathBuf};
use target_lexicon::Triple;

#[derive(Clone, Debug)]
pub struct RunRequest {
    /// A checkpoint directory, or a directory written by `edgec compile`.
    pub model: PathBuf,
    pub ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub threads: usize,
    /// Defaults to the compiled directory's target, or the host.
    pub target: Option<Triple>,
    /// Feed the prompt one token per call instead of one prefill.
    pub stepwise: bool,
    /// For checkpoints: the KV cache size; defaults to what the prompt and generation need.
    pub max_context: Option<u64>,
    pub max_tokens: Option<u64>,
    pub linker: Option<String>,
    pub runner: Option<String>,
    /// Greedy unless a temperature is set.
    pub sampling: SamplerConfig,
    /// For checkpoints: how weights, the KV cache and activations are stored.
    pub numerics: Numerics,
}

/// Logits of every prompt position and the generated ids.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutput {
    pub vocab: usize,
    /// `ids.len() * vocab` floats, one row per prompt position.
    pub logits: Vec<f32>,
    pub generated: Vec<u32>,
}

pub fn run(req: &RunRequest) -> Result<RunOutput> {
    run_measured(req).map(|(out, _)| out)
}

/// Peak resident memory of a host run and the parts of it whose sizes are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryUse {
    /// VmHWM of this process, reset after any compile (`/proc/self/clear_refs`), so it covers
    /// loading and running the model, plus whatever the edgec process already held.
    pub peak_rss: u64,
    /// The weights file (mapped; a forward pass touches all of it), or the object for
    /// embedded weights.
    pub weights: u64,
    /// From `NAME.h` (`None` without a header).
    pub arena: Option<u64>,
    pub kv_state: Option<u64>,
    /// Resident pages of the edgec executable itself at the end of the run (part of the rest:
    /// an app linking the runtime has its own instead; a debug build's are larger).
    pub executable: Option<u64>,
}

impl MemoryUse {
    /// The peak not explained by the known parts: the runtime, code, heap (logits, sampler),
    /// thread stacks and the edgec process itself.
    pub fn rest(&self) -> u64 {
        self.peak_rss.saturating_sub(self.weights + self.arena.unwrap_or(0) + self.kv_state.unwrap_or(0))
    }

    pub fn to_text(&self) -> String {
        use crate::report::human;
        let known = |v: Option<u64>| v.map_or("unknown".to_string(), human);
        format!(
            "memory: peak RSS {} (VmHWM of the run) = weights {} (mapped) + arena {} + KV state {} + rest {} (runtime, code, heap, threads, the edgec process; {} of it the edgec executable)",
            human(self.peak_rss),
            human(self.weights),
            known(self.arena),
            known(self.kv_state),
            human(self.rest()),
            known(self.executable)
        )
    }
}

/// `key   N bytes` from the generated header's comment block.
fn header_size(header: &str, key: &str) -> Option<u64> {
    header.lines().find_map(|l| {
        let rest = l.trim_start_matches([' ', '*']).strip_prefix(key)?;
        rest.trim().strip_suffix("bytes")?.trim().parse().ok()
    })
}

/// Resident bytes of this process's own executable (its mappings in /proc/self/smaps).
fn executable_rss() -> Option<u64> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let exe = exe.to_str()?;
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut mine = false;
    let mut kb = 0u64;
    for line in smaps.lines() {
        match line.split_once(':') {
            // Field lines are `Name:   value kB`; mapping headers start with an address range.
            Some(("Rss", v)) if mine => kb += v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()?,
            Some((name, _)) if !name.contains('-') => {}
            _ => mine = line.split_whitespace().nth(5) == Some(exe),
        }
    }
    Some(kb * 1024)
}

/// This process's peak resident set (VmHWM), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// Runs like [`run`] and measures the peak resident memory of a host run (`None` for an
/// emulated target, or where /proc is missing).
pub fn run_measured(req: &RunRequest) -> Result<(RunOutput, Option<MemoryUse>)> {
    let (_scratch, dir, manifest) = prepare(req)?;
    let target = compiled_target(req, &dir, &manifest)?;
    if target == Triple::host() {
        // Reset the peak to the current RSS, so a compile before the run doesn't count.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let out = crate::host::run(&dir, &manifest, req)?;
        let header = std::fs::read_to_string(manifest.header(&dir)).unwrap_or_default();
        let weights = std::fs::metadata(manifest.weights(&dir))
            .or_else(|_| std::fs::metadata(manifest.object(&dir)))
            .map_or(0, |m| m.len());
        let memory = peak_rss().map(|peak_rss| MemoryUse {
            peak_rss,
            weights,
            arena: header_size(&header, "arena_size"),
            kv_state: header_size(&header, "state_size"),
            executable: executable_rss(),
        });
        Ok((out, memory))
    } else if crate::cross::can_run(&target) {
        Ok((crate::cross::run(&dir, &manifest, &target, req)?, None))
    } else {
        bail!(
            "cannot run {target} on this machine; `edgec run` supports the host ({}) and aarch64-unknown-linux-gnu under qemu",
            Triple::host()
        )
    }
}

/// `edgec run --chat`: `req.ids` is the first turn formatted with `template` (see
/// [`crate::chat::ChatTemplate::first_prompt`]). Generates the assistant's reply until the
/// end-of-turn token, EOS or `req.max_new_tokens`, writing its text to `out` as tokens decode;
/// then asks `next_user` for the next user message (`None` ends the conversation) and carries
/// on in the same KV cache. Host targets only.
pub fn chat(
    req: &RunRequest,
    template: &crate::chat::ChatTemplate,
    tokenizer: &edgec_runtime::Tokenizer,
    mut next_user: impl FnMut() -> Result<Option<String>>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let (_scratch, dir, manifest) = prepare(req)?;
    let target = compiled_target(req, &dir, &manifest)?;
    if target != Triple::host() {
        bail!("--chat runs on the host ({}) only, not {target}", Triple::host());
    }
    let mut session = crate::host::open_session(&dir, &manifest, req.threads, req.linker.as_deref())?;
    let mut sampler = edgec_runtime::Sampler::new(req.sampling)?;
    let stops: Vec<u32> = std::iter::once(template.end_of_turn).chain(tokenizer.eos).collect();
    let mut ids = req.ids.clone();
    loop {
        let max_context = u64::from(session.info().max_context);
        let room = max_context.saturating_sub(u64::from(session.position()) + ids.len() as u64);
        if room == 0 {
            bail!("the conversation fills the KV cache ({max_context} positions); give a larger --max-context");
        }
        let max_new = req.max_new_tokens.min(usize::try_from(room + 1).unwrap_or(usize::MAX));
        let mut decoder = edgec_runtime::tokenizer::StreamDecoder::default();
        let mut ended = false;
        let mut last = None;
        let mut failed = None;
        session.generate(&ids, max_new, &mut sampler, |tok| {
            last = Some(tok);
            if stops.contains(&tok) {
                ended = true;
                return false;
            }
            let text = decoder.push(tokenizer.token_bytes(tok).unwrap_or_default());
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e).context("cannot write the reply");
        }
        writeln!(out, "{}", decoder.finish())?;
        out.flush()?;
        let Some(user) = next_user()? else { return Ok(()) };
        // The last generated token was not fed back: feed the turn's end, then the next turn.
        ids = match last {
            Some(tok) if !ended => vec![tok, template.end_of_turn],
            _ => vec![template.end_of_turn],
        };
        ids.extend(tokenizer.encode(&template.next_prompt(&user))?);
    }
}

/// Compiles `req.model` for the target when it is a checkpoint (into a temporary directory,
/// returned to keep it alive); the compiled directory and its manifest, checked against `req`.
pub(crate) fn prepare(req: &RunRequest) -> Result<(Option<tempfile::TempDir>, PathBuf, Manifest)> {
    if req.ids.is_empty() {
        bail!("--ids is empty: give at least one prompt token id");
    }
    let mut scratch = None;
    let (dir, manifest) = if req.model.join(manifest::FILE_NAME).is_file() {
        let m = Manifest::read(&req.model)?;
        if req.max_context.is_some() || req.max_tokens.is_some() || req.numerics.is_set() {
            bail!(
                "{} is already compiled (max context {}); --max-context, --max-tokens, --quant, --kv-dtype, --activations and --calibrate apply only to checkpoints",
                req.model.display(),
                m.max_context
            );
        }
        (req.model.clone(), m)
    } else {
        let needed = positions_needed(req)?;
        let tmp =
            tempfile::Builder::new().prefix("edgec-run-").tempdir().context("cannot create a temporary directory")?;
        let compiled = compile(
            &CompileRequest {
                model: req.model.clone(),
                out_dir: tmp.path().to_path_buf(),
                target: req.target.clone().unwrap_or_else(Triple::host),
                name: None,
                max_context: req.max_context.unwrap_or(needed),
                max_tokens: req.max_tokens,
                opt_level: OptLevel::O2,
                passes: None,
                print_after: Vec::new(),
                emit_ir: false,
                numerics: req.numerics.clone(),
            },
            &mut std::io::sink(),
        )?;
        let dir = tmp.path().to_path_buf();
        scratch = Some(tmp);
        (dir, compiled.manifest)
    };
    check_request(req, &manifest)?;
    Ok((scratch, dir, manifest))
}

/// The target `dir` was compiled for; an error if `req.target` asks for another.
pub(crate) fn compiled_target(req: &RunRequest, dir: &Path, manifest: &Manifest) -> Result<Triple> {
    let target: Triple = manifest.target.parse().map_err(|e| anyhow::anyhow!("{}: bad target: {e}", dir.display()))?;
    if let Some(t) = &req.target
        && *t != target
    {
        bail!("{} was compiled for {target}, not {t}", dir.display());
    }
    Ok(target)
}

/// Positions the KV cache must hold: the prompt, then every generated token but the last.
fn positions_needed(req: &RunRequest) -> Result<u64> {
    let n = req.ids.len().checked_add(req.max_new_tokens.saturating_sub(1)).context("too many tokens")?;
    Ok(n as u64)
}

fn check_request(req: &RunRequest, m: &Manifest) -> Result<()> {
    if let Some((i, id)) = req.ids.iter().enumerate().find(|&(_, &id)| id >= m.vocab) {
        bail!("token id {id} at index {i} of --ids is out of range (vocab size {})", m.vocab);
    }
    let needed = positions_needed(req)?;
    if needed > u64::from(m.max_context) {
        bail!(
            "context overflow: {} prompt tokens + {} new tokens need {needed} positions, but the model was compiled with --max-context {}",
            req.ids.len(),
            req.max_new_tokens,
            m.max_context
        );
    }
    Ok(())
}

/// Writes `logits` (f32 [prompt_len, vocab]) and `generated_ids` (i64 [n]) as safetensors,
/// atomically.
pub fn write_output(path: &Path, out: &RunOutput) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let rows = out.logits.len() / out.vocab.max(1);
    let logits: Vec<u8> = out.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let ids: Vec<u8> = out.generated.iter().flat_map(|&v| i64::from(v).to_le_bytes()).collect();
    let tensors = [
        ("logits", TensorView::new(Dtype::F32, vec![rows, out.vocab], &logits)?),
        ("generated_ids", TensorView::new(Dtype::I64, vec![out.generated.len()], &ids)?),
    ];
    let bytes = safetensors::serialize(tensors, None)?;
    let mut files = crate::atomic::AtomicFiles::default();
    files.write(path, &bytes)?;
    files.commit()
}
