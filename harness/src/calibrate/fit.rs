//! One engine's probes fitted into its routing-table entry: peak memory against the context,
//! prefill time per token against the input, the mean decode rate, the largest input that fits
//! the budget, and the held-back probe's check of the memory fit.

use engines::EngineKind;

use super::probe::{ProbeResult, Rep};
use super::{max_ctx_for_budget, EngineEntry, HeldBack, LinearFit, Point};

/// One engine's probes, as `calibrate` ran them.
#[derive(Debug, Clone, Copy)]
pub struct EngineProbes<'a> {
    pub kind: EngineKind,
    pub backend_version: &'a str,
    /// The most tokens one sequence may hold: the trained context (a server's slot context
    /// when smaller).
    pub train_context: usize,
    /// The ladder's probes, shortest first (the last may not fit).
    pub ladder: &'a [ProbeResult],
    /// The probe kept out of the fit to check it.
    pub held: Option<&'a ProbeResult>,
}

/// What the engine's threshold must fit: the memory budget, the margin on predicted peaks and
/// the output tokens per example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub bytes: u64,
    pub margin: f64,
    pub max_tokens: u32,
}

/// Fits `probes` into the engine's entry (no endpoints: the caller sets `servers` and
/// `server_api` of a fleet entry). The threshold is 0 when fewer than two probes fit.
pub fn fit_engine(probes: &EngineProbes<'_>, budget: &Budget) -> EngineEntry {
    let mut points: Vec<Point> = probes.ladder.iter().map(point).collect();
    let ok: Vec<&Point> = points.iter().filter(|p| p.fits).collect();
    let flat = LinearFit { intercept: 0.0, slope: 0.0, max_rel_error: 0.0 };
    let memory =
        LinearFit::fit(&ok.iter().map(|p| (p.n_ctx as f64, p.peak_rss_bytes as f64)).collect::<Vec<_>>()).unwrap_or(flat);
    let prefill_ms_per_token = LinearFit::fit(
        &ok.iter().filter_map(|p| p.prefill_ms.map(|ms| (p.input_tokens as f64, ms / p.input_tokens as f64))).collect::<Vec<_>>(),
    )
    .unwrap_or(flat);
    let decode: Vec<f64> = ok.iter().filter_map(|p| p.decode_tok_s).collect();
    let decode_tok_s = crate::stats::mean(&decode);
    let overhead = budget.max_tokens as usize + 16;
    let max_input_tokens = if ok.len() < 2 {
        0
    } else {
        max_ctx_for_budget(&memory, budget.bytes, budget.margin).min(probes.train_context).saturating_sub(overhead)
    };
    let check = probes.held.filter(|h| h.fits).map(|h| HeldBack {
        input_tokens: h.input_tokens,
        predicted_peak_bytes: memory.predict(h.n_ctx as f64),
        measured_peak_bytes: h.peak_rss_bytes,
        rel_error: memory.rel_error(h.n_ctx as f64, h.peak_rss_bytes as f64),
    });
    if let Some(h) = probes.held {
        let mut p = point(h);
        p.note = Some(p.note.map_or_else(|| "held back from the fit".to_owned(), |n| format!("held back; {n}")));
        points.push(p);
    }
    EngineEntry {
        kind: probes.kind,
        backend_version: probes.backend_version.to_owned(),
        memory,
        prefill_ms_per_token,
        decode_tok_s,
        max_input_tokens,
        check,
        points,
        servers: Vec::new(),
        server_api: engines::ServerApi::Native,
    }
}

