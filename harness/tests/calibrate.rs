//! `promptloop calibrate` and `--engine auto` / `--on-overflow` on the real SmolLM2-135M: a
//! short ladder (inputs up to 1024 tokens) keeps each calibration under a minute on 2 cores.

use serde_json::Value;

use crate::support::{cuad_mini, promptloop, records, require_model, stderr, stdout, summary};

fn calibrate(out: &str, extra: &[&str]) -> (std::process::Output, Option<Value>) {
    let task = cuad_mini();
    let mut args = vec![
        "calibrate",
        "--model",
        "smollm2-135m",
        "--task",
        task.to_str().unwrap(),
        "--max-input",
        "1024",
        "--reps",
        "1",
        "--max-tokens",
        "16",
        "--out",
        out,
        "--json",
    ];
    args.extend(extra);
    let o = promptloop(&args);
    let v = o.status.success().then(|| summary(&o));
    (o, v)
}

#[test]
fn calibrate_fits_memory_routes_and_survives_a_low_budget() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let table_path = tmp.path().join("routing.toml");
    let (out, table) = calibrate(table_path.to_str().unwrap(), &[]);
    let table = table.unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert!(table_path.exists());
    let e = &table["engines"][0];
    assert_eq!(e["kind"], "llama");
    let points = e["points"].as_array().unwrap();
    let inputs: Vec<u64> = points.iter().map(|p| p["input_tokens"].as_u64().unwrap()).collect();
    assert_eq!(&inputs[..4], [128, 256, 512, 1024], "{inputs:?}");
    assert!(points.iter().all(|p| p["fits"] == true && p["peak_rss_bytes"].as_u64().unwrap() > 50 << 20), "{points:?}");
    // More context, more memory: a positive per-token cost.
    assert!(e["memory"]["slope"].as_f64().unwrap() > 0.0, "{e}");
    // The held-back length is predicted within 15%.
    let check = &e["check"];
    assert_eq!(check["input_tokens"], 448);
    assert!(check["rel_error"].as_f64().unwrap() < 0.15, "{check}");
    assert!(e["max_input_tokens"].as_u64().unwrap() > 1024, "{e}");
    assert!(table["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(table["version"], 1);

    // A budget just above the smallest probe's peak: longer probes are stopped by the watchdog
    // and recorded as not fitting; nothing crashes and the threshold is below the ladder's top.
    let low = points[0]["peak_rss_bytes"].as_u64().unwrap() + (6 << 20);
    let low_path = tmp.path().join("low.toml");
    let budget = format!("{low}");
    let (out, low_table) = calibrate(low_path.to_str().unwrap(), &["--memory-budget", &budget, "--margin", "0"]);
    let low_table = low_table.unwrap_or_else(|| panic!("{}", stderr(&out)));
    let lp = low_table["engines"][0]["points"].as_array().unwrap();
    let stopped: Vec<&Value> = lp.iter().filter(|p| p["fits"] == false).collect();
    assert!(!stopped.is_empty(), "{lp:?}");
    assert!(stopped.iter().all(|p| p["note"].as_str().unwrap().contains("does not fit")), "{stopped:?}");
    let threshold = low_table["engines"][0]["max_input_tokens"].as_u64().unwrap();
    assert!(threshold < 1024, "{threshold}");

    // --engine auto with the low table: the context is capped by the budget, and documents
    // longer than that are chunked, never run past the budget.
    if threshold >= 200 {
        let rec = tmp.path().join("auto.jsonl");
        let task = cuad_mini();
        let out = promptloop(&[
            "eval",
            "--task",
            task.to_str().unwrap(),
            "--split",
            "dev",
            "--limit",
            "2",
            "--batch-size",
            "1",
            "--engine",
            "auto",
            "--routing",
            low_path.to_str().unwrap(),
            "--on-overflow",
            "chunk",
            "--max-tokens",
            "48",
            "--out",
            rec.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("routed by"), "{}", stderr(&out));
        let recs = records(&rec);
        assert!(recs.iter().any(|r| r["input_chunks"].as_u64().is_some_and(|n| n >= 2)), "{recs:?}");
        assert!(recs.iter().all(|r| r["error"].is_null()), "{recs:?}");
    }

    // A stale table (another model's hash) is reported and ignored.
    let text = std::fs::read_to_string(&table_path).unwrap();
    let sha = table["model"]["sha256_first_mib"].as_str().unwrap();
    std::fs::write(&table_path, text.replace(sha, &"0".repeat(64))).unwrap();
    let task = cuad_mini();
    let out = promptloop(&[
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--limit",
        "1",
        "--engine",
        "auto",
        "--routing",
        table_path.to_str().unwrap(),
        "--max-tokens",
        "16",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stale") && stderr(&out).contains("another model"), "{}", stderr(&out));
    assert!(stdout(&out).contains("llama"));
}

#[test]
fn documents_longer_than_the_context_error_chunk_or_truncate() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let task = cuad_mini();
    let run = |policy: &str| {
        let rec = tmp.path().join(format!("{policy}.jsonl"));
        // 768 tokens per sequence (llama.cpp rounds contexts up to 256): the contracts
        // (1,000-2,500 tokens) do not fit.
        let out = promptloop(&[
            "eval",
            "--task",
            task.to_str().unwrap(),
            "--split",
            "dev",
            "--limit",
            "2",
            "--engine",
            "llama",
            "--ctx",
            "768",
            "--max-tokens",
            "64",
            "--on-overflow",
            policy,
            "--out",
            rec.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{policy}: {}", stderr(&out));
        records(&rec)
    };
    let err = run("error");
    assert!(err.iter().all(|r| r["error"] == "too_long" && r["tokens"]["input"].as_u64().unwrap() > 768), "{err:?}");
    let chunked = run("chunk");
    for r in &chunked {
        let n = r["input_chunks"].as_u64().unwrap();
        assert!(n >= 2, "{r}");
        // The merged output is one object with every field, valid for the schema.
        assert_eq!(r["format_ok"], true, "{r}");
        let out: Value = serde_json::from_str(r["output"].as_str().unwrap()).unwrap();
        assert_eq!(out.as_object().unwrap().len(), 4, "{out}");
        assert!(r["tokens"]["input"].as_u64().unwrap() > 768, "windows' inputs are summed: {r}");
    }
    let cut = run("truncate");
    assert!(cut.iter().all(|r| r["input_truncated"] == true && r["error"].is_null()), "{cut:?}");
    assert!(cut.iter().all(|r| r["tokens"]["input"].as_u64().unwrap() + 64 <= 768), "{cut:?}");
}
