//! `edgec perplexity`: how well the *compiled* model predicts a text, with llama.cpp's
//! `llama-perplexity` protocol, so the numbers compare directly with llama.cpp's.
//!
//! The protocol, as `perplexity()` in llama.cpp's `tools/perplexity/perplexity.cpp`
//! (ggml-org/llama.cpp; `examples/perplexity/perplexity.cpp` before the move) does it with its
//! default `--ppl-stride 0`:
//!
//! 1. The file is read whole, one trailing `\n` dropped (`-f` in `common/arg.cpp`), and
//!    tokenized once with `common_tokenize(ctx, text, add_special = true)`: BOS first when the
//!    vocabulary adds BOS (`tokenizer.ggml.add_bos_token`), no EOS.
//! 2. At least `2 * n_ctx` tokens are required. The text is cut into `n_chunk = tokens / n_ctx`
//!    consecutive, non-overlapping windows `tokens[i * n_ctx .. (i + 1) * n_ctx]` (the tail
//!    shorter than a window is dropped; `--chunks K` keeps the first K).
//! 3. Each window is evaluated from an empty KV cache at positions `0 .. n_ctx`. When the
//!    vocabulary adds BOS, BOS *replaces* the window's first token (`tokens[seq_start] =
//!    llama_vocab_bos(vocab)` for the first batch of each chunk, restored afterwards); nothing is
//!    inserted, so a window is always exactly `n_ctx` tokens.
//! 4. Only the second half is scored: with `first = n_ctx / 2`, the logits of positions
//!    `j = first ..= n_ctx - 2` score the window's next original token `tokens[start + j + 1]`
//!    (`process_logits(..., tokens + start + first, n_ctx - 1 - first, ...)`), so a window
//!    contributes `n_ctx - 1 - first` predictions (255 for 512); the last position predicts
//!    nothing.
//! 5. Each prediction's negative log-likelihood is `max + log(sum exp(logit - max)) -
//!    logit[target]` (`log_softmax`); here it is computed in f64 throughout (llama.cpp sums in
//!    double over `expf` terms).
//! 6. Final estimate: with `count` predictions, `nll = mean(NLL)`, `ppl = exp(nll)`; the
//!    uncertainty is the standard error of the mean NLL, `sqrt((mean(NLL²) - nll²) /
//!    (count - 1))`, carried to the perplexity by multiplying with `ppl` ("Final estimate:
//!    PPL = %.4lf +/- %.5lf").
//!
//! [`Protocol`] and [`score`] are that protocol as pure functions (ids and a logits provider in,
//! per-prediction NLLs out); [`perplexity`] runs it on a compiled model: it compiles a
//! checkpoint or GGUF for the host with `max_tokens = max_context = ctx` (as `edgec run` does,
//! [`crate::run`]), so each window is one forward call from position 0 returning `ctx × vocab`
//! logits, and resets the KV cache between windows.

use crate::run::RunRequest;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use target_lexicon::Triple;

/// The smallest context that scores anything: `first = ctx / 2` must leave a position before
/// the last one.
pub const MIN_CTX: usize = 3;

/// Window cutting and scoring of llama.cpp's `llama-perplexity` (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// Tokens per window (`-c` / `--ctx`).
    pub ctx: usize,
    /// The BOS id when the tokenizer adds BOS: it replaces each window's first token.
    pub bos: Option<u32>,
}

impl Protocol {
    /// How many whole windows `n_tokens` tokens hold (`tokens.size() / n_ctx`), at most `chunks`.
    pub fn windows(&self, n_tokens: usize, chunks: Option<usize>) -> usize {
        let all = n_tokens / self.ctx.max(1);
        chunks.map_or(all, |k| k.min(all))
    }

    /// The first scored position of a window (`first = n_ctx / 2`).
    pub fn first_scored(&self) -> usize {
        self.ctx / 2
    }

    /// Predictions scored per window (`n_ctx - 1 - first`).
    pub fn scored_per_window(&self) -> usize {
        self.ctx.saturating_sub(1 + self.first_scored())
    }

    /// The ids fed for window `i`: `tokens[i * ctx .. (i + 1) * ctx]`, the first replaced by BOS
    /// when there is one.
    pub fn window_input(&self, tokens: &[u32], i: usize) -> Vec<u32> {
        let mut w = tokens[i * self.ctx..(i + 1) * self.ctx].to_vec();
        if let Some(bos) = self.bos {
            w[0] = bos;
        }
        w
    }

