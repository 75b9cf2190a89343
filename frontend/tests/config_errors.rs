//! A config the builder cannot honour exactly is refused with one line naming the field and
//! value, never built into a silently different model.

mod common;
use common::*;
use edgec_frontend::load_checkpoint;
use edgec_ir::Op;
use serde_json::{Map, Value, json};

/// Fixture `name` with its config.json passed through `edit`.
fn edited(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(name).join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let mut cfg = read_config(name);
    edit(cfg.as_object_mut().unwrap());
    write_config(dir.path(), &cfg);
    dir
}

fn error(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
    let dir = edited(name, edit);
    let msg = match load_checkpoint(dir.path(), &OPTS) {
        Ok(_) => panic!("{name}: the edited config loaded"),
        Err(e) => e.to_string(),
    };
    println!("{msg}");
    assert!(!msg.contains('\n') && msg.contains("config.json"), "{msg}");
    msg
}

fn windows(name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<Option<u32>> {
    let dir = edited(name, edit);
    let g = load(dir.path());
    g.nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Attention { window, .. } => Some(window),
            _ => None,
        })
        .collect()
}

#[test]
fn unknown_rope_scaling_type() {
    let msg = error("qwen2", |c| {
        c.insert("rope_parameters".into(), json!({"rope_theta": 1e6, "rope_type": "yarn", "factor": 4.0}));
    });
    assert!(msg.contains("rope_parameters.rope_type") && msg.contains("yarn"), "{msg}");
    // Phi-3's long-context scaling.
    let msg = error("phi3", |c| {
        c.insert("rope_parameters".into(), json!({"rope_theta": 1e4, "rope_type": "longrope"}));
    });
    assert!(msg.contains("rope_parameters.rope_type") && msg.contains("longrope"), "{msg}");
}

#[test]
fn qwen_sliding_window_on_some_layers_only() {
    // transformers: layers >= max_window_layers slide when use_sliding_window is set.
    let msg = error("qwen2", |c| {
        c.remove("layer_types");
        c.insert("use_sliding_window".into(), true.into());
        c.insert("sliding_window".into(), 4.into());
        c.insert("max_window_layers".into(), 1.into());
    });
    assert!(msg.contains("max_window_layers = 1") && msg.contains("mixed"), "{msg}");
}

#[test]
fn layer_types_with_mixed_kinds() {
    let msg = error("mistral", |c| {
        c.insert("layer_types".into(), json!(["sliding_attention", "full_attention"]));
    });
    assert!(msg.contains("layer_types") && msg.contains("1 of 2 layers sliding"), "{msg}");
}

#[test]
fn layer_types_with_an_unknown_kind() {
    let msg = error("qwen3", |c| {
        c.insert("layer_types".into(), json!(["chunked_attention", "full_attention"]));
    });
    assert!(msg.contains("layer_types") && msg.contains("chunked_attention"), "{msg}");
}

#[test]
fn sliding_layers_without_a_window() {
    let msg = error("qwen2", |c| {
        c.insert("layer_types".into(), json!(["sliding_attention", "sliding_attention"]));
    });
    assert!(msg.contains("'sliding_window'") && msg.contains("null"), "{msg}");
}

#[test]
fn activation_we_lack() {
    for (name, act) in [("phi", "quick_gelu"), ("qwen2", "relu"), ("phi3", "gelu_fast")] {
        let msg = error(name, |c| {
            c.insert("hidden_act".into(), act.into());
        });
        assert!(msg.contains(&format!("hidden_act = {act}")), "{msg}");
    }
}

#[test]
fn partial_rotary_where_the_family_rotates_whole_heads() {
    let msg = error("mistral", |c| {
        c["rope_parameters"]["partial_rotary_factor"] = json!(0.5);
    });
    assert!(msg.contains("rope_parameters.partial_rotary_factor = 0.5"), "{msg}");
    // A factor that leaves an odd number of rotary features (16 * 0.3 = 4.8 -> 4 is fine;
    // 16 * 0.1 = 1.6 -> 1 is not).
    let msg = error("phi", |c| {
        c["rope_parameters"]["partial_rotary_factor"] = json!(0.1);
    });
    assert!(msg.contains("partial_rotary_factor") && msg.contains("0.1"), "{msg}");
}

#[test]
fn phi_qk_layernorm_and_extra_biases() {
    let msg = error("phi", |c| {
        c.insert("qk_layernorm".into(), true.into());
    });
    assert!(msg.contains("qk_layernorm = true"), "{msg}");
    let msg = error("qwen3", |c| {
        c.insert("attention_bias".into(), true.into());
    });
    assert!(msg.contains("attention_bias = true"), "{msg}");
}

/// What the rules accept: a Qwen window on no layer, a window no shorter than the context.
#[test]
fn windows_that_change_nothing_are_dropped() {
    let w = windows("qwen2", |c| {
        c.remove("layer_types");
        c.insert("use_sliding_window".into(), true.into());
        c.insert("sliding_window".into(), 4.into());
        c.insert("max_window_layers".into(), 2.into());
    });
    assert_eq!(w, [None, None]);
    // OPTS.max_context is 64.
    assert_eq!(
        windows("mistral", |c| {
            c.insert("sliding_window".into(), 64.into());
        }),
        [None, None]
    );
    assert_eq!(
        windows("mistral", |c| {
            c.insert("sliding_window".into(), 63.into());
        }),
        [Some(63), Some(63)]
    );
    assert_eq!(windows("mistral", |_| {}), [Some(8), Some(8)]);
}
