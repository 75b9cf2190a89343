//! Limits before allocation (issue 9): sizes and counts read from a hostile file are refused
//! with an error naming the limit, before the reader allocates or loops on them. GGUF's own
//! limits are in `gguf.rs` (`hostile_sizes_are_refused_before_allocating`).

use edgec_frontend::checkpoint::parse_header;
use edgec_frontend::onnx::import::MAX_NODES;
use edgec_frontend::onnx::proto::{
    AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
};
use edgec_frontend::onnx::{ImportOptions, OnnxModel, import};
use prost::Message;
use std::path::Path;

fn node(op: &str, domain: &str, input: &[&str], output: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: output.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn opset(domain: &str) -> OperatorSetIdProto {
    OperatorSetIdProto { domain: domain.into(), version: 17 }
}

fn import_err(m: ModelProto) -> String {
    let path = Path::new("/nonexistent/model.onnx");
    let m = OnnxModel::from_bytes(path, m.encode_to_vec().into()).unwrap();
    import(&m, &ImportOptions::default()).err().expect("import must fail").to_string()
}

#[test]
fn onnx_nested_function_calls_cannot_expand_exponentially() {
    // F0 calls F1 sixteen times, F1 calls F2 sixteen times, ... : 16^6 = 16M nodes inlined.
    let levels = 6;
    let functions: Vec<FunctionProto> = (0..levels)
        .map(|l| FunctionProto {
            name: format!("F{l}"),
            domain: "local".into(),
            input: vec!["a".into()],
            output: vec!["b".into()],
            node: if l + 1 == levels {
                vec![node("Relu", "", &["a"], &["b"])]
            } else {
                (0..16)
                    .map(|i| node(&format!("F{}", l + 1), "local", &["a"], &[if i == 15 { "b" } else { "t" }]))
                    .collect()
            },
            opset_import: vec![opset(""), opset("local")],
            ..Default::default()
        })
        .collect();
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![opset(""), opset("local")],
        graph: Some(GraphProto { node: vec![node("F0", "local", &["x"], &["y"])], ..Default::default() }),
        functions,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let e = import_err(m);
    assert!(e.contains(&format!("more than {MAX_NODES} nodes")), "{e}");
    assert!(start.elapsed().as_secs() < 20, "refused only after {:?}", start.elapsed());
}

#[test]
fn onnx_initializer_dims_overflowing_u64_are_an_error() {
    let huge = TensorProto { name: "s".into(), data_type: 7, dims: vec![1 << 31; 3], ..Default::default() };
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![opset("")],
        graph: Some(GraphProto {
            node: vec![node("Reshape", "", &["s", "s"], &["y"])],
            initializer: vec![huge],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = import_err(m);
    assert!(e.contains("too large") || e.contains("negative or too large"), "{e}");
}

fn safetensors(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

#[test]
fn safetensors_hostile_sizes_are_refused() {
    let parse =
        |b: &[u8]| parse_header(b, Path::new("m.safetensors"), "m.safetensors").err().expect("refused").to_string();
    // A header length past the end of the file.
    let mut b = (1u64 << 62).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert!(parse(&b).contains("extends past the end"), "{}", parse(&b));
    // A shape whose element count overflows, and one that disagrees with its byte range.
    let e = parse(&safetensors(r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#, 4));
    assert!(!e.is_empty());
    let e = parse(&safetensors(r#"{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4]}}"#, 4));
    assert!(!e.is_empty());
    // Offsets past the end of the file.
    let e = parse(&safetensors(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 0));
    assert!(e.contains("past the end") || e.contains("data length"), "{e}");
    // Shorter than the length prefix.
    assert!(parse(b"1234").contains("shorter than the 8-byte"));
}

/// A 1-D int64 initializer.
fn int64s(name: &str, v: Vec<i64>) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: 7,
        dims: vec![v.len() as i64],
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>().into(),
        ..Default::default()
    }
}

#[test]
fn onnx_folded_values_are_bounded_before_allocating() {
    // Found by the fuzzer: a folded shape whose element count overflowed `product()`.
    for shape in [vec![1 << 40, 1 << 40], vec![1 << 21]] {
        let m = ModelProto {
            ir_version: 8,
            opset_import: vec![opset("")],
            graph: Some(GraphProto {
                node: vec![node("ConstantOfShape", "", &["s"], &["y"])],
                initializer: vec![int64s("s", shape)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = import_err(m);
        assert!(e.contains("exceeds the folding limit"), "{e}");
    }
}

#[test]
fn onnx_empty_folded_values_with_huge_dims_fold() {
    // Found by the fuzzer: an empty value (a 0 dim) passes the folding limit, then the strides
    // of its huge other dims overflowed when a Transpose folded it, and with the 0 moved last
    // its element count saturated instead of being 0.
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![opset("")],
        graph: Some(GraphProto {
            node: vec![node("ConstantOfShape", "", &["s"], &["z"]), node("Transpose", "", &["z"], &["y"])],
            initializer: vec![int64s("s", vec![0, 1 << 40, 1 << 40])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = Path::new("/nonexistent/model.onnx");
    let m = OnnxModel::from_bytes(path, m.encode_to_vec().into()).unwrap();
    // It folds (no panic); the importer may still refuse a graph with no run-time math.
    let _ = import(&m, &ImportOptions::default());
    let crash = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/onnx/crash-fold-strides-overflow"));
    edgec_frontend::fuzzing::onnx(&crash.unwrap());
}

#[test]
fn onnx_concat_of_empty_values_with_huge_outer_dims_folds_at_once() {
    // Found by the fuzzer (a 10 s timeout): Concat on axis 1 of two [2^40, 0] values has no
    // elements, but copied its "rows" one by one, 2^40 times.
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![opset("")],
        graph: Some(GraphProto {
            node: vec![
                node("ConstantOfShape", "", &["s"], &["z"]),
                NodeProto {
                    attribute: vec![AttributeProto { name: "axis".into(), r#type: 2, i: 1, ..Default::default() }],
                    ..node("Concat", "", &["z", "z"], &["y"])
                },
            ],
            initializer: vec![int64s("s", vec![1 << 40, 0])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = Path::new("/nonexistent/model.onnx");
    let m = OnnxModel::from_bytes(path, m.encode_to_vec().into()).unwrap();
    let _ = import(&m, &ImportOptions::default());
    let crash =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/onnx/timeout-concat-empty-huge-outer"));
    edgec_frontend::fuzzing::onnx(&crash.unwrap());
}

#[test]
fn config_layer_count_is_bounded_before_allocating() {
    // Found by the fuzzer (GGUF `llama.block_count` = 3875536897): per-layer tables were
    // allocated from the count. The same check covers config.json's num_hidden_layers.
    let json: serde_json::Value = serde_json::from_str(
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
        "intermediate_size": 12, "num_attention_heads": 2, "num_hidden_layers": 3875536897,
        "vocab_size": 16, "max_position_embeddings": 32, "rms_norm_eps": 1e-5}"#,
    )
    .unwrap();
    let e = edgec_frontend::DecoderConfig::from_json(Path::new("config.json"), &json).unwrap_err().to_string();
    assert!(e.contains("exceeds the limit of 4096 layers"), "{e}");
    let gguf = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/gguf/oom-layer-count")).unwrap();
    let f = edgec_frontend::GgufFile::parse(Path::new("m.gguf"), &gguf).unwrap();
    let e = f.decoder_config().unwrap_err().to_string();
    assert!(e.contains("layers"), "{e}");
}
