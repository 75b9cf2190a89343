//! Element types, dimensions and tensor types.

use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    I64,
    /// A KV state quantized by blocks (`--kv-dtype q8`): each row is [`Q8_BLOCK`]-value blocks
    /// of an f16 scale `d` and 32 int8 codes (ggml's Q8_0, `ir::quant`'s `q8_g32` layout), read
    /// as the f32 values `d × code`. Only states written by `cache_write` (and those writes'
    /// results) have it; it has no per-element size: [`DType::bytes`] gives a tensor's.
    Q8,
}

/// Values per block of a [`DType::Q8`] row.
pub const Q8_BLOCK: u64 = 32;
/// Bytes per block of a [`DType::Q8`] row: the f16 scale and the codes.
pub const Q8_BLOCK_BYTES: u64 = 2 + Q8_BLOCK;

impl DType {
    pub const ALL: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::Q8];

    /// Bytes per element, or `None` for a block dtype ([`DType::Q8`]).
    pub fn size(self) -> Option<u64> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::F16 | DType::BF16 => Some(2),
            DType::I64 => Some(8),
            DType::Q8 => None,
        }
    }

    /// Bytes of `elements` values in rows of `row` (the last dim), with overflow checked: the
    /// one place a tensor's (and so a state's) byte size is computed. `None` on overflow, or
    /// for a [`DType::Q8`] whose rows are not whole blocks ([`DType::check_row`] says why).
    pub fn bytes(self, elements: u64, row: u64) -> Option<u64> {
        match self.size() {
            Some(s) => elements.checked_mul(s),
            None => {
                self.check_row(row).ok()?;
                (elements / Q8_BLOCK).checked_mul(Q8_BLOCK_BYTES)
            }
        }
    }

    /// Why rows of `row` values cannot have this dtype, if they cannot (a [`DType::Q8`] row
    /// must be whole blocks of 32).
    pub fn check_row(self, row: u64) -> Result<(), String> {
        if self == DType::Q8 && !row.is_multiple_of(Q8_BLOCK) {
            return Err(format!("q8 rows must be whole blocks of {Q8_BLOCK} values, but rows are {row} wide"));
        }
        Ok(())
    }

    /// The name used by the text form (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Q8 => "q8",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// f32, f16 or bf16 (not [`DType::Q8`], which only `cache_write` and `attention` take).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Index into [`crate::Graph::symbols`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

/// A named dimension whose value is chosen at run time, up to `max`.
/// The bound keeps the memory plan static while, say, the prefill length varies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub max: u64,
}

/// One dimension of a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Const(u64),
    Sym(SymbolId),
}

impl Dim {
    pub fn as_const(self) -> Option<u64> {
        match self {
            Dim::Const(n) => Some(n),
            Dim::Sym(_) => None,
        }
    }
}

/// The dims of a tensor, outermost first. An empty shape is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn of(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Const(d)).collect())
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }
    pub fn last(&self) -> Option<Dim> {
        self.0.last().copied()
    }
}

/// Dtype and shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }
}
