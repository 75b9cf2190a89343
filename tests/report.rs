//! `--emit report` (report.md, report.json, memory.svg) agrees with the compile summary, and
//! `edgec run --memory` measures the peak without disturbing stdout.

mod common;
use common::*;

/// The numbers in the compile summary line: weights, arena, lower bound, KV state.
fn summary_numbers(stdout: &str) -> (u64, u64, u64, u64, String) {
    let line = stdout.lines().find(|l| l.trim_start().starts_with("weights ") && l.contains("arena")).unwrap();
    let num_after = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("'{key}' in {line}")) + key.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let strategy = line.split("lower bound ").nth(1).unwrap().split(&[',', ')'][..]).nth(1).unwrap().trim().to_string();
    (num_after("weights "), num_after("arena "), num_after("lower bound "), num_after("KV state "), strategy)
}

#[test]
fn emit_report_writes_three_files_that_match_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let o = edgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--max-context",
        "64",
        "--emit",
        "obj,header,weights,report",
        "--emit-ir",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let (weights, arena, lower, kv, strategy) = summary_numbers(&stdout);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["arena"]["size"], arena, "{stdout}");
    assert_eq!(json["arena"]["lower_bound"], lower);
    assert_eq!(json["arena"]["strategy"], strategy.as_str());
    assert_eq!(json["kv_state"], kv);
    assert_eq!(json["weights"]["size"], weights);
    assert!(arena >= lower && lower > 0);
    let peak = &json["peak_dram_estimate"];
    let parts: u64 = ["weights", "arena", "kv_state", "logits", "code", "runtime_overhead_estimate"]
        .iter()
        .map(|k| peak[k].as_u64().unwrap())
        .sum();
    assert_eq!(peak["total"], parts);
    assert_eq!(peak["arena"], arena);
    let by_storage: u64 =
        json["weights"]["by_storage"].as_array().unwrap().iter().map(|w| w["bytes"].as_u64().unwrap()).sum();
    assert!(by_storage <= weights && weights - by_storage < 4096, "the header and padding only");
    let kernels = json["kernels"].as_array().unwrap();
    assert!(kernels.iter().any(|k| k["op"] == "matmul" && k["nodes"].as_u64().unwrap() > 1));
    let nodes: u64 = kernels.iter().map(|k| k["nodes"].as_u64().unwrap()).sum();
    assert_eq!(json["nodes"], nodes);
    // The MLP's fused kernel names what it does, and the launches are the pinned listing's
    // (one line per single kernel, one braced block per dispatch group).
    let glu = kernels.iter().find(|k| k["kernel"] == "linear(act=silu, gated)").expect("a fused GLU kernel");
    assert_eq!(glu["fuses"], serde_json::json!(["matmul", "silu", "matmul (up)", "mul (GLU)"]));
    let listing =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/kernels/llama.txt")).unwrap();
    let launches = listing.lines().filter(|l| !l.starts_with("  ") && !l.starts_with('#') && *l != "}").count();
    assert_eq!(json["launches"], launches as u64);
    assert!(json["grouped_launches"].as_u64().unwrap() >= 1);

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(&format!("Arena **{arena} bytes**")) && md.contains(&format!("lower bound {lower} bytes")),
        "{md}"
    );
    assert!(md.contains("estimate"), "the peak DRAM figure says it is an estimate");

    // The SVG is XML with one <rect> per arena buffer, each with a tooltip naming node and op.
    let svg = std::fs::read_to_string(out.join("memory.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("memory.svg is XML");
    let rects: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("rect")).collect();
    assert_eq!(rects.len() as u64, json["arena"]["buffers"].as_u64().unwrap());
    let plan = std::fs::read_to_string(out.join("llama.plan")).unwrap();
    assert_eq!(rects.len(), plan.lines().filter(|l| l.starts_with('%')).count(), "{plan}");
    for r in &rects {
        let title = r.children().find(|c| c.has_tag_name("title")).and_then(|t| t.text()).unwrap();
        assert!(title.starts_with('%') && title.contains("offset"), "{title}");
    }
    assert!(svg.contains("KiB"), "axis ticks in KiB");
}

