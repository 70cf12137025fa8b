//! Schema hardening from gold values: caps on string lengths and array sizes.
//!
//! Small models loop: they repeat a party name until the token cap. Under constrained decoding,
//! `maxItems`/`maxLength` stop the loop early. [`harden_schema`] derives the caps from the gold
//! values of a split (`[bounds] from-split`, default `train`): for each top-level property,
//! the `quantile` of the observed counts or lengths (nearest rank; 1.0 = the maximum) times
//! `headroom`, rounded up, never below `min-max-length` for lengths, and never above a bound
//! the schema already sets. Item lengths are pooled over all items of all examples. Enums are left alone. Lengths count Unicode
//! scalar values (Rust `char`s), as JSON Schema does.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::task::{BoundsConfig, Example};

/// One bound set by [`harden_schema`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundNote {
    /// The property; `name[]` for a bound on its array items.
    pub field: String,
    /// `"maxItems"` or `"maxLength"`.
    pub keyword: &'static str,
    /// The value set.
    pub value: u64,
    /// The gold count or length at the configured quantile (0 when there was no gold value).
    pub observed: u64,
    /// The largest gold count or length seen (0 when there was no non-null gold value).
    pub observed_max: u64,
}

/// Returns a copy of `schema` with `maxItems`/`maxLength` bounds derived from the `expected`
/// values of `examples`, and a note per bound set. With `cfg.enabled` false, the schema comes
/// back unchanged with no notes.
///
/// With `q(...)` the `quantile` of the gold values: for an array property
/// `maxItems = max(1, ceil(q(item counts) * headroom))`, and on string `items`,
/// `maxLength = max(min_max_length, ceil(q(all item lengths) * headroom))`. For a string
/// property: `maxLength = max(min_max_length, ceil(q(value lengths) * headroom))`. With no non-null
/// gold value: `maxItems = 4`, `maxLength = 4 * min_max_length`. A bound the schema already has
/// is kept when it is smaller or equal; a new bound is raised to the schema's `minItems` /
/// `minLength` when below it. Notes follow the order of the schema's `properties` map.
pub fn harden_schema(schema: &Value, examples: &[Example], cfg: &BoundsConfig) -> (Value, Vec<BoundNote>) {
    let mut hardened = schema.clone();
    let mut notes = Vec::new();
    if !cfg.enabled {
        return (hardened, notes);
    }
    let headroom = if cfg.headroom.is_finite() && cfg.headroom >= 1.0 { cfg.headroom } else { 1.0 };
    let floor = u64::from(cfg.min_max_length.max(1));
    let scale = |observed: u64| (observed as f64 * headroom).ceil() as u64;

    let Some(properties) = hardened.get_mut("properties").and_then(Value::as_object_mut) else {
        return (hardened, notes);
    };
    for (name, property) in properties.iter_mut() {
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        if is_enum(property) {
            continue;
        }
        let gold: Vec<&Value> = examples.iter().filter_map(|e| e.expected.get(name)).filter(|v| !v.is_null()).collect();

        if has_type(property, "array") {
            let arrays: Vec<&Vec<Value>> = gold.iter().filter_map(|v| v.as_array()).collect();
            let counts = Observed::new(arrays.iter().map(|a| a.len() as u64), cfg.quantile);
            let value = counts.map_or(4, |o| scale(o.at_quantile).max(1));
            if let Some(value) = tighten(property, "maxItems", "minItems", value) {
                notes.push(note(name.clone(), "maxItems", value, counts));
            }
            if let Some(items) = property.get_mut("items").and_then(Value::as_object_mut) {
                if has_type(items, "string") && !is_enum(items) {
                    let longest =
                        Observed::new(arrays.iter().flat_map(|a| a.iter()).filter_map(Value::as_str).map(char_len), cfg.quantile);
                    let value = longest.map_or(floor * 4, |o| scale(o.at_quantile).max(floor));
                    if let Some(value) = tighten(items, "maxLength", "minLength", value) {
                        notes.push(note(format!("{name}[]"), "maxLength", value, longest));
                    }
                }
            }
        }
        if has_type(property, "string") {
            let longest = Observed::new(gold.iter().filter_map(|v| v.as_str()).map(char_len), cfg.quantile);
            let value = longest.map_or(floor * 4, |o| scale(o.at_quantile).max(floor));
            if let Some(value) = tighten(property, "maxLength", "minLength", value) {
                notes.push(note(name.clone(), "maxLength", value, longest));
            }
        }
    }
    (hardened, notes)
}

/// One line per field: `parties: maxItems 9 (observed 6), items maxLength 150 (observed 100)`.
pub fn describe(notes: &[BoundNote]) -> String {
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for n in notes {
        let (base, part) = match n.field.strip_suffix("[]") {
            Some(base) => (base, format!("items {} {} ({})", n.keyword, n.value, observed(n))),
            None => (n.field.as_str(), format!("{} {} ({})", n.keyword, n.value, observed(n))),
        };
        match lines.iter_mut().find(|(field, _)| field == base) {
            Some((_, parts)) => parts.push(part),
            None => lines.push((base.to_owned(), vec![part])),
        }
    }
    let mut out = String::new();
    for (field, parts) in lines {
        out.push_str(&field);
        out.push_str(": ");
        out.push_str(&parts.join(", "));
        out.push('\n');
    }
    out
}

