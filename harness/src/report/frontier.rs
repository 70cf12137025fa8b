//! The report's frontier section: the Pareto frontier over train examples (which prompt is best
//! on which examples; see [`crate::optimize::frontier`]) and quality against prompt cost (the
//! tokens a prompt's instruction adds to every example).
//!
//! Worked out from the log alone: the baseline's train evals and every candidate scored on all
//! of the baseline's train examples. The frontier is the same whether or not the run searched
//! with `--search pareto`: it shows what a greedy run left untried.

use std::fmt::Write as _;

use super::analysis::{Analysis, CandStatus};
use super::{escape, RunData};
use crate::optimize::frontier::frontier_of;

/// One prompt on the frontier.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontierRow {
    /// `baseline` or `it2.c1`.
    pub label: String,
    pub proposer: String,
    pub train_mean: f64,
    pub prompt_tokens: Option<usize>,
    /// Train example ids it leads (best score, ties shared), in train order.
    pub leads: Vec<String>,
    /// The run's best prompt.
    pub best: bool,
}

/// One prompt on the quality-vs-cost plot.
#[derive(Debug, Clone, PartialEq)]
pub struct CostPoint {
    pub label: String,
    pub prompt_tokens: usize,
    /// Its mean over the train examples it was scored on (part of train when raced).
    pub train_mean: f64,
    pub on_frontier: bool,
    pub best: bool,
    pub baseline: bool,
}

/// The frontier over the baseline's train examples.
pub fn rows(run: &RunData, a: &Analysis) -> Vec<FrontierRow> {
    let (ids, base) = baseline_train(run, &a.baseline_sha256);
    if ids.is_empty() {
        return Vec::new();
    }
    // Members: the baseline, then each distinct candidate prompt scored on every train example.
    let mut labels: Vec<(String, String, Option<usize>, String)> =
        vec![("baseline".into(), "task prompt".into(), a.prompt_tokens.map(|t| t.0), a.baseline_sha256.clone())];
    let mut table: Vec<Vec<f64>> = vec![base];
    for c in &run.candidates {
        if labels.iter().any(|l| l.3 == c.prompt_sha256) {
            continue;
        }
        let scores: Option<Vec<f64>> = ids.iter().map(|id| c.scores.iter().find(|s| s.id == *id).map(|s| s.score)).collect();
        if let Some(scores) = scores {
            table.push(scores);
            labels.push((
                format!("it{}.c{}", c.iteration + 1, c.index + 1),
                c.proposer.clone(),
                c.prompt_tokens,
                c.prompt_sha256.clone(),
            ));
        }
    }
    frontier_of(&table)
        .into_iter()
        .map(|(m, led)| {
            let (label, proposer, prompt_tokens, sha) = labels[m].clone();
            FrontierRow {
                label,
                proposer,
                train_mean: table[m].iter().sum::<f64>() / table[m].len() as f64,
                prompt_tokens,
                leads: led.into_iter().map(|e| ids[e].clone()).collect(),
                best: sha == a.best_sha256,
            }
        })
        .collect()
}

/// The baseline's train example ids in log order, and its score on each (the first record).
fn baseline_train(run: &RunData, baseline: &str) -> (Vec<String>, Vec<f64>) {
    let (mut ids, mut scores): (Vec<String>, Vec<f64>) = (Vec::new(), Vec::new());
    for e in run.evals.iter().filter(|e| e.prompt_sha256 == baseline && e.split == "train") {
        if !ids.contains(&e.record.id) {
            ids.push(e.record.id.clone());
            scores.push(e.record.score);
        }
    }
    (ids, scores)
}

/// Every scored prompt whose prompt tokens were logged, for the quality-vs-cost plot.
pub fn cost_points(a: &Analysis, frontier: &[FrontierRow]) -> Vec<CostPoint> {
    let on = |label: &str| frontier.iter().any(|r| r.label == label);
    let mut out = Vec::new();
    if let (Some((tokens, _)), Some(mean)) = (a.prompt_tokens, a.baseline_train) {
        out.push(CostPoint {
            label: "baseline".into(),
            prompt_tokens: tokens,
            train_mean: mean,
            on_frontier: on("baseline"),
            best: a.best_sha256 == a.baseline_sha256,
            baseline: true,
        });
    }
    for c in a.candidates() {
        let (Some(tokens), false) = (c.prompt_tokens, matches!(c.status, CandStatus::Unscored(_))) else { continue };
        let label = format!("it{}.c{}", c.iteration + 1, c.index + 1);
        out.push(CostPoint {
            on_frontier: on(&label),
            label,
            prompt_tokens: tokens,
            train_mean: c.train_mean,
            best: c.prompt_sha256 == a.best_sha256,
            baseline: false,
        });
    }
    out
}

/// The frontier as an HTML table.
pub fn table(rows: &[FrontierRow]) -> String {
    if rows.is_empty() {
        return "<p class=\"note\">No prompt scores above 0 on any train example yet: the frontier is empty.</p>\n".into();
    }
    let mut s = String::from(
        "<table class=\"frontier\"><thead><tr><th>prompt</th><th>proposer</th><th>train mean</th><th>prompt tokens</th>\
         <th>leads</th><th>train examples it is best on</th></tr></thead><tbody>\n",
    );
    for r in rows {
        let best = if r.best { " (best)" } else { "" };
        let _ = writeln!(
            s,
            "<tr><td>{}{best}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.label),
            escape(&r.proposer),
            r.train_mean,
            r.prompt_tokens.map_or("-".into(), |t| t.to_string()),
            r.leads.len(),
            escape(&r.leads.join(", "))
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_member_and_the_examples_it_leads() {
        let rows = vec![
            FrontierRow {
                label: "baseline".into(),
                proposer: "task prompt".into(),
                train_mean: 0.25,
                prompt_tokens: Some(80),
                leads: vec!["a".into()],
                best: false,
            },
            FrontierRow {
                label: "it1.c2".into(),
                proposer: "edits".into(),
                train_mean: 0.5,
                prompt_tokens: None,
                leads: vec!["b".into(), "c<".into()],
                best: true,
            },
        ];
        let html = table(&rows);
        assert!(html.contains("<td>baseline</td><td>task prompt</td><td>0.250</td><td>80</td><td>1</td><td>a</td>"), "{html}");
        assert!(
            html.contains("<td>it1.c2 (best)</td><td>edits</td><td>0.500</td><td>-</td><td>2</td><td>b, c&lt;</td>"),
            "{html}"
        );
        assert!(table(&[]).contains("frontier is empty"));
    }
}
