use edgec_ir::{DType, Graph, Op, Shape, TensorType, UnaryOp};
use edgec_passes::{Changed, OptLevel, Pass, PassError, PassManager};

fn small_graph() -> Graph {
    let mut g = Graph::new("g");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::of(&[2, 4])));
    let dead = g.add_node(Op::Unary(UnaryOp::Neg), vec![x]).unwrap();
    let live = g.add_node(Op::Unary(UnaryOp::Exp), vec![x]).unwrap();
    let _ = dead;
    g.add_output("y", live);
    g
}

#[test]
fn unknown_pass_names_are_errors_that_list_the_passes() {
    let err = PassManager::from_names(&["dce", "fold-everything"]).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("unknown pass 'fold-everything'"), "{msg}");
    assert!(msg.contains("dce") && msg.contains("infer-shapes"), "{msg}");
    let err = PassManager::preset(OptLevel::O1).print_after(&["dcee"]).err().unwrap();
    assert!(err.to_string().contains("unknown pass 'dcee'"));
}

#[test]
fn presets_run_and_report_timings() {
    let mut g = small_graph();
    let timings = PassManager::preset(OptLevel::O2).run(&mut g, &mut |_, _| {}).unwrap();
    let names: Vec<_> = timings.iter().map(|t| t.name).collect();
    assert_eq!(names, OptLevel::O2.pipeline());
    assert_eq!(g.nodes.len(), 1, "dce removed the unused node");
    assert!(PassManager::preset(OptLevel::O0).pass_names().is_empty());
}

#[test]
fn print_after_shows_the_graph_after_the_named_pass() {
    let mut g = small_graph();
    let mut seen = Vec::new();
    PassManager::from_names(&["infer-shapes", "dce"])
        .unwrap()
        .print_after(&["dce"])
        .unwrap()
        .run(&mut g, &mut |pass, g| seen.push((pass.to_string(), g.nodes.len())))
        .unwrap();
    assert_eq!(seen, vec![("dce".to_string(), 1)]);
}

/// A pass that breaks the graph: the manager must catch it and name the pass.
struct Vandal;
impl Pass for Vandal {
    fn name(&self) -> &'static str {
        "vandal"
    }
    fn run(&self, g: &mut Graph) -> Result<Changed, PassError> {
        g.nodes[0].ty = TensorType::new(DType::F32, Shape::of(&[3, 3]));
        Ok(Changed::Yes)
    }
}

#[test]
fn the_verifier_catches_a_pass_that_breaks_the_graph() {
    let mut g = small_graph();
    let err = PassManager::new(vec![Box::new(Vandal)]).run(&mut g, &mut |_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("after pass 'vandal'"), "{msg}");
    // And the manager refuses an invalid input graph before running anything.
    let err = PassManager::preset(OptLevel::O1).run(&mut g, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, PassError::InvalidInput(_)), "{err}");
}
