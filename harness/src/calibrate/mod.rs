//! `promptloop calibrate`: per engine, a ladder of input lengths is probed (each in a child
//! process, see [`probe`]), peak memory and latency are fitted against the context, and the
//! largest input that fits the memory budget with a margin becomes the engine's threshold. The
//! routing table ([`RoutingTable`], TOML) is what `--engine auto` reads: per example, the engine
//! predicted fastest among those predicted to fit ([`RoutingTable::route`]). One engine's
//! probes become its entry in [`fit`].

pub mod fit;
pub mod probe;

use std::path::{Path, PathBuf};

use engines::memory::Machine;
use engines::EngineKind;
use serde::{Deserialize, Serialize};

use crate::fingerprint::ModelFingerprint;

/// Version of the table format.
pub const TABLE_VERSION: u32 = 1;

/// Input lengths probed: powers of two from 128 up to what the context leaves after the
/// output, the last one at exactly that.
pub fn ladder(max_context: usize, max_tokens: u32, max_input: Option<usize>) -> Vec<usize> {
    let top = max_context.saturating_sub(max_tokens as usize + 16).min(max_input.unwrap_or(usize::MAX));
    let mut out = Vec::new();
    let mut n = 128;
    while n < top {
        out.push(n);
        n *= 2;
    }
    if top >= 64 {
        out.push(top);
    }
    out
}

/// A length between two ladder points, kept out of the fit to check its predictions.
pub fn held_back(ladder: &[usize]) -> Option<usize> {
    match ladder.len() {
        0..=2 => None,
        n => Some(usize::midpoint(ladder[n - 2], ladder[n - 3]) + (ladder[n - 2] - ladder[n - 3]) / 4),
    }
}

/// `y = intercept + slope * x`, least squares, with its largest relative error on the points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearFit {
    pub intercept: f64,
    pub slope: f64,
    pub max_rel_error: f64,
}

impl LinearFit {
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        let mut fit = LinearFit { intercept, slope, max_rel_error: 0.0 };
        fit.max_rel_error = points.iter().map(|(x, y)| fit.rel_error(*x, *y)).fold(0.0, f64::max);
        Some(fit)
    }

    pub fn predict(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    pub fn rel_error(&self, x: f64, y: f64) -> f64 {
        if y == 0.0 {
            0.0
        } else {
            ((self.predict(x) - y) / y).abs()
        }
    }
}

/// What calibration learned about one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineEntry {
    pub kind: EngineKind,
    pub backend_version: String,
    /// Peak RSS (bytes) against the context the engine is opened with (tokens, all sequences).
    pub memory: LinearFit,
    /// Prefill milliseconds per input token against input tokens (attention makes long
    /// prompts slower per token): prefill ms = x * (intercept + slope * x).
    pub prefill_ms_per_token: LinearFit,
    /// Decode tokens per second (mean over the probes).
    pub decode_tok_s: f64,
    /// The largest input (prompt tokens) that fits the budget with the margin, one sequence
    /// and `max_tokens` of output. 0: nothing fits.
    pub max_input_tokens: usize,
    /// Held-back length: predicted and measured peak, relative error.
    pub check: Option<HeldBack>,
    pub points: Vec<Point>,
    /// The endpoints of a `server` entry (`calibrate --fleet`): their slot context bounds
    /// `max_input_tokens`, and `--engine auto` routes each example among them and the
    /// in-process engines. Empty for in-process engines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "engines::ServerApi::is_native")]
    pub server_api: engines::ServerApi,
}

/// The held-back probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldBack {
    pub input_tokens: usize,
    pub predicted_peak_bytes: f64,
    pub measured_peak_bytes: u64,
    pub rel_error: f64,
}

/// One probe, as the table keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub input_tokens: usize,
    pub n_ctx: usize,
    pub fits: bool,
    pub peak_rss_bytes: u64,
    pub prefill_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub decode_tok_s: Option<f64>,
    pub total_ms: Option<f64>,
    pub note: Option<String>,
}

/// The routing table `calibrate` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingTable {
    pub version: u32,
    pub created: String,
    pub promptloop_version: String,
    pub machine: Machine,
    pub model: ModelFingerprint,
    pub budget_bytes: u64,
    /// Predicted peaks are multiplied by `1 + margin` before comparing with the budget.
    pub margin: f64,
    pub max_tokens: u32,
    pub engines: Vec<EngineEntry>,
}

