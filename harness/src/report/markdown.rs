//! The Markdown summary (`--format md`), for pasting into a pull request: the run in one table,
//! baseline against best per split and per field, failure classes, the slowest examples, and
//! the prompt diff.

use std::fmt::Write as _;

use super::analysis::{Analysis, SplitCompare};
use super::{diff, duration_text, mib, RunData};
use crate::calibrate::RoutingTable;
use crate::score::confidence::{GUESS_BELOW, SURE_AT};
use crate::score::FailureClass;

/// A table cell: pipes and newlines escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn signed(d: f64) -> String {
    format!("{d:+.3}")
}

/// The run summary in Markdown.
pub fn run_report(run: &RunData, a: &Analysis) -> String {
    let header = &run.header;
    let opts = &header.options.search;
    let mut s = String::new();
    let _ = writeln!(s, "## promptloop run: {}\n", cell(&header.task));
    for w in &a.warnings {
        let _ = writeln!(s, "> **note:** {}\n", w.replace('\n', " "));
    }
    let sp = &a.spend;
    let cost =
        sp.cost_usd.map_or_else(|| if sp.calls > 0 { "price unknown".into() } else { "$0".into() }, |c| format!("${c:.4}"));
    let status = match &a.stopped_by {
        Some(by) => format!("finished, stopped by {by}"),
        None => "not finished".into(),
    };
    let wall = a.elapsed_s.map_or_else(|| "not recorded".into(), duration_text);
    let rows = [
        ("model", format!("`{}` ({:.1} MiB)", header.model.path.display(), mib(header.model.size as f64))),
        (
            "engine",
            format!(
                "{} (batch {}, constraint {}, max {} output tokens)",
                header.engine_kind(),
                header.engine.batch_size,
                header.constraint(),
                header.max_tokens
            ),
        ),
        ("optimizer / proposer", format!("{} / {}", opts.optimizer, opts.proposer)),
        ("iterations", format!("{} run, {} accepted ({status})", a.iterations.len(), a.accepted)),
        (
            "caps",
            format!(
                "{} iterations x {} candidates; cost {}; tokens {}; time {}",
                opts.max_iterations,
                opts.candidates,
                opts.max_cost.map_or_else(|| "-".into(), |c| format!("${c:.2}")),
                opts.max_optimizer_tokens.map_or_else(|| "-".into(), |t| t.to_string()),
                opts.time_budget_s.map_or_else(|| "-".into(), duration_text)
            ),
        ),
        (
            "spend",
            format!(
                "{} calls ({} failed), {} tokens in / {} out, {cost}",
                sp.calls, sp.failed_calls, sp.input_tokens, sp.output_tokens
            ),
        ),
        ("wall time", format!("{wall} (engine busy {})", duration_text(a.engine_ms / 1000.0))),
        ("best prompt", a.best_origin.clone()),
    ];
    s.push_str("| | |\n| --- | --- |\n");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {} |", cell(&v));
    }

    s.push_str("\n### Baseline vs best\n\n| split | examples | baseline mean | best mean | change | baseline exact | best exact |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for c in &a.splits {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {:.3} | {} | {} | {} |",
            c.split,
            c.compared,
            c.baseline_mean,
            c.best_mean,
            signed(c.best_mean - c.baseline_mean),
            c.baseline_exact,
            c.best_exact
        );
    }

    let shown: Vec<&SplitCompare> = a.splits.iter().filter(|c| c.compared > 0).collect();
    if let Some(first) = shown.first() {
        s.push_str("\n### Per-field accuracy (baseline → best)\n\n| field |");
        for c in &shown {
            let _ = write!(s, " {} |", c.split);
        }
        s.push_str("\n| --- |");
        for _ in &shown {
            s.push_str(" ---: |");
        }
        s.push('\n');
        for (i, f) in first.fields.iter().enumerate() {
            let _ = write!(s, "| {} |", cell(&f.name));
            for c in &shown {
                let f = &c.fields[i];
                let _ = write!(
                    s,
                    " {:.2} → {:.2} ({}) |",
                    f.baseline_accuracy,
                    f.best_accuracy,
                    signed(f.best_accuracy - f.baseline_accuracy)
                );
            }
            s.push('\n');
        }

        s.push_str("\n### Failure classes (baseline → best)\n\n| failure |");
        for c in &shown {
            let _ = write!(s, " {} |", c.split);
        }
        s.push_str("\n| --- |");
        for _ in &shown {
            s.push_str(" ---: |");
        }
        s.push('\n');
        let mut row = |name: &str, get: &dyn Fn(&super::analysis::Failures) -> usize| {
            let _ = write!(s, "| {name} |");
            for c in &shown {
                let _ = write!(s, " {} → {} |", get(&c.baseline_failures), get(&c.best_failures));
            }
            s.push('\n');
        };
        for class in FailureClass::ALL {
            row(class.as_str(), &|f| f.classes.get(&class).copied().unwrap_or(0));
        }
        row("engine errors", &|f| f.errors.values().sum());
        row("at the token cap", &|f| f.truncated);
        if shown.iter().any(|c| c.baseline_failures.with_confidence + c.best_failures.with_confidence > 0) {
            row(&format!("wrong and sure (every chosen token p ≥ {SURE_AT})"), &|f| f.wrong_and_sure);
            row(&format!("right by luck (a chosen token p < {GUESS_BELOW})"), &|f| f.right_by_luck);
        }
    }

    let slow = a.slowest(5);
    if !slow.is_empty() {
        s.push_str("\n### Slowest examples\n\n| example | split | prompt | input tokens | output tokens | total (s) | peak RSS (MiB) |\n| --- | --- | --- | ---: | ---: | ---: | ---: |\n");
        for p in slow {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {:.0} |",
                cell(&p.id),
                p.split,
                p.prompt,
                p.input_tokens,
                p.output_tokens,
                p.total_ms / 1000.0,
                mib(p.peak_rss_bytes as f64)
            );
        }
    }

    if let (Some(old), Some(new)) = (&a.baseline_text, &a.best_text) {
        s.push_str("\n<details><summary>Prompt diff, baseline → best</summary>\n\n```diff\n");
        let d = diff::unified(old, new, 3);
        s.push_str(if d.trim().is_empty() { "(identical)\n" } else { &d });
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("```\n\n</details>\n");
    }
    s
}