    /// What window `i` scores: `(row, target)`, the logits row of position `row` against the
    /// original token after it, for `row` in `first ..= ctx - 2`.
    pub fn scored(&self, tokens: &[u32], i: usize) -> Vec<(usize, u32)> {
        let start = i * self.ctx;
        (self.first_scored()..self.ctx.saturating_sub(1)).map(|j| (j, tokens[start + j + 1])).collect()
    }
}

/// The negative log-likelihood of `target` under the logits `row`: `log(sum exp(row)) -
/// row[target]`, in f64 (stabilized by the row's maximum).
pub fn nll(row: &[f32], target: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - row[target as usize] as f64
}

/// Runs the protocol over the first `windows` windows of `tokens`: `logits(i, ids)` returns the
/// `ctx × vocab` logits (row-major, one row per position from 0) for window `i`'s ids, and
/// `on_window(i, nlls)` sees each window's scored NLLs as they come. Returns every scored
/// prediction's NLL, window by window, in order.
pub fn score(
    tokens: &[u32],
    protocol: &Protocol,
    windows: usize,
    vocab: usize,
    mut logits: impl FnMut(usize, &[u32]) -> Result<Vec<f32>>,
    mut on_window: impl FnMut(usize, &[f64]),
) -> Result<Vec<f64>> {
    if protocol.ctx < MIN_CTX {
        bail!("a window of {} tokens scores no prediction (need at least {MIN_CTX})", protocol.ctx);
    }
    if windows.saturating_mul(protocol.ctx) > tokens.len() {
        bail!(
            "{windows} windows of {} tokens need {} tokens, but there are {}",
            protocol.ctx,
            windows.saturating_mul(protocol.ctx),
            tokens.len()
        );
    }
    let mut all = Vec::with_capacity(windows * protocol.scored_per_window());
    for i in 0..windows {
        let input = protocol.window_input(tokens, i);
        let l = logits(i, &input)?;
        if l.len() != protocol.ctx * vocab {
            bail!("window {i}: got {} logits, expected {} tokens x vocab {vocab}", l.len(), protocol.ctx);
        }
        let window: Vec<f64> = protocol
            .scored(tokens, i)
            .into_iter()
            .map(|(row, target)| nll(&l[row * vocab..(row + 1) * vocab], target))
            .collect();
        on_window(i, &window);
        all.extend(window);
    }
    Ok(all)
}

/// Perplexity and its uncertainty from per-prediction NLLs, as llama.cpp's final estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// `exp(mean NLL)`.
    pub perplexity: f64,
    /// The standard error of the mean NLL times the perplexity (llama.cpp's `+/-`).
    pub plus_minus: f64,
    /// Mean NLL in nats per token.
    pub mean_nll: f64,
    /// Predictions scored.
    pub count: usize,
}

impl Estimate {
    pub fn from_nlls(nlls: &[f64]) -> Estimate {
        let count = nlls.len();
        let n = count.max(1) as f64;
        let mean = nlls.iter().sum::<f64>() / n;
        let mean2 = nlls.iter().map(|v| v * v).sum::<f64>() / n;
        let perplexity = mean.exp();
        let var = mean2 - mean * mean;
        let plus_minus = if var > 0.0 && count > 1 { (var / (count - 1) as f64).sqrt() * perplexity } else { 0.0 };
        Estimate { perplexity, plus_minus, mean_nll: mean, count }
    }
}

#[derive(Clone, Debug)]
pub struct PerplexityRequest {
    /// A checkpoint directory, a GGUF file, or an OUTDIR written by `edgec compile` for the host.
    pub model: PathBuf,
    /// The text file.
    pub text: PathBuf,
    /// Tokens per window.
    pub ctx: usize,
    /// Score only the first K windows.
    pub chunks: Option<usize>,
    pub threads: usize,
    /// For checkpoints and GGUF files: how weights, the KV cache and activations are stored.
    pub numerics: crate::Numerics,
    pub linker: Option<String>,
}

