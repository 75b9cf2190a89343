//! Every way a checkpoint can be wrong gives a one-line error naming the file, tensor or field.
#![allow(clippy::type_complexity)]

mod common;
use common::*;
use edgec_frontend::{FrontendError, LoadOptions, load_checkpoint};
use safetensors::Dtype;
use std::path::Path;

fn load_err(dir: &Path) -> String {
    load_err_opts(dir, &OPTS)
}

fn load_err_opts(dir: &Path, opts: &LoadOptions) -> String {
    match load_checkpoint(dir, opts) {
        Ok(_) => panic!("loading {} succeeded", dir.display()),
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(!msg.contains('\n'), "message is not one line: {msg}");
            msg
        }
    }
}

fn with_config(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("llama").join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let mut cfg = read_config("llama");
    edit(cfg.as_object_mut().unwrap());
    write_config(dir.path(), &cfg);
    dir
}

#[test]
fn missing_config_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("llama").join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains(&dir.path().join("config.json").display().to_string()), "{msg}");
    assert!(msg.contains("missing config"), "{msg}");
}

#[test]
fn invalid_json() {
    let dir = with_config(|_| {});
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 64,").unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("config.json") && msg.contains("invalid JSON"), "{msg}");
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    let dir = with_config(|c| {
        c.insert("architectures".into(), serde_json::json!(["GPT2LMHeadModel"]));
    });
    let msg = load_err(dir.path());
    assert!(
        msg.contains("GPT2LMHeadModel") && msg.contains("LlamaForCausalLM") && msg.contains("config.json"),
        "{msg}"
    );
}

#[test]
fn missing_field() {
    for field in ["hidden_size", "architectures", "vocab_size", "num_hidden_layers"] {
        let dir = with_config(|c| {
            c.remove(field);
        });
        let msg = load_err(dir.path());
        assert!(msg.contains(&format!("missing field '{field}'")) && msg.contains("config.json"), "{msg}");
    }
}

#[test]
fn field_of_the_wrong_type() {
    let dir = with_config(|c| {
        c.insert("hidden_size".into(), "sixty-four".into());
    });
    let msg = load_err(dir.path());
    assert!(msg.contains("'hidden_size'"), "{msg}");
    let dir = with_config(|c| {
        c.insert("num_key_value_heads".into(), 3.into());
    });
    let msg = load_err(dir.path());
    assert!(msg.contains("'num_key_value_heads'"), "{msg}");
}

#[test]
fn unsupported_rope_type() {
    let dir = with_config(|c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": 10000.0, "rope_type": "yarn", "factor": 4.0}),
        );
    });
    let msg = load_err(dir.path());
    assert!(msg.contains("rope_parameters.rope_type") && msg.contains("yarn"), "{msg}");
    // The older layout, with `type`.
    let dir = with_config(|c| {
        c.remove("rope_parameters");
        c.insert("rope_theta".into(), 10000.0.into());
        c.insert("rope_scaling".into(), serde_json::json!({"type": "linear", "factor": 2.0}));
    });
    let msg = load_err(dir.path());
    assert!(msg.contains("rope_scaling.type") && msg.contains("linear"), "{msg}");
}

#[test]
fn llama3_rope_without_its_parameters() {
    let dir = with_config(|c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_theta": 10000.0, "rope_type": "llama3", "factor": 8.0}),
        );
    });
    let msg = load_err(dir.path());
    assert!(msg.contains("missing field 'rope_parameters.low_freq_factor'"), "{msg}");
}

#[test]
fn unsupported_activation_and_biases() {
    let dir = with_config(|c| {
        c.insert("hidden_act".into(), "relu".into());
    });
    let msg = load_err(dir.path());
    assert!(msg.contains("hidden_act") && msg.contains("relu"), "{msg}");
    for field in ["attention_bias", "mlp_bias"] {
        let dir = with_config(|c| {
            c.insert(field.into(), true.into());
        });
        let msg = load_err(dir.path());
        assert!(msg.contains(&format!("{field} = true")), "{msg}");
    }
}

#[test]
fn bad_load_options() {
    let dir = fixture("llama");
    for (max_context, max_tokens) in [(64, 0), (0, 0), (16, 17)] {
        let msg = load_err_opts(&dir, &LoadOptions { max_context, max_tokens });
        assert!(msg.contains("max_tokens") || msg.contains("max_context"), "{msg}");
    }
}

