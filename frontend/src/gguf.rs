//! GGUF files (llama.cpp's single-file models): header, metadata, tensor infos, and the
//! mapping of `general.architecture` = `llama`, `qwen2`, `phi2`, `phi3` onto the one decoder
//! builder (metadata onto a config.json, llama.cpp's tensor names onto HuggingFace's).
//!
//! Layout (little-endian; versions 2 and 3, which differ from 1 in using u64 counts):
//!
//! ```text
//! u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//! metadata_kv_count × { string key | u32 value_type | value }
//! tensor_count × { string name | u32 n_dims | n_dims × u64 dim (innermost first) | u32 ggml_type | u64 offset }
//! padding to general.alignment (default 32) | tensor data (offsets relative to here, aligned)
//! string = u64 length + UTF-8 bytes; array = u32 item type + u64 count + items
//! ```
//!
//! The file is memory-mapped and only the header is parsed; tensor data is never read here.
//! Every length, count and dim from the file is checked against what remains of the file and
//! against fixed limits before anything is allocated, so a hostile file gets an error naming
//! the file and the key or tensor at fault, never a panic or a huge allocation.

use crate::LoadOptions;
use crate::config::DecoderConfig;
use crate::decoder::{self, WeightLookup};
use crate::error::FrontendError;
use edgec_ir::{BlockFormat, DType, Graph, Transform, WeightSource};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const MAGIC: [u8; 4] = *b"GGUF";
/// The most dims a ggml tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// The default longest metadata string or key accepted (chat templates run to kilobytes, not
/// more); `--limit gguf-string-bytes` ([`crate::limits::Limit::GgufStringBytes`]) changes it.
pub const MAX_STRING: u64 = crate::limits::Limit::GgufStringBytes.default_value();
/// Arrays nest at most this deep.
pub const MAX_ARRAY_DEPTH: u32 = 4;
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A `general.architecture` edgec builds, and how its metadata maps onto a config.json.
#[derive(Clone, Copy, Debug)]
struct Arch {
    name: &'static str,
    /// The `architectures` entry (the family in `config::FAMILIES`).
    hf: &'static str,
    model_type: &'static str,
    /// GGUF stores no activation: llama.cpp fixes it per architecture.
    hidden_act: &'static str,
    /// `{arch}.` key of the norm epsilon, and the config.json field it becomes.
    eps_key: &'static str,
    eps_field: &'static str,
    /// `rope.dimension_count` below the head size is honoured.
    partial_rotary: bool,
}

const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";

const ARCHITECTURES: &[Arch] = &[
    Arch {
        name: "llama",
        hf: "LlamaForCausalLM",
        model_type: "llama",
        hidden_act: "silu",
        eps_key: RMS_EPS,
        eps_field: "rms_norm_eps",
        partial_rotary: false,
    },
    Arch {
        name: "qwen2",
        hf: "Qwen2ForCausalLM",
        model_type: "qwen2",
        hidden_act: "silu",
        eps_key: RMS_EPS,
        eps_field: "rms_norm_eps",
        partial_rotary: false,
    },
    Arch {
        name: "phi2",
        hf: "PhiForCausalLM",
        model_type: "phi",
        hidden_act: "gelu_new",
        eps_key: "attention.layer_norm_epsilon",
        eps_field: "layer_norm_eps",
        partial_rotary: true,
    },
    Arch {
        name: "phi3",
        hf: "Phi3ForCausalLM",
        model_type: "phi3",
        hidden_act: "silu",
        eps_key: RMS_EPS,
        eps_field: "rms_norm_eps",
        partial_rotary: true,
    },
];

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Items all of one type (checked while reading).
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer value that is non-negative, as u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// Any integer value as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// Any float or integer value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        if let Value::String(s) = self { Some(s) } else { None }
    }
    pub fn as_bool(&self) -> Option<bool> {
        if let Value::Bool(b) = self { Some(*b) } else { None }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        if let Value::Array(a) = self { Some(a) } else { None }
    }
    /// The value for a message: numbers and bools as written, strings quoted (cut at 64
    /// characters), arrays by their length.
    pub fn show(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 64 => {
                format!("{:?}...", s.chars().take(64).collect::<String>())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("{} items", a.len()),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
        }
    }

    /// The GGUF type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }
}

