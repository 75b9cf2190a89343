//! `edgec::Build`: compile a model from a Cargo build script, in the manner of `cc::Build`.
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     edgec::Build::new().model("models/tiny").name("tiny").max_context(256).compile();
//! }
//! // src/main.rs
//! // include!(concat!(env!("OUT_DIR"), "/edgec_tiny.rs"));
//! // let mut session = tiny::session(Default::default())?;
//! ```
//!
//! It reads `TARGET`, `OUT_DIR` and `PROFILE` (and, on Apple targets without a version in the
//! triple, `IPHONEOS_DEPLOYMENT_TARGET` / `MACOSX_DEPLOYMENT_TARGET`), compiles the model into
//! `OUT_DIR/edgec/NAME/` (`libNAME.a`, `NAME.h`, and `NAME.weights` unless embedded), writes
//! Rust bindings to `OUT_DIR/edgec_NAME.rs`, and prints the `cargo:rustc-link-lib`,
//! `cargo:rustc-link-search` and `cargo:rerun-if-changed` lines. The outputs are cached by a
//! content hash of the model directory's files and every option: an unchanged model is not
//! recompiled. Each call appends `compiled NAME` or `cached NAME` to `OUT_DIR/edgec-build.log`.

use crate::compile::{CompileRequest, Emit, Packaging, compile_with};
use anyhow::{Context, Result};
use edgec_passes::OptLevel;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Build-script compilation of one model. See the module docs.
#[derive(Clone, Debug)]
pub struct Build {
    model: Option<PathBuf>,
    name: Option<String>,
    max_context: u64,
    max_tokens: Option<u64>,
    opt_level: OptLevel,
    embed_weights: bool,
    target: Option<String>,
    out_dir: Option<PathBuf>,
    cargo_metadata: bool,
    numerics: crate::Numerics,
}

/// What [`Build::try_compile`] produced.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    /// The directory holding `libNAME.a`, `NAME.h` and (unless embedded) `NAME.weights`.
    pub dir: PathBuf,
    pub static_lib: PathBuf,
    pub header: PathBuf,
    /// `None` with [`Build::embed_weights`].
    pub weights: Option<PathBuf>,
    /// `OUT_DIR/edgec_NAME.rs`: `include!` it to get `mod NAME { model(), session(..) }`.
    pub bindings: PathBuf,
    /// The canonical target compiled for, e.g. `aarch64-linux-android21`.
    pub target: String,
    /// True when the cached outputs were reused.
    pub cached: bool,
}

impl Default for Build {
    fn default() -> Build {
        Build::new()
    }
}

impl Build {
    pub fn new() -> Build {
        Build {
            model: None,
            name: None,
            max_context: 2048,
            max_tokens: None,
            opt_level: OptLevel::O2,
            embed_weights: false,
            target: None,
            out_dir: None,
            cargo_metadata: true,
            numerics: crate::Numerics::default(),
        }
    }

