//! Tests for task loading: the fixture, the success paths (defaults, options, CRLF/BOM, the real
//! CUAD data). The error tests, one per error the loader reports, each checking that the message
//! names the file, the line and the field, are in `toml_errors` and `file_errors`.

use std::path::{Path, PathBuf};

use serde_json::json;
use tempfile::TempDir;

mod file_errors;
mod toml_errors;

use super::{BoundsConfig, Framing, Layout, MatchRule, Task, TaskError};

pub(super) const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["title", "parties", "start_date", "amount", "flag"],
  "properties": {
    "title": {"type": ["string", "null"], "minLength": 1},
    "parties": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1}},
    "start_date": {"type": ["string", "null"]},
    "amount": {"type": ["number", "null"]},
    "flag": {"type": "string", "enum": ["Yes", "No"]}
  }
}
"#;

pub(super) const TOML: &str = r#"schema = "schema.json"
prompt = "prompt.txt"

[splits]
train = "train.jsonl"
dev = "dev.jsonl"
"#;

/// A valid `expected` line for `id`.
pub(super) fn line(id: &str) -> String {
    json!({
        "id": id,
        "text": format!("Agreement {id} between A and B."),
        "expected": {"title": "T", "parties": ["A Inc.", "B"], "start_date": "2010-01-01", "amount": 5, "flag": "Yes"}
    })
    .to_string()
}

/// A task directory in a temp dir, valid until a test overwrites one of its files.
pub(super) struct Fixture {
    pub(super) dir: TempDir,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let dir = tempfile::Builder::new().prefix("mini-task").tempdir().expect("create temp dir");
        let f = Fixture { dir };
        f.write("task.toml", TOML);
        f.write("schema.json", SCHEMA);
        f.write("prompt.txt", "Extract the fields as JSON.\n");
        f.write("train.jsonl", format!("{}\n{}\n", line("t1"), line("t2")));
        f.write("dev.jsonl", format!("{}\n{}\n", line("d1"), line("d2")));
        f
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(super) fn write(&self, name: &str, content: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), content).expect("write fixture file");
    }

    pub(super) fn load(&self) -> Result<Task, TaskError> {
        Task::load(self.dir.path())
    }

    /// Loads, expecting an error; returns its message after checking that it contains the full
    /// path of `file` and every string in `parts`.
    pub(super) fn error(&self, file: &str, parts: &[&str]) -> String {
        let message = match self.load() {
            Ok(_) => panic!("expected an error about {file}, but the task loaded"),
            Err(err) => err.to_string(),
        };
        let full = self.path(file).display().to_string();
        assert!(message.contains(&full), "message does not name {full}:\n{message}");
        for part in parts {
            assert!(message.contains(part), "message lacks {part:?}:\n{message}");
        }
        message
    }

    /// Replaces `task.toml` with [`TOML`] plus `extra`.
    pub(super) fn toml_with(&self, extra: &str) {
        self.write("task.toml", format!("{TOML}{extra}"));
    }
}

// ---- success paths ----

#[test]
fn loads_with_defaults() {
    let f = Fixture::new();
    let task = f.load().expect("fixture loads");
    let dir_name = f.dir.path().file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(task.name, dir_name);
    assert_eq!(task.description, None);
    assert_eq!(task.max_tokens, 256);
    assert_eq!(task.layout, Layout::InstructionFirst);
    assert_eq!(task.framing, Framing::default());
    assert_eq!(task.framing.label(), "Document");
    assert_eq!(task.bounds, BoundsConfig::default());
    assert_eq!(task.prompt, "Extract the fields as JSON.\n");
    assert!(task.dir.is_absolute());
    assert_eq!(task.schema_path, f.path("schema.json"));
    // Fields in schema order (not alphabetical) with rules from the schema types.
    let fields: Vec<(&str, MatchRule)> = task.fields.iter().map(|s| (s.name.as_str(), s.rule)).collect();
    assert_eq!(
        fields,
        vec![
            ("title", MatchRule::Exact),
            ("parties", MatchRule::List { fuzzy: 0.85 }),
            ("start_date", MatchRule::Date { day_first: false }),
            ("amount", MatchRule::Number { tolerance: 1e-6 }),
            ("flag", MatchRule::Enum),
        ]
    );
    let train = task.split("train").unwrap();
    assert_eq!(train.examples.len(), 2);
    assert_eq!(train.examples[1].id, "t2");
    assert_eq!(train.examples[1].line, 2);
    assert_eq!(train.path, f.path("train.jsonl"));
    assert!(task.validator().unwrap().is_valid(&train.examples[0].expected));
}

