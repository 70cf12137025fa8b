//! Errors in the files `task.toml` names: the schema, the prompt and the split files. Each test
//! checks file, line (for line-based errors) and field in the message.

use serde_json::json;

use super::{line, Fixture, SCHEMA};

// ---- schema ----

#[test]
fn schema_unreadable() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("schema.json")).unwrap();
    f.error("schema.json", &["cannot read the schema"]);
}

#[test]
fn schema_not_json() {
    let f = Fixture::new();
    f.write("schema.json", "{\n  \"type\": \"object\",\n  \"properties\": {,}\n}\n");
    f.error("schema.json", &["schema.json:3:18", "not valid JSON"]);
}

#[test]
fn schema_not_a_json_schema() {
    let f = Fixture::new();
    f.write("schema.json", SCHEMA.replace("\"null\"], \"minLength\": 1}", "\"null\"], \"minLength\": -1}"));
    f.error("schema.json", &["/properties/title/minLength", "draft 2020-12"]);
}

#[test]
fn schema_not_an_object_schema() {
    let f = Fixture::new();
    f.write("schema.json", r#"{"type": "array", "items": {"type": "string"}}"#);
    f.error("schema.json", &["`type`", "\"object\""]);
}

#[test]
fn schema_without_properties() {
    let f = Fixture::new();
    f.write("schema.json", r#"{"type": "object"}"#);
    f.error("schema.json", &["`properties`"]);
}

#[test]
fn schema_top_level_not_object() {
    let f = Fixture::new();
    f.write("schema.json", "true");
    f.error("schema.json", &["(root)", "object schema"]);
}

// ---- prompt ----

#[test]
fn prompt_unreadable() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("prompt.txt")).unwrap();
    f.error("prompt.txt", &["cannot read the prompt"]);
}

#[test]
fn prompt_not_utf8() {
    let f = Fixture::new();
    f.write("prompt.txt", b"Line one\nLine \xff two\n");
    f.error("prompt.txt", &["prompt.txt:2:6", "UTF-8"]);
}

#[test]
fn prompt_empty() {
    let f = Fixture::new();
    f.write("prompt.txt", " \r\n\n");
    f.error("prompt.txt", &["prompt.txt:1", "empty"]);
}

// ---- splits ----

#[test]
fn split_unreadable() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("dev.jsonl")).unwrap();
    f.error("dev.jsonl", &["cannot read the split file"]);
}

#[test]
fn split_not_utf8() {
    let f = Fixture::new();
    let mut bytes = format!("{}\n", line("t1")).into_bytes();
    bytes.extend_from_slice(b"{\"id\": \"t\xe92\"}\n");
    f.write("train.jsonl", bytes);
    f.error("train.jsonl", &["train.jsonl:2:", "UTF-8"]);
}

#[test]
fn split_malformed_json() {
    let f = Fixture::new();
    f.write("train.jsonl", format!("{}\n\n{{\"id\": \"t2\", \"text\": }}\n", line("t1")));
    f.error("train.jsonl", &["train.jsonl:3:22", "malformed JSON"]);
}

#[test]
fn split_line_not_object() {
    let f = Fixture::new();
    f.write("train.jsonl", format!("{}\n[1, 2]\n", line("t1")));
    f.error("train.jsonl", &["train.jsonl:2", "an array"]);
}

#[test]
fn split_missing_keys() {
    for key in ["id", "text", "expected"] {
        let f = Fixture::new();
        let mut value: serde_json::Value = serde_json::from_str(&line("t2")).unwrap();
        value.as_object_mut().unwrap().remove(key);
        f.write("train.jsonl", format!("{}\n{value}\n", line("t1")));
        f.error("train.jsonl", &["train.jsonl:2", &format!("missing key `{key}`")]);
    }
}

#[test]
fn split_id_not_string() {
    let f = Fixture::new();
    f.write("train.jsonl", line("t1").replace("\"t1\"", "17"));
    f.error("train.jsonl", &["train.jsonl:1", "`id`", "a number"]);
}

#[test]
fn split_id_empty() {
    let f = Fixture::new();
    f.write("train.jsonl", format!("{}\n{}\n", line("t1"), line(" ")));
    f.error("train.jsonl", &["train.jsonl:2", "`id`", "empty"]);
}

#[test]
fn split_text_not_string() {
    let f = Fixture::new();
    let mut value: serde_json::Value = serde_json::from_str(&line("t1")).unwrap();
    value["text"] = json!(["not", "text"]);
    f.write("train.jsonl", format!("{value}\n"));
    f.error("train.jsonl", &["train.jsonl:1", "`text`", "`t1`", "an array"]);
}

#[test]
fn split_duplicate_id() {
    let f = Fixture::new();
    f.write("train.jsonl", format!("{}\n{}\n\n{}\n", line("t1"), line("t2"), line("t1")));
    f.error("train.jsonl", &["train.jsonl:4", "duplicate id `t1`", "first at line 1"]);
}

#[test]
fn split_leakage_across_splits() {
    let f = Fixture::new();
    f.write("dev.jsonl", format!("{}\n{}\n", line("d1"), line("t2")));
    let message = f.error("train.jsonl", &["train.jsonl:2", "dev.jsonl:2", "`t2`", "leakage"]);
    assert!(message.contains(&f.path("dev.jsonl").display().to_string()), "{message}");
}

#[test]
fn split_expected_violates_schema() {
    let f = Fixture::new();
    let mut value: serde_json::Value = serde_json::from_str(&line("t2")).unwrap();
    value["expected"]["parties"] = json!(["", "B"]);
    f.write("train.jsonl", format!("{}\n{value}\n", line("t1")));
    f.error("train.jsonl", &["train.jsonl:2", "`t2`", "/parties/0", "shorter than 1"]);
}

#[test]
fn split_expected_missing_required_field() {
    let f = Fixture::new();
    let mut value: serde_json::Value = serde_json::from_str(&line("t1")).unwrap();
    value["expected"].as_object_mut().unwrap().remove("flag");
    f.write("train.jsonl", format!("{value}\n"));
    f.error("train.jsonl", &["train.jsonl:1", "`t1`", "flag"]);
}

#[test]
fn split_empty() {
    let f = Fixture::new();
    f.write("dev.jsonl", "\n  \n\r\n");
    f.error("dev.jsonl", &["split `dev` has no examples"]);
}
