//! The `task.toml` format as read from disk ([`RawTask`]) and its checks against the schema:
//! per-field match rules with their defaults (a date field's order from its gold values), and
//! the `[bounds]` table.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use super::read::line_col;
use super::{BoundsConfig, FieldSpec, Layout, MatchRule, Split, TaskError};
use crate::score::date::OrderEvidence;
use crate::score::matchers::value_text;

/// Default `fuzzy` threshold of the `list` rule.
pub const DEFAULT_FUZZY: f64 = 0.85;
/// Default `fuzzy` threshold of the `text` rule: below it a text scores 0 (see
/// `crate::score::matchers::text_similarity`).
pub const DEFAULT_TEXT_FUZZY: f64 = 0.8;
/// Default absolute `tolerance` of the `number` rule.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;
/// Default `max-tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// `task.toml` as written; spans locate values for error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTask {
    pub name: Option<Spanned<String>>,
    pub description: Option<String>,
    pub schema: Spanned<String>,
    pub prompt: Spanned<String>,
    pub max_tokens: Option<Spanned<u32>>,
    pub layout: Option<Layout>,
    /// The label before the document in prompts; see `super::Framing`.
    pub document_label: Option<Spanned<String>>,
    /// A dataset under the data root that the splits read from (see `super::data`).
    pub data: Option<Spanned<String>>,
    /// Each record's text is cut to its first N characters.
    pub clip_chars: Option<Spanned<u32>>,
    /// Each split: a file name, or a selection table (see `super::data::SplitSource`).
    pub splits: Spanned<BTreeMap<String, Spanned<toml::Value>>>,
    pub bounds: Option<Spanned<RawBounds>>,
    #[serde(default)]
    pub fields: BTreeMap<String, Spanned<RawFieldRule>>,
}

/// The `[bounds]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawBounds {
    pub enabled: Option<bool>,
    pub quantile: Option<f64>,
    pub headroom: Option<f64>,
    pub min_max_length: Option<u32>,
    pub from_split: Option<String>,
}

/// One `[fields.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawFieldRule {
    #[serde(rename = "match")]
    pub kind: Option<MatchKind>,
    pub fuzzy: Option<f64>,
    pub tolerance: Option<f64>,
    pub sparse: Option<bool>,
    /// `match = "date"`: numeric dates day first; absent = from the gold values.
    pub day_first: Option<bool>,
}

/// The `match = "..."` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum MatchKind {
    Exact,
    Date,
    Enum,
    Number,
    List,
    Text,
}

impl MatchKind {
    fn name(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Date => "date",
            MatchKind::Enum => "enum",
            MatchKind::Number => "number",
            MatchKind::List => "list",
            MatchKind::Text => "text",
        }
    }
}

/// Where in `task.toml` a value sits, for [`TaskError::Config`].
pub(super) struct TomlDoc<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl TomlDoc<'_> {
    pub fn error(&self, span: Option<std::ops::Range<usize>>, field: &str, message: String) -> TaskError {
        TaskError::Config {
            path: self.path.to_path_buf(),
            line: span.map(|s| line_col(self.text, s.start).0),
            field: field.to_owned(),
            message,
        }
    }
}

/// Maps a TOML syntax or shape error to [`TaskError::Toml`], with line and column from its span.
pub(super) fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> TaskError {
    let message = err.message().trim();
    // A missing key has the whole document as its span: no line to point at.
    let span = err.span().filter(|span| !(span.start == 0 && message.starts_with("missing field")));
    let pos = span.map(|span| line_col(text, span.start));
    // The dotted key is only in the error's context-free rendering ("in `bounds.headroom`").
    let mut bare = err.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    let key = rendered.lines().find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    TaskError::Toml {
        path: path.to_path_buf(),
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
        message: match key {
            Some(key) => format!("`{key}`: {message}"),
            None => message.to_owned(),
        },
    }
}

