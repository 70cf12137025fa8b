//! `promptloop bench` end to end: save a baseline, gate against synthetic baselines made 10x
//! faster (an injected slowdown: exit 3) and 10x slower (exit 0), and bad baselines and
//! arguments (exit 2). Kept fast with `--only decode,scorer` and a short decode.

use std::path::Path;

use serde_json::Value;

use crate::support::{promptloop, require_model, stderr, stdout, summary};

// One engine: the gate is under test here, not the engines compiled in (candle adds four variants).
const FAST: &[&str] = &["bench", "--engine", "llama", "--only", "decode,scorer", "--repeats", "1", "--decode-tokens", "16"];

fn bench(extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> = FAST.iter().chain(extra).copied().collect();
    promptloop(&args)
}

/// The saved baseline with every metric `factor` times better (rates multiplied, costs divided).
fn scaled(saved: &Value, factor: f64) -> Value {
    let mut b = saved.clone();
    for m in b["metrics"].as_array_mut().expect("metrics") {
        let v = m["value"].as_f64().expect("value");
        m["value"] = if m["better"] == "higher" { v * factor } else { v / factor }.into();
    }
    b
}

fn write(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).expect("write baseline");
}

#[test]
fn baseline_gate_fails_on_an_injected_slowdown_and_passes_otherwise() {
    require_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().unwrap();

    let out = bench(&["--dir", d, "--save", "now", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    let names: Vec<&str> = s["metrics"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llama/decode/16", "scorer/cuad-mini"], "{s}");
    assert!(s["metrics"].as_array().unwrap().iter().all(|m| m["value"].as_f64().unwrap() > 0.0), "{s}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("now.json")).expect("saved baseline")).unwrap();
    assert_eq!(saved["name"], "now");
    assert_eq!(saved["metrics"], s["metrics"]);
    let facts = &saved["facts"];
    assert!(facts["machine"]["cores"].as_u64().unwrap() >= 1, "{facts}");
    assert!(facts["model"]["sha256_first_mib"].as_str().is_some_and(|h| h.len() == 64), "{facts}");
    assert_eq!(facts["engines"][0]["kind"], "llama");
    assert_eq!(facts["promptloop_version"], env!("CARGO_PKG_VERSION"));
    assert!(facts["date"].as_str().unwrap().starts_with("20"), "{facts}");

    // A baseline 10x faster than this machine: every metric regressed, exit 3, with the table.
    write(&dir.path().join("fast.json"), &scaled(&saved, 10.0));
    let out = bench(&["--dir", d, "--baseline", "fast", "--threshold", "10%"]);
    assert_eq!(out.status.code(), Some(3), "stdout:\n{}\nstderr:\n{}", stdout(&out), stderr(&out));
    let table = stdout(&out);
    for needle in ["old", "new", "ratio", "verdict", "llama/decode/16", "scorer/cuad-mini", "2 of 2 metrics regressed beyond 10%"]
    {
        assert!(table.contains(needle), "missing `{needle}` in:\n{table}");
    }
    assert_eq!(table.matches("REGRESSED").count(), 2, "{table}");
    assert!(stderr(&out).contains("slower than baseline"), "{}", stderr(&out));

    // 10x slower: passes; a baseline-only metric of a group that ran is reported, one of a group
    // that did not run is listed as not run; neither fails the gate.
    let mut slow = scaled(&saved, 0.1);
    let extra = |name: &str, group: &str| serde_json::json!({"name": name, "group": group, "value": 1.0, "unit": "tok/s", "better": "higher"});
    slow["metrics"].as_array_mut().unwrap().extend([extra("llama/decode/999", "decode"), extra("llama/prefill/128", "prefill")]);
    let slow_path = dir.path().join("slow.json");
    write(&slow_path, &slow);
    let out = bench(&["--baseline", slow_path.to_str().unwrap(), "--threshold", "0.1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["regressed"], 0, "{s}");
    let verdict =
        |name: &str| s["comparison"]["rows"].as_array().unwrap().iter().find(|r| r["name"] == name).map(|r| r["verdict"].clone());
    assert_eq!(verdict("llama/decode/16"), Some("improved".into()), "{s}");
    assert_eq!(verdict("scorer/cuad-mini"), Some("improved".into()), "{s}");
    assert_eq!(verdict("llama/decode/999"), Some("missing".into()), "{s}");
    assert_eq!(s["comparison"]["skipped"], serde_json::json!(["llama/prefill/128"]), "{s}");
}

#[test]
fn malformed_or_missing_baseline_exits_2_naming_the_file_line_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"metrics\": [\n  {\"name\": \"llama/decode/128\", \"group\": \"decode\",\n   \"value\": \"fast\"}\n]}\n",
    )
    .unwrap();
    let out = bench(&["--baseline", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    assert!(err.contains("metrics[0].value"), "{err}");

    let out = bench(&["--dir", dir.path().to_str().unwrap(), "--baseline", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&dir.path().join("nope.json").display().to_string()), "{}", stderr(&out));
}

#[test]
fn bad_threshold_group_and_names_exit_2_before_measuring() {
    for (args, needle) in [
        (&["--threshold", "ten"][..], "not a threshold"),
        (&["--threshold", "10"][..], "did you mean 10%"),
        (&["--threshold=-5%"][..], "not a threshold"),
        (&["--only", "decode,speed"][..], "unknown metric group `speed`"),
        (&["--save", "a b"][..], "not a baseline name"),
        (&["--repeats", "0"][..], "--repeats"),
    ] {
        let out = promptloop(&[&["bench"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
