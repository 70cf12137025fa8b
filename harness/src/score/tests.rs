//! Tests for [`score_example`] (each failure class, format checks, truncation) and
//! [`Aggregate`].

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{score_example, Aggregate, ExampleScore, FailureClass};
use crate::task::{FieldSpec, MatchRule};

fn specs() -> Vec<FieldSpec> {
    let spec = |name: &str, rule| FieldSpec { name: name.into(), rule, sparse: false };
    vec![
        spec("title", MatchRule::Exact),
        spec("parties", MatchRule::List { fuzzy: 0.85 }),
        spec("start_date", MatchRule::Date { day_first: false }),
        spec("amount", MatchRule::Number { tolerance: 0.01 }),
        spec("flag", MatchRule::Enum),
    ]
}

fn expected() -> Value {
    json!({
        "title": "Supply Agreement",
        "parties": ["Acme Inc. (\"Acme\")", "Beta LLC"],
        "start_date": "2010-01-01",
        "amount": null,
        "flag": "Yes"
    })
}

fn schema() -> jsonschema::Validator {
    jsonschema::draft202012::new(&json!({
        "type": "object",
        "required": ["title", "flag"],
        "properties": {
            "title": {"type": ["string", "null"]},
            "parties": {"type": ["array", "null"], "items": {"type": "string"}},
            "start_date": {"type": ["string", "null"]},
            "amount": {"type": ["number", "null"]},
            "flag": {"enum": ["Yes", "No"]}
        }
    }))
    .expect("test schema compiles")
}

fn score(output: &str) -> ExampleScore {
    score_example(&specs(), output, false, &expected(), Some(&schema()))
}

fn classes(score: &ExampleScore) -> Vec<Option<FailureClass>> {
    score.fields.iter().map(|f| f.class).collect()
}

#[test]
fn perfect_output() {
    let s = score(
        r#"{"title": "SUPPLY AGREEMENT", "parties": ["ACME, INC.", "Beta LLC"], "start_date": "January 1, 2010", "amount": null, "flag": "Yes"}"#,
    );
    assert!(s.format_ok && !s.truncated && s.format_error.is_none());
    assert_eq!(classes(&s), vec![None; 5]);
    assert!(s.fields.iter().all(|f| f.correct && f.score == 1.0));
    assert_eq!(s.score, 1.0);
    assert!(s.all_correct());
}

#[test]
fn both_null_is_correct_and_missing_key_counts_as_null() {
    let s = score(
        r#"{"title": "Supply Agreement", "flag": "Yes", "parties": ["Acme Inc.", "Beta LLC"], "start_date": "2010-01-01"}"#,
    );
    let amount = &s.fields[3];
    assert_eq!(amount.field, "amount");
    assert!(amount.correct);
    assert_eq!(amount.score, 1.0);
    assert_eq!(amount.predicted, Value::Null);
    assert!(s.all_correct());
}

