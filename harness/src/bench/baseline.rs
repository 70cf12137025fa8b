//! Saved benchmark results (JSON baselines) and the direction-aware comparison with a new run:
//! a rate regresses when it drops, a cost when it rises, beyond a relative threshold.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use engines::memory::Machine;
use engines::EngineKind;
use serde::{Deserialize, Serialize};

use super::{Better, Group, Metric, Plan};
use crate::optimize::records::ModelFingerprint;

/// The baseline file format this build writes and reads.
pub const FORMAT: u32 = 1;

/// A saved run: the metrics and the facts needed to judge whether a comparison is fair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    #[serde(default = "format_one")]
    pub format: u32,
    #[serde(default)]
    pub name: String,
    /// Absent in a hand-written baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    pub metrics: Vec<Metric>,
}

fn format_one() -> u32 {
    FORMAT
}

/// Where and on what a run was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    pub promptloop_version: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub os: String,
    pub arch: String,
    pub machine: Machine,
    /// 1-minute load average when the run started (Linux): high means other work competed.
    pub load_average: Option<f64>,
    /// `None` when only CPU-only groups ran.
    pub model: Option<ModelFingerprint>,
    pub engines: Vec<EngineFacts>,
    pub plan: Plan,
    pub repeats: usize,
}

/// One engine a run measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineFacts {
    pub kind: EngineKind,
    pub backend_version: String,
    pub model_desc: String,
    pub threads: usize,
}

impl Facts {
    /// Facts about this process and machine, now.
    pub fn current(model: Option<ModelFingerprint>, engines: Vec<EngineFacts>, plan: Plan, repeats: usize) -> Facts {
        Facts {
            promptloop_version: env!("CARGO_PKG_VERSION").into(),
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            machine: Machine::current(),
            load_average: load_average(),
            model,
            engines,
            plan,
            repeats,
        }
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Errors reading a baseline; each names the file, and the line and field where known.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("baseline {}:{line}:{column}: field `{field}`: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, field: String, message: String },
    #[error("baseline {}: field `{field}`: {message}", path.display())]
    Invalid { path: PathBuf, field: String, message: String },
}

impl Baseline {
    /// Reads and checks a baseline file.
    ///
    /// # Errors
    /// A missing or unreadable file, malformed JSON (line, column and field), a newer format,
    /// a metric value that is not a positive number, a duplicate metric name.
    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = fs_err::read_to_string(path).map_err(|source| BaselineError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// # Errors
    /// As [`Baseline::load`], minus reading.
    pub fn parse(text: &str, path: &Path) -> Result<Baseline, BaselineError> {
        let de = &mut serde_json::Deserializer::from_str(text.trim_start_matches('\u{feff}'));
        let b: Baseline = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let full = inner.to_string();
            let suffix = format!(" at line {} column {}", inner.line(), inner.column());
            BaselineError::Parse {
                path: path.to_path_buf(),
                line: inner.line(),
                column: inner.column(),
                field: e.path().to_string(),
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
            }
        })?;
        let invalid = |field: String, message: String| BaselineError::Invalid { path: path.to_path_buf(), field, message };
        if b.format > FORMAT {
            return Err(invalid(
                "format".into(),
                format!("format {} is newer than this promptloop reads ({FORMAT}); upgrade promptloop", b.format),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in b.metrics.iter().enumerate() {
            if !(m.value.is_finite() && m.value > 0.0) {
                return Err(invalid(
                    format!("metrics[{i}].value"),
                    format!("{} of `{}` is not a positive number", m.value, m.name),
                ));
            }
            if m.name.trim().is_empty() {
                return Err(invalid(format!("metrics[{i}].name"), "empty metric name".into()));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(invalid(format!("metrics[{i}].name"), format!("`{}` appears twice", m.name)));
            }
        }
        Ok(b)
    }

    /// Writes the baseline as pretty JSON, creating the directory.
    ///
    /// # Errors
    /// Any I/O error, naming the path.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs_err::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        fs_err::write(path, text)
    }
}

/// `NAME` means `DIR/NAME.json`; anything with a path separator or ending in `.json` is a path.
pub fn resolve(dir: &Path, name_or_path: &str) -> PathBuf {
    if is_path(name_or_path) {
        PathBuf::from(name_or_path)
    } else {
        dir.join(format!("{name_or_path}.json"))
    }
}

fn is_path(s: &str) -> bool {
    s.contains('/')
        || s.contains(std::path::MAIN_SEPARATOR)
        || Path::new(s).extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Checks a `--save`/`--baseline` argument: a path, or a plain name of letters, digits, `.`,
/// `_` and `-`.
///
/// # Errors
/// An empty name or one with other characters.
pub fn check_name(s: &str) -> Result<(), String> {
    if is_path(s) {
        return Ok(());
    }
    let ok = !s.is_empty() && !s.starts_with('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a baseline name (letters, digits, . _ -) or a path to a .json file"))
    }
}

/// Parses `--threshold`: a percentage (`10%`) or a fraction below 1 (`0.1`).
///
/// # Errors
/// Anything else, including negative values and a bare number of 1 or more.
pub fn parse_threshold(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, percent) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let bad = || format!("`{s}` is not a threshold: write a percentage (10%) or a fraction (0.1)");
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    if percent {
        Ok(v / 100.0)
    } else if v >= 1.0 {
        Err(format!("`{s}` is not a threshold: a fraction must be below 1 (did you mean {s}%?)"))
    } else {
        Ok(v)
    }
}

/// The outcome for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the threshold.
    Ok,
    /// Better than the baseline beyond the threshold.
    Improved,
    /// Worse than the baseline beyond the threshold.
    Regressed,
    /// In the baseline, in a group that ran, but not measured now.
    Missing,
    /// Measured now, not in the baseline.
    New,
    /// The units differ: not compared.
    UnitChanged,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Improved => "improved",
            Verdict::Regressed => "REGRESSED",
            Verdict::Missing => "missing now",
            Verdict::New => "new",
            Verdict::UnitChanged => "unit changed",
        }
    }
}