/// A ggml tensor type, by its id in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    /// The name ggml gives the type (`Q4_1`), or `None` for an id it does not define.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        NAMES.get(self.0 as usize).copied()
    }

    /// How edgec reads the type, if it does.
    pub fn storage(self) -> Option<Storage> {
        match self.0 {
            0 => Some(Storage::Plain(DType::F32)),
            1 => Some(Storage::Plain(DType::F16)),
            30 => Some(Storage::Plain(DType::BF16)),
            2 => Some(Storage::Blocks(BlockFormat::Q4_0)),
            3 => Some(Storage::Blocks(BlockFormat::Q4_1)),
            8 => Some(Storage::Blocks(BlockFormat::Q8_0)),
            12 => Some(Storage::Blocks(BlockFormat::Q4K)),
            13 => Some(Storage::Blocks(BlockFormat::Q5K)),
            14 => Some(Storage::Blocks(BlockFormat::Q6K)),
            _ => None,
        }
    }

    pub const SUPPORTED: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K";
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "type id {}", self.0),
        }
    }
}

/// How a supported tensor type's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Plain(DType),
    Blocks(BlockFormat),
}

impl Storage {
    /// Bytes of `elements` elements whose innermost dim is `row`, if whole blocks.
    pub fn bytes(self, elements: u64, row: u64) -> Option<u64> {
        match self {
            Storage::Plain(d) => d.bytes(elements, row),
            Storage::Blocks(f) if row.is_multiple_of(f.block()) => f.bytes_for(elements),
            Storage::Blocks(_) => None,
        }
    }
}

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// As stored: innermost first (ggml's `ne`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape outermost first, as the IR and safetensors write it.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF header.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    pub file_len: u64,
    index: HashMap<String, usize>,
    meta_index: HashMap<String, usize>,
}

