//! Eval-set health: checks of a loaded task's splits that say, with numbers, when an eval or an
//! optimization on them cannot show what it is meant to show. [`check`] returns [`Warning`]s;
//! `promptloop init` and `promptloop eval` print them (and `eval --json` lists them).
//!
//! - **unseen labels**: labels of an enum field (or of a list field whose items are an enum)
//!   in dev or test that train never shows; a prompt tuned on train is not tuned for them.
//! - **small split**: the smallest mean gain the optimizer's accept gate can see on train, and
//!   a paired bootstrap on test, from [`crate::optimize::gate::min_detectable_gain`], when it is
//!   above [`HealthOptions::wanted_gain`].
//! - **shared text**: the same text (whitespace and case aside) in two splits, under other ids.
//! - **mostly null**: a field with no value in at least [`HealthOptions::null_share`] of records.
//! - **date order**: gold dates of a `date` field that can only be read in the other order
//!   (day first against month first) than the field's; they are compared as text.

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde_json::Value;

use super::{MatchRule, Task};
use crate::config::{Accept, SearchOptions};
use crate::optimize::gate::{min_detectable_gain, GateRule};
use crate::score::date::{DateOrder, OrderEvidence};
use crate::score::matchers::{is_empty_value, value_text};

/// Default [`HealthOptions::wanted_gain`]: 10 points of mean score.
pub const DEFAULT_WANTED_GAIN: f64 = 0.10;
/// Default [`HealthOptions::null_share`].
pub const DEFAULT_NULL_SHARE: f64 = 0.9;
/// Labels and ids a warning's message lists before "(+N more)".
const SHOWN: usize = 8;

/// What the checks compare against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthOptions {
    /// The accept gate whose power is checked (default: `optimize`'s defaults).
    pub gate: GateRule,
    /// A split is too small when the smallest gain the gate can see is above this.
    pub wanted_gain: f64,
    /// A field is mostly null when it has no value in at least this share of records.
    pub null_share: f64,
}

impl Default for HealthOptions {
    fn default() -> Self {
        let search = SearchOptions::default();
        HealthOptions {
            gate: GateRule {
                accept: search.accept,
                confidence: search.confidence,
                seed: search.seed,
                dev_margin: search.dev_margin,
            },
            wanted_gain: DEFAULT_WANTED_GAIN,
            null_share: DEFAULT_NULL_SHARE,
        }
    }
}

/// One finding, with its numbers; `Display` gives the one-line message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "check", rename_all = "kebab-case")]
pub enum Warning {
    /// `unseen` of the `labels` distinct labels of `field` in `split` never occur in train;
    /// `examples` of the split's `total` examples carry one.
    UnseenLabels { field: String, split: String, unseen: Vec<String>, labels: usize, examples: usize, total: usize },
    /// On `examples` examples of `split`, no mean gain below `min_detectable_gain` can pass a
    /// paired comparison under the gate (`None`: no gain at all can).
    SmallSplit {
        split: String,
        examples: usize,
        min_detectable_gain: Option<f64>,
        wanted_gain: f64,
        accept: String,
        confidence: f64,
    },
    /// `examples` texts of `second` are also in `first`; `pairs` lists (first id, second id).
    SharedText { first: String, second: String, examples: usize, pairs: Vec<(String, String)> },
    /// `field` has no value in `null` of `total` records (all splits).
    MostlyNull { field: String, null: usize, total: usize, sparse: bool },
    /// `against` gold dates of `field` are valid only in the order other than the field's
    /// `order`; `sample` is one of them.
    DateOrder { field: String, order: String, against: usize, sample: String },
}

