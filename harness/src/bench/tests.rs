//! Unit tests of the comparison logic, threshold parsing, baseline files, medians and the
//! scorer cases (no model).

use std::path::Path;

use super::baseline::{check_name, parse_threshold, resolve, verdict, Baseline, BaselineError, Comparison, Verdict};
use super::{measure, BenchError, Better, Group, Measured, Metric, MetricSpec, Workload};

fn metric(name: &str, group: Group, value: f64, unit: &str, better: Better) -> Metric {
    Metric { name: name.into(), group, value, unit: unit.into(), better, min: None, max: None, repeats: 1 }
}

fn baseline(metrics: Vec<Metric>) -> Baseline {
    Baseline { format: 1, name: "t".into(), facts: None, metrics }
}

#[test]
fn a_rate_regresses_when_it_drops_and_a_cost_when_it_rises() {
    // tok/s: higher is better.
    assert_eq!(verdict(Better::Higher, 100.0, 89.0, 0.1), Verdict::Regressed);
    assert_eq!(verdict(Better::Higher, 100.0, 91.0, 0.1), Verdict::Ok);
    assert_eq!(verdict(Better::Higher, 100.0, 150.0, 0.1), Verdict::Improved);
    // ms/token: lower is better, the same numbers mean the opposite.
    assert_eq!(verdict(Better::Lower, 100.0, 111.0, 0.1), Verdict::Regressed);
    assert_eq!(verdict(Better::Lower, 100.0, 109.0, 0.1), Verdict::Ok);
    assert_eq!(verdict(Better::Lower, 100.0, 89.0, 0.1), Verdict::Improved);
    // Threshold 0: any worsening regresses.
    assert_eq!(verdict(Better::Higher, 100.0, 99.9, 0.0), Verdict::Regressed);
    assert_eq!(verdict(Better::Lower, 100.0, 100.0, 0.0), Verdict::Ok);
}

#[test]
fn comparison_reports_missing_new_unit_changes_and_skipped_groups() {
    let old = baseline(vec![
        metric("llama/decode/128", Group::Decode, 100.0, "tok/s", Better::Higher),
        metric("llama/constraint/gbnf", Group::Constraint, 10.0, "ms/token", Better::Lower),
        metric("llama/tokenizer", Group::Tokenizer, 5000.0, "tok/s", Better::Higher),
        metric("llama/prefill/128", Group::Prefill, 300.0, "tok/s", Better::Higher),
        metric("scorer/cuad-mini", Group::Scorer, 1.0, "ms/score", Better::Lower),
    ]);
    let new = vec![
        metric("llama/decode/128", Group::Decode, 50.0, "tok/s", Better::Higher),
        metric("llama/constraint/gbnf", Group::Constraint, 5.0, "ms/token", Better::Lower),
        metric("llama/decode/256", Group::Decode, 90.0, "tok/s", Better::Higher),
        metric("scorer/cuad-mini", Group::Scorer, 9000.0, "scores/s", Better::Higher),
    ];
    let groups = [Group::Decode, Group::Constraint, Group::Tokenizer, Group::Scorer];
    let c = Comparison::new(&old, &new, &groups, None, 0.1);
    let v = |name: &str| c.rows.iter().find(|r| r.name == name).map(|r| r.verdict);
    assert_eq!(v("llama/decode/128"), Some(Verdict::Regressed));
    assert_eq!(v("llama/constraint/gbnf"), Some(Verdict::Improved));
    assert_eq!(v("llama/decode/256"), Some(Verdict::New));
    assert_eq!(v("scorer/cuad-mini"), Some(Verdict::UnitChanged));
    assert_eq!(v("llama/tokenizer"), Some(Verdict::Missing));
    // Prefill did not run: skipped, not missing.
    assert_eq!(v("llama/prefill/128"), None);
    assert_eq!(c.skipped, vec!["llama/prefill/128".to_owned()]);
    assert_eq!(c.regressions().count(), 1);
    let row = c.rows.iter().find(|r| r.name == "llama/decode/128").unwrap();
    assert_eq!(row.ratio, Some(0.5));
    let table = c.table("main");
    assert!(table.contains("REGRESSED") && table.contains("-50.0%"), "{table}");
    assert!(table.contains("1 of 5 metrics regressed beyond 10% against main"), "{table}");
    assert!(table.contains("not run (--only): llama/prefill/128"), "{table}");
}

