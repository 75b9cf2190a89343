//! Safetensors checkpoints: a single `model.safetensors` or shards listed by
//! `model.safetensors.index.json`. Only headers are parsed; weight data is never read.

use crate::error::FrontendError;
use edgec_ir::DType;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where one tensor lives.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// The file holding it.
    pub path: PathBuf,
    /// The file's name, for messages.
    pub file: String,
    /// Absolute byte offset of the first element in the file.
    pub offset: u64,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl TensorEntry {
    /// The IR dtype of the stored elements, if the compiler reads this dtype.
    pub fn ir_dtype(&self) -> Option<DType> {
        match self.dtype {
            Dtype::F32 => Some(DType::F32),
            Dtype::F16 => Some(DType::F16),
            Dtype::BF16 => Some(DType::BF16),
            _ => None,
        }
    }
}

/// The tensors of a checkpoint, by name.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub tensors: HashMap<String, TensorEntry>,
    /// The file that lists the tensors (`model.safetensors` or the index), for messages.
    pub label: String,
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: `model.safetensors` if present, else the sharded index.
    pub fn open(dir: &Path) -> Result<Checkpoint, FrontendError> {
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            let tensors = read_header(&single, SINGLE_FILE)?;
            return Ok(Checkpoint { tensors: tensors.into_iter().collect(), label: SINGLE_FILE.into() });
        }
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Checkpoint::open_index(dir, &index);
        }
        Err(FrontendError::MissingWeights { dir: dir.to_path_buf() })
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Checkpoint, FrontendError> {
        let bad = |message: String| FrontendError::BadIndex { path: index.to_path_buf(), message };
        let text = std::fs::read_to_string(index)
            .map_err(|e| FrontendError::Io { path: index.to_path_buf(), message: e.to_string() })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| FrontendError::InvalidJson { path: index.to_path_buf(), message: e.to_string() })?;
        let map = json
            .get("weight_map")
            .ok_or_else(|| bad("missing field 'weight_map'".into()))?
            .as_object()
            .ok_or_else(|| bad("'weight_map' must be an object of tensor name to file name".into()))?;
        // Group by shard, in a stable order.
        let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tensor, file) in map {
            let file =
                file.as_str().ok_or_else(|| bad(format!("weight_map['{tensor}'] must be a file name string")))?;
            let p = Path::new(file);
            if file.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(bad(format!(
                    "weight_map['{tensor}'] = '{file}' is not a plain file name in the checkpoint directory"
                )));
            }
            shards.entry(file).or_default().push(tensor);
        }
        if shards.is_empty() {
            return Err(bad("'weight_map' is empty".into()));
        }
        let mut tensors = HashMap::new();
        for (file, names) in shards {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(bad(format!("shard '{file}' (holding '{}') does not exist", names[0])));
            }
            let mut header: HashMap<String, TensorEntry> = read_header(&path, file)?.into_iter().collect();
            for name in names {
                let entry = header
                    .remove(name)
                    .ok_or_else(|| bad(format!("weight_map puts '{name}' in '{file}', which does not contain it")))?;
                tensors.insert(name.to_string(), entry);
            }
        }
        Ok(Checkpoint { tensors, label: INDEX_FILE.into() })
    }

    /// A tensor by name, or a missing-tensor error.
    pub fn get(&self, name: &str) -> Result<&TensorEntry, FrontendError> {
        self.tensors
            .get(name)
            .ok_or_else(|| FrontendError::MissingTensor { file: self.label.clone(), tensor: name.to_string() })
    }
}

/// Parses the header of one safetensors file (memory-mapped; only the header is touched) and
/// checks that every tensor's bytes lie inside the file.
pub fn read_header(path: &Path, label: &str) -> Result<Vec<(String, TensorEntry)>, FrontendError> {
    let io = |e: std::io::Error| FrontendError::Io { path: path.to_path_buf(), message: e.to_string() };
    let truncated = |message: String| FrontendError::Truncated { path: path.to_path_buf(), message };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < 8 {
        return Err(truncated(format!("{file_len} bytes, shorter than the 8-byte header length")));
    }
    // SAFETY: the map is read-only and dropped before returning; the checkpoint is not expected
    // to change while the compiler reads its header.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    parse_header(&map, path, label)
}

