//! ONNX Resize (opsets 13–25; nearest and linear, with antialias) lowered to one matmul per
//! resized axis. Resize is separable: onnx's reference (`op_resize.py`,
//! `_interpolate_1d_along_axis`) interpolates axis by axis, each output element a weighted sum
//! of (edge-clamped) input elements along that axis, or the extrapolation value. Those weights
//! are computed here in f64 exactly as the reference computes them and applied as a constant
//! `[S, O]` matrix (plus the extrapolation value where the reference substitutes it).

use super::{Importer, input};
use crate::onnx::fold;
use crate::onnx::fold::{R, attr_f, attr_i, attr_ints, attr_s, norm_axis};
use crate::onnx::proto::NodeProto;
use edgec_ir::{BinaryOp, Op, ValueRef};

/// The attributes that pick the weights.
struct Interp {
    mode: String,
    nearest_mode: String,
    coord: String,
    antialias: bool,
    exclude_outside: bool,
    extrapolation: f32,
}

impl Interp {
    fn coeffs(&self, ratio: f64, scale: f64) -> R<Vec<f64>> {
        Ok(match (self.mode.as_str(), self.antialias) {
            ("nearest", false) => {
                if ratio.fract() == 0.0 {
                    return Ok(vec![0.0, 1.0]);
                }
                let (a, b) = match self.nearest_mode.as_str() {
                    "round_prefer_floor" => (ratio <= 0.5, ratio > 0.5),
                    "round_prefer_ceil" => (ratio < 0.5, ratio >= 0.5),
                    "floor" => (true, false),
                    "ceil" => (false, true),
                    m => return Err(format!("nearest_mode '{m}' is not one of Resize's")),
                };
                vec![f64::from(u8::from(a)), f64::from(u8::from(b))]
            }
            ("nearest", true) => return Err("antialias with mode 'nearest' is not defined".into()),
            ("linear", false) => vec![1.0 - ratio, ratio],
            ("linear", true) => {
                let scale = scale.min(1.0);
                let start = (-1.0 / scale).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|x| x / sum).collect()
            }
            (m, _) => return Err(format!("Resize mode '{m}' is not supported (nearest and linear are)")),
        })
    }

    /// The source coordinate of each output index, and whether it is extrapolated.
    fn source(&self, y: f64, scale: f64, input: usize, out: usize, roi: (f64, f64)) -> R<(f64, bool)> {
        let (inw, outw) = (input as f64, scale * input as f64);
        Ok(match self.coord.as_str() {
            "align_corners" => (if outw == 1.0 { 0.0 } else { y * (inw - 1.0) / (outw - 1.0) }, false),
            "asymmetric" => (y / scale, false),
            "tf_crop_and_resize" => {
                let x = if outw == 1.0 {
                    (roi.1 - roi.0) * (inw - 1.0) / 2.0
                } else {
                    y * (roi.1 - roi.0) * (inw - 1.0) / (outw - 1.0)
                } + roi.0 * (inw - 1.0);
                (x, x < 0.0 || x > inw - 1.0)
            }
            "pytorch_half_pixel" => (if outw == 1.0 { -0.5 } else { (y + 0.5) / scale - 0.5 }, false),
            "half_pixel" => ((y + 0.5) / scale - 0.5, false),
            "half_pixel_symmetric" => {
                let adjustment = out as f64 / outw;
                let offset = inw / 2.0 * (1.0 - adjustment);
                (offset + (y + 0.5) / scale - 0.5, false)
            }
            m => return Err(format!("coordinate_transformation_mode '{m}' is not one of Resize's")),
        })
    }

    /// The `[input, out]` weights of one axis and, per output index, the extrapolated ones.
    fn axis_weights(&self, input: usize, out: usize, scale: f64, roi: (f64, f64)) -> R<(Vec<f32>, Vec<bool>)> {
        let mut w = vec![0.0f64; input * out];
        let mut extrapolated = vec![false; out];
        for o in 0..out {
            let (x, extra) = self.source(o as f64, scale, input, out, roi)?;
            let floor = x.floor();
            let ratio = if x == floor { 1.0 } else { x - floor };
            let mut c = self.coeffs(ratio, scale)?;
            let n = c.len() as i64;
            let pad = (n + 1) / 2;
            let xp = x + pad as f64;
            let p = xp.floor();
            let frac = xp - p;
            let offset = if n % 2 == 0 {
                if frac == 0.0 { -(n / 2) } else { -(n / 2) + 1 }
            } else if frac <= 0.5 {
                -((n - 1) / 2)
            } else {
                -((n - 1) / 2) + 1
            };
            let start = p as i64 + offset - pad;
            let idx: Vec<i64> = (0..n).map(|k| start + k).collect();
            if self.exclude_outside {
                for (ci, &i) in c.iter_mut().zip(&idx) {
                    if i < 0 || i >= input as i64 {
                        *ci = 0.0;
                    }
                }
                let s: f64 = c.iter().sum();
                let s = if s == 0.0 { 1.0 } else { s };
                c.iter_mut().for_each(|ci| *ci /= s);
            }
            if extra {
                extrapolated[o] = true;
                continue;
            }
            for (ci, &i) in c.iter().zip(&idx) {
                let i = i.clamp(0, input as i64 - 1) as usize;
                w[i * out + o] += ci;
            }
        }
        Ok((w.into_iter().map(|v| v as f32).collect(), extrapolated))
    }
}