#[test]
fn thresholds_parse_as_percentages_or_fractions() {
    assert_eq!(parse_threshold("10%"), Ok(0.1));
    assert_eq!(parse_threshold(" 2.5 % "), Ok(0.025));
    assert_eq!(parse_threshold("0.1"), Ok(0.1));
    assert_eq!(parse_threshold("0"), Ok(0.0));
    assert_eq!(parse_threshold("150%"), Ok(1.5));
    for bad in ["", "%", "ten", "-5%", "-0.1", "NaN", "inf%"] {
        let err = parse_threshold(bad).unwrap_err();
        assert!(err.contains("not a threshold"), "{bad}: {err}");
    }
    let err = parse_threshold("10").unwrap_err();
    assert!(err.contains("did you mean 10%"), "{err}");
}

#[test]
fn names_resolve_into_the_directory_and_paths_stay_paths() {
    let dir = Path::new("/b");
    assert_eq!(resolve(dir, "main"), Path::new("/b/main.json"));
    assert_eq!(resolve(dir, "x/y.json"), Path::new("x/y.json"));
    assert_eq!(resolve(dir, "old.json"), Path::new("old.json"));
    assert!(check_name("main-2026.1_a").is_ok());
    assert!(check_name("ci/base.json").is_ok());
    for bad in ["", "a b", ".hidden", "x:y"] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn baseline_round_trips_and_malformed_files_name_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/main.json");
    let b = baseline(vec![metric("llama/decode/128", Group::Decode, 100.0, "tok/s", Better::Higher)]);
    b.save(&path).unwrap();
    assert_eq!(Baseline::load(&path).unwrap(), b);

    let p = Path::new("base.json");
    let err = Baseline::parse(
        "{\"metrics\": [\n{\"name\": \"a\", \"group\": \"decode\",\n \"unit\": \"tok/s\", \"better\": \"higher\"}\n]}",
        p,
    )
    .unwrap_err();
    match &err {
        BaselineError::Parse { line, field, message, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(field, "metrics[0]");
            assert!(message.contains("missing field `value`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("baseline base.json:3:"), "{err}");

    let err = Baseline::parse("{\"metrics\": [{\"name\": \"a\", \"group\": \"fast\"}]}", p).unwrap_err();
    assert!(err.to_string().contains("metrics[0].group"), "{err}");
    let err = Baseline::parse("{\"metrics\": [", p).unwrap_err();
    assert!(matches!(err, BaselineError::Parse { line: 1, .. }), "{err}");

    let zero = r#"{"metrics": [{"name": "a", "group": "decode", "value": 0, "unit": "tok/s", "better": "higher"}]}"#;
    let err = Baseline::parse(zero, p).unwrap_err();
    assert!(err.to_string().contains("metrics[0].value"), "{err}");
    let twice = r#"{"metrics": [{"name": "a", "group": "decode", "value": 1, "unit": "tok/s", "better": "higher"},
        {"name": "a", "group": "decode", "value": 2, "unit": "tok/s", "better": "higher"}]}"#;
    let err = Baseline::parse(twice, p).unwrap_err();
    assert!(err.to_string().contains("metrics[1].name") && err.to_string().contains("twice"), "{err}");
    let newer = r#"{"format": 9, "metrics": []}"#;
    assert!(Baseline::parse(newer, p).unwrap_err().to_string().contains("newer"));

    let err = Baseline::load(&dir.path().join("nope.json")).unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
}

struct Fixed {
    spec: MetricSpec,
    runs: std::cell::RefCell<Vec<Measured>>,
}

impl Workload for Fixed {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn run(&self) -> Result<Measured, BenchError> {
        Ok(self.runs.borrow_mut().remove(0))
    }
}

#[test]
fn measure_skips_warm_up_and_reports_the_median_in_the_metric_direction() {
    let runs = |v: &[(f64, f64)]| std::cell::RefCell::new(v.iter().map(|&(work, seconds)| Measured { work, seconds }).collect());
    // Warm-up (1 token in 10 s) is discarded; rates 100, 300, 200 -> median 200.
    let w = Fixed {
        spec: MetricSpec::new("x/decode", Group::Decode, "tok/s", Better::Higher),
        runs: runs(&[(1.0, 10.0), (100.0, 1.0), (300.0, 1.0), (200.0, 1.0)]),
    };
    let m = measure(&w, 1, 3).unwrap();
    assert_eq!((m.value, m.min, m.max, m.repeats), (200.0, Some(100.0), Some(300.0), 3));
    // A cost: 64 tokens in 0.64 s = 10 ms/token.
    let w = Fixed { spec: MetricSpec::new("x/c", Group::Constraint, "ms/token", Better::Lower), runs: runs(&[(64.0, 0.64)]) };
    assert!((measure(&w, 0, 1).unwrap().value - 10.0).abs() < 1e-9);
    let w = Fixed { spec: MetricSpec::new("x/c", Group::Constraint, "ms/token", Better::Lower), runs: runs(&[(0.0, 0.64)]) };
    assert!(matches!(measure(&w, 0, 1), Err(BenchError::Unmeasurable { .. })));
    assert!((crate::stats::median(&[1.0, 2.0, 4.0, 8.0]) - 3.0).abs() < 1e-12);
}

#[test]
fn groups_parse_case_insensitively_and_unknown_ones_are_named() {
    assert_eq!("Prefill".parse::<Group>(), Ok(Group::Prefill));
    let err = "speed".parse::<Group>().unwrap_err();
    assert!(err.contains("`speed`") && err.contains("tokenizer"), "{err}");
}

#[test]
fn scorer_cases_cover_exact_partial_and_format_failures() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad-mini");
    let task = crate::task::Task::load(&dir).unwrap();
    let cases = super::scorer_cases(&task);
    let examples: usize = task.splits.values().map(|s| s.examples.len()).sum();
    assert_eq!(cases.len(), examples * 4);
    let validator = task.validator().unwrap();
    let scores: Vec<_> = cases
        .iter()
        .map(|c| crate::score::score_example(&task.fields, &c.output, c.truncated, &c.expected, Some(&validator)))
        .collect();
    // The gold output scores 1; the cut one is a format failure.
    assert!(scores.iter().step_by(4).all(|s| (s.score - 1.0).abs() < 1e-9));
    assert!(scores.iter().skip(3).step_by(4).all(|s| !s.format_ok && s.truncated));
    assert!(scores.iter().skip(2).step_by(4).any(|s| s.score < 1.0));
}

#[test]
fn notes_name_the_plan_fields_that_differ() {
    use super::baseline::Facts;
    use super::Plan;
    let facts = |plan: Plan| Facts::current(None, Vec::new(), plan, 3);
    let old = Baseline { facts: Some(facts(Plan::default())), ..baseline(Vec::new()) };
    let new = facts(Plan { prefill_tokens: vec![128], ..Plan::default() });
    let c = Comparison::new(&old, &[], &Group::ALL, Some(&new), 0.1);
    assert!(c.notes.iter().any(|n| n == "workload sizes differ from the baseline's: prefill-tokens"), "{:?}", c.notes);
    let same = Comparison::new(&old, &[], &Group::ALL, Some(&facts(Plan::default())), 0.1);
    assert!(!same.notes.iter().any(|n| n.contains("workload")), "{:?}", same.notes);
}
