//! `edgec compile --emit report`: `report.md` and `report.json` (kernels, memory plan, KV state,
//! weights by storage format, estimated peak DRAM of the running app) and `memory.svg` (the
//! arena as a timeline of buffers).

use edgec_ir::Graph;
use edgec_passes::plan::{MemoryPlan, lifetimes};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const MARKDOWN: &str = "report.md";
pub const JSON: &str = "report.json";
pub const SVG: &str = "memory.svg";

/// What the runtime itself adds to an app's resident memory beyond the weights, arena, KV
/// state and logits: the runtime's code and data, libc, and the touched pages of the worker
/// threads' stacks. A round estimate, not a measurement (`edgec run --memory` measures).
pub const RUNTIME_OVERHEAD_ESTIMATE: u64 = 2 << 20;

/// Weights of one storage format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightGroup {
    /// Storage format in the weights file (`f32`, `f16`, `q8_c`, ...).
    pub format: String,
    pub tensors: usize,
    pub elements: u64,
    /// Bytes in the weights file, alignment padding included.
    pub bytes: u64,
}

/// The estimated resident memory of an app running the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeakDram {
    /// The weights file (or embedded image), mapped and touched whole by a forward pass.
    pub weights: u64,
    pub arena: u64,
    pub kv_state: u64,
    /// The caller's logits buffer for a full chunk (`max_tokens * vocab` f32).
    pub logits: u64,
    /// The object's size (code and data; an upper bound on what it maps).
    pub code: u64,
    /// [`RUNTIME_OVERHEAD_ESTIMATE`].
    pub runtime: u64,
}

impl PeakDram {
    pub fn total(&self) -> u64 {
        self.weights + self.arena + self.kv_state + self.logits + self.code + self.runtime
    }
}

/// One distinct kernel: its op and attributes, how many nodes run it, and the primitive ops
/// it does in one pass over memory (empty for a kernel that is one op).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelUse {
    pub kernel: String,
    pub op: String,
    pub nodes: usize,
    pub fuses: Vec<String>,
}

/// The primitive ops a fused kernel stands for, in order.
fn fused_ops(op: &edgec_ir::Op) -> Vec<String> {
    match *op {
        edgec_ir::Op::Linear { scale, act, gated, bias, residual } => {
            let mut v = vec!["matmul".to_string()];
            if scale.is_some() {
                v.push("mul (scale)".into());
            }
            if bias {
                v.push("add (bias)".into());
            }
            if let Some(a) = act {
                v.push(a.name().into());
            }
            if gated {
                v.push("matmul (up)".into());
                v.push("mul (GLU)".into());
            }
            if residual {
                v.push("add (residual)".into());
            }
            v
        }
        _ => Vec::new(),
    }
}

/// Everything the report says.
#[derive(Clone, Debug)]
pub struct Report {
    pub name: String,
    pub target: String,
    pub max_tokens: u64,
    pub max_context: u64,
    /// Distinct kernels (op and attributes), most used first.
    pub kernels: Vec<KernelUse>,
    pub nodes: usize,
    /// Kernel launches per forward call: dispatch groups (`passes/src/dispatch.rs`).
    pub launches: usize,
    /// Of those, the groups of several nodes launched as one.
    pub grouped_launches: usize,
    pub arena_size: u64,
    pub lower_bound: u64,
    pub strategy: String,
    /// Every strategy tried: name, arena bytes, proved optimal.
    pub candidates: Vec<(String, u64, bool)>,
    pub arena_buffers: usize,
    pub in_place: usize,
    pub state_size: u64,
    /// The KV states' dtypes (`f32`, `f16`, `q8`; `--kv-dtype`), comma-separated when mixed.
    pub kv_dtype: String,
    pub weights_size: u64,
    pub weights: Vec<WeightGroup>,
    pub peak: PeakDram,
}

