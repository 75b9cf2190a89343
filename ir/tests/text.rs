//! Tests of the IR text form.
//!
//! Golden files: every `tests/text/*.ir` is a leading block of `;` comment lines and blank
//! lines (prose explaining what the file shows), followed by one graph exactly as `print` writes
//! it. The test parses the whole file (the parser skips comments), prints the graph and
//! compares the printout with the file after its leading comment block. Comments inside the
//! graph would therefore show up as a difference: keep prose in the header. With
//! `EDGEC_BLESS=1` the test rewrites each file as its header plus the printout instead of
//! failing.

use edgec_ir::text::{ParseError, parse, print};
use edgec_ir::verify::verify;
use edgec_ir::*;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("text")
}

/// Splits a golden file into its leading comment block and the graph text.
fn split_header(text: &str) -> (&str, &str) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.is_empty() || t.starts_with(';') {
            offset += line.len();
        } else {
            break;
        }
    }
    text.split_at(offset)
}

#[test]
fn golden_files_round_trip() {
    let bless = std::env::var("EDGEC_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/text exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the golden files under tests/text, found {files:?}");
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (header, body) = split_header(&text);
        assert!(header.starts_with(';'), "{}: golden files start with a comment saying what they show", path.display());
        let g = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        verify(&g).unwrap_or_else(|e| panic!("{}: golden graph does not verify: {e}", path.display()));
        let printed = print(&g);
        // The graph parsed back from the printout is the same graph.
        assert_eq!(parse(&printed).unwrap(), g, "{}: parse(print(g)) != g", path.display());
        if printed != body {
            if bless {
                std::fs::write(path, format!("{header}{printed}")).unwrap();
            } else {
                let header_lines = header.lines().count();
                let first_diff = printed.lines().zip(body.lines()).position(|(a, b)| a != b);
                let at = first_diff.map_or("the end".to_string(), |i| format!("line {}", header_lines + i + 1));
                failures.push(format!(
                    "{}: printout differs from the file at {at}\n\
                     --- file\n{body}--- printed\n{printed}",
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}\nrun with EDGEC_BLESS=1 to accept the printouts", failures.join("\n"));
}

/// Every op and weight source kind appears in some golden file.
#[test]
fn golden_files_cover_every_op_and_source() {
    let mut all = String::new();
    for e in std::fs::read_dir(golden_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "ir") {
            all.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    let mut names: Vec<&str> = vec![
        "gather",
        "matmul",
        "matmul(transpose_b)",
        "rms_norm",
        "rope",
        "cache_write",
        "attention",
        "softmax",
        "cast",
        "linear",
    ];
    names.extend(UnaryOp::ALL.map(|o| o.name()));
    names.extend(BinaryOp::ALL.map(|o| o.name()));
    names.extend(ReduceOp::ALL.map(|o| o.name()));
    for n in names {
        assert!(all.contains(&format!("= {n} ")) || all.contains(&format!("= {n}(")), "no golden file uses op '{n}'");
    }
    for s in [
        "then rows ",
        "= file \"",
        "= rope cos",
        "= rope sin",
        "llama3(",
        "= literal [",
        "window=",
        "sym ",
        ": f32[] =",
    ] {
        assert!(all.contains(s), "no golden file shows '{s}'");
    }
}

fn err(text: &str) -> ParseError {
    match parse(text) {
        Ok(g) => panic!("expected a parse error, got\n{}", print(&g)),
        Err(e) => e,
    }
}

fn assert_err(text: &str, line: usize, message: &str) {
    let e = err(text);
    assert_eq!((e.line, e.message.as_str()), (line, message), "for input:\n{text}");
}

const HEAD: &str = "graph g {\n  sym seq <= 16\n  input x: f32[seq, 8]\n  input pos: i32[]\n";

#[test]
fn parse_error_unknown_op() {
    assert_err(&format!("{HEAD}  %0: f32[seq, 8] = frobnicate x\n}}\n"), 5, "unknown op 'frobnicate'");
}

#[test]
fn parse_error_bad_type() {
    assert_err("graph g {\n  input x: f33[4]\n}\n", 2, "unknown dtype 'f33'");
    assert_err("graph g {\n  input x: f32[4\n}\n", 2, "expected ',' after a dim, found end of line");
    assert_err("graph g {\n  input x: f32[n]\n}\n", 2, "unknown symbol 'n'");
    assert_err("graph g {\n  input x: f32\n}\n", 2, "expected '[' after the dtype, found end of line");
}

#[test]
fn parse_error_type_mismatch_against_inference() {
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 4] = silu x\n}}\n"),
        5,
        "%0 (silu): written type f32[seq, 4] differs from the inferred type f32[seq, 8]",
    );
    // An inference error itself, reported with the node.
    assert_err(&format!("{HEAD}  %0: f32[seq, 8] = add x\n}}\n"), 5, "%0 (add): takes 2 operands, got 1");
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = gather x, pos\n}}\n"),
        5,
        "%0 (gather): operand 1 must have rank 1, got i32[]",
    );
}

