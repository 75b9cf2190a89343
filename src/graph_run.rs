//! `edgec run MODEL.onnx --input FILE.safetensors`: compile a general (ONNX) graph for the
//! host, link and load it, call its `NAME_run` entry point, and return the outputs by name.

use anyhow::{Context, Result, bail};
use edgec_ir::interp::{Data, Tensor};
use edgec_ir::{DType, Dim, Graph};
use edgec_passes::{OptLevel, PassManager, plan::plan_memory};
use edgec_runtime::abi::{self, ModelInfo, RunFn};
use std::path::{Path, PathBuf};
use std::process::Command;
use target_lexicon::Triple;

/// What to run.
#[derive(Clone, Debug)]
pub struct GraphRunRequest {
    /// An `.onnx` file.
    pub model: PathBuf,
    /// Bound of the symbolic dims (`ImportOptions::max_seq`); the arena is sized for it.
    pub max_seq: u64,
    pub threads: usize,
    /// The host (default), or `aarch64-unknown-linux-gnu` (linked with the general-graph C
    /// driver, run under `runner`).
    pub target: Option<Triple>,
    pub linker: Option<String>,
    pub runner: Option<String>,
}

/// Imports, compiles, links and runs `inputs` (by graph input name) through the model; returns
/// the graph outputs in order, by name.
pub fn run_graph(req: &GraphRunRequest, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
    let m = edgec_frontend::onnx::OnnxModel::open(&req.model)?;
    let opts = edgec_frontend::onnx::ImportOptions { max_seq: req.max_seq, ..Default::default() };
    let mut g = edgec_frontend::onnx::import(&m, &opts)?;
    g.name = "graph".into();
    general_pipeline().run(&mut g, &mut |_, _| {})?;
    let target = req.target.clone().unwrap_or_else(Triple::host);
    let compiled = CompiledGraph::build_for(&g, &target, req.linker.as_deref(), req.runner.as_deref())?;
    compiled.run(&g, inputs, req.threads)
}

/// The passes for a general graph: `-O2` without recognition, whose `rope` and `attention`
/// take a start position that only the decoder signature (`NAME_forward`) supplies.
#[allow(clippy::expect_used, reason = "the -O2 pass names are built in, not read from anywhere")]
pub fn general_pipeline() -> PassManager {
    let names: Vec<&str> = OptLevel::O2.pipeline().iter().copied().filter(|&p| p != "recognize").collect();
    PassManager::from_names(&names).expect("the -O2 passes exist")
}

enum Loaded {
    Host {
        _lib: libloading::Library,
        run: RunFn,
        weights: edgec_runtime::Weights,
    },
    /// A static executable (the object + `edgec_graph_driver.c`) and its runner.
    Cross {
        exe: PathBuf,
        weights: PathBuf,
        runner: String,
    },
}

/// A general graph compiled and linked: loaded in this process (host), or an executable run
/// under an emulator (aarch64).
pub struct CompiledGraph {
    dir: tempfile::TempDir,
    info: ModelInfo,
    loaded: Loaded,
}

const GRAPH_DRIVER_C: &str = include_str!("../runtime/c/edgec_graph_driver.c");

impl CompiledGraph {
    /// [`CompiledGraph::build_for`] the host.
    pub fn build(g: &Graph, linker: Option<&str>) -> Result<CompiledGraph> {
        Self::build_for(g, &Triple::host(), linker, None)
    }

