//! ONNX models: reading the protobuf and locating tensor data.
//!
//! The file is memory-mapped and decoded without copying tensor bytes: every `raw_data` field
//! stays a slice of the map, so an initializer becomes a reference (file, offset) like a
//! safetensors tensor. External data (`data_location = EXTERNAL`) is resolved relative to the
//! model file and checked to lie inside it. [`import`] turns the graph into edgec IR.

pub mod fold;
pub mod import;
pub mod kv_cache;
pub mod proto;
pub mod versions;

pub use import::{Derived, ImportOptions, import};
pub use kv_cache::KvCacheExport;

use crate::FrontendError;
use bytes::Bytes;
use prost::Message;
use proto::{DataLocation, DataType, ModelProto, TensorProto};
use std::path::{Component, Path, PathBuf};

/// A decoded ONNX model and the memory map its tensor bytes point into.
pub struct OnnxModel {
    pub path: PathBuf,
    pub model: ModelProto,
    map: Bytes,
}

/// Where an initializer's little-endian bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensorBytes {
    /// `len` bytes at `offset` of `path` (the model file or an external data file).
    File { path: PathBuf, offset: u64, len: u64 },
    /// Values that were stored in the typed fields (`float_data`, `int64_data`, ...),
    /// converted to little-endian bytes of the tensor's data type. Small by construction:
    /// exporters use them for scalars and shapes.
    Inline(Vec<u8>),
}

impl OnnxModel {
    /// Maps and decodes `path`.
    pub fn open(path: &Path) -> Result<OnnxModel, FrontendError> {
        let file = std::fs::File::open(path)
            .map_err(|e| FrontendError::Io { path: path.to_path_buf(), message: e.to_string() })?;
        // SAFETY: the map is read-only; like every reader of model files we assume no one
        // truncates the file while it is being compiled.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| FrontendError::Io { path: path.to_path_buf(), message: e.to_string() })?;
        OnnxModel::from_bytes(path, Bytes::from_owner(mmap))
    }

    /// Decodes a whole model file's bytes (usually its memory map); `path` names it in
    /// messages and locates external data (relative to its directory).
    pub fn from_bytes(path: &Path, map: Bytes) -> Result<OnnxModel, FrontendError> {
        let model = ModelProto::decode(map.clone()).map_err(|e| FrontendError::Onnx {
            path: path.to_path_buf(),
            message: format!("not a valid ONNX model (truncated or corrupt protobuf): {}", decode_error(&e)),
        })?;
        if model.graph.is_none() {
            return Err(onnx_error(path, "the model has no graph"));
        }
        Ok(OnnxModel { path: path.to_path_buf(), model, map })
    }

    pub fn graph(&self) -> &proto::GraphProto {
        // `from_bytes` refuses a model without a graph; the empty one is never returned.
        static EMPTY: std::sync::OnceLock<proto::GraphProto> = std::sync::OnceLock::new();
        self.model.graph.as_ref().unwrap_or_else(|| EMPTY.get_or_init(proto::GraphProto::default))
    }