#[test]
fn parse_error_duplicate_name() {
    assert_err("graph g {\n  input ids: i32[4]\n  input ids: i32[4]\n}\n", 3, "duplicate name 'ids'");
    assert_err("graph g {\n  input w: i32[4]\n  weight w: f32[] = literal [1.0]\n}\n", 3, "duplicate name 'w'");
    assert_err("graph g {\n  sym n <= 1\n  sym n <= 2\n}\n", 3, "duplicate symbol 'n'");
    assert_err("graph g {\n  input x: f32[]\n  output y = x\n  output y = x\n}\n", 4, "duplicate output 'y'");
}

#[test]
fn parse_error_undefined_value() {
    assert_err(&format!("{HEAD}  %0: f32[seq, 8] = add x, foo\n}}\n"), 5, "unknown value 'foo'");
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = add x, %0\n}}\n"),
        5,
        "unknown value '%0' (a node may only use earlier nodes)",
    );
    assert_err(&format!("{HEAD}  output y = nothing\n}}\n"), 5, "unknown value 'nothing'");
}

#[test]
fn parse_error_out_of_order_node() {
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = silu x\n  %2: f32[seq, 8] = silu %0\n}}\n"),
        6,
        "expected node %1, found %2: nodes are numbered in order",
    );
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = silu x\n  input y: f32[]\n}}\n"),
        6,
        "'input' is out of place: statements go in the order sym, input, weight, state, nodes, output",
    );
}

#[test]
fn parse_error_unterminated_string() {
    assert_err("graph g {\n\n  weight w: f32[] = file \"a.bin @ 0 as f32\n}\n", 3, "unterminated string");
    assert_err("graph g {\n  weight w: f32[] = file \"a\\q\" @ 0 as f32\n}\n", 2, "unknown escape '\\q' in string");
}

#[test]
fn parse_error_absurd_dim() {
    assert_err(
        "graph g {\n  input x: f32[99999999999999999999999]\n}\n",
        2,
        "dim '99999999999999999999999' is out of range",
    );
    assert_err(
        "graph g {\n  input x: f32[4294967296, 4294967296]\n}\n",
        2,
        "type f32[4294967296, 4294967296] is too large: its size overflows 64 bits",
    );
    assert_err(
        "graph g {\n  sym n <= 18446744073709551615\n  input x: f32[n, 2]\n}\n",
        3,
        "type f32[n, 2] is too large: its size overflows 64 bits",
    );
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = rope(head_dim=4294967296, rotary_dim=2) x, x, x, pos\n}}\n"),
        5,
        "head_dim '4294967296' is out of range",
    );
}

#[test]
fn parse_error_trailing_garbage() {
    assert_err("graph g {\n  input x: f32[] extra\n}\n", 2, "unexpected 'extra' at end of line");
    assert_err("graph g {\n}\n; fine\n\ngraph h {\n", 5, "unexpected 'graph' after the end of the graph");
    assert_err("graph g {\n  input x: f32[]\n", 2, "missing '}' at the end of the graph");
    assert_err("graph g { x\n}\n", 1, "unexpected 'x' at end of line");
}

