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
