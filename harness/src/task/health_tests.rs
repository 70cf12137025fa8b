//! Tests of the eval-set health checks: each check on a small synthetic task, the JSON form,
//! and what the check says on each shipped task (records from the data root).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::task::{Example, FieldSpec, Split};

/// A task with `fields` and the given splits of (id, text, expected); no files behind it.
/// (id, text, expected)
type Row<'a> = (&'a str, &'a str, Value);

fn task(fields: Vec<FieldSpec>, schema: Value, splits: &[(&str, Vec<Row<'_>>)]) -> Task {
    let splits: BTreeMap<String, Split> = splits
        .iter()
        .map(|(name, examples)| {
            let examples = examples
                .iter()
                .enumerate()
                .map(|(i, (id, text, expected))| Example {
                    id: (*id).to_owned(),
                    text: (*text).to_owned(),
                    expected: expected.clone(),
                    line: i + 1,
                })
                .collect();
            ((*name).to_owned(), Split { name: (*name).to_owned(), path: PathBuf::from(format!("{name}.jsonl")), examples })
        })
        .collect();
    Task {
        name: "synthetic".into(),
        description: None,
        dir: PathBuf::from("."),
        schema,
        schema_path: PathBuf::from("schema.json"),
        prompt: "Extract.".into(),
        prompt_path: PathBuf::from("prompt.txt"),
        max_tokens: 32,
        layout: crate::task::Layout::default(),
        framing: crate::task::Framing::default(),
        bounds: crate::task::BoundsConfig::default(),
        fields,
        splits,
        data: None,
    }
}

fn spec(name: &str, rule: MatchRule) -> FieldSpec {
    FieldSpec { name: name.into(), rule, sparse: false }
}

/// `n` examples `{prefix}{i}` with label `labels[i % len]`.
fn labelled(prefix: &str, n: usize, labels: &[&str]) -> Vec<(String, String, Value)> {
    (0..n).map(|i| (format!("{prefix}{i}"), format!("{prefix} text {i}"), json!({"intent": labels[i % labels.len()]}))).collect()
}

fn borrow(v: &[(String, String, Value)]) -> Vec<Row<'_>> {
    v.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.clone())).collect()
}

const MEAN: HealthOptions = HealthOptions {
    gate: GateRule { accept: Accept::Mean, confidence: 0.9, seed: 0, dev_margin: 0.0 },
    wanted_gain: 0.10,
    null_share: 0.9,
};

#[test]
fn labels_absent_from_train_are_counted() {
    let train = labelled("tr", 40, &["a", "b"]);
    let test = labelled("te", 20, &["a", "C ", "d", "c"]);
    let t = task(vec![spec("intent", MatchRule::Enum)], json!({}), &[("train", borrow(&train)), ("test", borrow(&test))]);
    let w = unseen_labels(&t);
    assert_eq!(
        w,
        vec![Warning::UnseenLabels {
            field: "intent".into(),
            split: "test".into(),
            unseen: vec!["c".into(), "d".into()],
            labels: 3,
            examples: 15,
            total: 20,
        }],
        "`C ` and `c` are one label, as the enum matcher compares them"
    );
    assert_eq!(w[0].to_string(), "test: 2 of its 3 `intent` labels never occur in train (15 of 20 test examples, 75%): c, d");
    // No train split: nothing to compare with.
    let t = task(vec![spec("intent", MatchRule::Enum)], json!({}), &[("test", borrow(&test))]);
    assert!(unseen_labels(&t).is_empty());
}

#[test]
fn list_fields_with_enum_items_are_label_fields() {
    let schema =
        json!({"properties": {"intents": {"type": "array", "items": {"enum": ["x", "y", "z"]}}, "names": {"type": "array"}}});
    let fields = vec![spec("intents", MatchRule::List { fuzzy: 1.0 }), spec("names", MatchRule::List { fuzzy: 0.85 })];
    let t = task(
        fields,
        schema,
        &[
            ("train", vec![("a", "one", json!({"intents": ["x"], "names": ["P"]}))]),
            (
                "dev",
                vec![
                    ("b", "two", json!({"intents": ["x", "y"], "names": ["Q"]})),
                    ("c", "three", json!({"intents": [], "names": []})),
                ],
            ),
        ],
    );
    let w = unseen_labels(&t);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        matches!(&w[0], Warning::UnseenLabels { field, unseen, examples: 1, total: 2, .. } if field == "intents" && unseen == &["y"])
    );
}