    /// The checkpoint directory (relative paths are relative to the package, where Cargo runs
    /// build scripts).
    pub fn model(&mut self, dir: impl AsRef<Path>) -> &mut Build {
        self.model = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Symbol prefix, library and file stem (a C identifier). Two models in one app need two
    /// names. Default: the model directory's name.
    pub fn name(&mut self, name: &str) -> &mut Build {
        self.name = Some(name.to_string());
        self
    }

    /// Positions the KV cache holds (default 2048).
    pub fn max_context(&mut self, n: u64) -> &mut Build {
        self.max_context = n;
        self
    }

    /// Most tokens per forward call (default: the smaller of max_context and 128).
    pub fn max_tokens(&mut self, n: u64) -> &mut Build {
        self.max_tokens = Some(n);
        self
    }

    /// The pass preset. Default `O2` in every Cargo profile: an unoptimized model is never
    /// what an app wants, and the generated code does not depend on `PROFILE`.
    pub fn opt_level(&mut self, level: OptLevel) -> &mut Build {
        self.opt_level = level;
        self
    }

    /// How matmul weights and embedding tables are stored, as `--quant` (default f32).
    pub fn quant(&mut self, preset: edgec_ir::quant::Preset) -> &mut Build {
        self.numerics.quant = preset;
        self
    }

    /// The KV cache's element type, as `--kv-dtype` (default f32; f16; q8).
    pub fn kv_dtype(&mut self, kv: edgec_ir::quant::KvDtype) -> &mut Build {
        self.numerics.kv_dtype = kv;
        self
    }

    /// How int8/int4-weight matmuls take their activations, as `--activations` (default int8).
    pub fn activations(&mut self, a: edgec_ir::quant::Activations) -> &mut Build {
        self.numerics.activations = a;
        self
    }

    /// Put the weights into the library (`NAME_weights`) instead of a separate file.
    pub fn embed_weights(&mut self, yes: bool) -> &mut Build {
        self.embed_weights = yes;
        self
    }

    /// Overrides `TARGET`, e.g. `aarch64-linux-android24` or `aarch64-apple-ios15.0`.
    pub fn target(&mut self, target: &str) -> &mut Build {
        self.target = Some(target.to_string());
        self
    }

    /// Overrides `OUT_DIR`.
    pub fn out_dir(&mut self, dir: impl AsRef<Path>) -> &mut Build {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Whether to print `cargo:` lines (default true).
    pub fn cargo_metadata(&mut self, yes: bool) -> &mut Build {
        self.cargo_metadata = yes;
        self
    }

    /// Like [`Build::try_compile`], but panics with the error (what a build script wants).
    pub fn compile(&self) -> Built {
        match self.try_compile() {
            Ok(b) => b,
            Err(e) => panic!("edgec: {e:#}"),
        }
    }

    fn env(&self, key: &str) -> Option<String> {
        if self.cargo_metadata {
            println!("cargo:rerun-if-env-changed={key}");
        }
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }

    /// The target string: `target()` or `TARGET`, with the Apple deployment target from the
    /// environment when the triple has none.
    fn resolve_target(&self) -> Result<edgec_backend::Target> {
        let s = match &self.target {
            Some(t) => t.clone(),
            None => {
                std::env::var("TARGET").context("TARGET is not set (run from a build script, or call .target())")?
            }
        };
        let mut t = edgec_backend::Target::parse(&s)?;
        let versioned = s.contains("ios1") || s.contains("ios2") || s.contains("macosx");
        let env_key = match t.platform {
            edgec_backend::Platform::Ios | edgec_backend::Platform::IosSimulator => Some("IPHONEOS_DEPLOYMENT_TARGET"),
            edgec_backend::Platform::MacOs => Some("MACOSX_DEPLOYMENT_TARGET"),
            _ => None,
        };
        if let Some(key) = env_key
            && !versioned
            && let Some(v) = self.env(key)
        {
            let spelled = match t.platform {
                edgec_backend::Platform::Ios => format!("aarch64-apple-ios{v}"),
                edgec_backend::Platform::IosSimulator => format!("aarch64-apple-ios{v}-sim"),
                _ => format!("{}-apple-macosx{v}", if t.is_aarch64() { "aarch64" } else { "x86_64" }),
            };
            t = edgec_backend::Target::parse(&spelled).with_context(|| format!("{key}={v}"))?;
        }
        Ok(t)
    }

    /// Compiles the model (or reuses the cached outputs) and prints the Cargo lines.
    pub fn try_compile(&self) -> Result<Built> {
        let model = self.model.clone().context("no model: call .model(DIR)")?;
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(
                std::env::var("OUT_DIR").context("OUT_DIR is not set (run from a build script, or call .out_dir())")?,
            ),
        };
        // PROFILE is read for completeness: the model's code is the same in every profile.
        let _profile = self.env("PROFILE");
        let target = self.resolve_target()?;
        let name = match &self.name {
            Some(n) => n.clone(),
            None => crate::compile::default_name(&model),
        };
        let dir = out_dir.join("edgec").join(&name);
        let key = self.cache_key(&model, &target, &name)?;
        let key_file = dir.join(".edgec-key");
        let built = Built {
            name: name.clone(),
            static_lib: dir.join(format!("lib{name}.a")),
            header: dir.join(format!("{name}.h")),
            weights: (!self.embed_weights).then(|| dir.join(format!("{name}.weights"))),
            bindings: out_dir.join(format!("edgec_{name}.rs")),
            target: target.to_string(),
            dir: dir.clone(),
            cached: false,
        };
        let outputs_exist =
            built.static_lib.is_file() && built.header.is_file() && built.weights.as_ref().is_none_or(|w| w.is_file());
        let cached = outputs_exist && std::fs::read_to_string(&key_file).is_ok_and(|k| k == key);
        if !cached {
            let req = CompileRequest {
                model: model.clone(),
                out_dir: dir.clone(),
                target: target.triple.clone(),
                name: Some(name.clone()),
                max_context: self.max_context,
                max_tokens: self.max_tokens,
                opt_level: self.opt_level,
                passes: None,
                print_after: Vec::new(),
                emit_ir: false,
                numerics: self.numerics.clone(),
            };
            let emit = Emit { obj: false, staticlib: true, header: true, weights: !self.embed_weights, report: false };
            let pkg = Packaging { emit, embed_weights: self.embed_weights, cpu_variants: None };
            compile_with(&req, &pkg, &mut std::io::sink())
                .with_context(|| format!("compiling {} for {target}", model.display()))?;
            std::fs::write(&key_file, &key).with_context(|| format!("cannot write {}", key_file.display()))?;
        }
        std::fs::write(&built.bindings, self.bindings(&name, built.weights.as_deref()))
            .with_context(|| format!("cannot write {}", built.bindings.display()))?;
        let log = out_dir.join("edgec-build.log");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        writeln!(f, "{} {name}", if cached { "cached" } else { "compiled" })?;
        if self.cargo_metadata {
            println!("cargo:rerun-if-changed={}", model.display());
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static={name}");
        }
        Ok(Built { cached, ..built })
    }

    /// blake3 over edgec's version, every option, and the name, size and bytes of every file
    /// in the model directory (sorted by name).
    fn cache_key(&self, model: &Path, target: &edgec_backend::Target, name: &str) -> Result<String> {
        let mut h = blake3::Hasher::new();
        let opts = format!(
            "edgec {} build cache 1\ntarget {target}\nname {name}\nmax_context {}\nmax_tokens {:?}\nopt {:?}\nembed {}\nquant {}\nkv {}\nactivations {}\n",
            env!("CARGO_PKG_VERSION"),
            self.max_context,
            self.max_tokens,
            self.opt_level,
            self.embed_weights,
            self.numerics.quant.name(),
            self.numerics.kv_dtype.name(),
            self.numerics.activations.name()
        );
        h.update(opts.as_bytes());
        let mut files: Vec<PathBuf> = std::fs::read_dir(model)
            .with_context(|| format!("cannot read the model directory {}", model.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        for p in files {
            let file_name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut f = std::fs::File::open(&p).with_context(|| format!("cannot read {}", p.display()))?;
            h.update(b"\0file\0");
            h.update(file_name.as_bytes());
            let len = std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", p.display()))?;
            h.update(&len.to_le_bytes());
        }
        Ok(h.finalize().to_hex().to_string())
    }

    /// `mod NAME { model(), session(options), ... }` over the linked symbols.
    fn bindings(&self, name: &str, weights: Option<&Path>) -> String {
        let mut s = format!(
            "// Generated by edgec::Build for model `{name}`. Do not edit.\n\
             #[allow(dead_code, non_upper_case_globals)]\n\
             pub mod {name} {{\n\
             \x20   use ::edgec_runtime::abi::{{Context, ModelInfo}};\n\
             \x20   unsafe extern \"C\" {{\n\
             \x20       #[link_name = \"{name}_info\"]\n\
             \x20       static INFO: ModelInfo;\n\
             \x20       #[link_name = \"{name}_forward\"]\n\
             \x20       fn forward(ctx: *const Context, ids: *const i32, n_tokens: u32, pos: u32, logits: *mut f32) -> i32;\n"
        );
        if weights.is_none() {
            s.push_str(&format!("        #[link_name = \"{name}_weights\"]\n        static WEIGHTS: [u8; 0];\n"));
        }
        s.push_str(
            "    }\n\n\
             \x20   /// The linked model: its info and entry point.\n\
             \x20   pub fn model() -> ::edgec_runtime::Model {\n\
             \x20       // SAFETY: the static library defines both symbols with these ABI types.\n\
             \x20       ::edgec_runtime::Model { info: unsafe { &*(&raw const INFO) }, forward }\n\
             \x20   }\n\n",
        );
        match weights {
            None => s.push_str(
                "    /// The embedded weights image (`info.weights_size` bytes).\n\
                 \x20   pub fn weights() -> &'static [u8] {\n\
                 \x20       // SAFETY: the object defines `weights_size` bytes at this symbol, read-only.\n\
                 \x20       unsafe { ::std::slice::from_raw_parts((&raw const WEIGHTS).cast::<u8>(), model().info.weights_size as usize) }\n\
                 \x20   }\n\n\
                 \x20   /// A session over the embedded weights.\n\
                 \x20   pub fn session(options: ::edgec_runtime::SessionOptions) -> Result<::edgec_runtime::Session, ::edgec_runtime::Error> {\n\
                 \x20       ::edgec_runtime::Session::from_static(model(), weights(), options)\n\
                 \x20   }\n",
            ),
            Some(w) => s.push_str(&format!(
                "    /// Where the build wrote the weights file (ship it with the app and open it from\n\
                 \x20   /// there in production).\n\
                 \x20   pub const WEIGHTS_FILE: &str = {:?};\n\n\
                 \x20   /// A session over [`WEIGHTS_FILE`].\n\
                 \x20   pub fn session(options: ::edgec_runtime::SessionOptions) -> Result<::edgec_runtime::Session, ::edgec_runtime::Error> {{\n\
                 \x20       ::edgec_runtime::Session::new(model(), ::std::path::Path::new(WEIGHTS_FILE), options)\n\
                 \x20   }}\n",
                w.display().to_string()
            )),
        }
        s.push_str("}\n");
        s
    }
}