#[test]
fn loads_explicit_options() {
    let f = Fixture::new();
    f.write(
        "task.toml",
        r#"name = "mini"
description = "a small task"
schema = "schema.json"
prompt = "prompt.txt"
max-tokens = 512
layout = "document-first"
document-label = "Support ticket #"

[splits]
dev = "dev.jsonl"

[bounds]
enabled = false
quantile = 0.75
headroom = 2.0
min-max-length = 8
from-split = "dev"

[fields.parties]
match = "list"
fuzzy = 0.9

[fields.amount]
tolerance = 0.01

[fields.title]
match = "enum"
"#,
    );
    let task = f.load().expect("loads");
    assert_eq!(task.name, "mini");
    assert_eq!(task.description.as_deref(), Some("a small task"));
    assert_eq!(task.max_tokens, 512);
    assert_eq!(task.layout, Layout::DocumentFirst);
    assert_eq!(task.framing.document("x"), "Support ticket #:\n\nx");
    let bounds = BoundsConfig { enabled: false, quantile: 0.75, headroom: 2.0, min_max_length: 8, from_split: "dev".into() };
    assert_eq!(task.bounds, bounds);
    assert_eq!(task.field("parties").unwrap().rule, MatchRule::List { fuzzy: 0.9 });
    assert_eq!(task.field("amount").unwrap().rule, MatchRule::Number { tolerance: 0.01 });
    assert_eq!(task.field("title").unwrap().rule, MatchRule::Enum);
    assert_eq!(task.splits.len(), 1);
}

#[test]
fn text_rule_and_date_order_options() {
    let f = Fixture::new();
    f.toml_with("\n[fields.title]\nmatch = \"text\"\n\n[fields.start_date]\nday-first = true\n");
    let task = f.load().expect("loads");
    assert_eq!(task.field("title").unwrap().rule, MatchRule::Text { fuzzy: super::DEFAULT_TEXT_FUZZY });
    assert_eq!(task.field("start_date").unwrap().rule, MatchRule::Date { day_first: true });
    f.toml_with("\n[fields.title]\nmatch = \"text\"\nfuzzy = 0.9\n");
    assert_eq!(f.load().unwrap().field("title").unwrap().rule, MatchRule::Text { fuzzy: 0.9 });
}

/// Without `day-first`, a date field reads numeric dates in the order its gold dates show.
#[test]
fn date_order_comes_from_the_gold_unless_given() {
    let f = Fixture::new();
    let with_date = |id: &str, date: &str| line(id).replace("2010-01-01", date);
    // One gold date that only reads day first (dev) decides for the field.
    f.write("train.jsonl", format!("{}\n{}\n", with_date("t1", "01/02/2010"), with_date("t2", "2010-01-05")));
    f.write("dev.jsonl", format!("{}\n", with_date("d1", "25/03/2010")));
    assert_eq!(f.load().unwrap().field("start_date").unwrap().rule, MatchRule::Date { day_first: true });
    // Given explicitly, the gold does not override it (health warns instead).
    f.toml_with("\n[fields.start_date]\nday-first = false\n");
    let task = f.load().unwrap();
    assert_eq!(task.field("start_date").unwrap().rule, MatchRule::Date { day_first: false });
    let warnings = super::health::check(&task, &super::health::HealthOptions::default());
    assert!(warnings.iter().any(|w| matches!(w, super::health::Warning::DateOrder { against: 1, .. })), "{warnings:?}");
    // Month-first proof, or ambiguous dates only: month first.
    f.toml_with("");
    f.write("dev.jsonl", format!("{}\n", with_date("d1", "03/25/2010")));
    assert_eq!(f.load().unwrap().field("start_date").unwrap().rule, MatchRule::Date { day_first: false });
    f.write("dev.jsonl", format!("{}\n", with_date("d1", "03/04/2010")));
    assert_eq!(f.load().unwrap().field("start_date").unwrap().rule, MatchRule::Date { day_first: false });
}

#[test]
fn accepts_task_toml_path_and_absolute_paths() {
    let f = Fixture::new();
    let other = TempDir::new().unwrap();
    let schema = other.path().join("elsewhere.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    f.write("task.toml", TOML.replace("\"schema.json\"", &format!("{:?}", schema.display().to_string())));
    let task = Task::load(&f.path("task.toml")).expect("loads via task.toml path");
    assert_eq!(task.schema_path, schema);
    assert_eq!(task.dir, f.dir.path());
}