#[test]
fn missing_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &read_config("llama"));
    let msg = load_err(dir.path());
    assert!(msg.contains("model.safetensors") && msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn missing_tensor() {
    let dir = edited_copy("llama", |t| t.retain(|t| t.name != "model.layers.1.mlp.up_proj.weight"));
    let msg = load_err(dir.path());
    assert_eq!(msg, "model.safetensors: missing tensor 'model.layers.1.mlp.up_proj.weight'");
    // Untied head without lm_head.weight.
    let dir = edited_copy("llama", |t| t.retain(|t| t.name != "lm_head.weight"));
    assert_eq!(load_err(dir.path()), "model.safetensors: missing tensor 'lm_head.weight'");
}

#[test]
fn misshaped_tensor() {
    let dir = edited_copy("llama", |ts| {
        let t = ts.iter_mut().find(|t| t.name == "model.layers.1.mlp.up_proj.weight").unwrap();
        t.shape = vec![64, 172];
    });
    let msg = load_err(dir.path());
    assert_eq!(
        msg,
        "model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' has shape [64, 172], expected [172, 64]"
    );
}

#[test]
fn unsupported_dtype() {
    for (dtype, bytes) in [(Dtype::I8, 1usize), (Dtype::F64, 8)] {
        let dir = edited_copy("llama", |ts| {
            let t = ts.iter_mut().find(|t| t.name == "model.layers.0.self_attn.k_proj.weight").unwrap();
            let n: usize = t.shape.iter().product();
            t.dtype = dtype;
            t.data = vec![0u8; n * bytes];
        });
        let msg = load_err(dir.path());
        assert!(
            msg.starts_with("model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has unsupported dtype")
                && msg.contains(&format!("{dtype:?}")),
            "{msg}"
        );
    }
}

/// The tensor whose bytes end last in a safetensors file.
fn last_tensor(file: &Path) -> String {
    let bytes = std::fs::read(file).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.tensors().into_iter().max_by_key(|(_, i)| i.data_offsets.1).unwrap().0
}

#[test]
fn truncated_file_names_file_and_tensor() {
    let dir = with_config(|_| {});
    let file = dir.path().join("model.safetensors");
    let last = last_tensor(&file);
    let len = std::fs::metadata(&file).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let msg = load_err(dir.path());
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated") && msg.contains(&format!("'{last}'")),
        "{msg}"
    );
}

#[test]
fn truncation_anywhere_never_panics() {
    let full = std::fs::read(fixture("llama").join("model.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let dir = with_config(|_| {});
    let file = dir.path().join("model.safetensors");
    let mut cuts: Vec<usize> = (0..header_end + 64).step_by(7).collect();
    cuts.extend([header_end, full.len() - 1]);
    for cut in cuts {
        std::fs::write(&file, &full[..cut]).unwrap();
        let msg = load_checkpoint(dir.path(), &OPTS).err().unwrap_or_else(|| panic!("cut at {cut} loaded")).to_string();
        assert!(msg.contains("model.safetensors"), "cut {cut}: {msg}");
    }
    // Garbage header, trailing bytes.
    let mut bad = full.clone();
    bad[8] = b'[';
    std::fs::write(&file, &bad).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("invalid safetensors"), "{msg}");
    let mut long = full;
    long.extend([0u8; 16]);
    std::fs::write(&file, &long).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
}

fn sharded(edit_index: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("llama").join("model.safetensors"), dir.path().join("model-00001-of-00001.safetensors"))
        .unwrap();
    let mut map = serde_json::Map::new();
    for t in read_tensors(&fixture("llama").join("model.safetensors")) {
        map.insert(t.name, "model-00001-of-00001.safetensors".into());
    }
    let mut index = serde_json::json!({"metadata": {}, "weight_map": map});
    edit_index(&mut index);
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    write_config(dir.path(), &read_config("llama"));
    dir
}

#[test]
fn bad_index() {
    // The well-formed one loads.
    load(sharded(|_| {}).path());
    let cases: Vec<(Box<dyn FnOnce(&mut serde_json::Value)>, &str)> = vec![
        (Box::new(|i| drop(i.as_object_mut().unwrap().remove("weight_map"))), "weight_map"),
        (Box::new(|i| i["weight_map"] = serde_json::json!([1, 2])), "weight_map"),
        (
            Box::new(|i| i["weight_map"]["model.norm.weight"] = "model-00009.safetensors".into()),
            "model-00009.safetensors",
        ),
        (Box::new(|i| i["weight_map"]["model.norm.weight"] = "../model.safetensors".into()), "../model.safetensors"),
        (Box::new(|i| i["weight_map"]["model.norm.weight"] = 7.into()), "model.norm.weight"),
        (
            Box::new(|i| i["weight_map"]["not.in.the.shard"] = "model-00001-of-00001.safetensors".into()),
            "not.in.the.shard",
        ),
    ];
    for (edit, needle) in cases {
        let dir = sharded(edit);
        let msg = load_err(dir.path());
        assert!(msg.contains("model.safetensors.index.json") && msg.contains(needle), "{msg}");
    }
    // A tensor missing from the index entirely.
    let dir = sharded(|i| drop(i["weight_map"].as_object_mut().unwrap().remove("model.norm.weight")));
    assert_eq!(load_err(dir.path()), "model.safetensors.index.json: missing tensor 'model.norm.weight'");
    // Not JSON.
    let dir = sharded(|_| {});
    std::fs::write(dir.path().join("model.safetensors.index.json"), "{").unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("model.safetensors.index.json") && msg.contains("invalid JSON"), "{msg}");
}

#[test]
fn errors_are_typed() {
    let dir = edited_copy("llama", |t| t.retain(|t| t.name != "model.norm.weight"));
    assert!(matches!(load_checkpoint(dir.path(), &OPTS), Err(FrontendError::MissingTensor { .. })));
}