impl Warning {
    /// The warning as a JSON object: its fields, `check`, and `message`.
    pub fn to_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("message".into(), Value::String(self.to_string()));
        }
        value
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// `a, b, c (+2 more)`.
fn listing(items: &[String]) -> String {
    let mut text = items.iter().take(SHOWN).map(String::as_str).collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        let _ = write!(text, " (+{} more)", items.len() - SHOWN);
    }
    text
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnseenLabels { field, split, unseen, labels, examples, total } => write!(
                f,
                "{split}: {} of its {labels} `{field}` labels never occur in train ({examples} of {total} {split} examples, \
                 {:.0}%): {}",
                unseen.len(),
                percent(*examples, *total),
                listing(unseen)
            ),
            Warning::SmallSplit { split, examples, min_detectable_gain, wanted_gain, accept, confidence } => {
                let rule = if accept == "bootstrap" {
                    format!("a paired bootstrap at {confidence}")
                } else {
                    "a higher mean".to_owned()
                };
                let who = if split == "train" { "the accept gate" } else { "a paired comparison" };
                match min_detectable_gain {
                    Some(gain) => write!(
                        f,
                        "{split}: {examples} examples: {who} ({rule}) sees no mean gain under {gain:.3} (about {:.0} of \
                         {examples} examples turning from 0 to 1); gains of {wanted_gain:.2} go unseen",
                        gain * *examples as f64
                    ),
                    None => write!(f, "{split}: {examples} examples: {who} ({rule}) cannot show any gain"),
                }
            }
            Warning::SharedText { first, second, examples, pairs } => {
                let shown: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} = {b}")).collect();
                write!(f, "{examples} texts of {second} are also in {first}: {}", listing(&shown))
            }
            Warning::MostlyNull { field, null, total, sparse } => {
                write!(f, "`{field}` is null in {null} of {total} records ({:.0}%)", percent(*null, *total))?;
                if *sparse {
                    write!(
                        f,
                        "; sparse: scored on the {} records with a value and on answers where the gold is null",
                        total - null
                    )
                } else {
                    write!(f, "; answering null earns it almost every point (`sparse = true` in [fields.{field}] stops that)")
                }
            }
            Warning::DateOrder { field, order, against, sample } => write!(
                f,
                "`{field}` reads numeric dates {order}, but {against} gold dates (e.g. `{sample}`) are valid only the other \
                 way round and are compared as text; set `day-first` in [fields.{field}]"
            ),
        }
    }
}

/// Every check on `task`, in the order of the module docs.
pub fn check(task: &Task, opts: &HealthOptions) -> Vec<Warning> {
    let mut warnings = unseen_labels(task);
    warnings.extend(small_splits(task, opts));
    warnings.extend(shared_text(task));
    warnings.extend(mostly_null(task, opts.null_share));
    warnings.extend(date_order(task));
    warnings
}

/// The labels of an enum field (or a list of enum items) in one gold value, trimmed and
/// case-folded as the `enum` matcher compares them.
fn labels(value: &Value) -> Vec<String> {
    let one = |v: &Value| value_text(v).trim().to_lowercase();
    match value {
        Value::Array(items) => items.iter().filter(|v| !is_empty_value(v)).map(one).collect(),
        v if is_empty_value(v) => Vec::new(),
        v => vec![one(v)],
    }
}

/// The fields whose values are labels: `match = "enum"`, or a list whose items are an enum.
fn label_fields(task: &Task) -> Vec<&str> {
    let props = task.schema.get("properties");
    task.fields
        .iter()
        .filter(|spec| match spec.rule {
            MatchRule::Enum => true,
            MatchRule::List { .. } => {
                props.and_then(|p| p.get(&spec.name)).and_then(|p| p.get("items")).is_some_and(|i| i.get("enum").is_some())
            }
            _ => false,
        })
        .map(|spec| spec.name.as_str())
        .collect()
}

fn unseen_labels(task: &Task) -> Vec<Warning> {
    let Some(train) = task.splits.get("train") else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for field in label_fields(task) {
        let gold = |e: &super::Example| labels(e.expected.get(field).unwrap_or(&Value::Null));
        let seen: BTreeSet<String> = train.examples.iter().flat_map(gold).collect();
        for split in task.splits.values().filter(|s| s.name != "train") {
            let mut all = BTreeSet::new();
            let mut unseen = BTreeSet::new();
            let mut examples = 0;
            for e in &split.examples {
                let mut new = false;
                for label in gold(e) {
                    if !seen.contains(&label) {
                        new = true;
                        unseen.insert(label.clone());
                    }
                    all.insert(label);
                }
                examples += usize::from(new);
            }
            if !unseen.is_empty() {
                warnings.push(Warning::UnseenLabels {
                    field: field.to_owned(),
                    split: split.name.clone(),
                    unseen: unseen.into_iter().collect(),
                    labels: all.len(),
                    examples,
                    total: split.examples.len(),
                });
            }
        }
    }
    warnings
}