/// [`read_header`] on a whole file's bytes (usually its memory map); `path` names it in
/// entries and messages.
pub fn parse_header(map: &[u8], path: &Path, label: &str) -> Result<Vec<(String, TensorEntry)>, FrontendError> {
    let truncated = |message: String| FrontendError::Truncated { path: path.to_path_buf(), message };
    let invalid = |message: String| FrontendError::InvalidSafetensors { path: path.to_path_buf(), message };
    let file_len = map.len() as u64;
    let Some(&prefix) = map.first_chunk::<8>() else {
        return Err(truncated(format!("{file_len} bytes, shorter than the 8-byte header length")));
    };
    let header_len = u64::from_le_bytes(prefix);
    let data_start = header_len.checked_add(8).filter(|&e| e <= file_len).ok_or_else(|| {
        truncated(format!("header of {header_len} bytes extends past the end of the file ({file_len} bytes)"))
    })?;
    let meta = match SafeTensors::read_metadata(map) {
        Ok((_, meta)) => meta,
        Err(SafeTensorError::MetadataIncompleteBuffer) => {
            return Err(diagnose_length(map, data_start, file_len).map_or_else(
                || invalid(format!("{file_len} bytes, but the header describes a different data length")),
                truncated,
            ));
        }
        // The crate's messages for bad offsets and shapes do not always name the tensor.
        Err(e) => return Err(invalid(diagnose_header(map, data_start).unwrap_or_else(|| e.to_string()))),
    };
    let mut out = Vec::new();
    let mut names: Vec<(String, &safetensors::tensor::TensorInfo)> = meta.tensors().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, info) in names {
        let (start, end) = info.data_offsets;
        let abs = |x: usize| (x as u64).checked_add(data_start);
        match (abs(start), abs(end)) {
            (Some(s), Some(e)) if s <= e && e <= file_len => {
                out.push((
                    name,
                    TensorEntry {
                        path: path.to_path_buf(),
                        file: label.to_string(),
                        offset: s,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                    },
                ));
            }
            _ => {
                return Err(truncated(format!(
                    "tensor '{name}' (bytes {start}..{end} of the data) lies past the end of the file ({file_len} bytes)"
                )));
            }
        }
    }
    Ok(out)
}

/// When the file's length disagrees with its header: the first tensor (by offset) whose bytes
/// lie past the end, as a message.
fn diagnose_length(map: &[u8], data_start: u64, file_len: u64) -> Option<String> {
    let header = map.get(8..usize::try_from(data_start).ok()?)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut worst: Option<(u64, u64, String)> = None;
    for (name, info) in json.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let offs = info.get("data_offsets")?.as_array()?;
        let (s, e) = (offs.first()?.as_u64()?, offs.get(1)?.as_u64()?);
        let end = e.saturating_add(data_start);
        if end > file_len && worst.as_ref().is_none_or(|w| s < w.0) {
            worst = Some((s, e, name.clone()));
        }
    }
    let (s, e, name) = worst?;
    Some(format!("tensor '{name}' (bytes {s}..{e} of the data) lies past the end of the file ({file_len} bytes)"))
}

/// When the header's entries are inconsistent: the first tensor (by offset) whose byte range is
/// reversed, past the end of the data, not where the previous one ends, or not the size its
/// shape and dtype need, as a message.
fn diagnose_header(map: &[u8], data_start: u64) -> Option<String> {
    let header = map.get(8..usize::try_from(data_start).ok()?)?;
    let data_len = map.len() as u64 - data_start;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut entries = Vec::new();
    for (name, info) in json.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let offs = info.get("data_offsets")?.as_array()?;
        let (start, end) = match offs.as_slice() {
            [s, e] => (s.as_u64()?, e.as_u64()?),
            _ => return Some(format!("tensor '{name}': data_offsets must be [start, end]")),
        };
        let shape: Vec<u64> = info.get("shape")?.as_array()?.iter().map(|d| d.as_u64()).collect::<Option<_>>()?;
        let dtype = info.get("dtype")?.as_str()?;
        entries.push((start, end, name, shape, dtype));
    }
    entries.sort_by_key(|e| (e.0, e.1));
    let mut previous_end = 0u64;
    for (start, end, name, shape, dtype) in entries {
        if start > end {
            return Some(format!("tensor '{name}': data_offsets [{start}, {end}] end before they start"));
        }
        if end > data_len {
            return Some(format!(
                "tensor '{name}': bytes {start}..{end} lie past the end of the data section ({data_len} bytes)"
            ));
        }
        let Some(elements) = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
            return Some(format!("tensor '{name}': shape {shape:?} has more elements than 64 bits can count"));
        };
        let size = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
            _ => 0,
        };
        match elements.checked_mul(size) {
            None => {
                return Some(format!("tensor '{name}': shape {shape:?} of {dtype} needs more than 2^64 bytes"));
            }
            Some(bytes) if size > 0 && bytes != end - start => {
                return Some(format!(
                    "tensor '{name}': shape {shape:?} of {dtype} needs {bytes} bytes, but data_offsets [{start}, {end}] hold {}",
                    end - start
                ));
            }
            _ => {}
        }
        if start != previous_end {
            return Some(format!(
                "tensor '{name}' starts at byte {start} of the data, but the tensors before it end at {previous_end} (the data must be contiguous)"
            ));
        }
        previous_end = end;
    }
    None
}
