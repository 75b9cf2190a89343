//! Type rules: the result type of each op from its operand types.
//! Shared by graph building, the verifier and the shape-inference pass.

use crate::IrError;
use crate::graph::Graph;
use crate::op::{BinaryOp, Op};
use crate::types::{DType, Dim, Shape, TensorType};

fn err(op: &Op, msg: impl std::fmt::Display) -> IrError {
    IrError::new(format!("{}: {msg}", op.name()))
}

/// Checks the operands of `op` and returns the type of its result.
pub fn infer_type(g: &Graph, op: &Op, args: &[&TensorType]) -> Result<TensorType, IrError> {
    if args.len() != op.arity() {
        return Err(err(op, format!("takes {} operands, got {}", op.arity(), args.len())));
    }
    let show = |t: &TensorType| crate::text::type_to_string(g, t);
    let rank = |i: usize, r: usize| -> Result<(), IrError> {
        if args[i].shape.rank() == r {
            Ok(())
        } else {
            Err(err(op, format!("operand {i} must have rank {r}, got {}", show(args[i]))))
        }
    };
    let dtype = |i: usize, d: DType| -> Result<(), IrError> {
        if args[i].dtype == d {
            Ok(())
        } else {
            Err(err(op, format!("operand {i} must be {d}, got {}", show(args[i]))))
        }
    };
    let same_dim = |a: Dim, b: Dim, what: &str| -> Result<(), IrError> {
        if a == b { Ok(()) } else { Err(err(op, format!("{what}: {} != {}", dim_str(g, a), dim_str(g, b)))) }
    };
    let scalar_i32 = |i: usize| -> Result<(), IrError> {
        rank(i, 0)?;
        dtype(i, DType::I32)
    };
    let dims = |i: usize| args[i].shape.dims();

    match op {
        Op::Gather => {
            rank(0, 2)?;
            rank(1, 1)?;
            dtype(1, DType::I32)?;
            Ok(TensorType::new(args[0].dtype, Shape(vec![dims(1)[0], dims(0)[1]])))
        }
        Op::MatMul { transpose_b } => {
            rank(0, 2)?;
            rank(1, 2)?;
            float_same(op, args)?;
            let (k_b, n) = if *transpose_b { (dims(1)[1], dims(1)[0]) } else { (dims(1)[0], dims(1)[1]) };
            same_dim(dims(0)[1], k_b, "inner dims differ")?;
            Ok(TensorType::new(args[0].dtype, Shape(vec![dims(0)[0], n])))
        }
        Op::Linear { .. } => {
            let at = op.linear_operands();
            rank(0, 2)?;
            rank(1, 2)?;
            float_same(op, args)?;
            let (m, n) = (dims(0)[0], dims(1)[0]);
            same_dim(dims(0)[1], dims(1)[1], "inner dims differ")?;
            if let Some(u) = at.up {
                rank(u, 2)?;
                same_dim(dims(u)[0], n, "up rows differ from the weight's")?;
                same_dim(dims(u)[1], dims(1)[1], "up columns differ from the weight's")?;
            }
            if let Some(bi) = at.bias {
                rank(bi, 1)?;
                same_dim(dims(bi)[0], n, "bias length differs from the output width")?;
            }
            if let Some(r) = at.residual {
                rank(r, 2)?;
                same_dim(dims(r)[0], m, "residual rows differ")?;
                same_dim(dims(r)[1], n, "residual width differs")?;
            }
            Ok(TensorType::new(args[0].dtype, Shape(vec![m, n])))
        }
        Op::RmsNorm { group, .. } => {
            rank(0, 2)?;
            rank(1, 1)?;
            float_same(op, args)?;
            match group {
                None => same_dim(dims(0)[1], dims(1)[0], "weight length differs from features")?,
                Some(gs) => {
                    let features = dims(0)[1].as_const().ok_or_else(|| err(op, "feature dim must be constant"))?;
                    if *gs == 0 || features % u64::from(*gs) != 0 {
                        return Err(err(op, format!("features {features} are not a multiple of group {gs}")));
                    }
                    same_dim(dims(1)[0], Dim::Const(u64::from(*gs)), "weight length differs from group")?;
                }
            }
            Ok(args[0].clone())
        }
        Op::LayerNorm { .. } => {
            rank(0, 2)?;
            rank(1, 1)?;
            rank(2, 1)?;
            float_same(op, args)?;
            same_dim(dims(0)[1], dims(1)[0], "weight length differs from features")?;
            same_dim(dims(0)[1], dims(2)[0], "bias length differs from features")?;
            Ok(args[0].clone())
        }
        Op::Rope { head_dim, rotary_dim, .. } => {
            rank(0, 2)?;
            rank(1, 2)?;
            rank(2, 2)?;
            scalar_i32(3)?;
            float_same(op, &args[..3])?;
            if *rotary_dim == 0 || rotary_dim % 2 != 0 || rotary_dim > head_dim {
                return Err(err(
                    op,
                    format!("rotary_dim {rotary_dim} must be even, nonzero and <= head_dim {head_dim}"),
                ));
            }
            let features = dims(0)[1].as_const().ok_or_else(|| err(op, "feature dim must be constant"))?;
            if features % u64::from(*head_dim) != 0 {
                return Err(err(op, format!("features {features} are not a multiple of head_dim {head_dim}")));
            }
            let half = Dim::Const(u64::from(*rotary_dim / 2));
            same_dim(dims(1)[1], half, "cos table width must be rotary_dim / 2")?;
            same_dim(dims(2)[1], half, "sin table width must be rotary_dim / 2")?;
            same_dim(dims(1)[0], dims(2)[0], "cos and sin tables differ in length")?;
            Ok(args[0].clone())
        }
        Op::CacheWrite => {
            rank(0, 2)?;
            rank(1, 2)?;
            scalar_i32(2)?;
            let narrow_state = matches!(args[0].dtype, DType::F16 | DType::Q8) && args[1].dtype == DType::F32;
            if (args[0].dtype != args[1].dtype || args[0].dtype == DType::Q8) && !narrow_state {
                return Err(err(op, "rows and state differ in dtype (only an f16 or q8 state takes f32 rows)"));
            }
            same_dim(dims(0)[1], dims(1)[1], "row width differs from state width")?;
            Ok(args[0].clone())
        }
        Op::Attention { heads, kv_heads, head_dim, .. } => {
            rank(0, 2)?;
            rank(1, 2)?;
            rank(2, 2)?;
            scalar_i32(3)?;
            if args[1].dtype != DType::Q8 || args[2].dtype != DType::Q8 {
                float_same(op, &args[1..3])?;
            }
            if !args[0].dtype.is_float() {
                return Err(err(op, format!("needs a float query, got {}", args[0].dtype)));
            }
            if args[1].dtype != args[0].dtype && !matches!(args[1].dtype, DType::F16 | DType::Q8) {
                return Err(err(op, format!("caches must be {}, f16 or q8, got {}", args[0].dtype, args[1].dtype)));
            }
            if *kv_heads == 0 || *heads == 0 || heads % kv_heads != 0 {
                return Err(err(op, format!("heads {heads} must be a nonzero multiple of kv_heads {kv_heads}")));
            }
            let q_width = Dim::Const(u64::from(*heads) * u64::from(*head_dim));
            let kv_width = Dim::Const(u64::from(*kv_heads) * u64::from(*head_dim));
            same_dim(dims(0)[1], q_width, "query width must be heads * head_dim")?;
            same_dim(dims(1)[1], kv_width, "key cache width must be kv_heads * head_dim")?;
            same_dim(dims(2)[1], kv_width, "value cache width must be kv_heads * head_dim")?;
            same_dim(dims(1)[0], dims(2)[0], "key and value caches differ in length")?;
            Ok(args[0].clone())
        }
        Op::Unary(_) | Op::Softmax => {
            float_same(op, args)?;
            if matches!(op, Op::Softmax) && args[0].shape.rank() == 0 {
                return Err(err(op, "needs at least one axis"));
            }
            Ok(args[0].clone())
        }
        Op::Reduce(_) => {
            float_same(op, args)?;
            let mut shape = args[0].shape.clone();
            match shape.0.last_mut() {
                Some(d) => *d = Dim::Const(1),
                None => return Err(err(op, "needs at least one axis")),
            }
            Ok(TensorType::new(args[0].dtype, shape))
        }
        Op::Binary(b) => {
            if args[0].dtype == DType::I32 && *b != BinaryOp::Pow {
                four_byte_same(op, args)?;
            } else {
                float_same(op, args)?;
            }
            let shape = broadcast(&args[0].shape, &args[1].shape)
                .ok_or_else(|| err(op, format!("cannot broadcast {} with {}", show(args[0]), show(args[1]))))?;
            Ok(TensorType::new(if b.is_comparison() { DType::F32 } else { args[0].dtype }, shape))
        }
        Op::Reshape { shape } => {
            if element_count(&args[0].shape) != element_count(shape) {
                let to = TensorType::new(args[0].dtype, shape.clone());
                return Err(err(
                    op,
                    format!("cannot reshape {} to {}: element counts differ", show(args[0]), show(&to)),
                ));
            }
            Ok(TensorType::new(args[0].dtype, shape.clone()))
        }
        Op::Expand { shape } => {
            let to = TensorType::new(args[0].dtype, shape.clone());
            if args[0].shape.rank() > shape.rank() || broadcast(&args[0].shape, shape).as_ref() != Some(shape) {
                return Err(err(op, format!("cannot expand {} to {}", show(args[0]), show(&to))));
            }
            Ok(to)
        }
        Op::Transpose { perm } => {
            let r = args[0].shape.rank();
            let mut seen = vec![false; r];
            for &p in perm {
                match seen.get_mut(p as usize) {
                    Some(s) if !*s => *s = true,
                    _ => return Err(err(op, format!("perm {perm:?} is not a permutation of the {r} axes"))),
                }
            }
            if perm.len() != r {
                return Err(err(op, format!("perm {perm:?} is not a permutation of the {r} axes")));
            }
            let shape = Shape(perm.iter().map(|&p| dims(0)[p as usize]).collect());
            Ok(TensorType::new(args[0].dtype, shape))
        }
        Op::Concat { axis } => {
            let (r, ax) = (args[0].shape.rank(), *axis as usize);
            if ax >= r || args[1].shape.rank() != r || args[0].dtype != args[1].dtype {
                return Err(err(
                    op,
                    format!("cannot concatenate {} and {} along axis {ax}", show(args[0]), show(args[1])),
                ));
            }
            for i in (0..r).filter(|&i| i != ax) {
                same_dim(dims(0)[i], dims(1)[i], &format!("axis {i} differs"))?;
            }
            let joined = match (dims(0)[ax], dims(1)[ax]) {
                (Dim::Const(a), Dim::Const(b)) => Dim::Const(a + b),
                (Dim::Const(0), d) | (d, Dim::Const(0)) => d,
                _ => return Err(err(op, "a symbolic dim plus another dim is not a dim the IR can express")),
            };
            let mut shape = args[0].shape.clone();
            shape.0[ax] = joined;
            Ok(TensorType::new(args[0].dtype, shape))
        }
        Op::Slice { axis, start, len } => {
            let ax = *axis as usize;
            let Some(&d) = dims(0).get(ax) else {
                return Err(err(op, format!("axis {ax} is out of range for {}", show(args[0]))));
            };
            let fits = match (d, *len) {
                (Dim::Const(n), l) => start.checked_add(g.dim_max(l)).is_some_and(|e| e <= n),
                (Dim::Sym(_), l) => *start == 0 && l == d,
            };
            if !fits {
                return Err(err(
                    op,
                    format!(
                        "elements {start}..{start}+{} of axis {ax} are not inside {}",
                        dim_str(g, *len),
                        show(args[0])
                    ),
                ));
            }
            let mut shape = args[0].shape.clone();
            shape.0[ax] = *len;
            Ok(TensorType::new(args[0].dtype, shape))
        }
        Op::BatchMatMul => {
            float_same(op, args)?;
            let (ra, rb) = (args[0].shape.rank(), args[1].shape.rank());
            if ra < 2 || rb < 2 {
                return Err(err(
                    op,
                    format!("operands must have rank >= 2, got {} and {}", show(args[0]), show(args[1])),
                ));
            }
            same_dim(dims(0)[ra - 1], dims(1)[rb - 2], "inner dims differ")?;
            let lead =
                broadcast(&Shape(dims(0)[..ra - 2].to_vec()), &Shape(dims(1)[..rb - 2].to_vec())).ok_or_else(|| {
                    err(op, format!("cannot broadcast the leading dims of {} and {}", show(args[0]), show(args[1])))
                })?;
            let mut shape = lead.0;
            shape.extend([dims(0)[ra - 2], dims(1)[rb - 1]]);
            Ok(TensorType::new(args[0].dtype, Shape(shape)))
        }
        Op::Select => {
            dtype(0, DType::F32)?;
            four_byte_same(op, &args[1..])?;
            let shape =
                broadcast(&args[0].shape, &args[1].shape).and_then(|s| broadcast(&s, &args[2].shape)).ok_or_else(
                    || err(op, format!("cannot broadcast {}, {} and {}", show(args[0]), show(args[1]), show(args[2]))),
                )?;
            Ok(TensorType::new(args[1].dtype, shape))
        }
        Op::Cast { to } => {
            four_byte_same(op, args)?;
            if !matches!(to, DType::F32 | DType::I32) {
                return Err(err(op, format!("casts to f32 or i32 only, not {to}")));
            }
            Ok(TensorType::new(*to, args[0].shape.clone()))
        }
    }
}

