//! The import-time constant evaluator: ONNX ops over small dense i64 / f32 / bool tensors.
//!
//! The importer runs every node whose inputs are all known at compile time (initializers,
//! `Constant`s, and the *shapes* of run-time values) through [`eval`] instead of turning it into
//! IR. That is where the exporter's shape arithmetic (`Shape`, `Gather` on shapes, `Concat`,
//! `Range`, `Slice`, `Unsqueeze`, `Equal`, `Where`, `Cast`, `CumSum`, `IsNaN`,
//! `ConstantOfShape`, `Expand`, masks and rotary tables built from positions ...) disappears.
//! Semantics follow the ONNX operator specs for opsets 13–25; floats are computed in f32 as
//! ONNX Runtime does.

use super::proto::{AttributeProto, AttributeType, DataType, NodeProto, TensorProto};
use edgec_ir::UnaryOp;

/// Element data: floats (any float type, held as f32), integers (any int type, as i64), bools.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
    B(Vec<bool>),
}

/// A small dense tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub shape: Vec<usize>,
    pub data: Data,
}

pub type R<T> = Result<T, String>;

impl Dense {
    pub fn ints(shape: Vec<usize>, v: Vec<i64>) -> Dense {
        Dense { shape, data: Data::I(v) }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
            Data::B(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as i64 (ints, bools, or integral floats).
    pub fn as_i64(&self) -> R<Vec<i64>> {
        Ok(match &self.data {
            Data::I(v) => v.clone(),
            Data::B(v) => v.iter().map(|&b| i64::from(b)).collect(),
            Data::F(v) => v.iter().map(|&x| x as i64).collect(),
        })
    }
    pub fn as_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f32).collect(),
            Data::B(v) => v.iter().map(|&b| f32::from(u8::from(b))).collect(),
        }
    }
    pub fn scalar_i64(&self) -> R<i64> {
        match self.as_i64()?.as_slice() {
            [v] => Ok(*v),
            v => Err(format!("expected one value, got {}", v.len())),
        }
    }
    /// `float`, `int` or `bool` (the names [`kind_of`] uses).
    pub fn kind_name(&self) -> &'static str {
        self.kind()
    }
    fn kind(&self) -> &'static str {
        match self.data {
            Data::F(_) => "float",
            Data::I(_) => "int",
            Data::B(_) => "bool",
        }
    }
}

/// Decodes a tensor's little-endian bytes of `dtype`.
pub fn decode(dtype: DataType, dims: &[i64], bytes: &[u8]) -> R<Dense> {
    let shape: Vec<usize> =
        dims.iter().map(|&d| usize::try_from(d).map_err(|_| format!("bad dim {d}"))).collect::<R<_>>()?;
    let data = match dtype {
        DataType::Float => Data::F(bytes.as_chunks::<4>().0.iter().map(|c| f32::from_le_bytes(*c)).collect()),
        DataType::Double => Data::F(bytes.as_chunks::<8>().0.iter().map(|c| f64::from_le_bytes(*c) as f32).collect()),
        DataType::Float16 => {
            Data::F(bytes.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Bfloat16 => Data::F(
            bytes.chunks_exact(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)).collect(),
        ),
        DataType::Int64 => Data::I(bytes.as_chunks::<8>().0.iter().map(|c| i64::from_le_bytes(*c)).collect()),
        DataType::Uint64 => Data::I(bytes.as_chunks::<8>().0.iter().map(|c| u64::from_le_bytes(*c) as i64).collect()),
        DataType::Int32 => {
            Data::I(bytes.as_chunks::<4>().0.iter().map(|c| i64::from(i32::from_le_bytes(*c))).collect())
        }
        DataType::Uint32 => {
            Data::I(bytes.as_chunks::<4>().0.iter().map(|c| i64::from(u32::from_le_bytes(*c))).collect())
        }
        DataType::Int16 => {
            Data::I(bytes.chunks_exact(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Uint16 => {
            Data::I(bytes.chunks_exact(2).map(|c| i64::from(u16::from_le_bytes([c[0], c[1]]))).collect())
        }
        DataType::Int8 => Data::I(bytes.iter().map(|&b| i64::from(b as i8)).collect()),
        DataType::Uint8 => Data::I(bytes.iter().map(|&b| i64::from(b)).collect()),
        DataType::Bool => Data::B(bytes.iter().map(|&b| b != 0).collect()),
        d => return Err(format!("data type {d:?} is not supported")),
    };
    let t = Dense { shape, data };
    if Some(t.len()) != t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        return Err(format!("{} values for dims {dims:?}", t.len()));
    }
    Ok(t)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalize.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// What kind of data an ONNX element type becomes here.
pub fn kind_of(dtype: i64) -> R<&'static str> {
    let d = DataType::try_from(dtype as i32).map_err(|_| format!("unknown data type {dtype}"))?;
    Ok(match d {
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16 => "float",
        DataType::Bool => "bool",
        DataType::Int64
        | DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint64
        | DataType::Uint32
        | DataType::Uint16
        | DataType::Uint8 => "int",
        d => return Err(format!("data type {d:?} is not supported")),
    })
}

// ---------------------------------------------------------------------------------------------
// Attributes, checked by type.

pub fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn want(a: &AttributeProto, t: AttributeType) -> R<()> {
    if a.r#type == t as i32 {
        Ok(())
    } else {
        let got = AttributeType::try_from(a.r#type).map_or_else(|_| format!("type {}", a.r#type), |t| format!("{t:?}"));
        Err(format!("attribute '{}' must be {t:?}, got {got}", a.name))
    }
}

pub fn attr_i(n: &NodeProto, name: &str, default: i64) -> R<i64> {
    match attr(n, name) {
        None => Ok(default),
        Some(a) => want(a, AttributeType::Int).map(|_| a.i),
    }
}

pub fn attr_f(n: &NodeProto, name: &str, default: f32) -> R<f32> {
    match attr(n, name) {
        None => Ok(default),
        Some(a) => want(a, AttributeType::Float).map(|_| a.f),
    }
}

pub fn attr_ints(n: &NodeProto, name: &str) -> R<Option<Vec<i64>>> {
    match attr(n, name) {
        None => Ok(None),
        Some(a) => want(a, AttributeType::Ints).map(|_| Some(a.ints.clone())),
    }
}

pub fn attr_s(n: &NodeProto, name: &str, default: &str) -> R<String> {
    match attr(n, name) {
        None => Ok(default.to_string()),
        Some(a) => want(a, AttributeType::String).map(|_| String::from_utf8_lossy(&a.s).into_owned()),
    }
}

pub fn attr_t<'a>(n: &'a NodeProto, name: &str) -> R<Option<&'a TensorProto>> {
    match attr(n, name) {
        None => Ok(None),
        Some(a) => want(a, AttributeType::Tensor).map(|_| a.t.as_ref()),
    }
}

// ---------------------------------------------------------------------------------------------
// Index helpers.

/// The element count of a run-time value's shape, or an error when it overflows (shapes can
/// come from a hostile file; nothing is allocated for them).
pub(crate) fn checked_numel(shape: &[usize]) -> R<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("a shape of {shape:?} has more elements than memory can address"))
}

