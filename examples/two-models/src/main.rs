//! Runs two models linked into this binary and checks each against PyTorch's greedy ids in its
//! fixture's reference.safetensors. Prints one line per model; exits 1 on a mismatch.

use edgec_runtime::{Sampler, SessionOptions};
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/edgec_llama.rs"));
include!(concat!(env!("OUT_DIR"), "/edgec_qwen3.rs"));

/// `input_ids` and `greedy_ids` of a fixture's reference.
fn reference(fixture: &str) -> (Vec<u32>, Vec<u32>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(fixture).join("reference.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("reference.safetensors parses");
    let ids = |name: &str| -> Vec<u32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    };
    (ids("input_ids"), ids("greedy_ids"))
}

fn check(fixture: &str, mut session: edgec_runtime::Session) -> bool {
    let (prompt, want) = reference(fixture);
    let g = session.generate(&prompt, want.len(), &mut Sampler::greedy(), |_| true).expect("generate");
    let ok = g.tokens == want;
    let embedded = if session.weights().is_static() { "embedded weights" } else { "weights file" };
    println!("{fixture}: {} ({embedded}) greedy {:?}", if ok { "ok" } else { "MISMATCH" }, g.tokens);
    if !ok {
        println!("{fixture}: expected {want:?}");
    }
    ok
}

fn main() {
    let opts = SessionOptions { threads: 2, ..Default::default() };
    let a = check("llama", llama::session(opts).expect("llama session"));
    let b = check("qwen3", qwen3::session(opts).expect("qwen3 session"));
    std::process::exit(if a && b { 0 } else { 1 });
}
