//! ONNX's vision ops on `[N, C, spatial...]` data: MaxPool, AveragePool, GlobalAveragePool,
//! Conv (grouped too) and BatchNormalization (inference).
//!
//! Pools and Conv *unfold* the input axis by axis: a spatial axis of size `S` becomes the
//! `[O, K]` window taps by a matmul with a constant 0/1 selection matrix `[S, O * K]` (a tap
//! that reads padding selects nothing and gives 0). One input element times 1 plus zeros is
//! exact for finite inputs (an inf or NaN input would spread through the zeros of its row).
//! Which tap reads which input, and which taps count, follow onnx's reference implementations
//! (`op_pool_common.py` for AveragePool and unit-stride MaxPool, `op_max_pool.py`'s
//! `_max_pool` otherwise, `op_conv.py`).

use super::{Importer, input};
use crate::onnx::fold;
use crate::onnx::fold::{R, attr_f, attr_i, attr_ints, attr_s};
use crate::onnx::proto::NodeProto;
use edgec_ir::{BinaryOp, Dim, Op, ReduceOp, UnaryOp, ValueRef};

/// What a window tap reads along one axis.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tap {
    /// The input element at this index.
    Input(usize),
    /// Padding that counts as 0 (AveragePool with count_include_pad, Conv).
    ZeroPad,
    /// Padding or a position past the padded input: not part of the window.
    Outside,
}

/// One spatial axis of a window op: its output size and, per output index, its taps.
struct AxisTaps {
    out: usize,
    kernel: usize,
    /// `taps[o * kernel + k]`.
    taps: Vec<Tap>,
}

/// The window attributes of one spatial axis.
#[derive(Clone, Copy)]
struct Window {
    size: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
}

impl Window {
    fn span(&self) -> usize {
        (self.kernel - 1) * self.dilation + 1
    }
}

/// Checked `usize` from an attribute value.
fn positive(v: i64, what: &str) -> R<usize> {
    usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| format!("{what} must be positive, got {v}"))
}

fn non_negative(v: i64, what: &str) -> R<usize> {
    usize::try_from(v).map_err(|_| format!("{what} must not be negative, got {v}"))
}

/// The common window attributes of a node over `spatial` input sizes.
fn windows(n: &NodeProto, spatial: &[usize], kernel: &[usize]) -> R<Vec<Window>> {
    let k = spatial.len();
    if kernel.len() != k {
        return Err(format!("kernel_shape has {} entries for {k} spatial axes", kernel.len()));
    }
    let list = |name: &str, default: i64, len: usize| -> R<Vec<i64>> {
        let v = attr_ints(n, name)?.unwrap_or_else(|| vec![default; len]);
        if v.len() != len { Err(format!("{name} has {} entries, expected {len}", v.len())) } else { Ok(v) }
    };
    let strides = list("strides", 1, k)?;
    let dilations = list("dilations", 1, k)?;
    let pads = list("pads", 0, 2 * k)?;
    (0..k)
        .map(|a| {
            Ok(Window {
                size: spatial[a],
                kernel: kernel[a],
                stride: positive(strides[a], "a stride")?,
                dilation: positive(dilations[a], "a dilation")?,
                pad_begin: non_negative(pads[a], "a pad")?,
                pad_end: non_negative(pads[k + a], "a pad")?,
            })
        })
        .collect()
}

/// Output size with explicit pads: floor (or ceil, then not starting in the end padding) of
/// `(S + pads - span) / stride + 1`.
fn explicit_out(w: &Window, ceil: bool) -> R<usize> {
    let padded = w.size + w.pad_begin + w.pad_end;
    let room = padded.checked_sub(w.span()).ok_or("the window is larger than the padded input")?;
    let mut out = room / w.stride + 1;
    if ceil && room % w.stride != 0 {
        out += 1;
        if (out - 1) * w.stride >= w.size + w.pad_begin {
            out -= 1;
        }
    }
    Ok(out)
}

/// `auto_pad` SAME_UPPER / SAME_LOWER: total padding so that `out` windows fit, split with the
/// extra element at the end (UPPER) or the beginning (LOWER).
fn same_pads(w: &mut Window, out: usize, upper: bool) {
    let total = ((out.saturating_sub(1)) * w.stride + w.span()).saturating_sub(w.size);
    let small = total / 2;
    (w.pad_begin, w.pad_end) = if upper { (small, total - small) } else { (total - small, small) };
}

