//! Unit tests of the report: reading, aggregation and rendering on a synthetic log.

use std::path::Path;

use engines::{StopReason, Timings, TokenCounts};
use serde_json::json;

use super::analysis::CandStatus;
use super::*;
use crate::calibrate::{EngineEntry, HeldBack, LinearFit, Point, TABLE_VERSION};
use crate::eval::ExampleRecord;
use crate::fingerprint::sha256_hex;
use crate::optimize::prompt::Demo;
use crate::optimize::records::{GateEntry, IdScore, ModelFingerprint, Spend, SplitRow};
use crate::optimize::Prompt;
use crate::score::{FailureClass, FieldVerdict};
use crate::task::Example;

const BASE: &str = "Extract the fields.\n";

/// A field verdict: `Some(class)` when wrong.
fn verdict(field: &str, class: Option<FailureClass>) -> FieldVerdict {
    FieldVerdict {
        field: field.into(),
        score: if class.is_none() { 1.0 } else { 0.0 },
        correct: class.is_none(),
        class,
        predicted: json!(null),
        expected: json!("x"),
        feedback: String::new(),
        evidence: None,
        confidence: None,
        scored: true,
    }
}

/// A record of example `id` with verdicts on `name` and `date`, `input` tokens, `ms` total.
fn rec(id: &str, name: Option<FailureClass>, date: Option<FailureClass>, input: usize, ms: f64, batch: u64) -> ExampleRecord {
    let fields = vec![verdict("name", name), verdict("date", date)];
    let score = fields.iter().map(|f| f.score).sum::<f64>() / 2.0;
    ExampleRecord {
        id: id.into(),
        line: 1,
        output: "{}".into(),
        stop: Some(StopReason::ConstraintComplete),
        error: None,
        error_detail: None,
        score,
        format_ok: name != Some(FailureClass::Format),
        format_error: None,
        truncated: false,
        fields,
        tokens: TokenCounts { input, output: 20, ..TokenCounts::default() },
        timings: Timings { tokenize_ms: 1.0, prefill_ms: ms * 0.6, ttft_ms: ms * 0.6, decode_ms: ms * 0.4, total_ms: ms },
        peak_rss_bytes: (200 << 20) + input as u64 * 1000,
        batch_size: 2,
        batch_id: batch,
        input_chunks: None,
        input_truncated: false,
        prefix_cache: None,
        engine: None,
    }
}

fn example(id: &str) -> Example {
    Example { id: id.into(), text: format!("The contract {id}."), expected: json!({"name": id}), line: 1 }
}

fn eval(prompt: &Prompt, split: &str, r: ExampleRecord) -> LogRecord {
    LogRecord::Eval(Box::new(EvalEntry {
        prompt_sha256: prompt.sha256(),
        instruction_sha256: sha256_hex(prompt.render_for(&r.id).as_bytes()),
        split: split.into(),
        engine_key: "k".into(),
        record: r,
        logged_at: Some("2026-01-01T00:20:00Z".into()),
    }))
}

fn candidate(it: usize, index: usize, p: &Prompt, proposer: &str, scores: &[(&str, f64)], rejected: Option<&str>) -> LogRecord {
    let mean = if scores.is_empty() { 0.0 } else { scores.iter().map(|s| s.1).sum::<f64>() / scores.len() as f64 };
    LogRecord::Candidate(CandidateEntry {
        iteration: it,
        index,
        proposer: proposer.into(),
        prompt_sha256: p.sha256(),
        prompt: p.text(),
        demo_ids: p.demo_ids(),
        request_sha256: None,
        parent_sha256: None,
        rejected: rejected.map(crate::optimize::Rejection::from_text),
        overlap: None,
        prompt_tokens: Some(10 + 40 * p.demos.len()),
        train_mean: mean,
        scores: scores.iter().map(|(id, s)| IdScore { id: (*id).into(), score: *s }).collect(),
    })
}

fn gate(current: f64, cand: f64) -> GateEntry {
    GateEntry { current_mean: current, candidate_mean: cand, bootstrap: None }
}