#[test]
fn small_splits_report_the_gates_smallest_detectable_gain() {
    let train = labelled("tr", 8, &["a"]);
    let test = labelled("te", 40, &["a"]);
    let t = task(vec![spec("intent", MatchRule::Enum)], json!({}), &[("train", borrow(&train)), ("test", borrow(&test))]);
    // The mean rule sees one example in n: 1/8 on train is above 0.10, 1/40 on test is not.
    let w = small_splits(&t, &MEAN);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        matches!(&w[0], Warning::SmallSplit { split, examples: 8, min_detectable_gain: Some(g), .. } if split == "train" && (g - 0.125).abs() < 1e-12)
    );
    assert!(
        w[0].to_string()
            .starts_with("train: 8 examples: the accept gate (a higher mean) sees no mean gain under 0.125 (about 1 of 8"),
        "{}",
        w[0]
    );
    // The bootstrap gate (the default) needs more: the number is the gate's own.
    let opts = HealthOptions::default();
    let w = small_splits(&t, &opts);
    let expected = min_detectable_gain(&opts.gate, 8);
    assert!(expected.is_some_and(|g| g > 0.125));
    assert!(
        matches!(&w[0], Warning::SmallSplit { min_detectable_gain, accept, .. } if *min_detectable_gain == expected && accept == "bootstrap")
    );
    assert!(w[0].to_string().contains("a paired bootstrap at 0.9"), "{}", w[0]);
    let big = labelled("tr", 200, &["a"]);
    let t = task(vec![spec("intent", MatchRule::Enum)], json!({}), &[("train", borrow(&big))]);
    assert!(small_splits(&t, &opts).is_empty(), "200 examples see gains of 0.10");
}

#[test]
fn the_same_text_in_two_splits_is_reported_once_per_pair() {
    let t = task(
        vec![spec("intent", MatchRule::Enum)],
        json!({}),
        &[
            ("train", vec![("a", "Hello  World", json!({})), ("b", "other", json!({})), ("b2", "other", json!({}))]),
            ("dev", vec![("c", "hello world", json!({})), ("d", "new", json!({}))]),
            ("test", vec![("e", "HELLO WORLD\n", json!({})), ("f", "other", json!({})), ("g", "new", json!({}))]),
        ],
    );
    let w = shared_text(&t);
    assert_eq!(
        w,
        vec![
            Warning::SharedText {
                first: "train".into(),
                second: "dev".into(),
                examples: 1,
                pairs: vec![("a".into(), "c".into())]
            },
            Warning::SharedText {
                first: "train".into(),
                second: "test".into(),
                examples: 2,
                pairs: vec![("a".into(), "e".into()), ("b".into(), "f".into())]
            },
            Warning::SharedText {
                first: "dev".into(),
                second: "test".into(),
                examples: 1,
                pairs: vec![("d".into(), "g".into())]
            },
        ],
        "a repeat within train is not reported"
    );
    assert_eq!(w[1].to_string(), "2 texts of test are also in train: a = e, b = f");
}

#[test]
fn mostly_null_fields() {
    let rows: Vec<(String, String, Value)> = (0..20)
        .map(|i| {
            let slot = if i == 0 { json!("two") } else { Value::Null };
            let kids = if i < 2 { json!("one") } else { json!("") };
            (format!("x{i}"), format!("text {i}"), json!({"slot": slot, "kids": kids, "intent": "a"}))
        })
        .collect();
    let mut kids = spec("kids", MatchRule::Exact);
    kids.sparse = true;
    let fields = vec![spec("slot", MatchRule::Exact), kids, spec("intent", MatchRule::Enum), spec("absent", MatchRule::Exact)];
    let t = task(fields, json!({}), &[("train", borrow(&rows))]);
    let w = mostly_null(&t, 0.9);
    assert_eq!(
        w,
        vec![
            Warning::MostlyNull { field: "slot".into(), null: 19, total: 20, sparse: false },
            Warning::MostlyNull { field: "kids".into(), null: 18, total: 20, sparse: true },
            Warning::MostlyNull { field: "absent".into(), null: 20, total: 20, sparse: false },
        ]
    );
    assert!(w[0].to_string().starts_with("`slot` is null in 19 of 20 records (95%); answering null"), "{}", w[0]);
    assert!(w[1].to_string().contains("sparse: scored on the 2 records with a value"), "{}", w[1]);
    assert!(mostly_null(&t, 0.96).iter().all(|w| matches!(w, Warning::MostlyNull { field, .. } if field == "absent")));
}