#[test]
fn run_reports_its_peak_memory_on_stderr() {
    let model = fixture("llama");
    let o = edgec(&["run", model.to_str().unwrap(), "--ids", "1,15,42,7", "--max-new-tokens", "3", "--memory"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let first = stdout.lines().next().unwrap();
    assert_eq!(first.split(',').count(), 3, "stdout's first line is the generated ids: {stdout}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let line = stderr.lines().find(|l| l.starts_with("memory: peak RSS")).unwrap_or_else(|| panic!("{stderr}"));
    for part in ["weights", "arena", "KV state", "rest"] {
        assert!(line.contains(part), "{line}");
    }
    assert!(!line.contains("unknown"), "arena and KV sizes come from the header: {line}");
}

/// `--kv-dtype q8`: the report's KV state is the q8 states' bytes, 34 per 32 values (the
/// llama fixture: 2 layers × K and V × 64 positions × 32 values = 4 × 64 × 34 bytes, each state
/// already a whole number of 64-byte lines), as the summary line and NAME_info say.
#[test]
fn report_counts_q8_kv_state_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let args = [
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--max-context",
        "64",
        "--kv-dtype",
        "q8",
        "--emit",
        "obj,header,weights,report",
    ];
    let o = edgec(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, _, _, kv, _) = summary_numbers(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(kv, 4 * 64 * 34);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["kv_state"], kv);
    assert_eq!(json["kv_dtype"], "q8");
    assert_eq!(json["peak_dram_estimate"]["kv_state"], kv);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("{kv} bytes (8.50 KiB), q8 rows.")), "{md}");
}

/// The llama fixture compiled at `--quant q8` with `extra` flags: its report.json and
/// edgec.json.
fn q8_report(extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = fixture("llama");
    let mut args = vec![
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--max-context",
        "64",
        "--quant",
        "q8",
        "--emit",
        "obj,weights,report",
    ];
    args.extend_from_slice(extra);
    let o = edgec(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap()
    };
    (read("report.json"), read("edgec.json"))
}

/// `--quant q8`: every norm of the llama fixture is read only by int8-activation matmuls, so
/// each writes its rows as int8 blocks; the report lists that kernel as a norm fused with the
/// quantization, and no norm as plain f32.
#[test]
fn report_names_norms_that_quantize_for_int8_matmuls() {
    let (json, manifest) = q8_report(&[]);
    let norms: Vec<&serde_json::Value> =
        json["kernels"].as_array().unwrap().iter().filter(|k| k["op"] == "rms_norm").collect();
    assert_eq!(norms.len(), 1, "{norms:?}");
    assert_eq!(norms[0]["kernel"], "rms_norm(eps=1e-5) -> int8 rows");
    assert_eq!(norms[0]["fuses"], serde_json::json!(["rms_norm", "quantize (int8, blocks of 32)"]));
    assert_eq!(norms[0]["nodes"], 5, "two per layer and the final norm");
    // Every matmul takes int8 activations but the 172-wide down projection (not whole blocks
    // of 32): q, k, v, o, gate+up per layer and the LM head.
    let int8: u64 = json["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kernel"].as_str().unwrap().ends_with(" with int8 activations"))
        .map(|k| k["nodes"].as_u64().unwrap())
        .sum();
    assert_eq!(int8, 2 * 5 + 1);
    assert_eq!(manifest["activations"], "int8");
}

/// `--activations f32`: the same q8 model's matmuls dequantize their weights and take f32
/// activations, so no norm writes int8 rows and no matmul is listed as int8; edgec.json
/// records the choice.
#[test]
fn report_lists_no_int8_kernels_with_f32_activations() {
    let (json, manifest) = q8_report(&["--activations", "f32"]);
    let kernels = json["kernels"].as_array().unwrap();
    assert!(kernels.iter().all(|k| !k["kernel"].as_str().unwrap().contains("int8")), "{kernels:?}");
    assert!(kernels.iter().any(|k| k["kernel"] == "rms_norm(eps=1e-5)"), "{kernels:?}");
    assert_eq!(manifest["activations"], "f32");
    assert_eq!(manifest["quant"], "q8");
}
