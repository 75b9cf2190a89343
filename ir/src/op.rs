//! The closed set of operations. Attributes are typed fields.
//!
//! Operand conventions are part of the IR contract: the verifier, the interpreter and every
//! backend kernel rely on them. Activations are row-major `[rows, features]` unless stated.
//! The layout ops (`reshape`, `expand`, `transpose`, `concat`, `slice`), `batch_matmul`,
//! `select`, `cast`, the unary/binary ops after `gelu_tanh` and the i32 forms of the binary ops
//! serve general (ONNX) graphs (run-time booleans are f32 0/1 masks: the IR has no bool); the
//! interpreter and the backend run them all (the backend's kernels for run-time shapes are in
//! `backend/src/kernels/general.rs`).

use crate::types::{Dim, Shape};

/// Elementwise function of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Sqrt,
    /// 1 / sqrt(x)
    Rsqrt,
    /// 1 / x
    Recip,
    /// x * sigmoid(x)
    Silu,
    Sigmoid,
    /// The tanh form of GELU (HF `gelu_new`, `gelu_pytorch_tanh`):
    /// `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x³)))`.
    GeluTanh,
    /// The exact (erf) form of GELU (HF `gelu`, ONNX `Gelu` without approximation):
    /// `0.5 * x * (1 + erf(x / sqrt(2)))`.
    Gelu,
    Tanh,
    /// The error function (exact GELU is `0.5 * x * (1 + erf(x / sqrt(2)))`).
    Erf,
    /// Natural logarithm.
    Log,
    Abs,
    /// 1.0 where `x` is NaN, else 0.0 (run-time booleans are f32 0/1: the IR has no bool dtype).
    IsNan,
}

/// Elementwise function of two operands with numpy broadcasting. Both operands have one
/// dtype: a float, or `i32` for all but `pow` (run-time integers: ONNX's i64 narrowed to i32 at
/// the graph boundary). On `i32`, `add`/`sub`/`mul` wrap, `div` truncates toward zero (x / 0
/// is 0, `i32::MIN / -1` wraps) and `max`/`min` compare as integers.
/// The comparisons `eq`, `lt`, `gt` give an f32 0/1 mask (a run-time boolean) for either dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// `a` to the power `b` (`powf`).
    Pow,
    /// 1.0 where `a == b`, else 0.0.
    Eq,
    /// 1.0 where `a < b`, else 0.0.
    Lt,
    /// 1.0 where `a > b`, else 0.0.
    Gt,
}