/// The report of a compiled graph. `layout` is the weights file's layout; `object_size` the
/// object's bytes; `vocab` the logits width.
#[allow(clippy::too_many_arguments)]
pub fn build(
    g: &Graph,
    plan: &MemoryPlan,
    target: &str,
    max_tokens: u64,
    max_context: u64,
    vocab: u64,
    layout: &edgec_backend::WeightsLayout,
    object_size: u64,
) -> Report {
    let (weight_offsets, weights_size) = (&layout.offsets, layout.file_size);
    // Norms that write int8 rows for the int8-activation matmuls reading them.
    let to_int8 = edgec_backend::quantized_norms(g, &layout.packed);
    let mut uses: BTreeMap<String, KernelUse> = BTreeMap::new();
    for (n, &q) in g.nodes.iter().zip(&to_int8) {
        let mut kernel = edgec_ir::text::op_to_string(&n.op);
        let op = n.op.name().to_string();
        let mut fuses = fused_ops(&n.op);
        if q {
            kernel += " -> int8 rows";
            fuses = vec![op.clone(), "quantize (int8, blocks of 32)".into()];
        }
        // A matmul reads its weight packed exactly when it takes int8 activations.
        if matches!(n.op, edgec_ir::Op::MatMul { .. } | edgec_ir::Op::Linear { .. })
            && matches!(n.args.get(1), Some(edgec_ir::ValueRef::Weight(w)) if layout.packed.get(*w as usize) == Some(&true))
        {
            kernel += " with int8 activations";
        }
        uses.entry(kernel.clone()).or_insert(KernelUse { kernel, op, nodes: 0, fuses }).nodes += 1;
    }
    let mut kernels: Vec<KernelUse> = uses.into_values().collect();
    kernels.sort_by(|a, b| b.nodes.cmp(&a.nodes).then(a.kernel.cmp(&b.kernel)));

    let mut groups: BTreeMap<String, WeightGroup> = BTreeMap::new();
    for (i, w) in g.weights.iter().enumerate() {
        let format = w.storage().name();
        let end = weight_offsets.get(i + 1).copied().unwrap_or(weights_size);
        let bytes = end.saturating_sub(weight_offsets.get(i).copied().unwrap_or(end));
        let e = groups.entry(format.clone()).or_insert(WeightGroup { format, tensors: 0, elements: 0, bytes: 0 });
        e.tensors += 1;
        e.elements += edgec_ir::weights::weight_elements(w).unwrap_or(0);
        e.bytes += bytes;
    }
    let arena_buffers = plan.offsets.iter().filter(|o| o.is_some()).count();
    let mut kv_dtypes: Vec<&str> = g.states.iter().map(|s| s.ty.dtype.name()).collect();
    kv_dtypes.sort_unstable();
    kv_dtypes.dedup();
    Report {
        name: g.name.clone(),
        target: target.to_string(),
        max_tokens,
        max_context,
        kernels,
        nodes: g.nodes.len(),
        launches: plan.groups.len(),
        grouped_launches: plan.groups.iter().filter(|grp| grp.nodes.len() > 1).count(),
        arena_size: plan.arena_size,
        lower_bound: plan.lower_bound,
        strategy: plan.strategy.name().to_string(),
        candidates: plan.candidates.iter().map(|c| (c.strategy.name().to_string(), c.arena_size, c.optimal)).collect(),
        arena_buffers,
        in_place: plan.in_place.iter().filter(|x| x.is_some()).count(),
        state_size: plan.state_size,
        kv_dtype: kv_dtypes.join(", "),
        weights_size,
        weights: groups.into_values().collect(),
        peak: PeakDram {
            weights: weights_size,
            arena: plan.arena_size,
            kv_state: plan.state_size,
            logits: max_tokens * vocab * 4,
            code: object_size,
            runtime: RUNTIME_OVERHEAD_ESTIMATE,
        },
    }
}

/// Bytes with a binary unit: `1.50 MiB`, `512 B`.
pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", units[u]) }
}

