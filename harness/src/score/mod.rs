//! Scoring one model output against the gold `expected` object, field by field, and
//! aggregating over a split.
//!
//! An output that does not parse as a JSON object (or fails the schema, when a validator is
//! given) scores 0 on every field with class [`FailureClass::Format`], or
//! [`FailureClass::Truncated`] when generation hit the token cap. Otherwise each field is
//! compared with its [`MatchRule`](crate::task::MatchRule) (see [`matchers`]); a field is correct
//! when its score is >= [`CORRECT_AT`]. Null, `""` and `[]` all mean "no answer".

pub mod confidence;
pub mod date;
pub mod feedback;
pub mod matchers;
#[cfg(test)]
#[allow(clippy::float_cmp)] // the scores compared are exact 0.0/1.0
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::read::shorten;
use crate::task::FieldSpec;
use matchers::{is_empty_value, score_values};

/// A field counts as correct at or above this score (lists: F1 = 1).
pub const CORRECT_AT: f64 = 0.999;

/// Why a field was not correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The output is not a JSON object matching the schema.
    Format,
    /// The output hit the token cap and is not valid JSON/schema (often a loop).
    Truncated,
    /// Predicted null/empty, expected a value.
    Missed,
    /// Predicted a value, expected null.
    Hallucinated,
    /// Both present, but they do not match.
    Wrong,
}

impl FailureClass {
    /// Every class, in display order.
    pub const ALL: [FailureClass; 5] =
        [FailureClass::Format, FailureClass::Truncated, FailureClass::Missed, FailureClass::Hallucinated, FailureClass::Wrong];

    /// The `snake_case` name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Format => "format",
            FailureClass::Truncated => "truncated",
            FailureClass::Missed => "missed",
            FailureClass::Hallucinated => "hallucinated",
            FailureClass::Wrong => "wrong",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one field of one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldVerdict {
    pub field: String,
    /// In `[0, 1]`.
    pub score: f64,
    pub correct: bool,
    /// `None` when correct.
    pub class: Option<FailureClass>,
    /// The model's value (null when missing or unparseable).
    pub predicted: Value,
    pub expected: Value,
    /// What went wrong, in one sentence a proposer can act on (empty when correct); see
    /// [`feedback`]. Filled by [`feedback::attach`], which needs the document.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub feedback: String,
    /// Where the gold value occurs in the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<feedback::Evidence>,
    /// How sure the model was of its value (in-process engines); see [`confidence`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<confidence::Confidence>,
    /// False for a sparse field where gold and answer are both null: it does not enter the
    /// example's score.
    #[serde(default = "scored_default", skip_serializing_if = "is_true")]
    pub scored: bool,
}

fn scored_default() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_true(b: &bool) -> bool {
    *b
}

/// The score of one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleScore {
    /// Mean of the field scores.
    pub score: f64,
    /// One verdict per field, in the order of the field specs.
    pub fields: Vec<FieldVerdict>,
    /// The output parsed as a JSON object (and satisfied the schema, when checked).
    pub format_ok: bool,
    /// Generation stopped at the token cap.
    pub truncated: bool,
    /// Why the format check failed: the JSON or schema error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_error: Option<String>,
}

impl ExampleScore {
    /// Whether every field is correct.
    /// Every field scores 0 with `class`; `None` is for an example the engine could not run
    /// (counted as an engine error, not as a model mistake). `predicted` gives each field's
    /// predicted value for the record.
    pub fn failed(
        fields: &[FieldSpec],
        expected: &Value,
        class: Option<FailureClass>,
        predicted: &dyn Fn(&str) -> Value,
    ) -> ExampleScore {
        let fields = fields
            .iter()
            .map(|spec| FieldVerdict {
                field: spec.name.clone(),
                score: 0.0,
                correct: false,
                class,
                predicted: predicted(&spec.name),
                expected: expected.get(&spec.name).cloned().unwrap_or(Value::Null),
                feedback: String::new(),
                evidence: None,
                confidence: None,
                scored: true,
            })
            .collect();
        ExampleScore { score: 0.0, fields, format_ok: false, truncated: false, format_error: None }
    }

    pub fn all_correct(&self) -> bool {
        self.format_ok && self.fields.iter().all(|f| f.correct)
    }
}

