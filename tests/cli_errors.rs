//! Bad input gets one clear line on stderr, a nonzero exit, no panic and no partial output.

mod common;
use common::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Runs `edgec compile MODEL -o OUT` expecting failure; returns the error line.
fn compile_fails(model: &Path, out: &Path) -> String {
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--max-context", "32"]);
    expect_clean_failure(&o, out)
}

fn expect_clean_failure(o: &std::process::Output, out: &Path) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "edgec panicked: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "expected one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    if out.exists() {
        let left: Vec<_> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "partial output left behind: {left:?}");
    }
    stderr
}

/// A copy of the llama fixture whose safetensors file is rewritten by `edit`.
fn edited_checkpoint(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> std::path::PathBuf {
    let src = fixture("llama");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(src.join("config.json"), model.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(name, t)| (name, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &model.join("model.safetensors")).unwrap();
    model
}

#[test]
fn missing_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let err = compile_fails(dir.path(), &dir.path().join("out"));
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let model = edited_checkpoint(dir.path(), |_| {});
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(model.join("config.json"), config.replace("LlamaForCausalLM", "GPT2LMHeadModel")).unwrap();
    let err = compile_fails(&model, &dir.path().join("out"));
    assert!(err.contains("GPT2LMHeadModel") && err.contains("LlamaForCausalLM"), "{err}");
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let name = "model.layers.1.mlp.up_proj.weight";
    let model = edited_checkpoint(dir.path(), |t| t.retain(|x| x.0 != name));
    let err = compile_fails(&model, &dir.path().join("out"));
    assert!(err.contains(name), "{err}");
}

#[test]
fn misshaped_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let name = "model.layers.0.self_attn.k_proj.weight";
    let model = edited_checkpoint(dir.path(), |t| {
        let x = t.iter_mut().find(|x| x.0 == name).unwrap();
        x.2.reverse();
    });
    let err = compile_fails(&model, &dir.path().join("out"));
    assert!(err.contains(name) && err.contains("shape"), "{err}");
}

#[test]
fn unsupported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let name = "model.norm.weight";
    let model = edited_checkpoint(dir.path(), |t| {
        let x = t.iter_mut().find(|x| x.0 == name).unwrap();
        x.1 = Dtype::I32;
    });
    let err = compile_fails(&model, &dir.path().join("out"));
    assert!(err.contains(name) && err.to_lowercase().contains("dtype"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let model = edited_checkpoint(dir.path(), |_| {});
    let path = model.join("model.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 1000).unwrap();
    let err = compile_fails(&model, &dir.path().join("out"));
    assert!(err.contains("model.safetensors") && err.contains("truncated"), "{err}");
}

#[test]
fn token_id_out_of_vocab() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("llama");
    let o = edgec(&["run", model.to_str().unwrap(), "--ids", "1,2,512", "--max-new-tokens", "2"]);
    let err = expect_clean_failure(&o, &dir.path().join("none"));
    assert!(err.contains("512") && err.contains("vocab"), "{err}");
}

#[test]
fn context_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--max-context", "8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = edgec(&["run", out.to_str().unwrap(), "--ids", "1,2,3,4,5", "--max-new-tokens", "8"]);
    let err = expect_clean_failure(&o, &dir.path().join("none"));
    assert!(err.contains("context overflow") && err.contains("8"), "{err}");
}

#[test]
fn unknown_pass_and_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--passes", "dce,nope"]);
    let err = expect_clean_failure(&o, &out);
    assert!(err.contains("unknown pass 'nope'"), "{err}");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--name", "3d-model"]);
    let err = expect_clean_failure(&o, &out);
    assert!(err.contains("not a C identifier"), "{err}");
}

#[test]
fn unknown_or_unavailable_cpu_variants() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let compile = |variants: &str| {
        edgec(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--target",
            "aarch64-unknown-linux-gnu",
            "--cpu-variants",
            variants,
        ])
    };
    let err = expect_clean_failure(&compile("baseline,sve9"), &out);
    assert!(err.contains("unknown CPU variant 'sve9'") && err.contains("baseline, dotprod"), "{err}");
    let err = expect_clean_failure(&compile("baseline,i8mm"), &out);
    assert!(err.contains("'i8mm' is not emitted yet"), "{err}");
    let err = expect_clean_failure(&compile("dotprod"), &out);
    assert!(err.contains("must include 'baseline'"), "{err}");
}