/// Train (the accept gate) and test (the final comparison): the gate's smallest detectable gain
/// against [`HealthOptions::wanted_gain`].
fn small_splits(task: &Task, opts: &HealthOptions) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for name in ["train", "test"] {
        let Some(split) = task.splits.get(name) else {
            continue;
        };
        let n = split.examples.len();
        let gain = min_detectable_gain(&opts.gate, n);
        if gain.is_none_or(|g| g > opts.wanted_gain + 1e-12) {
            warnings.push(Warning::SmallSplit {
                split: name.to_owned(),
                examples: n,
                min_detectable_gain: gain,
                wanted_gain: opts.wanted_gain,
                accept: match opts.gate.accept {
                    Accept::Bootstrap => "bootstrap".to_owned(),
                    Accept::Mean => "mean".to_owned(),
                },
                confidence: opts.gate.confidence,
            });
        }
    }
    warnings
}

/// A text as compared across splits: words joined by one space, lower-case.
fn text_key(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Two splits by their place in the checking order.
type SplitPair = (usize, usize);
/// An id of the first split and the id of the same text in the second.
type IdPair = (String, String);

fn shared_text(task: &Task) -> Vec<Warning> {
    // Splits in the order they are checked (train, dev, test, then others), each text's first
    // sighting kept.
    let order = |name: &str| ["train", "dev", "test"].iter().position(|s| *s == name).unwrap_or(3);
    let mut splits: Vec<&super::Split> = task.splits.values().collect();
    splits.sort_by_key(|s| (order(&s.name), s.name.clone()));
    let mut first: HashMap<String, (usize, &str)> = HashMap::new();
    // (first split, second split) -> pairs of ids
    let mut shared: Vec<(SplitPair, Vec<IdPair>)> = Vec::new();
    for (i, split) in splits.iter().enumerate() {
        for e in &split.examples {
            let key = text_key(&e.text);
            match first.get(&key) {
                Some(&(j, id)) if j != i => {
                    let pair = (id.to_owned(), e.id.clone());
                    match shared.iter_mut().find(|(k, _)| *k == (j, i)) {
                        Some((_, pairs)) => pairs.push(pair),
                        None => shared.push(((j, i), vec![pair])),
                    }
                }
                Some(_) => {}
                None => {
                    first.insert(key, (i, &e.id));
                }
            }
        }
    }
    shared
        .into_iter()
        .map(|((a, b), pairs)| Warning::SharedText {
            first: splits[a].name.clone(),
            second: splits[b].name.clone(),
            examples: pairs.len(),
            pairs,
        })
        .collect()
}

fn mostly_null(task: &Task, share: f64) -> Vec<Warning> {
    let examples: Vec<&super::Example> = task.splits.values().flat_map(|s| &s.examples).collect();
    let total = examples.len();
    if total == 0 {
        return Vec::new();
    }
    task.fields
        .iter()
        .filter_map(|spec| {
            let null = examples.iter().filter(|e| is_empty_value(e.expected.get(&spec.name).unwrap_or(&Value::Null))).count();
            (null as f64 >= share * total as f64).then(|| Warning::MostlyNull {
                field: spec.name.clone(),
                null,
                total,
                sparse: spec.sparse,
            })
        })
        .collect()
}

fn date_order(task: &Task) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for spec in &task.fields {
        let MatchRule::Date { day_first } = spec.rule else {
            continue;
        };
        let order = DateOrder::day_first(day_first);
        let mut evidence = OrderEvidence::default();
        let mut sample = None;
        for e in task.splits.values().flat_map(|s| &s.examples) {
            let Some(value) = e.expected.get(&spec.name).filter(|v| v.is_string() || v.is_array()) else {
                continue;
            };
            let text = value_text(value);
            let before = evidence.against(order);
            evidence.add(&text);
            if sample.is_none() && evidence.against(order) > before {
                sample = Some(text);
            }
        }
        if let Some(sample) = sample {
            warnings.push(Warning::DateOrder {
                field: spec.name.clone(),
                order: order.as_str().to_owned(),
                against: evidence.against(order),
                sample,
            });
        }
    }
    warnings
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
