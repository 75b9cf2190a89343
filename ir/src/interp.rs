//! The reference interpreter: slow and obviously correct, the oracle for every pass and kernel
//! test. It follows the op semantics documented in [`crate::op`] literally: computation in f32
//! (sums and dot products accumulate in f64), i32 for ids and positions. Bad inputs give an
//! [`IrError`], never a panic.

use crate::IrError;
use crate::graph::{Graph, ValueRef};
use crate::op::{Op, ReduceOp};
use crate::types::{DType, Dim, Shape};

/// A concrete tensor: a shape and row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { shape, data: Data::F32(data) }
    }
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Tensor {
        Tensor { shape, data: Data::I32(data) }
    }
    /// A rank-0 i32 tensor.
    pub fn scalar_i32(v: i32) -> Tensor {
        Tensor::i32(vec![], vec![v])
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I32(_) => None,
        }
    }
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            Data::I32(v) => Some(v),
            Data::F32(_) => None,
        }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn dtype_name(&self) -> &'static str {
        match self.data {
            Data::F32(_) => "f32",
            Data::I32(_) => "i32",
        }
    }
}

/// Product of dims, checked.
fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// A computed value: an owned tensor, or the current contents of a state buffer
/// (the result of a `CacheWrite`, which aliases its state).
enum Slot {
    Owned(Tensor),
    State(u32),
}

pub struct Interpreter<'g> {
    g: &'g Graph,
    states: Vec<Tensor>,
    weights: Vec<Option<Tensor>>,
}

fn err(msg: impl Into<String>) -> IrError {
    IrError::new(msg)
}

impl<'g> Interpreter<'g> {
    /// Prepares to run `g`: states are zeroed at their full (upper-bound) size; weights are
    /// materialized on first use and cached.
    pub fn new(g: &'g Graph) -> Result<Self, IrError> {
        let mut states = Vec::with_capacity(g.states.len());
        for s in &g.states {
            let shape =
                s.ty.shape
                    .0
                    .iter()
                    .map(|&d| {
                        let n = match d {
                            Dim::Const(n) => n,
                            Dim::Sym(sym) => {
                                g.symbols.get(sym.0 as usize).map(|x| x.max).ok_or_else(|| err("undefined symbol"))?
                            }
                        };
                        usize::try_from(n).map_err(|_| err("dim too large"))
                    })
                    .collect::<Result<Vec<usize>, IrError>>()
                    .map_err(|e| err(format!("state '{}': {}", s.name, e.message)))?;
            let n = numel(&shape).ok_or_else(|| err(format!("state '{}': size overflows", s.name)))?;
            let t = match s.ty.dtype {
                // A q8 state holds the f32 values its blocks decode to.
                d if d.is_float() || d == DType::Q8 => Tensor::f32(shape, zeroed(n, &s.name)?),
                DType::I32 => Tensor::i32(shape, zeroed(n, &s.name)?),
                d => return Err(err(format!("state '{}': dtype {d} is not supported by the interpreter", s.name))),
            };
            states.push(t);
        }
        Ok(Interpreter { g, states, weights: vec![None; g.weights.len()] })
    }

    /// Zeroes every state buffer (a new session).
    pub fn reset_state(&mut self) {
        for s in &mut self.states {
            match &mut s.data {
                Data::F32(v) => v.iter_mut().for_each(|x| *x = 0.0),
                Data::I32(v) => v.iter_mut().for_each(|x| *x = 0),
            }
        }
    }

    /// The current contents of state `i`.
    pub fn state(&self, i: usize) -> Option<&Tensor> {
        self.states.get(i)
    }