/// Taps where tap `k` of output `o` reads `o * stride + k * dilation - pad_begin` when that is
/// inside the input, else `pad`.
fn plain_taps(w: &Window, out: usize, pad: Tap) -> AxisTaps {
    let mut taps = Vec::with_capacity(out * w.kernel);
    for o in 0..out {
        for k in 0..w.kernel {
            let p = o * w.stride + k * w.dilation;
            taps.push(match p.checked_sub(w.pad_begin) {
                Some(i) if i < w.size => Tap::Input(i),
                _ => pad,
            });
        }
    }
    AxisTaps { out, kernel: w.kernel, taps }
}

/// AveragePool's (and unit-stride MaxPool's) taps, as `op_pool_common.py` computes them:
/// positions in a tensor padded for the ceil mode (the extra split over both ends), positions
/// past the explicitly padded input dropped, padding counted as 0 only with count_include_pad.
fn common_pool_taps(w: &Window, auto_pad: &str, ceil: bool, pad: Tap) -> R<AxisTaps> {
    let mut w = *w;
    let (out, extra_begin) = match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => {
            let out = (w.size - 1) / w.stride + 1;
            let total = ((out - 1) * w.stride + w.kernel).saturating_sub(w.size);
            let small = total / 2;
            (w.pad_begin, w.pad_end) =
                if auto_pad == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
            (out, 0)
        }
        "VALID" => {
            (w.pad_begin, w.pad_end) = (0, 0);
            (w.size.checked_sub(w.kernel).ok_or("the kernel is larger than the input")? / w.stride + 1, 0)
        }
        _ => {
            let out = explicit_out(&w, ceil)?;
            let needed = (out - 1) * w.stride + w.span();
            let extra = needed.saturating_sub(w.size + w.pad_begin + w.pad_end);
            (out, extra / 2)
        }
    };
    let limit = w.size + w.pad_begin + w.pad_end;
    let begin = w.pad_begin + extra_begin;
    let mut taps = Vec::with_capacity(out * w.kernel);
    for o in 0..out {
        for k in 0..w.kernel {
            let p = o * w.stride + k * w.dilation;
            taps.push(if p >= limit {
                Tap::Outside
            } else {
                match p.checked_sub(begin) {
                    Some(i) if i < w.size => Tap::Input(i),
                    _ => pad,
                }
            });
        }
    }
    Ok(AxisTaps { out, kernel: w.kernel, taps })
}

/// MaxPool with a non-unit stride or dilation (`op_max_pool.py`'s `_max_pool`).
fn max_pool_taps(w: &Window, auto_pad: &str, ceil: bool) -> R<AxisTaps> {
    let mut w = *w;
    let mut out = explicit_out(&w, ceil)?;
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => {
            out = if auto_pad == "SAME_UPPER" { w.size.div_ceil(w.stride) } else { w.size / w.stride };
            let total = ((out.saturating_sub(1)) * w.stride + w.span()).saturating_sub(w.size);
            // The reference puts the smaller half first for both.
            (w.pad_begin, w.pad_end) = (total / 2, total - total / 2);
        }
        "VALID" => {
            (w.pad_begin, w.pad_end) = (0, 0);
            out = w.size.checked_sub(w.span()).ok_or("the window is larger than the input")? / w.stride + 1;
        }
        _ => {}
    }
    Ok(plain_taps(&w, out, Tap::Outside))
}