    /// The opset version imported for `domain` ("" or "ai.onnx" for the default set).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let is_default = |d: &str| d.is_empty() || d == "ai.onnx";
        self.model
            .opset_import
            .iter()
            .find(|o| o.domain == domain || (is_default(&o.domain) && is_default(domain)))
            .map(|o| o.version)
    }

    /// Locates a tensor's data and checks its length against its dims and data type.
    pub fn tensor_bytes(&self, t: &TensorProto) -> Result<TensorBytes, FrontendError> {
        let what = || format!("tensor '{}'", t.name);
        let dtype = DataType::try_from(t.data_type)
            .map_err(|_| onnx_error(&self.path, format!("{}: unknown data type {}", what(), t.data_type)))?;
        let elements = element_count(&t.dims).ok_or_else(|| {
            onnx_error(&self.path, format!("{}: dims {:?} are negative or too large", what(), t.dims))
        })?;
        let expected = element_size(dtype)
            .and_then(|size| elements.checked_mul(size))
            .ok_or_else(|| onnx_error(&self.path, format!("{}: unsupported data type {dtype:?}", what())))?;
        let check_len = |len: u64| {
            if len == expected {
                Ok(())
            } else {
                Err(onnx_error(
                    &self.path,
                    format!("{}: has {len} bytes of data, but dims {:?} of {dtype:?} need {expected}", what(), t.dims),
                ))
            }
        };

        if t.data_location == DataLocation::External as i32 {
            let (path, offset, len) = self.external_range(t, expected)?;
            check_len(len)?;
            return Ok(TensorBytes::File { path, offset, len });
        }
        if !t.raw_data.is_empty() || expected == 0 {
            check_len(t.raw_data.len() as u64)?;
            let offset = self.offset_in_map(&t.raw_data);
            return Ok(match offset {
                Some(offset) => TensorBytes::File { path: self.path.clone(), offset, len: expected },
                None => TensorBytes::Inline(t.raw_data.to_vec()),
            });
        }
        let bytes = typed_field_bytes(t, dtype)
            .ok_or_else(|| onnx_error(&self.path, format!("{}: no data for {dtype:?}", what())))?;
        check_len(bytes.len() as u64)?;
        Ok(TensorBytes::Inline(bytes))
    }

    /// The byte offset of `slice` in the model file, if it points into the map.
    fn offset_in_map(&self, slice: &Bytes) -> Option<u64> {
        let base = self.map.as_ptr() as usize;
        let start = slice.as_ptr() as usize;
        (start >= base && start + slice.len() <= base + self.map.len()).then(|| (start - base) as u64)
    }

    /// `location`, `offset` and `length` (default: `expected`) of external data, checked
    /// against the file on disk.
    fn external_range(&self, t: &TensorProto, expected: u64) -> Result<(PathBuf, u64, u64), FrontendError> {
        let what = format!("tensor '{}'", t.name);
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for e in &t.external_data {
            let number = || {
                e.value.parse::<u64>().map_err(|_| {
                    onnx_error(&self.path, format!("{what}: external data {} '{}' is not a number", e.key, e.value))
                })
            };
            match e.key.as_str() {
                "location" => location = Some(e.value.clone()),
                "offset" => offset = number()?,
                "length" => length = Some(number()?),
                _ => {}
            }
        }
        let location =
            location.ok_or_else(|| onnx_error(&self.path, format!("{what}: external data without a location")))?;
        // A model file must not reach outside its directory.
        let relative = Path::new(&location);
        if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(onnx_error(
                &self.path,
                format!(
                    "{what}: external data location '{location}' must be a relative path inside the model's directory"
                ),
            ));
        }
        let path = self.path.parent().unwrap_or(Path::new(".")).join(relative);
        let size = std::fs::metadata(&path)
            .map_err(|e| onnx_error(&self.path, format!("{what}: missing external data file {}: {e}", path.display())))?
            .len();
        let len = length.unwrap_or(expected);
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(onnx_error(
                &self.path,
                format!(
                    "{what}: external data range {offset}+{len} is past the end of {} ({size} bytes)",
                    path.display()
                ),
            ));
        }
        Ok((path, offset, len))
    }
}

/// prost's decode error in one short phrase: what is wrong and the outermost field it was
/// found under. prost prints `failed to decode Protobuf message: ` and then every message and
/// field it was inside, which for deeply nested graphs runs to thousands of characters.
fn decode_error(e: &prost::DecodeError) -> String {
    let text = e.to_string();
    let mut rest = text.strip_prefix("failed to decode Protobuf message: ").unwrap_or(&text);
    // `Message.field: ` entries, innermost first, then the description.
    let mut fields = Vec::new();
    while let Some((field, tail)) = rest.split_once(": ")
        && field.contains('.')
        && !field.contains(' ')
    {
        fields.push(field);
        rest = tail;
    }
    match fields.as_slice() {
        [] => rest.to_string(),
        [outer] => format!("{rest} in {outer}"),
        [.., outer] => format!("{rest} in {outer}, {} fields deep", fields.len()),
    }
}

fn onnx_error(path: &Path, message: impl Into<String>) -> FrontendError {
    FrontendError::Onnx { path: path.to_path_buf(), message: message.into() }
}

fn element_count(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

/// Bytes per element of the data types edgec reads.
pub fn element_size(dtype: DataType) -> Option<u64> {
    Some(match dtype {
        DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
        DataType::Double | DataType::Int64 | DataType::Uint64 => 8,
        DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => return None,
    })
}

/// The typed-field values of a tensor as little-endian bytes of its data type.
fn typed_field_bytes(t: &TensorProto, dtype: DataType) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match dtype {
        DataType::Float => t.float_data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::Double => t.double_data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::Int64 => t.int64_data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::Uint64 | DataType::Uint32 if !t.uint64_data.is_empty() => {
            let size = if dtype == DataType::Uint64 { 8 } else { 4 };
            t.uint64_data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()[..size]))
        }
        DataType::Int32 => t.int32_data.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        // Narrow types are stored one per int32, holding the element's bits.
        DataType::Int16 | DataType::Uint16 | DataType::Float16 | DataType::Bfloat16 => {
            t.int32_data.iter().for_each(|v| out.extend_from_slice(&(*v as u16).to_le_bytes()))
        }
        DataType::Int8 | DataType::Uint8 | DataType::Bool => t.int32_data.iter().for_each(|v| out.push(*v as u8)),
        _ => return None,
    }
    Some(out)
}
