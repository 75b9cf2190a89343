//! The frontend's errors: one line each, naming the file, tensor or field at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("invalid load options: {0}")]
    Options(String),
    #[error("missing config file {}", path.display())]
    MissingConfig { path: PathBuf },
    #[error("{}: cannot read: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: invalid JSON: {message}", path.display())]
    InvalidJson { path: PathBuf, message: String },
    #[error("{}: unsupported architectures {found}; supported: {supported}", path.display())]
    UnsupportedArchitecture { path: PathBuf, found: String, supported: String },
    #[error("{}: missing field '{field}'", path.display())]
    MissingField { path: PathBuf, field: String },
    #[error("{}: field '{field}': {message}", path.display())]
    InvalidField { path: PathBuf, field: String, message: String },
    #[error("{}: unsupported {field} = {value} ({note})", path.display())]
    Unsupported { path: PathBuf, field: String, value: String, note: String },
    #[error("no model.safetensors or model.safetensors.index.json in {}", dir.display())]
    MissingWeights { dir: PathBuf },
    #[error("{file}: missing tensor '{tensor}'")]
    MissingTensor { file: String, tensor: String },
    #[error("{file}: tensor '{tensor}' has shape {shape:?}, expected {expected:?}")]
    TensorShape { file: String, tensor: String, shape: Vec<usize>, expected: Vec<u64> },
    #[error("{file}: tensor '{tensor}' has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    UnsupportedDtype { file: String, tensor: String, dtype: String },
    #[error("{}: truncated safetensors file: {message}", path.display())]
    Truncated { path: PathBuf, message: String },
    #[error("{}: invalid safetensors file: {message}", path.display())]
    InvalidSafetensors { path: PathBuf, message: String },
    #[error("{}: bad index: {message}", path.display())]
    BadIndex { path: PathBuf, message: String },
    #[error("{file}: tensor '{tensor}' has type {ty}, which edgec does not read (supported: {supported})")]
    UnsupportedTensorType { file: String, tensor: String, ty: String, supported: &'static str },
    #[error("{}: invalid GGUF file: {message}", path.display())]
    InvalidGguf { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Onnx { path: PathBuf, message: String },
    #[error("building the graph: {0}")]
    Graph(#[from] edgec_ir::IrError),
}
