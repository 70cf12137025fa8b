//! A JSON Schema (draft 2020-12, in the style of `evals/cuad-mini/schema.json`) inferred from
//! gold objects, and a matcher per field.
//!
//! Per top-level field: its JSON type over all records (integers and other numbers merge to
//! `number`; two other types are an error naming the record), `null` allowed when the field is
//! null or absent in some record, and for strings:
//! - a **number** (matcher `number`) when every value reads as one (`"12.50"`, `"$1,200"`,
//!   `"15%"`);
//! - an **enum** when there are 2 to [`MAX_ENUM_VALUES`] distinct values and each is seen at
//!   least [`MIN_ENUM_COUNT`] times (fewer sightings say too little about the value set);
//! - a **date** when every value is an ISO `YYYY-MM-DD` date (`"format": "date"`, matcher
//!   `date`); the `date` matcher alone when at least half are dates in a common format
//!   (`03/25/2020`, `March 25, 2020`), or the name ends in `date`. When the gold dates show a
//!   day-first order (`25/03/2020`), `day-first = true` is written;
//! - **free text** (matcher `text`, word-level similarity, see
//!   [`crate::score::matchers::text_similarity`]) when at least half of the values are several
//!   words with more letters than digits (names, addresses, titles);
//! - `minLength: 1` when no value is empty.
//!
//! Arrays get the type of their items (merged the same way); objects are kept as `object`.
//!
//! Matchers: `list` for arrays, `date` for dates, `enum` for enums, `number` for numbers and
//! numeric strings, `text` for free text, and `exact` (normalised case, spacing and
//! punctuation) for booleans, objects and the other strings (one-word values, codes, ids),
//! where a near miss is a wrong answer.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use super::{InitError, Record};
use crate::score::date::{normalize_date_in, DateOrder, OrderEvidence};
use crate::score::matchers::parse_number;

/// Most distinct values a string field may have to become an enum.
pub const MAX_ENUM_VALUES: usize = 8;
/// Least sightings of each value of an enum.
pub const MIN_ENUM_COUNT: usize = 2;

/// The scoring rule written for a field (`[fields.NAME] match = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    Exact,
    Date,
    Enum,
    Number,
    List,
    Text,
}

impl Matcher {
    pub fn as_str(self) -> &'static str {
        match self {
            Matcher::Exact => "exact",
            Matcher::Date => "date",
            Matcher::Enum => "enum",
            Matcher::Number => "number",
            Matcher::List => "list",
            Matcher::Text => "text",
        }
    }
}

/// A JSON type as inferred (null apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    fn of(value: &Value) -> Option<Kind> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(Kind::Boolean),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(Kind::Integer),
            Value::Number(_) => Some(Kind::Number),
            Value::String(_) => Some(Kind::String),
            Value::Array(_) => Some(Kind::Array),
            Value::Object(_) => Some(Kind::Object),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }

    fn article(self) -> &'static str {
        match self {
            Kind::Boolean => "a boolean",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }

    /// The merged kind, or `None` when the two cannot share a field.
    fn merge(self, other: Kind) -> Option<Kind> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Kind::Integer | Kind::Number, Kind::Integer | Kind::Number) => Some(Kind::Number),
            _ => None,
        }
    }
}

/// What was inferred for one field.
#[allow(clippy::struct_excessive_bools)] // independent facts about the values, not a state
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPlan {
    pub name: String,
    /// `None`: only nulls seen (written as a nullable string).
    pub kind: Option<Kind>,
    pub nullable: bool,
    /// The item kind of an array field.
    pub items: Option<Kind>,
    /// The values of an enum, in order of first sighting.
    pub enum_values: Option<Vec<String>>,
    /// Every value is an ISO date.
    pub date_format: bool,
    /// No string value (or array item) is empty.
    pub non_empty: bool,
    pub matcher: Matcher,
    /// A `date` field whose gold dates read day first (`day-first = true`).
    pub day_first: bool,
}

/// A type seen first at some line.
struct Seen {
    kind: Kind,
    line: usize,
}

fn merge_into(seen: &mut Option<Seen>, kind: Kind, line: usize, field: &str, path: &Path) -> Result<(), InitError> {
    match seen {
        None => *seen = Some(Seen { kind, line }),
        Some(s) => {
            s.kind = s.kind.merge(kind).ok_or_else(|| InitError::Conflict {
                path: path.to_path_buf(),
                line,
                field: field.to_owned(),
                found: kind.article(),
                first: s.kind.article(),
                first_line: s.line,
            })?;
        }
    }
    Ok(())
}