    /// Plans, writes the weights, emits the object for `target`, links it (a shared library
    /// loaded here for the host; a static executable with the C driver for aarch64).
    pub fn build_for(g: &Graph, target: &Triple, linker: Option<&str>, runner: Option<&str>) -> Result<CompiledGraph> {
        let dir =
            tempfile::Builder::new().prefix("edgec-graph-").tempdir().context("cannot create a temporary directory")?;
        let plan = plan_memory(g)?;
        let layout = edgec_backend::layout_weights(g, Default::default())?;
        let wpath = dir.path().join(format!("{}.weights", g.name));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&wpath)?);
        let hash = edgec_backend::write_weights(g, &layout, &mut f)?;
        std::io::Write::flush(&mut f)?;
        drop(f);
        let info = edgec_backend::model_info(g, &plan, &layout, hash)?;
        let opts = edgec_backend::CompileOptions::new(target.clone(), g.name.clone());
        let obj = edgec_backend::emit_object(g, &plan, &layout, &info, &opts)?;
        let opath = dir.path().join(format!("{}.o", g.name));
        std::fs::write(&opath, obj)?;
        let host = *target == Triple::host();
        if !host && !crate::cross::can_run(target) {
            bail!("general graphs run on the host or aarch64-unknown-linux-gnu (under qemu), not {target}");
        }
        let link = |cmd: &mut Command, linker: &str| -> Result<()> {
            let status = cmd.status().with_context(|| format!("cannot run the linker '{linker}' (set --linker)"))?;
            if !status.success() {
                bail!("linking with '{linker}' failed ({status})");
            }
            Ok(())
        };
        let loaded = if host {
            let lib_path = dir.path().join(format!("lib{}.so", g.name));
            let linker = linker.unwrap_or("cc");
            link(Command::new(linker).arg("-shared").arg("-o").arg(&lib_path).arg(&opath), linker)?;
            // SAFETY: an edgec object linked above: no initializers; the symbols have the ABI types.
            let lib = unsafe { libloading::Library::new(&lib_path) }.context("cannot load the linked model")?;
            let run: RunFn = unsafe {
                *lib.get::<RunFn>(format!("{}_run", g.name).as_bytes())
                    .context("the object has no NAME_run: not a general graph")?
            };
            let weights = edgec_runtime::Weights::open(&wpath, &info)?;
            Loaded::Host { _lib: lib, run, weights }
        } else {
            let s = dir.path();
            std::fs::write(s.join("edgec_abi.h"), abi::ABI_C_HEADER)?;
            std::fs::write(s.join("edgec_graph_driver.c"), GRAPH_DRIVER_C)?;
            let exe = s.join(&g.name);
            let linker = linker.unwrap_or("aarch64-linux-gnu-gcc");
            link(
                Command::new(linker)
                    .args(["-O2", "-static", "-std=c99"])
                    .arg(format!("-DEDGEC_MODEL={}", g.name))
                    .arg("-I")
                    .arg(s)
                    .arg(s.join("edgec_graph_driver.c"))
                    .arg(&opath)
                    .arg("-o")
                    .arg(&exe),
                linker,
            )?;
            Loaded::Cross { exe, weights: wpath, runner: runner.unwrap_or("qemu-aarch64").to_string() }
        };
        Ok(CompiledGraph { dir, info, loaded })
    }

    /// The loaded entry point, the mapped weights and the model info of a host build, for
    /// tests that call `NAME_run` directly with hostile arguments.
    #[doc(hidden)]
    pub fn host_entry(&self) -> Option<(RunFn, *const u8, ModelInfo)> {
        match &self.loaded {
            Loaded::Host { run, weights, .. } => Some((*run, weights.as_ptr(), self.info)),
            Loaded::Cross { .. } => None,
        }
    }

    /// Runs the inputs (matched to graph inputs by name) and returns the outputs in graph order.
    pub fn run(&self, g: &Graph, inputs: &[(String, Tensor)], threads: usize) -> Result<Vec<(String, Tensor)>> {
        // The symbol's value from the first input that has it; every input's shape checked.
        let mut sym: Option<u64> = None;
        let mut ins: Vec<&Tensor> = Vec::new();
        for gi in &g.inputs {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| *n == gi.name)
                .with_context(|| format!("no input tensor named `{}`", gi.name))?;
            let dims = gi.ty.shape.dims();
            if dims.len() != t.shape.len() {
                bail!("input `{}` has shape {:?}, the graph wants rank {}", gi.name, t.shape, dims.len());
            }
            for (d, &v) in dims.iter().zip(&t.shape) {
                let ok = match d {
                    Dim::Const(c) => *c == v as u64,
                    Dim::Sym(_) => *sym.get_or_insert(v as u64) == v as u64,
                };
                if !ok {
                    bail!("input `{}` has shape {:?}, the graph wants {:?}", gi.name, t.shape, gi.ty.shape);
                }
            }
            let want = match t.data {
                Data::F32(_) => DType::F32,
                Data::I32(_) => DType::I32,
            };
            if want != gi.ty.dtype {
                bail!("input `{}` is {want}, the graph wants {}", gi.name, gi.ty.dtype);
            }
            ins.push(t);
        }
        let n = sym.unwrap_or(1);
        if !g.symbols.is_empty() && (n == 0 || n > g.symbols[0].max) {
            bail!("symbol `{}` = {n} is outside 1..={}", g.symbols[0].name, g.symbols[0].max);
        }
        let mut outs: Vec<Tensor> = g
            .outputs
            .iter()
            .map(|o| {
                let ty = g.type_of(o.value);
                let shape: Vec<usize> = ty
                    .shape
                    .dims()
                    .iter()
                    .map(|d| match d {
                        Dim::Const(c) => *c as usize,
                        Dim::Sym(_) => n as usize,
                    })
                    .collect();
                let len: usize = shape.iter().product();
                match ty.dtype {
                    DType::I32 => Tensor::i32(shape, vec![0; len]),
                    _ => Tensor::f32(shape, vec![0.0; len]),
                }
            })
            .collect();
        let status = match &self.loaded {
            Loaded::Host { run, weights, .. } => {
                let in_ptrs: Vec<*const std::ffi::c_void> = ins
                    .iter()
                    .map(|t| match &t.data {
                        Data::F32(v) => v.as_ptr().cast(),
                        Data::I32(v) => v.as_ptr().cast(),
                    })
                    .collect();
                let out_ptrs: Vec<*mut std::ffi::c_void> = outs
                    .iter_mut()
                    .map(|t| match &mut t.data {
                        Data::F32(v) => v.as_mut_ptr().cast(),
                        Data::I32(v) => v.as_mut_ptr().cast(),
                    })
                    .collect();
                let arena = AlignedBuf::new(self.info.arena_size, "arena")?;
                let state = AlignedBuf::new(self.info.state_size, "state")?;
                let pool = edgec_runtime::pool::ThreadPool::new(edgec_runtime::pool::resolve_threads(threads))?;
                let ctx = abi::Context {
                    weights: weights.as_ptr(),
                    arena: arena.ptr,
                    state: state.ptr,
                    pool: pool.as_context_ptr(),
                    parallel_for: edgec_runtime::pool::edgec_parallel_for,
                };
                let dims = [n as i64];
                // SAFETY: the NAME_run contract: inputs/outputs sized for the symbol value `n`
                // (checked above), arena and state of the compiled sizes, weights checked.
                unsafe { run(&ctx, in_ptrs.as_ptr(), out_ptrs.as_ptr(), dims.as_ptr()) }
            }
            Loaded::Cross { exe, weights, runner } => self.run_cross(exe, weights, runner, n, &ins, &mut outs)?,
        };
        if status != abi::STATUS_OK {
            bail!("the model returned status {status}");
        }
        Ok(g.outputs.iter().map(|o| o.name.clone()).zip(outs).collect())
    }

    /// One call through the C driver under the runner (see `edgec_graph_driver.c` for the files).
    fn run_cross(
        &self,
        exe: &Path,
        weights: &Path,
        runner: &str,
        n: u64,
        ins: &[&Tensor],
        outs: &mut [Tensor],
    ) -> Result<i32> {
        let bytes_of = |t: &Tensor| -> Vec<u8> {
            match &t.data {
                Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }
        };
        let mut buf = (n as i64).to_le_bytes().to_vec();
        buf.extend((ins.len() as u32).to_le_bytes());
        for t in ins {
            let b = bytes_of(t);
            buf.extend((b.len() as u64).to_le_bytes());
            buf.extend(b);
        }
        buf.extend((outs.len() as u32).to_le_bytes());
        for t in outs.iter() {
            buf.extend((bytes_of(t).len() as u64).to_le_bytes());
        }
        let in_path = self.dir.path().join("in.bin");
        let out_path = self.dir.path().join("out.bin");
        std::fs::write(&in_path, buf)?;
        let mut words = runner.split_whitespace();
        let program = words.next().context("--runner is empty")?;
        let output = Command::new(program)
            .args(words)
            .arg(exe)
            .arg(weights)
            .arg(&in_path)
            .arg(&out_path)
            .output()
            .with_context(|| format!("cannot run '{program}' (install qemu-user, or set --runner)"))?;
        if !output.status.success() {
            bail!(
                "the driver under '{runner}' failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let b = std::fs::read(&out_path)?;
        let word = |at: usize, len: usize| -> Result<&[u8]> {
            b.get(at..at + len).context("the driver's output is truncated")
        };
        let status = i32::from_le_bytes(word(0, 4)?.try_into()?);
        if status != abi::STATUS_OK {
            return Ok(status);
        }
        let mut at = 8;
        for t in outs.iter_mut() {
            let len = u64::from_le_bytes(word(at, 8)?.try_into()?) as usize;
            at += 8;
            let data = word(at, len)?;
            at += len;
            match &mut t.data {
                Data::F32(v) if v.len() * 4 == len => {
                    for (x, c) in v.iter_mut().zip(data.chunks_exact(4)) {
                        *x = f32::from_le_bytes(c.try_into()?);
                    }
                }
                Data::I32(v) if v.len() * 4 == len => {
                    for (x, c) in v.iter_mut().zip(data.chunks_exact(4)) {
                        *x = i32::from_le_bytes(c.try_into()?);
                    }
                }
                _ => bail!("the driver wrote {len} bytes for an output of another size"),
            }
        }
        Ok(status)
    }
}

struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    /// `len` zeroed bytes, 64-byte aligned; `what` names the buffer in errors.
    fn new(len: u64, what: &str) -> Result<AlignedBuf> {
        let layout = usize::try_from(len.max(64))
            .ok()
            .and_then(|n| std::alloc::Layout::from_size_align(n, 64).ok())
            .with_context(|| format!("the {what} of {len} bytes does not fit in memory"))?;
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("out of memory allocating the {what} ({len} bytes)");
        }
        Ok(AlignedBuf { ptr, layout })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Reads every tensor of a safetensors file: f32 as f32; i64/i32 as i32 (range-checked).
pub fn read_inputs(path: &Path) -> Result<Vec<(String, Tensor)>> {
    use safetensors::tensor::Dtype;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not safetensors", path.display()))?;
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let shape = v.shape().to_vec();
        let d = v.data();
        let t = match v.dtype() {
            Dtype::F32 => Tensor::f32(shape, d.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect()),
            Dtype::I32 => Tensor::i32(shape, d.as_chunks::<4>().0.iter().map(|c| i32::from_le_bytes(*c)).collect()),
            Dtype::I64 => {
                let v: Result<Vec<i32>> = d
                    .as_chunks::<8>()
                    .0
                    .iter()
                    .map(|c| {
                        let x = i64::from_le_bytes(*c);
                        i32::try_from(x).with_context(|| format!("`{name}`: {x} does not fit in i32"))
                    })
                    .collect();
                Tensor::i32(shape, v?)
            }
            other => {
                // Unused tensors (e.g. a reference file's extra entries) may have any dtype.
                let _ = other;
                continue;
            }
        };
        out.push((name, t));
    }
    Ok(out)
}

/// Writes outputs by name as f32 / i32 safetensors (all at once or not at all).
pub fn write_outputs(path: &Path, outs: &[(String, Tensor)]) -> Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let bufs: Vec<(Dtype, Vec<u8>)> = outs
        .iter()
        .map(|(_, t)| match &t.data {
            Data::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let views: Vec<(String, TensorView)> = outs
        .iter()
        .zip(&bufs)
        .map(|((n, t), (dt, b))| Ok((n.clone(), TensorView::new(*dt, t.shape.clone(), b)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None)?;
    let mut files = crate::atomic::AtomicFiles::default();
    files.write(path, &bytes)?;
    files.commit()
}
