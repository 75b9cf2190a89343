//! Reading ONNX files: the fixtures' exports decode, initializers resolve to the same bytes as
//! the safetensors checkpoint, and malformed files get clear errors.

use bytes::Bytes;
use edgec_frontend::onnx::proto::{
    DataLocation, DataType, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, type_proto,
};
use edgec_frontend::onnx::{OnnxModel, TensorBytes};
use prost::Message;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    bytes[offset as usize..(offset + len) as usize].to_vec()
}

#[test]
fn the_llama_export_decodes() {
    let m = OnnxModel::open(&fixture("llama/model.onnx")).unwrap();
    // Facts of the export, as the `onnx` Python package reads them (fixtures/README.md says
    // opset 20, input_ids int64 [1, sequence], logits float32 [1, sequence, vocab]).
    assert_eq!(m.opset(""), Some(20));
    assert_eq!(m.opset("ai.onnx"), Some(20));
    let g = m.graph();
    assert_eq!(g.node.len(), 201);
    assert_eq!(g.initializer.len(), 48);
    assert_eq!(g.node.iter().filter(|n| n.op_type == "MatMul").count(), 19);
    let input = &g.input[0];
    assert_eq!(input.name, "input_ids");
    let Some(type_proto::Value::TensorType(t)) = &input.r#type.as_ref().unwrap().value else { panic!() };
    assert_eq!(t.elem_type, DataType::Int64 as i32);
    let dims: Vec<String> = t.shape.as_ref().unwrap().dim.iter().map(|d| format!("{:?}", d.value)).collect();
    assert_eq!(dims, ["Some(DimValue(1))", "Some(DimParam(\"sequence\"))"]);
    assert_eq!(g.output[0].name, "logits");
}

#[test]
fn initializers_are_references_into_the_file_with_the_checkpoint_bytes() {
    let path = fixture("llama/model.onnx");
    let m = OnnxModel::open(&path).unwrap();
    let st_bytes = std::fs::read(fixture("llama/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let mut compared = 0;
    for t in &m.graph().initializer {
        // The dynamo export keeps the embedding and norms as `m.<checkpoint name>`; projection
        // weights appear transposed under generated names (`val_104`), so they are not compared.
        let Some(name) = t.name.strip_prefix("m.") else { continue };
        let Ok(reference) = st.tensor(name) else { continue };
        let TensorBytes::File { path: p, offset, len } = m.tensor_bytes(t).unwrap() else {
            panic!("{}: raw data should be referenced, not copied", t.name)
        };
        assert_eq!(p, path);
        assert_eq!(read_range(&p, offset, len), reference.data(), "{}", t.name);
        compared += 1;
    }
    assert_eq!(compared, 6, "the embedding and the five norms");
}

fn tiny_model(initializer: TensorProto) -> ModelProto {
    ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 21 }],
        graph: Some(GraphProto { name: "g".into(), initializer: vec![initializer], ..Default::default() }),
        ..Default::default()
    }
}

fn write_model(dir: &Path, m: &ModelProto) -> PathBuf {
    let path = dir.join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

fn f32_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims,
        data_type: DataType::Float as i32,
        raw_data: Bytes::from(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()),
        ..Default::default()
    }
}

#[test]
fn typed_fields_become_inline_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let t = TensorProto {
        name: "shape".into(),
        dims: vec![3],
        data_type: DataType::Int64 as i32,
        int64_data: vec![1, -1, 64],
        ..Default::default()
    };
    let m = OnnxModel::open(&write_model(dir.path(), &tiny_model(t))).unwrap();
    let expected: Vec<u8> = [1i64, -1, 64].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(m.tensor_bytes(&m.graph().initializer[0]).unwrap(), TensorBytes::Inline(expected));
}

#[test]
fn external_data_resolves_relative_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u8> = (0..24u8).collect();
    std::fs::write(dir.path().join("weights.bin"), [vec![0xAA; 8], values.clone()].concat()).unwrap();
    let entry = |k: &str, v: &str| StringStringEntryProto { key: k.into(), value: v.into() };
    let t = TensorProto {
        name: "w".into(),
        dims: vec![2, 3],
        data_type: DataType::Float as i32,
        data_location: DataLocation::External as i32,
        external_data: vec![entry("location", "weights.bin"), entry("offset", "8"), entry("length", "24")],
        ..Default::default()
    };
    let m = OnnxModel::open(&write_model(dir.path(), &tiny_model(t))).unwrap();
    let TensorBytes::File { path, offset, len } = m.tensor_bytes(&m.graph().initializer[0]).unwrap() else { panic!() };
    assert_eq!((path.file_name().unwrap().to_str().unwrap(), offset, len), ("weights.bin", 8, 24));
    assert_eq!(read_range(&path, offset, len), values);
}

fn tensor_error(t: TensorProto) -> String {
    let dir = tempfile::tempdir().unwrap();
    let m = OnnxModel::open(&write_model(dir.path(), &tiny_model(t))).unwrap();
    m.tensor_bytes(&m.graph().initializer[0]).unwrap_err().to_string()
}

#[test]
fn an_initializer_whose_data_does_not_match_its_shape() {
    let err = tensor_error(f32_tensor("w", vec![4, 4], &[1.0; 15]));
    assert!(err.contains("tensor 'w'") && err.contains("60 bytes") && err.contains("need 64"), "{err}");
}

#[test]
fn missing_and_escaping_external_data() {
    let entry = |k: &str, v: &str| StringStringEntryProto { key: k.into(), value: v.into() };
    let external = |location: &str| TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: DataType::Float as i32,
        data_location: DataLocation::External as i32,
        external_data: vec![entry("location", location)],
        ..Default::default()
    };
    let err = tensor_error(external("nowhere.bin"));
    assert!(err.contains("tensor 'w'") && err.contains("missing external data file"), "{err}");
    for escaping in ["../secret.bin", "/etc/passwd"] {
        let err = tensor_error(external(escaping));
        assert!(err.contains("must be a relative path inside the model's directory"), "{escaping}: {err}");
    }
}

#[test]
fn a_truncated_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("llama/model.onnx")).unwrap();
    let path = dir.path().join("model.onnx");
    for cut in [1usize, 100, bytes.len() / 2, bytes.len() - 3] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = OnnxModel::open(&path).err().unwrap().to_string();
        assert!(err.contains("model.onnx") && err.contains("not a valid ONNX model"), "cut {cut}: {err}");
    }
}