/// What [`perplexity`] measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub estimate: Estimate,
    pub ctx: usize,
    pub windows: usize,
    /// Tokens in the whole text (BOS included when added).
    pub tokens: usize,
    /// Whether BOS replaced each window's first token.
    pub bos: Option<u32>,
    /// Running perplexity after each window.
    pub per_window: Vec<f64>,
    /// The weights file's size (the object's for embedded weights).
    pub weights_bytes: u64,
    pub quant: String,
    pub seconds: f64,
}

impl Report {
    pub fn to_text(&self) -> String {
        format!(
            "perplexity: {:.4} +/- {:.4} over {} windows of {} tokens ({} scored)\n",
            self.estimate.perplexity, self.estimate.plus_minus, self.windows, self.ctx, self.estimate.count
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "perplexity": self.estimate.perplexity,
            "plus_minus": self.estimate.plus_minus,
            "mean_nll": self.estimate.mean_nll,
            "scored": self.estimate.count,
            "windows": self.windows,
            "ctx": self.ctx,
            "tokens": self.tokens,
            "bos": self.bos,
            "per_window": self.per_window,
            "weights_bytes": self.weights_bytes,
            "quant": self.quant,
            "seconds": self.seconds,
        })
    }
}

/// Reads `path` as llama.cpp's `-f` does: the whole file, one trailing `\n` dropped.
pub fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the text file {}", path.display()))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("{}: not UTF-8 text (invalid byte at offset {})", path.display(), e.utf8_error().valid_up_to())
    })?;
    if text.ends_with('\n') {
        text.pop();
    }
    if text.trim().is_empty() {
        bail!("{}: the text is empty", path.display());
    }
    Ok(text)
}

