//! One test per verifier rule: each starts from a valid graph, breaks exactly that rule (usually
//! by editing the graph's fields directly, as a buggy pass would) and checks the error names
//! the culprit.

use edgec_ir::text::parse;
use edgec_ir::verify::verify;
use edgec_ir::*;

/// A small valid decoder block (the same shape as `tests/text/tiny.ir`).
const VALID: &str = "graph tiny {
  sym seq <= 16
  input ids: i32[seq]
  input pos: i32[]
  weight emb: f32[32, 8] = file \"model.safetensors\" @ 1024 as bf16
  weight norm: f32[8] = literal [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
  weight wq: f32[8, 8] = file \"model.safetensors\" @ 0 as f32
  weight wk: f32[4, 8] = file \"model.safetensors\" @ 256 as f32
  weight rope.cos: f32[16, 2] = rope cos theta=10000.0 rotary_dim=4
  weight rope.sin: f32[16, 2] = rope sin theta=10000.0 rotary_dim=4
  weight two: f32[] = literal [2.0]
  state k_cache: f32[16, 4]
  state v_cache: f32[16, 4]
  %0: f32[seq, 8] = gather emb, ids
  %1: f32[seq, 8] = rms_norm(eps=1e-5) %0, norm
  %2: f32[seq, 8] = matmul(transpose_b) %1, wq
  %3: f32[seq, 4] = matmul(transpose_b) %1, wk
  %4: f32[seq, 8] = rope(head_dim=4, rotary_dim=4) %2, rope.cos, rope.sin, pos
  %5: f32[16, 4] = cache_write k_cache, %3, pos
  %6: f32[16, 4] = cache_write v_cache, %3, pos
  %7: f32[seq, 8] = attention(heads=2, kv_heads=1, head_dim=4, scale=0.5, window=8) %4, %5, %6, pos
  %8: f32[seq, 8] = mul %7, two
  output logits = %8
}
";

fn valid() -> Graph {
    parse(VALID).expect("the valid graph parses")
}

/// Asserts `verify` fails with a message containing every one of `parts`.
fn assert_fails(g: &Graph, parts: &[&str]) {
    match verify(g) {
        Ok(()) => panic!("expected a verifier error containing {parts:?}"),
        Err(e) => {
            for p in parts {
                assert!(e.message.contains(p), "error {:?} does not contain {p:?}", e.message);
            }
        }
    }
}

fn weight_index(g: &Graph, name: &str) -> usize {
    g.weights.iter().position(|w| w.name == name).unwrap()
}

#[test]
fn valid_graph_passes() {
    verify(&valid()).unwrap();
    // So does a programmatically built one, and an empty graph.
    let mut g = Graph::new("built");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::of(&[2, 3])));
    let y = g.add_node(Op::Softmax, vec![x]).unwrap();
    g.add_output("y", y);
    verify(&g).unwrap();
    verify(&Graph::new("empty")).unwrap();
}

// --- references and schedule order

#[test]
fn operand_must_exist() {
    let mut g = valid();
    g.nodes[1].args[1] = ValueRef::Weight(99);
    assert_fails(&g, &["%1 (rms_norm)", "operand 1", "weight#99"]);
    let mut g = valid();
    g.nodes[8].args[0] = ValueRef::Node(42);
    assert_fails(&g, &["%8 (mul)", "%42"]);
    let mut g = valid();
    g.nodes[0].args[1] = ValueRef::Input(7);
    assert_fails(&g, &["%0 (gather)", "input#7"]);
    let mut g = valid();
    g.nodes[5].args[0] = ValueRef::State(5);
    assert_fails(&g, &["%5 (cache_write)", "state#5"]);
}

#[test]
fn nodes_use_only_earlier_nodes() {
    // %0 uses %1, which does not use %0: no cycle, but out of schedule order.
    let mut g = Graph::new("order");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::of(&[4])));
    let a = g.add_node(Op::Unary(UnaryOp::Exp), vec![x]).unwrap();
    let b = g.add_node(Op::Unary(UnaryOp::Neg), vec![x]).unwrap();
    g.add_output("a", a);
    verify(&g).unwrap();
    g.nodes[0].args[0] = b;
    assert_fails(&g, &["%0 (exp)", "uses %1", "not scheduled before it"]);
}

#[test]
fn use_def_graph_is_acyclic() {
    let mut g = valid();
    // %7 <- %8 <- %7
    g.nodes[7].args[0] = ValueRef::Node(8);
    assert_fails(&g, &["cycle"]);
    // A node using itself.
    let mut g = valid();
    g.nodes[8].args[0] = ValueRef::Node(8);
    assert_fails(&g, &["%8 (mul)", "cycle"]);
}

// --- types

