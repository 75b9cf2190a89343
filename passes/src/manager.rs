use crate::{
    Changed, DeadCodeElimination, FuseEpilogues, InferShapes, Pass, PassError, Recognize, ReorderForMemory,
    SimplifyLayout,
};
use edgec_ir::{Graph, verify::verify};
use std::time::{Duration, Instant};

/// Every pass, by name, with what it does (shown by `edgec compile --help` and errors).
pub const PASSES: &[(&str, &str)] = &[
    ("infer-shapes", "recompute every node's type from its operands"),
    ("dce", "remove nodes no output needs and weights no node uses"),
    (
        "recognize",
        "rewrite primitive subgraphs (an ONNX export's) into rms_norm, layer_norm, silu, gelu_tanh, rope, attention and transpose_b matmuls",
    ),
    (
        "simplify-layout",
        "remove reshapes and transposes that cancel; sink unit-dim reshapes below elementwise ops; split a matmul whose columns are sliced into matmuls by weight rows",
    ),
    (
        "fuse-epilogues",
        "fold the bias, activation, GLU product and residual add that follow a transpose_b matmul into one linear",
    ),
    ("reorder-for-memory", "run independent nodes in an order that lowers the arena's peak"),
];

fn pass_by_name(name: &str) -> Option<Box<dyn Pass>> {
    match name {
        "infer-shapes" => Some(Box::new(InferShapes)),
        "dce" => Some(Box::new(DeadCodeElimination)),
        "recognize" => Some(Box::new(Recognize)),
        "simplify-layout" => Some(Box::new(SimplifyLayout)),
        "fuse-epilogues" => Some(Box::new(FuseEpilogues)),
        "reorder-for-memory" => Some(Box::new(ReorderForMemory)),
        _ => None,
    }
}

/// Optimization presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptLevel {
    O0,
    O1,
    O2,
    O3,
}

impl OptLevel {
    /// The pipeline of a preset. `-O0` runs no transform; the graph is still verified.
    pub fn pipeline(self) -> &'static [&'static str] {
        match self {
            OptLevel::O0 => &[],
            OptLevel::O1 => &["infer-shapes", "dce", "recognize", "simplify-layout"],
            OptLevel::O2 | OptLevel::O3 => {
                &["infer-shapes", "dce", "recognize", "simplify-layout", "fuse-epilogues", "reorder-for-memory"]
            }
        }
    }
}

/// How long one pass took and whether it changed the graph.
#[derive(Clone, Debug)]
pub struct PassTiming {
    pub name: &'static str,
    pub duration: Duration,
    pub changed: Changed,
}

/// Runs a pipeline of passes over a graph.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    verify_each: bool,
    print_after: Vec<String>,
}

impl PassManager {
    pub fn preset(level: OptLevel) -> PassManager {
        PassManager::from_names(level.pipeline()).expect("presets name known passes")
    }

    /// A pipeline given by pass names, as `--passes a,b,c` does.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<PassManager, PassError> {
        let passes = names
            .iter()
            .map(|n| pass_by_name(n.as_ref()).ok_or_else(|| unknown_pass(n.as_ref())))
            .collect::<Result<_, _>>()?;
        Ok(PassManager::new(passes))
    }

    /// A pipeline of any passes, including ones defined outside this crate.
    pub fn new(passes: Vec<Box<dyn Pass>>) -> PassManager {
        // Debug builds and tests verify after every pass; release builds only at the ends.
        PassManager { passes, verify_each: cfg!(debug_assertions), print_after: Vec::new() }
    }

    pub fn verify_each(mut self, on: bool) -> PassManager {
        self.verify_each = on;
        self
    }

    /// Passes after which the observer given to [`PassManager::run`] sees the graph; `all`
    /// names every pass. An unknown name is an error, so a typo doesn't print nothing.
    pub fn print_after<S: AsRef<str>>(mut self, names: &[S]) -> Result<PassManager, PassError> {
        for n in names {
            let n = n.as_ref();
            if n != "all" && pass_by_name(n).is_none() {
                return Err(unknown_pass(n));
            }
            self.print_after.push(n.to_string());
        }
        Ok(self)
    }

    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs the pipeline. The input is verified first and the result last, whatever
    /// `verify_each` says.
    pub fn run(&self, g: &mut Graph, observe: &mut dyn FnMut(&str, &Graph)) -> Result<Vec<PassTiming>, PassError> {
        verify(g).map_err(PassError::InvalidInput)?;
        let mut timings = Vec::with_capacity(self.passes.len());
        for (i, pass) in self.passes.iter().enumerate() {
            let start = Instant::now();
            let changed = pass.run(g)?;
            timings.push(PassTiming { name: pass.name(), duration: start.elapsed(), changed });
            if self.verify_each || i + 1 == self.passes.len() {
                verify(g).map_err(|error| PassError::Invalid { pass: pass.name(), error })?;
            }
            if self.print_after.iter().any(|n| n == "all" || n == pass.name()) {
                observe(pass.name(), g);
            }
        }
        Ok(timings)
    }
}

fn unknown_pass(name: &str) -> PassError {
    let known = PASSES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    PassError::UnknownPass { name: name.to_string(), known }
}