impl Report {
    pub fn ratio(&self) -> f64 {
        if self.lower_bound == 0 { 1.0 } else { self.arena_size as f64 / self.lower_bound as f64 }
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# {} for {}\n", self.name, self.target);
        let _ = writeln!(
            s,
            "Max tokens per call {}, max context {}. Sizes are bytes at those limits.\n",
            self.max_tokens, self.max_context
        );
        let _ = writeln!(
            s,
            "## Kernels\n\n{} nodes run {} distinct kernels in **{} launches** per forward call ({} of them \
             dispatch groups of several nodes launched as one). A fused kernel does its ops in one pass \
             over memory.\n",
            self.nodes,
            self.kernels.len(),
            self.launches,
            self.grouped_launches
        );
        let _ = writeln!(s, "| kernel | nodes | fuses |\n|---|---:|---|");
        for k in &self.kernels {
            let _ = writeln!(s, "| `{}` | {} | {} |", k.kernel, k.nodes, k.fuses.join(" → "));
        }
        let _ = writeln!(s, "\n## Memory plan\n");
        let _ = writeln!(
            s,
            "Arena **{} bytes** ({}), lower bound {} bytes (ratio {:.2}); strategy `{}`. {} arena buffers, {} computed in place over a dying operand. The timeline is `memory.svg`.\n",
            self.arena_size,
            human(self.arena_size),
            self.lower_bound,
            self.ratio(),
            self.strategy,
            self.arena_buffers,
            self.in_place
        );
        let _ = writeln!(s, "| strategy | arena bytes | |\n|---|---:|---|");
        for (name, bytes, optimal) in &self.candidates {
            let mark = if *name == self.strategy { "chosen" } else { "" };
            let opt = if *optimal { " (optimal)" } else { "" };
            let _ = writeln!(s, "| `{name}` | {bytes} | {mark}{opt} |");
        }
        if !self.candidates.iter().any(|c| c.0 == "exact") {
            let _ = writeln!(s, "\nThe exact search did not run: the graph has too many buffers for it.");
        }
        let _ = writeln!(
            s,
            "\n## KV state\n\n{} bytes ({}), {} rows.\n",
            self.state_size,
            human(self.state_size),
            if self.kv_dtype.is_empty() { "no" } else { &self.kv_dtype }
        );
        let _ = writeln!(
            s,
            "## Weights\n\n{} bytes ({}) in the weights file.\n",
            self.weights_size,
            human(self.weights_size)
        );
        let _ = writeln!(s, "| storage | tensors | elements | bytes |\n|---|---:|---:|---:|");
        for w in &self.weights {
            let _ = writeln!(s, "| `{}` | {} | {} | {} |", w.format, w.tensors, w.elements, w.bytes);
        }
        let p = &self.peak;
        let _ = writeln!(s, "\n## Estimated peak DRAM of the running app\n");
        let _ = writeln!(
            s,
            "An estimate, not a measurement (`edgec run --memory` measures): the weights mapped and touched whole, plus the arena, the KV state, the caller's logits buffer, the object's code and a {} runtime overhead estimate (runtime, libc, thread stacks).\n",
            human(RUNTIME_OVERHEAD_ESTIMATE)
        );
        let _ = writeln!(s, "| part | bytes | |\n|---|---:|---:|");
        for (k, v) in [
            ("weights (mapped)", p.weights),
            ("arena", p.arena),
            ("KV state", p.kv_state),
            ("logits buffer", p.logits),
            ("code", p.code),
            ("runtime (estimate)", p.runtime),
            ("**total**", p.total()),
        ] {
            let _ = writeln!(s, "| {k} | {v} | {} |", human(v));
        }
        s
    }

    pub fn to_json(&self) -> String {
        let p = &self.peak;
        let v = json!({
            "name": self.name,
            "target": self.target,
            "max_tokens": self.max_tokens,
            "max_context": self.max_context,
            "nodes": self.nodes,
            "launches": self.launches,
            "grouped_launches": self.grouped_launches,
            "kernels": self.kernels.iter()
                .map(|k| json!({"kernel": k.kernel, "op": k.op, "nodes": k.nodes, "fuses": k.fuses}))
                .collect::<Vec<_>>(),
            "arena": {
                "size": self.arena_size,
                "lower_bound": self.lower_bound,
                "ratio": self.ratio(),
                "strategy": self.strategy,
                "candidates": self.candidates.iter()
                    .map(|(n, b, o)| json!({"strategy": n, "size": b, "optimal": o})).collect::<Vec<_>>(),
                "buffers": self.arena_buffers,
                "in_place": self.in_place,
            },
            "kv_state": self.state_size,
            "kv_dtype": self.kv_dtype,
            "weights": {
                "size": self.weights_size,
                "by_storage": self.weights.iter()
                    .map(|w| json!({"storage": w.format, "tensors": w.tensors, "elements": w.elements, "bytes": w.bytes}))
                    .collect::<Vec<_>>(),
            },
            "peak_dram_estimate": {
                "weights": p.weights,
                "arena": p.arena,
                "kv_state": p.kv_state,
                "logits": p.logits,
                "code": p.code,
                "runtime_overhead_estimate": p.runtime,
                "total": p.total(),
            },
        });
        #[allow(clippy::expect_used, reason = "a serde_json::Value always serializes")]
        let text = serde_json::to_string_pretty(&v).expect("a JSON value serializes");
        text + "\n"
    }
}

/// The colour of an op kind in the timeline.
fn colour(op: &str) -> &'static str {
    match op {
        "matmul" => "#4e79a7",
        "rms_norm" | "layer_norm" => "#59a14f",
        "attention" => "#b07aa1",
        "rope" => "#f28e2b",
        "gather" => "#9c755f",
        "softmax" | "reduce_sum" | "reduce_max" | "reduce_mean" => "#ff9da7",
        _ => "#76b7b2", // unary and binary elementwise ops
    }
}

fn legend_kind(op: &str) -> &'static str {
    match colour(op) {
        "#4e79a7" => "matmul",
        "#59a14f" => "norm",
        "#b07aa1" => "attention",
        "#f28e2b" => "rope",
        "#9c755f" => "gather",
        "#ff9da7" => "softmax / reduce",
        _ => "elementwise",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 times a power of ten (in `unit`s) giving about `target` ticks.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|&s| s >= raw).unwrap_or(10.0 * p)
}