/// Element count, saturating at `usize::MAX` (shapes can come from a hostile file); 0 when
/// any dim is 0, however large the others.
pub fn numel(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX)
}

/// The element count of a value about to be folded from a shape the file controls, refused
/// above the folding limit ([`crate::limits::Limit::OnnxFoldElements`]) before anything is allocated.
pub(crate) fn sized(shape: &[usize]) -> R<usize> {
    let n = numel(shape);
    let limit = crate::limits::get(crate::limits::Limit::OnnxFoldElements);
    if n as u64 > limit {
        return Err(format!(
            "a folded value of shape {shape:?} exceeds the folding limit of {limit} elements (--limit onnx-fold-elements=N raises it)"
        ));
    }
    Ok(n)
}

/// Row-major strides. They never exceed the element count, which the folding limit bounds,
/// except for an empty value (a 0 dim beside huge ones), which is never indexed: saturate.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// Strides of `shape` right-aligned into `rank` axes, 0 on broadcast (size-1) axes.
fn bstrides(shape: &[usize], rank: usize) -> Vec<usize> {
    let st = strides(shape);
    let mut out = vec![0usize; rank];
    for (i, &d) in shape.iter().enumerate() {
        out[rank - shape.len() + i] = if d == 1 { 0 } else { st[i] };
    }
    out
}

fn next_index(idx: &mut [usize], shape: &[usize]) {
    for ax in (0..shape.len()).rev() {
        idx[ax] += 1;
        if idx[ax] < shape[ax] {
            return;
        }
        idx[ax] = 0;
    }
}

/// The tensor of `shape` whose element at each index is `t`'s element at `src(index)`.
fn remap(t: &Dense, shape: Vec<usize>, src: impl Fn(&[usize]) -> usize) -> Dense {
    let n = numel(&shape);
    let mut offs = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        offs.push(src(&idx));
        next_index(&mut idx, &shape);
    }
    let data = match &t.data {
        Data::F(v) => Data::F(offs.iter().map(|&o| v[o]).collect()),
        Data::I(v) => Data::I(offs.iter().map(|&o| v[o]).collect()),
        Data::B(v) => Data::B(offs.iter().map(|&o| v[o]).collect()),
    };
    Dense { shape, data }
}

fn dot(idx: &[usize], s: &[usize]) -> usize {
    idx.iter().zip(s).map(|(a, b)| a * b).sum()
}

pub fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    edgec_ir::interp::broadcast_shape(a, b).ok_or_else(|| format!("cannot broadcast {a:?} with {b:?}"))
}