#[test]
fn q8_states_need_whole_blocks_and_are_states_only() {
    let text = |state: &str, input: &str| {
        format!(
            "graph kv {{\n  sym seq <= 4\n  input ids: i32[seq]\n  input pos: i32[]\n  input x: {input}\n  \
             weight emb: f32[8, 48] = file \"m.safetensors\" @ 0 as f32\n  state k: {state}\n  \
             %0: f32[seq, 48] = gather emb, ids\n  output logits = %0\n}}\n"
        )
    };
    let e = parse(&text("q8[16, 48]", "f32[4]")).unwrap_err().message;
    assert!(e.contains("q8[16, 48]") && e.contains("whole blocks of 32") && e.contains("48 wide"), "{e}");
    let e = verify(&parse(&text("q8[16, 64]", "q8[32]")).unwrap()).unwrap_err().message;
    assert!(e.contains("input 'x'") && e.contains("KV state dtype"), "{e}");
}

#[test]
fn parse_error_other_shapes() {
    assert_err("", 1, "expected 'graph NAME {'");
    assert_err("; only a comment\n", 1, "expected 'graph NAME {'");
    assert_err("graf g {\n}\n", 1, "expected 'graph' at the start ('graph NAME {'), found 'graf'");
    assert_err("graph 9g {\n}\n", 1, "'9g' is not a valid graph name");
    assert_err("graph g {\n  input x: f32[] # hi\n}\n", 2, "unexpected character '#'");
    assert_err("graph g {\n  bogus x\n}\n", 2, "unknown statement 'bogus'");
    assert_err(&format!("{HEAD}  %0: f32[seq, 8] = add x x\n}}\n"), 5, "expected ',' after operand, found 'x'");
    assert_err(&format!("{HEAD}  %0: f32[seq, 8] = rms_norm x, x\n}}\n"), 5, "missing attribute 'eps' of rms_norm");
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = rms_norm(eps=1e-5, foo=1) x, x\n}}\n"),
        5,
        "unknown attribute 'foo' of rms_norm",
    );
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = rms_norm(eps=abc) x, x\n}}\n"),
        5,
        "expected eps (a number), found 'abc'",
    );
    assert_err(
        &format!("{HEAD}  %0: f32[seq, 8] = matmul(transpose_b=1) x, x\n}}\n"),
        5,
        "attribute 'transpose_b' of matmul takes no value",
    );
    assert_err(
        "graph g {\n  weight w: f32[] = rope tan theta=1.0 rotary_dim=2\n}\n",
        2,
        "expected 'cos' or 'sin', found 'tan'",
    );
    assert_err(
        "graph g {\n  weight w: f32[] = blob\n}\n",
        2,
        "unknown weight source 'blob' (expected file, rope or literal)",
    );
    assert_err(
        "graph g {\n  weight w: f32[1, 1] = rope cos theta=1.0 rotary_dim=2 llama3(factor=8.0)\n}\n",
        2,
        "missing attribute 'low_freq_factor' of llama3",
    );
    // The error message renders as "line N: message".
    assert_eq!(err("graph g {\n  input x: f33[]\n}\n").to_string(), "line 2: unknown dtype 'f33'");
}