/// Reduction over the last axis, keeping it with size 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `(table [V, H], ids i32 [S]) -> [S, H]`: rows of an embedding table.
    /// An id outside `0..V` is an error (the entry point checks ids before any kernel runs).
    Gather,
    /// `(a [M, K], b) -> [M, N]` with `b` being `[N, K]` when `transpose_b` (the layout of a
    /// HuggingFace `Linear` weight), else `[K, N]`.
    MatMul {
        transpose_b: bool,
    },
    /// `(x [M, K], w [N, K], up [N, K] if gated, bias [N] if bias, residual [M, N] if residual)
    /// -> [M, N]`: a `transpose_b` matmul with its epilogue fused in,
    /// `act(scale * (x·wᵀ) + bias) * (x·upᵀ) + residual`, each part present only when its
    /// field says so (`act: None` is the identity, `scale: None` is 1). `gated` is the GLU of
    /// Llama-style MLPs (`w` the gate, `up` the up projection). Each step rounds to f32 like the
    /// unfused ops it replaces.
    Linear {
        scale: Option<f32>,
        act: Option<UnaryOp>,
        gated: bool,
        bias: bool,
        residual: bool,
    },
    /// `(x [S, H], weight [G]) -> [S, H]`: `x / sqrt(mean(x²) + eps) * weight`, in f32, where
    /// the mean runs over each contiguous group of `G` features. `group: None` normalizes the
    /// whole row (`G = H`); `group: Some(G)` needs `H % G == 0` and normalizes every group with
    /// the same weight (Qwen3's per-head q/k norm: `G = head_dim`).
    RmsNorm {
        eps: f32,
        group: Option<u32>,
    },
    /// `(x [S, H], weight [H], bias [H]) -> [S, H]`:
    /// `(x - mean(x)) / sqrt(var(x) + eps) * weight + bias`, with the biased (population)
    /// variance over the row, in f32.
    LayerNorm {
        eps: f32,
    },
    /// `(x [S, heads * head_dim], cos [P, rotary_dim / 2], sin [P, rotary_dim / 2], pos i32 [])
    /// -> [S, heads * head_dim]`. Rotary embedding of the first `rotary_dim` features of every
    /// head; row `s` is at absolute position `pos + s` and reads row `pos + s` of the tables.
    /// Features past `rotary_dim` pass through. Feature pair `i` (rotated by table column `i`)
    /// is `(i, i + rotary_dim / 2)` (rotate-half, Llama's) or, `interleaved`, `(2i, 2i + 1)`
    /// (GPT-J's rotate-every-two).
    Rope {
        head_dim: u32,
        rotary_dim: u32,
        interleaved: bool,
    },
    /// `(state [C, W], rows [S, W], pos i32 []) -> [C, W]`: writes `rows` into rows `pos..pos+S`
    /// of a state buffer, in place. Operand 0 must be the state itself; the result is the
    /// updated state and aliases its buffer. Each state is written by at most one node. An f16
    /// state (`--kv-dtype f16`) takes f32 rows, rounded to nearest even; a q8 state
    /// (`--kv-dtype q8`) takes f32 rows, quantized by the `q8_g32` encoder (ggml's Q8_0).
    CacheWrite,
    /// `(q [S, heads * head_dim], k_cache [C, kv_heads * head_dim],
    ///   v_cache [C, kv_heads * head_dim], pos i32 []) -> [S, heads * head_dim]`.
    /// Causal scaled-dot-product attention: query row `s` (position `p = pos + s`) attends to
    /// cache rows `j` with `j <= p` and, with a window `w`, `j > p - w`. Query head `h` reads
    /// KV head `h / (heads / kv_heads)` (grouped-query attention). Scores are `q·k * scale`.
    /// The caches may be f16 or q8 (both alike) under an f32 query; they are read as f32
    /// (widened, or decoded: `d × code`).
    Attention {
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        scale: f32,
        window: Option<u32>,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// Softmax over the last axis.
    Softmax,
    /// Reduction over the last axis; the result keeps that axis with size 1.
    Reduce(ReduceOp),
    /// `(x) -> shape`: the same row-major elements with another shape of the same element count
    /// (any dtype). The text form writes no attribute: `shape` is the node's written type.
    Reshape {
        shape: Shape,
    },
    /// `(x) -> shape`: numpy broadcasting of `x` to `shape` (any dtype; `x`'s dims, aligned
    /// from the right, equal the target's or are 1). The text form takes `shape` from the type.
    Expand {
        shape: Shape,
    },
    /// `(x) -> y` with `y.dims[i] = x.dims[perm[i]]` (any dtype): an axis permutation.
    Transpose {
        perm: Vec<u32>,
    },
    /// `(a, b) -> c`: `b` appended to `a` along `axis`; the other dims are equal (any dtype).
    Concat {
        axis: u32,
    },
    /// `(x) -> y`: elements `start..start + len` of `axis` (any dtype). `len` may be a symbol
    /// (a table built for the symbol's maximum, cut to its run-time value). The text form
    /// writes `slice(axis=A, start=S)` and takes `len` from the type.
    Slice {
        axis: u32,
        start: u64,
        len: Dim,
    },
    /// `(a [B..., M, K], b [B..., K, N]) -> [B..., M, N]`: a matrix product per leading index,
    /// the leading dims broadcast numpy-style (both operands rank >= 2).
    BatchMatMul,
    /// `(cond, a, b) -> cond != 0 ? a : b` elementwise with numpy broadcasting of all three
    /// (`cond` f32, a 0/1 mask like [`UnaryOp::IsNan`]'s; `a` and `b` share a 4-byte dtype,
    /// f32 or i32, which is the result's).
    Select,
    /// `(x) -> y` of dtype `to`, same shape: f32 → i32 truncates toward zero, saturating, NaN
    /// gives 0; i32 → f32 rounds to nearest. Only between f32 and i32 (the run-time dtypes of
    /// general graphs). The text form writes no attribute: `to` is the node's written dtype.
    Cast {
        to: crate::types::DType,
    },
}