/// `axis` in `-rank..rank` made non-negative.
pub fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) { Ok(a as usize) } else { Err(format!("axis {axis} is out of range for rank {rank}")) }
}

/// Flatten's axis, in `-rank..=rank` (unlike other axes, `rank` itself is valid).
pub fn flatten_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..=r).contains(&a) { Ok(a as usize) } else { Err(format!("axis {axis} is out of range for rank {rank}")) }
}

/// ONNX Slice on one axis of length `dim`: the first index and the element count.
pub fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> R<(i64, usize)> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    let d = dim as i64;
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (fix(start), fix(end));
    let (s, e) = if step > 0 { (s.clamp(0, d), e.clamp(0, d)) } else { (s.clamp(0, d - 1), e.clamp(-1, d - 1)) };
    let count = if step > 0 { (e - s + step - 1) / step } else { (s - e + (-step) - 1) / (-step) };
    Ok((s, count.max(0) as usize))
}

/// Concatenation along `axis` (all of one kind).
pub fn concat(parts: &[&Dense], axis: usize) -> R<Dense> {
    let first = parts.first().ok_or("concat of nothing")?;
    let mut shape = first.shape.clone();
    if axis >= shape.len() {
        return Err(format!("concat axis {axis} out of range for {:?}", first.shape));
    }
    shape[axis] = 0;
    for p in parts {
        let ok = p.shape.len() == shape.len()
            && (0..shape.len()).all(|i| i == axis || p.shape[i] == shape[i])
            && p.kind() == first.kind();
        if !ok {
            return Err(format!("cannot concatenate {:?} with {:?}", first.shape, p.shape));
        }
        shape[axis] = shape[axis].checked_add(p.shape[axis]).ok_or("concatenated dim overflows")?;
    }
    // An empty result is returned at once: its outer dims alone may be astronomically large.
    if sized(&shape)? == 0 {
        let data = match first.data {
            Data::F(_) => Data::F(Vec::new()),
            Data::I(_) => Data::I(Vec::new()),
            Data::B(_) => Data::B(Vec::new()),
        };
        return Ok(Dense { shape, data });
    }
    let outer = numel(&shape[..axis]);
    macro_rules! join {
        ($variant:ident) => {{
            let mut v = Vec::with_capacity(numel(&shape));
            for o in 0..outer {
                for p in parts {
                    let inner = numel(&p.shape[axis..]);
                    let Data::$variant(d) = &p.data else { unreachable!() };
                    v.extend_from_slice(&d[o * inner..(o + 1) * inner]);
                }
            }
            Data::$variant(v)
        }};
    }
    let data = match first.data {
        Data::F(_) => join!(F),
        Data::I(_) => join!(I),
        Data::B(_) => join!(B),
    };
    Ok(Dense { shape, data })
}

/// Reads `input i` of a node, failing if it is missing.
fn need<'a>(ins: &[Option<&'a Dense>], i: usize) -> R<&'a Dense> {
    ins.get(i).copied().flatten().ok_or_else(|| format!("missing input {i}"))
}

fn axes_input(ins: &[Option<&Dense>], i: usize) -> R<Option<Vec<i64>>> {
    ins.get(i).copied().flatten().map(|t| t.as_i64()).transpose()
}

/// The output shape of ONNX Reshape.
pub fn reshape_dims(input: &[usize], target: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let total = numel(input);
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or("reshape copies a dim that does not exist")?),
            t if t >= 0 => out.push(t as usize),
            t => return Err(format!("bad reshape target {t}")),
        }
    }
    if let Some(i) = infer {
        let known = numel(&out);
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = total / known;
    }
    if numel(&out) != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(out)
}

/// The dims `Unsqueeze` gives.
pub fn unsqueeze_dims(input: &[usize], axes: &[i64]) -> R<Vec<usize>> {
    let r = input.len() + axes.len();
    let mut ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?;
    ax.sort_unstable();
    let mut out = Vec::with_capacity(r);
    let mut it = input.iter();
    for i in 0..r {
        if ax.binary_search(&i).is_ok() {
            out.push(1);
        } else {
            out.push(*it.next().ok_or("unsqueeze axes repeat")?);
        }
    }
    Ok(out)
}

/// The dims `Squeeze` gives (`axes` None: every size-1 axis).
pub fn squeeze_dims(input: &[usize], axes: Option<&[i64]>) -> R<Vec<usize>> {
    let ax: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, input.len())).collect::<R<_>>()?,
        None => (0..input.len()).filter(|&i| input[i] == 1).collect(),
    };
    for &a in &ax {
        if input[a] != 1 {
            return Err(format!("cannot squeeze axis {a} of {input:?}"));
        }
    }
    Ok(input.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, &d)| d).collect())
}

