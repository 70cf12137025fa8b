//! Tests of `init`: the cuad-mini round trip, inference, CSV input, splits, and one test per
//! input error checking that the message names `file:line` and the field.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tempfile::TempDir;

use super::{init, Fields, InitError, InitOptions, Matcher, Sizes};
use crate::task::MatchRule;

struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write input");
        path
    }

    fn opts(&self, from: &Path) -> InitOptions {
        InitOptions {
            dir: self.dir.path().join("task"),
            from: from.to_path_buf(),
            fields: Fields::default(),
            schema: None,
            document_label: "Document".into(),
            sizes: None,
            force: false,
        }
    }

    /// `init` on `text` as `name`, expecting an error that names `name:line` and `parts`.
    fn error(&self, name: &str, text: &str, line: usize, parts: &[&str]) -> InitError {
        self.error_with(Fields::default(), name, text, line, parts)
    }

    /// [`Self::error`] with other field names.
    fn error_with(&self, fields: Fields, name: &str, text: &str, line: usize, parts: &[&str]) -> InitError {
        let from = self.file(name, text);
        let mut opts = self.opts(&from);
        opts.force = true;
        opts.fields = fields;
        let err = init(&opts).expect_err("an error");
        let message = err.to_string();
        let at = format!("{}:{line}", from.display());
        assert!(message.contains(&at), "message lacks {at}:\n{message}");
        for p in parts {
            assert!(message.contains(p), "message lacks {p:?}:\n{message}");
        }
        assert!(err.is_input());
        err
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("task").join(name)).expect("written file")
    }
}

fn jsonl(records: &[Value]) -> String {
    records.iter().map(|r| r.to_string() + "\n").collect()
}

/// cuad-mini's records (read from the data root) as one JSONL file, train, dev, test.
fn cuad_mini_lines() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad-mini");
    let task = crate::task::Task::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    ["train", "dev", "test"]
        .iter()
        .flat_map(|s| &task.splits[*s].examples)
        .map(|e| serde_json::json!({"id": e.id, "text": e.text, "expected": e.expected}).to_string() + "\n")
        .collect()
}

#[test]
fn cuad_mini_round_trips() {
    let s = Scratch::new();
    let lines = cuad_mini_lines();
    let from = s.file("all.jsonl", &lines);
    let report = init(&s.opts(&from)).expect("init");
    assert_eq!(report.records, 38);
    let task = &report.task;
    assert_eq!(task.name, "task");
    assert_eq!(task.splits.values().map(|s| s.examples.len()).sum::<usize>(), 38);
    assert_eq!(task.splits.values().map(|s| s.examples.len()).collect::<Vec<_>>(), vec![8, 7, 23], "dev, test, train");
    let names: Vec<&str> = task.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["document_name", "parties", "agreement_date", "governing_law"], "the file's key order");
    let rule = |n: &str| task.field(n).unwrap().rule;
    assert_eq!(rule("parties"), MatchRule::List { fuzzy: 0.85 });
    assert_eq!(rule("agreement_date"), MatchRule::Date { day_first: false });
    // Contract titles are several words: free text, matched by word similarity (issue 26: `init`
    // picks the matcher a user would). Governing laws are mostly one word ("Delaware"): exact.
    assert_eq!(rule("document_name"), MatchRule::Text { fuzzy: crate::task::DEFAULT_TEXT_FUZZY });
    assert_eq!(rule("governing_law"), MatchRule::Exact);
    assert_eq!(task.framing.label(), "Document");
    // The inferred schema accepts every gold object as given, and the texts came through.
    let validator = task.validator().unwrap();
    for l in lines.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(validator.is_valid(&v["expected"]), "{}", v["id"]);
        let ex = task.splits.values().flat_map(|s| &s.examples).find(|e| e.id == v["id"]).expect("every id in a split");
        assert_eq!((&ex.text, &ex.expected), (&v["text"].as_str().unwrap().to_owned(), &v["expected"]));
    }
    let schema: Value = serde_json::from_str(&s.read("schema.json")).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["properties"]["parties"]["type"], json!(["array", "null"]));
    assert_eq!(schema["properties"]["parties"]["items"], json!({"type": "string", "minLength": 1}));
    assert_eq!(schema["additionalProperties"], false);
    // Deterministic: the same input gives the same files.
    let first = (s.read("train.jsonl"), s.read("task.toml"), s.read("schema.json"), s.read("prompt.txt"));
    let mut again = s.opts(&from);
    again.force = true;
    init(&again).expect("init again");
    assert_eq!(first, (s.read("train.jsonl"), s.read("task.toml"), s.read("schema.json"), s.read("prompt.txt")));
    // ... and the split does not depend on the file's order.
    let reversed: String = lines.lines().rev().map(|l| l.to_owned() + "\n").collect();
    let from = s.file("reversed.jsonl", &reversed);
    let mut opts = s.opts(&from);
    opts.force = true;
    let back = init(&opts).expect("init reversed");
    let ids = |t: &crate::task::Task| {
        let mut v: Vec<String> = t.split("train").unwrap().examples.iter().map(|e| e.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&back.task), ids(task));
}