fn observed(n: &BoundNote) -> String {
    if n.observed == n.observed_max {
        format!("gold max {}", n.observed_max)
    } else {
        format!("gold quantile {}, max {}", n.observed, n.observed_max)
    }
}

/// Gold counts or lengths: the value at the quantile (nearest rank) and the maximum.
#[derive(Debug, Clone, Copy)]
struct Observed {
    at_quantile: u64,
    max: u64,
}

impl Observed {
    fn new(values: impl Iterator<Item = u64>, quantile: f64) -> Option<Self> {
        let mut v: Vec<u64> = values.collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let q = if quantile.is_finite() { quantile.clamp(0.0, 1.0) } else { 1.0 };
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        Some(Observed { at_quantile: v[rank - 1], max: v[v.len() - 1] })
    }
}

fn note(field: String, keyword: &'static str, value: u64, observed: Option<Observed>) -> BoundNote {
    BoundNote {
        field,
        keyword,
        value,
        observed: observed.map_or(0, |o| o.at_quantile),
        observed_max: observed.map_or(0, |o| o.max),
    }
}

/// Sets `keyword = value` unless the schema already has a bound <= `value`; never below the
/// schema's `min_keyword`. Returns the value set.
fn tighten(schema: &mut Map<String, Value>, keyword: &str, min_keyword: &str, value: u64) -> Option<u64> {
    if let Some(existing) = schema.get(keyword).and_then(Value::as_f64) {
        if existing <= value as f64 {
            return None;
        }
    }
    let min = schema.get(min_keyword).and_then(Value::as_u64).unwrap_or(0);
    let value = value.max(min);
    schema.insert(keyword.to_owned(), Value::from(value));
    Some(value)
}

fn is_enum(schema: &Map<String, Value>) -> bool {
    schema.contains_key("enum") || schema.contains_key("const")
}

/// Whether `type` names `name` (a string or an array of strings).
fn has_type(schema: &Map<String, Value>, name: &str) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == name,
        Some(Value::Array(types)) => types.iter().any(|t| t.as_str() == Some(name)),
        _ => false,
    }
}