/// Where `linear`'s optional operands are ([`Op::linear_operands`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinearOperands {
    pub up: Option<usize>,
    pub bias: Option<usize>,
    pub residual: Option<usize>,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 14] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Silu,
        UnaryOp::Sigmoid,
        UnaryOp::GeluTanh,
        UnaryOp::Gelu,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Log,
        UnaryOp::Abs,
        UnaryOp::IsNan,
    ];
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Silu => "silu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Erf => "erf",
            UnaryOp::Log => "log",
            UnaryOp::Abs => "abs",
            UnaryOp::IsNan => "is_nan",
        }
    }
    pub fn from_name(name: &str) -> Option<UnaryOp> {
        UnaryOp::ALL.into_iter().find(|u| u.name() == name)
    }
    /// The reference definition, used by the interpreter and by backend tests.
    pub fn eval(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Silu => x / (1.0 + (-x).exp()),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::GeluTanh => {
                let x = f64::from(x);
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                (0.5 * x * (1.0 + u.tanh())) as f32
            }
            UnaryOp::Gelu => {
                let x = f64::from(x);
                (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
            }
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Erf => erf(f64::from(x)) as f32,
            UnaryOp::Log => x.ln(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::IsNan => f32::from(u8::from(x.is_nan())),
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 10] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Pow,
        BinaryOp::Eq,
        BinaryOp::Lt,
        BinaryOp::Gt,
    ];
    /// The comparisons, whose result is an f32 0/1 mask whatever the operands' dtype.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Lt | BinaryOp::Gt)
    }
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Pow => "pow",
            BinaryOp::Eq => "eq",
            BinaryOp::Lt => "lt",
            BinaryOp::Gt => "gt",
        }
    }
    /// The reference definition on floats.
    pub fn eval(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Eq => f32::from(u8::from(a == b)),
            BinaryOp::Lt => f32::from(u8::from(a < b)),
            BinaryOp::Gt => f32::from(u8::from(a > b)),
        }
    }
    /// The reference definition on `i32` (comparisons give 0/1, as f32 in the result).
    /// `None` for `pow`, which is float only.
    pub fn eval_i32(self, a: i32, b: i32) -> Option<i32> {
        Some(match self {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div if b == 0 => 0,
            BinaryOp::Div => a.wrapping_div(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Pow => return None,
            BinaryOp::Eq => i32::from(a == b),
            BinaryOp::Lt => i32::from(a < b),
            BinaryOp::Gt => i32::from(a > b),
        })
    }
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max];
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
        }
    }
}

impl Op {
    /// The op's name in the text form, without attributes.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gather => "gather",
            Op::MatMul { .. } => "matmul",
            Op::Linear { .. } => "linear",
            Op::RmsNorm { .. } => "rms_norm",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Rope { .. } => "rope",
            Op::CacheWrite => "cache_write",
            Op::Attention { .. } => "attention",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Softmax => "softmax",
            Op::Reduce(r) => r.name(),
            Op::Reshape { .. } => "reshape",
            Op::Expand { .. } => "expand",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::BatchMatMul => "batch_matmul",
            Op::Select => "select",
            Op::Cast { .. } => "cast",
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Unary(_)
            | Op::Softmax
            | Op::Reduce(_)
            | Op::Reshape { .. }
            | Op::Expand { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Cast { .. } => 1,
            Op::Gather
            | Op::MatMul { .. }
            | Op::RmsNorm { .. }
            | Op::Binary(_)
            | Op::Concat { .. }
            | Op::BatchMatMul => 2,
            Op::CacheWrite | Op::LayerNorm { .. } | Op::Select => 3,
            Op::Rope { .. } | Op::Attention { .. } => 4,
            Op::Linear { gated, bias, residual, .. } => {
                2 + usize::from(*gated) + usize::from(*bias) + usize::from(*residual)
            }
        }
    }

    /// Whether operand `k` may be a stored (quantized, half) weight: the matrices of the
    /// kernels that decode weights in registers.
    pub fn reads_stored_weight(&self, k: usize) -> bool {
        match self {
            Op::MatMul { transpose_b: true } => k == 1,
            Op::Linear { gated, .. } => k == 1 || (*gated && k == 2),
            Op::Gather => k == 0,
            _ => false,
        }
    }

    /// For `linear`, the operand index of its up projection, bias and residual (those present).
    pub fn linear_operands(&self) -> LinearOperands {
        let mut next = 2;
        let mut take = |present: bool| {
            present.then(|| {
                next += 1;
                next - 1
            })
        };
        match *self {
            Op::Linear { gated, bias, residual, .. } => {
                LinearOperands { up: take(gated), bias: take(bias), residual: take(residual) }
            }
            _ => LinearOperands::default(),
        }
    }

    /// True for ops that write persistent state: dead-code elimination keeps them.
    pub fn has_side_effect(&self) -> bool {
        matches!(self, Op::CacheWrite)
    }
}

/// The error function in f64: its Maclaurin series below |x| = 2.5, the continued fraction of
/// erfc above (both far more accurate than an f32 result needs).
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.5 {
        // Maclaurin series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc, evaluated bottom-up (Lentz is not needed at |x| >= 2.5).
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = f64::from(k) / 2.0 / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    };
    r.copysign(x)
}