    /// Runs the graph once: one tensor per graph input, in order; returns the graph's outputs in
    /// order. State persists across runs.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
        self.run_observed(inputs, &mut |_, _| {})
    }

    /// [`Interpreter::run`], calling `observe(i, value)` with each node's result as it is
    /// computed (calibration statistics, e.g. `--calibrate`).
    pub fn run_observed(
        &mut self,
        inputs: &[Tensor],
        observe: &mut dyn FnMut(usize, &Tensor),
    ) -> Result<Vec<Tensor>, IrError> {
        let g = self.g;
        if inputs.len() != g.inputs.len() {
            return Err(err(format!("graph takes {} inputs, got {}", g.inputs.len(), inputs.len())));
        }
        // Bind symbols from the input shapes.
        let mut bound: Vec<Option<usize>> = vec![None; g.symbols.len()];
        for (inp, t) in g.inputs.iter().zip(inputs) {
            let want_dtype = match inp.ty.dtype {
                d if d.is_float() => "f32",
                DType::I32 => "i32",
                d => return Err(err(format!("input '{}': dtype {d} is not supported by the interpreter", inp.name))),
            };
            if t.dtype_name() != want_dtype {
                return Err(err(format!("input '{}' must be {want_dtype}, got {}", inp.name, t.dtype_name())));
            }
            if t.shape.len() != inp.ty.shape.rank() {
                return Err(err(format!(
                    "input '{}' must have rank {}, got shape {:?}",
                    inp.name,
                    inp.ty.shape.rank(),
                    t.shape
                )));
            }
            if numel(&t.shape) != Some(t.len()) {
                return Err(err(format!("input '{}': shape {:?} but {} values", inp.name, t.shape, t.len())));
            }
            for (axis, (&d, &n)) in inp.ty.shape.0.iter().zip(&t.shape).enumerate() {
                match d {
                    Dim::Const(c) => {
                        if c != n as u64 {
                            return Err(err(format!("input '{}' axis {axis}: expected {c}, got {n}", inp.name)));
                        }
                    }
                    Dim::Sym(s) => {
                        let sym = g
                            .symbols
                            .get(s.0 as usize)
                            .ok_or_else(|| err(format!("input '{}' uses undefined symbol #{}", inp.name, s.0)))?;
                        if n as u64 > sym.max {
                            return Err(err(format!(
                                "input '{}' axis {axis}: {} = {n} exceeds its maximum {}",
                                inp.name, sym.name, sym.max
                            )));
                        }
                        match bound[s.0 as usize] {
                            None => bound[s.0 as usize] = Some(n),
                            Some(b) if b == n => {}
                            Some(b) => {
                                return Err(err(format!(
                                    "input '{}' axis {axis}: {} = {n} disagrees with {} = {b} bound earlier",
                                    inp.name, sym.name, sym.name
                                )));
                            }
                        }
                    }
                }
            }
        }

        let mut values: Vec<Slot> = Vec::with_capacity(g.nodes.len());
        for (i, node) in g.nodes.iter().enumerate() {
            let expected = concrete(g, &node.ty.shape, &bound).map_err(|e| err(format!("%{i}: {}", e.message)))?;
            let result = self.eval_node(i, &node.op, &node.args, &values, inputs, &expected)?;
            let shape = match &result {
                Slot::Owned(t) => &t.shape,
                Slot::State(s) => &self.states[*s as usize].shape,
            };
            if *shape != expected {
                return Err(err(format!(
                    "%{i} = {}: computed shape {shape:?} differs from its type's {expected:?}",
                    node.op.name()
                )));
            }
            match &result {
                Slot::Owned(t) => observe(i, t),
                Slot::State(s) => observe(i, &self.states[*s as usize]),
            }
            values.push(result);
        }
        let mut outs = Vec::with_capacity(g.outputs.len());
        for o in &g.outputs {
            let t =
                self.get(o.value, &values, inputs).map_err(|e| err(format!("output '{}': {}", o.name, e.message)))?;
            outs.push(t.clone());
        }
        Ok(outs)
    }

    fn load_weight(&mut self, i: usize) -> Result<(), IrError> {
        let w = self.g.weights.get(i).ok_or_else(|| err(format!("reference to undefined weight #{i}")))?;
        if self.weights[i].is_some() {
            return Ok(());
        }
        let values = crate::weights::materialize_f32(w)?;
        let shape =
            w.ty.shape
                .0
                .iter()
                .map(|d| d.as_const().and_then(|n| usize::try_from(n).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| err(format!("weight '{}': shape must be constant", w.name)))?;
        let t = match w.ty.dtype {
            d if d.is_float() => Tensor::f32(shape, values),
            DType::I32 => Tensor::i32(shape, values.into_iter().map(|v| v as i32).collect()),
            d => return Err(err(format!("weight '{}': dtype {d} is not supported by the interpreter", w.name))),
        };
        self.weights[i] = Some(t);
        Ok(())
    }

    fn get<'a>(&'a self, v: ValueRef, values: &'a [Slot], inputs: &'a [Tensor]) -> Result<&'a Tensor, IrError> {
        match v {
            ValueRef::Input(i) => inputs.get(i as usize),
            ValueRef::Weight(i) => self.weights.get(i as usize).and_then(|w| w.as_ref()),
            ValueRef::State(i) => self.states.get(i as usize),
            ValueRef::Node(i) => match values.get(i as usize) {
                Some(Slot::Owned(t)) => Some(t),
                Some(Slot::State(s)) => self.states.get(*s as usize),
                None => None,
            },
        }
        .ok_or_else(|| err(format!("reference to undefined or not yet computed value {v:?}")))
    }

    fn eval_node(
        &mut self,
        index: usize,
        op: &Op,
        args: &[ValueRef],
        values: &[Slot],
        inputs: &[Tensor],
        expected: &[usize],
    ) -> Result<Slot, IrError> {
        let g = self.g;
        let here = |msg: String| err(format!("%{index} = {}: {msg}", op.name()));
        if args.len() != op.arity() {
            return Err(here(format!("takes {} operands, got {}", op.arity(), args.len())));
        }
        for &a in args {
            if let ValueRef::Weight(w) = a {
                self.load_weight(w as usize)?;
            }
        }
        if let Op::CacheWrite = op {
            let ValueRef::State(s) = args[0] else {
                return Err(here("operand 0 must be a state".into()));
            };
            let (rows, pos) = {
                let rows = self.get(args[1], values, inputs)?.clone();
                let pos = scalar_pos(self.get(args[2], values, inputs)?).map_err(here)?;
                (rows, pos)
            };
            let state = self.states.get_mut(s as usize).ok_or_else(|| here(format!("undefined state #{s}")))?;
            let name = &g.states[s as usize].name;
            let (c, w) = dims2(&state.shape).map_err(here)?;
            let (r, rw) = dims2(&rows.shape).map_err(here)?;
            if rw != w {
                return Err(here(format!("rows are {rw} wide, state '{name}' is {w}")));
            }
            let end = pos.checked_add(r).filter(|&e| e <= c).ok_or_else(|| {
                here(format!("writing {r} rows at position {pos} overflows state '{name}' of {c} rows"))
            })?;
            let half = g.states[s as usize].ty.dtype == DType::F16;
            let q8 = g.states[s as usize].ty.dtype == DType::Q8;
            match (&mut state.data, &rows.data) {
                (Data::F32(dst), Data::F32(src)) if q8 => {
                    for (d, row) in dst[pos * w..end * w].chunks_exact_mut(w).zip(src.chunks_exact(w)) {
                        d.copy_from_slice(&q8_row(row).map_err(|m| here(format!("state '{name}': {m}")))?);
                    }
                }
                // An f16 state holds f32 values that are exactly f16s, what the kernel reads back:
                // rounded to nearest even, saturated at the largest half (the kernel has no
                // infinities).
                (Data::F32(dst), Data::F32(src)) if half => {
                    for (d, &v) in dst[pos * w..end * w].iter_mut().zip(src) {
                        *d = half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32();
                    }
                }
                (Data::F32(dst), Data::F32(src)) => dst[pos * w..end * w].copy_from_slice(src),
                (Data::I32(dst), Data::I32(src)) => dst[pos * w..end * w].copy_from_slice(src),
                _ => return Err(here(format!("rows and state '{name}' differ in dtype"))),
            }
            return Ok(Slot::State(s));
        }

        let a: Vec<&Tensor> = args.iter().map(|&v| self.get(v, values, inputs)).collect::<Result<_, _>>()?;
        let f = |i: usize| -> Result<&[f32], IrError> {
            a[i].as_f32().ok_or_else(|| here(format!("operand {i} ({}) must be float", g.value_name(args[i]))))
        };
        let out = match *op {
            Op::Gather => {
                let (v, h) = dims2(&a[0].shape).map_err(here)?;
                let table = f(0)?;
                let ids = a[1].as_i32().ok_or_else(|| here("ids must be i32".into()))?;
                let mut out = Vec::with_capacity(ids.len().saturating_mul(h));
                for (j, &id) in ids.iter().enumerate() {
                    if id < 0 || id as usize >= v {
                        return Err(here(format!(
                            "{}[{j}] = {id} is outside the table's 0..{v}",
                            g.value_name(args[1])
                        )));
                    }
                    let id = id as usize;
                    out.extend_from_slice(&table[id * h..(id + 1) * h]);
                }
                Tensor::f32(vec![ids.len(), h], out)
            }
            Op::MatMul { transpose_b } => {
                let (m, k) = dims2(&a[0].shape).map_err(here)?;
                let (b0, b1) = dims2(&a[1].shape).map_err(here)?;
                let (kb, n) = if transpose_b { (b1, b0) } else { (b0, b1) };
                if kb != k {
                    return Err(here(format!("inner dims differ: {k} and {kb}")));
                }
                Tensor::f32(vec![m, n], matmul(f(0)?, f(1)?, m, k, n, transpose_b))
            }
            Op::Linear { act, .. } => {
                let at = op.linear_operands();
                let (m, k) = dims2(&a[0].shape).map_err(here)?;
                let (n, kw) = dims2(&a[1].shape).map_err(here)?;
                if kw != k {
                    return Err(here(format!("inner dims differ: {k} and {kw}")));
                }
                let x = f(0)?;
                let mut out = matmul(x, f(1)?, m, k, n, true);
                if let Op::Linear { scale: Some(s), .. } = *op {
                    out.iter_mut().for_each(|o| *o *= s);
                }
                if let Some(bi) = at.bias {
                    let bias = f(bi)?;
                    for row in out.chunks_exact_mut(n) {
                        row.iter_mut().zip(bias).for_each(|(o, &b)| *o += b);
                    }
                }
                if let Some(act) = act {
                    out.iter_mut().for_each(|o| *o = act.eval(*o));
                }
                if let Some(u) = at.up {
                    let up = matmul(x, f(u)?, m, k, n, true);
                    out.iter_mut().zip(&up).for_each(|(o, &u)| *o *= u);
                }
                if let Some(r) = at.residual {
                    out.iter_mut().zip(f(r)?).for_each(|(o, &r)| *o += r);
                }
                Tensor::f32(vec![m, n], out)
            }
            Op::RmsNorm { eps, group } => {
                let (s, h) = dims2(&a[0].shape).map_err(here)?;
                let (x, w) = (f(0)?, f(1)?);
                let gs = group.map_or(h, |g| g as usize);
                if gs == 0 || h % gs != 0 || w.len() != gs {
                    return Err(here(format!("weight has {} values for {h} features in groups of {gs}", w.len())));
                }
                let mut out = vec![0f32; s * h];
                for (r, row) in x.chunks_exact(gs).enumerate() {
                    let ms = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / gs as f64;
                    let inv = 1.0 / (ms + f64::from(eps)).sqrt();
                    for c in 0..gs {
                        out[r * gs + c] = (f64::from(row[c]) * inv) as f32 * w[c];
                    }
                }
                Tensor::f32(vec![s, h], out)
            }
            Op::LayerNorm { eps } => {
                let (s, h) = dims2(&a[0].shape).map_err(here)?;
                let (x, w, bias) = (f(0)?, f(1)?, f(2)?);
                if w.len() != h || bias.len() != h {
                    return Err(here(format!("weight/bias have {}/{} values for {h} features", w.len(), bias.len())));
                }
                let mut out = vec![0f32; s * h];
                for r in 0..s {
                    let row = &x[r * h..(r + 1) * h];
                    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / h as f64;
                    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / h as f64;
                    let inv = 1.0 / (var + f64::from(eps)).sqrt();
                    for c in 0..h {
                        out[r * h + c] = ((f64::from(row[c]) - mean) * inv) as f32 * w[c] + bias[c];
                    }
                }
                Tensor::f32(vec![s, h], out)
            }
            Op::Rope { head_dim, rotary_dim, interleaved } => {
                let (s, width) = dims2(&a[0].shape).map_err(here)?;
                let (p, half) = dims2(&a[1].shape).map_err(here)?;
                let (hd, rd) = (head_dim as usize, rotary_dim as usize);
                if hd == 0 || width % hd != 0 || rd == 0 || rd % 2 != 0 || rd > hd || half != rd / 2 {
                    return Err(here(format!("bad rope dims: width {width}, head_dim {hd}, rotary_dim {rd}")));
                }
                if a[2].shape != a[1].shape {
                    return Err(here("cos and sin tables differ in shape".into()));
                }
                let pos = scalar_pos(a[3]).map_err(here)?;
                if s > 0 && pos.checked_add(s).is_none_or(|e| e > p) {
                    return Err(here(format!("positions {pos}..{} exceed the rope table's {p} rows", pos + s)));
                }
                let (x, cos, sin) = (f(0)?, f(1)?, f(2)?);
                let mut out = x.to_vec();
                for r in 0..s {
                    let t = pos + r;
                    for head in 0..width / hd {
                        let base = r * width + head * hd;
                        for i in 0..half {
                            let (c, sn) = (cos[t * half + i], sin[t * half + i]);
                            let (i1, i2) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                            let (x1, x2) = (x[base + i1], x[base + i2]);
                            out[base + i1] = x1 * c - x2 * sn;
                            out[base + i2] = x2 * c + x1 * sn;
                        }
                    }
                }
                Tensor::f32(vec![s, width], out)
            }
            Op::Attention { heads, kv_heads, head_dim, scale, window } => {
                let (s, qw) = dims2(&a[0].shape).map_err(here)?;
                let (c, kw) = dims2(&a[1].shape).map_err(here)?;
                let (heads, kv_heads, hd) = (heads as usize, kv_heads as usize, head_dim as usize);
                if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
                    return Err(here(format!("heads {heads} must be a nonzero multiple of kv_heads {kv_heads}")));
                }
                if qw != heads * hd || kw != kv_heads * hd || a[2].shape != a[1].shape {
                    return Err(here("operand widths do not match heads * head_dim".into()));
                }
                let pos = scalar_pos(a[3]).map_err(here)?;
                if s > 0 && pos.checked_add(s).is_none_or(|e| e > c) {
                    return Err(here(format!("query positions {pos}..{} exceed the cache's {c} rows", pos + s)));
                }
                let (q, k, v) = (f(0)?, f(1)?, f(2)?);
                if window == Some(0) {
                    return Err(here("window must be nonzero".into()));
                }
                let group = heads / kv_heads;
                let mut out = vec![0f32; s * qw];
                let mut scores = Vec::new();
                for r in 0..s {
                    let p = pos + r;
                    let first = match window {
                        Some(w) => (p + 1).saturating_sub(w as usize),
                        None => 0,
                    };
                    for h in 0..heads {
                        let kvh = h / group;
                        let qv = &q[r * qw + h * hd..r * qw + (h + 1) * hd];
                        scores.clear();
                        for j in first..=p {
                            let kr = &k[j * kw + kvh * hd..j * kw + (kvh + 1) * hd];
                            let dot: f64 = qv.iter().zip(kr).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
                            scores.push(dot * f64::from(scale));
                        }
                        let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let mut total = 0f64;
                        for sc in scores.iter_mut() {
                            *sc = (*sc - m).exp();
                            total += *sc;
                        }
                        for d in 0..hd {
                            let mut acc = 0f64;
                            for (t, j) in (first..=p).enumerate() {
                                acc += scores[t] * f64::from(v[j * kw + kvh * hd + d]);
                            }
                            out[r * qw + h * hd + d] = (acc / total) as f32;
                        }
                    }
                }
                Tensor::f32(vec![s, qw], out)
            }
            Op::Unary(u) => Tensor::f32(a[0].shape.clone(), f(0)?.iter().map(|&x| u.eval(x)).collect()),
            Op::Binary(b) => {
                let shape = broadcast_shape(&a[0].shape, &a[1].shape)
                    .ok_or_else(|| here(format!("cannot broadcast {:?} with {:?}", a[0].shape, a[1].shape)))?;
                let n = numel(&shape).ok_or_else(|| here("size overflows".into()))?;
                let (sx, sy) = (strides_for(&a[0].shape, shape.len()), strides_for(&a[1].shape, shape.len()));
                let pairs: Vec<(usize, usize)> = broadcast_pairs(&shape, n, &sx, &sy).collect();
                let pairs = pairs.into_iter();
                match (a[0].as_i32(), a[1].as_i32()) {
                    (Some(x), Some(y)) => {
                        let v: Vec<i32> = pairs
                            .map(|(i, j)| b.eval_i32(x[i], y[j]).ok_or_else(|| here("pow needs float operands".into())))
                            .collect::<Result<_, _>>()?;
                        if b.is_comparison() {
                            Tensor::f32(shape, v.into_iter().map(|c| c as f32).collect())
                        } else {
                            Tensor::i32(shape, v)
                        }
                    }
                    _ => {
                        let (x, y) = (f(0)?, f(1)?);
                        Tensor::f32(shape, pairs.map(|(i, j)| b.eval(x[i], y[j])).collect())
                    }
                }
            }
            Op::Softmax => {
                let x = f(0)?;
                let last = *a[0].shape.last().ok_or_else(|| here("needs at least one axis".into()))?;
                let mut out = x.to_vec();
                if last > 0 {
                    for row in out.chunks_mut(last) {
                        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let e: Vec<f64> = row.iter().map(|&v| f64::from(v - m).exp()).collect();
                        let total: f64 = e.iter().sum();
                        for (o, ev) in row.iter_mut().zip(e) {
                            *o = (ev / total) as f32;
                        }
                    }
                }
                Tensor::f32(a[0].shape.clone(), out)
            }
            Op::Reduce(r) => {
                let x = f(0)?;
                let mut shape = a[0].shape.clone();
                let last = shape.last_mut().ok_or_else(|| here("needs at least one axis".into()))?;
                let n = std::mem::replace(last, 1);
                let rows = x.len().checked_div(n).unwrap_or_else(|| numel(&shape).unwrap_or(0));
                let mut out = Vec::with_capacity(rows);
                for i in 0..rows {
                    let row = if n == 0 { &[][..] } else { &x[i * n..(i + 1) * n] };
                    out.push(match r {
                        ReduceOp::Sum => row.iter().map(|&v| f64::from(v)).sum::<f64>() as f32,
                        ReduceOp::Mean => (row.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64) as f32,
                        ReduceOp::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    });
                }
                Tensor::f32(shape, out)
            }
            Op::Reshape { .. } => {
                if numel(expected) != Some(a[0].len()) {
                    return Err(here(format!("cannot reshape {:?} to {expected:?}", a[0].shape)));
                }
                Tensor { shape: expected.to_vec(), data: a[0].data.clone() }
            }
            Op::Expand { .. } => {
                if broadcast_shape(&a[0].shape, expected).as_deref() != Some(expected) {
                    return Err(here(format!("cannot expand {:?} to {expected:?}", a[0].shape)));
                }
                let s = strides_for(&a[0].shape, expected.len());
                remap(a[0], expected, |idx| dot(idx, &s))
            }
            Op::Transpose { ref perm } => {
                let r = a[0].shape.len();
                if perm.len() != r || perm.iter().any(|&p| p as usize >= r) {
                    return Err(here(format!("perm {perm:?} does not fit shape {:?}", a[0].shape)));
                }
                let st = row_major_strides(&a[0].shape);
                let shape: Vec<usize> = perm.iter().map(|&p| a[0].shape[p as usize]).collect();
                let s: Vec<usize> = perm.iter().map(|&p| st[p as usize]).collect();
                remap(a[0], &shape, |idx| dot(idx, &s))
            }
            Op::Concat { axis } => {
                let ax = axis as usize;
                let (sa, sb) = (&a[0].shape, &a[1].shape);
                let same = sa.len() == sb.len() && ax < sa.len() && (0..sa.len()).all(|i| i == ax || sa[i] == sb[i]);
                if !same || a[0].dtype_name() != a[1].dtype_name() {
                    return Err(here(format!("cannot concatenate {sa:?} and {sb:?} along axis {ax}")));
                }
                let mut shape = sa.clone();
                shape[ax] += sb[ax];
                let (ta, tb) = (row_major_strides(sa), row_major_strides(sb));
                let na = sa[ax];
                // Offsets into the two operands' data laid end to end.
                let both = Tensor { shape: vec![a[0].len() + a[1].len()], data: cat(&a[0].data, &a[1].data) };
                let base = a[0].len();
                remap(&both, &shape, |idx| {
                    if idx[ax] < na {
                        dot(idx, &ta)
                    } else {
                        base + idx
                            .iter()
                            .enumerate()
                            .map(|(i, &x)| if i == ax { (x - na) * tb[i] } else { x * tb[i] })
                            .sum::<usize>()
                    }
                })
            }
            Op::Slice { axis, start, .. } => {
                let ax = axis as usize;
                let start = start as usize;
                let ok = a[0].shape.len() == expected.len()
                    && ax < expected.len()
                    && start + expected[ax] <= a[0].shape[ax]
                    && (0..expected.len()).all(|i| i == ax || expected[i] == a[0].shape[i]);
                if !ok {
                    return Err(here(format!(
                        "cannot slice {:?} to {expected:?} from {start} on axis {ax}",
                        a[0].shape
                    )));
                }
                let st = row_major_strides(&a[0].shape);
                remap(a[0], expected, |idx| dot(idx, &st) + start * st[ax])
            }
            Op::BatchMatMul => {
                let (sa, sb) = (&a[0].shape, &a[1].shape);
                let (ra, rb) = (sa.len(), sb.len());
                if ra < 2 || rb < 2 || sa[ra - 1] != sb[rb - 2] {
                    return Err(here(format!("cannot multiply {sa:?} by {sb:?}")));
                }
                let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
                let lead = broadcast_shape(&sa[..ra - 2], &sb[..rb - 2])
                    .ok_or_else(|| here(format!("cannot broadcast the leading dims of {sa:?} and {sb:?}")))?;
                let (x, y) = (f(0)?, f(1)?);
                let (la, lb) = (strides_for(&sa[..ra - 2], lead.len()), strides_for(&sb[..rb - 2], lead.len()));
                let batches = numel(&lead).ok_or_else(|| here("size overflows".into()))?;
                let mut out = Vec::with_capacity(batches * m * n);
                let mut idx = vec![0usize; lead.len()];
                for _ in 0..batches {
                    let (oa, ob) = (dot(&idx, &la) * m * k, dot(&idx, &lb) * k * n);
                    for i in 0..m {
                        for j in 0..n {
                            let acc: f64 =
                                (0..k).map(|t| f64::from(x[oa + i * k + t]) * f64::from(y[ob + t * n + j])).sum();
                            out.push(acc as f32);
                        }
                    }
                    next_index(&mut idx, &lead);
                }
                let mut shape = lead;
                shape.extend([m, n]);
                Tensor::f32(shape, out)
            }
            Op::Select => {
                let shape = broadcast_shape(&a[0].shape, &a[1].shape)
                    .and_then(|s| broadcast_shape(&s, &a[2].shape))
                    .ok_or_else(|| {
                        here(format!("cannot broadcast {:?}, {:?} and {:?}", a[0].shape, a[1].shape, a[2].shape))
                    })?;
                let c = f(0)?;
                let s: Vec<Vec<usize>> = (0..3).map(|i| strides_for(&a[i].shape, shape.len())).collect();
                let n = numel(&shape).ok_or_else(|| here("size overflows".into()))?;
                // Which operand each element comes from, and where.
                let mut pick = Vec::with_capacity(n);
                let mut idx = vec![0usize; shape.len()];
                for _ in 0..n {
                    let k = if c[dot(&idx, &s[0])] != 0.0 { 1 } else { 2 };
                    pick.push((k, dot(&idx, &s[k])));
                    next_index(&mut idx, &shape);
                }
                match (&a[1].data, &a[2].data) {
                    (Data::F32(x), Data::F32(y)) => {
                        Tensor::f32(shape, pick.iter().map(|&(k, o)| if k == 1 { x[o] } else { y[o] }).collect())
                    }
                    (Data::I32(x), Data::I32(y)) => {
                        Tensor::i32(shape, pick.iter().map(|&(k, o)| if k == 1 { x[o] } else { y[o] }).collect())
                    }
                    _ => return Err(here("the two choices differ in dtype".into())),
                }
            }
            Op::Cast { to } => match (&a[0].data, to) {
                (Data::F32(x), DType::I32) => Tensor::i32(a[0].shape.clone(), x.iter().map(|&v| v as i32).collect()),
                (Data::I32(x), DType::F32) => Tensor::f32(a[0].shape.clone(), x.iter().map(|&v| v as f32).collect()),
                (Data::F32(_), DType::F32) | (Data::I32(_), DType::I32) => a[0].clone(),
                (_, d) => return Err(here(format!("cannot cast to {d}"))),
            },
            Op::CacheWrite => unreachable!("handled above"),
        };
        Ok(Slot::Owned(out))
    }
}