/// Where an example goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Engine(EngineKind),
    /// No engine of the table fits it.
    Overflow,
}

/// Errors reading or writing a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}{at}: {message}", at = line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse { path: PathBuf, line: Option<usize>, message: String },
}

impl EngineEntry {
    /// Predicted peak bytes with a context of `ctx_tokens` (all sequences).
    pub fn predicted_peak(&self, ctx_tokens: usize) -> f64 {
        self.memory.predict(ctx_tokens as f64)
    }

    /// Predicted latency of one example of `input` tokens with `output` tokens out.
    pub fn predicted_ms(&self, input: usize, output: u32) -> f64 {
        predicted_ms(&self.prefill_ms_per_token, self.decode_tok_s, input, output)
    }
}

/// Predicted milliseconds of one example of `input` tokens with `output` tokens out, from a
/// prefill fit (ms per input token against input tokens) and a decode rate.
pub fn predicted_ms(prefill_ms_per_token: &LinearFit, decode_tok_s: f64, input: usize, output: u32) -> f64 {
    input as f64 * prefill_ms_per_token.predict(input as f64).max(0.0) + f64::from(output) / decode_tok_s.max(1e-3) * 1000.0
}

/// The largest context (tokens) whose predicted peak, times `1 + margin`, stays in the budget.
pub fn max_ctx_for_budget(memory: &LinearFit, budget: u64, margin: f64) -> usize {
    let room = budget as f64 / (1.0 + margin) - memory.intercept;
    if room <= 0.0 || memory.slope <= 0.0 {
        return if room > 0.0 { usize::MAX } else { 0 };
    }
    (room / memory.slope).floor() as usize
}

impl RoutingTable {
    /// The engine predicted fastest among those predicted to fit `input` tokens (plus the
    /// table's output budget), among `available` (compiled in and loaded).
    pub fn route(&self, input: usize, available: &[EngineKind]) -> Route {
        self.engines
            .iter()
            .filter(|e| available.contains(&e.kind) && e.max_input_tokens > 0 && input <= e.max_input_tokens)
            .min_by(|a, b| a.predicted_ms(input, self.max_tokens).total_cmp(&b.predicted_ms(input, self.max_tokens)))
            .map_or(Route::Overflow, |e| Route::Engine(e.kind))
    }

    pub fn engine(&self, kind: EngineKind) -> Option<&EngineEntry> {
        self.engines.iter().find(|e| e.kind == kind)
    }

    /// Why this table may not describe the present set-up (empty when it does).
    pub fn stale_reasons(&self, model: &ModelFingerprint, machine: &Machine, versions: &[(EngineKind, String)]) -> Vec<String> {
        let mut out = Vec::new();
        if self.version != TABLE_VERSION {
            out.push(format!("table format {} (this build writes {TABLE_VERSION})", self.version));
        }
        if self.model.sha256_first_mib != model.sha256_first_mib || self.model.size != model.size {
            out.push(format!("calibrated for another model ({}, now {})", self.model.path.display(), model.path.display()));
        }
        if self.machine != *machine {
            out.push(format!(
                "calibrated on another machine ({}, {} cores, {} MiB; now {}, {} cores, {} MiB)",
                self.machine.cpu,
                self.machine.cores,
                self.machine.total_memory_bytes >> 20,
                machine.cpu,
                machine.cores,
                machine.total_memory_bytes >> 20
            ));
        }
        for (kind, version) in versions {
            if let Some(e) = self.engine(*kind) {
                if e.backend_version != *version {
                    out.push(format!("engine {kind} is {version} now, {} when calibrated", e.backend_version));
                }
            }
        }
        out
    }