/// Infers one [`FieldPlan`] per gold field, in order of first appearance.
pub fn infer(records: &[Record], path: &Path) -> Result<Vec<FieldPlan>, InitError> {
    let mut names: Vec<String> = Vec::new();
    for r in records {
        for k in &r.keys {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    names.iter().map(|name| infer_field(name, records, path)).collect()
}

fn infer_field(name: &str, records: &[Record], path: &Path) -> Result<FieldPlan, InitError> {
    let (mut seen, mut items) = (None, None);
    let mut nullable = false;
    let mut strings: Vec<&str> = Vec::new();
    let mut non_empty = true;
    for r in records {
        let value = r.gold.get(name).unwrap_or(&Value::Null);
        let Some(kind) = Kind::of(value) else {
            nullable = true;
            continue;
        };
        merge_into(&mut seen, kind, r.line, name, path)?;
        match value {
            Value::String(s) => {
                non_empty &= !s.is_empty();
                strings.push(s);
            }
            Value::Array(values) => {
                for item in values {
                    if let Some(k) = Kind::of(item) {
                        merge_into(&mut items, k, r.line, &format!("{name}[]"), path)?;
                    }
                    if let Value::String(s) = item {
                        non_empty &= !s.is_empty();
                    }
                }
            }
            _ => {}
        }
    }
    let kind = seen.map(|s| s.kind);
    let is_string = kind == Some(Kind::String);
    let numeric = is_string && strings.iter().all(|s| parse_number(&Value::String((*s).to_owned())).is_some());
    let enum_values = (is_string && !numeric).then(|| enum_of(&strings)).flatten();
    let iso = strings.iter().filter(|s| is_iso_date(s)).count();
    let date_format = is_string && !numeric && enum_values.is_none() && iso == strings.len() && iso > 0;
    let dates = strings.iter().filter(|s| is_date(s)).count();
    let date_like =
        is_string && !numeric && enum_values.is_none() && ((2 * dates >= strings.len() && dates > 0) || name.ends_with("date"));
    let matcher = match kind {
        Some(Kind::Array) => Matcher::List,
        Some(Kind::Integer | Kind::Number) => Matcher::Number,
        Some(Kind::String) if numeric => Matcher::Number,
        Some(Kind::String) if enum_values.is_some() => Matcher::Enum,
        Some(Kind::String) if date_like => Matcher::Date,
        Some(Kind::String) if is_free_text(&strings) => Matcher::Text,
        Some(Kind::Boolean | Kind::Object | Kind::String) | None => Matcher::Exact,
    };
    let day_first = matcher == Matcher::Date && {
        let mut evidence = OrderEvidence::default();
        for s in &strings {
            evidence.add(s);
        }
        evidence.order() == DateOrder::DayFirst
    };
    Ok(FieldPlan {
        name: name.to_owned(),
        kind,
        nullable: nullable || kind.is_none(),
        items: items.map(|s| s.kind),
        enum_values,
        date_format,
        non_empty,
        matcher,
        day_first,
    })
}

/// A date in a common format, read either way round (see [`crate::score::date`]).
fn is_date(s: &str) -> bool {
    normalize_date_in(s, DateOrder::MonthFirst).is_some() || normalize_date_in(s, DateOrder::DayFirst).is_some()
}

/// Free text: at least half of the (non-empty) values are two or more words with more letters
/// than digits. Single words, codes (`INV-0042`) and numbers are not.
fn is_free_text(values: &[&str]) -> bool {
    let values: Vec<&&str> = values.iter().filter(|v| !v.trim().is_empty()).collect();
    let wordy = values
        .iter()
        .filter(|v| {
            let letters = v.chars().filter(|c| c.is_alphabetic()).count();
            let digits = v.chars().filter(char::is_ascii_digit).count();
            v.split_whitespace().count() >= 2 && letters > digits
        })
        .count();
    !values.is_empty() && 2 * wordy >= values.len()
}

/// The enum values of a string field (see the module docs), in order of first sighting.
fn enum_of(values: &[&str]) -> Option<Vec<String>> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for v in values {
        if let Some((_, n)) = counts.iter_mut().find(|(s, _)| s == v) {
            *n += 1;
        } else if counts.len() == MAX_ENUM_VALUES {
            return None;
        } else {
            counts.push((v, 1));
        }
    }
    let ok = counts.len() >= 2 && counts.iter().all(|(_, n)| *n >= MIN_ENUM_COUNT);
    ok.then(|| counts.into_iter().map(|(s, _)| s.to_owned()).collect())
}

/// `YYYY-MM-DD` with a month 01-12 and a day 01-31.
pub fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return false;
    }
    let (month, day) = (&s[5..7], &s[8..10]);
    ("01"..="12").contains(&month) && ("01"..="31").contains(&day)
}