fn zeroed<T: Clone + Default>(n: usize, name: &str) -> Result<Vec<T>, IrError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| err(format!("state '{name}': cannot allocate {n} elements")))?;
    v.resize(n, T::default());
    Ok(v)
}

/// Plain row-major strides of `shape`.
fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// For each element of a broadcast result of `shape` (`n` elements), the offsets it reads in
/// two operands with strides `sx` and `sy` (0 on broadcast axes).
fn broadcast_pairs<'a>(
    shape: &'a [usize],
    n: usize,
    sx: &'a [usize],
    sy: &'a [usize],
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut idx = vec![0usize; shape.len()];
    (0..n).map(move |_| {
        let at = (dot(&idx, sx), dot(&idx, sy));
        next_index(&mut idx, shape);
        at
    })
}

fn dot(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// Advances a row-major multi-index over `shape` by one element.
fn next_index(idx: &mut [usize], shape: &[usize]) {
    for ax in (0..shape.len()).rev() {
        idx[ax] += 1;
        if idx[ax] < shape[ax] {
            return;
        }
        idx[ax] = 0;
    }
}

/// A tensor of `shape` whose element at each multi-index is `t`'s element at flat offset
/// `src(index)` (any dtype).
fn remap(t: &Tensor, shape: &[usize], src: impl Fn(&[usize]) -> usize) -> Tensor {
    let n = numel(shape).unwrap_or(0);
    let mut offsets = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        offsets.push(src(&idx));
        next_index(&mut idx, shape);
    }
    let data = match &t.data {
        Data::F32(v) => Data::F32(offsets.iter().map(|&o| v[o]).collect()),
        Data::I32(v) => Data::I32(offsets.iter().map(|&o| v[o]).collect()),
    };
    Tensor { shape: shape.to_vec(), data }
}