/// The arena as a timeline: x is the schedule step, y the offset (0 at the bottom), one
/// rectangle per arena buffer (tooltip: node, op, type, steps, offset, size), coloured by op
/// kind, with the lower bound as a dashed line. Only buffers are `<rect>` elements.
pub fn memory_svg(g: &Graph, plan: &MemoryPlan) -> String {
    let bufs = lifetimes(g, &plan.groups).unwrap_or_default();
    let steps = g.nodes.len().max(1) as f64;
    let arena = plan.arena_size.max(1) as f64;
    let (w, h) = (1200.0, 640.0);
    let (left, right, top, bottom) = (90.0, 170.0, 50.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let sx = pw / steps;
    let y_of = |off: f64| top + ph - off / arena * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15" font-weight="bold">{} arena: {} ({} bytes), lower bound {} (ratio {:.2}), strategy {}</text>"#,
        xml_escape(&g.name),
        human(plan.arena_size),
        plan.arena_size,
        human(plan.lower_bound),
        plan.ratio(),
        plan.strategy.name()
    );
    // Axes and ticks: y in KiB or MiB, x in steps.
    let (unit, unit_name) = if plan.arena_size >= 4 << 20 { (1048576.0, "MiB") } else { (1024.0, "KiB") };
    let ystep = nice_step(arena / unit, 8.0);
    let mut v = 0.0;
    while v * unit <= arena * 1.0001 {
        let y = y_of(v * unit);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##, left + pw);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{} {unit_name}</text>"#,
            left - 6.0,
            y + 4.0,
            fmt_num(v)
        );
        v += ystep;
    }
    let xstep = nice_step(steps, 12.0).max(1.0);
    let mut t = 0.0;
    while t < steps {
        let x = left + t * sx;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/>"##,
            top + ph,
            top + ph + 5.0
        );
        let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, top + ph + 18.0, t as u64);
        t += xstep;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">schedule step (node)</text>"#,
        left + pw / 2.0,
        h - 8.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">arena offset</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    // One rectangle per buffer.
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    for b in &bufs {
        let node = &g.nodes[b.node];
        let op = node.op.name();
        let off = plan.offsets[b.node].unwrap_or(0) as f64;
        let x = left + b.first as f64 * sx;
        let rw = (b.last - b.first + 1) as f64 * sx;
        let (y0, y1) = (y_of(off + b.size as f64), y_of(off));
        let in_place = match plan.in_place.get(b.node).copied().flatten() {
            Some(j) => format!(", in place of %{j}"),
            None => String::new(),
        };
        let tip = format!(
            "%{} {op} {}: steps {}..={}, offset {}, size {} ({}){in_place}",
            b.node,
            edgec_ir::text::type_to_string(g, &node.ty),
            b.first,
            b.last,
            off as u64,
            b.size,
            human(b.size)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x:.2}" y="{y0:.2}" width="{rw:.2}" height="{:.2}" fill="{}" fill-opacity="0.85" stroke="#333" stroke-width="0.5"><title>{}</title></rect>"##,
            (y1 - y0).max(0.5),
            colour(op),
            xml_escape(&tip)
        );
        let label = format!("%{} {op}", b.node);
        if rw >= label.len() as f64 * 6.5 && y1 - y0 >= 13.0 {
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}" font-size="10" pointer-events="none">{}</text>"#,
                x + 2.0,
                y0 + 11.0,
                xml_escape(&label)
            );
        }
        if !kinds.iter().any(|k| k.0 == legend_kind(op)) {
            kinds.push((legend_kind(op), colour(op)));
        }
    }
    // The lower bound: no placement can go below this line.
    let ylb = y_of(plan.lower_bound as f64);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{ylb:.1}" x2="{:.1}" y2="{ylb:.1}" stroke="#d62728" stroke-dasharray="6 4" stroke-width="1.5"/>"##,
        left + pw
    );
    let _ = writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#d62728">lower bound</text>"##, left + pw + 6.0, ylb + 4.0);
    let _ = writeln!(s, r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="#333"/>"##, top + ph);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        top + ph,
        left + pw,
        top + ph
    );
    // Legend (swatches are paths, so rects stay one per buffer).
    kinds.sort();
    for (i, (kind, col)) in kinds.iter().enumerate() {
        let y = top + 30.0 + i as f64 * 20.0;
        let x = left + pw + 10.0;
        let _ = writeln!(s, r#"<path d="M{x:.1} {:.1}h14v14h-14z" fill="{col}"/>"#, y - 11.0);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{y:.1}">{kind}</text>"#, x + 20.0);
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}").trim_end_matches('0').to_string()
    }
}