impl Importer<'_> {
    /// `x [N, C, S...]` → `[N, C, O..., K...]` (all kernel taps), by one selection matmul per
    /// spatial axis; padding and outside taps are 0.
    fn unfold(&mut self, x: ValueRef, axes: &[AxisTaps]) -> R<ValueRef> {
        let d = self.static_dims(x, "the input")?;
        let k = axes.len();
        // Current layout: labels 0..2 are N, C; 2 + j is spatial axis j (S, then O), and
        // 2 + k + j its kernel axis once unfolded.
        let mut labels: Vec<usize> = (0..2 + k).collect();
        let mut dims = d.clone();
        let mut v = x;
        for (j, a) in axes.iter().enumerate().rev() {
            let at = labels.iter().position(|&l| l == 2 + j).ok_or("unfold: lost an axis")?;
            let size = dims[at];
            let mut perm: Vec<u32> = (0..labels.len() as u32).filter(|&p| p as usize != at).collect();
            perm.push(at as u32);
            let moved = self.add(Op::Transpose { perm: perm.clone() }, vec![v])?;
            let lead: Vec<usize> = perm[..perm.len() - 1].iter().map(|&p| dims[p as usize]).collect();
            let rows = fold::checked_numel(&lead)?;
            let flat = self.reshape_to(moved, &[rows, size])?;
            let ok = a.out.checked_mul(a.kernel).filter(|&c| c.checked_mul(size).is_some_and(|e| e <= 1 << 24));
            let cols = ok.ok_or("the window selection matrix is too large")?;
            let mut sel = vec![0.0f32; size * cols];
            for (c, t) in a.taps.iter().enumerate() {
                if let Tap::Input(i) = t {
                    sel[i * cols + c] = 1.0;
                }
            }
            let w = self.literal("unfold", &[size, cols], sel);
            let y = self.add(Op::MatMul { transpose_b: false }, vec![flat, w])?;
            let mut new_labels: Vec<usize> = perm[..perm.len() - 1].iter().map(|&p| labels[p as usize]).collect();
            let mut new_dims: Vec<usize> = perm[..perm.len() - 1].iter().map(|&p| dims[p as usize]).collect();
            new_labels.extend([2 + j, 2 + k + j]);
            new_dims.extend([a.out, a.kernel]);
            v = self.reshape_to(y, &new_dims)?;
            labels = new_labels;
            dims = new_dims;
        }
        // Back to N, C, O..., K...
        let perm: Vec<u32> = (0..2 + 2 * k)
            .map(|l| labels.iter().position(|&x| x == l).map(|p| p as u32))
            .collect::<Option<_>>()
            .ok_or("unfold: lost an axis")?;
        if perm.iter().enumerate().all(|(i, &p)| p as usize == i) {
            Ok(v)
        } else {
            self.add(Op::Transpose { perm }, vec![v])
        }
    }

    /// The per-window constants over `[O..., K...]`: whether each tap counts, as 0/1.
    fn tap_weights(axes: &[AxisTaps], counts: impl Fn(Tap) -> bool) -> R<Vec<f32>> {
        let outs: Vec<usize> = axes.iter().map(|a| a.out).collect();
        let ks: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
        // A constant: bounded by the folding limit before it is allocated.
        let total = fold::sized(&outs.iter().chain(&ks).copied().collect::<Vec<_>>())?;
        let mut w = Vec::with_capacity(total);
        let mut idx = vec![0usize; 2 * axes.len()];
        let sizes: Vec<usize> = outs.iter().chain(&ks).copied().collect();
        for _ in 0..total {
            let all = axes.iter().enumerate().all(|(j, a)| counts(a.taps[idx[j] * a.kernel + idx[axes.len() + j]]));
            w.push(f32::from(u8::from(all)));
            for ax in (0..sizes.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < sizes[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Ok(w)
    }

    /// MaxPool and AveragePool (one output).
    pub(super) fn pool(&mut self, n: &NodeProto) -> R<ValueRef> {
        let is_max = n.op_type == "MaxPool";
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("MaxPool's Indices output is not supported".into());
        }
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let d = self.static_dims(x, "the input")?;
        if d.len() < 3 {
            return Err("pooling needs [N, C, spatial...] input".into());
        }
        let kernel: Vec<usize> = attr_ints(n, "kernel_shape")?
            .ok_or("kernel_shape is required")?
            .iter()
            .map(|&k| positive(k, "a kernel size"))
            .collect::<R<_>>()?;
        let ws = windows(n, &d[2..], &kernel)?;
        let auto_pad = attr_s(n, "auto_pad", "NOTSET")?;
        let ceil = attr_i(n, "ceil_mode", 0)? != 0;
        let include_pad = !is_max && attr_i(n, "count_include_pad", 0)? != 0;
        let pad = if include_pad { Tap::ZeroPad } else { Tap::Outside };
        let unit = ws.iter().all(|w| w.stride == 1 && w.dilation == 1);
        let axes: Vec<AxisTaps> = ws
            .iter()
            .map(|w| {
                if is_max && !unit {
                    max_pool_taps(w, &auto_pad, ceil)
                } else {
                    common_pool_taps(w, &auto_pad, ceil, pad)
                }
            })
            .collect::<R<_>>()?;
        let u = self.unfold(x, &axes)?;
        let outs: Vec<usize> = axes.iter().map(|a| a.out).collect();
        let taps = fold::checked_numel(&axes.iter().map(|a| a.kernel).collect::<Vec<_>>())?;
        let mut rows = vec![d[0], d[1]];
        rows.extend(&outs);
        let mut flat_dims = rows.clone();
        flat_dims.push(taps);
        let u = self.reshape_to(u, &flat_dims)?;
        let mut const_dims = outs.clone();
        const_dims.push(taps);
        let y = if is_max {
            // Taps outside the window get -inf before the max.
            let bias: Vec<f32> = Self::tap_weights(&axes, |t| matches!(t, Tap::Input(_)))?
                .into_iter()
                .map(|w| if w == 1.0 { 0.0 } else { f32::NEG_INFINITY })
                .collect();
            let b = self.literal("pool_mask", &const_dims, bias);
            let masked = self.bin(BinaryOp::Add, u, b)?;
            self.add(Op::Reduce(ReduceOp::Max), vec![masked])?
        } else {
            // Sum over the window (zeros elsewhere), divided by the taps that count.
            let counted = Self::tap_weights(&axes, |t| t != Tap::Outside)?;
            let count: Vec<f32> = counted.chunks(taps).map(|c| c.iter().sum::<f32>()).collect();
            let s = self.add(Op::Reduce(ReduceOp::Sum), vec![u])?;
            let mut cd = outs.clone();
            cd.push(1);
            let c = self.literal("pool_count", &cd, count);
            self.bin(BinaryOp::Div, s, c)?
        };
        self.reshape_to(y, &rows)
    }

    /// GlobalAveragePool: the mean over all spatial axes, kept with size 1.
    pub(super) fn global_average_pool(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let d = self.static_dims(x, "the input")?;
        if d.len() < 3 {
            return Err("GlobalAveragePool needs [N, C, spatial...] input".into());
        }
        let flat = self.reshape_to(x, &[d[0], d[1], fold::checked_numel(&d[2..])?])?;
        let m = self.add(Op::Reduce(ReduceOp::Mean), vec![flat])?;
        let mut out = vec![d[0], d[1]];
        out.extend(std::iter::repeat_n(1, d.len() - 2));
        self.reshape_to(m, &out)
    }

    /// Conv: the unfolded input times the kernel as one matmul per group of channels (their
    /// results side by side), plus the bias.
    pub(super) fn conv(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let w = self.float_operand(input(n, 1).ok_or("missing weights")?)?;
        let d = self.static_dims(x, "the input")?;
        let wd = self.static_dims(w, "the weights")?;
        let groups = positive(attr_i(n, "group", 1)?, "group")?;
        if d.len() < 3 || wd.len() != d.len() || wd[1].checked_mul(groups) != Some(d[1]) || wd[0] % groups != 0 {
            return Err(format!(
                "Conv of input {d:?} with weights {wd:?} in {groups} group(s): the channels or ranks differ"
            ));
        }
        let kernel = match attr_ints(n, "kernel_shape")? {
            Some(k) => k.iter().map(|&k| positive(k, "a kernel size")).collect::<R<Vec<_>>>()?,
            None => wd[2..].to_vec(),
        };
        if kernel != wd[2..] {
            return Err(format!("kernel_shape {kernel:?} differs from the weights' {:?}", &wd[2..]));
        }
        let mut ws = windows(n, &d[2..], &kernel)?;
        let auto_pad = attr_s(n, "auto_pad", "NOTSET")?;
        let axes: Vec<AxisTaps> = ws
            .iter_mut()
            .map(|w| {
                let out = match auto_pad.as_str() {
                    "SAME_UPPER" | "SAME_LOWER" => {
                        let out = w.size.div_ceil(w.stride);
                        same_pads(w, out, auto_pad == "SAME_UPPER");
                        out
                    }
                    "VALID" => {
                        (w.pad_begin, w.pad_end) = (0, 0);
                        explicit_out(w, false)?
                    }
                    _ => explicit_out(w, false)?,
                };
                Ok(plain_taps(w, out, Tap::ZeroPad))
            })
            .collect::<R<_>>()?;
        let u = self.unfold(x, &axes)?;
        // [N, C, O..., K...] → [N, O..., C, K...] → [N * O, C * K] · Wᵀ.
        let k = axes.len();
        let mut perm: Vec<u32> = vec![0];
        perm.extend((0..k).map(|j| (2 + j) as u32));
        perm.push(1);
        perm.extend((0..k).map(|j| (2 + k + j) as u32));
        let ut = self.add(Op::Transpose { perm }, vec![u])?;
        let outs: Vec<usize> = axes.iter().map(|a| a.out).collect();
        let rows = fold::checked_numel(&[d[0], fold::checked_numel(&outs)?])?;
        // Per group: its input channels (axis 1 + k of `ut`) times its rows of the kernel.
        let (cg, mg) = (wd[1], wd[0] / groups);
        let ck = fold::checked_numel(&[&[cg], &kernel[..]].concat())?;
        let wf = self.reshape_to(w, &[wd[0], ck])?;
        let mut y: Option<ValueRef> = None;
        for g in 0..groups {
            let slice = |im: &mut Self, v: ValueRef, axis: usize, len: usize| -> R<ValueRef> {
                if groups == 1 {
                    return Ok(v);
                }
                let start = (g * len) as u64;
                im.add(Op::Slice { axis: axis as u32, start, len: Dim::Const(len as u64) }, vec![v])
            };
            let xg = slice(self, ut, 1 + k, cg)?;
            let a = self.reshape_to(xg, &[rows, ck])?;
            let wg = slice(self, wf, 0, mg)?;
            let part = self.add(Op::MatMul { transpose_b: true }, vec![a, wg])?;
            y = Some(match y {
                None => part,
                Some(acc) => self.add(Op::Concat { axis: 1 }, vec![acc, part])?,
            });
        }
        let mut y = y.ok_or("Conv with no groups")?;
        if let Some(b) = input(n, 2) {
            let b = self.float_operand(b)?;
            let b = self.reshape_to(b, &[wd[0]])?;
            y = self.bin(BinaryOp::Add, y, b)?;
        }
        let mut nom = vec![d[0]];
        nom.extend(&outs);
        nom.push(wd[0]);
        let y = self.reshape_to(y, &nom)?;
        let mut back: Vec<u32> = vec![0, (k + 1) as u32];
        back.extend((1..=k).map(|j| j as u32));
        self.add(Op::Transpose { perm: back }, vec![y])
    }

    /// BatchNormalization in inference mode: `scale * (x - mean) / sqrt(var + eps) + bias` per
    /// channel, like the reference.
    pub(super) fn batch_norm(&mut self, n: &NodeProto) -> R<ValueRef> {
        if attr_i(n, "training_mode", 0)? != 0 || n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("BatchNormalization in training mode is not supported".into());
        }
        let x = self.float_operand(input(n, 0).ok_or("missing input")?)?;
        let d = self.static_dims(x, "the input")?;
        if d.len() < 2 {
            return Err("BatchNormalization needs [N, C, ...] input".into());
        }
        // Per-channel vectors as [C, 1, ...] so they broadcast over the spatial axes.
        let mut cshape = vec![d[1]];
        cshape.extend(std::iter::repeat_n(1, d.len() - 2));
        let mut per_channel = |i: usize, what: &str| -> R<ValueRef> {
            let v = self.float_operand(input(n, i).ok_or_else(|| format!("missing {what}"))?)?;
            self.reshape_to(v, &cshape)
        };
        let (scale, bias, mean, var) = (
            per_channel(1, "scale")?,
            per_channel(2, "B")?,
            per_channel(3, "input_mean")?,
            per_channel(4, "input_var")?,
        );
        let eps = self.scalar(attr_f(n, "epsilon", 1e-5)?);
        let centered = self.bin(BinaryOp::Sub, x, mean)?;
        let scaled = self.bin(BinaryOp::Mul, scale, centered)?;
        let ve = self.bin(BinaryOp::Add, var, eps)?;
        let sd = self.un(UnaryOp::Sqrt, ve)?;
        let normed = self.bin(BinaryOp::Div, scaled, sd)?;
        self.bin(BinaryOp::Add, normed, bias)
    }
}