impl Importer<'_> {
    /// A float input known at compile time, if given.
    fn fixed_floats(&mut self, n: &NodeProto, i: usize) -> R<Option<Vec<f64>>> {
        match input(n, i) {
            Some(v) => {
                let d = self.fixed(v)?;
                Ok(Some(d.as_f32().into_iter().map(f64::from).collect()).filter(|v: &Vec<f64>| !v.is_empty()))
            }
            None => Ok(None),
        }
    }

    pub(super) fn resize(&mut self, n: &NodeProto) -> R<ValueRef> {
        let x = self.float_operand(input(n, 0).ok_or("missing X")?)?;
        let d = self.static_dims(x, "X")?;
        let r = d.len();
        let axes: Vec<usize> = match attr_ints(n, "axes")? {
            Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
            None => (0..r).collect(),
        };
        let interp = Interp {
            mode: attr_s(n, "mode", "nearest")?,
            nearest_mode: attr_s(n, "nearest_mode", "round_prefer_floor")?,
            coord: attr_s(n, "coordinate_transformation_mode", "half_pixel")?,
            antialias: attr_i(n, "antialias", 0)? != 0,
            exclude_outside: attr_i(n, "exclude_outside", 0)? != 0,
            extrapolation: attr_f(n, "extrapolation_value", 0.0)?,
        };
        let roi = self.fixed_floats(n, 1)?;
        let scales = self.fixed_floats(n, 2)?;
        let sizes = match input(n, 3) {
            Some(s) => Some(self.fixed(s)?.as_i64()?).filter(|s| !s.is_empty()),
            None => None,
        };
        let k = axes.len();
        let (scale, out): (Vec<f64>, Vec<usize>) = match (scales, sizes) {
            (_, Some(sizes)) => {
                if sizes.len() != k {
                    return Err(format!("{} sizes for {k} axes", sizes.len()));
                }
                let sizes: Vec<usize> = sizes
                    .iter()
                    .map(|&s| usize::try_from(s).map_err(|_| format!("size {s} is negative")))
                    .collect::<R<_>>()?;
                let mut sc: Vec<f64> = axes.iter().zip(&sizes).map(|(&a, &s)| s as f64 / d[a] as f64).collect();
                let policy = attr_s(n, "keep_aspect_ratio_policy", "stretch")?;
                let keep = match policy.as_str() {
                    "stretch" => None,
                    "not_larger" => sc.iter().copied().reduce(f64::min),
                    "not_smaller" => sc.iter().copied().reduce(f64::max),
                    p => return Err(format!("keep_aspect_ratio_policy '{p}' is not one of Resize's")),
                };
                match keep {
                    Some(s) => {
                        sc = vec![s; k];
                        let out = axes.iter().map(|&a| (s * d[a] as f64 + 0.5) as usize).collect();
                        (sc, out)
                    }
                    None => (sc, sizes),
                }
            }
            (Some(scales), None) => {
                if scales.len() != k {
                    return Err(format!("{} scales for {k} axes", scales.len()));
                }
                if scales.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
                    return Err(format!("scales {scales:?} must be positive"));
                }
                let out = axes.iter().zip(&scales).map(|(&a, &s)| (s * d[a] as f64) as usize).collect();
                (scales, out)
            }
            (None, None) => return Err("Resize needs scales or sizes".into()),
        };
        let mut v = x;
        for (i, &a) in axes.iter().enumerate() {
            let roi_a = match &roi {
                Some(rv) if rv.len() == 2 * k => (rv[i], rv[k + i]),
                Some(rv) => return Err(format!("roi has {} values for {k} axes", rv.len())),
                None => (0.0, 1.0),
            };
            let trivial = (scale[i] - 1.0).abs() <= 1e-9 && out[i] == d[a] && roi_a == (0.0, 1.0);
            if trivial {
                continue;
            }
            v = self.resize_axis(v, a, &interp, scale[i], out[i], roi_a)?;
        }
        Ok(v)
    }

    fn resize_axis(
        &mut self,
        x: ValueRef,
        axis: usize,
        interp: &Interp,
        scale: f64,
        out: usize,
        roi: (f64, f64),
    ) -> R<ValueRef> {
        let d = self.static_dims(x, "X")?;
        let input = d[axis];
        if input.checked_mul(out).is_none_or(|e| e > 1 << 24) {
            return Err("the Resize weight matrix is too large".into());
        }
        let (w, extrapolated) = interp.axis_weights(input, out, scale, roi)?;
        let (xt, perm) = self.move_axes_last(x, &[axis])?;
        let others: Vec<usize> = d.iter().enumerate().filter(|&(i, _)| i != axis).map(|(_, &s)| s).collect();
        let rows = fold::checked_numel(&others)?;
        let flat = self.reshape_to(xt, &[rows, input])?;
        let wv = self.literal("resize_weights", &[input, out], w);
        let mut y = self.add(Op::MatMul { transpose_b: false }, vec![flat, wv])?;
        if extrapolated.iter().any(|&e| e) {
            let c: Vec<f32> = extrapolated.iter().map(|&e| if e { interp.extrapolation } else { 0.0 }).collect();
            let cv = self.literal("resize_extrapolation", &[out], c);
            y = self.bin(BinaryOp::Add, y, cv)?;
        }
        let mut td: Vec<usize> = d.iter().enumerate().filter(|&(i, _)| i != axis).map(|(_, &s)| s).collect();
        td.push(out);
        let y = self.reshape_to(y, &td)?;
        self.undo_perm(y, perm)
    }
}