fn header(baseline_prompt: Option<&str>) -> Header {
    Header {
        format: crate::optimize::records::FORMAT_VERSION,
        promptloop_version: "test".into(),
        task: "synthetic".into(),
        task_dir: "/nonexistent/task".into(),
        task_sha256: "t".into(),
        model: ModelFingerprint { path: "/m.gguf".into(), sha256_first_mib: "ab".repeat(32), size: 100 << 20 },
        engine: engines::EngineConfig::new("/m.gguf"),
        constraint_schema_sha256: None,
        max_tokens: 64,
        engine_key: "k".into(),
        options: crate::config::RunConfig::for_tests(),
        started_at: Some("2026-01-01T00:00:00Z".into()),
        baseline_prompt: baseline_prompt.map(Into::into),
    }
}

/// Two iterations over train {a, b}, dev {d}, test {t}:
/// - baseline: a 0.0, b 0.5, d 0.5, t 0.0 (format);
/// - it 1: c1 = base + demo a (accepted: train 0.5, dev 1.0); c2 = base + demo b (not chosen).
///   c1's record of `a` is the baseline's (its instruction for `a` is the base), not logged again;
/// - it 2: c1' = a rewrite + demo a (train 0.75, dev 0.0: rejected on dev), and a leaking one.
fn synthetic(baseline_prompt: Option<&str>) -> (Vec<LogRecord>, Prompt, Prompt) {
    use FailureClass::{Format, Missed, Wrong};
    let (a, b) = (example("a"), example("b"));
    let base = Prompt::new(BASE, crate::task::Framing::default());
    let mut c1 = base.clone();
    c1.demos.push(Demo::from_example(&a));
    let mut c2 = base.clone();
    c2.demos.push(Demo::from_example(&b));
    let mut r1 = c1.clone();
    r1.base = "Extract carefully.".into();
    let mut leak = c1.clone();
    leak.base = "The contract a. The contract b.".into();
    let mut log = vec![
        LogRecord::Header(Box::new(header(baseline_prompt))),
        eval(&base, "train", rec("a", Some(Wrong), Some(Missed), 900, 3000.0, 1)),
        eval(&base, "train", rec("b", None, Some(Missed), 1500, 5000.0, 1)),
        eval(&base, "dev", rec("d", None, Some(Wrong), 600, 2000.0, 2)),
        // it 1
        eval(&c1, "train", rec("b", None, None, 1800, 6000.0, 3)),
        candidate(0, 0, &c1, "demos", &[("a", 0.0), ("b", 1.0)], None),
        eval(&c2, "train", rec("a", Some(Wrong), Some(Missed), 1200, 4000.0, 4)),
        candidate(0, 1, &c2, "demos", &[("a", 0.0), ("b", 0.5)], None),
        eval(&c1, "dev", rec("d", None, None, 800, 2500.0, 5)),
        LogRecord::Decision(DecisionEntry {
            iteration: 0,
            candidate: Some(0),
            prompt_sha256: Some(c1.sha256()),
            accepted: true,
            verdict: crate::optimize::Verdict::from_text(true, "accepted"),
            reason: "accepted".into(),
            train: Some(gate(0.25, 0.5)),
            dev: Some(gate(0.5, 1.0)),
        }),
        // it 2
        LogRecord::Proposal(Box::new(ProposalEntry {
            iteration: 1,
            index: 0,
            proposer: "rewrite".into(),
            request_sha256: "r".into(),
            answer: Some("Extract carefully.".into()),
            prompt: Some("Extract carefully.".into()),
            error: None,
            input_tokens: 1000,
            output_tokens: 50,
            cost_usd: Some(0.01),
            attempts: 1,
            latency_ms: 1500.0,
        })),
        eval(&r1, "train", rec("a", None, Some(Missed), 950, 3100.0, 6)),
        eval(&r1, "train", rec("b", None, None, 1550, 5100.0, 6)),
        candidate(1, 0, &r1, "rewrite", &[("a", 0.5), ("b", 1.0)], None),
        candidate(1, 1, &leak, "rewrite", &[], Some("rejected: leakage: 40% of its 8-grams copy train documents")),
        eval(&r1, "dev", rec("d", Some(Wrong), Some(Wrong), 650, 9000.0, 7)),
        LogRecord::Decision(DecisionEntry {
            iteration: 1,
            candidate: Some(0),
            prompt_sha256: Some(r1.sha256()),
            accepted: false,
            verdict: crate::optimize::Verdict::from_text(
                false,
                "rejected: overfit: wins on train but loses on dev (dev mean 0.0000 vs 1.0000)",
            ),
            reason: "rejected: overfit: wins on train but loses on dev (dev mean 0.0000 vs 1.0000)".into(),
            train: Some(gate(0.5, 0.75)),
            dev: Some(gate(1.0, 0.0)),
        }),
        eval(&base, "test", rec("t", Some(Format), Some(Format), 700, 2200.0, 8)),
        eval(&c1, "test", rec("t", None, Some(Wrong), 900, 2600.0, 9)),
    ];
    log.push(LogRecord::Final(FinalEntry {
        iterations: 2,
        accepted: 1,
        baseline_sha256: base.sha256(),
        best_sha256: c1.sha256(),
        best_demo_ids: vec!["a".into()],
        stopped_by: "max iterations".into(),
        min_detectable_gain: Some(0.5),
        prompt_tokens: Some((12, 60)),
        spend: Spend { calls: 1, failed_calls: 0, input_tokens: 1000, output_tokens: 50, cost_usd: Some(0.01) },
        rows: vec![
            SplitRow {
                split: "train".into(),
                examples: 2,
                baseline_mean: 0.25,
                baseline_exact: 0,
                best_mean: 0.5,
                best_exact: 1,
            },
            SplitRow { split: "dev".into(), examples: 1, baseline_mean: 0.5, baseline_exact: 0, best_mean: 1.0, best_exact: 1 },
            SplitRow { split: "test".into(), examples: 1, baseline_mean: 0.0, baseline_exact: 0, best_mean: 0.5, best_exact: 0 },
        ],
    }));
    (log, base, c1)
}