#[test]
fn infers_types_enums_dates_and_nulls() {
    let s = Scratch::new();
    let records: Vec<Value> = (0..10)
        .map(|i| {
            let mut gold = json!({
                "kind": if i % 2 == 0 { "lease" } else { "sale" },
                "signed": format!("2020-01-{:02}", i + 1),
                "amount": if i == 3 { json!(2.5) } else { json!(i) },
                "tags": ["a", "b"],
                "urgent": i % 3 == 0,
                "note": format!("free text {i}"),
            });
            if i == 4 {
                gold.as_object_mut().unwrap().remove("note");
            }
            json!({"doc": format!("Document {i}"), "gold": gold})
        })
        .collect();
    let from = s.file("ex.jsonl", &jsonl(&records));
    let mut opts = s.opts(&from);
    opts.fields = Fields { text: "doc".into(), gold: "gold".into(), id: "id".into() };
    opts.document_label = "Ticket".into();
    let report = init(&opts).expect("init");
    let plan = |n: &str| report.fields.iter().find(|f| f.name == n).unwrap().clone();
    assert_eq!(plan("kind").matcher, Matcher::Enum);
    assert_eq!(plan("signed").matcher, Matcher::Date);
    assert_eq!(plan("amount").matcher, Matcher::Number);
    assert_eq!(plan("tags").matcher, Matcher::List);
    assert_eq!(plan("urgent").matcher, Matcher::Exact);
    assert_eq!(plan("note").matcher, Matcher::Text, "several words: free text (was exact before issue 26)");
    let schema: Value = serde_json::from_str(&s.read("schema.json")).unwrap();
    let p = &schema["properties"];
    assert_eq!(p["kind"], json!({"type": "string", "enum": ["lease", "sale"], "description": "one of \"lease\", \"sale\""}));
    assert_eq!(p["signed"]["format"], "date");
    assert_eq!(p["amount"]["type"], "number", "integers and numbers merge");
    assert_eq!(p["urgent"]["type"], "boolean");
    assert_eq!(p["note"]["type"], json!(["string", "null"]), "absent once: nullable");
    assert_eq!(report.stratified_by.as_deref(), Some("kind"), "the enum with the most entropy");
    // Ids were generated; the absent field is written as null; every split has both kinds.
    let train = &report.task.split("train").unwrap().examples;
    assert!(train.iter().all(|e| e.id.starts_with("ex-00")));
    let all: Vec<_> = report.task.splits.values().flat_map(|s| &s.examples).collect();
    assert_eq!(all.iter().find(|e| e.id == "ex-0005").unwrap().expected["note"], Value::Null);
    for split in report.task.splits.values() {
        let kinds: std::collections::BTreeSet<_> = split.examples.iter().map(|e| e.expected["kind"].to_string()).collect();
        assert_eq!(kinds.len(), 2, "{}: stratified", split.name);
    }
    let toml = s.read("task.toml");
    assert!(toml.contains("document-label = \"Ticket\"") && toml.contains("[fields.tags]\nmatch = \"list\""), "{toml}");
    assert_eq!(report.task.framing.document("x"), "Ticket:\n\nx");
    let prompt = s.read("prompt.txt");
    assert!(prompt.contains("- kind: one of \"lease\", \"sale\".") && prompt.contains("Read the ticket"), "{prompt}");
}

