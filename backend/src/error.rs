//! The backend's error type: every message names the node, weight or target at fault.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("unsupported target triple `{triple}`; supported: {supported}")]
    UnsupportedTarget { triple: String, supported: String },
    #[error("target `{triple}`: {message}")]
    BadTarget { triple: String, message: String },
    #[error("graph does not have the decoder signature: {0}")]
    Signature(String),
    /// A node the backend cannot lower: `%12 (matmul): ...`.
    #[error("{node}: {message}")]
    Node { node: String, message: String },
    #[error("weight `{name}`: {message}")]
    Weight { name: String, message: String },
    #[error("memory plan: {0}")]
    Plan(String),
    #[error("invalid compile options: {0}")]
    Options(String),
    #[error("writing the weights file: {0}")]
    Io(String),
    #[error("code generation for {what}: {message}")]
    Codegen { what: String, message: String },
}

impl BackendError {
    pub(crate) fn node(g: &edgec_ir::Graph, i: usize, message: impl Into<String>) -> BackendError {
        BackendError::Node { node: format!("%{i} ({})", g.nodes[i].op.name()), message: message.into() }
    }
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Io(e.to_string())
    }
}