fn cat(a: &Data, b: &Data) -> Data {
    match (a, b) {
        (Data::F32(x), Data::F32(y)) => Data::F32([x.as_slice(), y].concat()),
        (Data::I32(x), Data::I32(y)) => Data::I32([x.as_slice(), y].concat()),
        _ => unreachable!("checked by the caller"),
    }
}

/// Row-major strides of `shape` right-aligned into `rank` axes, 0 on broadcast (size-1) axes.
fn strides_for(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut strides = vec![0usize; rank];
    let mut acc = 1usize;
    for (i, &d) in shape.iter().enumerate().rev() {
        let ax = rank - shape.len() + i;
        strides[ax] = if d == 1 { 0 } else { acc };
        acc = acc.saturating_mul(d);
    }
    strides
}

/// Numpy broadcasting of two concrete shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            match (da, db) {
                _ if da == db => Some(da),
                (1, d) | (d, 1) => Some(d),
                _ => None,
            }
        })
        .collect()
}

fn dims2(shape: &[usize]) -> Result<(usize, usize), String> {
    match shape {
        [a, b] => Ok((*a, *b)),
        _ => Err(format!("expected a rank-2 operand, got shape {shape:?}")),
    }
}

/// A row written to a q8 state, as the kernel stores it and attention reads it back: encoded
/// by `ir::quant`'s `q8_g32` encoder (ggml's Q8_0: per 32 values an f16 scale
/// `d = max|x| / 127` rounded to nearest even, codes `round(x / d)` with ties away from zero,
/// clamped to ±127) and decoded (`d × code`). The kernel saturates a scale past the largest
/// half to 65504 instead of rounding it to infinity; clamping the values at `65504 × 127`
/// first gives the encoder the same scale and the same codes.
fn q8_row(row: &[f32]) -> Result<Vec<f32>, String> {
    const MAX: f32 = 65504.0 * 127.0;
    let clamped: Vec<f32> = row.iter().map(|v| v.clamp(-MAX, MAX)).collect();
    let st = crate::quant::Storage::Q8G { group: crate::types::Q8_BLOCK as u32 };
    let bytes = crate::quant::encode(st, 1, row.len() as u64, &clamped)?;
    crate::quant::decode(st, 1, row.len() as u64, &bytes)
}