/// Checks the `[bounds]` table; `splits` are the split names, for `from-split`.
pub(super) fn bounds_config(
    raw: Option<&Spanned<RawBounds>>,
    splits: &[&str],
    doc: &TomlDoc<'_>,
) -> Result<BoundsConfig, TaskError> {
    let mut cfg = BoundsConfig::default();
    let Some(raw) = raw else {
        if !splits.contains(&cfg.from_split.as_str()) {
            // The default source split is absent: bounds are off unless asked for.
            cfg.enabled = false;
        }
        return Ok(cfg);
    };
    let span = Some(raw.span());
    let raw = raw.get_ref();
    if let Some(enabled) = raw.enabled {
        cfg.enabled = enabled;
    }
    if let Some(quantile) = raw.quantile {
        if !(quantile > 0.0 && quantile <= 1.0) {
            return Err(doc.error(
                span,
                "bounds.quantile",
                format!("must be in (0, 1] (1 = the largest gold value), got {quantile}"),
            ));
        }
        cfg.quantile = quantile;
    }
    if let Some(headroom) = raw.headroom {
        if !headroom.is_finite() || headroom < 1.0 {
            return Err(doc.error(
                span,
                "bounds.headroom",
                format!("must be a number >= 1 (a factor on observed lengths), got {headroom}"),
            ));
        }
        cfg.headroom = headroom;
    }
    if let Some(min) = raw.min_max_length {
        if min == 0 {
            return Err(doc.error(span, "bounds.min-max-length", "must be at least 1".into()));
        }
        cfg.min_max_length = min;
    }
    if let Some(from) = &raw.from_split {
        cfg.from_split.clone_from(from);
    }
    if cfg.enabled && !splits.contains(&cfg.from_split.as_str()) {
        return Err(doc.error(
            span,
            "bounds.from-split",
            format!("no split `{}` in [splits] (available: {})", cfg.from_split, splits.join(", ")),
        ));
    }
    Ok(cfg)
}

/// Which JSON types a property schema allows; `any` when it does not say.
#[allow(clippy::struct_excessive_bools)] // a set of flags, one per JSON type
#[derive(Debug, Default, Clone, Copy)]
struct Types {
    string: bool,
    number: bool,
    boolean: bool,
    array: bool,
    object: bool,
    null: bool,
    any: bool,
}

impl Types {
    fn of(schema: &Value) -> Types {
        let mut t = Types::default();
        match schema.get("type") {
            Some(Value::String(name)) => t.add(name),
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).for_each(|n| t.add(n)),
            _ => {
                let branches = ["anyOf", "oneOf"].iter().filter_map(|k| schema.get(*k).and_then(Value::as_array)).flatten();
                let mut seen = false;
                for branch in branches {
                    seen = true;
                    t.merge(Types::of(branch));
                }
                if !seen {
                    if schema.get("items").is_some() || schema.get("prefixItems").is_some() {
                        t.array = true;
                    } else {
                        t.any = true;
                    }
                }
            }
        }
        t
    }

    fn add(&mut self, name: &str) {
        match name {
            "string" => self.string = true,
            "number" | "integer" => self.number = true,
            "boolean" => self.boolean = true,
            "array" => self.array = true,
            "object" => self.object = true,
            "null" => self.null = true,
            _ => self.any = true,
        }
    }

    fn merge(&mut self, other: Types) {
        self.string |= other.string;
        self.number |= other.number;
        self.boolean |= other.boolean;
        self.array |= other.array;
        self.object |= other.object;
        self.null |= other.null;
        self.any |= other.any;
    }

    fn describe(self) -> String {
        let names = [
            (self.string, "string"),
            (self.number, "number"),
            (self.boolean, "boolean"),
            (self.array, "array"),
            (self.object, "object"),
            (self.null, "null"),
        ];
        let list: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if list.is_empty() {
            "no type".into()
        } else {
            list.join("/")
        }
    }
}

/// The rule a property gets when `task.toml` does not name one.
fn default_kind(name: &str, schema: &Value) -> MatchKind {
    let types = Types::of(schema);
    if schema.get("enum").is_some() || schema.get("const").is_some() {
        MatchKind::Enum
    } else if types.array {
        MatchKind::List
    } else if types.number {
        MatchKind::Number
    } else if (types.string || types.any) && name.ends_with("date") {
        MatchKind::Date
    } else {
        MatchKind::Exact
    }
}

/// Whether `kind` can compare values of this property; `Err` says why not.
fn check_kind(kind: MatchKind, schema: &Value) -> Result<(), String> {
    let t = Types::of(schema);
    if t.any {
        return Ok(());
    }
    let ok = match kind {
        MatchKind::Exact => true,
        MatchKind::List => t.array,
        MatchKind::Number => t.number || t.string,
        MatchKind::Date | MatchKind::Text => t.string,
        MatchKind::Enum => t.string || t.number || t.boolean || schema.get("enum").is_some() || schema.get("const").is_some(),
    };
    if ok {
        Ok(())
    } else {
        let needs = match kind {
            MatchKind::List => "an array",
            MatchKind::Number => "a number or string",
            MatchKind::Date | MatchKind::Text => "a string",
            MatchKind::Enum => "a scalar (string, number, boolean)",
            MatchKind::Exact => "any",
        };
        Err(format!("`match = \"{}\"` needs {needs} property, but the schema's type is {}", kind.name(), t.describe()))
    }
}

