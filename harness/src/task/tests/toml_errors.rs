//! Errors in `task.toml`: syntax, unknown and missing keys, wrong types, and values that do not
//! fit the schema or the splits. Each test checks file, line and key in the message.

use super::{Fixture, TOML};

#[test]
fn missing_task_toml() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("task.toml")).unwrap();
    f.error("task.toml", &["cannot read the task file"]);
}

#[test]
fn toml_syntax_error_names_line() {
    let f = Fixture::new();
    f.write("task.toml", "schema = \"schema.json\"\nprompt = \"prompt.txt\nx = 1\n");
    f.error("task.toml", &["task.toml:2:"]);
}

#[test]
fn unknown_top_level_key() {
    let f = Fixture::new();
    f.write("task.toml", format!("temperature = 0.2\n{TOML}"));
    f.error("task.toml", &["task.toml:1:", "temperature"]);
}

#[test]
fn unknown_key_in_field_rule() {
    let f = Fixture::new();
    f.toml_with("\n[fields.parties]\nmatch = \"list\"\nfuzz = 0.9\n");
    f.error("task.toml", &["task.toml:10:", "fuzz"]);
}

#[test]
fn missing_schema_key() {
    let f = Fixture::new();
    f.write("task.toml", TOML.replace("schema = \"schema.json\"\n", ""));
    f.error("task.toml", &["`schema`"]);
}

#[test]
fn missing_prompt_key() {
    let f = Fixture::new();
    f.write("task.toml", TOML.replace("prompt = \"prompt.txt\"\n", ""));
    f.error("task.toml", &["`prompt`"]);
}

#[test]
fn missing_splits_key() {
    let f = Fixture::new();
    f.write("task.toml", "schema = \"schema.json\"\nprompt = \"prompt.txt\"\n");
    f.error("task.toml", &["`splits`"]);
}

#[test]
fn empty_splits_table() {
    let f = Fixture::new();
    f.write("task.toml", "schema = \"schema.json\"\nprompt = \"prompt.txt\"\n[splits]\n");
    f.error("task.toml", &["task.toml:3", "`splits`", "at least one split"]);
}

#[test]
fn wrong_value_type_names_line() {
    let f = Fixture::new();
    f.write("task.toml", format!("max-tokens = \"many\"\n{TOML}"));
    f.error("task.toml", &["task.toml:1:14", "`max-tokens`", "expected u32"]);
}

#[test]
fn zero_max_tokens() {
    let f = Fixture::new();
    f.write("task.toml", format!("max-tokens = 0\n{TOML}"));
    f.error("task.toml", &["task.toml:1", "`max-tokens`"]);
}

#[test]
fn unknown_layout() {
    let f = Fixture::new();
    f.write("task.toml", format!("layout = \"sideways\"\n{TOML}"));
    f.error("task.toml", &["task.toml:1:", "sideways"]);
}

#[test]
fn rule_for_unknown_property() {
    let f = Fixture::new();
    f.toml_with("\n[fields.partys]\nmatch = \"list\"\n");
    f.error("task.toml", &["task.toml:8", "`fields.partys`", "did you mean `parties`"]);
}

#[test]
fn list_rule_on_non_array_field() {
    let f = Fixture::new();
    f.toml_with("\n[fields.title]\nmatch = \"list\"\n");
    f.error("task.toml", &["task.toml:8", "`fields.title.match`", "needs an array"]);
}

#[test]
fn date_rule_on_number_field() {
    let f = Fixture::new();
    f.toml_with("\n[fields.amount]\nmatch = \"date\"\n");
    f.error("task.toml", &["task.toml:8", "`fields.amount.match`"]);
}

#[test]
fn fuzzy_on_non_list_field() {
    let f = Fixture::new();
    f.toml_with("\n[fields.title]\nfuzzy = 0.5\n");
    f.error("task.toml", &["task.toml:8", "`fields.title.fuzzy`"]);
}

#[test]
fn tolerance_on_non_number_field() {
    let f = Fixture::new();
    f.toml_with("\n[fields.parties]\ntolerance = 0.5\n");
    f.error("task.toml", &["task.toml:8", "`fields.parties.tolerance`"]);
}

#[test]
fn fuzzy_out_of_range() {
    let f = Fixture::new();
    f.toml_with("\n[fields.parties]\nfuzzy = 1.5\n");
    f.error("task.toml", &["task.toml:8", "`fields.parties.fuzzy`", "1.5"]);
}

#[test]
fn day_first_on_non_date_field() {
    let f = Fixture::new();
    f.toml_with("\n[fields.title]\nday-first = true\n");
    f.error("task.toml", &["task.toml:8", "`fields.title.day-first`", "`match = \"date\"` only"]);
}

#[test]
fn text_fuzzy_out_of_range_and_text_on_a_number() {
    let f = Fixture::new();
    f.toml_with("\n[fields.title]\nmatch = \"text\"\nfuzzy = 0\n");
    f.error("task.toml", &["task.toml:8", "`fields.title.fuzzy`", "(0, 1]"]);
    f.toml_with("\n[fields.amount]\nmatch = \"text\"\n");
    f.error("task.toml", &["task.toml:8", "`fields.amount.match`", "needs a string property"]);
    f.toml_with("\n[fields.start_date]\nday-first = \"yes\"\n");
    f.error("task.toml", &["task.toml:", "day-first"]);
}

#[test]
fn negative_tolerance() {
    let f = Fixture::new();
    f.toml_with("\n[fields.amount]\ntolerance = -1.0\n");
    f.error("task.toml", &["task.toml:8", "`fields.amount.tolerance`"]);
}