/// Split sizes along an axis of length `dim`.
pub fn split_sizes(dim: usize, split: Option<Vec<i64>>, outputs: usize, num_outputs: Option<i64>) -> R<Vec<usize>> {
    if let Some(s) = split {
        let s: Vec<usize> =
            s.iter().map(|&v| usize::try_from(v).map_err(|_| format!("bad split {v}"))).collect::<R<_>>()?;
        if s.iter().sum::<usize>() != dim {
            return Err(format!("split {s:?} does not cover {dim}"));
        }
        return Ok(s);
    }
    let n = num_outputs.map_or(outputs, |n| n as usize).max(1);
    let chunk = dim.div_ceil(n);
    Ok((0..n).map(|i| chunk.min(dim.saturating_sub(i * chunk))).collect())
}

// ---------------------------------------------------------------------------------------------
// Elementwise.

fn unary(op: &str, x: &Dense) -> R<Dense> {
    let shape = x.shape.clone();
    let f = |g: &dyn Fn(f32) -> f32| -> R<Dense> {
        match &x.data {
            Data::F(v) => Ok(Dense { shape: shape.clone(), data: Data::F(v.iter().map(|&a| g(a)).collect()) }),
            _ => Err(format!("{op} needs a float input")),
        }
    };
    match op {
        "Neg" => match &x.data {
            Data::I(v) => Ok(Dense { shape, data: Data::I(v.iter().map(|a| -a).collect()) }),
            _ => f(&|a| -a),
        },
        "Abs" => match &x.data {
            Data::I(v) => Ok(Dense { shape, data: Data::I(v.iter().map(|a| a.abs()).collect()) }),
            _ => f(&|a| a.abs()),
        },
        "Sqrt" => f(&|a| a.sqrt()),
        "Reciprocal" => f(&|a| 1.0 / a),
        "Exp" => f(&|a| a.exp()),
        "Log" => f(&|a| a.ln()),
        "Cos" => f(&|a| a.cos()),
        "Sin" => f(&|a| a.sin()),
        "Tanh" => f(&|a| a.tanh()),
        "Sigmoid" => f(&|a| UnaryOp::Sigmoid.eval(a)),
        "Erf" => f(&|a| UnaryOp::Erf.eval(a)),
        "Floor" => f(&|a| a.floor()),
        "Ceil" => f(&|a| a.ceil()),
        "Relu" => match &x.data {
            Data::I(v) => Ok(Dense { shape, data: Data::I(v.iter().map(|&a| a.max(0)).collect()) }),
            _ => f(&|a| a.max(0.0)),
        },
        "Not" => match &x.data {
            Data::B(v) => Ok(Dense { shape, data: Data::B(v.iter().map(|a| !a).collect()) }),
            _ => Err("Not needs a bool input".into()),
        },
        "IsNaN" => Ok(Dense { shape, data: Data::B(x.as_f32().iter().map(|a| a.is_nan()).collect()) }),
        "IsInf" => Ok(Dense { shape, data: Data::B(x.as_f32().iter().map(|a| a.is_infinite()).collect()) }),
        _ => Err(format!("{op} is not a unary op")),
    }
}

