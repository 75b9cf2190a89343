//! The text form. (Being written.)
use crate::{Graph, TensorType, Dim};

pub fn type_to_string(g: &Graph, t: &TensorType) -> String {
    let dims: Vec<String> = t.shape.0.iter().map(|d| match d {
        Dim::Const(n) => n.to_string(),
        Dim::Sym(s) => g.symbols[s.0 as usize].name.clone(),
    }).collect();
    format!("{}[{}]", t.dtype, dims.join(", "))
}