fn char_len(s: &str) -> u64 {
    s.chars().count() as u64
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn examples(values: &[Value]) -> Vec<Example> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Example { id: format!("e{i}"), text: String::new(), expected: v.clone(), line: i + 1 })
            .collect()
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "title": {"type": ["string", "null"], "minLength": 1},
                "parties": {"type": ["array", "null"], "items": {"type": "string"}},
                "law": {"type": ["string", "null"]},
                "flag": {"type": "string", "enum": ["Yes", "No"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
            }
        })
    }

    /// The maximum as the starting point and a floor of 16, so the arithmetic below is plain.
    fn cfg() -> BoundsConfig {
        BoundsConfig { quantile: 1.0, min_max_length: 16, ..BoundsConfig::default() }
    }

    #[test]
    fn quantile_ignores_the_outlier_and_pools_item_lengths() {
        let mut rows: Vec<Value> = (0..9).map(|_| json!({"parties": ["Acme Inc.", "Beta LLC"]})).collect();
        rows.push(
            json!({"parties": (0..12).map(|i| format!("Signatory number {i} of a long filing, Inc.")).collect::<Vec<_>>()}),
        );
        let gold = examples(&rows);
        let cfg = BoundsConfig { quantile: 0.9, ..cfg() };
        let (hardened, notes) = harden_schema(&schema(), &gold, &cfg);
        // Counts: nine 2s and one 12; the 9th of 10 (nearest rank) is 2 -> ceil(2 * 1.5) = 3.
        assert_eq!(hardened["properties"]["parties"]["maxItems"], json!(3));
        let count = notes.iter().find(|n| n.field == "parties").expect("count note");
        assert_eq!((count.observed, count.observed_max), (2, 12));
        // 30 item lengths pooled: 18 short ones and 12 long ones; the 27th is a long one.
        let item = notes.iter().find(|n| n.field == "parties[]").expect("item note");
        assert!(item.observed >= 41 && item.observed_max == 42, "{item:?}");
        assert!(describe(&notes).contains("parties: maxItems 3 (gold quantile 2, max 12)"), "{}", describe(&notes));
    }

    #[test]
    fn disabled_changes_nothing() {
        let gold = examples(&[json!({"title": "x"})]);
        let cfg = BoundsConfig { enabled: false, ..cfg() };
        let (hardened, notes) = harden_schema(&schema(), &gold, &cfg);
        assert_eq!(hardened, schema());
        assert!(notes.is_empty());
    }

    #[test]
    fn derives_bounds_with_headroom_and_floor() {
        let long = "A".repeat(40);
        let gold = examples(&[
            json!({"title": long, "parties": ["Acme Inc.", "Beta"], "law": "NY", "flag": "Yes", "tags": ["a"]}),
            json!({"title": "Short", "parties": ["Gamma Holdings Ltd.", "B", "C"], "law": null, "flag": "No", "tags": []}),
        ]);
        let (hardened, notes) = harden_schema(&schema(), &gold, &cfg());
        let props = &hardened["properties"];
        assert_eq!(props["title"]["maxLength"], json!(60), "ceil(40 * 1.5)");
        assert_eq!(props["law"]["maxLength"], json!(16), "3 -> floor 16");
        assert_eq!(props["parties"]["maxItems"], json!(5), "ceil(3 * 1.5)");
        assert_eq!(props["parties"]["items"]["maxLength"], json!(29), "ceil(19 * 1.5)");
        assert_eq!(props["flag"], schema()["properties"]["flag"], "enums untouched");
        assert_eq!(props["tags"]["maxItems"], json!(2), "smaller existing bound kept");
        assert!(notes.contains(&BoundNote {
            field: "parties".into(),
            keyword: "maxItems",
            value: 5,
            observed: 3,
            observed_max: 3
        }));
        assert!(notes.contains(&BoundNote {
            field: "parties[]".into(),
            keyword: "maxLength",
            value: 29,
            observed: 19,
            observed_max: 19
        }));
        assert!(!notes.iter().any(|n| n.field == "flag" || n.field == "tags"));
        // tags items had no bound: they get one from the observed "a".
        assert_eq!(props["tags"]["items"]["maxLength"], json!(16));
        // Every gold example still validates.
        let validator = jsonschema::draft202012::new(&hardened).unwrap();
        assert!(gold.iter().all(|e| validator.is_valid(&e.expected)));
    }

    #[test]
    fn larger_existing_bound_is_replaced() {
        let schema = json!({"properties": {"name": {"type": "string", "maxLength": 1000}}});
        let gold = examples(&[json!({"name": "x".repeat(20)})]);
        let (hardened, notes) = harden_schema(&schema, &gold, &cfg());
        assert_eq!(hardened["properties"]["name"]["maxLength"], json!(30));
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn no_gold_values_get_defaults() {
        let gold = examples(&[json!({"title": null, "parties": null})]);
        let (hardened, _) = harden_schema(&schema(), &gold, &cfg());
        let props = &hardened["properties"];
        assert_eq!(props["title"]["maxLength"], json!(64));
        assert_eq!(props["law"]["maxLength"], json!(64));
        assert_eq!(props["parties"]["maxItems"], json!(4));
        assert_eq!(props["parties"]["items"]["maxLength"], json!(64));
    }

    #[test]
    fn counts_chars_not_bytes() {
        let schema = json!({"properties": {"name": {"type": "string"}}});
        let gold = examples(&[json!({"name": "é".repeat(20)})]);
        let cfg = BoundsConfig { headroom: 1.0, min_max_length: 1, ..cfg() };
        let (hardened, notes) = harden_schema(&schema, &gold, &cfg);
        assert_eq!(hardened["properties"]["name"]["maxLength"], json!(20));
        assert_eq!(notes[0].observed_max, 20);
    }

    #[test]
    fn respects_minimums() {
        let schema = json!({"properties": {
            "code": {"type": "string", "minLength": 100},
            "list": {"type": "array", "minItems": 6}
        }});
        let gold = examples(&[json!({})]);
        let (hardened, _) = harden_schema(&schema, &gold, &cfg());
        assert_eq!(hardened["properties"]["code"]["maxLength"], json!(100));
        assert_eq!(hardened["properties"]["list"]["maxItems"], json!(6));
    }

    #[test]
    fn empty_arrays_give_at_least_one_item() {
        let schema = json!({"properties": {"list": {"type": "array"}}});
        let gold = examples(&[json!({"list": []})]);
        let (hardened, notes) = harden_schema(&schema, &gold, &cfg());
        assert_eq!(hardened["properties"]["list"]["maxItems"], json!(1));
        assert_eq!(notes[0].observed_max, 0);
    }

    #[test]
    fn schema_without_properties_is_unchanged() {
        let schema = json!({"type": "string"});
        let (hardened, notes) = harden_schema(&schema, &[], &cfg());
        assert_eq!(hardened, schema);
        assert!(notes.is_empty());
    }

    #[test]
    fn describe_one_line_per_field() {
        let notes = vec![
            note("law".into(), "maxLength", 16, Some(Observed { at_quantile: 3, max: 3 })),
            note("parties".into(), "maxItems", 5, Some(Observed { at_quantile: 3, max: 4 })),
            note("parties[]".into(), "maxLength", 29, Some(Observed { at_quantile: 19, max: 19 })),
        ];
        assert_eq!(
            describe(&notes),
            "law: maxLength 16 (gold max 3)\nparties: maxItems 5 (gold quantile 3, max 4), items maxLength 29 (gold max 19)\n"
        );
        assert_eq!(describe(&[]), "");
    }
}