#[test]
fn stored_type_equals_inferred_type() {
    let mut g = valid();
    g.nodes[3].ty = TensorType::new(DType::F32, Shape::of(&[16, 4]));
    assert_fails(&g, &["%3 (matmul)", "stored type f32[16, 4]", "inferred type f32[seq, 4]"]);
    let mut g = valid();
    g.nodes[8].ty.dtype = DType::F16;
    assert_fails(&g, &["%8 (mul)", "f16[seq, 8]"]);
}

#[test]
fn operands_satisfy_type_rules() {
    let mut g = valid();
    // attention with heads not a multiple of kv_heads
    if let Op::Attention { kv_heads, .. } = &mut g.nodes[7].op {
        *kv_heads = 3;
    }
    assert_fails(&g, &["%7 (attention): heads 2 must be a nonzero multiple of kv_heads 3"]);
    let mut g = valid();
    g.nodes[8].args.pop();
    assert_fails(&g, &["%8 (mul): takes 2 operands, got 1"]);
}

#[test]
fn symbol_references_in_range() {
    let mut g = valid();
    g.inputs[0].ty.shape = Shape(vec![Dim::Sym(SymbolId(3))]);
    assert_fails(&g, &["input 'ids'", "undefined symbol #3"]);
    let mut g = valid();
    g.nodes[2].ty.shape = Shape(vec![Dim::Sym(SymbolId(1)), Dim::Const(8)]);
    assert_fails(&g, &["%2 (matmul)", "undefined symbol #1"]);
}

#[test]
fn symbol_max_at_least_one() {
    let mut g = valid();
    g.symbols[0].max = 0;
    assert_fails(&g, &["symbol 'seq'", "at least 1"]);
}

#[test]
fn type_size_fits() {
    let mut g = valid();
    g.symbols[0].max = u64::MAX / 2;
    assert_fails(&g, &["too large"]);
    let mut g = valid();
    g.states[0].ty = TensorType::new(DType::F32, Shape::of(&[1 << 32, 1 << 31]));
    assert_fails(&g, &["state 'k_cache'", "too large"]);
}

// --- names

#[test]
fn names_are_valid_identifiers() {
    let mut g = valid();
    g.weights[0].name = "bad name".into();
    assert_fails(&g, &["weight 'bad name'", "not a valid identifier"]);
    let mut g = valid();
    g.inputs[1].name = "1pos".into();
    assert_fails(&g, &["input '1pos'"]);
    let mut g = valid();
    g.states[1].name = String::new();
    assert_fails(&g, &["state ''"]);
    let mut g = valid();
    g.symbols[0].name = "se-q".into();
    assert_fails(&g, &["symbol 'se-q'"]);
    let mut g = valid();
    g.outputs[0].name = "%0".into();
    assert_fails(&g, &["output '%0'"]);
    let mut g = valid();
    g.name = "tiny model".into();
    assert_fails(&g, &["graph name 'tiny model'"]);
}

#[test]
fn names_are_unique_across_inputs_weights_and_states() {
    let mut g = valid();
    g.states[0].name = "emb".into();
    assert_fails(&g, &["state 'emb'", "duplicate name", "weight"]);
    let mut g = valid();
    g.inputs[1].name = "ids".into();
    assert_fails(&g, &["input 'ids'", "duplicate name"]);
    let mut g = valid();
    g.add_symbol("seq", 4);
    assert_fails(&g, &["symbol 'seq'", "duplicate"]);
}

// --- state writes

#[test]
fn cache_write_operand_0_is_a_state() {
    let mut g = valid();
    // Write into the result of another cache write instead of the state itself.
    g.nodes[6].args[0] = ValueRef::Node(5);
    assert_fails(&g, &["%6 (cache_write)", "operand 0 must be a state", "%5"]);
}

#[test]
fn each_state_written_at_most_once() {
    let mut g = valid();
    g.nodes[6].args[0] = ValueRef::State(0);
    assert_fails(&g, &["%6 (cache_write)", "state 'k_cache'", "already written by %5"]);
}

#[test]
fn written_state_is_read_only_through_the_write() {
    let mut g = valid();
    // attention reads the k cache state directly instead of %5.
    g.nodes[7].args[1] = ValueRef::State(0);
    assert_fails(&g, &["%7 (attention)", "reads state 'k_cache' directly", "use %5"]);
    // The writer itself may not read it through another operand either.
    let mut g = Graph::new("s");
    let pos = g.add_input("pos", TensorType::new(DType::I32, Shape::of(&[])));
    let s = g.add_state("s", TensorType::new(DType::F32, Shape::of(&[4, 2])));
    g.add_node(Op::CacheWrite, vec![s, s, pos]).unwrap();
    assert_fails(&g, &["%0 (cache_write)", "reads state 's' directly"]);
    // An output of a written state must use the write's result.
    let mut g = valid();
    g.add_output("k", ValueRef::State(0));
    assert_fails(&g, &["output 'k'", "reads state 'k_cache' directly"]);
    // A state nobody writes may be read directly.
    let mut g = valid();
    g.nodes.truncate(5);
    g.outputs.clear();
    let vs = ValueRef::State(1);
    g.add_output("v", vs);
    verify(&g).unwrap();
}

