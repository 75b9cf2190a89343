//! Memory planner properties on many generated graphs: no two simultaneously live buffers
//! overlap, every buffer is aligned, and the arena is never below the lower bound.

use edgec_ir::{BinaryOp, DType, Dim, Graph, Op, ReduceOp, Shape, TensorType, UnaryOp, ValueRef, WeightSource};
use edgec_passes::plan::{lifetimes, plan_memory, ALIGN};

/// A small deterministic generator (splitmix64), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_graph(seed: u64) -> Graph {
    let mut rng = Rng(seed);
    let mut g = Graph::new("random");
    let seq = g.add_symbol("seq", 1 + rng.below(16) as u64);
    let width = |n: u64| TensorType::new(DType::F32, Shape(vec![seq, Dim::Const(n)]));
    let mut values = vec![g.add_input("x", width(8))];
    let n_nodes = 2 + rng.below(30);
    for _ in 0..n_nodes {
        let a = values[rng.below(values.len())];
        let a_width = g.type_of(a).shape.0[1].as_const().unwrap();
        let v = match rng.below(4) {
            0 => g.add_node(Op::Unary(UnaryOp::ALL[rng.below(7)]), vec![a]),
            1 => {
                let same: Vec<ValueRef> =
                    values.iter().copied().filter(|&b| g.type_of(b).shape.0[1].as_const() == Some(a_width)).collect();
                let b = same[rng.below(same.len())];
                g.add_node(Op::Binary(BinaryOp::ALL[rng.below(6)]), vec![a, b])
            }
            2 => g.add_node(Op::Reduce(ReduceOp::ALL[rng.below(3)]), vec![a]),
            _ => {
                let n = [1u64, 4, 8, 24, 64][rng.below(5)];
                let name = format!("w{}", g.weights.len());
                let w = g.add_weight(
                    name,
                    TensorType::new(DType::F32, Shape::of(&[n, a_width])),
                    WeightSource::File { path: "unused.bin".into(), offset: 0, dtype: DType::F32 },
                );
                g.add_node(Op::MatMul { transpose_b: true }, vec![a, w])
            }
        };
        values.push(v.unwrap());
    }
    let last = *values.last().unwrap();
    g.add_output("out", last);
    g
}

#[test]
fn plans_never_overlap_live_buffers() {
    for seed in 0..300 {
        let g = random_graph(seed);
        let plan = plan_memory(&g).unwrap();
        let buffers = lifetimes(&g).unwrap();
        let mut widest = 0;
        for (i, a) in buffers.iter().enumerate() {
            let off_a = plan.offsets[a.node].expect("arena buffer has an offset");
            assert_eq!(off_a % ALIGN, 0, "seed {seed}: %{} misaligned", a.node);
            assert!(off_a + a.size <= plan.arena_size, "seed {seed}: %{} past the arena", a.node);
            assert!(a.size >= g.max_bytes(&g.nodes[a.node].ty).unwrap());
            widest = widest.max(a.size);
            for b in &buffers[i + 1..] {
                if a.first <= b.last && b.first <= a.last {
                    let off_b = plan.offsets[b.node].unwrap();
                    let disjoint = off_a + a.size <= off_b || off_b + b.size <= off_a;
                    assert!(disjoint, "seed {seed}: live buffers %{} and %{} overlap", a.node, b.node);
                }
            }
        }
        assert!(plan.lower_bound >= widest);
        assert!(plan.arena_size >= plan.lower_bound, "seed {seed}: arena below the lower bound");
        // The output is written to the caller's buffer, never the arena.
        let ValueRef::Node(out) = g.outputs[0].value else { unreachable!() };
        assert_eq!(plan.offsets[out as usize], None);
    }
}

#[test]
fn reuses_memory_of_dead_buffers() {
    // A chain x -> a -> b -> c -> d -> out: only two neighbours are ever live together.
    let mut g = Graph::new("chain");
    let ty = TensorType::new(DType::F32, Shape::of(&[4, 16]));
    let mut v = g.add_input("x", ty);
    for _ in 0..5 {
        v = g.add_node(Op::Unary(UnaryOp::Exp), vec![v]).unwrap();
    }
    g.add_output("out", v);
    let plan = plan_memory(&g).unwrap();
    assert_eq!(plan.lower_bound, 2 * 256);
    assert_eq!(plan.arena_size, plan.lower_bound);
}