#[test]
fn quantile_out_of_range() {
    let f = Fixture::new();
    f.toml_with("\n[bounds]\nquantile = 1.5\n");
    f.error("task.toml", &["task.toml:8", "`bounds.quantile`"]);
}

#[test]
fn headroom_below_one() {
    let f = Fixture::new();
    f.toml_with("\n[bounds]\nheadroom = 0.5\n");
    f.error("task.toml", &["task.toml:8", "`bounds.headroom`"]);
}

#[test]
fn bounds_from_unknown_split() {
    let f = Fixture::new();
    f.toml_with("\n[bounds]\nfrom-split = \"test\"\n");
    f.error("task.toml", &["task.toml:8", "`bounds.from-split`", "`test`"]);
}

#[test]
fn unknown_key_in_bounds() {
    let f = Fixture::new();
    f.toml_with("\n[bounds]\nheadroom = 2.0\nmax = 3\n");
    f.error("task.toml", &["task.toml:10:", "max"]);
}

#[test]
fn document_label_of_wrong_type() {
    let f = Fixture::new();
    f.write("task.toml", format!("document-label = 3\n{TOML}"));
    f.error("task.toml", &["task.toml:1:18", "`document-label`", "expected a string"]);
}

#[test]
fn document_label_with_a_line_break() {
    let f = Fixture::new();
    f.write("task.toml", format!("# how documents are introduced\ndocument-label = \"Two\\nlines\"\n{TOML}"));
    f.error("task.toml", &["task.toml:2", "`document-label`", "line break"]);
}

// ---- splits read from a dataset under the data root ----

/// A checkout `tmp/checkout/task` beside `tmp/shared/datasets/ds` holding train (3 records, one
/// long) and pool (2) files; `task.toml` is [`super::TOML`]'s head plus `splits`.
fn data_task(splits: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("checkout/task");
    let ds = tmp.path().join("shared/datasets/ds");
    std::fs::create_dir_all(&task).unwrap();
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(task.join("schema.json"), super::SCHEMA).unwrap();
    std::fs::write(task.join("prompt.txt"), "Extract.\n").unwrap();
    std::fs::write(
        task.join("task.toml"),
        format!("data = \"ds\"\nschema = \"schema.json\"\nprompt = \"prompt.txt\"\n\n{splits}"),
    )
    .unwrap();
    let mut long: serde_json::Value = serde_json::from_str(&super::line("a-long")).unwrap();
    long["text"] = "x".repeat(100).into();
    // The dataset's records carry a field the task's schema does not have: it is dropped.
    let mut extra: serde_json::Value = serde_json::from_str(&super::line("c")).unwrap();
    extra["expected"]["not_in_the_task"] = "dropped".into();
    std::fs::write(ds.join("train.jsonl"), format!("{extra}\n{long}\n{}\n", super::line("b"))).unwrap();
    std::fs::write(ds.join("pool.jsonl"), format!("{}\n{}\n", super::line("p2"), super::line("p1"))).unwrap();
    (tmp, task)
}

#[test]
fn splits_select_from_the_dataset_in_the_order_written_and_never_take_a_record_twice() {
    let (_tmp, dir) = data_task(
        "[splits.train]\nfrom = [\"train.jsonl\", \"pool.jsonl\"]\nmax-chars = 50\nsort = \"id\"\ntake = 3\n\n\
         [splits.dev]\nfrom = \"pool.jsonl\"\n",
    );
    let task = crate::task::Task::load(&dir).unwrap();
    let ids = |s: &str| task.split(s).unwrap().examples.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("train"), ["b", "c", "p1"]);
    assert_eq!(ids("dev"), ["p2"]);
    assert!(task.split("train").unwrap().examples.iter().all(|e| e.expected.get("not_in_the_task").is_none()));
}

#[test]
fn a_dataset_without_the_split_file_names_the_path() {
    let (_tmp, dir) = data_task("[splits]\ntest = \"test.jsonl\"\n");
    let err = crate::task::Task::load(&dir).unwrap_err().to_string();
    assert!(err.contains("shared/datasets/ds/test.jsonl"), "{err}");
}

#[test]
fn a_missing_dataset_names_the_places_searched() {
    let (tmp, dir) = data_task("[splits]\ntrain = \"train.jsonl\"\n");
    std::fs::rename(tmp.path().join("shared"), tmp.path().join("elsewhere")).unwrap();
    let err = crate::task::Task::load(&dir).unwrap_err().to_string();
    assert!(err.contains("task.toml:1") && err.contains("`data`"), "{err}");
    assert!(err.contains(&tmp.path().join("shared/datasets/ds").display().to_string()), "{err}");
}

#[test]
fn a_bad_selection_names_its_key() {
    for (splits, key) in [
        ("[splits.train]\nform = \"train.jsonl\"\n", "splits.train.form"),
        ("[splits.train]\nfrom = \"train.jsonl\"\ntake = 0\n", "splits.train.take"),
        ("[splits.train]\nfrom = \"train.jsonl\"\nsort = \"length\"\n", "splits.train.sort"),
        ("[splits.train]\nmax-chars = 5\n", "splits.train.from"),
        ("[splits]\ntrain = 3\n", "splits.train"),
    ] {
        let (_tmp, dir) = data_task(splits);
        let err = crate::task::Task::load(&dir).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")) && err.contains("task.toml:"), "{splits}: {err}");
    }
    let (_tmp, dir) = data_task("[splits.train]\nfrom = \"train.jsonl\"\nmax-chars = 1\n");
    let err = crate::task::Task::load(&dir).unwrap_err().to_string();
    assert!(err.contains("split `train` has no examples"), "{err}");
}