// --- outputs

#[test]
fn outputs_reference_existing_values() {
    let mut g = valid();
    g.outputs[0].value = ValueRef::Node(9);
    assert_fails(&g, &["output 'logits'", "undefined value %9"]);
}

#[test]
fn output_names_unique() {
    let mut g = valid();
    g.add_output("logits", ValueRef::Node(7));
    assert_fails(&g, &["output 'logits'", "duplicate output name"]);
}

// --- weights

#[test]
fn literal_has_one_value_per_element() {
    let mut g = valid();
    let i = weight_index(&g, "norm");
    g.weights[i].source = WeightSource::Literal(vec![1.0; 7]);
    assert_fails(&g, &["weight 'norm'", "literal has 7 values", "f32[8] has 8 elements"]);
}

#[test]
fn weight_dims_are_constant() {
    let mut g = valid();
    let i = weight_index(&g, "norm");
    g.weights[i].ty.shape = Shape(vec![Dim::Sym(SymbolId(0))]);
    assert_fails(&g, &["weight 'norm'", "dims must be constant", "f32[seq]"]);
}

#[test]
fn rope_table_shape_matches_rotary_dim() {
    let mut g = valid();
    let i = weight_index(&g, "rope.sin");
    g.weights[i].ty = TensorType::new(DType::F32, Shape::of(&[16, 3]));
    assert_fails(&g, &["weight 'rope.sin'", "must be f32[P, 2]", "f32[16, 3]"]);
    let mut g = valid();
    let i = weight_index(&g, "rope.cos");
    g.weights[i].ty.dtype = DType::BF16;
    assert_fails(&g, &["weight 'rope.cos'", "must be f32[P, 2]"]);
    let mut g = valid();
    let i = weight_index(&g, "rope.cos");
    g.weights[i].ty = TensorType::new(DType::F32, Shape::of(&[2]));
    assert_fails(&g, &["weight 'rope.cos'", "must be f32[P, 2]"]);
    let mut g = valid();
    let i = weight_index(&g, "rope.cos");
    if let WeightSource::Rope { rotary_dim, .. } = &mut g.weights[i].source {
        *rotary_dim = 3;
    }
    assert_fails(&g, &["weight 'rope.cos'", "rotary_dim 3 must be even"]);
    let mut g = valid();
    let i = weight_index(&g, "rope.cos");
    if let WeightSource::Rope { theta, .. } = &mut g.weights[i].source {
        *theta = f64::NAN;
    }
    assert_fails(&g, &["weight 'rope.cos'", "theta NaN"]);
}

#[test]
fn file_range_does_not_overflow() {
    let mut g = valid();
    let i = weight_index(&g, "emb");
    g.weights[i].source = WeightSource::File { path: "m.bin".into(), offset: u64::MAX - 10, dtype: DType::F32 };
    assert_fails(&g, &["weight 'emb'", "overflows"]);
}

/// The verifier never panics on a graph full of dangling references.
#[test]
fn garbage_graph_is_an_error_not_a_panic() {
    let mut g = valid();
    for n in &mut g.nodes {
        n.ty.shape = Shape(vec![Dim::Sym(SymbolId(u32::MAX))]);
        n.args = vec![ValueRef::Node(u32::MAX), ValueRef::State(u32::MAX)];
    }
    g.outputs[0].value = ValueRef::Input(u32::MAX);
    assert!(verify(&g).is_err());
    let _ = edgec_ir::text::print(&g);
}

#[test]
fn row_ranges_fit_their_weight() {
    // wq is [8, 8]; as rows 0..8 of 16 its source holds 128 values, read from the file.
    let mut g = valid();
    let i = weight_index(&g, "wq");
    g.weights[i].transforms.push(Transform::Rows { rows: 16, start: 8, len: 8 });
    verify(&g).unwrap();
    assert_eq!(edgec_ir::weights::source_elements(&g.weights[i]).unwrap(), 128);
    // A range past the rows, or a kept part that is not whole rows of the weight.
    g.weights[i].transforms = vec![Transform::Rows { rows: 16, start: 12, len: 8 }];
    assert_fails(&g, &["weight 'wq'", "rows 12..20 of 16"]);
    g.weights[i].transforms = vec![Transform::Rows { rows: 4, start: 0, len: 3 }];
    assert_fails(&g, &["weight 'wq'", "keeps 3 of 4 rows, not 64 values"]);
}
