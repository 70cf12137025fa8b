//! The summary of an eval pass: quality (mean score, per-field accuracy, failure classes) and
//! speed (latency percentiles, prefill/decode throughput, peak memory), as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::eval::ExampleRecord;
use crate::score::{Aggregate, ExampleScore, FailureClass};
use crate::task::FieldSpec;

/// Aggregate speed figures of a pass.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_mean_ms: f64,
    /// Prompt tokens computed (shared prefixes once) per second of prefill wall time.
    pub prefill_tok_s: f64,
    /// Generated tokens per second of decode wall time, summed over sequences decoded together.
    pub decode_tok_s: f64,
    pub input_tokens: usize,
    pub output_tokens: usize,
    /// Output tokens the constraint forced (appended without sampling).
    pub forced_tokens: usize,
    /// Draft tokens fed for verification, and those kept as output.
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
    pub peak_rss_bytes: u64,
    pub wall_ms: f64,
    /// What the engine's prefix cache did in this pass (`None`: not used).
    pub prefix_cache: Option<CacheSummary>,
}

/// Prefix-cache use over a pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheSummary {
    pub hits_memory: usize,
    pub hits_disk: usize,
    pub misses: usize,
    /// Prompt tokens restored instead of computed.
    pub tokens_reused: usize,
    pub bytes_restored: u64,
    /// Total restore time of the hits.
    pub restore_ms: f64,
    pub bytes_stored: u64,
}

impl CacheSummary {
    /// Totals over `records`; `None` when no record used the cache.
    pub fn of(records: &[ExampleRecord]) -> Option<Self> {
        let mut c = CacheSummary::default();
        let mut any = false;
        for u in records.iter().filter_map(|r| r.prefix_cache) {
            any = true;
            match u.tier {
                engines::CacheTier::Memory => c.hits_memory += 1,
                engines::CacheTier::Disk => c.hits_disk += 1,
                engines::CacheTier::Miss => {
                    c.misses += 1;
                    c.bytes_stored += u.bytes;
                    continue;
                }
            }
            c.tokens_reused += u.tokens;
            c.bytes_restored += u.bytes;
            c.restore_ms += u.ms;
        }
        any.then_some(c)
    }
}

/// Everything `promptloop eval` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub task: String,
    pub split: String,
    pub model: String,
    pub engine: String,
    pub constraint: String,
    pub examples: usize,
    pub mean_score: f64,
    /// Examples with every field right.
    pub exact_match: usize,
    pub per_field: Vec<crate::score::FieldStat>,
    pub failure_classes: BTreeMap<FailureClass, usize>,
    /// Examples the engine could not run, by kind (`too_long`, `engine`).
    pub errors: BTreeMap<String, usize>,
    /// Outputs that hit the token cap.
    pub truncated: usize,
    /// Documents longer than the context: split into windows, or cut to their head.
    pub inputs_chunked: usize,
    pub inputs_truncated: usize,
    /// Examples per engine, when routed per example (empty otherwise).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub routed: BTreeMap<String, usize>,
    /// How sure the model was of its field values (in-process engines; `None` without
    /// log-probabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<ConfidenceSummary>,
    pub speed: Speed,
    /// The engine's KV cache for all its sequences, from the model's shape (bytes).
    pub kv_cache_bytes: u64,
}

/// Field confidences over a pass (see [`crate::score::confidence`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfidenceSummary {
    /// Field verdicts with a confidence.
    pub fields: usize,
    /// Geometric mean token probability of the correct values, and of the wrong ones.
    pub mean_p_correct: Option<f64>,
    pub mean_p_wrong: Option<f64>,
    pub wrong_and_sure: usize,
    pub right_by_luck: usize,
}

impl ConfidenceSummary {
    pub fn of(records: &[ExampleRecord]) -> Option<Self> {
        let verdicts: Vec<&crate::score::FieldVerdict> =
            records.iter().flat_map(|r| &r.fields).filter(|f| f.confidence.is_some()).collect();
        if verdicts.is_empty() {
            return None;
        }
        let mean_p = |correct: bool| {
            let ps: Vec<f64> =
                verdicts.iter().filter(|f| f.correct == correct).filter_map(|f| f.confidence.map(|c| c.mean_p())).collect();
            (!ps.is_empty()).then(|| ps.iter().sum::<f64>() / ps.len() as f64)
        };
        Some(ConfidenceSummary {
            fields: verdicts.len(),
            mean_p_correct: mean_p(true),
            mean_p_wrong: mean_p(false),
            wrong_and_sure: verdicts.iter().filter(|f| f.wrong_and_sure()).count(),
            right_by_luck: verdicts.iter().filter(|f| f.right_by_luck()).count(),
        })
    }
}