    pub fn load(path: &Path) -> Result<Self, TableError> {
        let text = fs_err::read_to_string(path).map_err(|error| TableError::Io { path: path.into(), error })?;
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let at = line.and_then(|l| text.lines().nth(l - 1)).map(|l| format!(" (in `{}`)", l.trim())).unwrap_or_default();
            TableError::Parse { path: path.into(), line, message: format!("{}{at}", e.message()) }
        })
    }

    /// Writes through a temp file and a rename.
    pub fn save(&self, path: &Path) -> Result<(), TableError> {
        let io = |error| TableError::Io { path: path.into(), error };
        let text = toml::to_string_pretty(self).map_err(|e| TableError::Parse {
            path: path.into(),
            line: None,
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs_err::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("toml.tmp");
        fs_err::write(
            &tmp,
            format!("# promptloop routing table: written by `promptloop calibrate`, read by `--engine auto`.\n{text}"),
        )
        .map_err(io)?;
        fs_err::rename(&tmp, path).map_err(io)
    }
}

/// The default table of a model: `$PROMPTLOOP_CACHE/routing/<first 16 hex of its hash>.toml`.
pub fn default_table_path(model: &ModelFingerprint) -> PathBuf {
    crate::models::cache_dir()
        .join("routing")
        .join(format!("{}.toml", &model.sha256_first_mib[..16.min(model.sha256_first_mib.len())]))
}

/// A memory size: `6GiB`, `512MiB`, `800MB`, `1.5G`, or bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 6GiB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{s}`: unknown unit `{other}` (B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("`{s}` must be positive"));
    }
    Ok((n * mult) as u64)
}

/// A size in bytes, written and read as `parse_bytes` reads it (`1GiB`, `512MiB`, `6GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        match [(30, "GiB"), (20, "MiB"), (10, "KiB")].into_iter().find(|(shift, _)| n > 0 && n % (1u64 << shift) == 0) {
            Some((shift, unit)) => write!(f, "{}{unit}", n >> shift),
            None => write!(f, "{n}B"),
        }
    }
}

