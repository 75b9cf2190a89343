//! Running a compiled model in this process: link the object into a shared library, load it,
//! and drive it with the runtime.

use crate::manifest::Manifest;
use crate::run::{RunOutput, RunRequest};
use anyhow::{Context, Result, bail};
use edgec_runtime::abi::{ForwardFn, ModelInfo};
use edgec_runtime::{Model, Sampler, Session, SessionOptions};
use std::path::Path;
use std::process::Command;

pub fn run(dir: &Path, m: &Manifest, req: &RunRequest) -> Result<RunOutput> {
    let (mut session, variant) = open_session_variant(dir, m, req.threads, req.linker.as_deref())?;
    eprintln!("{}: ran the {variant} variant on this CPU", m.name);
    let info = session.info();
    let mut sampler = Sampler::new(req.sampling)?;
    // Stepwise: every prompt token but the last goes in its own call; generation then starts
    // from the last one, so each prompt position is computed by a one-token call.
    let (head, last) = req.ids.split_at(if req.stepwise { req.ids.len() - 1 } else { 0 });
    let mut logits = Vec::with_capacity(req.ids.len() * info.vocab as usize);
    let mut row = Vec::new();
    for &id in head {
        session.forward(&[id], &mut row)?;
        logits.extend_from_slice(&row);
    }
    let generation = session.generate(last, req.max_new_tokens, &mut sampler, |_| true)?;
    logits.extend_from_slice(&generation.prompt_logits);
    Ok(RunOutput { vocab: info.vocab as usize, logits, generated: generation.tokens })
}

/// A compiled model linked and loaded into this process (for the rest of it).
pub struct LoadedModel {
    /// The object's `NAME_info` and the entry point for this CPU.
    pub model: Model,
    /// Which entry point: `baseline` (`NAME_forward`) or the CPU-feature variant's name.
    pub variant: &'static str,
    lib: &'static libloading::Library,
}

/// Links the compiled object in `dir` into a shared library (with `linker`, default `cc`),
/// loads it for the rest of the process, and opens a session over its weights (the weights
/// file, or the object's embedded image) with `threads` threads (0: the runtime's default).
pub fn open_session(dir: &Path, m: &Manifest, threads: usize, linker: Option<&str>) -> Result<Session> {
    Ok(open_session_variant(dir, m, threads, linker)?.0)
}

/// [`open_session`], also naming the variant whose entry point runs (see [`load_model`]).
pub fn open_session_variant(
    dir: &Path,
    m: &Manifest,
    threads: usize,
    linker: Option<&str>,
) -> Result<(Session, &'static str)> {
    let loaded = load_model(dir, m, linker)?;
    let (lib, model, info) = (loaded.lib, loaded.model, loaded.model.info);
    let options = SessionOptions { threads, ..SessionOptions::default() };
    let weights_file = m.weights(dir);
    let session = if weights_file.is_file() {
        Session::new(model, &weights_file, options)?
    } else {
        // Compiled with --embed-weights: the weights file image is the object's NAME_weights.
        let symbol = format!("{}_weights", m.name);
        // SAFETY: NAME_weights is a read-only array of `weights_size` bytes in the loaded
        // library, which stays loaded for the whole process; the runtime checks its header.
        let bytes: &'static [u8] = unsafe {
            // Not libloading's error: it names the temporary library.
            let base = *lib.get::<*const u8>(symbol.as_bytes()).map_err(|_| {
                anyhow::anyhow!(
                    "{} has no {}, and {} embeds no weights (no symbol {symbol})",
                    dir.display(),
                    weights_file
                        .file_name()
                        .map_or_else(|| weights_file.display().to_string(), |f| f.to_string_lossy().into()),
                    m.object(dir).file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned())
                )
            })?;
            std::slice::from_raw_parts(base, usize::try_from(info.weights_size)?)
        };
        Session::from_static(model, bytes, options)?
    };
    Ok((session, loaded.variant))
}

/// Links the compiled object in `dir` into a shared library (with `linker`, default `cc`) and
/// loads it for the rest of the process: its `NAME_info` and entry point, for sessions opened
/// by the caller (several may share one `edgec_runtime::Weights`). The entry point is
/// `NAME_forward_<variant>` for the first of `edgec_runtime::cpu::variants()` the object
/// exports (all variants give bit-identical results), else `NAME_forward`.
pub fn load_model(dir: &Path, m: &Manifest, linker: Option<&str>) -> Result<LoadedModel> {
    let scratch =
        tempfile::Builder::new().prefix("edgec-host-").tempdir().context("cannot create a temporary directory")?;
    let lib_path = scratch.path().join(format!("lib{}.so", m.name));
    let linker = linker.unwrap_or("cc");
    let status = Command::new(linker)
        .arg("-shared")
        .arg("-o")
        .arg(&lib_path)
        .arg(m.object(dir))
        .status()
        .with_context(|| format!("cannot run the linker '{linker}' (set --linker)"))?;
    if !status.success() {
        bail!("linking {} with '{linker}' failed ({status})", m.object(dir).display());
    }
    // SAFETY: the library is an edgec object linked above: no initializers, and the two symbols
    // have the ABI types declared here. It stays loaded for the whole process.
    let lib = unsafe { libloading::Library::new(&lib_path) }
        .with_context(|| format!("cannot load {}", lib_path.display()))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let info: &'static ModelInfo = unsafe {
        let sym = lib
            .get::<*const ModelInfo>(format!("{}_info", m.name).as_bytes())
            .with_context(|| format!("{} has no symbol {}_info", lib_path.display(), m.name))?;
        &**sym
    };
    // SAFETY: every NAME_forward* entry point has the ABI type ForwardFn.
    let variant = edgec_runtime::cpu::variants().into_iter().find_map(|v| {
        let f = unsafe { lib.get::<ForwardFn>(format!("{}_forward_{v}", m.name).as_bytes()) };
        f.ok().map(|f| (v, *f))
    });
    let (variant, forward) = match variant {
        Some(vf) => vf,
        None => unsafe {
            let f = *lib
                .get::<ForwardFn>(format!("{}_forward", m.name).as_bytes())
                .with_context(|| format!("{} has no symbol {}_forward", lib_path.display(), m.name))?;
            ("baseline", f)
        },
    };

    Ok(LoadedModel { model: Model { info, forward }, variant, lib })
}