fn scalar_pos(t: &Tensor) -> Result<usize, String> {
    match t.as_i32() {
        Some([p]) if t.shape.is_empty() => usize::try_from(*p).map_err(|_| format!("position {p} is negative")),
        _ => Err(format!("position must be an i32 scalar, got shape {:?}", t.shape)),
    }
}

/// The concrete shape of a type under the symbol bindings.
fn concrete(g: &Graph, shape: &Shape, bound: &[Option<usize>]) -> Result<Vec<usize>, IrError> {
    shape
        .0
        .iter()
        .map(|&d| match d {
            Dim::Const(n) => usize::try_from(n).map_err(|_| err(format!("dim {n} too large"))),
            Dim::Sym(s) => bound.get(s.0 as usize).copied().flatten().ok_or_else(|| {
                let name = g.symbols.get(s.0 as usize).map_or("?", |s| s.name.as_str());
                err(format!("symbol {name} is not bound by any input"))
            }),
        })
        .collect()
}

/// `x[m, k]` times `w` (`[n, k]` when `transpose_b`, else `[k, n]`), accumulated in f64 and
/// rounded once per output.
fn matmul(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, transpose_b: bool) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let mut acc = 0f64;
            for (t, &xv) in row.iter().enumerate() {
                let wv = if transpose_b { w[j * k + t] } else { w[t * n + j] };
                acc += f64::from(xv) * f64::from(wv);
            }
            out[i * n + j] = acc as f32;
        }
    }
    out
}
