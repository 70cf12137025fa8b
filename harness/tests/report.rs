//! `promptloop report` end to end: a real (small) optimize run on SmolLM2-135M, its HTML report
//! rendered by headless Chromium (screenshot and DOM), checked for every section, plots with
//! data points, and no console error; the Markdown summary; a routing table on its own; and
//! the errors that exit 2. Chromium comes from `scripts/setup.sh test` (Debian's `chromium`); a
//! missing browser fails the test with the command that installs it, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::calibrate::{EngineEntry, HeldBack, LinearFit, Point, RoutingTable, TABLE_VERSION};
use harness::fingerprint::model_fingerprint;
use serde_json::Value;

use crate::support::{cuad_mini, promptloop, records, require_model, stderr, stdout};

/// The browser, or a failure naming the set-up command.
fn require_chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.is_file() {
        return path;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("chromium is not installed: run `scripts/setup.sh test` (or `sudo apt-get install -y chromium`)")
    })
}

/// Headless Chromium on `page` with `extra` flags; its own profile in `profile`; every request
/// that would leave the machine fails (and would show as a console error).
fn chromium(browser: &Path, profile: &Path, extra: &[String], page: &Path) -> Output {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    out
}

/// Console messages and uncaught errors in Chromium's log.
fn console_errors(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).collect()
}

/// The SVG of `<figure data-plot="name">` in a DOM dump.
fn plot<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom.find(&format!("data-plot=\"{name}\"")).unwrap_or_else(|| panic!("no plot `{name}` in the DOM"));
    let end = start + dom[start..].find("</svg>").unwrap_or_else(|| panic!("plot `{name}` has no SVG"));
    let svg = &dom[start..end];
    assert!(svg.contains("<svg"), "plot `{name}` has no SVG");
    svg
}

fn count(svg: &str, tag: &str) -> usize {
    svg.matches(&format!("<{tag} ")).count() + svg.matches(&format!("<{tag}>")).count()
}

/// Whether `svg` holds a `<text>` element reading `text`.
fn has_text(svg: &str, text: &str) -> bool {
    let t = text.replace('&', "&amp;");
    svg.split("<text")
        .skip(1)
        .any(|el| el.split_once('>').is_some_and(|(_, rest)| rest.split("</text>").next().unwrap_or("").trim() == t))
}

/// A small routing table of the run's model, so the report shows the table's probes next to
/// the run's own speed (a real calibration is `tests/calibrate.rs`'s business).
fn routing_table(model: &Path) -> RoutingTable {
    let point = |input: usize| Point {
        input_tokens: input,
        n_ctx: input + 80,
        fits: true,
        peak_rss_bytes: (140 << 20) + input as u64 * 24_000,
        prefill_ms: Some(input as f64 * 3.0),
        ttft_ms: Some(input as f64 * 3.0 + 10.0),
        decode_tok_s: Some(110.0),
        total_ms: Some(input as f64 * 3.0 + 600.0),
        note: None,
    };
    RoutingTable {
        version: TABLE_VERSION,
        created: "2026-01-01T00:00:00Z".into(),
        promptloop_version: "test".into(),
        machine: engines::memory::Machine::current(),
        model: model_fingerprint(model).expect("model fingerprint"),
        budget_bytes: 1 << 30,
        margin: 0.1,
        max_tokens: 64,
        engines: vec![EngineEntry {
            kind: engines::EngineKind::Llama,
            backend_version: "test".into(),
            memory: LinearFit { intercept: 140.0 * 1024.0 * 1024.0, slope: 24_000.0, max_rel_error: 0.03 },
            prefill_ms_per_token: LinearFit { intercept: 2.9, slope: 0.0002, max_rel_error: 0.05 },
            decode_tok_s: 110.0,
            max_input_tokens: 30_000,
            check: Some(HeldBack {
                input_tokens: 448,
                predicted_peak_bytes: 1.6e8,
                measured_peak_bytes: 158_000_000,
                rel_error: 0.013,
            }),
            points: [128, 256, 512, 1024, 2048].map(point).to_vec(),
            servers: Vec::new(),
            server_api: engines::ServerApi::Native,
        }],
    }
}