/// Labels of a pass, for the summary header.
pub struct Labels<'a> {
    pub task: &'a str,
    pub split: &'a str,
    pub model: &'a str,
    pub engine: &'a str,
    pub constraint: &'a str,
    pub kv_cache_bytes: u64,
}

impl Summary {
    pub fn new(labels: &Labels<'_>, fields: &[FieldSpec], records: &[ExampleRecord], wall_ms: f64) -> Self {
        let scores: Vec<ExampleScore> = records
            .iter()
            .map(|r| ExampleScore {
                score: r.score,
                fields: r.fields.clone(),
                format_ok: r.format_ok,
                truncated: r.truncated,
                format_error: r.format_error.clone(),
            })
            .collect();
        let agg = Aggregate::from_scores(fields, &scores);
        let mut errors = BTreeMap::new();
        for e in records.iter().filter_map(|r| r.error.as_ref()) {
            *errors.entry(e.clone()).or_insert(0) += 1;
        }
        let mut routed = BTreeMap::new();
        for e in records.iter().filter_map(|r| r.engine.as_ref()) {
            *routed.entry(e.clone()).or_insert(0) += 1;
        }
        Summary {
            task: labels.task.into(),
            split: labels.split.into(),
            model: labels.model.into(),
            engine: labels.engine.into(),
            constraint: labels.constraint.into(),
            examples: records.len(),
            mean_score: agg.mean_score,
            exact_match: agg.exact_match,
            per_field: agg.per_field,
            failure_classes: agg.classes,
            errors,
            truncated: records.iter().filter(|r| r.truncated).count(),
            inputs_chunked: records.iter().filter(|r| r.input_chunks.is_some()).count(),
            inputs_truncated: records.iter().filter(|r| r.input_truncated).count(),
            routed,
            confidence: ConfidenceSummary::of(records),
            speed: speed(records, wall_ms),
            kv_cache_bytes: labels.kv_cache_bytes,
        }
    }

