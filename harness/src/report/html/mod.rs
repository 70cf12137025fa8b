//! The HTML report: `reports/template.html` (inline CSS) filled with the sections, every plot
//! an inline SVG. Nothing is fetched when the file is opened; no script runs. Here: the page
//! frame and a run's report ([`run_report`]); a routing table's report is in `routing`.

mod routing;

use std::fmt::Write as _;

use super::analysis::{Analysis, CandStatus, Failures, SplitCompare};
use super::{diff, duration_text, escape, frontier, mib, plots, RunData};
use crate::score::confidence::{GUESS_BELOW, SURE_AT};
use crate::score::FailureClass;
use crate::summary::percentile;

pub use routing::{table_report, TABLE_SECTIONS};

/// The page template: `{{title}}`, `{{subtitle}}`, `{{nav}}`, `{{body}}`, `{{version}}`,
/// `{{generated}}`.
pub const TEMPLATE: &str = include_str!("../../../../reports/template.html");

/// Section ids of a run report, in order, with their titles. Every one is always present.
pub const RUN_SECTIONS: [(&str, &str); 8] = [
    ("summary", "Run summary"),
    ("scores", "Score over iterations"),
    ("frontier", "Pareto frontier and prompt cost"),
    ("fields", "Baseline vs best per field"),
    ("failures", "Failure classes"),
    ("prompt-diff", "Prompt diff"),
    ("speed", "Latency and memory"),
    ("slowest", "Slowest examples"),
];

fn page(title: &str, subtitle: &str, sections: &[(&str, &str)], body: &str) -> String {
    let nav = sections.iter().fold(String::new(), |mut nav, (id, t)| {
        let _ = write!(nav, "<a href=\"#{id}\">{}</a>", escape(t));
        nav
    });
    TEMPLATE
        .replace("{{title}}", &escape(title))
        .replace("{{subtitle}}", subtitle)
        .replace("{{nav}}", &nav)
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{generated}}", &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string())
        .replace("{{body}}", body)
}

fn section(out: &mut String, id: &str, title: &str, inner: &str) {
    let _ = write!(out, "<section id=\"{id}\">\n<h2>{}</h2>\n{inner}</section>\n", escape(title));
}

fn figure(name: &str, svg: &str, caption: &str) -> String {
    format!("<figure class=\"plot\" data-plot=\"{name}\">\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n")
}

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

/// A signed change, coloured by direction (`higher_is_better` decides which is good).
fn delta(d: f64, higher_is_better: bool, digits: usize) -> String {
    let class = if d.abs() < 1e-12 {
        ""
    } else if (d > 0.0) == higher_is_better {
        "up"
    } else {
        "down"
    };
    format!("<span class=\"{class}\">{d:+.digits$}</span>")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

fn kv(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
    }
    s.push_str("</table>\n");
    s
}