#[test]
fn a_real_runs_report_renders_in_headless_chromium_with_every_section() {
    require_model();
    let browser = require_chromium();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let task = cuad_mini();
    let out = promptloop(&[
        "optimize",
        "--task",
        task.to_str().unwrap(),
        "--optimizer",
        "none",
        "--proposer",
        "demos",
        "--out",
        run.to_str().unwrap(),
        "--json",
        "--limit-train",
        "3",
        "--limit-dev",
        "2",
        "--limit-test",
        "1",
        "--max-iterations",
        "2",
        "--candidates",
        "2",
        "--demos",
        "1",
        "--accept",
        "mean",
        "--max-tokens",
        "96",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = records(&run.join("run.jsonl"));
    let evals: Vec<&Value> = log.iter().filter(|r| r["type"] == "eval").collect();
    let ran = evals.iter().filter(|e| e["record"]["error"].is_null()).count();
    let candidates = log.iter().filter(|r| r["type"] == "candidate").count();
    let iterations = log.iter().filter(|r| r["type"] == "decision").count();
    assert!(ran >= 6 && candidates >= 2, "{ran} evals, {candidates} candidates");
    assert!(log[0]["started_at"].is_string() && log[0]["baseline_prompt"].is_string(), "{}", log[0]);

    let model = harness::models::resolve("smollm2-135m").unwrap();
    let table_path = tmp.path().join("routing.toml");
    routing_table(&model).save(&table_path).unwrap();
    let out = promptloop(&["report", run.to_str().unwrap(), "--routing", table_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = run.join("report.html");
    assert_eq!(stdout(&out).trim(), page.to_str().unwrap());
    let html = std::fs::read_to_string(&page).unwrap();
    for bad in ["<script", "<link", "<img", "https://", "@import"] {
        assert!(!html.contains(bad), "the report must be self-contained: found {bad}");
    }

    // The browser: a page with a console error and an uncaught exception first, to show that
    // the log does report them; then the report, which must have none.
    let profile = tmp.path().join("profile");
    let canary = tmp.path().join("canary.html");
    std::fs::write(&canary, "<html><body><script>console.error('canary'); throw new Error('boom');</script></body></html>")
        .unwrap();
    let out = chromium(&browser, &profile, &["--dump-dom".into()], &canary);
    let log_text = stderr(&out);
    assert_eq!(console_errors(&log_text).len(), 2, "the console check does not see console errors: {log_text}");

    // The screenshot: a PNG of the window's size, with content (a blank page compresses to a
    // few KiB). Kept in the target dir for a look.
    let png = tmp.path().join("report.png");
    let shot =
        chromium(&browser, &profile, &[format!("--screenshot={}", png.display()), "--window-size=1280,4000".into()], &page);
    assert!(console_errors(&stderr(&shot)).is_empty(), "{}", stderr(&shot));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!((w, h), (1280, 4000));
    assert!(bytes.len() > 100 << 10, "screenshot of {} bytes: an empty page?", bytes.len());
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::copy(&png, &keep);
    eprintln!("screenshot: {}", keep.display());

    let dump = chromium(&browser, &profile, &["--dump-dom".into()], &page);
    let log_text = stderr(&dump);
    assert!(console_errors(&log_text).is_empty(), "console errors: {:?}", console_errors(&log_text));
    let dom = stdout(&dump);
    for id in ["summary", "scores", "frontier", "fields", "failures", "prompt-diff", "speed", "slowest"] {
        assert!(dom.contains(&format!("<section id=\"{id}\">")), "section `{id}` missing from the DOM");
    }
    // Plots with their data: one marker per point, labelled axes.
    let scores = plot(&dom, "scores");
    assert!(count(scores, "circle") >= 2 * (iterations + 1) + candidates, "score markers: {}", count(scores, "circle"));
    assert!(count(scores, "polyline") >= 2, "train and dev lines");
    assert!(has_text(scores, "mean score") && has_text(scores, "iteration (0 = baseline)") && has_text(scores, "baseline"));
    // Quality against prompt cost: the baseline and each scored candidate, tokens on x.
    let cost = plot(&dom, "prompt-cost");
    assert!(count(cost, "circle") >= 2, "prompt-cost markers: {}", count(cost, "circle"));
    assert!(
        has_text(cost, "mean train score") && has_text(cost, "prompt tokens (instruction and demos, added to every example)")
    );
    let frontier = &dom[dom.find("<section id=\"frontier\">").unwrap()..];
    let frontier = &frontier[..frontier.find("</section>").unwrap()];
    assert!(frontier.contains("train examples it is best on") || frontier.contains("the frontier is empty"), "{frontier}");
    let fields = plot(&dom, "fields");
    assert!(count(fields, "rect") >= 2 * 4, "field bars: {}", count(fields, "rect"));
    for f in ["document_name", "parties", "agreement_date", "governing_law"] {
        assert!(has_text(fields, f), "field label {f}");
    }
    let failures = plot(&dom, "failures");
    assert!(count(failures, "rect") >= 3 * 12, "failure bars: {}", count(failures, "rect"));
    assert!(has_text(failures, "wrong") && has_text(failures, "field verdicts"));
    let latency = plot(&dom, "latency");
    assert!(count(latency, "circle") >= 2 * ran, "latency points: {} for {ran} requests", count(latency, "circle"));
    assert!(count(latency, "polygon") >= 5, "calibration probes");
    assert!(has_text(latency, "latency (s)") && has_text(latency, "input tokens (prompt after the chat template)"));
    let memory = plot(&dom, "memory");
    assert!(count(memory, "circle") >= ran && has_text(memory, "peak RSS (MiB)"));
    let slowest = &dom[dom.find("<section id=\"slowest\">").unwrap()..];
    let slowest = &slowest[..slowest.find("</section>").unwrap()];
    assert_eq!(slowest.matches("<tr><td").count(), ran.min(10), "slowest examples");

    // The Markdown summary.
    let out = promptloop(&["report", run.to_str().unwrap(), "--format", "md", "--out", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(md.starts_with("## promptloop run: cuad-mini"), "{md}");
    for heading in ["### Baseline vs best", "### Per-field accuracy", "### Failure classes", "### Slowest examples"] {
        assert!(md.contains(heading), "{heading}\n{md}");
    }
    assert!(md.contains("| train | 3 |") && md.contains("| dev | 2 |") && md.contains("| test | 1 |"), "{md}");

    // The routing table on its own, rendered by the browser too.
    let out = promptloop(&["report", table_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table_page = tmp.path().join("routing.html");
    assert!(table_page.is_file());
    let dump = chromium(&browser, &profile, &["--dump-dom".into()], &table_page);
    assert!(console_errors(&stderr(&dump)).is_empty(), "{}", stderr(&dump));
    let dom = stdout(&dump);
    for id in ["table-summary", "engines", "table-plots", "points"] {
        assert!(dom.contains(&format!("<section id=\"{id}\">")), "section `{id}`");
    }
    assert!(count(plot(&dom, "table-memory"), "polygon") >= 5 && count(plot(&dom, "table-latency"), "circle") >= 5);
}

#[test]
fn report_input_errors_exit_2_and_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    let missing = tmp.path().join("nope");
    let out = promptloop(&["report", &p(&missing)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope") && stderr(&out).contains("no such file"), "{}", stderr(&out));

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = promptloop(&["report", &p(&empty)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no run.jsonl"), "{}", stderr(&out));

    std::fs::write(empty.join("run.jsonl"), "{\"type\": \"header\", broken\n{}\n").unwrap();
    let out = promptloop(&["report", &p(&empty)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("run.jsonl:1"), "{}", stderr(&out));

    // A good run (the committed example) with a --routing table that is not there.
    let ok = tmp.path().join("ok");
    std::fs::create_dir(&ok).unwrap();
    std::fs::copy(crate::support::repo().join("reports/examples/cuad-mini-demos/run.jsonl"), ok.join("run.jsonl")).unwrap();
    let out = promptloop(&["report", &p(&ok), "--routing", &p(&missing)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = promptloop(&["report", &p(&ok)]);
    assert!(out.status.success() && ok.join("report.html").is_file(), "{}", stderr(&out));

    let toml = tmp.path().join("routing.toml");
    std::fs::write(&toml, "version = 1\nbudget_bytes = \"lots\"\n").unwrap();
    let out = promptloop(&["report", &p(&toml)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("routing.toml"), "{}", stderr(&out));
}
