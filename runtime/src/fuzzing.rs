//! Entry points of the fuzz targets (`fuzz/fuzz_targets/`), here so that `cargo test` can
//! replay the committed corpus through exactly the same code (`tests/fuzz_corpus.rs`). Each
//! takes arbitrary bytes and must return, never panic, hang or allocate without bound.

// The fuzz oracle: a failed expectation here is a finding, so it panics on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::abi::{ABI_VERSION, ModelInfo, WEIGHTS_HEADER_SIZE, WeightsHeader};
use crate::tokenizer::{MAGIC, PreTokenizer, StreamDecoder, Token, Tokenizer};
use crate::weights::validate_weights;
use std::path::Path;

/// `NAME.tokenizer` bytes (when `data` starts with its magic) or, otherwise, text and ids for a
/// small fixed byte-level tokenizer: encode, decode and streaming decode.
pub fn tokenizer(data: &[u8]) {
    if data.starts_with(&MAGIC) {
        if let Ok(t) = Tokenizer::from_bytes(data) {
            let _ = t.encode("Hello, world! 123 <|im_end|>\n\n  x");
            let ids: Vec<u32> = (0..t.vocab_size().min(4096) as u32).collect();
            let _ = t.decode(&ids);
            let _ = Tokenizer::from_bytes(&t.to_bytes()).expect("a parsed tokenizer writes back");
        }
        return;
    }
    let Some((&sel, rest)) = data.split_first() else { return };
    let t = fixed_tokenizer(if sel & 1 == 0 { PreTokenizer::Gpt2 } else { PreTokenizer::Smollm });
    if let Ok(ids) = t.encode(&String::from_utf8_lossy(rest)) {
        let text = t.decode(&ids).expect("encoded ids decode");
        // Byte-level BPE round-trips any valid UTF-8.
        if let Ok(s) = std::str::from_utf8(rest) {
            assert_eq!(text, s, "round trip");
        }
    }
    let ids: Vec<u32> = rest.chunks(2).map(|c| u32::from(c[0]) | u32::from(*c.get(1).unwrap_or(&0)) << 8).collect();
    let _ = t.decode(&ids);
    let mut s = StreamDecoder::default();
    for &id in &ids {
        if let Some(b) = t.token_bytes(id) {
            s.push(b);
        }
    }
    s.finish();
}

fn fixed_tokenizer(pre: PreTokenizer) -> Tokenizer {
    let mut tokens: Vec<Token> = (0..=255u8).map(|b| Token { bytes: vec![b], special: false }).collect();
    let b = |c: u8| u32::from(c);
    // 256 "he", 257 "ll", 258 " w", 259 "hell", 260 "hello", 261 "12".
    let merges = vec![
        (b(b'h'), b(b'e'), 256),
        (b(b'l'), b(b'l'), 257),
        (b(b' '), b(b'w'), 258),
        (256, 257, 259),
        (259, b(b'o'), 260),
        (b(b'1'), b(b'2'), 261),
    ];
    for t in ["he", "ll", " w", "hell", "hello", "12"] {
        tokens.push(Token { bytes: t.as_bytes().to_vec(), special: false });
    }
    tokens.push(Token { bytes: b"<|im_end|>".to_vec(), special: true });
    Tokenizer::new(pre, tokens, merges, None, Some(262), false).expect("fixed tokenizer")
}

/// A weights file image against a model whose expected size and hash are read from the image
/// itself when it is long enough (so the fuzzer reaches every check), else fixed.
pub fn weights(data: &[u8]) {
    let mut info = ModelInfo {
        abi_version: ABI_VERSION,
        vocab: 1,
        max_tokens: 1,
        max_context: 1,
        arena_size: 0,
        state_size: 0,
        weights_size: data.len() as u64,
        content_hash: [0; 32],
    };
    if let Some(h) = data.first_chunk::<WEIGHTS_HEADER_SIZE>() {
        let h = WeightsHeader::from_bytes(h);
        if data.len() % 2 == 0 {
            info.content_hash = h.content_hash;
        }
    }
    let _ = validate_weights(data, &info, Path::new("fuzz.weights"));
}