/// The run report.
pub fn run_report(run: &RunData, a: &Analysis) -> String {
    let header = &run.header;
    let opts = &header.options.search;
    let mut body = String::new();
    if !a.warnings.is_empty() {
        body.push_str("<ul class=\"warnings\">\n");
        for w in &a.warnings {
            let _ = writeln!(body, "<li>{}</li>", escape(w));
        }
        body.push_str("</ul>\n");
    }

    // Summary.
    let status = match (&a.stopped_by, a.finished) {
        (Some(s), _) => format!("finished: {} iterations, {} accepted; stopped by {}", a.iterations.len(), a.accepted, escape(s)),
        (None, _) => format!("not finished: {} iterations logged, {} accepted", a.iterations.len(), a.accepted),
    };
    let caps = [
        format!("{} iterations", opts.max_iterations),
        format!("{} candidates each", opts.candidates),
        opts.max_cost.map_or_else(|| "no cost cap".into(), |c| format!("max cost ${c:.2}")),
        opts.max_optimizer_tokens.map_or_else(|| "no token cap".into(), |t| format!("max {t} optimizer tokens")),
        opts.time_budget_s.map_or_else(|| "no time budget".into(), |t| format!("time budget {}", duration_text(t))),
    ]
    .join(", ");
    let limits = format!("train {}, dev {}, test {}", opt(opts.limit_train), opt(opts.limit_dev), opt(opts.limit_test));
    let spent = &a.spend;
    let cost =
        spent.cost_usd.map_or_else(|| if spent.calls > 0 { "price unknown".into() } else { "$0".into() }, |c| format!("${c:.4}"));
    let spend_text = format!(
        "{} optimizer calls ({} failed), {} input + {} output tokens, {cost}",
        spent.calls, spent.failed_calls, spent.input_tokens, spent.output_tokens
    );
    let cfg = &header.engine;
    let engine = format!(
        "{} (context {} per sequence, batch {}, {} threads), constraint {}, max {} output tokens, on overflow: {}",
        header.engine_kind(),
        cfg.n_ctx.map_or_else(|| "model default".into(), |c| c.to_string()),
        cfg.batch_size,
        cfg.threads.map_or_else(|| "all".into(), |t| t.to_string()),
        header.constraint(),
        header.max_tokens,
        header.options.engine.on_overflow
    );
    let wall = match (&a.started_at, a.elapsed_s) {
        (Some(start), Some(el)) => format!("{} (started {}, last eval {})", duration_text(el), escape(start), ended(a)),
        (Some(start), None) => format!("started {}", escape(start)),
        _ => format!("not recorded (log of an older version); run.jsonl last written {}", ended(a)),
    };
    let rows = vec![
        (
            "task",
            format!("{} <span class=\"muted\">({})</span>", escape(&header.task), escape(&header.task_dir.display().to_string())),
        ),
        (
            "model",
            format!(
                "{} <span class=\"muted\">({:.1} MiB, sha256 of first MiB {})</span>",
                escape(&header.model.path.display().to_string()),
                mib(header.model.size as f64),
                escape(&header.model.sha256_first_mib[..16.min(header.model.sha256_first_mib.len())])
            ),
        ),
        ("engine", escape(&engine)),
        ("optimizer", escape(&opts.optimizer.to_string())),
        (
            "proposer",
            format!(
                "{} ({} demos per candidate, {} worst failures shown)",
                escape(&opts.proposer.to_string()),
                opts.demos,
                opts.worst
            ),
        ),
        (
            "acceptance",
            format!(
                "{} at confidence {}, seed {}; dev may fall by at most {}{}",
                opts.accept,
                opts.confidence,
                opts.seed,
                opts.dev_margin,
                a.min_detectable_gain.map_or_else(String::new, |g| format!(
                    "; the smallest train gain it can detect here: {g:.3} (a candidate fixing {:.0}% of train)",
                    g * 100.0
                ))
            ),
        ),
        (
            "prompt tokens",
            a.prompt_tokens.map_or_else(
                || "-".into(),
                |(b, best)| format!("baseline {b}, best {best} (each example's prompt carries them)"),
            ),
        ),
        ("caps", escape(&caps)),
        ("example limits", escape(&limits)),
        ("spend", escape(&spend_text)),
        ("wall time", wall),
        (
            "engine time",
            format!(
                "{} over {} eval records (per batch, its slowest request)",
                duration_text(a.engine_ms / 1000.0),
                run.evals.len()
            ),
        ),
        ("status", status),
        (
            "best prompt",
            format!(
                "{} <span class=\"muted\">(sha256 {})</span>",
                escape(&a.best_origin),
                escape(&a.best_sha256[..12.min(a.best_sha256.len())])
            ),
        ),
    ];
    let mut inner = kv(&rows);
    inner.push_str(&splits_table(a));
    section(&mut body, "summary", RUN_SECTIONS[0].1, &inner);

    // Scores over iterations.
    let mut inner = String::new();
    if a.iterations.is_empty() {
        inner.push_str("<p class=\"note\">No iteration logged yet: the plot shows the baseline only.</p>\n");
    }
    inner.push_str(&figure(
        "scores",
        &plots::scores(a),
        "Mean score of the current prompt on train and dev after each iteration, and every candidate's train score. \
         A candidate that won on train but lost on dev (held out) is rejected as overfit: its dev score is the red cross.",
    ));
    inner.push_str(&candidates_table(a));
    section(&mut body, "scores", RUN_SECTIONS[1].1, &inner);

    // The frontier and prompt cost.
    let rows = frontier::rows(run, a);
    let mut inner = String::from(
        "<p>Prompts scored on all of train that are best on at least one train example (ties shared) and not dominated: \
         what a Pareto search (<code>--search pareto</code>) draws parents from, and what <code>merge</code> combines.</p>\n",
    );
    inner.push_str(&frontier::table(&rows));
    inner.push_str(&figure(
        "prompt-cost",
        &plots::prompt_cost(&frontier::cost_points(a, &rows)),
        "Mean train score against the tokens each prompt's instruction (demos included) adds to every example: \
         of two prompts within noise, the shorter one costs less on every pass.",
    ));
    section(&mut body, "frontier", RUN_SECTIONS[2].1, &inner);

    // Fields.
    let mut inner = fields_table(a);
    match a.headline() {
        Some(s) => inner.push_str(&figure(
            "fields",
            &plots::fields(s),
            &format!("Per-field accuracy on {}: baseline (grey) and best (blue).", escape(&s.split)),
        )),
        None => inner.push_str("<p class=\"note\">No records to compare yet.</p>\n"),
    }
    section(&mut body, "fields", RUN_SECTIONS[3].1, &inner);

    // Failures.
    let mut inner = failures_table(&a.splits);
    inner.push_str(&figure(
        "failures",
        &plots::failures(&a.splits),
        "Field verdicts by failure class (format, truncated, missed, hallucinated, wrong) and examples the engine could not run, before (baseline) and after (best).",
    ));
    section(&mut body, "failures", RUN_SECTIONS[4].1, &inner);

    // Prompt diff.
    let inner = match (&a.baseline_text, &a.best_text) {
        (Some(old), Some(new)) => {
            let st = diff::stats(old, new);
            let mut s = format!(
                "<p>Baseline ({} lines) to best ({} lines, {}): <span class=\"down\">-{}</span> / <span class=\"up\">+{}</span> lines.</p>\n",
                old.lines().count(),
                new.lines().count(),
                escape(&a.best_origin),
                st.removed,
                st.added
            );
            if !a.best_demo_ids.is_empty() {
                let _ = writeln!(s, "<p class=\"note\">Demos in the best prompt (train examples): {}</p>", escape(&a.best_demo_ids.join(", ")));
            }
            s.push_str(&diff::html(old, new, 3));
            s
        }
        _ => "<p class=\"note\">The prompt texts are not in this run's log (an older log: the baseline's text was not recorded, and the task's prompt file has changed since).</p>\n".to_owned(),
    };
    section(&mut body, "prompt-diff", RUN_SECTIONS[5].1, &inner);

    // Speed.
    section(&mut body, "speed", RUN_SECTIONS[6].1, &speed_section(run, a));

    // Slowest.
    section(&mut body, "slowest", RUN_SECTIONS[7].1, &slowest_table(a, 10));

    if !run.proposals.is_empty() {
        body.push_str(&calls_section(run));
    }
    let subtitle = format!(
        "{} &middot; {} &middot; {} &middot; {}",
        escape(&header.task),
        escape(&header.options.engine.model),
        escape(&opts.optimizer.to_string()),
        escape(&run.dir.display().to_string())
    );
    let mut sections = RUN_SECTIONS.to_vec();
    if !run.proposals.is_empty() {
        sections.push(("calls", "Optimizer calls"));
    }
    page(&format!("promptloop run report: {}", header.task), &subtitle, &sections, &body)
}