/// A probe as the table keeps it: the upper median of each timing over its repetitions.
fn point(r: &ProbeResult) -> Point {
    let reps = r.report.as_ref().map(|rep| rep.reps.clone()).unwrap_or_default();
    let m = |f: fn(&Rep) -> f64| crate::stats::upper_median(reps.iter().map(f).collect());
    Point {
        input_tokens: r.input_tokens,
        n_ctx: r.n_ctx,
        fits: r.fits,
        peak_rss_bytes: r.peak_rss_bytes,
        prefill_ms: m(|x| x.prefill_ms),
        ttft_ms: m(|x| x.ttft_ms),
        decode_tok_s: m(|x| x.decode_tok_s),
        total_ms: m(|x| x.total_ms),
        note: r.note.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::probe::{probe_ctx, ProbeReport};

    const MAX_TOKENS: u32 = 64;
    const FIXED: f64 = 100.0 * 1_048_576.0;
    const PER_TOKEN: f64 = 200.0 * 1024.0;

    /// A probe of `input` tokens on a synthetic engine: 100 MiB plus 200 KiB per context token,
    /// prefill `input x (0.5 + 0.0001 x input)` ms, decoding at `decode` tokens per second.
    fn probe(input: usize, fits: bool, decode: f64) -> ProbeResult {
        let n_ctx = probe_ctx(input, MAX_TOKENS);
        let peak = (FIXED + PER_TOKEN * n_ctx as f64) as u64;
        let prefill = input as f64 * (0.5 + 0.0001 * input as f64);
        let rep = |scale: f64| Rep {
            tokenize_ms: 1.0,
            prefill_ms: prefill * scale,
            ttft_ms: prefill * scale + 5.0,
            decode_tok_s: decode,
            total_ms: prefill * scale + 1000.0,
        };
        let report = fits.then(|| ProbeReport {
            input_tokens: input,
            n_ctx,
            load_ms: 10.0,
            // The upper median of two reps is the slower one.
            reps: vec![rep(0.9), rep(1.0)],
            peak_rss_bytes: peak,
            backend_version: "v1".into(),
            train_context: 8192,
            max_context: 0,
        });
        ProbeResult {
            input_tokens: input,
            n_ctx,
            fits,
            peak_rss_bytes: if fits { peak } else { 1 << 30 },
            report,
            note: (!fits).then(|| "killed at the budget".to_owned()),
        }
    }

    fn budget() -> Budget {
        Budget { bytes: 1 << 30, margin: 0.1, max_tokens: MAX_TOKENS }
    }

    #[test]
    fn fits_memory_prefill_decode_and_the_threshold_from_probe_points() {
        let ladder: Vec<ProbeResult> = [(128, 50.0), (256, 50.0), (512, 50.0), (1024, 60.0), (2048, 40.0)]
            .into_iter()
            .map(|(n, decode)| probe(n, true, decode))
            .chain([probe(8112, false, 0.0)])
            .collect();
        let mut held = probe(768, true, 50.0);
        held.peak_rss_bytes = (held.peak_rss_bytes as f64 * 1.05) as u64;
        let probes = EngineProbes {
            kind: EngineKind::Llama,
            backend_version: "v1",
            train_context: 8192,
            ladder: &ladder,
            held: Some(&held),
        };
        let e = fit_engine(&probes, &budget());
        assert_eq!((e.kind, e.backend_version.as_str()), (EngineKind::Llama, "v1"));
        // The probe that did not fit is left out of the fits.
        assert!((e.memory.slope - PER_TOKEN).abs() < 1e-6 && (e.memory.intercept - FIXED).abs() < 1.0, "{:?}", e.memory);
        assert!(e.memory.max_rel_error < 1e-6);
        let p = e.prefill_ms_per_token;
        assert!((p.intercept - 0.5).abs() < 1e-9 && (p.slope - 0.0001).abs() < 1e-12, "{p:?}");
        assert!((e.decode_tok_s - 50.0).abs() < 1e-9);
        // (1 GiB / 1.1 - 100 MiB) / 200 KiB = 4254 context tokens, less 64 + 16 for the output.
        assert_eq!(e.max_input_tokens, 4174);
        let check = e.check.expect("the held-back probe fits");
        assert_eq!(check.input_tokens, 768);
        assert!((check.rel_error - 0.05 / 1.05).abs() < 1e-3, "{check:?}");
        // Every probe is kept, the held-back one last and marked.
        let inputs: Vec<usize> = e.points.iter().map(|p| p.input_tokens).collect();
        assert_eq!(inputs, [128, 256, 512, 1024, 2048, 8112, 768]);
        assert_eq!(e.points[6].note.as_deref(), Some("held back from the fit"));
        assert_eq!(e.points[5].note.as_deref(), Some("killed at the budget"));
        let median = e.points[0].prefill_ms.unwrap();
        assert!((median - 128.0 * (0.5 + 0.0128)).abs() < 1e-9, "the upper median of the reps: {median}");
        assert!(e.servers.is_empty() && e.server_api.is_native());
    }

    #[test]
    fn the_context_caps_the_threshold_and_one_fitting_probe_gives_none() {
        let ladder: Vec<ProbeResult> = [128, 256, 512].into_iter().map(|n| probe(n, true, 50.0)).collect();
        let probes =
            EngineProbes { kind: EngineKind::Candle, backend_version: "v2", train_context: 2048, ladder: &ladder, held: None };
        let e = fit_engine(&probes, &budget());
        assert_eq!(e.max_input_tokens, 2048 - 80);
        assert!(e.check.is_none() && e.points.len() == 3);

        let ladder = [probe(128, true, 50.0), probe(256, false, 0.0)];
        let mut held = probe(192, false, 0.0);
        held.note = Some("out of memory".into());
        let probes = EngineProbes {
            kind: EngineKind::Candle,
            backend_version: "v2",
            train_context: 2048,
            ladder: &ladder,
            held: Some(&held),
        };
        let e = fit_engine(&probes, &budget());
        assert_eq!(e.max_input_tokens, 0);
        assert!(e.check.is_none(), "a held-back probe that did not fit checks nothing");
        assert_eq!(e.points[2].note.as_deref(), Some("held back; out of memory"));
    }
}