/// Reads from the mapped header, checking every length against what remains.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, message: String) -> FrontendError {
        FrontendError::InvalidGguf { path: self.path.to_path_buf(), message }
    }
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], FrontendError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {} needs {n} bytes at offset {}, the file has {} left",
                what(),
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], FrontendError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, FrontendError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, FrontendError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, FrontendError> {
        let len = self.u64(what)?;
        let max = crate::limits::get(crate::limits::Limit::GgufStringBytes);
        if len > max {
            return Err(self.err(format!(
                "{}: string length {len} exceeds the limit of {max} bytes (--limit gguf-string-bytes=N raises it)",
                what()
            )));
        }
        let b = self.bytes(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{}: string is not UTF-8", what())))
    }

    /// The smallest encoding of a value of type `ty`, to bound array counts by the bytes left.
    fn min_size(ty: u32) -> u64 {
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => 8,
            9 => 12,
            _ => 8,
        }
    }

    fn value(&mut self, ty: u32, depth: u32, key: &str) -> Result<Value, FrontendError> {
        let what = || format!("metadata key '{key}'");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(self.u32(&what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("metadata key '{key}': bool byte is {b}, not 0 or 1"))),
            },
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("metadata key '{key}': arrays nest deeper than {MAX_ARRAY_DEPTH}")));
                }
                let item = self.u32(&what)?;
                let count = self.u64(&what)?;
                let fits = count.checked_mul(Self::min_size(item)).is_some_and(|n| n <= self.remaining());
                if !fits {
                    return Err(self.err(format!(
                        "truncated: metadata key '{key}': array of {count} items does not fit in the {} bytes left",
                        self.remaining()
                    )));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item, depth + 1, key)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            t => return Err(self.err(format!("metadata key '{key}': unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Maps `path` and parses its header.
    pub fn open(path: &Path) -> Result<GgufFile, FrontendError> {
        let io = |e: std::io::Error| FrontendError::Io { path: path.to_path_buf(), message: e.to_string() };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len == 0 {
            return Err(FrontendError::InvalidGguf { path: path.to_path_buf(), message: "the file is empty".into() });
        }
        // SAFETY: the map is read-only and dropped before returning; the model file is not
        // expected to change while the compiler reads its header.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        GgufFile::parse(path, &map)
    }

    /// Parses a whole GGUF file's bytes (usually a memory map); `path` names it in messages.
    pub fn parse(path: &Path, buf: &[u8]) -> Result<GgufFile, FrontendError> {
        let mut r = Reader { buf, pos: 0, path };
        let magic: [u8; 4] = r.array(&|| "the magic".to_string())?;
        if magic != MAGIC {
            return Err(r.err(format!("bad magic \"{}\" (expected \"GGUF\"): not a GGUF file", magic.escape_ascii())));
        }
        let version = r.u32(&|| "the version".to_string())?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() <= 3 { " (a big-endian file?)" } else { "" };
            return Err(r.err(format!("unsupported GGUF version {version}{hint}; supported: 2, 3")));
        }
        let tensor_count = r.u64(&|| "the tensor count".to_string())?;
        let kv_count = r.u64(&|| "the metadata count".to_string())?;
        // A key/value takes at least 12 bytes, a tensor info at least 24.
        if kv_count.checked_mul(12).is_none_or(|n| n > r.remaining()) {
            return Err(r.err(format!("truncated: {kv_count} metadata entries cannot fit in the file")));
        }
        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut meta_index = HashMap::new();
        for i in 0..kv_count {
            let key = r.string(&|| format!("metadata key #{i}"))?;
            let ty = r.u32(&|| format!("metadata key '{key}'"))?;
            let value = r.value(ty, 0, &key)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(r.err(format!("metadata key '{key}' appears twice")));
            }
            metadata.push((key, value));
        }
        if tensor_count.checked_mul(24).is_none_or(|n| n > r.remaining()) {
            return Err(r.err(format!("truncated: {tensor_count} tensor infos cannot fit in the file")));
        }
        let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(r.err(format!(
                        "general.alignment = {} ({}) is not a power of two up to 1 MiB",
                        v.show(),
                        v.type_name()
                    )));
                }
            },
        };
        let mut raw = Vec::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let name = r.string(&|| format!("tensor #{i}'s name"))?;
            let what = || format!("tensor '{name}'");
            let n_dims = r.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(r.err(format!("tensor '{name}' has {n_dims} dims, more than ggml's {MAX_DIMS}")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&what)?);
            }
            if dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).is_none() {
                return Err(r.err(format!("tensor '{name}': dims {dims:?} overflow 64 bits")));
            }
            let ty = GgmlType(r.u32(&what)?);
            if ty.name().is_none() {
                return Err(r.err(format!("tensor '{name}' has unknown ggml type id {}", ty.0)));
            }
            let offset = r.u64(&what)?;
            if offset % alignment != 0 {
                return Err(r.err(format!("tensor '{name}': offset {offset} is not a multiple of {alignment}")));
            }
            raw.push(TensorInfo { name, dims, ty, offset });
        }
        let data_offset = (r.pos as u64).next_multiple_of(alignment);
        let file_len = buf.len() as u64;
        let mut index = HashMap::new();
        for (i, t) in raw.iter_mut().enumerate() {
            if index.insert(t.name.clone(), i).is_some() {
                return Err(r.err(format!("tensor '{}' appears twice", t.name)));
            }
            let relative = t.offset;
            let start = t.offset.checked_add(data_offset);
            t.offset = start.unwrap_or(u64::MAX);
            // Types edgec reads get their byte range checked now; the rest when used.
            if let Some(st) = t.ty.storage() {
                let elements = t.dims.iter().product::<u64>();
                let row = t.dims.first().copied().unwrap_or(1);
                let bytes = st.bytes(elements, row).ok_or_else(|| {
                    r.err(format!("tensor '{}': {} rows of {row} elements are not whole blocks", t.name, t.ty))
                })?;
                let end = start.and_then(|s| s.checked_add(bytes));
                if end.is_none_or(|e| e > file_len) {
                    return Err(r.err(format!(
                        "truncated: tensor '{}' ({bytes} bytes at offset {} of the data section, which starts at \
                         byte {data_offset}) lies past the end of the file ({file_len} bytes)",
                        t.name, relative
                    )));
                }
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors: raw,
            alignment,
            data_offset,
            file_len,
            index,
            meta_index,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn missing(&self, key: &str) -> FrontendError {
        FrontendError::MissingField { path: self.path.clone(), field: key.to_string() }
    }
    fn invalid(&self, key: &str, v: &Value, expected: &str) -> FrontendError {
        FrontendError::InvalidField {
            path: self.path.clone(),
            field: key.to_string(),
            message: format!("expected {expected}, got a {} ({})", v.type_name(), v.show()),
        }
    }
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, FrontendError> {
        self.get(key).map(|v| v.as_u64().ok_or_else(|| self.invalid(key, v, "a non-negative integer"))).transpose()
    }
    pub fn u64(&self, key: &str) -> Result<u64, FrontendError> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, FrontendError> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.invalid(key, v, "a number"))).transpose()
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, FrontendError> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.invalid(key, v, "a string"))).transpose()
    }
    pub fn str(&self, key: &str) -> Result<&str, FrontendError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, FrontendError> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.invalid(key, v, "a bool"))).transpose()
    }
    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, FrontendError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.invalid(key, &Value::String("…".into()), "an array of strings"))
    }

    /// The architecture, checked to be one edgec builds.
    pub fn architecture(&self) -> Result<&str, FrontendError> {
        self.arch().map(|(name, _)| name)
    }

    /// The architecture's name and how it maps onto a config.json.
    fn arch(&self) -> Result<(&str, Arch), FrontendError> {
        let arch = self.str("general.architecture")?;
        match ARCHITECTURES.iter().find(|a| a.name == arch) {
            Some(a) => Ok((arch, *a)),
            None => Err(FrontendError::UnsupportedArchitecture {
                path: self.path.clone(),
                found: format!("general.architecture = '{arch}'"),
                supported: ARCHITECTURES.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The model's hyperparameters, mapped from `{arch}.*` metadata onto a config.json and
    /// validated by the same code as a HuggingFace checkpoint's.
    pub fn decoder_config(&self) -> Result<DecoderConfig, FrontendError> {
        let (arch, a) = self.arch()?;
        let k = |s: &str| format!("{arch}.{s}");
        let heads = self.u64(&k("attention.head_count"))?;
        let hidden = self.u64(&k("embedding_length"))?;
        let vocab = match self.opt_u64(&k("vocab_size"))? {
            Some(v) => v,
            None => self.tokens_len()?,
        };
        let mut cfg = serde_json::json!({
            "architectures": [a.hf],
            "model_type": a.model_type,
            "hidden_act": a.hidden_act,
            "hidden_size": hidden,
            "intermediate_size": self.u64(&k("feed_forward_length"))?,
            "num_hidden_layers": self.u64(&k("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": self.opt_u64(&k("attention.head_count_kv"))?.unwrap_or(heads),
            "rope_theta": self.opt_f64(&k("rope.freq_base"))?.unwrap_or(10000.0),
            "vocab_size": vocab,
            "tie_word_embeddings": self.tensor("output.weight").is_none(),
        });
        // llama.cpp requires the epsilon for every architecture but llama (where 1e-5 has long
        // been assumed).
        let eps = match self.opt_f64(&k(a.eps_key))? {
            Some(e) => e,
            None if arch == "llama" => 1e-5,
            None => return Err(self.missing(&k(a.eps_key))),
        };
        cfg[a.eps_field] = eps.into();
        if let Some(n) = self.opt_u64(&k("context_length"))? {
            cfg["max_position_embeddings"] = n.into();
        }
        let head_dim = match self.opt_u64(&k("attention.key_length"))? {
            Some(d) => d,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        cfg["head_dim"] = head_dim.into();
        let rot = self.opt_u64(&k("rope.dimension_count"))?.filter(|&r| r != head_dim);
        if let Some(rot) = rot {
            if !a.partial_rotary || head_dim == 0 {
                return Err(FrontendError::Unsupported {
                    path: self.path.clone(),
                    field: k("rope.dimension_count"),
                    value: rot.to_string(),
                    note: format!("{arch} rotates the whole head of {head_dim}"),
                });
            }
            cfg["partial_rotary_factor"] = (rot as f64 / head_dim as f64).into();
        }
        if let Some(w) = self.opt_u64(&k("attention.sliding_window"))? {
            cfg["sliding_window"] = w.into();
        }
        if let Some(t) = self.opt_str(&k("rope.scaling.type"))?
            && t != "none"
        {
            return Err(FrontendError::Unsupported {
                path: self.path.clone(),
                field: k("rope.scaling.type"),
                value: format!("'{t}'"),
                note: "rope scaling from GGUF metadata is not supported yet".into(),
            });
        }
        if self.tensor("rope_factors_long.weight").is_some() || self.tensor("rope_factors_short.weight").is_some() {
            return Err(FrontendError::Unsupported {
                path: self.path.clone(),
                field: "rope_factors_long.weight".into(),
                value: "present".into(),
                note: "Phi-3 LongRoPE scaling from a GGUF file is not supported yet".into(),
            });
        }
        if self.tensor("rope_freqs.weight").is_some() {
            return Err(FrontendError::Unsupported {
                path: self.path.clone(),
                field: "rope_freqs.weight".into(),
                value: "present".into(),
                note: "Llama 3.1 rope scaling from a GGUF file is not supported yet".into(),
            });
        }
        let mut c = DecoderConfig::from_json(&self.path, &cfg).map_err(|e| gguf_field_names(e, arch, &a))?;
        if let Some(rot) = rot {
            // The stored count, not `head_dim * factor` rounded down.
            if rot > head_dim || rot == 0 || rot % 2 != 0 {
                return Err(FrontendError::InvalidField {
                    path: self.path.clone(),
                    field: k("rope.dimension_count"),
                    message: format!("{rot} rotary features of {head_dim}; need an even number >= 2"),
                });
            }
            c.rotary_dim = rot as u32;
        }
        Ok(c)
    }

    fn tokens_len(&self) -> Result<u64, FrontendError> {
        match self.get("tokenizer.ggml.tokens").and_then(Value::as_array) {
            Some(a) => Ok(a.len() as u64),
            None => Err(self.no_tokenizer("tokenizer.ggml.tokens")),
        }
    }

    fn no_tokenizer(&self, key: &str) -> FrontendError {
        FrontendError::InvalidGguf {
            path: self.path.clone(),
            message: format!("no tokenizer in the metadata (missing '{key}')"),
        }
    }

    /// The tokenizer in the metadata (`tokenizer.ggml.*`).
    pub fn tokenizer(&self) -> Result<GgufTokenizer, FrontendError> {
        let model = self.opt_str("tokenizer.ggml.model")?.ok_or_else(|| self.no_tokenizer("tokenizer.ggml.model"))?;
        if self.get("tokenizer.ggml.tokens").is_none() {
            return Err(self.no_tokenizer("tokenizer.ggml.tokens"));
        }
        let tokens: Vec<String> = self.strings("tokenizer.ggml.tokens")?.into_iter().map(str::to_string).collect();
        let merges: Vec<String> = match self.get("tokenizer.ggml.merges") {
            Some(_) => self.strings("tokenizer.ggml.merges")?.into_iter().map(str::to_string).collect(),
            None => Vec::new(),
        };
        let token_types: Vec<i32> = match self.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_i64().and_then(|i| i32::try_from(i).ok())).collect())
                .ok_or_else(|| self.invalid("tokenizer.ggml.token_type", v, "an array of integers"))?,
        };
        if token_types.len() != tokens.len() {
            return Err(FrontendError::InvalidField {
                path: self.path.clone(),
                field: "tokenizer.ggml.token_type".into(),
                message: format!("{} entries for {} tokens", token_types.len(), tokens.len()),
            });
        }
        let id = |key: &str| -> Result<Option<u32>, FrontendError> {
            match self.opt_u64(key)? {
                None => Ok(None),
                Some(v) if v < tokens.len() as u64 => Ok(Some(v as u32)),
                Some(v) => Err(FrontendError::InvalidField {
                    path: self.path.clone(),
                    field: key.into(),
                    message: format!("token id {v} is out of range ({} tokens)", tokens.len()),
                }),
            }
        };
        Ok(GgufTokenizer {
            model: model.to_string(),
            pre: self.opt_str("tokenizer.ggml.pre")?.map(str::to_string),
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            add_bos: self.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            tokens,
            merges,
            token_types,
        })
    }
}

/// A config error about a config.json field, renamed to the GGUF key it came from
/// (`num_hidden_layers` → `llama.block_count (num_hidden_layers)`).
fn gguf_field_names(e: FrontendError, arch: &str, a: &Arch) -> FrontendError {
    let key = |field: &str| -> Option<String> {
        let k = match field {
            "num_hidden_layers" => "block_count",
            "hidden_size" => "embedding_length",
            "intermediate_size" => "feed_forward_length",
            "num_attention_heads" => "attention.head_count",
            "num_key_value_heads" => "attention.head_count_kv",
            "head_dim" => "attention.key_length",
            "rope_theta" => "rope.freq_base",
            "max_position_embeddings" => "context_length",
            "sliding_window" => "attention.sliding_window",
            "vocab_size" => "vocab_size",
            f if f == a.eps_field => a.eps_key,
            _ => return None,
        };
        Some(format!("{arch}.{k} ({field})"))
    };
    match e {
        FrontendError::InvalidField { path, field, message } => {
            FrontendError::InvalidField { field: key(&field).unwrap_or(field), path, message }
        }
        FrontendError::MissingField { path, field } => {
            FrontendError::MissingField { field: key(&field).unwrap_or(field), path }
        }
        FrontendError::Unsupported { path, field, value, note } => {
            FrontendError::Unsupported { field: key(&field).unwrap_or(field), path, value, note }
        }
        e => e,
    }
}

/// `tokenizer.ggml.*` as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTokenizer {
    /// `gpt2` for byte-level BPE, `llama` for SentencePiece, ...
    pub model: String,
    /// The pre-tokenizer name (`smollm`, `llama-bpe`, `qwen2`, ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// `"left right"` pairs in rank order.
    pub merges: Vec<String>,
    /// llama.cpp's token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
}

/// Where a HuggingFace tensor lives in a GGUF file.
struct Stored {
    name: String,
    /// GGUF's rope row permutation (`Some(heads)`): llama only, as llama.cpp's converter
    /// permutes Q/K for `LlamaModel` alone.
    permute: Option<u32>,
    /// For a part of a fused tensor (Phi-2's `attn_qkv` read as q/k/v): the rows before it and
    /// the stored tensor's rows.
    fused: Option<(u64, u64)>,
}

/// A HuggingFace tensor name → where llama.cpp's converter stores it.
fn gguf_name(hf: &str, cfg: &DecoderConfig, file: &GgufFile) -> Option<Stored> {
    let llama = cfg.family.architecture == "LlamaForCausalLM";
    let (base, kind) = hf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let plain = |name: &str| Some(Stored { name: format!("{name}.{kind}"), permute: None, fused: None });
    match base {
        "model.embed_tokens" => return plain("token_embd"),
        "model.norm" | "model.final_layernorm" => return plain("output_norm"),
        "lm_head" => return plain("output"),
        _ => {}
    }
    let rest = base.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let blk = |name: &str| format!("blk.{layer}.{name}.{kind}");
    let hd = u64::from(cfg.head_dim);
    let (q, kv) = (u64::from(cfg.heads) * hd, u64::from(cfg.kv_heads) * hd);
    let (name, heads, rows_before) = match part {
        "self_attn.q_proj" => ("attn_q", cfg.heads, 0),
        "self_attn.k_proj" => ("attn_k", cfg.kv_heads, q),
        "self_attn.v_proj" => ("attn_v", 0, q + kv),
        "self_attn.qkv_proj" => ("attn_qkv", 0, 0),
        "self_attn.o_proj" | "self_attn.dense" => ("attn_output", 0, 0),
        "mlp.gate_proj" => ("ffn_gate", 0, 0),
        // Phi-3's gate_up_proj is stored whole as ffn_up (gate rows first, as in HF).
        "mlp.up_proj" | "mlp.gate_up_proj" | "mlp.fc1" => ("ffn_up", 0, 0),
        "mlp.down_proj" | "mlp.fc2" => ("ffn_down", 0, 0),
        "input_layernorm" => ("attn_norm", 0, 0),
        "post_attention_layernorm" => ("ffn_norm", 0, 0),
        _ => return None,
    };
    let is_qkv = matches!(name, "attn_q" | "attn_k" | "attn_v");
    // Phi-2 converted from its original checkpoint (`mixer.Wqkv`) has one fused attn_qkv.
    if is_qkv && !llama && file.tensor(&blk(name)).is_none() && file.tensor(&blk("attn_qkv")).is_some() {
        return Some(Stored { name: blk("attn_qkv"), permute: None, fused: Some((rows_before, q + 2 * kv)) });
    }
    let permute = (llama && heads > 0 && kind == "weight").then_some(heads);
    Some(Stored { name: blk(name), permute, fused: None })
}

/// A GGUF file as the decoder builder's weight source.
pub(crate) struct GgufWeights<'a> {
    pub file: &'a GgufFile,
    pub cfg: &'a DecoderConfig,
}

impl WeightLookup for GgufWeights<'_> {
    fn lookup(
        &self,
        name: &str,
        full: &[u64],
        first: u64,
        rows: u64,
    ) -> Result<(WeightSource, Vec<Transform>), FrontendError> {
        let f = self.file;
        let file = f.path.file_name().map_or_else(|| f.path.display().to_string(), |n| n.to_string_lossy().into());
        let stored = gguf_name(name, self.cfg, f)
            .ok_or_else(|| FrontendError::MissingTensor { file: file.clone(), tensor: name.to_string() })?;
        let gname = stored.name;
        let t = f
            .tensor(&gname)
            .ok_or_else(|| FrontendError::MissingTensor { file: file.clone(), tensor: gname.clone() })?;
        let mut expected = full.to_vec();
        let mut first = first;
        if let Some((before, total)) = stored.fused {
            expected[0] = total;
            first += before;
        }
        let shape = t.shape();
        if shape != expected {
            return Err(FrontendError::TensorShape {
                file,
                tensor: gname,
                shape: shape.iter().map(|&d| d as usize).collect(),
                expected,
            });
        }
        let storage = t.ty.storage().ok_or_else(|| FrontendError::UnsupportedTensorType {
            file: file.clone(),
            tensor: gname.clone(),
            ty: t.ty.to_string(),
            supported: GgmlType::SUPPORTED,
        })?;
        // A row range of a row-major tensor is a byte range: whole rows (or whole blocks).
        let row_elems: u64 = expected.iter().skip(1).product();
        let inner = t.dims.first().copied().unwrap_or(1);
        let skip = storage.bytes(first * row_elems, inner).ok_or_else(|| FrontendError::TensorShape {
            file: file.clone(),
            tensor: format!("{gname} (rows {first}..{})", first + rows),
            shape: shape.iter().map(|&d| d as usize).collect(),
            expected: expected.clone(),
        })?;
        let offset = t.offset + skip;
        let source = match storage {
            Storage::Plain(dtype) => WeightSource::File { path: f.path.clone(), offset, dtype },
            Storage::Blocks(format) => WeightSource::Blocks { path: f.path.clone(), offset, format },
        };
        let mut transforms = Vec::new();
        if let Some(heads) = stored.permute {
            // llama.cpp's convert script stored w.reshape(heads, 2, half, cols).swapaxes(1, 2):
            // view the rows as [heads, half, 2] and swap back.
            let (all, cols) = (expected[0], expected[1]);
            let heads = u64::from(heads);
            if heads == 0 || all % (heads * 2) != 0 || first != 0 || rows != all {
                return Err(FrontendError::TensorShape { file, tensor: gname, shape: vec![], expected });
            }
            let half = all / heads / 2;
            transforms.push(Transform::Permute { dims: vec![heads, half, 2, cols], perm: vec![0, 2, 1, 3] });
        }
        Ok((source, transforms))
    }
}

/// Reads a GGUF model and builds its graph with the one decoder builder.
pub fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Graph, FrontendError> {
    opts.validate()?;
    let file = GgufFile::open(path)?;
    let cfg = file.decoder_config()?;
    decoder::build(&cfg, decoder::Weights::Lookup(&GgufWeights { file: &file, cfg: &cfg }), opts)
}

/// True when `path` starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == MAGIC
}