fn ended(a: &Analysis) -> String {
    let t = a.ended_at.map_or_else(|| "?".into(), |t| humantime::format_rfc3339_seconds(t).to_string());
    if a.end_from_file {
        format!("{t} <span class=\"muted\">(the log file's time: a copy or checkout resets it)</span>")
    } else {
        t
    }
}

fn splits_table(a: &Analysis) -> String {
    let mut s = String::from(
        "<h3>Baseline vs best</h3>\n<table>\n<tr><th>split</th><th class=\"num\">examples</th><th class=\"num\">baseline mean</th><th class=\"num\">best mean</th><th class=\"num\">change</th><th class=\"num\">baseline exact</th><th class=\"num\">best exact</th></tr>\n",
    );
    for c in &a.splits {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&c.split),
            c.compared,
            f3(c.baseline_mean),
            f3(c.best_mean),
            delta(c.best_mean - c.baseline_mean, true, 3),
            c.baseline_exact,
            c.best_exact
        );
    }
    s.push_str("</table>\n");
    s
}

fn candidates_table(a: &Analysis) -> String {
    let mut s = String::from(
        "<h3>Candidates</h3>\n<table>\n<tr><th class=\"num\">iteration</th><th class=\"num\">candidate</th><th>proposer</th><th>demos</th><th class=\"num\">prompt tokens</th><th class=\"num\">train mean</th><th class=\"num\">dev mean</th><th>outcome</th></tr>\n",
    );
    for c in a.candidates() {
        let (class, text) = match &c.status {
            CandStatus::Accepted => ("accepted", "accepted".to_owned()),
            CandStatus::RejectedDev => ("rejected-dev", c.status.label().to_owned()),
            CandStatus::Unscored(why) | CandStatus::Raced { why, .. } => ("", why.clone()),
            other => ("", other.label().to_owned()),
        };
        let _ = writeln!(
            s,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"badge {class}\">{}</span></td></tr>",
            c.iteration + 1,
            c.index + 1,
            escape(&c.proposer),
            escape(&c.demo_ids.join(", ")),
            c.prompt_tokens.map_or_else(|| "-".into(), |t| t.to_string()),
            match &c.status {
                CandStatus::Unscored(_) => "-".into(),
                CandStatus::Raced { evaluated, train, .. } => format!("{} <span class=\"muted\">({evaluated} of {train})</span>", f3(c.train_mean)),
                _ => f3(c.train_mean),
            },
            c.dev_mean.map_or_else(|| "-".into(), f3),
            escape(&text)
        );
    }
    s.push_str("</table>\n<h3>Decisions</h3>\n<table>\n<tr><th class=\"num\">iteration</th><th>decision</th><th class=\"num\">train: current &rarr; candidate</th><th class=\"num\">dev: current &rarr; candidate</th></tr>\n");
    for it in &a.iterations {
        let Some(d) = &it.decision else { continue };
        let gate = |g: Option<&crate::optimize::records::GateEntry>| {
            g.map_or_else(
                || "-".into(),
                |g| {
                    let ci = g
                        .bootstrap
                        .map(|b| format!(" <span class=\"muted\">[{:+.3}, {:+.3}]</span>", b.lower, b.upper))
                        .unwrap_or_default();
                    format!("{} &rarr; {}{ci}", f3(g.current_mean), f3(g.candidate_mean))
                },
            )
        };
        let _ = writeln!(
            s,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            d.iteration + 1,
            escape(&d.reason),
            gate(d.train.as_ref()),
            gate(d.dev.as_ref())
        );
    }
    s.push_str("</table>\n");
    s
}

