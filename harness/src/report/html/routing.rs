//! The HTML report of a routing table on its own: the calibration, each engine's fits, the
//! probes' plots and the probes. The page's frame and helpers are the run report's.

use std::fmt::Write as _;

use super::super::{escape, mib, plots};
use super::{figure, kv, page, section};
use crate::calibrate::RoutingTable;

/// Section ids of a routing-table report.
pub const TABLE_SECTIONS: [(&str, &str); 4] =
    [("table-summary", "Calibration"), ("engines", "Engines"), ("table-plots", "Memory and latency"), ("points", "Probes")];

/// The report of a routing table on its own.
pub fn table_report(path: &std::path::Path, t: &RoutingTable) -> String {
    let mut body = String::new();
    let rows = vec![
        ("table", escape(&path.display().to_string())),
        ("created", format!("{} by promptloop {} (format {})", escape(&t.created), escape(&t.promptloop_version), t.version)),
        (
            "machine",
            format!("{}, {} cores, {:.0} MiB", escape(&t.machine.cpu), t.machine.cores, mib(t.machine.total_memory_bytes as f64)),
        ),
        (
            "model",
            format!(
                "{} <span class=\"muted\">({:.1} MiB)</span>",
                escape(&t.model.path.display().to_string()),
                mib(t.model.size as f64)
            ),
        ),
        ("memory budget", format!("{:.0} MiB, margin {:.0}%", mib(t.budget_bytes as f64), t.margin * 100.0)),
        ("output tokens", t.max_tokens.to_string()),
    ];
    section(&mut body, "table-summary", TABLE_SECTIONS[0].1, &kv(&rows));

    let mut s = String::from(
        "<table>\n<tr><th>engine</th><th>backend</th><th class=\"num\">memory: fixed (MiB)</th><th class=\"num\">per context token (KiB)</th><th class=\"num\">fit max error</th><th class=\"num\">prefill ms/token at 1k</th><th class=\"num\">decode tok/s</th><th class=\"num\">largest input that fits</th><th>held-back check</th></tr>\n",
    );
    for e in &t.engines {
        let check = e.check.map_or_else(
            || "-".into(),
            |c| {
                format!(
                    "{} tokens: predicted {:.1} MiB, measured {:.1} MiB ({:.1}%)",
                    c.input_tokens,
                    mib(c.predicted_peak_bytes),
                    mib(c.measured_peak_bytes as f64),
                    c.rel_error * 100.0
                )
            },
        );
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            e.kind,
            escape(&e.backend_version),
            mib(e.memory.intercept),
            e.memory.slope / 1024.0,
            e.memory.max_rel_error * 100.0,
            e.prefill_ms_per_token.predict(1000.0),
            e.decode_tok_s,
            e.max_input_tokens,
            escape(&check)
        );
    }
    s.push_str("</table>\n");
    section(&mut body, "engines", TABLE_SECTIONS[1].1, &s);

    let mut s = figure("table-memory", &plots::table_memory(t), "Peak RSS of each probe (its own process) against input length, the fitted line, the budget and the largest input that fits.");
    s.push_str(&figure(
        "table-latency",
        &plots::table_latency(t),
        "Prefill and total latency of each probe against input length, and the prefill fit (ms per token grows with length).",
    ));
    section(&mut body, "table-plots", TABLE_SECTIONS[2].1, &s);

    let mut s = String::from(
        "<table>\n<tr><th>engine</th><th class=\"num\">input tokens</th><th class=\"num\">context</th><th>fits</th><th class=\"num\">peak RSS (MiB)</th><th class=\"num\">prefill (ms)</th><th class=\"num\">first token (ms)</th><th class=\"num\">decode tok/s</th><th class=\"num\">total (ms)</th><th>note</th></tr>\n",
    );
    let num = |v: Option<f64>, d: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.d$}"));
    for e in &t.engines {
        for p in &e.points {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                e.kind,
                p.input_tokens,
                p.n_ctx,
                if p.fits { "yes" } else { "<span class=\"down\">no</span>" },
                mib(p.peak_rss_bytes as f64),
                num(p.prefill_ms, 0),
                num(p.ttft_ms, 0),
                num(p.decode_tok_s, 1),
                num(p.total_ms, 0),
                escape(p.note.as_deref().unwrap_or(""))
            );
        }
    }
    s.push_str("</table>\n");
    section(&mut body, "points", TABLE_SECTIONS[3].1, &s);
    let subtitle = format!("{} &middot; {}", escape(&t.model.path.display().to_string()), escape(&t.machine.cpu));
    page("promptloop routing table", &subtitle, &TABLE_SECTIONS, &body)
}
