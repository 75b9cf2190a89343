//! Kernels through a compiled model: one decode step (a token at a growing position) and a
//! prefill of 32 tokens, on 1 and 2 threads. The model is `tests/fixtures/llama` (tiny: the
//! figures are dominated by dispatch and small kernels), or any checkpoint directory given in
//! `EDGEC_BENCH_MODEL` (e.g. one written by `edgec synth --config benches/configs/llama-110m.json`).
//! For end-to-end tokens/s next to the machine's bandwidth and FMA peak, use `edgec bench`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgec::{CompileRequest, compile};
use edgec_passes::OptLevel;
use std::path::PathBuf;

const MAX_CONTEXT: u64 = 256;
const PREFILL: usize = 32;

fn model(c: &mut Criterion) {
    let checkpoint = std::env::var_os("EDGEC_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama"));
    let out = tempfile::tempdir().unwrap();
    let compiled = compile(
        &CompileRequest {
            model: checkpoint,
            out_dir: out.path().to_path_buf(),
            target: target_lexicon::Triple::host(),
            name: Some("bench".into()),
            max_context: MAX_CONTEXT,
            max_tokens: Some(PREFILL as u64),
            opt_level: OptLevel::O2,
            passes: None,
            print_after: Vec::new(),
            emit_ir: false,
            numerics: Default::default(),
        },
        &mut std::io::sink(),
    )
    .unwrap();
    let prompt: Vec<u32> = (0..PREFILL as u32).map(|i| (i * 7919 + 13) % compiled.manifest.vocab).collect();
    let mut logits = Vec::new();
    for threads in [1, 2] {
        let mut session = edgec::host::open_session(out.path(), &compiled.manifest, threads, None).unwrap();
        let mut group = c.benchmark_group(format!("{threads}_threads"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("decode_step", |b| {
            b.iter(|| {
                if u64::from(session.position()) + 1 >= MAX_CONTEXT {
                    session.reset();
                }
                session.forward(&[prompt[session.position() as usize % PREFILL]], &mut logits).unwrap();
            })
        });
        group.throughput(Throughput::Elements(PREFILL as u64));
        group.bench_function("prefill_32", |b| {
            b.iter(|| {
                session.reset();
                session.forward(&prompt, &mut logits).unwrap();
            })
        });
        group.finish();
    }
}

criterion_group!(benches, model);
criterion_main!(benches);