/// Arbitrary junk never panics the parser (or the verifier on whatever parses).
#[test]
fn parse_never_panics_on_junk() {
    let mut rng = Rng(0x1234_5678);
    let pieces = [
        "graph",
        "g",
        "{",
        "}",
        "\n",
        " ",
        "%0",
        "%",
        ":",
        "f32",
        "[",
        "]",
        ",",
        "=",
        "<=",
        "(",
        ")",
        "\"",
        "\\",
        "@",
        "sym",
        "input",
        "weight",
        "state",
        "output",
        "file",
        "rope",
        "literal",
        "as",
        "cos",
        "llama3",
        "1",
        "18446744073709551616",
        "-1",
        "1e999",
        "nan",
        "silu",
        "add",
        "attention",
        "cache_write",
        "x",
        "seq",
        ";",
        "é",
        "\u{0}",
    ];
    let mut valids = Vec::new();
    for e in std::fs::read_dir(golden_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "ir") {
            valids.push(std::fs::read_to_string(p).unwrap().chars().collect::<Vec<char>>());
        }
    }
    // EDGEC_FUZZ_ITERS=1000000 runs a longer search.
    let iters = std::env::var("EDGEC_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000u64);
    for _ in 0..iters {
        let mut s = String::new();
        for _ in 0..rng.below(40) {
            s.push_str(pieces[rng.below(pieces.len() as u64) as usize]);
        }
        let _ = parse(&s);
        // Mutate a valid text: drop, duplicate or replace a short range of characters.
        let chars = &valids[rng.below(valids.len() as u64) as usize];
        let a = rng.below(chars.len() as u64) as usize;
        let b = (a + rng.below(8) as usize).min(chars.len());
        let mut m: String = chars[..a].iter().collect();
        match rng.below(3) {
            0 => {}
            1 => {
                m.extend(&chars[a..b]);
                m.extend(&chars[a..b]);
            }
            _ => m.push_str(pieces[rng.below(pieces.len() as u64) as usize]),
        }
        m.extend(&chars[b..]);
        if let Ok(g) = parse(&m) {
            // Compare printouts, not graphs: a mutation may have produced a NaN literal.
            let printed = print(&g);
            assert_eq!(print(&parse(&printed).unwrap()), printed);
            let _ = verify(&g);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property-style round trip over programmatically built graphs.

/// splitmix64: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// Any f32 bit pattern except NaN (NaN != NaN would make graph equality meaningless).
    fn f32(&mut self) -> f32 {
        loop {
            let v = f32::from_bits(self.next() as u32);
            if !v.is_nan() {
                return v;
            }
        }
    }
    /// A finite positive f64 with any mantissa.
    fn pos_f64(&mut self) -> f64 {
        loop {
            let v = f64::from_bits(self.next() >> 1);
            if v.is_finite() && v > 0.0 {
                return v;
            }
        }
    }
    fn path(&mut self) -> String {
        let parts = [
            "model",
            ".safetensors",
            "dir/",
            "with space",
            "\"q\"",
            "back\\slash",
            "tab\t",
            "nl\n",
            "é",
            "权重",
            "\u{1}",
        ];
        (0..self.range(1, 4)).map(|_| self.pick(&parts)).collect()
    }
}

fn f32t(shape: &[Dim]) -> TensorType {
    TensorType::new(DType::F32, Shape(shape.to_vec()))
}

/// A random valid graph using every op kind with random attributes, sizes and weight sources.
fn random_graph(rng: &mut Rng, seed: u64) -> Graph {
    let mut g = Graph::new(format!("g{seed}"));
    let kv_heads = rng.range(1, 3) as u32;
    let heads = kv_heads * rng.range(1, 3) as u32;
    let head_dim = 2 * rng.range(1, 4) as u32;
    let rotary_dim = 2 * rng.range(1, u64::from(head_dim / 2)) as u32;
    let hidden = u64::from(heads * head_dim);
    let kv_width = u64::from(kv_heads * head_dim);
    let positions = rng.range(1, 64);
    let seq = if rng.below(2) == 0 {
        g.add_symbol("seq", rng.range(1, positions))
    } else {
        Dim::Const(rng.range(1, positions))
    };
    if rng.below(2) == 0 {
        g.add_symbol("unused.sym_1", rng.range(1, u64::MAX));
    }
    let c = Dim::Const;
    let vocab = rng.range(1, 100);

    let ids = g.add_input("ids", TensorType::new(DType::I32, Shape(vec![seq])));
    let pos = g.add_input("pos", TensorType::new(DType::I32, Shape(vec![])));
    let scalar = g.add_input("_scalar", f32t(&[]));
    let half_in = g.add_input("half", TensorType::new(rng.pick(&[DType::F16, DType::BF16]), Shape(vec![seq, c(3)])));

    let stored = |rng: &mut Rng| rng.pick(&DType::ALL.map(|d| if d.size().is_some() { d } else { DType::F32 }));
    let emb_src = WeightSource::File { path: rng.path().into(), offset: rng.below(1 << 40), dtype: stored(rng) };
    let emb = g.add_weight("model.embed", f32t(&[c(vocab), c(hidden)]), emb_src);
    let norm_vals: Vec<f32> = (0..hidden).map(|_| rng.f32()).collect();
    let norm = g.add_weight("norm", f32t(&[c(hidden)]), WeightSource::Literal(norm_vals));
    let w_src = WeightSource::File { path: rng.path().into(), offset: rng.below(1 << 40), dtype: stored(rng) };
    let transpose_b = rng.below(2) == 0;
    let wk = g.add_weight("wk", f32t(&[c(kv_width), c(hidden)]), w_src.clone());
    let wsq = g.add_weight("wsq", f32t(&[c(hidden), c(hidden)]), w_src);
    let scaling = if rng.below(2) == 0 {
        RopeScaling::None
    } else {
        RopeScaling::Llama3 {
            factor: rng.pos_f64(),
            low_freq_factor: rng.pos_f64(),
            high_freq_factor: rng.pos_f64(),
            original_max_positions: rng.next(),
        }
    };
    let theta = rng.pos_f64();
    let table = f32t(&[c(positions), c(u64::from(rotary_dim / 2))]);
    let cos =
        g.add_weight("rope.cos", table.clone(), WeightSource::Rope { part: RopePart::Cos, theta, rotary_dim, scaling });
    let sin = g.add_weight("rope.sin", table, WeightSource::Rope { part: RopePart::Sin, theta, rotary_dim, scaling });
    let lit = rng.f32();
    let two = g.add_weight("two", f32t(&[]), WeightSource::Literal(vec![lit]));

    let x = g.add_node(Op::Gather, vec![emb, ids]).unwrap();
    let mut pool = vec![x]; // values of type f32[seq, hidden]
    let mut layer = 0;
    for _ in 0..rng.range(1, 25) {
        let a = rng.pick(&pool);
        let v = match rng.below(9) {
            0 => g.add_node(Op::Unary(rng.pick(&UnaryOp::ALL)), vec![a]).unwrap(),
            1 => {
                let other = rng.pick(&pool);
                let b = rng.pick(&[other, norm, scalar, two]);
                g.add_node(Op::Binary(rng.pick(&BinaryOp::ALL)), vec![a, b]).unwrap()
            }
            2 => g.add_node(Op::Softmax, vec![a]).unwrap(),
            3 => {
                let r = g.add_node(Op::Reduce(rng.pick(&ReduceOp::ALL)), vec![a]).unwrap();
                g.add_node(Op::Binary(rng.pick(&BinaryOp::ALL)), vec![r, a]).unwrap()
            }
            4 => g.add_node(Op::RmsNorm { eps: rng.f32(), group: None }, vec![a, norm]).unwrap(),
            5 => g.add_node(Op::MatMul { transpose_b }, vec![a, wsq]).unwrap(),
            6 => g
                .add_node(
                    Op::Rope { head_dim, rotary_dim, interleaved: rng.pick(&[false, true]) },
                    vec![a, cos, sin, pos],
                )
                .unwrap(),
            7 => {
                let k = g.add_node(Op::MatMul { transpose_b: true }, vec![a, wk]).unwrap();
                let cache = f32t(&[c(positions), c(kv_width)]);
                let ks = g.add_state(format!("layers.{layer}.k"), cache.clone());
                let vs = g.add_state(format!("layers.{layer}.v"), cache);
                layer += 1;
                let kc = g.add_node(Op::CacheWrite, vec![ks, k, pos]).unwrap();
                let vc = g.add_node(Op::CacheWrite, vec![vs, k, pos]).unwrap();
                let window = if rng.below(2) == 0 { None } else { Some(rng.next() as u32) };
                let scale = rng.f32();
                g.add_node(Op::Attention { heads, kv_heads, head_dim, scale, window }, vec![a, kc, vc, pos]).unwrap()
            }
            _ => {
                let h = g.add_node(Op::Unary(rng.pick(&UnaryOp::ALL)), vec![half_in]).unwrap();
                g.add_output(format!("half_{}", g.nodes.len()), h);
                continue;
            }
        };
        pool.push(v);
    }
    for (i, &v) in pool.iter().enumerate() {
        if rng.below(3) == 0 || i + 1 == pool.len() {
            g.add_output(format!("out{i}"), v);
        }
    }
    g
}

#[test]
fn programmatic_graphs_round_trip() {
    let mut rng = Rng(42);
    for seed in 0..400 {
        let g = random_graph(&mut rng, seed);
        verify(&g).unwrap_or_else(|e| panic!("seed {seed}: generated graph does not verify: {e}\n{}", print(&g)));
        let text = print(&g);
        let back = parse(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        assert_eq!(back, g, "seed {seed}:\n{text}");
        assert_eq!(print(&back), text, "seed {seed}");
    }
}

/// Bit-exact float round trip for awkward values, including f64 rope parameters.
#[test]
fn floats_round_trip_bit_exactly() {
    let vals = [
        0.1f32,
        -0.0,
        0.0,
        1e-45,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
        1.0 / 3.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let mut g = Graph::new("floats");
    g.add_weight("v", f32t(&[Dim::Const(vals.len() as u64)]), WeightSource::Literal(vals.to_vec()));
    g.add_weight(
        "cos",
        f32t(&[Dim::Const(4), Dim::Const(1)]),
        WeightSource::Rope {
            part: RopePart::Cos,
            theta: f64::MIN_POSITIVE,
            rotary_dim: 2,
            scaling: RopeScaling::Llama3 {
                factor: 0.1,
                low_freq_factor: 1e300,
                high_freq_factor: 5e-324,
                original_max_positions: u64::MAX,
            },
        },
    );
    let back = parse(&print(&g)).unwrap();
    let (WeightSource::Literal(a), WeightSource::Literal(b)) = (&g.weights[0].source, &back.weights[0].source) else {
        panic!("literal expected");
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b));
    assert_eq!(back, g);
}

#[test]
fn print_exact_layout() {
    let mut g = Graph::new("tiny");
    let seq = g.add_symbol("seq", 16);
    let ids = g.add_input("ids", TensorType::new(DType::I32, Shape(vec![seq])));
    let emb = g.add_weight(
        "emb",
        f32t(&[Dim::Const(32), Dim::Const(8)]),
        WeightSource::File { path: "a \"b\"\\c.bin".into(), offset: 1024, dtype: DType::BF16 },
    );
    let x = g.add_node(Op::Gather, vec![emb, ids]).unwrap();
    let y = g.add_node(Op::MatMul { transpose_b: false }, vec![x, emb]);
    assert!(y.is_err(), "[seq, 8] x [32, 8] has mismatched inner dims");
    let w = g.add_weight("w", f32t(&[Dim::Const(8), Dim::Const(8)]), WeightSource::Literal(vec![0.5; 64]));
    let m = g.add_node(Op::MatMul { transpose_b: true }, vec![x, w]).unwrap();
    g.add_output("logits", m);
    let lit = ["0.5"; 64].join(", ");
    let expected = format!(
        "graph tiny {{\n  sym seq <= 16\n  input ids: i32[seq]\n  \
         weight emb: f32[32, 8] = file \"a \\\"b\\\"\\\\c.bin\" @ 1024 as bf16\n  \
         weight w: f32[8, 8] = literal [{lit}]\n  \
         %0: f32[seq, 8] = gather emb, ids\n  \
         %1: f32[seq, 8] = matmul(transpose_b) %0, w\n  \
         output logits = %1\n}}\n"
    );
    assert_eq!(print(&g), expected);
}

#[test]
fn comments_and_blank_lines_are_skipped() {
    let text = "; header\n\ngraph g {\n  ; inside\n\n  input x: f32[]\n    ; indented comment\n  %0: f32[] = exp x\n  output y = %0\n}\n; trailer\n";
    let g = parse(text).unwrap();
    assert_eq!(print(&g), "graph g {\n  input x: f32[]\n  %0: f32[] = exp x\n  output y = %0\n}\n");
}