#[test]
fn cpu_variants_choose_the_entry_points() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("llama");
    let object_with = |variants: Option<&str>, sub: &str| {
        let out = dir.path().join(sub);
        let mut args = vec!["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend(["--target", "aarch64-unknown-linux-gnu", "--name", "tiny", "--quant", "q8"]);
        if let Some(v) = variants {
            args.extend(["--cpu-variants", v]);
        }
        let o = edgec(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out.join("tiny.o")).unwrap()
    };
    let has = |obj: &[u8], sym: &str| obj.windows(sym.len()).any(|w| w == sym.as_bytes());
    let all = object_with(None, "all");
    assert!(has(&all, "tiny_forward_dotprod"), "every variant by default");
    let baseline = object_with(Some("baseline"), "baseline");
    assert!(has(&baseline, "tiny_forward") && !has(&baseline, "tiny_forward_dotprod"));
    // x86_64: `baseline` names its first variant (x86-64-v3) too.
    let x86 = |variants: &str, sub: &str| {
        let out = dir.path().join(sub);
        let args = ["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--name", "tiny", "--quant", "q8"];
        let o = edgec(&[&args[..], &["--target", "x86_64-unknown-linux-gnu", "--cpu-variants", variants]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out.join("tiny.o")).unwrap()
    };
    let base = x86("baseline", "x86-baseline");
    assert!(
        has(&base, "tiny_forward") && !has(&base, "tiny_forward_avx512vnni") && !has(&base, "tiny_forward_avxvnni")
    );
    let one = x86("x86-64-v3,avx512vnni", "x86-one");
    assert!(has(&one, "tiny_forward_avx512vnni") && !has(&one, "tiny_forward_avxvnni"));
}

#[test]
fn calibrate_needs_q4s_a_readable_text_and_a_tokenizer() {
    let model = fixture("llama");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = dir.path().join("calibration.txt");
    std::fs::write(&text, "In the beginning").unwrap();
    let compile = |quant: &str, text: &Path| {
        let args = [
            "compile",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--max-context",
            "32",
            "--quant",
            quant,
            "--calibrate",
            text.to_str().unwrap(),
        ];
        expect_clean_failure(&edgec(&args), &out)
    };
    let e = compile("q8", &text);
    assert!(e.contains("--calibrate only applies to --quant q4s (got --quant q8)"), "{e}");
    let e = compile("q4s", &dir.path().join("missing.txt"));
    assert!(e.contains("missing.txt: cannot read it as UTF-8 text"), "{e}");
    let e = compile("q4s", &text);
    assert!(e.contains("calibration.txt") && e.contains("has no tokenizer to read the text with"), "{e}");
}

#[test]
fn unknown_kv_dtype_lists_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--kv-dtype", "q4"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !out.exists(), "{e}");
    assert!(e.contains("'q4' is not a KV cache dtype (f32, f16, q8)"), "{e}");
}

#[test]
fn unknown_activation_type_lists_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--activations", "int4"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !out.exists(), "{e}");
    assert!(e.contains("'int4' is not an activation type (int8, f32)"), "{e}");
}

/// A compiled directory keeps the activations it was compiled with: asking `run` for others
/// is refused, naming the flag.
#[test]
fn activations_apply_only_when_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--quant", "q8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = edgec(&["run", out.to_str().unwrap(), "--ids", "1,2", "--activations", "f32"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("is already compiled") && e.contains("--activations"), "{e}");
}

/// `--kv-dtype q8` stores rows in blocks of 32 values: a fixture whose KV rows (kv_heads ×
/// head_dim) are 16 or 48 wide is refused with one line naming the state, leaving nothing.
#[test]
fn q8_kv_needs_rows_of_whole_blocks() {
    for (name, width) in [("llama3", 16), ("qwen3", 48)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let model = fixture(name);
        let args = ["compile", model.to_str().unwrap(), "-o", out.to_str().unwrap(), "--kv-dtype", "q8"];
        let e = expect_clean_failure(&edgec(&args), &out);
        assert!(
            e.contains("--kv-dtype q8: KV state '")
                && e.contains("whole blocks of 32")
                && e.contains(&format!("rows are {width} wide")),
            "{name}: {e}"
        );
    }
}