/// Compiles (if needed) and runs the model over `req.text` with the protocol; progress goes to
/// `progress`, one line per window.
pub fn perplexity(req: &PerplexityRequest, progress: &mut dyn Write) -> Result<Report> {
    let started = Instant::now();
    if req.ctx < MIN_CTX {
        bail!(
            "--ctx {} is too small: a window scores the predictions of its second half but the last, so it needs at least {MIN_CTX} tokens",
            req.ctx
        );
    }
    if req.chunks == Some(0) {
        bail!("--chunks 0 scores nothing: give at least 1");
    }
    let text = read_text(&req.text)?;
    let tokenizer = crate::tokenizer::for_run(&req.model)?.with_context(|| {
        format!(
            "{} has no tokenizer (GGUF metadata, tokenizer.json or NAME.tokenizer), which perplexity needs",
            req.model.display()
        )
    })?;
    if let Some(t) =
        tokenizer.tokens.iter().find(|t| t.special && !t.bytes.is_empty() && contains(text.as_bytes(), &t.bytes))
    {
        // llama-perplexity tokenizes with parse_special = false; ours always matches them.
        writeln!(
            progress,
            "warning: {} contains the special token {:?}, which is encoded as that token (llama.cpp would encode its text)",
            req.text.display(),
            String::from_utf8_lossy(&t.bytes)
        )?;
    }
    let tokens = tokenizer.encode(&text).with_context(|| format!("cannot tokenize {}", req.text.display()))?;
    let bos = if tokenizer.add_bos { tokenizer.bos } else { None };
    if tokens.len() < req.ctx.saturating_mul(2) {
        bail!(
            "{} is {} tokens, too short for --ctx {}: llama-perplexity needs at least 2 x ctx = {} tokens",
            req.text.display(),
            tokens.len(),
            req.ctx,
            req.ctx.saturating_mul(2)
        );
    }
    let protocol = Protocol { ctx: req.ctx, bos };
    let windows = protocol.windows(tokens.len(), req.chunks);

    writeln!(
        progress,
        "perplexity: {} tokens, {windows} windows of {} ({} scored each){}; {}",
        tokens.len(),
        req.ctx,
        protocol.scored_per_window(),
        if bos.is_some() { ", BOS first in each" } else { "" },
        if is_compiled(&req.model) { "loading the model" } else { "compiling the model" }
    )?;
    let mut model = WindowModel::open(&req.model, req.ctx, &req.numerics, req.threads, req.linker.as_deref())?;
    if model.vocab != tokenizer.vocab_size() {
        bail!(
            "{}: the tokenizer has {} tokens but the model's vocab is {}",
            req.model.display(),
            tokenizer.vocab_size(),
            model.vocab
        );
    }
    let (vocab, weights_bytes) = (model.vocab, model.weights_bytes);

    let mut sum = 0.0;
    let mut count = 0usize;
    let mut per_window = Vec::with_capacity(windows);
    let window_start = std::cell::Cell::new(Instant::now());
    let mut write_error = None;
    let nlls = score(
        &tokens,
        &protocol,
        windows,
        vocab,
        |_, ids| {
            window_start.set(Instant::now());
            model.logits(ids)
        },
        |i, window| {
            sum += window.iter().sum::<f64>();
            count += window.len();
            let running = (sum / count as f64).exp();
            per_window.push(running);
            let own = (window.iter().sum::<f64>() / window.len() as f64).exp();
            let secs = window_start.get().elapsed().as_secs_f64();
            if let Err(e) =
                writeln!(progress, "[{}/{windows}] window {own:.4}, running {running:.4} ({secs:.1} s)", i + 1)
            {
                write_error.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write progress");
    }
    Ok(Report {
        estimate: Estimate::from_nlls(&nlls),
        ctx: req.ctx,
        windows,
        tokens: tokens.len(),
        bos,
        per_window,
        weights_bytes,
        quant: if is_compiled(&req.model) { "compiled".into() } else { req.numerics.describe() },
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A model compiled for the host and loaded, run one window at a time from position 0.
pub struct WindowModel {
    session: edgec_runtime::Session,
    /// The compile's temporary directory, kept while the weights are mapped.
    _scratch: Option<tempfile::TempDir>,
    pub vocab: usize,
    /// The weights file's size (the object's for embedded weights).
    pub weights_bytes: u64,
}

impl WindowModel {
    /// Compiles `model` (a checkpoint directory, GGUF or ONNX causal LM) for the host with
    /// `max_tokens = max_context = ctx` and `quant`, as `edgec run` does, or opens an OUTDIR
    /// compiled for the host whose context holds `ctx` tokens; then links and loads it.
    pub fn open(
        model: &std::path::Path,
        ctx: usize,
        numerics: &crate::Numerics,
        threads: usize,
        linker: Option<&str>,
    ) -> Result<WindowModel> {
        let compiled = is_compiled(model);
        if compiled {
            let m = crate::manifest::Manifest::read(model)?;
            if (m.max_context as usize) < ctx {
                bail!(
                    "{} was compiled with --max-context {}, which cannot hold a window of --ctx {ctx}: recompile with --max-context {ctx} or more, or give the GGUF/checkpoint",
                    model.display(),
                    m.max_context
                );
            }
        }
        let run_req = RunRequest {
            model: model.to_path_buf(),
            // `prepare` checks the context against these: one window, nothing generated.
            ids: vec![0; ctx],
            max_new_tokens: 1,
            threads,
            target: Some(Triple::host()),
            stepwise: false,
            max_context: (!compiled).then_some(ctx as u64),
            max_tokens: (!compiled).then_some(ctx as u64),
            linker: linker.map(str::to_string),
            runner: None,
            sampling: edgec_runtime::SamplerConfig::default(),
            numerics: numerics.clone(),
        };
        let (scratch, dir, manifest) = crate::run::prepare(&run_req)?;
        crate::run::compiled_target(&run_req, &dir, &manifest)?;
        let weights_bytes = std::fs::metadata(manifest.weights(&dir))
            .or_else(|_| std::fs::metadata(manifest.object(&dir)))
            .map_or(0, |m| m.len());
        let session = crate::host::open_session(&dir, &manifest, threads, linker)?;
        Ok(WindowModel { session, _scratch: scratch, vocab: manifest.vocab as usize, weights_bytes })
    }

    /// The logits of `ids` (one row of `vocab` per token) from an empty KV cache at position 0.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.session.reset();
        let mut logits = Vec::new();
        self.session.forward(ids, &mut logits)?;
        Ok(logits)
    }
}

fn is_compiled(model: &std::path::Path) -> bool {
    model.join(crate::manifest::FILE_NAME).is_file()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-worked case of llama.cpp's `perplexity()` (tools/perplexity/perplexity.cpp):
    /// 10 tokens, n_ctx 4 → n_chunk = 10 / 4 = 2 windows (tokens 8 and 9 dropped);
    /// first = 4 / 2 = 2; per window `n_ctx - 1 - first` = 1 prediction: row 2 scores
    /// tokens[start + 3]. With add_bos, BOS replaces tokens[start] in the input only.
    #[test]
    fn windows_bos_and_second_half_match_llama_cpp() {
        let tokens: Vec<u32> = (10..20).collect();
        let p = Protocol { ctx: 4, bos: Some(1) };
        assert_eq!(p.windows(tokens.len(), None), 2);
        assert_eq!(p.windows(tokens.len(), Some(1)), 1);
        assert_eq!(p.windows(tokens.len(), Some(9)), 2);
        assert_eq!(p.first_scored(), 2);
        assert_eq!(p.scored_per_window(), 1);
        assert_eq!(p.window_input(&tokens, 0), [1, 11, 12, 13]);
        assert_eq!(p.window_input(&tokens, 1), [1, 15, 16, 17]);
        assert_eq!(p.scored(&tokens, 0), [(2, 13)]);
        assert_eq!(p.scored(&tokens, 1), [(2, 17)]);
        let no_bos = Protocol { ctx: 4, bos: None };
        assert_eq!(no_bos.window_input(&tokens, 1), [14, 15, 16, 17]);
        // n_ctx 512: positions 256..=510 score tokens 257..=511 of the window, 255 of them.
        let p = Protocol { ctx: 512, bos: None };
        let tokens: Vec<u32> = (0..1024).collect();
        let s = p.scored(&tokens, 1);
        assert_eq!((s.len(), s[0], s[254]), (255, (256, 512 + 257), (510, 512 + 511)));
        // Odd n_ctx: first = 5 / 2 = 2, rows 2 and 3.
        let p = Protocol { ctx: 5, bos: None };
        assert_eq!(p.scored(&(0..10).collect::<Vec<_>>(), 1), [(2, 8), (3, 9)]);
    }

    #[test]
    fn nll_is_the_negative_log_softmax() {
        // Uniform over 4: ln 4.
        assert!((nll(&[0.5; 4], 2) - 4f64.ln()).abs() < 1e-12);
        // [0, ln 3]: p(1) = 3/4.
        let row = [0.0, 3f32.ln()];
        assert!((nll(&row, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-7);
        // Large logits don't overflow.
        assert!((nll(&[1000.0, 1000.0], 0) - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn estimate_is_llama_cpps_final_estimate() {
        // NLLs 1, 2, 3: mean 2, mean of squares 14/3, variance 2/3, stderr sqrt(2/3 / 2).
        let e = Estimate::from_nlls(&[1.0, 2.0, 3.0]);
        assert!((e.perplexity - 2f64.exp()).abs() < 1e-12);
        assert!((e.plus_minus - (1.0f64 / 3.0).sqrt() * 2f64.exp()).abs() < 1e-12);
        assert_eq!(e.count, 3);
    }

    #[test]
    fn score_feeds_windows_and_scores_rows() {
        // vocab 3; logits make token (position % 3) certain-ish, so the NLL of each target
        // tells which row scored it.
        let tokens: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 0, 2, 2];
        let p = Protocol { ctx: 4, bos: Some(2) };
        let mut fed = Vec::new();
        let nlls = score(
            &tokens,
            &p,
            2,
            3,
            |i, ids| {
                fed.push((i, ids.to_vec()));
                Ok((0..4).flat_map(|row| (0..3).map(move |v| if v == (row + 1) % 3 { 5.0 } else { 0.0 })).collect())
            },
            |_, _| {},
        )
        .unwrap();
        assert_eq!(fed, [(0, vec![2, 1, 2, 0]), (1, vec![2, 2, 0, 2])]);
        // Row 2 predicts (2 + 1) % 3 = 0: window 0's target tokens[3] = 0 (likely), window 1's
        // tokens[7] = 2 (unlikely).
        let likely = nll(&[5.0, 0.0, 0.0], 0);
        let unlikely = nll(&[5.0, 0.0, 0.0], 2);
        assert_eq!(nlls, [likely, unlikely]);
        let err = score(&tokens, &p, 3, 3, |_, _| Ok(vec![0.0; 12]), |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("need 12 tokens"), "{err}");
        let err = score(&tokens, &p, 1, 3, |_, _| Ok(vec![0.0; 5]), |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("got 5 logits"), "{err}");
    }
}
