//! `promptloop init` end to end: a task from one JSONL file of cuad-mini's records; a small
//! generated task evaluated on one example by the real model; bad input exits 2 naming
//! `file:line`.

use crate::support::{cuad_mini, promptloop, require_model, stderr, stdout, summary};

#[test]
fn init_writes_a_task_that_eval_runs() {
    require_model();
    let scratch = tempfile::tempdir().expect("temp dir");
    // cuad-mini's records (read from the data root), as one file a user would bring.
    let task = harness::task::Task::load(&cuad_mini()).unwrap_or_else(|e| panic!("{e}"));
    let all: String = ["train", "dev", "test"]
        .iter()
        .flat_map(|s| &task.splits[*s].examples)
        .map(|e| serde_json::json!({"id": e.id, "text": e.text, "expected": e.expected}).to_string() + "\n")
        .collect();
    let from = scratch.path().join("examples.jsonl");
    std::fs::write(&from, all).unwrap();
    let dir = scratch.path().join("contracts");
    let (dir_s, from_s) = (dir.to_str().unwrap(), from.to_str().unwrap());

    let out = promptloop(&["init", dir_s, "--from", from_s, "--document-label", "Contract"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("from 38 records"), "{text}");
    assert!(text.contains(&format!("promptloop eval --task {dir_s} --split dev")), "{text}");
    assert!(text.contains(&format!("promptloop optimize --task {dir_s} --out runs/contracts")), "{text}");
    assert!(dir.join("task.toml").is_file() && dir.join("schema.json").is_file());

    // A second init into the same directory is refused (exit 2) unless --force.
    let again = promptloop(&["init", dir_s, "--from", from_s]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    // One real eval on a small generated task whose schema has an enum, an ISO date (format
    // date) and a number: the constraint and the matchers take what init wrote.
    let kinds = ["invoice", "receipt"];
    let records: String = (0..6)
        .map(|i| {
            let text = format!("{} no. {i} from Acme Corp., dated 2021-03-0{}, total {}.50 EUR.", kinds[i % 2], i + 1, 10 * i);
            let gold =
                serde_json::json!({"kind": kinds[i % 2], "date": format!("2021-03-0{}", i + 1), "total": 10.0 * i as f64 + 0.5});
            serde_json::json!({"text": text, "expected": gold}).to_string() + "\n"
        })
        .collect();
    let small = scratch.path().join("small.jsonl");
    std::fs::write(&small, records).unwrap();
    let small_dir = scratch.path().join("receipts");
    let small_s = small_dir.to_str().unwrap();
    let out = promptloop(&["init", small_s, "--from", small.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let schema = std::fs::read_to_string(small_dir.join("schema.json")).unwrap();
    assert!(schema.contains("\"format\": \"date\"") && schema.contains("\"enum\""), "{schema}");
    let out = promptloop(&["eval", "--task", small_s, "--split", "dev", "--limit", "1", "--model", "smollm2-135m", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["examples"], 1, "{s}");
    assert!(s["errors"].as_object().is_some_and(serde_json::Map::is_empty), "{s}");
    assert_eq!(s["failure_classes"]["format"].as_u64().unwrap_or(0), 0, "constrained output fits the schema: {s}");

    // Malformed input: exit 2, the message names the file and line.
    let bad = scratch.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"a\", \"text\": \"t\", \"expected\": {}}\n{\"id\": \n").unwrap();
    let out = promptloop(&["init", scratch.path().join("other").to_str().unwrap(), "--from", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("{}:2:", bad.display())), "{}", stderr(&out));
}
