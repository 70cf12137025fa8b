//! `promptloop report`: one self-contained HTML file (inline CSS and SVG plots drawn with
//! plotters, nothing fetched when it is opened) or a Markdown summary, from an optimize run
//! directory or from a calibration routing table.
//!
//! A run report reads `run.jsonl` ([`load_run`]), works out what the run did ([`analyze`]):
//! the score of every candidate over the iterations on train and dev, baseline against best per
//! field and per failure class, latency and memory against input length (with the routing
//! table's probes when one exists), the slowest examples; then renders it ([`html`],
//! [`markdown`]). A routing table renders on its own ([`html::table_report`], [`markdown::table_report`]).

pub mod analysis;
pub mod diff;
pub mod frontier;
pub mod html;
pub mod markdown;
pub mod plots;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::calibrate::{RoutingTable, TableError};
use crate::optimize::log::{self, LogError};
use crate::optimize::records::{CandidateEntry, DecisionEntry, EvalEntry, FinalEntry, Header, LogRecord, ProposalEntry};
use crate::optimize::{BEST_PROMPT_FILE, LOG_FILE};

pub use analysis::{analyze, Analysis};

/// Errors of `promptloop report`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("{0}: not a run directory (no {LOG_FILE} there; `promptloop optimize --out DIR` makes one) and not a routing table (.toml)")]
    NotARun(PathBuf),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

impl ReportError {
    /// Whether the user's input is at fault (a wrong path, a corrupt log or table).
    pub fn is_input(&self) -> bool {
        match self {
            ReportError::Missing(_) | ReportError::NotARun(_) => true,
            ReportError::Log(e) => e.is_input(),
            ReportError::Table(e) => matches!(e, TableError::Parse { .. }),
            ReportError::Io { .. } => false,
        }
    }
}

/// What a report is made from.
#[derive(Debug)]
pub enum Source {
    /// A run directory.
    Run(PathBuf),
    /// A routing table written by `promptloop calibrate`.
    Table(PathBuf),
}

/// What `path` is: a run directory (or its `run.jsonl`), or a routing table (`.toml`).
pub fn source(path: &Path) -> Result<Source, ReportError> {
    let meta = std::fs::metadata(path).map_err(|_| ReportError::Missing(path.to_path_buf()))?;
    if meta.is_dir() {
        if path.join(LOG_FILE).is_file() {
            return Ok(Source::Run(path.to_path_buf()));
        }
        return Err(ReportError::NotARun(path.to_path_buf()));
    }
    if path.file_name().is_some_and(|n| n == LOG_FILE) {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        return Ok(Source::Run(dir.to_path_buf()));
    }
    if path.extension().is_some_and(|e| e == "toml") {
        return Ok(Source::Table(path.to_path_buf()));
    }
    Err(ReportError::NotARun(path.to_path_buf()))
}

/// A run directory read back.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub header: Header,
    pub evals: Vec<EvalEntry>,
    pub proposals: Vec<ProposalEntry>,
    pub candidates: Vec<CandidateEntry>,
    pub decisions: Vec<DecisionEntry>,
    pub final_entry: Option<FinalEntry>,
    /// `best_prompt.txt`, when present.
    pub best_prompt_file: Option<String>,
    /// When the log was last written (the run's last record).
    pub last_write: Option<SystemTime>,
    /// What reading found that the reader should know (a torn last line).
    pub warnings: Vec<String>,
}

/// Reads `dir/run.jsonl` (and `best_prompt.txt`). A torn last line (a run killed while
/// writing) is left out with a warning; a bad line elsewhere is an error naming it.
pub fn load_run(dir: &Path) -> Result<RunData, ReportError> {
    let path = dir.join(LOG_FILE);
    if !dir.is_dir() {
        return Err(ReportError::Missing(dir.to_path_buf()));
    }
    if !path.is_file() {
        return Err(ReportError::NotARun(dir.to_path_buf()));
    }
    let bytes = std::fs::read(&path).map_err(|error| ReportError::Io { path: path.clone(), error })?;
    let last_write = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    parse_run(dir, &path, &bytes, last_write)
}

/// [`load_run`] on bytes already read.
pub fn parse_run(dir: &Path, path: &Path, bytes: &[u8], last_write: Option<SystemTime>) -> Result<RunData, ReportError> {
    let back = log::parse(path, bytes)?;
    let mut warnings = Vec::new();
    if let Some(line) = back.torn_line {
        warnings.push(format!(
            "{}:{line}: the last line is cut off (the run stopped while writing it, or is still running); it is left out",
            path.display()
        ));
    }
    let mut records = back.records.into_iter();
    let header = match records.next() {
        Some((_, LogRecord::Header(h))) => *h,
        Some((line, other)) => {
            return Err(LogError::BadHeader {
                path: path.to_path_buf(),
                message: format!("line {line} is a `{}` record; the first record must be the header", other.kind()),
            }
            .into())
        }
        None => {
            return Err(LogError::BadHeader { path: path.to_path_buf(), message: "no header record (empty log)".into() }.into())
        }
    };
    let mut run = RunData {
        dir: dir.to_path_buf(),
        header,
        evals: Vec::new(),
        proposals: Vec::new(),
        candidates: Vec::new(),
        decisions: Vec::new(),
        final_entry: None,
        best_prompt_file: std::fs::read_to_string(dir.join(BEST_PROMPT_FILE)).ok(),
        last_write,
        warnings,
    };
    for (line, rec) in records {
        match rec {
            LogRecord::Header(_) => {
                return Err(LogError::BadLine { path: path.to_path_buf(), line, message: "a second header record".into() }.into())
            }
            LogRecord::Eval(e) => run.evals.push(*e),
            LogRecord::Proposal(p) => run.proposals.push(*p),
            LogRecord::Candidate(c) => run.candidates.push(c),
            LogRecord::Decision(d) => run.decisions.push(d),
            LogRecord::Final(f) => run.final_entry = Some(f),
        }
    }
    Ok(run)
}

/// The routing table a run's report shows next to the run's own speed: `explicit` when given,
/// else the model's default table when it exists. A table that does not load is a warning.
pub fn routing_for_run(run: &RunData, explicit: Option<&Path>) -> Result<Option<(PathBuf, RoutingTable)>, ReportError> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(ReportError::Missing(p.to_path_buf()));
        }
        return Ok(Some((p.to_path_buf(), RoutingTable::load(p)?)));
    }
    let p = crate::calibrate::default_table_path(&run.header.model);
    if !p.is_file() {
        return Ok(None);
    }
    Ok(RoutingTable::load(&p).ok().map(|t| (p, t)))
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as MiB.
pub fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// Seconds as `1h 02m`, `3m 05s` or `4.2 s`.
pub fn duration_text(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{secs:.1} s")
    }
}