/// Builds one [`FieldSpec`] per schema property, in `order`, applying `[fields.*]` rules.
pub(super) fn field_specs(
    properties: &serde_json::Map<String, Value>,
    order: &[String],
    rules: &BTreeMap<String, Spanned<RawFieldRule>>,
    doc: &TomlDoc<'_>,
) -> Result<Vec<FieldSpec>, TaskError> {
    for (name, rule) in rules {
        if !properties.contains_key(name) {
            let hint = properties
                .keys()
                .map(|k| (strsim::jaro_winkler(k, name), k))
                .filter(|(sim, _)| *sim > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            return Err(doc.error(
                Some(rule.span()),
                &format!("fields.{name}"),
                format!("the schema has no property `{name}`{hint}"),
            ));
        }
    }
    let mut specs = Vec::with_capacity(properties.len());
    for name in order {
        let Some(schema) = properties.get(name) else {
            continue;
        };
        let rule = rules.get(name);
        let span = rule.map(Spanned::span);
        let raw = rule.map(Spanned::get_ref);
        let kind = raw.and_then(|r| r.kind).unwrap_or_else(|| default_kind(name, schema));
        let key = |k: &str| format!("fields.{name}.{k}");
        check_kind(kind, schema).map_err(|msg| doc.error(span.clone(), &key("match"), msg))?;
        let fuzzy = raw.and_then(|r| r.fuzzy);
        let tolerance = raw.and_then(|r| r.tolerance);
        let day_first = raw.and_then(|r| r.day_first);
        if fuzzy.is_some() && !matches!(kind, MatchKind::List | MatchKind::Text) {
            return Err(doc.error(
                span,
                &key("fuzzy"),
                format!("`fuzzy` applies to `match = \"list\"` and `\"text\"` only, this field uses `{}`", kind.name()),
            ));
        }
        if day_first.is_some() && kind != MatchKind::Date {
            return Err(doc.error(
                span,
                &key("day-first"),
                format!("`day-first` applies to `match = \"date\"` only, this field uses `{}`", kind.name()),
            ));
        }
        if tolerance.is_some() && kind != MatchKind::Number {
            return Err(doc.error(
                span,
                &key("tolerance"),
                format!("`tolerance` applies to `match = \"number\"` only, this field uses `{}`", kind.name()),
            ));
        }
        let rule = match kind {
            MatchKind::Exact => MatchRule::Exact,
            MatchKind::Date => MatchRule::Date { day_first: day_first.unwrap_or(false) },
            MatchKind::Enum => MatchRule::Enum,
            MatchKind::Number => {
                let tolerance = tolerance.unwrap_or(DEFAULT_TOLERANCE);
                if !tolerance.is_finite() || tolerance < 0.0 {
                    return Err(doc.error(span, &key("tolerance"), format!("must be a number >= 0, got {tolerance}")));
                }
                MatchRule::Number { tolerance }
            }
            MatchKind::List => {
                let fuzzy = fuzzy.unwrap_or(DEFAULT_FUZZY);
                if !(fuzzy > 0.0 && fuzzy <= 1.0) {
                    return Err(doc.error(span, &key("fuzzy"), format!("must be in (0, 1], got {fuzzy}")));
                }
                MatchRule::List { fuzzy }
            }
            MatchKind::Text => {
                let fuzzy = fuzzy.unwrap_or(DEFAULT_TEXT_FUZZY);
                if !(fuzzy > 0.0 && fuzzy <= 1.0) {
                    return Err(doc.error(span, &key("fuzzy"), format!("must be in (0, 1], got {fuzzy}")));
                }
                MatchRule::Text { fuzzy }
            }
        };
        specs.push(FieldSpec { name: name.clone(), rule, sparse: raw.and_then(|r| r.sparse).unwrap_or(false) });
    }
    Ok(specs)
}

/// Sets `day_first` of each `date` field whose `[fields.*]` table does not say, from the gold
/// values of every split ([`OrderEvidence::order`]: day first when more gold dates can only be
/// read day first than month first).
pub(super) fn date_orders(
    fields: &mut [FieldSpec],
    rules: &BTreeMap<String, Spanned<RawFieldRule>>,
    splits: &BTreeMap<String, Split>,
) {
    for spec in fields {
        let MatchRule::Date { day_first } = &mut spec.rule else {
            continue;
        };
        if rules.get(&spec.name).and_then(|r| r.get_ref().day_first).is_some() {
            continue;
        }
        let mut evidence = OrderEvidence::default();
        for example in splits.values().flat_map(|s| &s.examples) {
            if let Some(value) = example.expected.get(&spec.name).filter(|v| v.is_string() || v.is_array()) {
                evidence.add(&value_text(value));
            }
        }
        *day_first = evidence.order() == crate::score::date::DateOrder::DayFirst;
    }
}