#[test]
fn csv_with_a_json_column() {
    let s = Scratch::new();
    let mut csv = String::from("id,body,answer\n");
    for i in 0..5 {
        let _ = write!(csv, "r{i},\"Line one, with a comma\nline two {i}\",\"{{\"\"who\"\": \"\"P{i}\"\", \"\"n\"\": {i}}}\"\n");
    }
    let from = s.file("ex.csv", &csv);
    let mut opts = s.opts(&from);
    opts.fields = Fields { text: "body".into(), gold: "answer".into(), id: "id".into() };
    opts.sizes = Some(Sizes { train: 2, dev: 1, test: 1 });
    let report = init(&opts).expect("init from CSV");
    let examples: Vec<_> = report.task.splits.values().flat_map(|s| &s.examples).collect();
    assert_eq!(examples.len(), 4, "explicit sizes leave one record out");
    let r1 = examples.iter().find(|e| e.id == "r1");
    if let Some(r1) = r1 {
        assert_eq!(r1.text, "Line one, with a comma\nline two 1");
        assert_eq!(r1.expected, json!({"who": "P1", "n": 1}));
    }
    // A bad JSON cell names its row's line (rows span two lines here) and the column.
    let bad = csv.replace("\"\"n\"\": 3}", "\"\"n\"\": }");
    s.error_with(opts.fields, "bad.csv", &bad, 8, &["`answer`", "not valid JSON"]);
}

#[test]
fn input_errors_name_file_line_and_field() {
    let s = Scratch::new();
    let ok = |i: usize| json!({"id": format!("e{i}"), "text": "t", "expected": {"a": "x"}}).to_string();
    s.error("bad.jsonl", &format!("{}\n{{\"id\": \"e2\", \"text\": \n{}\n", ok(1), ok(3)), 2, &["malformed JSON"]);
    s.error("nogold.jsonl", &format!("{}\n\n{}\n", ok(1), json!({"id": "e2", "text": "t"})), 3, &["`expected`", "missing"]);
    s.error("notext.jsonl", &format!("{}\n", json!({"id": "e2", "expected": {}})), 1, &["`text`"]);
    s.error(
        "gold.jsonl",
        &format!("{}\n{}\n", ok(1), json!({"id": "e2", "text": "t", "expected": [1]})),
        2,
        &["`expected`", "an array"],
    );
    s.error("text.jsonl", &format!("{}\n", json!({"id": "e2", "text": 5, "expected": {}})), 1, &["`text`", "a number"]);
    s.error("record.jsonl", "[1, 2]\n", 1, &["JSON object"]);
    s.error("dup.jsonl", &format!("{}\n{}\n", ok(1), ok(1)), 2, &["duplicate id `e1`", "line 1"]);
    s.error("empty.jsonl", "", 1, &["no records"]);
    s.error("blank.jsonl", "\n  \n", 1, &["no records"]);
    let conflict = jsonl(&[
        json!({"id": "a", "text": "t", "expected": {"n": 1, "s": "x"}}),
        json!({"id": "b", "text": "t", "expected": {"n": null, "s": "y"}}),
        json!({"id": "c", "text": "t", "expected": {"n": "one", "s": "z"}}),
    ]);
    s.error("conflict.jsonl", &conflict, 3, &["`n`", "a string here but an integer at line 1"]);
    let items = jsonl(&[
        json!({"id": "a", "text": "t", "expected": {"l": ["x"]}}),
        json!({"id": "b", "text": "t", "expected": {"l": [true]}}),
    ]);
    s.error("items.jsonl", &items, 2, &["`l[]`", "a boolean"]);
    s.error("cols.csv", "id,body\n1,x\n", 1, &["`text`", "no such column", "id, body"]);
    let few = s.file("few.jsonl", &format!("{}\n{}\n", ok(1), ok(2)));
    let message = init(&s.opts(&few)).expect_err("too few").to_string();
    assert!(message.contains(&few.display().to_string()) && message.contains("at least 3"), "{message}");
}

#[test]
fn refuses_to_overwrite_and_checks_a_given_schema() {
    let s = Scratch::new();
    let records: Vec<Value> =
        (0..4).map(|i| json!({"id": format!("e{i}"), "text": "t", "expected": {"a": format!("v{i}")}})).collect();
    let from = s.file("ex.jsonl", &jsonl(&records));
    init(&s.opts(&from)).expect("first init");
    let err = init(&s.opts(&from)).expect_err("task.toml exists");
    assert!(matches!(err, InitError::Exists { .. }) && err.to_string().contains("--force"), "{err}");

    let schema = s.file(
        "schema.json",
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["a"], "properties": {"a": {"type": "string", "pattern": "^v[0-2]$"}}}"#,
    );
    let mut opts = s.opts(&from);
    opts.force = true;
    opts.schema = Some(schema.clone());
    let err = init(&opts).expect_err("e3 does not match the pattern");
    let message = err.to_string();
    assert!(message.contains(&format!("{}:4", from.display())) && message.contains("/a"), "{message}");

    let ok: Vec<Value> = records.into_iter().take(3).collect();
    opts.from = s.file("ok.jsonl", &jsonl(&ok));
    let report = init(&opts).expect("given schema");
    assert!(report.schema_given);
    assert_eq!(s.read("schema.json"), std::fs::read_to_string(&schema).unwrap(), "copied as given");
}