/// All operands share one dtype, f32 or i32 (general graphs' run-time dtypes).
fn four_byte_same(op: &Op, args: &[&TensorType]) -> Result<(), IrError> {
    let d = args[0].dtype;
    if !matches!(d, DType::F32 | DType::I32) {
        return Err(err(op, format!("needs f32 or i32 operands, got {d}")));
    }
    if let Some(t) = args.iter().find(|t| t.dtype != d) {
        return Err(err(op, format!("operands differ in dtype: {d} and {}", t.dtype)));
    }
    Ok(())
}

/// A shape's element count as (product of the constant dims, sorted symbols), so counts with
/// symbols compare exactly.
fn element_count(s: &Shape) -> (u128, Vec<u32>) {
    let mut c = 1u128;
    let mut syms = Vec::new();
    for &d in s.dims() {
        match d {
            Dim::Const(n) => c = c.saturating_mul(u128::from(n)),
            Dim::Sym(id) => syms.push(id.0),
        }
    }
    syms.sort_unstable();
    if c == 0 {
        syms.clear();
    }
    (c, syms)
}

/// All operands share one float dtype.
fn float_same(op: &Op, args: &[&TensorType]) -> Result<(), IrError> {
    let d = args[0].dtype;
    if !d.is_float() {
        return Err(err(op, format!("needs float operands, got {d}")));
    }
    if let Some(t) = args.iter().find(|t| t.dtype != d) {
        return Err(err(op, format!("operands differ in dtype: {d} and {}", t.dtype)));
    }
    Ok(())
}

/// Numpy broadcasting: align from the right; equal dims, or one of them is 1.
pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
    let n = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.rank() >= n { a.0[i + a.rank() - n] } else { Dim::Const(1) };
        let db = if i + b.rank() >= n { b.0[i + b.rank() - n] } else { Dim::Const(1) };
        out.push(match (da, db) {
            _ if da == db => da,
            (Dim::Const(1), d) | (d, Dim::Const(1)) => d,
            _ => return None,
        });
    }
    Some(Shape(out))
}

fn dim_str(g: &Graph, d: Dim) -> String {
    match d {
        Dim::Const(n) => n.to_string(),
        Dim::Sym(s) => g.symbols.get(s.0 as usize).map_or(format!("sym#{}", s.0), |s| s.name.clone()),
    }
}
