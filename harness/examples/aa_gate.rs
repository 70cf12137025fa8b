//! The A/A test of the accept gate: the same prompt scored twice, the second time changed only
//! in whitespace, should be accepted as a gain at most at the rate the confidence allows.
//!
//! ```sh
//! cargo run --release -p harness --example aa_gate -- CONFIDENCE BASE.jsonl VARIANT1.jsonl ...
//! ```
//!
//! Each file is the `--out` records of `promptloop eval` on one split (`id`, `score` per line).
//! Variant `i` (1-based) is gated against the base with the train gate of `--accept bootstrap`
//! seeded `i`, exactly as the optimize loop gates a candidate. Prints one line per variant and
//! the acceptance rate. `scripts/aa.sh` makes the files.

use std::collections::HashMap;
use std::process::ExitCode;

use harness::config::Accept;
use harness::optimize::gate::{self, GateRule};

fn scores(path: &str) -> Result<HashMap<String, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{path}:{}: {e}", i + 1))?;
        let id = v["id"].as_str().ok_or_else(|| format!("{path}:{}: no `id`", i + 1))?;
        let score = v["score"].as_f64().ok_or_else(|| format!("{path}:{}: no `score`", i + 1))?;
        out.insert(id.to_owned(), score);
    }
    Ok(out)
}

fn run(args: &[String]) -> Result<(), String> {
    let [confidence, base, variants @ ..] = args else {
        return Err("usage: aa_gate CONFIDENCE BASE.jsonl VARIANT.jsonl...".into());
    };
    let confidence: f64 = confidence.parse().map_err(|_| format!("CONFIDENCE: not a number: {confidence}"))?;
    let base = scores(base)?;
    let mut accepted = 0;
    for (i, path) in variants.iter().enumerate() {
        let variant = scores(path)?;
        let mut ids: Vec<&String> = base.keys().filter(|id| variant.contains_key(*id)).collect();
        ids.sort();
        let cur: Vec<f64> = ids.iter().map(|id| base[*id]).collect();
        let cand: Vec<f64> = ids.iter().map(|id| variant[*id]).collect();
        let seed = i as u64 + 1;
        let rule = GateRule { accept: Accept::Bootstrap, confidence, seed, dev_margin: 0.0 };
        let g = gate::compare(&rule, &cand, &cur, "train-gate", 0);
        let ok = gate::gains(&g);
        accepted += usize::from(ok);
        let changed = cand.iter().zip(&cur).filter(|(a, b)| (*a - *b).abs() > 1e-12).count();
        let lower = g.bootstrap.map_or(f64::NAN, |b| b.lower);
        println!(
            "seed {seed:>3}  n {:>3}  examples whose score changed {changed:>3}  mean delta {:+.4}  lower bound {lower:+.4}  {}",
            ids.len(),
            g.candidate_mean - g.current_mean,
            if ok { "ACCEPTED" } else { "rejected" }
        );
    }
    let n = variants.len();
    println!(
        "A/A false acceptance: {accepted} of {n} ({:.1}%) at confidence {confidence} (two-sided interval: at most {:.1}% expected)",
        100.0 * accepted as f64 / n.max(1) as f64,
        100.0 * (1.0 - confidence) / 2.0
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