fn binary(op: &str, a: &Dense, b: &Dense, fmod: bool) -> R<Dense> {
    let shape = broadcast(&a.shape, &b.shape)?;
    let (sa, sb) = (bstrides(&a.shape, shape.len()), bstrides(&b.shape, shape.len()));
    let n = sized(&shape)?;
    let pairs = |mut f: Box<dyn FnMut(usize, usize) + '_>| {
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            f(dot(&idx, &sa), dot(&idx, &sb));
            next_index(&mut idx, &shape);
        }
    };
    let cmp = matches!(op, "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual");
    let data = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => {
            if cmp {
                let mut out = Vec::with_capacity(n);
                pairs(Box::new(|i, j| {
                    let (p, q) = (x[i], y[j]);
                    out.push(match op {
                        "Equal" => p == q,
                        "Less" => p < q,
                        "LessOrEqual" => p <= q,
                        "Greater" => p > q,
                        _ => p >= q,
                    })
                }));
                Data::B(out)
            } else {
                let f: fn(f32, f32) -> f32 = match op {
                    "Add" => |p, q| p + q,
                    "Sub" => |p, q| p - q,
                    "Mul" => |p, q| p * q,
                    "Div" => |p, q| p / q,
                    "Pow" => f32::powf,
                    "Max" => f32::max,
                    "Min" => f32::min,
                    "Mod" => |p, q| p % q,
                    _ => return Err(format!("{op} does not take floats")),
                };
                let mut out = Vec::with_capacity(n);
                pairs(Box::new(|i, j| out.push(f(x[i], y[j]))));
                Data::F(out)
            }
        }
        (Data::I(x), Data::I(y)) => {
            if cmp {
                let mut out = Vec::with_capacity(n);
                pairs(Box::new(|i, j| {
                    let (p, q) = (x[i], y[j]);
                    out.push(match op {
                        "Equal" => p == q,
                        "Less" => p < q,
                        "LessOrEqual" => p <= q,
                        "Greater" => p > q,
                        _ => p >= q,
                    })
                }));
                Data::B(out)
            } else {
                let mut out = Vec::with_capacity(n);
                let mut bad = false;
                pairs(Box::new(|i, j| {
                    let (p, q) = (x[i], y[j]);
                    out.push(match op {
                        "Add" => p.wrapping_add(q),
                        "Sub" => p.wrapping_sub(q),
                        "Mul" => p.wrapping_mul(q),
                        "Div" if q != 0 => p / q,
                        "Mod" if q != 0 => {
                            if fmod {
                                p % q
                            } else {
                                ((p % q) + q) % q
                            }
                        }
                        "Pow" => (p as f64).powf(q as f64) as i64,
                        "Max" => p.max(q),
                        "Min" => p.min(q),
                        _ => {
                            bad = true;
                            0
                        }
                    })
                }));
                if bad {
                    return Err(format!("{op} on integers failed (division by zero or not an integer op)"));
                }
                Data::I(out)
            }
        }
        (Data::B(x), Data::B(y)) => {
            let f: fn(bool, bool) -> bool = match op {
                "And" => |p, q| p && q,
                "Or" => |p, q| p || q,
                "Xor" => |p, q| p != q,
                "Equal" => |p, q| p == q,
                _ => return Err(format!("{op} does not take bools")),
            };
            let mut out = Vec::with_capacity(n);
            pairs(Box::new(|i, j| out.push(f(x[i], y[j]))));
            Data::B(out)
        }
        _ => return Err(format!("{op}: operands of different kinds ({} and {})", a.kind(), b.kind())),
    };
    Ok(Dense { shape, data })
}

fn cast(x: &Dense, kind: &str) -> Dense {
    let data = match (kind, &x.data) {
        ("float", _) => Data::F(x.as_f32()),
        ("bool", Data::F(v)) => Data::B(v.iter().map(|&a| a != 0.0).collect()),
        ("bool", Data::I(v)) => Data::B(v.iter().map(|&a| a != 0).collect()),
        ("bool", Data::B(v)) => Data::B(v.clone()),
        // float -> int truncates toward zero, as C casts do.
        (_, Data::F(v)) => Data::I(v.iter().map(|&a| a as i64).collect()),
        (_, Data::I(v)) => Data::I(v.clone()),
        (_, Data::B(v)) => Data::I(v.iter().map(|&a| i64::from(a)).collect()),
    };
    Dense { shape: x.shape.clone(), data }
}

fn where_(c: &Dense, a: &Dense, b: &Dense) -> R<Dense> {
    let Data::B(cv) = &c.data else { return Err("Where needs a bool condition".into()) };
    let shape = broadcast(&broadcast(&c.shape, &a.shape)?, &b.shape)?;
    let r = shape.len();
    let (sc, sa, sb) = (bstrides(&c.shape, r), bstrides(&a.shape, r), bstrides(&b.shape, r));
    // Stack a and b so one remap picks from either.
    let both = concat(
        &[&Dense { shape: vec![a.len()], data: a.data.clone() }, &Dense { shape: vec![b.len()], data: b.data.clone() }],
        0,
    )?;
    let base = a.len();
    Ok(remap(&both, shape, |idx| if cv[dot(idx, &sc)] { dot(idx, &sa) } else { base + dot(idx, &sb) }))
}

// ---------------------------------------------------------------------------------------------
// The evaluator.

/// The ops [`eval`] knows.
pub const FOLDABLE: &[&str] = &[
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Cast",
    "CastLike",
    "Gather",
    "GatherND",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Flatten",
    "Concat",
    "Slice",
    "Range",
    "Expand",
    "Where",
    "CumSum",
    "Transpose",
    "Split",
    "Trilu",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Mod",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Cos",
    "Sin",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Floor",
    "Ceil",
    "Relu",
    "IsNaN",
    "IsInf",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceMean",
    "Dropout",
];