#[test]
fn missed_hallucinated_wrong() {
    let s = score(r#"{"title": "Lease", "parties": [], "start_date": "", "amount": 12, "flag": "No"}"#);
    assert!(s.format_ok);
    assert_eq!(
        classes(&s),
        vec![
            Some(FailureClass::Wrong),
            Some(FailureClass::Missed),
            Some(FailureClass::Missed),
            Some(FailureClass::Hallucinated),
            Some(FailureClass::Wrong),
        ]
    );
    assert_eq!(s.score, 0.0);
    assert_eq!(s.fields[3].predicted, json!(12));
    assert_eq!(s.fields[3].expected, Value::Null);
}

#[test]
fn partial_list_scores_f1_and_is_wrong() {
    let s =
        score(r#"{"title": "Supply Agreement", "parties": ["Acme Inc"], "start_date": "1/1/10", "amount": null, "flag": "Yes"}"#);
    let parties = &s.fields[1];
    assert_eq!(parties.class, Some(FailureClass::Wrong));
    assert!(!parties.correct);
    assert!((parties.score - 2.0 / 3.0).abs() < 1e-9);
    assert!((s.score - (4.0 + 2.0 / 3.0) / 5.0).abs() < 1e-9);
}

#[test]
fn unparseable_output_is_format_failure() {
    let s = score("Here is the JSON: {\"title\": ");
    assert!(!s.format_ok);
    assert!(s.format_error.as_deref().unwrap().starts_with("not JSON"));
    assert_eq!(classes(&s), vec![Some(FailureClass::Format); 5]);
    assert!(s.fields.iter().all(|f| f.score == 0.0 && !f.correct));
    assert_eq!(s.score, 0.0);
}

#[test]
fn non_object_output_is_format_failure() {
    let s = score(r#"["Acme"]"#);
    assert!(!s.format_ok);
    assert_eq!(classes(&s), vec![Some(FailureClass::Format); 5]);
}

#[test]
fn schema_violation_is_format_failure_only_with_validator() {
    let output = r#"{"title": "Supply Agreement", "flag": "Maybe"}"#;
    let s = score(output);
    assert!(!s.format_ok);
    let error = s.format_error.as_deref().unwrap();
    assert!(error.contains("/flag"), "{error}");
    assert_eq!(classes(&s), vec![Some(FailureClass::Format); 5]);
    // The parsed values are kept for inspection.
    assert_eq!(s.fields[0].predicted, json!("Supply Agreement"));

    let unchecked = score_example(&specs(), output, false, &expected(), None);
    assert!(unchecked.format_ok);
    assert_eq!(unchecked.fields[0].class, None);
    assert_eq!(unchecked.fields[4].class, Some(FailureClass::Wrong));
}

#[test]
fn truncated_invalid_output_is_truncated() {
    let looping = r#"{"title": "Supply Agreement", "parties": ["Acme Inc.", "Acme Inc.", "Acme Inc.", "Acme"#;
    let s = score_example(&specs(), looping, true, &expected(), Some(&schema()));
    assert!(!s.format_ok && s.truncated);
    assert_eq!(classes(&s), vec![Some(FailureClass::Truncated); 5]);
    assert_eq!(s.score, 0.0);
}

#[test]
fn truncated_but_valid_output_is_scored_normally() {
    let output = r#"{"title": "Supply Agreement", "parties": ["Acme Inc.", "Beta LLC"], "start_date": "2010-01-01", "amount": null, "flag": "Yes"}"#;
    let s = score_example(&specs(), output, true, &expected(), Some(&schema()));
    assert!(s.format_ok && s.truncated);
    assert_eq!(s.score, 1.0);
}

#[test]
fn failure_class_names() {
    let names: Vec<String> = FailureClass::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["format", "truncated", "missed", "hallucinated", "wrong"]);
    assert_eq!(serde_json::to_string(&FailureClass::Hallucinated).unwrap(), "\"hallucinated\"");
    let map: BTreeMap<FailureClass, usize> = [(FailureClass::Wrong, 2)].into();
    let text = serde_json::to_string(&map).unwrap();
    assert_eq!(text, r#"{"wrong":2}"#);
    let back: BTreeMap<FailureClass, usize> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, map);
}

#[test]
fn aggregate_counts_fields_classes_and_exact_matches() {
    let perfect = score(
        r#"{"title": "Supply Agreement", "parties": ["Acme Inc.", "Beta LLC"], "start_date": "2010-01-01", "amount": null, "flag": "Yes"}"#,
    );
    let wrong = score(
        r#"{"title": "Lease", "parties": ["Acme Inc.", "Beta LLC"], "start_date": "2010-01-01", "amount": 3, "flag": "Yes"}"#,
    );
    let broken = score("{");
    let truncated = score_example(&specs(), "{\"ti", true, &expected(), Some(&schema()));
    let all = [perfect, wrong, broken, truncated];
    let agg = Aggregate::from_scores(&specs(), &all);

    assert_eq!(agg.n, 4);
    assert_eq!(agg.exact_match, 1);
    assert_eq!(agg.format_failures, 2);
    assert_eq!(agg.truncated, 1);
    assert!((agg.mean_score - (1.0 + 0.6) / 4.0).abs() < 1e-9);
    let expected_classes: BTreeMap<FailureClass, usize> =
        [(FailureClass::Format, 5), (FailureClass::Truncated, 5), (FailureClass::Hallucinated, 1), (FailureClass::Wrong, 1)]
            .into();
    assert_eq!(agg.classes, expected_classes);

    let names: Vec<&str> = agg.per_field.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["title", "parties", "start_date", "amount", "flag"]);
    let title = &agg.per_field[0];
    assert!((title.accuracy - 0.25).abs() < 1e-9);
    assert!((title.mean_score - 0.25).abs() < 1e-9);
    assert_eq!(title.classes.get(&FailureClass::Wrong), Some(&1));
    let parties = &agg.per_field[1];
    assert!((parties.accuracy - 0.5).abs() < 1e-9);
    assert_eq!(agg.per_field[3].classes.get(&FailureClass::Hallucinated), Some(&1));
}

#[test]
fn aggregate_of_nothing() {
    let agg = Aggregate::from_scores(&specs(), std::iter::empty());
    assert_eq!(agg.n, 0);
    assert_eq!(agg.mean_score, 0.0);
    assert_eq!(agg.per_field.len(), 5);
    assert_eq!(agg.per_field[0].accuracy, 0.0);
    assert!(agg.classes.is_empty());
}
