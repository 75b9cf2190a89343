//! Entry point of the IR text fuzz target (`fuzz/fuzz_targets/ir_text.rs`), here so that
//! `cargo test` replays the committed corpus through the same code (`tests/fuzz_corpus.rs`).

/// Parses arbitrary bytes as IR text; a graph that parses is verified, and one that verifies
/// prints and parses back to the same text.
pub fn ir_text(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(g) = crate::text::parse(s) else { return };
    if crate::verify::verify(&g).is_ok() {
        let printed = crate::text::print(&g);
        let again = crate::text::parse(&printed).expect("printed text parses");
        assert_eq!(crate::text::print(&again), printed, "print/parse round trip");
    }
}