/// Issue 26's receipts: `init` picks `number` for numeric text, `text` for names and addresses,
/// `date` (day first when the gold shows it) for dates, and keeps `exact` for codes.
#[test]
fn picks_the_matchers_a_user_would() {
    let s = Scratch::new();
    let streets = ["Main Street", "High St", "Rue de la Paix", "Baker Street", "Elm Road", "Park Avenue"];
    let names = ["Joe's Diner", "Cafe Central", "The Corner Shop", "Blue Bottle Coffee", "Green Grocer Ltd", "Pizza Palace"];
    let towns = ["Springfield", "Shelbyville"];
    let records: Vec<Value> = (0..12)
        .map(|i| {
            let gold = json!({
                "store": format!("{} {}", names[i % 6], towns[i / 6]),
                "address": format!("{} {}, Springfield", 10 + i, streets[i % 6]),
                "total": format!("{}.{:02}", 3 * i + 1, 7 * i % 100),
                "amount": format!("${},{:03}", i + 1, 250),
                "date": format!("{}/{:02}/2020", 13 + i, i % 12 + 1),
                "invoice": format!("INV-{:04}", 100 + i),
            });
            json!({"id": format!("r{i}"), "text": format!("receipt {i}"), "expected": gold})
        })
        .collect();
    let from = s.file("receipts.jsonl", &jsonl(&records));
    let report = init(&s.opts(&from)).expect("init");
    let plan = |n: &str| report.fields.iter().find(|f| f.name == n).unwrap().clone();
    assert_eq!(plan("store").matcher, Matcher::Text);
    assert_eq!(plan("address").matcher, Matcher::Text);
    assert_eq!(plan("total").matcher, Matcher::Number, "\"12.50\" is a number");
    assert_eq!(plan("amount").matcher, Matcher::Number, "\"$1,250\" is a number");
    assert_eq!(plan("date").matcher, Matcher::Date);
    assert!(plan("date").day_first, "13/01/2020 reads day first only");
    assert_eq!(plan("invoice").matcher, Matcher::Exact, "a code: a near miss is wrong");
    let toml = s.read("task.toml");
    assert!(toml.contains("[fields.address]\nmatch = \"text\"\nfuzzy = 0.8\n"), "{toml}");
    assert!(toml.contains("[fields.date]\nmatch = \"date\"\nday-first = true\n"), "{toml}");
    assert!(toml.contains("[fields.total]\nmatch = \"number\"\n"), "{toml}");
    // The task loads with those rules, and they score as intended.
    let task = &report.task;
    assert_eq!(task.field("date").unwrap().rule, MatchRule::Date { day_first: true });
    assert_eq!(task.field("total").unwrap().rule, MatchRule::Number { tolerance: crate::task::DEFAULT_TOLERANCE });
    let gold = json!({"store": "Joe's Diner Springfield", "address": "10 Main Street, Springfield", "total": "12.50", "amount": "$1,250",
        "date": "13/01/2020", "invoice": "INV-0100"});
    let answer = json!({"store": "Joes Diner, Springfield", "address": "10 Main St, Springfield", "total": "12.5", "amount": 1250,
        "date": "2020-01-13", "invoice": "INV-0100"});
    let score = crate::score::score_example(&task.fields, &answer.to_string(), false, &gold, None);
    let by_field: Vec<(&str, f64)> = score.fields.iter().map(|f| (f.field.as_str(), f.score)).collect();
    assert!(by_field.iter().all(|(_, v)| *v > 0.9), "{by_field:?}");
    assert!(!s.read("prompt.txt").is_empty());
}

/// Dates that read either way (01/02/2020) keep month first; ISO dates get `"format": "date"`.
#[test]
fn ambiguous_dates_stay_month_first() {
    let s = Scratch::new();
    let records: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("r{i}"), "text": "t", "expected": {"when": format!("{:02}/{:02}/2021", i + 1, i + 2)}}))
        .collect();
    let from = s.file("dates.jsonl", &jsonl(&records));
    let report = init(&s.opts(&from)).expect("init");
    assert_eq!(report.fields[0].matcher, Matcher::Date);
    assert!(!report.fields[0].day_first);
    assert_eq!(report.task.field("when").unwrap().rule, MatchRule::Date { day_first: false });
    assert!(!s.read("task.toml").contains("\nday-first = true"));
}
