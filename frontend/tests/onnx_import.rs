//! ONNX import: the fixtures' torch.onnx (dynamo) exports become IR free of shape arithmetic,
//! the interpreter reproduces PyTorch's logits from them, and bad models get errors naming the
//! node, op and opset.

mod common;
use common::*;
use edgec_frontend::onnx::proto::{
    AttributeProto, AttributeType, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto, ValueInfoProto,
    tensor_shape_proto, type_proto,
};
use edgec_frontend::onnx::{ImportOptions, OnnxModel, import};
use edgec_ir::interp::{Interpreter, Tensor};
use edgec_ir::{Graph, Op, ValueRef};
use prost::Message;

const OPTS: ImportOptions =
    ImportOptions { max_seq: 32, symbols: Vec::new(), constants: Vec::new(), derived: Vec::new() };

fn import_fixture(name: &str) -> Graph {
    let m = OnnxModel::open(&fixture(name).join("model.onnx")).unwrap();
    import(&m, &OPTS).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check_fixture(name: &str) {
    let g = import_fixture(name);
    let text = edgec_ir::text::print(&g);
    // No shape arithmetic survives: everything on shapes and positions was folded. What is
    // left is math on the activations (plus literal tables cut to the run-time length).
    assert_eq!(g.inputs.len(), 1, "{name}: only input_ids");
    assert_no_constant_residue(name, &g);
    let r = reference(name);
    let seq = r.ids.len();
    let mut it = Interpreter::new(&g).unwrap();
    let out = it.run(&[Tensor::i32(vec![1, seq], r.ids.clone())]).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    assert_eq!(out[0].shape, vec![1, seq, r.vocab]);
    let d = max_diff(out[0].as_f32().unwrap(), &r.logits);
    println!("{name}: {} IR nodes; max |logits - PyTorch| = {d:e}", g.nodes.len());
    assert!(d <= 1e-3, "{name}: max diff {d}");
    // Shorter prompts run through the same graph (the sequence is a symbol).
    let short = &r.ids[..5];
    let out = it.run(&[Tensor::i32(vec![1, 5], short.to_vec())]).unwrap();
    let d = max_diff(out[0].as_f32().unwrap(), &r.logits[..5 * r.vocab]);
    assert!(d <= 1e-3, "{name}: 5-token prefix, max diff {d}");
}

/// Every node computes on run-time data, except `slice`s cutting a folded table (the causal
/// mask, rotary cos/sin) to the run-time sequence length.
fn assert_no_constant_residue(name: &str, g: &Graph) {
    let mut constant = vec![false; g.nodes.len()];
    let mut tables = 0;
    for (i, n) in g.nodes.iter().enumerate() {
        constant[i] = n.args.iter().all(|a| match *a {
            ValueRef::Weight(_) => true,
            ValueRef::Node(j) => constant[j as usize],
            _ => false,
        });
        if constant[i] {
            assert!(matches!(n.op, Op::Slice { .. }), "{name}: %{i} = {} computes on constants only", n.op.name());
            tables += 1;
        }
    }
    let mut ops: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
    ops.sort_unstable();
    ops.dedup();
    println!("{name}: ops {}; {tables} slices of folded tables", ops.join(" "));
    // The embedding lookup is the one gather; nothing else reads the ids.
    let gathers: Vec<&edgec_ir::Node> = g.nodes.iter().filter(|n| matches!(n.op, Op::Gather)).collect();
    assert_eq!(gathers.len(), 1, "{name}");
}

#[test]
fn llama_export_imports_and_matches_pytorch() {
    check_fixture("llama");
}

#[test]
fn symbolic_sequence_and_folded_shape_arithmetic() {
    let g = import_fixture("llama");
    assert_eq!(g.symbols.len(), 1);
    assert_eq!((g.symbols[0].name.as_str(), g.symbols[0].max), ("sequence", 32));
    let text = edgec_ir::text::print(&g);
    assert!(text.contains("input input_ids: i32[1, sequence]"), "{text}");
    assert!(text.contains("output logits = "), "{text}");
    // The causal mask is folded at the maxima and cut to the run-time length.
    assert!(text.contains("weight val_215: f32[1, 1, 32, 32] = literal"), "{text}");
    assert!(text.contains("f32[1, 1, sequence, 32] = slice(axis=2, start=0) val_215"), "{text}");
    // The text form round-trips.
    assert_eq!(edgec_ir::text::print(&edgec_ir::text::parse(&text).unwrap()), text);
}

// ---------------------------------------------------------------------------------------------
// Errors, on small models built here.

fn tensor_input(name: &str) -> ValueInfoProto {
    let dims = [1i64, 4]
        .iter()
        .map(|&v| tensor_shape_proto::Dimension { value: Some(tensor_shape_proto::dimension::Value::DimValue(v)) })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(edgec_frontend::onnx::proto::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model_with(nodes: Vec<NodeProto>) -> Result<Graph, String> {
    let m = ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 20 }],
        graph: Some(GraphProto {
            name: "t".into(),
            node: nodes,
            input: vec![tensor_input("x")],
            output: vec![tensor_input("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let om = OnnxModel::open(&path).map_err(|e| e.to_string())?;
    import(&om, &OPTS).map_err(|e| e.to_string())
}

#[test]
fn every_unknown_op_is_listed_at_once_with_its_node() {
    let e = model_with(vec![
        node("a", "Relu", &["x"], &["t1"]),
        node("frob1", "Frobnicate", &["t1"], &["t2"]),
        node("b", "Sigmoid", &["t2"], &["t3"]),
        node("warp", "Warp", &["t3"], &["t4"]),
        node("frob2", "Frobnicate", &["t4"], &["y"]),
    ])
    .unwrap_err();
    assert!(e.contains("3 node(s) use ops edgec does not support at opset 20 (Frobnicate, Warp)"), "{e}");
    assert!(e.contains("node 'frob1' (Frobnicate), node 'warp' (Warp), node 'frob2' (Frobnicate)"), "{e}");
}

#[test]
fn wrong_attribute_type_names_node_op_and_opset() {
    let mut n = node("soft", "Softmax", &["x"], &["y"]);
    n.attribute.push(AttributeProto {
        name: "axis".into(),
        r#type: AttributeType::Float as i32,
        f: 1.0,
        ..Default::default()
    });
    let e = model_with(vec![n]).unwrap_err();
    assert!(e.contains("node 'soft' (Softmax, opset 20): attribute 'axis' must be Int, got Float"), "{e}");
}

#[test]
fn cyclic_graph_names_the_cycle() {
    let e = model_with(vec![
        node("first", "Add", &["x", "t2"], &["t1"]),
        node("second", "Mul", &["t1", "x"], &["t2"]),
        node("last", "Relu", &["t1"], &["y"]),
    ])
    .unwrap_err();
    assert!(e.contains("the graph is cyclic"), "{e}");
    assert!(e.contains("node 'first' (Add, opset 20)") && e.contains("node 'second' (Mul, opset 20)"), "{e}");
    assert!(!e.contains("'last'"), "{e}");
}

#[test]
fn undefined_value_and_bad_opset() {
    let e = model_with(vec![node("n", "Relu", &["nope"], &["y"])]).unwrap_err();
    assert!(e.contains("node 'n' (Relu, opset 20): input 'nope' is not defined"), "{e}");
}

#[test]
fn truncated_file_is_refused() {
    let bytes = std::fs::read(fixture("llama/model.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = OnnxModel::open(&path).err().expect("a truncated model must not open").to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn llama3_export_imports_and_matches_pytorch() {
    check_fixture("llama3");
}

#[test]
fn qwen2_export_imports_and_matches_pytorch() {
    check_fixture("qwen2");
}

#[test]
fn phi_export_imports_and_matches_pytorch() {
    check_fixture("phi");
}

#[test]
fn phi3_export_imports_and_matches_pytorch() {
    check_fixture("phi3");
}

#[test]
fn mistral_export_imports_and_matches_pytorch() {
    check_fixture("mistral");
}

#[test]
fn qwen3_export_imports_and_matches_pytorch() {
    check_fixture("qwen3");
}