impl Importer<'_> {
    /// Element `i` of `axis` as a slice of length 1.
    fn at(&mut self, x: ValueRef, axis: usize, i: usize) -> R<ValueRef> {
        self.add(Op::Slice { axis: axis as u32, start: i as u64, len: Dim::Const(1) }, vec![x])
    }

    fn concat_all(&mut self, parts: Vec<ValueRef>, axis: usize) -> R<ValueRef> {
        let mut it = parts.into_iter();
        let mut acc = it.next().ok_or("nothing to concatenate")?;
        for p in it {
            acc = self.add(Op::Concat { axis: axis as u32 }, vec![acc, p])?;
        }
        Ok(acc)
    }

    /// Pad (opsets 13–25; constant, edge, reflect and wrap) with pads, value and axes known at
    /// compile time: each axis cropped (negative pads) or extended by concatenated slices or
    /// a constant block, like numpy's `pad`.
    pub(super) fn pad(&mut self, n: &NodeProto) -> R<ValueRef> {
        let mut x = self.operand(input(n, 0).ok_or("missing data")?)?;
        let pads = self.fixed(input(n, 1).ok_or("missing pads")?)?.as_i64()?;
        let value = match input(n, 2) {
            Some(v) => self.fixed(v)?.as_f32().first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        let rank = self.g.type_of(x).shape.rank();
        let axes: Vec<usize> = match input(n, 3) {
            Some(a) => {
                self.fixed(a)?.as_i64()?.iter().map(|&a| crate::onnx::fold::norm_axis(a, rank)).collect::<R<_>>()?
            }
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
        }
        let mode = attr_s(n, "mode", "constant")?;
        for (i, &axis) in axes.iter().enumerate() {
            x = self.pad_axis(x, axis, pads[i], pads[axes.len() + i], &mode, value)?;
        }
        Ok(x)
    }

    fn pad_axis(&mut self, x: ValueRef, axis: usize, begin: i64, end: i64, mode: &str, value: f32) -> R<ValueRef> {
        let d = self.static_dims(x, "the data")?;
        let size = d[axis];
        // Negative pads crop.
        let (cb, ce) = (usize::try_from(-begin.min(0)).unwrap_or(0), usize::try_from(-end.min(0)).unwrap_or(0));
        let kept = size.checked_sub(cb + ce).ok_or("Pad crops more than the axis holds")?;
        let mut x = x;
        if cb > 0 || ce > 0 {
            x = self.add(Op::Slice { axis: axis as u32, start: cb as u64, len: Dim::Const(kept as u64) }, vec![x])?;
        }
        let (pb, pe) = (usize::try_from(begin.max(0)).unwrap_or(0), usize::try_from(end.max(0)).unwrap_or(0));
        if pb == 0 && pe == 0 {
            return Ok(x);
        }
        if kept == 0 && mode != "constant" {
            return Err(format!("Pad mode '{mode}' of an empty axis"));
        }
        let limit = crate::limits::get(crate::limits::Limit::OnnxFoldElements) as usize;
        if pb.max(pe) > limit {
            return Err("Pad is too large".into());
        }
        let index = |j: i64| -> R<usize> {
            // Index `j` (may be outside 0..kept) of the padded axis mapped into the data.
            let k = kept as i64;
            let i = match mode {
                "edge" => j.clamp(0, k - 1),
                "wrap" => j.rem_euclid(k),
                "reflect" => {
                    if k == 1 {
                        0
                    } else {
                        let period = 2 * (k - 1);
                        let m = j.rem_euclid(period);
                        if m < k { m } else { period - m }
                    }
                }
                m => return Err(format!("Pad mode '{m}' is not supported")),
            };
            Ok(i as usize)
        };
        let mut parts = Vec::new();
        let block = |im: &mut Self, len: usize| -> R<ValueRef> {
            let mut bd = d.clone();
            bd[axis] = len;
            let count = fold::sized(&bd)?;
            if count > limit {
                return Err("Pad's constant block is too large".into());
            }
            let c = im.literal("pad", &bd, vec![value; count]);
            if im.g.type_of(x).dtype == edgec_ir::DType::I32 {
                im.add(Op::Cast { to: edgec_ir::DType::I32 }, vec![c])
            } else {
                Ok(c)
            }
        };
        if mode == "constant" {
            if pb > 0 {
                parts.push(block(self, pb)?);
            }
            parts.push(x);
            if pe > 0 {
                parts.push(block(self, pe)?);
            }
        } else {
            for j in -(pb as i64)..0 {
                let i = index(j)?;
                parts.push(self.at(x, axis, i)?);
            }
            parts.push(x);
            for j in kept as i64..(kept + pe) as i64 {
                let i = index(j)?;
                parts.push(self.at(x, axis, i)?);
            }
        }
        self.concat_all(parts, axis)
    }
}

