//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/`) through the fuzz targets'
//! entry functions (`edgec_frontend::fuzzing`), so every seed and every past crash stays a test
//! without the fuzzer installed. See fuzz/README.md.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8]) -> bool) -> Vec<String> {
    let mut ok = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        if run(&data) {
            ok.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
    ok.sort();
    ok
}

#[test]
fn onnx() {
    // The well-formed seeds must get all the way to a graph, or the fuzzer starts shallow.
    assert_eq!(
        replay("onnx", edgec_frontend::fuzzing::onnx),
        ["function", "matmul_add", "reshape_transpose", "shape_gather_concat", "softmax_layernorm"]
    );
}

#[test]
fn safetensors() {
    // The well-formed seeds must get all the way to a graph, or the fuzzer starts shallow.
    assert_eq!(replay("safetensors", edgec_frontend::fuzzing::safetensors), ["tiny_bf16", "tiny_f32"]);
}

#[test]
fn gguf() {
    // The well-formed seeds must get all the way to a graph, or the fuzzer starts shallow.
    assert_eq!(replay("gguf", edgec_frontend::fuzzing::gguf), ["tiny_llama"]);
}