    /// A plain-text table for a terminal.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "task {} / split {} / {} examples", self.task, self.split, self.examples);
        let _ = writeln!(s, "model {} / engine {} / constraint {}", self.model, self.engine, self.constraint);
        let _ = writeln!(s);
        let _ = writeln!(s, "mean score      {:.3}", self.mean_score);
        let _ = writeln!(s, "exact match     {} / {}", self.exact_match, self.examples);
        let _ = writeln!(s);
        let _ = writeln!(s, "{:<38} {:>9} {:>11}", "field", "accuracy", "mean score");
        for f in &self.per_field {
            let _ = writeln!(s, "{:<38} {:>9.3} {:>11.3}", f.name, f.accuracy, f.mean_score);
        }
        let _ = writeln!(s);
        let classes: Vec<String> =
            FailureClass::ALL.iter().map(|c| format!("{c} {}", self.failure_classes.get(c).copied().unwrap_or(0))).collect();
        let _ = writeln!(s, "failures        {}", classes.join(", "));
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(s, "engine errors   {errors}");
        let _ = writeln!(s, "truncated       {}", self.truncated);
        if let Some(c) = &self.confidence {
            let p = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
            let _ = writeln!(
                s,
                "confidence      mean p {} right, {} wrong; {} wrong and sure, {} right by luck (of {} fields)",
                p(c.mean_p_correct),
                p(c.mean_p_wrong),
                c.wrong_and_sure,
                c.right_by_luck,
                c.fields
            );
        }
        if self.inputs_chunked + self.inputs_truncated > 0 {
            let _ = writeln!(
                s,
                "too long        {} chunked into windows, {} cut to their head (--on-overflow)",
                self.inputs_chunked, self.inputs_truncated
            );
        }
        if !self.routed.is_empty() {
            let by: Vec<String> = self.routed.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "routed          {} (per example, by input length)", by.join(", "));
        }
        let _ = writeln!(s);
        let sp = &self.speed;
        let _ = writeln!(
            s,
            "latency         p50 {:.0} ms, p95 {:.0} ms, mean {:.0} ms per request",
            sp.latency_p50_ms, sp.latency_p95_ms, sp.latency_mean_ms
        );
        let _ = writeln!(s, "prefill         {:.1} tok/s ({} prompt tokens)", sp.prefill_tok_s, sp.input_tokens);
        let _ = writeln!(
            s,
            "decode          {:.1} tok/s ({} output tokens, {} of them forced by the constraint)",
            sp.decode_tok_s, sp.output_tokens, sp.forced_tokens
        );
        if sp.drafted_tokens > 0 {
            let _ = writeln!(
                s,
                "drafts          {} of {} draft tokens kept ({:.0}%), {:.0}% of the output",
                sp.accepted_tokens,
                sp.drafted_tokens,
                100.0 * sp.accepted_tokens as f64 / sp.drafted_tokens as f64,
                100.0 * sp.accepted_tokens as f64 / sp.output_tokens.max(1) as f64
            );
        }
        let _ =
            writeln!(s, "peak memory     {:.1} MiB RSS (KV cache {:.1} MiB)", mib(sp.peak_rss_bytes), mib(self.kv_cache_bytes));
        if let Some(c) = &sp.prefix_cache {
            let _ = writeln!(
                s,
                "prefix cache    {} hits ({} memory, {} disk), {} misses; {} prompt tokens reused, {:.1} MiB restored in {:.2} s; {:.1} MiB stored",
                c.hits_memory + c.hits_disk,
                c.hits_memory,
                c.hits_disk,
                c.misses,
                c.tokens_reused,
                mib(c.bytes_restored),
                c.restore_ms / 1000.0,
                mib(c.bytes_stored)
            );
        }
        let _ = writeln!(s, "wall time       {:.1} s", sp.wall_ms / 1000.0);
        s
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn speed(records: &[ExampleRecord], wall_ms: f64) -> Speed {
    let ran: Vec<&ExampleRecord> = records.iter().filter(|r| r.error.is_none()).collect();
    let mut lat: Vec<f64> = ran.iter().map(|r| r.timings.total_ms).collect();
    lat.sort_by(f64::total_cmp);
    // Throughput per engine batch: sequences decoded together share wall time.
    let mut batches: BTreeMap<u64, Vec<&ExampleRecord>> = BTreeMap::new();
    for r in &ran {
        batches.entry(r.batch_id).or_default().push(r);
    }
    let (mut pf_tok, mut pf_ms, mut dc_tok, mut dc_ms) = (0usize, 0f64, 0usize, 0f64);
    for group in batches.values() {
        let shared = group.iter().map(|r| r.tokens.shared_prefix).max().unwrap_or(0);
        // Prompt tokens computed: a shared prefix once, a restored document not at all.
        let reused = |r: &ExampleRecord| r.prefix_cache.filter(engines::PrefixCacheUse::hit).map_or(0, |u| u.tokens);
        pf_tok += shared + group.iter().map(|r| r.tokens.input - r.tokens.shared_prefix - reused(r)).sum::<usize>();
        let prefill_end = group.iter().map(|r| r.timings.prefill_ms).fold(0.0, f64::max);
        let end = group.iter().map(|r| r.timings.total_ms - r.timings.tokenize_ms).fold(0.0, f64::max);
        pf_ms += prefill_end;
        dc_tok += group.iter().map(|r| r.tokens.output.saturating_sub(1)).sum::<usize>();
        dc_ms += (end - prefill_end).max(0.0);
    }
    let per_s = |n: usize, ms: f64| if ms > 0.0 { n as f64 * 1000.0 / ms } else { 0.0 };
    Speed {
        latency_p50_ms: percentile(&lat, 0.50),
        latency_p95_ms: percentile(&lat, 0.95),
        latency_mean_ms: if lat.is_empty() { 0.0 } else { lat.iter().sum::<f64>() / lat.len() as f64 },
        prefill_tok_s: per_s(pf_tok, pf_ms),
        decode_tok_s: per_s(dc_tok, dc_ms),
        input_tokens: ran.iter().map(|r| r.tokens.input).sum(),
        output_tokens: ran.iter().map(|r| r.tokens.output).sum(),
        forced_tokens: ran.iter().map(|r| r.tokens.forced).sum(),
        drafted_tokens: ran.iter().map(|r| r.tokens.drafted).sum(),
        accepted_tokens: ran.iter().map(|r| r.tokens.accepted).sum(),
        peak_rss_bytes: ran.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
        wall_ms,
        prefix_cache: CacheSummary::of(records),
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert!((percentile(&v, 0.5) - 5.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 0.95) - 10.0).abs() < f64::EPSILON);
        assert!((percentile(&[], 0.5)).abs() < f64::EPSILON);
        assert!((percentile(&[3.0], 0.95) - 3.0).abs() < f64::EPSILON);
    }
}