/// Plans for the properties of a given schema (the task's defaults pick their matchers).
pub fn plans_from_schema(schema: &Value, order: &[String]) -> Vec<FieldPlan> {
    let props = schema.get("properties").and_then(Value::as_object);
    order
        .iter()
        .map(|name| {
            let p = props.and_then(|m| m.get(name)).unwrap_or(&Value::Null);
            let types: Vec<&str> = match p.get("type") {
                Some(Value::String(t)) => vec![t.as_str()],
                Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let kind = types.iter().find_map(|t| match *t {
                "boolean" => Some(Kind::Boolean),
                "integer" => Some(Kind::Integer),
                "number" => Some(Kind::Number),
                "string" => Some(Kind::String),
                "array" => Some(Kind::Array),
                "object" => Some(Kind::Object),
                _ => None,
            });
            let enum_values = p.get("enum").and_then(Value::as_array).map(|vs| {
                vs.iter().filter(|v| !v.is_null()).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
            });
            FieldPlan {
                name: name.clone(),
                kind,
                nullable: types.contains(&"null"),
                items: None,
                enum_values,
                date_format: p.get("format").and_then(Value::as_str) == Some("date"),
                non_empty: false,
                matcher: Matcher::Exact,
                day_first: false,
            }
        })
        .collect()
}

/// A property schema, keys in the order written.
#[derive(Serialize)]
struct Property {
    #[serde(rename = "type")]
    ty: Value,
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    enum_values: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    #[serde(rename = "minLength", skip_serializing_if = "Option::is_none")]
    min_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Value>,
    description: String,
}

/// The top of the schema document, keys in the order of `evals/cuad-mini/schema.json`.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    title: String,
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(rename = "additionalProperties")]
    additional: bool,
    required: Vec<&'a str>,
    properties: Ordered<'a>,
}

/// Properties in plan order (a `serde_json::Map` may sort its keys).
struct Ordered<'a>(Vec<(&'a str, Property)>);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The schema file for `plan`, pretty-printed with a final newline.
pub fn schema_text(plan: &[FieldPlan], task: &str) -> String {
    let properties = plan.iter().map(|f| (f.name.as_str(), property(f))).collect();
    let doc = Document {
        schema: "https://json-schema.org/draft/2020-12/schema",
        title: format!("{task}: gold objects (inferred by promptloop init)"),
        ty: "object",
        additional: false,
        required: plan.iter().map(|f| f.name.as_str()).collect(),
        properties: Ordered(properties),
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

fn property(f: &FieldPlan) -> Property {
    let base = f.kind.map_or("string", Kind::name);
    let ty = if f.nullable { json!([base, "null"]) } else { json!(base) };
    let is_string = f.kind.is_none_or(|k| k == Kind::String);
    let enum_values = f.enum_values.as_ref().map(|vs| {
        let mut vs: Vec<Value> = vs.iter().map(|v| json!(v)).collect();
        if f.nullable {
            vs.push(Value::Null);
        }
        vs
    });
    let items = (f.kind == Some(Kind::Array)).then(|| match f.items {
        Some(Kind::String) if f.non_empty => json!({"type": "string", "minLength": 1}),
        Some(k) => json!({"type": k.name()}),
        None => json!({}),
    });
    Property {
        ty,
        enum_values,
        format: f.date_format.then_some("date"),
        min_length: (is_string && f.kind.is_some() && f.non_empty && f.enum_values.is_none()).then_some(1),
        items,
        description: describe(f),
    }
}

/// A short description of a field's values, for the schema and the prompt.
pub fn describe(f: &FieldPlan) -> String {
    let mut d = match (f.kind, &f.enum_values) {
        (_, Some(values)) => format!("one of {}", values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")),
        (Some(Kind::String), None) if f.date_format => "a date, YYYY-MM-DD".to_owned(),
        (Some(Kind::String), None) if f.matcher == Matcher::Date => "a date (YYYY-MM-DD when complete)".to_owned(),
        (Some(Kind::String), None) if f.matcher == Matcher::Number => "a number, as text".to_owned(),
        (Some(Kind::Array), _) => match f.items {
            Some(k) => format!("a list of {}s", k.name()),
            None => "a list".to_owned(),
        },
        (Some(k), None) => k.article().to_owned(),
        (None, None) => "a string".to_owned(),
    };
    if f.nullable {
        d.push_str(", or null");
    }
    d
}