/// Evaluates one node on constant inputs (`None` for an omitted optional input); one tensor per
/// output. `constant` decodes a `Constant`'s tensor attribute.
pub fn eval(
    n: &NodeProto,
    opset: i64,
    ins: &[Option<&Dense>],
    constant: &dyn Fn(&TensorProto) -> R<Dense>,
) -> R<Vec<Dense>> {
    let x = || need(ins, 0);
    let one = |t: Dense| Ok(vec![t]);
    match n.op_type.as_str() {
        "Constant" => {
            if let Some(t) = attr_t(n, "value")? {
                return one(constant(t)?);
            }
            if let Some(a) = attr(n, "value_float") {
                want(a, AttributeType::Float)?;
                return one(Dense { shape: vec![], data: Data::F(vec![a.f]) });
            }
            if let Some(a) = attr(n, "value_floats") {
                want(a, AttributeType::Floats)?;
                return one(Dense { shape: vec![a.floats.len()], data: Data::F(a.floats.clone()) });
            }
            if let Some(a) = attr(n, "value_int") {
                want(a, AttributeType::Int)?;
                return one(Dense::ints(vec![], vec![a.i]));
            }
            if let Some(a) = attr(n, "value_ints") {
                want(a, AttributeType::Ints)?;
                return one(Dense::ints(vec![a.ints.len()], a.ints.clone()));
            }
            Err("Constant without a supported value attribute".into())
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = x()?.as_i64()?.iter().map(|&d| d as usize).collect();
            let n_el = sized(&shape)?;
            let v = match attr_t(n, "value")? {
                Some(t) => constant(t)?,
                None => Dense { shape: vec![1], data: Data::F(vec![0.0]) },
            };
            let data = match v.data {
                Data::F(v) => Data::F(vec![v[0]; n_el]),
                Data::I(v) => Data::I(vec![v[0]; n_el]),
                Data::B(v) => Data::B(vec![v[0]; n_el]),
            };
            one(Dense { shape, data })
        }
        "Identity" => one(x()?.clone()),
        "Dropout" => {
            if ins.get(2).copied().flatten().map(|t| t.as_i64()).transpose()?.is_some_and(|v| v.iter().any(|&b| b != 0))
            {
                return Err("Dropout in training mode is random: not supported".into());
            }
            one(x()?.clone())
        }
        "Cast" => one(cast(x()?, kind_of(attr_i(n, "to", 1)?)?)),
        "CastLike" => one(cast(x()?, need(ins, 1)?.kind())),
        "Gather" => {
            let (d, idx) = (x()?, need(ins, 1)?);
            let ax = norm_axis(attr_i(n, "axis", 0)?, d.shape.len())?;
            let dim = d.shape[ax];
            let ids: Vec<usize> = idx
                .as_i64()?
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim as i64 } else { i };
                    usize::try_from(j)
                        .ok()
                        .filter(|&j| j < dim)
                        .ok_or_else(|| format!("gather index {i} out of range {dim}"))
                })
                .collect::<R<_>>()?;
            let mut shape = d.shape[..ax].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&d.shape[ax + 1..]);
            let st = strides(&d.shape);
            let (ir, rank) = (idx.shape.len(), d.shape.len());
            one(remap(d, shape, |o| {
                let k = ids[dot(&o[ax..ax + ir], &strides(&idx.shape))];
                let mut off = k * st[ax];
                for i in 0..ax {
                    off += o[i] * st[i];
                }
                for i in ax + 1..rank {
                    off += o[i + ir - 1] * st[i];
                }
                off
            }))
        }
        "GatherND" => {
            let (d, idx) = (x()?, need(ins, 1)?);
            if attr_i(n, "batch_dims", 0)? != 0 {
                return Err("GatherND with batch_dims is not supported".into());
            }
            let q = *idx.shape.last().ok_or("GatherND indices must have rank >= 1")?;
            if q > d.shape.len() {
                return Err("GatherND index depth exceeds the data rank".into());
            }
            let iv = idx.as_i64()?;
            let mut shape = idx.shape[..idx.shape.len() - 1].to_vec();
            shape.extend(&d.shape[q..]);
            let st = strides(&d.shape);
            let lead = idx.shape.len() - 1;
            let err = std::cell::RefCell::new(None);
            let t = remap(d, shape, |o| {
                let base = dot(&o[..lead], &strides(&idx.shape[..lead])) * q;
                let mut off = 0;
                for k in 0..q {
                    let dim = d.shape[k] as i64;
                    let mut v = iv[base + k];
                    if v < 0 {
                        v += dim;
                    }
                    if !(0..dim).contains(&v) {
                        *err.borrow_mut() = Some(format!("GatherND index {} out of range {dim}", iv[base + k]));
                        v = 0;
                    }
                    off += v as usize * st[k];
                }
                off + dot(&o[lead..], &st[q..])
            });
            match err.into_inner() {
                Some(e) => Err(e),
                None => one(t),
            }
        }
        "Unsqueeze" => {
            let axes = axes_input(ins, 1)?.ok_or("Unsqueeze without axes")?;
            let t = x()?;
            one(Dense { shape: unsqueeze_dims(&t.shape, &axes)?, data: t.data.clone() })
        }
        "Squeeze" => {
            let axes = axes_input(ins, 1)?;
            let t = x()?;
            one(Dense { shape: squeeze_dims(&t.shape, axes.as_deref())?, data: t.data.clone() })
        }
        "Reshape" => {
            let t = x()?;
            let shape = reshape_dims(&t.shape, &need(ins, 1)?.as_i64()?, attr_i(n, "allowzero", 0)? != 0)?;
            one(Dense { shape, data: t.data.clone() })
        }
        "Flatten" => {
            let t = x()?;
            let ax = flatten_axis(attr_i(n, "axis", 1)?, t.shape.len())?;
            one(Dense { shape: vec![numel(&t.shape[..ax]), numel(&t.shape[ax..])], data: t.data.clone() })
        }
        "Concat" => {
            let parts: Vec<&Dense> = ins.iter().flatten().copied().collect();
            let rank = parts.first().ok_or("Concat of nothing")?.shape.len();
            one(concat(&parts, norm_axis(attr_i(n, "axis", 0)?, rank)?)?)
        }
        "Slice" => {
            let t = x()?;
            let starts = need(ins, 1)?.as_i64()?;
            let ends = need(ins, 2)?.as_i64()?;
            let axes = axes_input(ins, 3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = axes_input(ins, 4)?.unwrap_or_else(|| vec![1; starts.len()]);
            let mut begin = vec![0i64; t.shape.len()];
            let mut step = vec![1i64; t.shape.len()];
            let mut shape = t.shape.clone();
            for (k, &a) in axes.iter().enumerate() {
                let a = norm_axis(a, t.shape.len())?;
                let (s, c) = slice_range(t.shape[a], starts[k], ends[k], steps[k])?;
                begin[a] = s;
                step[a] = steps[k];
                shape[a] = c;
            }
            let st = strides(&t.shape);
            one(remap(t, shape, |o| {
                o.iter().enumerate().map(|(i, &v)| (begin[i] + v as i64 * step[i]) as usize * st[i]).sum()
            }))
        }
        "Range" => {
            let (s, l, d) = (x()?, need(ins, 1)?, need(ins, 2)?);
            match (&s.data, &l.data, &d.data) {
                (Data::F(a), Data::F(b), Data::F(c)) => {
                    let (a, b, c) = (a[0], b[0], c[0]);
                    let count = ((b - a) / c).ceil().max(0.0) as usize;
                    sized(&[count])?;
                    one(Dense { shape: vec![count], data: Data::F((0..count).map(|i| a + i as f32 * c).collect()) })
                }
                _ => {
                    let (a, b, c) = (s.scalar_i64()?, l.scalar_i64()?, d.scalar_i64()?);
                    if c == 0 {
                        return Err("Range delta 0".into());
                    }
                    let count = ((b as f64 - a as f64) / c as f64).ceil().max(0.0) as usize;
                    sized(&[count])?;
                    one(Dense::ints(
                        vec![count],
                        (0..count as i64).map(|i| a.wrapping_add(i.wrapping_mul(c))).collect(),
                    ))
                }
            }
        }
        "Expand" => {
            let t = x()?;
            let target: Vec<usize> = need(ins, 1)?.as_i64()?.iter().map(|&d| d as usize).collect();
            let shape = broadcast(&t.shape, &target)?;
            sized(&shape)?;
            let s = bstrides(&t.shape, shape.len());
            one(remap(t, shape, |o| dot(o, &s)))
        }
        "Where" => one(where_(x()?, need(ins, 1)?, need(ins, 2)?)?),
        "CumSum" => {
            let t = x()?;
            let ax = norm_axis(need(ins, 1)?.scalar_i64()?, t.shape.len())?;
            let (excl, rev) = (attr_i(n, "exclusive", 0)? != 0, attr_i(n, "reverse", 0)? != 0);
            let st = strides(&t.shape);
            let dim = t.shape[ax];
            let src = t.as_f32();
            let is_int = matches!(t.data, Data::I(_) | Data::B(_));
            let iv = t.as_i64()?;
            let mut fo = vec![0f32; t.len()];
            let mut io = vec![0i64; t.len()];
            for base in 0..t.len() {
                if (base / st[ax]) % dim != 0 {
                    continue;
                }
                let (mut af, mut ai) = (0f32, 0i64);
                for k in 0..dim {
                    let k = if rev { dim - 1 - k } else { k };
                    let o = base + k * st[ax];
                    if excl {
                        fo[o] = af;
                        io[o] = ai;
                    }
                    af += src[o];
                    ai += iv[o];
                    if !excl {
                        fo[o] = af;
                        io[o] = ai;
                    }
                }
            }
            one(Dense { shape: t.shape.clone(), data: if is_int { Data::I(io) } else { Data::F(fo) } })
        }
        "Transpose" => {
            let t = x()?;
            let r = t.shape.len();
            let perm: Vec<usize> = match attr_ints(n, "perm")? {
                Some(p) => p.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
                None => (0..r).rev().collect(),
            };
            // A repeated axis would read elements the input does not have.
            let mut seen = vec![false; r];
            if perm.len() != r || !perm.iter().all(|&a| !std::mem::replace(&mut seen[a], true)) {
                return Err(format!("perm {perm:?} is not a permutation of {r} axes"));
            }
            let st = strides(&t.shape);
            let shape = perm.iter().map(|&p| t.shape[p]).collect();
            let s: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
            one(remap(t, shape, |o| dot(o, &s)))
        }
        "Split" => {
            let t = x()?;
            let ax = norm_axis(attr_i(n, "axis", 0)?, t.shape.len())?;
            let split = if opset >= 13 { axes_input(ins, 1)? } else { attr_ints(n, "split")? };
            let num = if opset >= 18 {
                attr(n, "num_outputs").map(|_| attr_i(n, "num_outputs", 0)).transpose()?
            } else {
                None
            };
            let sizes = split_sizes(t.shape[ax], split, n.output.len(), num)?;
            let st = strides(&t.shape);
            let mut start = 0;
            let mut out = Vec::new();
            for s in sizes {
                let mut shape = t.shape.clone();
                shape[ax] = s;
                out.push(remap(t, shape, |o| dot(o, &st) + start * st[ax]));
                start += s;
            }
            Ok(out)
        }
        "Trilu" => {
            let t = x()?;
            let k = ins.get(1).copied().flatten().map(|k| k.scalar_i64()).transpose()?.unwrap_or(0);
            let upper = attr_i(n, "upper", 1)? != 0;
            let r = t.shape.len();
            if r < 2 {
                return Err("Trilu needs rank >= 2".into());
            }
            let (rows, cols) = (t.shape[r - 2], t.shape[r - 1]);
            let keep: Vec<bool> = (0..t.len())
                .map(|o| {
                    let (i, j) = (((o / cols) % rows) as i64, (o % cols) as i64);
                    if upper { j - i >= k } else { j - i <= k }
                })
                .collect();
            let data = match &t.data {
                Data::F(v) => Data::F(v.iter().zip(&keep).map(|(&a, &kp)| if kp { a } else { 0.0 }).collect()),
                Data::I(v) => Data::I(v.iter().zip(&keep).map(|(&a, &kp)| if kp { a } else { 0 }).collect()),
                Data::B(v) => Data::B(v.iter().zip(&keep).map(|(&a, &kp)| kp && a).collect()),
            };
            one(Dense { shape: t.shape.clone(), data })
        }
        op @ ("ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceMean") => {
            let t = x()?;
            let axes = if opset >= 18 || op == "ReduceSum" { axes_input(ins, 1)? } else { attr_ints(n, "axes")? };
            let keep = attr_i(n, "keepdims", 1)? != 0;
            let r = t.shape.len();
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
                _ if attr_i(n, "noop_with_empty_axes", 0)? != 0 => return one(t.clone()),
                _ => (0..r).collect(),
            };
            let kshape: Vec<usize> = (0..r).map(|i| if axes.contains(&i) { 1 } else { t.shape[i] }).collect();
            let ks = strides(&kshape);
            let v = t.as_f32();
            let iv = t.as_i64()?;
            // Reducing over an empty axis makes a non-empty result of the other dims: bounded too.
            let n_out = sized(&kshape)?;
            let mut acc = vec![f64::NAN; n_out];
            let mut cnt = vec![0usize; n_out];
            let mut idx = vec![0usize; r];
            for o in 0..t.len() {
                let k: usize = (0..r).map(|i| if axes.contains(&i) { 0 } else { idx[i] * ks[i] }).sum();
                let val = if matches!(t.data, Data::F(_)) { f64::from(v[o]) } else { iv[o] as f64 };
                acc[k] = if cnt[k] == 0 {
                    val
                } else {
                    match op {
                        "ReduceMax" => acc[k].max(val),
                        "ReduceMin" => acc[k].min(val),
                        "ReduceProd" => acc[k] * val,
                        _ => acc[k] + val,
                    }
                };
                cnt[k] += 1;
                next_index(&mut idx, &t.shape);
            }
            if op == "ReduceMean" {
                acc.iter_mut().zip(&cnt).for_each(|(a, &c)| *a /= c as f64);
            }
            let shape = if keep { kshape } else { (0..r).filter(|i| !axes.contains(i)).map(|i| t.shape[i]).collect() };
            let data = match t.data {
                Data::F(_) => Data::F(acc.iter().map(|&a| a as f32).collect()),
                _ => Data::I(acc.iter().map(|&a| a as i64).collect()),
            };
            one(Dense { shape, data })
        }
        op @ ("Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Equal" | "Less" | "LessOrEqual" | "Greater"
        | "GreaterOrEqual" | "And" | "Or" | "Xor") => one(binary(op, x()?, need(ins, 1)?, attr_i(n, "fmod", 0)? != 0)?),
        op @ ("Max" | "Min") => {
            let mut acc = x()?.clone();
            for t in ins[1..].iter().flatten() {
                acc = binary(op, &acc, t, false)?;
            }
            one(acc)
        }
        op => one(unary(op, x()?)?),
    }
}
