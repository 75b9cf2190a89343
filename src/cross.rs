//! Running an aarch64 object on this x86 machine: link it statically with the runtime's C
//! driver using a cross gcc, and run it under qemu-user.

use crate::manifest::Manifest;
use crate::run::{RunOutput, RunRequest};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use target_lexicon::{Architecture, Triple};

const DRIVER_C: &str = include_str!("../runtime/c/edgec_driver.c");
const DEFAULT_LINKER: &str = "aarch64-linux-gnu-gcc";
const DEFAULT_RUNNER: &str = "qemu-aarch64";

pub fn can_run(target: &Triple) -> bool {
    matches!(target.architecture, Architecture::Aarch64(_))
        && target.operating_system == target_lexicon::OperatingSystem::Linux
}

pub fn run(dir: &Path, m: &Manifest, target: &Triple, req: &RunRequest) -> Result<RunOutput> {
    if req.sampling.temperature > 0.0 {
        bail!("sampling is supported on the host only; the {target} driver decodes greedily");
    }
    if !m.weights(dir).is_file() {
        bail!(
            "{} has no {}: the C driver reads a weights file, so compile without --embed-weights to run under qemu",
            dir.display(),
            m.weights(dir).display()
        );
    }
    let scratch =
        tempfile::Builder::new().prefix("edgec-cross-").tempdir().context("cannot create a temporary directory")?;
    let s = scratch.path();
    std::fs::write(s.join("edgec_abi.h"), edgec_runtime::abi::ABI_C_HEADER)?;
    std::fs::write(s.join("edgec_driver.c"), DRIVER_C)?;
    let exe = s.join(&m.name);
    let linker = req.linker.as_deref().unwrap_or(DEFAULT_LINKER);
    let status = Command::new(linker)
        .args(["-O2", "-static", "-std=c99"])
        .arg(format!("-DEDGEC_MODEL={}", m.name))
        // Every aarch64 object exports NAME_forward_dotprod; the driver picks it on dotprod CPUs.
        .arg("-DEDGEC_DOTPROD_VARIANT")
        .arg("-I")
        .arg(s)
        .arg(s.join("edgec_driver.c"))
        .arg(m.object(dir))
        .arg("-o")
        .arg(&exe)
        .arg("-lm")
        .status()
        .with_context(|| {
            format!("cannot run the linker '{linker}' (install gcc-aarch64-linux-gnu, or set --linker)")
        })?;
    if !status.success() {
        bail!("linking {} with '{linker}' failed ({status})", m.object(dir).display());
    }

    let runner = req.runner.as_deref().unwrap_or(DEFAULT_RUNNER);
    let mut words = runner.split_whitespace();
    let program = words.next().context("--runner is empty")?;
    let out_path = s.join("out.bin");
    let ids = req.ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let output = Command::new(program)
        .args(words)
        .arg(&exe)
        .arg(m.weights(dir))
        .arg(ids)
        .arg(req.max_new_tokens.to_string())
        .arg(if req.stepwise { "stepwise" } else { "prefill" })
        .arg(&out_path)
        .output()
        .with_context(|| format!("cannot run '{program}' (install qemu-user, or set --runner)"))?;
    if !output.status.success() {
        bail!(
            "{} under '{runner}' failed ({}): {}",
            m.name,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let bytes = std::fs::read(&out_path).with_context(|| format!("cannot read {}", out_path.display()))?;
    let out = edgec_runtime::driver_output::parse_driver_output(&bytes)?;
    let variant = out.variant_name();
    eprintln!("{}: ran the {variant} variant under '{runner}'", m.name);
    Ok(RunOutput {
        vocab: out.vocab as usize,
        logits: out.logits,
        generated: out.generated.into_iter().map(|id| id as u32).collect(),
    })
}