fn bytes(log: &[LogRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in log {
        out.extend(serde_json::to_vec(r).unwrap());
        out.push(b'\n');
    }
    out
}

fn load(log: &[LogRecord]) -> RunData {
    parse_run(Path::new("/runs/x"), Path::new("/runs/x/run.jsonl"), &bytes(log), None).unwrap()
}

#[test]
fn a_synthetic_run_is_aggregated() {
    let (log, base, c1) = synthetic(Some(BASE));
    let run = load(&log);
    assert_eq!(run.evals.len(), 11);
    let a = analyze(&run, None);
    assert!(a.finished && a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!(a.baseline_sha256, base.sha256());
    assert_eq!(a.best_sha256, c1.sha256());
    assert_eq!(a.best_text.as_deref(), Some(c1.text().as_str()));
    assert_eq!(a.baseline_text.as_deref(), Some(BASE));
    assert_eq!(a.best_demo_ids, ["a"]);

    // Baseline against best: c1's record of `a` is found through its instruction (the base).
    let splits: Vec<&str> = a.splits.iter().map(|s| s.split.as_str()).collect();
    assert_eq!(splits, ["train", "dev", "test"]);
    for (s, row) in a.splits.iter().zip(&run.final_entry.as_ref().unwrap().rows) {
        assert_eq!((s.examples, s.compared), (row.examples, row.examples), "{}", s.split);
        assert!((s.baseline_mean - row.baseline_mean).abs() < 1e-9, "{}", s.split);
        assert!((s.best_mean - row.best_mean).abs() < 1e-9, "{}", s.split);
        assert_eq!((s.baseline_exact, s.best_exact), (row.baseline_exact, row.best_exact), "{}", s.split);
    }
    let train = &a.splits[0];
    let name = &train.fields[0];
    assert_eq!((name.name.as_str(), name.baseline_accuracy, name.best_accuracy), ("name", 0.5, 0.5));
    let date = &train.fields[1];
    assert_eq!((date.baseline_accuracy, date.best_accuracy), (0.0, 0.5));
    assert_eq!(train.baseline_failures.classes.get(&FailureClass::Missed), Some(&2));
    assert_eq!(train.best_failures.classes.get(&FailureClass::Missed), Some(&1));
    assert_eq!(train.best_failures.classes.get(&FailureClass::Wrong), Some(&1));
    let test = &a.splits[2];
    assert_eq!(test.baseline_failures.classes.get(&FailureClass::Format), Some(&2));
    assert_eq!(test.best_failures.classes.get(&FailureClass::Format), None);
    assert_eq!(a.headline().unwrap().split, "test");

    // The trajectory: accepted, not chosen; then rejected on dev and rejected before eval.
    assert_eq!(a.iterations.len(), 2);
    let status: Vec<CandStatus> = a.candidates().map(|c| c.status.clone()).collect();
    assert_eq!(status[0], CandStatus::Accepted);
    assert_eq!(status[1], CandStatus::NotChosen);
    assert_eq!(status[2], CandStatus::RejectedDev);
    assert!(matches!(&status[3], CandStatus::Unscored(w) if w.contains("leakage")));
    let rejected = a.candidates().nth(2).unwrap();
    assert_eq!((rejected.train_mean, rejected.dev_mean), (0.75, Some(0.0)));
    assert_eq!((a.baseline_train, a.baseline_dev), (Some(0.25), Some(0.5)));
    assert_eq!((a.iterations[0].train_after, a.iterations[0].dev_after), (Some(0.5), Some(1.0)));
    assert_eq!((a.iterations[1].train_after, a.iterations[1].dev_after), (Some(0.5), Some(1.0)));
    assert_eq!(a.accepted, 1);

    // Speed: batch 1 holds two requests (3 s and 5 s): it counts 5 s.
    assert_eq!(a.speed.len(), 11);
    assert!(
        (a.engine_ms - (5000.0 + 2000.0 + 6000.0 + 4000.0 + 2500.0 + 5100.0 + 9000.0 + 2200.0 + 2600.0)).abs() < 1e-6,
        "{}",
        a.engine_ms
    );
    let slow = a.slowest(3);
    assert_eq!(
        slow.iter().map(|p| (p.id.as_str(), p.prompt.as_str())).collect::<Vec<_>>(),
        [("d", "it2.c1"), ("b", "it1.c1"), ("b", "it2.c1")]
    );
    assert_eq!(a.spend.calls, 1);
    assert_eq!(a.started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!((a.elapsed_s, a.end_from_file), (Some(1200.0), false), "start to the last eval");
}

#[test]
fn an_older_log_without_the_baseline_text_reports_what_it_cannot_compare() {
    // Without the base's exact text the prompt is rebuilt with its base trimmed: c1's record of
    // `a` cannot be found, and the report says so instead of guessing.
    let (log, ..) = synthetic(None);
    let a = analyze(&load(&log), None);
    assert_eq!((a.splits[0].examples, a.splits[0].compared), (2, 1));
    assert!(a.warnings.iter().any(|w| w.contains("train") && w.contains("1 of the 2")), "{:?}", a.warnings);
    assert!(a.baseline_text.is_none());
    let html = html::run_report(&load(&log), &a);
    assert!(html.contains("not in this run's log"));
}

#[test]
fn an_unfinished_run_is_reported_from_what_the_log_holds() {
    let (mut log, _, c1) = synthetic(Some(BASE));
    log.truncate(10); // up to the first decision
    let a = analyze(&load(&log), None);
    assert!(!a.finished);
    assert_eq!(a.best_sha256, c1.sha256(), "the last accepted candidate");
    assert_eq!(a.iterations.len(), 1);
    assert!(a.warnings.iter().any(|w| w.contains("no `final` record")));
    assert_eq!(a.spend.calls, 0);
    // Just a header: nothing to compare, every section still there.
    let run = load(&log[..1]);
    let a = analyze(&run, None);
    let html = html::run_report(&run, &a);
    for (id, _) in html::RUN_SECTIONS {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    assert!(!html.contains("plot failed"));
}

/// Counts `<tag` openings in `s`.
fn count(s: &str, tag: &str) -> usize {
    s.matches(&format!("<{tag}")).count()
}

/// Whether `svg` holds a `<text>` element that reads `text`.
fn has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>"))
}

/// The inline SVG of the figure `name`.
fn plot<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html.find(&format!("data-plot=\"{name}\"")).unwrap_or_else(|| panic!("no plot {name}"));
    let end = start + html[start..].find("</svg>").unwrap();
    &html[start..end]
}

#[test]
fn the_html_report_is_self_contained_with_every_section_and_plot() {
    let (log, ..) = synthetic(Some(BASE));
    let run = load(&log);
    let a = analyze(&run, Some((Path::new("/r.toml").to_path_buf(), routing_table())));
    let html = html::run_report(&run, &a);
    for (id, _) in html::RUN_SECTIONS {
        assert_eq!(html.matches(&format!("<section id=\"{id}\">")).count(), 1, "{id}");
        assert!(html.contains(&format!("href=\"#{id}\"")), "nav link to {id}");
    }
    assert!(html.contains("<section id=\"calls\">"), "an LLM proposal was logged");
    // Nothing fetched, nothing run: no scripts, links, images or remote URLs (the SVG namespace
    // is an identifier, not a fetch).
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    for bad in ["<script", "<link", "<img", "src=", "http://", "https://", "@import", "url("] {
        assert!(!without_ns.contains(bad), "{bad}");
    }
    assert!(!html.contains("plot failed"));
    // Plots with data: the score plot's markers, bars, scatter points, axis labels.
    let scores = plot(&html, "scores");
    assert!(count(scores, "circle") >= 3 + 2 + 4, "{}", count(scores, "circle"));
    assert!(count(scores, "polyline") >= 2);
    assert!(scores.contains("mean score") && scores.contains("iteration") && scores.contains("rejected on dev"));
    let fields = plot(&html, "fields");
    assert!(count(fields, "rect") >= 4 && has_text(fields, "name") && has_text(fields, "date"));
    let failures = plot(&html, "failures");
    assert!(count(failures, "rect") >= 3 * 12 && has_text(failures, "hallucinated"));
    let latency = plot(&html, "latency");
    assert!(count(latency, "circle") >= 2 * 12 && latency.contains("input tokens") && latency.contains("calibration"));
    let memory = plot(&html, "memory");
    assert!(count(memory, "circle") >= 12 && memory.contains("memory budget"));
    // The prompt diff shows the added demo.
    let diff = &html[html.find("<section id=\"prompt-diff\">").unwrap()..];
    assert!(diff.contains("class=\"ins\"") && diff.contains("Worked examples"));
    // Text from the log is escaped.
    assert!(html.contains("The contract a.") && !html.contains("<b>The"));
}

#[test]
fn the_markdown_summary_has_its_tables() {
    let (log, ..) = synthetic(Some(BASE));
    let run = load(&log);
    let md = markdown::run_report(&run, &analyze(&run, None));
    assert!(md.contains("| train | 2 | 0.250 | 0.500 | +0.250 | 0 | 1 |"), "{md}");
    assert!(md.contains("| name | 0.50 → 0.50 (+0.000) |"), "{md}");
    assert!(md.contains("| format | 0 → 0 | 0 → 0 | 2 → 0 |"), "{md}");
    assert!(md.contains("### Slowest examples") && md.contains("| d | dev | it2.c1 |"), "{md}");
    assert!(md.contains("```diff") && md.contains("+Worked examples"), "{md}");
    assert!(md.contains("1 calls (0 failed), 1000 tokens in / 50 out, $0.0100"), "{md}");
}

#[test]
fn bad_inputs_are_named() {
    let (log, ..) = synthetic(Some(BASE));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(source(&dir.path().join("nope")), Err(e @ ReportError::Missing(_)) if e.is_input()));
    assert!(matches!(source(dir.path()), Err(e @ ReportError::NotARun(_)) if e.is_input()));
    assert!(matches!(load_run(dir.path()), Err(ReportError::NotARun(_))));

    let mut text = String::from_utf8(bytes(&log)).unwrap();
    std::fs::write(dir.path().join("run.jsonl"), &text).unwrap();
    assert!(matches!(source(dir.path()), Ok(Source::Run(_))));
    assert!(matches!(source(&dir.path().join("run.jsonl")), Ok(Source::Run(d)) if d == dir.path()));
    assert!(load_run(dir.path()).unwrap().last_write.is_some());

    // A torn last line is a warning; a bad line elsewhere an error naming file and line.
    text.push_str("{\"type\": \"eval\", \"prompt");
    std::fs::write(dir.path().join("run.jsonl"), &text).unwrap();
    let run = load_run(dir.path()).unwrap();
    assert!(run.warnings[0].contains(&format!("run.jsonl:{}", log.len() + 1)), "{:?}", run.warnings);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "{\"type\": \"eval\", broken";
    std::fs::write(dir.path().join("run.jsonl"), lines.join("\n")).unwrap();
    let err = load_run(dir.path()).unwrap_err();
    assert!(err.is_input() && err.to_string().contains("run.jsonl:4"), "{err}");
    // The first record must be the header.
    std::fs::write(dir.path().join("run.jsonl"), text.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    let err = load_run(dir.path()).unwrap_err();
    assert!(err.is_input() && err.to_string().contains("header"), "{err}");
    std::fs::write(dir.path().join("run.jsonl"), "").unwrap();
    assert!(load_run(dir.path()).unwrap_err().to_string().contains("empty log"));
}

fn routing_table() -> RoutingTable {
    let point = |input: usize, fits: bool| Point {
        input_tokens: input,
        n_ctx: input + 80,
        fits,
        peak_rss_bytes: (150 << 20) + input as u64 * 25_000,
        prefill_ms: fits.then_some(input as f64 * 3.0),
        ttft_ms: fits.then_some(input as f64 * 3.0 + 5.0),
        decode_tok_s: fits.then_some(100.0),
        total_ms: fits.then_some(input as f64 * 3.0 + 640.0),
        note: (!fits).then(|| "over the budget".into()),
    };
    RoutingTable {
        version: TABLE_VERSION,
        created: "2026-01-01T00:00:00Z".into(),
        promptloop_version: "test".into(),
        machine: engines::memory::Machine { cpu: "Test CPU".into(), cores: 2, total_memory_bytes: 8 << 30 },
        model: ModelFingerprint { path: "/m.gguf".into(), sha256_first_mib: "ab".repeat(32), size: 100 << 20 },
        budget_bytes: 400 << 20,
        margin: 0.1,
        max_tokens: 64,
        engines: vec![EngineEntry {
            kind: engines::EngineKind::Llama,
            backend_version: "llama.cpp b1".into(),
            memory: LinearFit { intercept: 150.0 * 1024.0 * 1024.0, slope: 25_000.0, max_rel_error: 0.02 },
            prefill_ms_per_token: LinearFit { intercept: 2.8, slope: 0.0001, max_rel_error: 0.05 },
            decode_tok_s: 100.0,
            max_input_tokens: 9000,
            check: Some(HeldBack {
                input_tokens: 3000,
                predicted_peak_bytes: 2.3e8,
                measured_peak_bytes: 235_000_000,
                rel_error: 0.02,
            }),
            points: vec![point(128, true), point(512, true), point(2048, true), point(8192, true), point(12000, false)],
            servers: Vec::new(),
            server_api: engines::ServerApi::Native,
        }],
    }
}

#[test]
fn a_routing_table_renders_on_its_own() {
    let t = routing_table();
    let html = html::table_report(Path::new("/cache/routing/ab.toml"), &t);
    for (id, _) in html::TABLE_SECTIONS {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    assert!(!html.contains("plot failed") && !html.contains("<script"));
    let mem = plot(&html, "table-memory");
    assert!(count(mem, "polygon") >= 4, "probe triangles");
    assert!(count(mem, "line") >= 2, "the over-budget cross");
    assert!(mem.contains("memory budget 400 MiB") && mem.contains("peak RSS (MiB)"));
    let lat = plot(&html, "table-latency");
    assert!(count(lat, "circle") >= 4 && count(lat, "polyline") >= 1 && lat.contains("latency (s)"));
    assert!(html.contains("Test CPU") && html.contains("llama.cpp b1"));
    let md = markdown::table_report(Path::new("/cache/routing/ab.toml"), &t);
    assert!(md.contains("| llama | llama.cpp b1 | 150.0 |"), "{md}");
    assert!(md.contains("| llama | 12000 | no |"), "{md}");
}

#[test]
fn the_prompt_diff_marks_changed_words() {
    let old = "Extract the parties.\nReturn JSON.\n";
    let new = "Extract all the parties.\nReturn JSON.\nBe brief.\n";
    assert_eq!(diff::stats(old, new), diff::DiffStats { removed: 1, added: 2 });
    let h = diff::html(old, new, 3);
    assert!(h.contains("<mark>all </mark>") || h.contains("<mark>all</mark>"), "{h}");
    assert!(h.contains("class=\"eq\"") && h.contains("Be brief."));
    assert!(diff::html("same\n", "same\n", 3).contains("(identical)"));
    let u = diff::unified(old, new, 3);
    assert!(u.contains("-Extract the parties.") && u.contains("+Be brief."), "{u}");
    assert!(diff::html("<b>\n", "<i>\n", 1).contains("&lt;i&gt;"));
}

#[test]
fn the_committed_example_of_a_real_run_agrees_with_its_final_record() {
    // reports/examples/cuad-mini-demos: a real SmolLM2 run (`promptloop optimize --task
    // evals/cuad-mini --optimizer none --proposer demos`, small limits); every split's
    // baseline and best, rebuilt from the eval records, must equal what the run itself logged.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/examples/cuad-mini-demos");
    let run = load_run(&dir).unwrap();
    let fin = run.final_entry.clone().expect("a finished run");
    let a = analyze(&run, None);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!(a.splits.len(), fin.rows.len());
    for (s, row) in a.splits.iter().zip(&fin.rows) {
        assert_eq!((s.split.as_str(), s.compared), (row.split.as_str(), row.examples));
        assert!((s.baseline_mean - row.baseline_mean).abs() < 1e-9 && (s.best_mean - row.best_mean).abs() < 1e-9, "{}", s.split);
        assert_eq!((s.baseline_exact, s.best_exact), (row.baseline_exact, row.best_exact), "{}", s.split);
    }
    assert_eq!(a.iterations.len(), fin.iterations);
    assert_eq!(a.accepted, fin.accepted);
    assert!(a.baseline_text.is_some() && a.best_text.is_some());
    let table = RoutingTable::load(&dir.join("routing.toml")).unwrap();
    let html = html::run_report(&run, &analyze(&run, Some((dir.join("routing.toml"), table))));
    for (id, _) in html::RUN_SECTIONS {
        assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
}

#[test]
fn the_frontier_keeps_the_undominated_prompts_and_the_cost_plot_shows_every_scored_one() {
    // Train scores: baseline (0, 0.5), c1 (0, 1), c2 (0, 0.5): the baseline's, r1 (0.5, 1).
    // r1 dominates the rest, so it alone is on the frontier, leading both examples.
    let (log, ..) = synthetic(Some(BASE));
    let run = load(&log);
    let a = analyze(&run, None);
    let rows = super::frontier::rows(&run, &a);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].label.as_str(), rows[0].proposer.as_str()), ("it2.c1", "rewrite"));
    assert_eq!(rows[0].leads, vec!["a", "b"]);
    assert!((rows[0].train_mean - 0.75).abs() < 1e-12 && !rows[0].best);
    // Without r1 (the log cut before it) the baseline's twin c2 is left out and c1 leads b.
    let run = load(&log[..10]);
    let a = analyze(&run, None);
    let rows = super::frontier::rows(&run, &a);
    assert_eq!(
        rows.iter().map(|r| (r.label.as_str(), r.leads.clone())).collect::<Vec<_>>(),
        vec![("it1.c1", vec!["b".to_owned()])]
    );
    // Cost points: the baseline (12 tokens) and each scored candidate with its logged tokens.
    let (log, ..) = synthetic(Some(BASE));
    let a = analyze(&load(&log), None);
    let points = super::frontier::cost_points(&a, &super::frontier::rows(&load(&log), &a));
    assert_eq!(points.iter().filter(|p| p.baseline).count(), 1);
    assert_eq!(points.len(), 1 + 3, "baseline, c1, c2, r1; the leaking candidate has no score");
    assert!(points.iter().any(|p| p.label == "it2.c1" && p.on_frontier && p.prompt_tokens == 50));
    assert!(points.iter().any(|p| p.label == "it1.c1" && p.best));
    let svg = plots::prompt_cost(&points);
    assert!(count(&svg, "circle") >= 4 && has_text(&svg, "mean train score"), "{svg}");
}