fn fields_table(a: &Analysis) -> String {
    let shown: Vec<&SplitCompare> = a.splits.iter().filter(|s| s.compared > 0).collect();
    if shown.is_empty() {
        return String::new();
    }
    let mut s = String::from("<table>\n<tr><th rowspan=\"2\">field</th>");
    for c in &shown {
        let _ = write!(s, "<th colspan=\"3\" class=\"num\">{} accuracy ({} examples)</th>", escape(&c.split), c.compared);
    }
    s.push_str("</tr>\n<tr>");
    for _ in &shown {
        s.push_str("<th class=\"num\">baseline</th><th class=\"num\">best</th><th class=\"num\">change</th>");
    }
    s.push_str("</tr>\n");
    for (i, f) in shown[0].fields.iter().enumerate() {
        let _ = write!(s, "<tr><td>{}</td>", escape(&f.name));
        for c in &shown {
            let f = &c.fields[i];
            let _ = write!(
                s,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
                f3(f.baseline_accuracy),
                f3(f.best_accuracy),
                delta(f.best_accuracy - f.baseline_accuracy, true, 3)
            );
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

fn class_count(f: &Failures, c: FailureClass) -> usize {
    f.classes.get(&c).copied().unwrap_or(0)
}

fn failures_table(splits: &[SplitCompare]) -> String {
    let shown: Vec<&SplitCompare> = splits.iter().filter(|s| s.compared > 0).collect();
    if shown.is_empty() {
        return "<p class=\"note\">No records yet.</p>\n".into();
    }
    let mut s = String::from("<table>\n<tr><th>failure</th>");
    for c in &shown {
        let _ = write!(s, "<th class=\"num\">{}: baseline &rarr; best</th>", escape(&c.split));
    }
    s.push_str("</tr>\n");
    let mut row = |name: &str, get: &dyn Fn(&Failures) -> usize| {
        let _ = write!(s, "<tr><td>{}</td>", escape(name));
        for c in &shown {
            let (b, n) = (get(&c.baseline_failures), get(&c.best_failures));
            let _ = write!(s, "<td class=\"num\">{b} &rarr; {n} ({})</td>", delta(n as f64 - b as f64, false, 0));
        }
        s.push_str("</tr>\n");
    };
    for c in FailureClass::ALL {
        row(&format!("{c} (field verdicts)"), &|f| class_count(f, c));
    }
    row("engine errors (examples)", &|f| f.errors.values().sum());
    row("outputs at the token cap (examples)", &|f| f.truncated);
    if shown.iter().any(|c| c.baseline_failures.with_confidence + c.best_failures.with_confidence > 0) {
        row(&format!("wrong and sure: every chosen token p \u{2265} {SURE_AT} (field verdicts)"), &|f| f.wrong_and_sure);
        row(&format!("right by luck: a chosen token p < {GUESS_BELOW} (field verdicts)"), &|f| f.right_by_luck);
    }
    s.push_str("</table>\n");
    s
}

fn speed_section(run: &RunData, a: &Analysis) -> String {
    let engine = run.header.engine_kind().to_string();
    let ran: Vec<plots::Run> = a
        .speed
        .iter()
        .filter(|p| !p.error)
        .map(|p| plots::Run {
            input_tokens: p.input_tokens,
            total_ms: p.total_ms,
            prefill_ms: p.prefill_ms,
            peak_rss_bytes: p.peak_rss_bytes,
        })
        .collect();
    let mut lat: Vec<f64> = ran.iter().map(|r| r.total_ms).collect();
    lat.sort_by(f64::total_cmp);
    let peak = ran.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0);
    let errors = a.speed.iter().filter(|p| p.error).count();
    let mut s = format!(
        "<p>Engine <b>{}</b>: {} requests, latency p50 {:.2} s, p95 {:.2} s; peak RSS {:.0} MiB; {} examples the engine could not run.</p>\n",
        escape(&engine),
        ran.len(),
        percentile(&lat, 0.5) / 1000.0,
        percentile(&lat, 0.95) / 1000.0,
        mib(peak as f64),
        errors
    );
    let table = a.routing.as_ref().map(|(_, t)| t);
    match &a.routing {
        Some((path, t)) => {
            let _ = writeln!(
                s,
                "<p class=\"note\">With the routing table {} (calibrated {}, {} on {}; budget {:.0} MiB): its probes and fits per engine.</p>",
                escape(&path.display().to_string()),
                escape(&t.created),
                escape(&t.model.path.display().to_string()),
                escape(&t.machine.cpu),
                mib(t.budget_bytes as f64)
            );
        }
        None => s.push_str("<p class=\"note\">No routing table for this model (run <code>promptloop calibrate</code>, or pass <code>--routing FILE</code>): the plots show this run only.</p>\n"),
    }
    s.push_str(&figure(
        "latency",
        &plots::latency(&engine, &ran, table),
        "Latency of each request against its input length; batched requests share the batch's prefill.",
    ));
    s.push_str(&figure(
        "memory",
        &plots::memory(&engine, &ran, table),
        "Peak resident memory of the process while each request's batch ran, against input length.",
    ));
    s
}

fn slowest_table(a: &Analysis, n: usize) -> String {
    let rows = a.slowest(n);
    if rows.is_empty() {
        return "<p class=\"note\">No request has run yet.</p>\n".into();
    }
    let mut s = String::from(
        "<table>\n<tr><th>example</th><th>split</th><th>prompt</th><th class=\"num\">input tokens</th><th class=\"num\">output tokens</th><th class=\"num\">prefill (s)</th><th class=\"num\">decode (s)</th><th class=\"num\">total (s)</th><th class=\"num\">batch</th><th class=\"num\">peak RSS (MiB)</th><th>stop</th></tr>\n",
    );
    for p in rows {
        let _ = writeln!(
            s,
            "<tr><td class=\"id\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td class=\"num\">{:.0}</td><td>{}</td></tr>",
            escape(&p.id),
            escape(&p.split),
            escape(&p.prompt),
            p.input_tokens,
            p.output_tokens,
            p.prefill_ms / 1000.0,
            p.decode_ms / 1000.0,
            p.total_ms / 1000.0,
            p.batch_size,
            mib(p.peak_rss_bytes as f64),
            escape(&p.outcome)
        );
    }
    s.push_str("</table>\n");
    s
}

fn calls_section(run: &RunData) -> String {
    let mut s = String::from(
        "<section id=\"calls\">\n<h2>Optimizer calls</h2>\n<table>\n<tr><th class=\"num\">iteration</th><th class=\"num\">call</th><th>proposer</th><th class=\"num\">input tokens</th><th class=\"num\">output tokens</th><th class=\"num\">cost</th><th class=\"num\">attempts</th><th class=\"num\">latency (s)</th><th>result</th></tr>\n",
    );
    for p in &run.proposals {
        let _ = writeln!(
            s,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td>{}</td></tr>",
            p.iteration + 1,
            p.index + 1,
            escape(&p.proposer),
            p.input_tokens,
            p.output_tokens,
            p.cost_usd.map_or_else(|| "-".into(), |c| format!("${c:.4}")),
            p.attempts,
            p.latency_ms / 1000.0,
            escape(p.error.as_deref().unwrap_or("a prompt"))
        );
    }
    s.push_str("</table>\n</section>\n");
    s
}