/// Direction-aware: the relative change `new / old - 1`, counted as worse when a higher-better
/// metric drops or a lower-better one rises, is a regression beyond `threshold` and an
/// improvement beyond it the other way.
pub fn verdict(better: Better, old: f64, new: f64, threshold: f64) -> Verdict {
    let change = new / old - 1.0;
    let worse = match better {
        Better::Higher => -change,
        Better::Lower => change,
    };
    if worse > threshold {
        Verdict::Regressed
    } else if worse < -threshold {
        Verdict::Improved
    } else {
        Verdict::Ok
    }
}

/// One row of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub better: Better,
    pub old: Option<f64>,
    pub new: Option<f64>,
    /// `new / old`.
    pub ratio: Option<f64>,
    pub verdict: Verdict,
}

/// A new run against a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub threshold: f64,
    pub rows: Vec<Row>,
    /// Baseline metrics of groups that did not run (`--only`): not compared.
    pub skipped: Vec<String>,
    /// Differences in machine, model, engine or plan that make ratios less meaningful.
    pub notes: Vec<String>,
}

impl Comparison {
    /// Compares `new` (measured for `groups`) with `old`.
    pub fn new(old: &Baseline, new: &[Metric], groups: &[Group], facts: Option<&Facts>, threshold: f64) -> Comparison {
        let mut rows = Vec::new();
        for m in new {
            let row = |old_value: Option<f64>, verdict| Row {
                name: m.name.clone(),
                unit: m.unit.clone(),
                better: m.better,
                old: old_value,
                new: Some(m.value),
                ratio: old_value.map(|o| m.value / o),
                verdict,
            };
            rows.push(match old.metrics.iter().find(|o| o.name == m.name) {
                None => row(None, Verdict::New),
                Some(o) if o.unit != m.unit || o.better != m.better => row(Some(o.value), Verdict::UnitChanged),
                Some(o) => row(Some(o.value), verdict(m.better, o.value, m.value, threshold)),
            });
        }
        let mut skipped = Vec::new();
        for o in old.metrics.iter().filter(|o| !new.iter().any(|m| m.name == o.name)) {
            if groups.contains(&o.group) {
                rows.push(Row {
                    name: o.name.clone(),
                    unit: o.unit.clone(),
                    better: o.better,
                    old: Some(o.value),
                    new: None,
                    ratio: None,
                    verdict: Verdict::Missing,
                });
            } else {
                skipped.push(o.name.clone());
            }
        }
        let notes = match (&old.facts, facts) {
            (Some(a), Some(b)) => differences(a, b),
            _ => vec!["the baseline records no machine or model facts".into()],
        };
        Comparison { threshold, rows, skipped, notes }
    }