/// The most elements along an axis that CumSum or a strided Slice unrolls into per-element
/// slices.
const MAX_UNROLL: usize = 1024;

impl Importer<'_> {
    /// CumSum on run-time data (axis known at compile time): running sums of the axis'
    /// elements in order (from the end when `reverse`), shifted by one when `exclusive`,
    /// concatenated back; the same additions in the same order as the reference's loop.
    pub(super) fn cumsum(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.operand(input(n, 0).ok_or("missing x")?)?;
        let d = self.static_dims(x, "x")?;
        let axis =
            crate::onnx::fold::norm_axis(self.fixed(input(n, 1).ok_or("missing axis")?)?.scalar_i64()?, d.len())?;
        let len = d[axis];
        if len == 0 || len > MAX_UNROLL {
            return Err(format!(
                "CumSum over an axis of {len} elements on run-time data is not supported (1..={MAX_UNROLL})"
            ));
        }
        let (exclusive, reverse) = (attr_i(n, "exclusive", 0)? != 0, attr_i(n, "reverse", 0)? != 0);
        let order: Vec<usize> = if reverse { (0..len).rev().collect() } else { (0..len).collect() };
        let mut out: Vec<Option<ValueRef>> = vec![None; len];
        let mut acc: Option<ValueRef> = None;
        for &k in &order {
            let e = self.at(x, axis, k)?;
            if exclusive {
                out[k] = Some(match acc {
                    Some(a) => a,
                    None => {
                        let z = self.zero_like(e)?;
                        let mut one = d.clone();
                        one[axis] = 1;
                        let dims: Vec<u64> = one.iter().map(|&v| v as u64).collect();
                        self.add(Op::Expand { shape: edgec_ir::Shape::of(&dims) }, vec![z])?
                    }
                });
            }
            let next = match acc {
                Some(a) => self.bin(BinaryOp::Add, a, e)?,
                None => e,
            };
            acc = Some(next);
            if !exclusive {
                out[k] = Some(next);
            }
        }
        let parts: Vec<ValueRef> = out.into_iter().collect::<Option<_>>().ok_or("CumSum: a missing element")?;
        self.concat_all(parts, axis)
    }

    /// Slice elements `begin, begin + step, ...` (`count` of them) of `axis`, any nonzero step:
    /// a reshape and one slice when they stride through the whole axis, else one slice per
    /// element, concatenated.
    pub(super) fn strided_slice(
        &mut self,
        x: ValueRef,
        axis: usize,
        begin: i64,
        step: i64,
        count: usize,
    ) -> R<ValueRef> {
        if count == 0 || count > MAX_UNROLL {
            return Err(format!(
                "a Slice with step {step} taking {count} elements of run-time data is not supported (1..={MAX_UNROLL})"
            ));
        }
        // Every `step`-th element from `begin < step` through the whole axis: the axis split into
        // `[dim / step, step]` by a reshape, one slice, a reshape back (one form for any count,
        // and the one `rope`'s interleaved recognition reads).
        let shapes = self.shapes_of(x);
        let dim = shapes[0][axis];
        let whole = step > 1 && (0..step).contains(&begin) && dim as i64 == count as i64 * step;
        if whole && shapes.iter().all(|s| s[axis] == dim) {
            let with = |s: &Vec<usize>, mid: &[usize]| [&s[..axis], mid, &s[axis + 1..]].concat();
            let split: Vec<Vec<usize>> = shapes.iter().map(|s| with(s, &[count, step as usize])).collect();
            let pairs = self.reshape(x, &split)?;
            let one = self.at(pairs, axis + 1, begin as usize)?;
            let back: Vec<Vec<usize>> = shapes.iter().map(|s| with(s, &[count])).collect();
            return self.reshape(one, &back);
        }
        let parts = (0..count as i64)
            .map(|i| {
                let at = usize::try_from(begin + i * step).map_err(|_| "a Slice index is out of range".to_string())?;
                self.at(x, axis, at)
            })
            .collect::<R<Vec<_>>>()?;
        self.concat_all(parts, axis)
    }
}
