//! `--calibrate FILE`: activation statistics for the quantizer's importance (llama.cpp's
//! "imatrix"). The f32 graph runs in the reference interpreter over the first tokens of a
//! calibration text, and every value a storable matmul weight multiplies contributes the mean
//! square of each of its features ([`edgec_ir::quant::ActivationStats`]); `--quant q4s` then
//! minimises each group's error weighted by those (see `edgec_ir::quant::importance`).

use anyhow::{Context, Result, bail};
use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::quant::ActivationStats;
use edgec_ir::{DType, Graph};
use std::io::Write;
use std::path::Path;

/// Tokens of the calibration text that are run (the text's first ones).
pub const CALIBRATION_TOKENS: usize = 512;

/// Runs `graph` (a causal LM with the decoder signature, weights still f32) over the first
/// [`CALIBRATION_TOKENS`] tokens of `text`, tokenized with `model`'s tokenizer, in forward
/// calls of at most the graph's token bound, from an empty KV cache (restarted when the
/// context is full). Progress goes to `log`.
pub fn calibrate(graph: &Graph, model: &Path, text: &Path, log: &mut dyn Write) -> Result<ActivationStats> {
    let fail = || format!("--calibrate {}", text.display());
    let content = std::fs::read_to_string(text).with_context(|| format!("{}: cannot read it as UTF-8 text", fail()))?;
    let tokenizer = crate::tokenizer::for_model(model)?
        .with_context(|| format!("{}: {} has no tokenizer to read the text with", fail(), model.display()))?;
    let mut ids = tokenizer.encode(&content).with_context(|| format!("{}: cannot tokenize it", fail()))?;
    if ids.len() < 2 {
        bail!("{}: the text has {} token(s); calibration needs at least 2", fail(), ids.len());
    }
    ids.truncate(CALIBRATION_TOKENS);
    let names: Vec<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
    if names != ["ids", "pos"] || !graph.states.iter().all(|s| s.ty.dtype == DType::F32) {
        bail!("{}: calibration needs a causal LM (inputs ids and pos, an f32 KV cache)", fail());
    }
    let (chunk, context) = bounds(graph).with_context(fail)?;
    let mut stats = ActivationStats::for_graph(graph);
    let mut interp = Interpreter::new(graph).with_context(fail)?;
    let started = std::time::Instant::now();
    let mut pos = 0usize;
    for (k, part) in ids.chunks(chunk).enumerate() {
        if pos + part.len() > context {
            interp.reset_state();
            pos = 0;
        }
        let inputs =
            [Tensor::i32(vec![part.len()], part.iter().map(|&t| t as i32).collect()), Tensor::scalar_i32(pos as i32)];
        interp
            .run_observed(&inputs, &mut |i, t| {
                if let Some(v) = t.as_f32() {
                    stats.observe(i, v)
                }
            })
            .with_context(fail)?;
        pos += part.len();
        let _ = writeln!(
            log,
            "calibrating: {} of {} tokens ({:.1} s)",
            (k * chunk + part.len()).min(ids.len()),
            ids.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(stats)
}

/// The graph's most tokens per call (its `seq` symbol's bound) and its KV context (the states'
/// rows).
fn bounds(graph: &Graph) -> Result<(usize, usize)> {
    let chunk = graph.symbols.first().map(|s| s.max as usize).filter(|&n| n > 0).context("no token bound")?;
    let context = graph
        .states
        .iter()
        .filter_map(|s| s.ty.shape.dims().first().and_then(|d| d.as_const()))
        .min()
        .map_or(chunk, |c| c as usize);
    Ok((chunk.min(context), context))
}