    pub fn regressions(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Regressed)
    }

    /// The old / new / ratio / verdict table, with the notes and skipped metrics after it.
    pub fn table(&self, baseline: &str) -> String {
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6);
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), number);
        let mut s = format!(
            "{:<width$}  {:>10}  {:>10}  {:<9} {:>7}  {:>8}  verdict\n",
            "metric", "old", "new", "unit", "ratio", "change"
        );
        for r in &self.rows {
            let change = r.ratio.map_or_else(|| "-".to_owned(), |x| format!("{:+.1}%", (x - 1.0) * 100.0));
            let ratio = r.ratio.map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
            let _ = writeln!(
                s,
                "{:<width$}  {:>10}  {:>10}  {:<9} {:>7}  {:>8}  {}",
                r.name,
                opt(r.old),
                opt(r.new),
                r.unit,
                ratio,
                change,
                r.verdict.as_str()
            );
        }
        let regressed = self.regressions().count();
        let _ = writeln!(
            s,
            "{regressed} of {} metrics regressed beyond {}% against {baseline} (tok/s and scores/s: higher is better; ms: lower is better)",
            self.rows.len(),
            self.threshold * 100.0
        );
        if !self.skipped.is_empty() {
            let _ = writeln!(s, "not run (--only): {}", self.skipped.join(", "));
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// Why two runs' figures may not be comparable.
fn differences(old: &Facts, new: &Facts) -> Vec<String> {
    let mut notes = Vec::new();
    if old.machine != new.machine {
        notes.push(format!(
            "other machine: baseline {} ({} cores), now {} ({} cores)",
            old.machine.cpu, old.machine.cores, new.machine.cpu, new.machine.cores
        ));
    }
    if let (Some(a), Some(b)) = (&old.model, &new.model) {
        if a.sha256_first_mib != b.sha256_first_mib || a.size != b.size {
            notes.push(format!("other model: baseline {}, now {}", a.path.display(), b.path.display()));
        }
    }
    for e in &new.engines {
        if let Some(o) = old.engines.iter().find(|o| o.kind == e.kind) {
            if o.backend_version != e.backend_version {
                notes.push(format!("{}: backend {} in the baseline, {} now", e.kind, o.backend_version, e.backend_version));
            }
            if o.threads != e.threads {
                notes.push(format!("{}: {} threads in the baseline, {} now", e.kind, o.threads, e.threads));
            }
        }
    }
    let changed = changed_keys(&old.plan, &new.plan);
    if !changed.is_empty() {
        notes.push(format!("workload sizes differ from the baseline's: {}", changed.join(", ")));
    }
    for (which, f) in [("baseline", old), ("this run", new)] {
        if let Some(load) = f.load_average.filter(|&l| l > f.machine.cores as f64 * 0.5) {
            notes.push(format!("{which} started with load average {load:.2} on {} cores: other work competed", f.machine.cores));
        }
    }
    notes
}

/// Top-level keys whose values differ between two serialisations.
fn changed_keys<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) => {
            a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect()
        }
        _ => Vec::new(),
    }
}

/// The metric / value / unit table of a run.
pub fn metrics_table(metrics: &[Metric]) -> String {
    let width = metrics.iter().map(|m| m.name.len()).max().unwrap_or(0).max(6);
    let mut s = format!("{:<width$}  {:>10}  {:<9} {:<7} {:>21}\n", "metric", "value", "unit", "better", "min .. max");
    for m in metrics {
        let spread = match (m.min, m.max) {
            (Some(a), Some(b)) => format!("{} .. {}", number(a), number(b)),
            _ => "-".into(),
        };
        let _ = writeln!(s, "{:<width$}  {:>10}  {:<9} {:<7} {:>21}", m.name, number(m.value), m.unit, m.better, spread);
    }
    s
}

/// Four significant digits or so.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
