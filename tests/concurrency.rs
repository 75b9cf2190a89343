//! Two sessions of one compiled model run at the same time on different threads, sharing one
//! mapping of the weights (`Session::with_shared_weights`) but each with its own arena, KV
//! state and thread pool, and each reproduces PyTorch: logits within 1e-3 and exactly its
//! greedy ids, for every fixture family.
//!
//! The sessions are driven differently on purpose (one prefills the prompt in chunks, the
//! other feeds it token by token), so at any moment their KV caches hold different positions:
//! a shared arena or state, or a kernel keeping data anywhere but its arguments, would show.

mod common;
mod compiled;

use common::*;
use compiled::*;
use edgec_runtime::{Sampler, Session, SessionOptions, Weights};
use std::sync::{Arc, Barrier};

/// Runs the fixture's prompt and 8 greedy ids; returns the prompt's logits and the ids.
fn run(s: &mut Session, prompt: &[u32], stepwise: bool) -> (Vec<f32>, Vec<u32>) {
    s.reset();
    let mut logits = Vec::new();
    let last = if stepwise {
        let mut row = Vec::new();
        for &id in &prompt[..prompt.len() - 1] {
            s.forward(&[id], &mut row).unwrap();
            logits.extend_from_slice(&row);
        }
        &prompt[prompt.len() - 1..]
    } else {
        prompt
    };
    let g = s.generate(last, 8, &mut Sampler::greedy(), |_| true).unwrap();
    logits.extend_from_slice(&g.prompt_logits);
    (logits, g.tokens)
}

fn two_sessions_concurrently(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = compile_fixture(name, dir.path());
    let model = load(&out);
    let weights = Arc::new(Weights::open(&weights_path(&out), model.info).unwrap());
    let opts = SessionOptions { threads: 2, ..Default::default() };
    let sessions = [
        Session::with_shared_weights(model, weights.clone(), opts).unwrap(),
        Session::with_shared_weights(model, weights.clone(), opts).unwrap(),
    ];
    assert!(sessions.iter().all(|s| s.weights().as_ptr() == weights.as_ptr()), "one mapping of the weights");
    let r = reference(name);
    let prompt: Vec<u32> = r.input_ids.iter().map(|&i| i as u32).collect();
    let greedy: Vec<u32> = r.greedy_ids.iter().map(|&i| i as u32).collect();
    let rounds = 3;
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        for (k, mut s) in sessions.into_iter().enumerate() {
            let (prompt, greedy, r, start) = (&prompt, &greedy, &r, &start);
            scope.spawn(move || {
                for round in 0..rounds {
                    start.wait(); // both sessions start each round together
                    let stepwise = (k + round) % 2 == 1;
                    let (logits, ids) = run(&mut s, prompt, stepwise);
                    let what = format!("{name}: session {k}, round {round} (stepwise: {stepwise})");
                    assert_logits_close(&what, &logits, &r.logits);
                    assert_eq!(ids, *greedy, "{what}: greedy ids differ from PyTorch");
                }
            });
        }
    });
    assert_eq!(Arc::strong_count(&weights), 1, "both sessions ended and released the weights");
}

macro_rules! concurrency_tests {
    ($($name:ident => $fixture:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                two_sessions_concurrently($fixture);
            }
        )*
    };
}

concurrency_tests! {
    llama => "llama",
    llama3 => "llama3",
    qwen2 => "qwen2",
    phi2 => "phi",
    phi3 => "phi3",
    mistral => "mistral",
    qwen3 => "qwen3",
}