#[test]
fn gold_dates_against_the_fields_order() {
    let rows = vec![
        ("a", "t1", json!({"d": "25/03/2020"})),
        ("b", "t2", json!({"d": "01/02/2020"})),
        ("c", "t3", json!({"d": "26/03/2020"})),
    ];
    let month_first = task(vec![spec("d", MatchRule::Date { day_first: false })], json!({}), &[("train", rows.clone())]);
    let w = date_order(&month_first);
    assert_eq!(
        w,
        vec![Warning::DateOrder { field: "d".into(), order: "month first".into(), against: 2, sample: "25/03/2020".into() }]
    );
    assert!(w[0].to_string().contains("set `day-first` in [fields.d]"), "{}", w[0]);
    let day_first = task(vec![spec("d", MatchRule::Date { day_first: true })], json!({}), &[("train", rows)]);
    assert!(date_order(&day_first).is_empty());
}

#[test]
fn warnings_serialise_with_their_check_and_message() {
    let w = Warning::MostlyNull { field: "slot".into(), null: 9, total: 10, sparse: false };
    let v = w.to_json();
    assert_eq!(v["check"], "mostly-null");
    assert_eq!(v["null"], 9);
    assert_eq!(v["message"], w.to_string());
}

/// One line per warning: its check, where, and its counts.
fn brief(w: &Warning) -> String {
    match w {
        Warning::UnseenLabels { field, split, unseen, labels, examples, total } => {
            format!("unseen-labels {split} {field} {}/{labels} labels {examples}/{total} examples", unseen.len())
        }
        Warning::SmallSplit { split, examples, .. } => format!("small-split {split} {examples}"),
        Warning::SharedText { first, second, examples, .. } => format!("shared-text {first} {second} {examples}"),
        Warning::MostlyNull { field, null, total, sparse } => format!("mostly-null {field} {null}/{total} sparse={sparse}"),
        Warning::DateOrder { field, against, .. } => format!("date-order {field} {against}"),
    }
}

/// The shipped tasks: what each one's health check says (records from the data root).
#[test]
fn the_shipped_tasks_health() {
    let evals = Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals");
    let opts = HealthOptions::default();
    let warnings = |name: &str| {
        let task = Task::load(&evals.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&task, &opts)
    };
    let briefs = |w: &[Warning]| w.iter().map(brief).collect::<Vec<_>>();

    // banking77's SOURCE.md: train covers 36 labels, test 57 (27 of them in train).
    let banking = warnings("banking77");
    assert_eq!(
        briefs(&banking),
        ["unseen-labels dev intent 15/32 labels 18/40 examples", "unseen-labels test intent 30/57 labels 50/100 examples"]
    );
    // cuad-mini: 16 train and 12 test contracts; the gains the gate can see are the gate's.
    let mini = warnings("cuad-mini");
    assert_eq!(briefs(&mini), ["small-split train 16", "small-split test 12"]);
    for (w, n) in mini.iter().zip([16, 12]) {
        let Warning::SmallSplit { min_detectable_gain: gain, .. } = w else { unreachable!() };
        assert_eq!(*gain, min_detectable_gain(&opts.gate, n));
        assert!(gain.is_some_and(|g| g > 0.15), "{w}");
    }
    // cuad: no train contract has a price-restrictions clause.
    assert_eq!(
        briefs(&warnings("cuad")),
        [
            "unseen-labels dev price_restrictions 1/2 labels 2/40 examples",
            "unseen-labels test price_restrictions 1/2 labels 1/100 examples"
        ]
    );
    // nlupp-hotels: intents new to dev and test, and the sparse slots.
    assert_eq!(
        briefs(&warnings("nlupp-hotels")),
        [
            "unseen-labels dev intents 5/22 labels 6/40 examples",
            "unseen-labels test intents 6/31 labels 16/100 examples",
            "mostly-null date 182/200 sparse=true",
            "mostly-null date_period 182/200 sparse=true",
            "mostly-null date_to 180/200 sparse=true",
            "mostly-null time 184/200 sparse=true",
            "mostly-null time_from 196/200 sparse=true",
            "mostly-null time_to 196/200 sparse=true",
            "mostly-null time_period 191/200 sparse=true",
            "mostly-null person_name 192/200 sparse=true",
            "mostly-null number 195/200 sparse=true",
            "mostly-null kids 183/200 sparse=true",
            "mostly-null people 184/200 sparse=true",
        ]
    );
    assert!(warnings("evidence-inference").is_empty());
}