#[test]
fn accepts_crlf_bom_and_blank_lines() {
    let f = Fixture::new();
    let bom = "\u{feff}";
    f.write("task.toml", format!("{bom}{}", TOML.replace('\n', "\r\n")));
    f.write("schema.json", format!("{bom}{}", SCHEMA.replace('\n', "\r\n")));
    f.write("prompt.txt", format!("{bom}Line one.\r\nLine two.\r\n"));
    f.write("train.jsonl", format!("{bom}{}\r\n\r\n   \r\n{}\r\n\r\n", line("t1"), line("t2")));
    let task = f.load().expect("CRLF and BOM are fine");
    assert_eq!(task.prompt, "Line one.\nLine two.\n");
    let lines: Vec<usize> = task.splits["train"].examples.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 4]);
}

#[test]
fn an_empty_document_label_means_no_head() {
    let f = Fixture::new();
    f.write("task.toml", format!("document-label = \"\"\n{TOML}"));
    let task = f.load().unwrap();
    assert_eq!(task.framing.label(), "");
    assert_eq!(task.framing.document("x"), "x");
}

#[test]
fn the_cuad_tasks_frame_contracts() {
    let evals = Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals");
    for name in ["cuad", "cuad-mini"] {
        let task = Task::load(&evals.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(task.framing, Framing::new("Contract").unwrap(), "{name}");
    }
}

#[test]
fn unknown_split_lists_available() {
    let f = Fixture::new();
    let task = f.load().unwrap();
    let err = task.split("test").unwrap_err().to_string();
    assert!(err.contains("`test`") && err.contains("dev, train"), "{err}");
}

#[test]
fn bounds_off_by_default_without_train_split() {
    let f = Fixture::new();
    f.write("task.toml", TOML.replace("train = \"train.jsonl\"\n", ""));
    let task = f.load().unwrap();
    assert!(!task.bounds.enabled);
}

// ---- the real data ----

/// The shared datasets' folder of `name`, found as the shipped tasks find it.
fn dataset(name: &str) -> PathBuf {
    let evals = Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad");
    super::data::dataset_dir(name, &evals).unwrap_or_else(|e| panic!("{e}"))
}

/// Every shipped task loads from the data root with the split sizes its task.toml selects, and
/// every gold object scores perfectly against itself under the task's matchers.
#[test]
fn every_shipped_task_loads_from_the_data_root_and_its_gold_scores_perfectly() {
    let evals = Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals");
    let expect = [
        ("banking77", [("dev", 40), ("test", 100), ("train", 60)], 1),
        ("cuad", [("dev", 40), ("test", 100), ("train", 60)], 41),
        ("cuad-mini", [("dev", 10), ("test", 12), ("train", 16)], 4),
        ("evidence-inference", [("dev", 40), ("test", 92), ("train", 60)], 1),
        ("nlupp-hotels", [("dev", 40), ("test", 100), ("train", 60)], 15),
    ];
    for (name, sizes, fields) in expect {
        let task = Task::load(&evals.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<(&str, usize)> = task.splits.values().map(|s| (s.name.as_str(), s.examples.len())).collect();
        assert_eq!(got, sizes, "{name}");
        assert_eq!(task.fields.len(), fields, "{name}");
        assert!(task.data.as_ref().is_some_and(|d| d.is_dir()), "{name}: {:?}", task.data);
        let validator = task.validator().unwrap();
        for split in task.splits.values() {
            for example in &split.examples {
                assert_eq!(example.expected.as_object().map(serde_json::Map::len), Some(fields), "{name} {}", example.id);
                let output = example.expected.to_string();
                let score = crate::score::score_example(&task.fields, &output, false, &example.expected, Some(&validator));
                assert!(
                    score.all_correct() && (score.score - 1.0).abs() < 1e-12,
                    "{name} {} {}: {score:?}",
                    split.name,
                    example.id
                );
            }
        }
    }
    // cuad-mini: short contracts only; evidence-inference: texts cut to 4,000 characters.
    let mini = Task::load(&evals.join("cuad-mini")).unwrap();
    assert!(mini.splits.values().flat_map(|s| &s.examples).all(|e| e.text.chars().count() <= 10_000));
    let ei = Task::load(&evals.join("evidence-inference")).unwrap();
    assert!(ei.splits.values().flat_map(|s| &s.examples).all(|e| e.text.chars().count() <= 4000));
    assert!(ei.splits.values().flat_map(|s| &s.examples).any(|e| e.text.chars().count() == 4000));
}

/// nlupp-hotels' slots are sparse: answering null everywhere scores only the intents.
#[test]
fn answering_null_everywhere_on_nlupp_earns_nothing_on_its_slots() {
    let evals = Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals");
    let task = Task::load(&evals.join("nlupp-hotels")).unwrap();
    let dev = &task.split("dev").unwrap().examples;
    let with_slot =
        dev.iter().find(|e| e.expected.as_object().unwrap().iter().any(|(k, v)| k != "intents" && !v.is_null())).unwrap();
    let mut nulls = with_slot.expected.clone();
    for (k, v) in nulls.as_object_mut().unwrap() {
        if k != "intents" {
            *v = serde_json::Value::Null;
        }
    }
    let score = crate::score::score_example(&task.fields, &nulls.to_string(), false, &with_slot.expected, None);
    let gold_slots = with_slot.expected.as_object().unwrap().iter().filter(|(k, v)| *k != "intents" && !v.is_null()).count();
    // Intents right (1), every gold slot missed (0): the mean is over those fields only.
    assert!((score.score - 1.0 / (1 + gold_slots) as f64).abs() < 1e-12, "{score:?}");
    assert_eq!(score.fields.iter().filter(|f| f.scored).count(), 1 + gold_slots);
}

#[test]
fn loads_real_cuad_data_by_absolute_path() {
    let cuad = dataset("cuad");
    let f = Fixture::new();
    let abs = |name: &str| format!("{:?}", cuad.join(name).display().to_string());
    f.write(
        "task.toml",
        format!(
            "name = \"cuad\"\nschema = {}\nprompt = \"prompt.txt\"\n\n[splits]\ntrain = {}\ndev = {}\ntest = {}\n\n[fields.parties]\nfuzzy = 0.8\n",
            abs("schema.json"),
            abs("train.jsonl"),
            abs("dev.jsonl"),
            abs("test.jsonl"),
        ),
    );
    let task = f.load().expect("the CUAD data loads");
    let counts: Vec<(&str, usize)> = task.splits.values().map(|s| (s.name.as_str(), s.examples.len())).collect();
    assert_eq!(counts, vec![("dev", 40), ("test", 100), ("train", 60)]);
    assert_eq!(task.fields.len(), 41);
    assert_eq!(task.fields[0].name, "document_name");
    assert_eq!(task.fields[1].name, "parties");
    assert_eq!(task.fields[40].name, "third_party_beneficiary");
    let rule = |name: &str| task.field(name).unwrap().rule;
    assert_eq!(rule("document_name"), MatchRule::Exact);
    assert_eq!(rule("parties"), MatchRule::List { fuzzy: 0.8 });
    assert_eq!(rule("agreement_date"), MatchRule::Date { day_first: false });
    assert_eq!(rule("expiration_date"), MatchRule::Date { day_first: false });
    assert_eq!(rule("governing_law"), MatchRule::Exact);
    assert_eq!(rule("most_favored_nation"), MatchRule::Enum);
    assert_eq!(task.schema_path, cuad.join("schema.json"));

    // Every gold object scores perfectly against itself (all matchers handle the real values).
    let validator = task.validator().unwrap();
    for split in task.splits.values() {
        for example in &split.examples {
            let output = example.expected.to_string();
            let score = crate::score::score_example(&task.fields, &output, false, &example.expected, Some(&validator));
            assert!(score.all_correct(), "{} {}: {score:?}", split.name, example.id);
        }
    }

    // Bounds from train at quantile 1 (the maximum): train still validates, parties gets
    // capped, enums stay untouched. (Below 1 the outliers are excluded on purpose.)
    let train = &task.split("train").unwrap().examples;
    let at_max = crate::task::BoundsConfig { quantile: 1.0, ..task.bounds.clone() };
    let (hardened, notes) = crate::bounds::harden_schema(&task.schema, train, &at_max);
    let hardened_validator = super::compile_schema(&hardened, &task.schema_path).unwrap();
    assert!(train.iter().all(|e| hardened_validator.is_valid(&e.expected)));
    assert!(notes.iter().any(|n| n.field == "parties" && n.keyword == "maxItems"));
    assert!(notes.iter().all(|n| !n.field.starts_with("most_favored_nation")));
    assert_eq!(hardened["properties"]["non_compete"], task.schema["properties"]["non_compete"]);
}
