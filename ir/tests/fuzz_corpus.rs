//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/`) through the fuzz targets'
//! entry functions (`edgec_ir::fuzzing`), so every seed and every past crash stays a test
//! without the fuzzer installed. See fuzz/README.md.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("{}", path.display());
        run(&data);
        n += 1;
    }
    assert!(n > 0, "no inputs in {}", dir.display());
}

#[test]
fn ir_text() {
    replay("ir_text", edgec_ir::fuzzing::ir_text);
}