/// Scores one model output.
///
/// `output_text` is the raw generation; `truncated` says it hit the token cap. With a
/// `schema_validator`, an output that violates the schema is a format failure.
pub fn score_example(
    fields: &[FieldSpec],
    output_text: &str,
    truncated: bool,
    expected: &Value,
    schema_validator: Option<&jsonschema::Validator>,
) -> ExampleScore {
    let parsed = serde_json::from_str::<Value>(output_text);
    let format_error = match &parsed {
        Err(err) => Some(format!("not JSON: {err}")),
        Ok(value) if !value.is_object() => Some(format!("not a JSON object but {}", crate::task::read::json_type(value))),
        Ok(value) => schema_validator.and_then(|v| v.iter_errors(value).next()).map(|err| {
            let at = err.instance_path().as_str();
            let at = if at.is_empty() { "(root)" } else { at };
            format!("schema violation at {at}: {}", shorten(&err.to_string(), 200))
        }),
    };
    let predicted_object = parsed.ok().and_then(|v| match v {
        Value::Object(map) => Some(map),
        _ => None,
    });
    let predicted_of = |name: &str| predicted_object.as_ref().and_then(|m| m.get(name)).cloned().unwrap_or(Value::Null);
    let expected_of = |name: &str| expected.get(name).cloned().unwrap_or(Value::Null);

    if let Some(format_error) = format_error {
        let class = if truncated { FailureClass::Truncated } else { FailureClass::Format };
        let mut failed = ExampleScore::failed(fields, expected, Some(class), &predicted_of);
        failed.truncated = truncated;
        failed.format_error = Some(format_error);
        return failed;
    }

    let verdicts: Vec<FieldVerdict> =
        fields.iter().map(|spec| judge(spec, predicted_of(&spec.name), expected_of(&spec.name))).collect();
    ExampleScore {
        score: crate::stats::mean(verdicts.iter().filter(|v| v.scored).map(|v| v.score)),
        fields: verdicts,
        format_ok: true,
        truncated,
        format_error: None,
    }
}

/// The verdict on one field of a well-formed output.
fn judge(spec: &FieldSpec, predicted: Value, expected: Value) -> FieldVerdict {
    let both_empty = is_empty_value(&predicted) && is_empty_value(&expected);
    let (score, class) = match (is_empty_value(&predicted), is_empty_value(&expected)) {
        (true, true) => (1.0, None),
        (true, false) => (0.0, Some(FailureClass::Missed)),
        (false, true) => (0.0, Some(FailureClass::Hallucinated)),
        (false, false) => {
            let score = score_values(&spec.rule, &predicted, &expected);
            (score, (score < CORRECT_AT).then_some(FailureClass::Wrong))
        }
    };
    FieldVerdict {
        field: spec.name.clone(),
        score,
        correct: class.is_none(),
        class,
        predicted,
        expected,
        feedback: String::new(),
        evidence: None,
        confidence: None,
        scored: !(spec.sparse && both_empty),
    }
}

/// Per-field statistics over a set of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldStat {
    pub name: String,
    /// Fraction of examples where the field is correct.
    pub accuracy: f64,
    pub mean_score: f64,
    /// How often each failure class hit this field.
    pub classes: BTreeMap<FailureClass, usize>,
}

/// Statistics over a set of scored examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Number of examples.
    pub n: usize,
    /// Mean of the example scores.
    pub mean_score: f64,
    /// One entry per field spec, in order.
    pub per_field: Vec<FieldStat>,
    /// Failure classes over all fields of all examples.
    pub classes: BTreeMap<FailureClass, usize>,
    /// Examples with every field correct.
    pub exact_match: usize,
    /// Examples whose output failed the format check (truncated or not).
    pub format_failures: usize,
    /// Examples that hit the token cap (whether or not they parsed).
    pub truncated: usize,
}

impl Aggregate {
    /// Aggregates `scores`; fields are matched to `fields` by name.
    pub fn from_scores<'a>(fields: &[FieldSpec], scores: impl IntoIterator<Item = &'a ExampleScore>) -> Aggregate {
        let mut n = 0;
        let mut score_sum = 0.0;
        let mut exact_match = 0;
        let mut format_failures = 0;
        let mut truncated = 0;
        let mut classes = BTreeMap::new();
        let mut per_field: Vec<(usize, f64, BTreeMap<FailureClass, usize>)> = vec![(0, 0.0, BTreeMap::new()); fields.len()];
        for example in scores {
            n += 1;
            score_sum += example.score;
            exact_match += usize::from(example.all_correct());
            format_failures += usize::from(!example.format_ok);
            truncated += usize::from(example.truncated);
            for verdict in &example.fields {
                if let Some(class) = verdict.class {
                    *classes.entry(class).or_insert(0) += 1;
                }
            }
            for (i, spec) in fields.iter().enumerate() {
                let verdict = example
                    .fields
                    .get(i)
                    .filter(|v| v.field == spec.name)
                    .or_else(|| example.fields.iter().find(|v| v.field == spec.name));
                let Some(verdict) = verdict else { continue };
                let stat = &mut per_field[i];
                stat.0 += usize::from(verdict.correct);
                stat.1 += verdict.score;
                if let Some(class) = verdict.class {
                    *stat.2.entry(class).or_insert(0) += 1;
                }
            }
        }
        let per_n = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
        Aggregate {
            n,
            mean_score: per_n(score_sum),
            per_field: fields
                .iter()
                .zip(per_field)
                .map(|(spec, (correct, sum, classes))| FieldStat {
                    name: spec.name.clone(),
                    accuracy: per_n(correct as f64),
                    mean_score: per_n(sum),
                    classes,
                })
                .collect(),
            classes,
            exact_match,
            format_failures,
            truncated,
        }
    }
}