impl std::str::FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_bytes(s).map(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(intercept: f64, slope: f64) -> LinearFit {
        LinearFit { intercept, slope, max_rel_error: 0.0 }
    }

    fn entry(kind: EngineKind, max_input: usize, prefill_per_token: f64, decode: f64) -> EngineEntry {
        EngineEntry {
            kind,
            backend_version: "v1".into(),
            memory: fit(100e6, 20e3),
            prefill_ms_per_token: fit(prefill_per_token, 0.0),
            decode_tok_s: decode,
            max_input_tokens: max_input,
            check: None,
            points: Vec::new(),
            servers: Vec::new(),
            server_api: engines::ServerApi::Native,
        }
    }

    fn table(engines: Vec<EngineEntry>) -> RoutingTable {
        RoutingTable {
            version: TABLE_VERSION,
            created: "now".into(),
            promptloop_version: "0".into(),
            machine: Machine { cpu: "cpu".into(), cores: 2, total_memory_bytes: 24 << 30 },
            model: ModelFingerprint { path: "/m.gguf".into(), sha256_first_mib: "ab".repeat(32), size: 10 },
            budget_bytes: 1 << 30,
            margin: 0.1,
            max_tokens: 128,
            engines,
        }
    }

    #[test]
    fn routes_to_the_fastest_engine_that_fits_or_overflows() {
        // llama: fast but fits 2,000 tokens; candle: slower, fits 8,000.
        let t = table(vec![entry(EngineKind::Llama, 2000, 3.0, 100.0), entry(EngineKind::Candle, 8000, 6.0, 60.0)]);
        let both = [EngineKind::Llama, EngineKind::Candle];
        assert_eq!(t.route(1500, &both), Route::Engine(EngineKind::Llama));
        assert_eq!(t.route(2000, &both), Route::Engine(EngineKind::Llama));
        assert_eq!(t.route(2001, &both), Route::Engine(EngineKind::Candle));
        assert_eq!(t.route(8001, &both), Route::Overflow);
        // An engine not compiled in or not loaded is skipped.
        assert_eq!(t.route(1500, &[EngineKind::Candle]), Route::Engine(EngineKind::Candle));
        assert_eq!(t.route(100, &[EngineKind::Mlx]), Route::Overflow);
        // An engine where nothing fits is never chosen.
        let t = table(vec![entry(EngineKind::Llama, 0, 1.0, 100.0)]);
        assert_eq!(t.route(10, &[EngineKind::Llama]), Route::Overflow);
    }

    #[test]
    fn routes_among_three_engines() {
        // mlx: fastest per token but fits 1,000; llama fits 2,000; candle 8,000.
        let t = table(vec![
            entry(EngineKind::Llama, 2000, 3.0, 100.0),
            entry(EngineKind::Candle, 8000, 6.0, 60.0),
            entry(EngineKind::Mlx, 1000, 2.0, 120.0),
        ]);
        let all = EngineKind::ALL;
        assert_eq!(t.route(900, &all), Route::Engine(EngineKind::Mlx));
        assert_eq!(t.route(1001, &all), Route::Engine(EngineKind::Llama));
        assert_eq!(t.route(4000, &all), Route::Engine(EngineKind::Candle));
        assert_eq!(t.route(900, &[EngineKind::Llama, EngineKind::Candle]), Route::Engine(EngineKind::Llama));
        assert!(t.engine(EngineKind::Mlx).is_some());
    }

    #[test]
    fn stale_tables_are_detected() {
        let t = table(vec![entry(EngineKind::Llama, 2000, 3.0, 100.0)]);
        let same = t.model.clone();
        let versions = [(EngineKind::Llama, "v1".to_owned())];
        assert!(t.stale_reasons(&same, &t.machine, &versions).is_empty());
        let other = ModelFingerprint { sha256_first_mib: "cd".repeat(32), ..same.clone() };
        assert!(t.stale_reasons(&other, &t.machine, &versions)[0].contains("another model"));
        let m = Machine { cores: 16, ..t.machine.clone() };
        assert!(t.stale_reasons(&same, &m, &versions)[0].contains("another machine"));
        let r = t.stale_reasons(&same, &t.machine, &[(EngineKind::Llama, "v2".into())]);
        assert!(r[0].contains("v2") && r[0].contains("v1"), "{r:?}");
    }

    #[test]
    fn fits_thresholds_ladders_and_sizes() {
        let f = LinearFit::fit(&[(1000.0, 120.0), (2000.0, 140.0), (4000.0, 180.0)]).unwrap();
        assert!((f.slope - 0.02).abs() < 1e-9 && (f.intercept - 100.0).abs() < 1e-6 && f.max_rel_error < 1e-9);
        assert!(LinearFit::fit(&[(1.0, 1.0)]).is_none());
        // 1 GiB budget, 10% margin, 100 MB fixed, 20 kB per token.
        let ctx = max_ctx_for_budget(&fit(100e6, 20e3), 1 << 30, 0.1);
        assert!(fit(100e6, 20e3).predict(ctx as f64) * 1.1 <= (1u64 << 30) as f64);
        assert!(fit(100e6, 20e3).predict((ctx + 1) as f64) * 1.1 > (1u64 << 30) as f64);
        assert_eq!(max_ctx_for_budget(&fit(2e9, 1.0), 1 << 30, 0.1), 0);
        assert_eq!(ladder(8192, 128, None), vec![128, 256, 512, 1024, 2048, 4096, 8048]);
        assert_eq!(ladder(8192, 128, Some(1000)), vec![128, 256, 512, 1000]);
        assert_eq!(held_back(&[128, 256, 512, 1024]), Some(448));
        assert_eq!(parse_bytes("6GiB").unwrap(), 6 << 30);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 1_500_000_000);
        assert!(parse_bytes("6 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("-1GiB").is_err());
    }

    #[test]
    fn tables_round_trip_through_toml_and_bad_ones_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        let t = table(vec![entry(EngineKind::Llama, 2000, 3.0, 100.0)]);
        t.save(&path).unwrap();
        assert_eq!(RoutingTable::load(&path).unwrap(), t);
        let text = std::fs::read_to_string(&path).unwrap().replace("budget_bytes = ", "budget_bytes = \"x\" #");
        std::fs::write(&path, text).unwrap();
        let err = RoutingTable::load(&path).unwrap_err().to_string();
        assert!(err.contains("r.toml:") && err.contains("budget"), "{err}");
    }

    #[test]
    fn byte_sizes_print_as_they_parse() {
        for (n, text) in [(1u64 << 30, "1GiB"), (8 << 30, "8GiB"), (512 << 20, "512MiB"), (1000, "1000B")] {
            assert_eq!(Bytes(n).to_string(), text);
            assert_eq!(text.parse::<Bytes>(), Ok(Bytes(n)));
        }
    }
}