/// A routing table in Markdown.
pub fn table_report(path: &std::path::Path, t: &RoutingTable) -> String {
    let mut s = format!(
        "## promptloop routing table\n\n`{}`: calibrated {} on {} ({} cores, {:.0} MiB) for `{}`; budget {:.0} MiB, margin {:.0}%, {} output tokens.\n\n",
        path.display(),
        t.created,
        t.machine.cpu,
        t.machine.cores,
        mib(t.machine.total_memory_bytes as f64),
        t.model.path.display(),
        mib(t.budget_bytes as f64),
        t.margin * 100.0,
        t.max_tokens
    );
    s.push_str("| engine | backend | memory fixed (MiB) | per context token (KiB) | prefill ms/token at 1k | decode tok/s | largest input that fits | held-back error |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for e in &t.engines {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {} | {} |",
            e.kind,
            cell(&e.backend_version),
            mib(e.memory.intercept),
            e.memory.slope / 1024.0,
            e.prefill_ms_per_token.predict(1000.0),
            e.decode_tok_s,
            e.max_input_tokens,
            e.check.map_or_else(|| "-".into(), |c| format!("{:.1}%", c.rel_error * 100.0))
        );
    }
    s.push_str("\n| engine | input tokens | fits | peak RSS (MiB) | prefill (ms) | total (ms) |\n| --- | ---: | --- | ---: | ---: | ---: |\n");
    for e in &t.engines {
        for p in &e.points {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {} | {} |",
                e.kind,
                p.input_tokens,
                if p.fits { "yes" } else { "no" },
                mib(p.peak_rss_bytes as f64),
                p.prefill_ms.map_or_else(|| "-".into(), |v| format!("{v:.0}")),
                p.total_ms.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
            );
        }
    }
    s
}
