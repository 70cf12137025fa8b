//! `run.jsonl`: the append-only run log, its recovery after a crash, and replay on resume.
//!
//! Every record is one line, written whole, flushed and fsync'd before the loop goes on. On
//! resume the log is read back: a last line that does not parse (a write cut off by a kill) is
//! truncated away with a warning; a bad line anywhere else is an error naming it. `eval`
//! records refill the cache; the loop then runs again from the start, every eval found in the
//! cache, and the `candidate`/`decision`/`final` records it emits are checked against the ones
//! already logged instead of being written twice, so the finished log reads as if the run had
//! never stopped.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::cache::{CacheKey, EvalCache};
use super::records::{EvalEntry, Header, LogRecord, ProposalEntry};
use crate::eval::ExampleRecord;

/// The log's file name inside a run directory.
pub const LOG_FILE: &str = "run.jsonl";

/// Errors reading or writing the run log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{path}:{line}: not a run record: {message}")]
    BadLine { path: PathBuf, line: usize, message: String },
    #[error("{path}: {message}")]
    BadHeader { path: PathBuf, message: String },
    #[error("{path} already holds a run of task `{task}`; continue it with `promptloop optimize --resume {dir}` or pick another --out", dir = path.parent().unwrap_or(Path::new(".")).display())]
    Exists { path: PathBuf, task: String },
    #[error("{path}:{line}: the resumed run wrote a different `{kind}` record than the log holds (was the model or the task changed?)")]
    Diverged { path: PathBuf, line: usize, kind: &'static str },
    #[error("serializing a `{kind}` record: {error}")]
    Serialize { kind: &'static str, error: serde_json::Error },
}

impl LogError {
    /// Whether the user's input is at fault (a bad or foreign run directory), not the machine.
    pub fn is_input(&self) -> bool {
        matches!(self, LogError::BadLine { .. } | LogError::BadHeader { .. } | LogError::Exists { .. })
    }
}

/// The records of a log read back, and what recovery found.
#[derive(Debug)]
pub struct ReadBack {
    /// Records with their 1-based line numbers.
    pub records: Vec<(usize, LogRecord)>,
    /// Byte length of the good part (every complete, parsed line).
    pub good_len: u64,
    /// Line number of a torn last line that was dropped.
    pub torn_line: Option<usize>,
    /// The last good line lacks its newline.
    pub missing_newline: bool,
}

/// Parses a log's bytes. A last line that does not parse is reported as torn; any other bad
/// line is an error. Blank lines are skipped.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<ReadBack, LogError> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut good_len = 0u64;
    let mut missing_newline = false;
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let line_no = i + 1;
        let end = offset + raw.len();
        offset = end;
        let content = raw.strip_suffix(b"\n").unwrap_or(raw);
        if content.iter().all(u8::is_ascii_whitespace) {
            good_len = end as u64;
            continue;
        }
        match serde_json::from_slice::<LogRecord>(content) {
            Ok(rec) => {
                records.push((line_no, rec));
                good_len = end as u64;
                missing_newline = !raw.ends_with(b"\n");
            }
            Err(_) if i + 1 == lines.len() => {
                return Ok(ReadBack { records, good_len, torn_line: Some(line_no), missing_newline });
            }
            Err(e) => {
                return Err(LogError::BadLine { path: path.to_path_buf(), line: line_no, message: e.to_string() });
            }
        }
    }
    Ok(ReadBack { records, good_len, torn_line: None, missing_newline })
}

/// An open run log: appends records, holds the eval cache, and replays on resume.
#[derive(Debug)]
pub struct RunLog {
    path: PathBuf,
    file: fs_err::File,
    header: Header,
    cache: EvalCache,
    /// Optimizer calls by request hash.
    proposals: std::collections::HashMap<String, ProposalEntry>,
    /// Logged `candidate`/`decision`/`final` records not yet re-emitted, with their lines.
    replay: VecDeque<(usize, LogRecord)>,
    evals_logged: usize,
    evals_run: usize,
}

impl RunLog {
    /// Starts `dir/run.jsonl` with `header`. Fails when the file already exists.
    pub fn create(dir: &Path, header: Header) -> Result<Self, LogError> {
        let path = dir.join(LOG_FILE);
        if path.exists() {
            let task = read_header(&path).map_or_else(|_| "?".to_owned(), |h| h.task);
            return Err(LogError::Exists { path, task });
        }
        fs_err::create_dir_all(dir)?;
        let file = fs_err::OpenOptions::new().create_new(true).append(true).open(&path)?;
        let mut log = RunLog {
            path,
            file,
            header: header.clone(),
            cache: EvalCache::default(),
            proposals: std::collections::HashMap::new(),
            replay: VecDeque::new(),
            evals_logged: 0,
            evals_run: 0,
        };
        log.append(&LogRecord::Header(Box::new(header)))?;
        Ok(log)
    }

    /// Opens `dir/run.jsonl` to continue it: recovers a torn last line (truncating it; the
    /// warning is returned), refills the cache and queues the records to replay.
    pub fn resume(dir: &Path) -> Result<(Self, Vec<String>), LogError> {
        let path = dir.join(LOG_FILE);
        let bytes = fs_err::read(&path)?;
        let back = parse(&path, &bytes)?;
        let mut warnings = Vec::new();
        let mut records = back.records.into_iter();
        let header = match records.next() {
            Some((_, LogRecord::Header(h))) => *h,
            Some((line, other)) => {
                return Err(LogError::BadHeader {
                    path,
                    message: format!("line {line} is a `{}` record; the first record must be the header", other.kind()),
                })
            }
            None => return Err(LogError::BadHeader { path, message: "no header record (empty log)".into() }),
        };
        let file = fs_err::OpenOptions::new().append(true).open(&path)?;
        if let Some(line) = back.torn_line {
            warnings.push(format!("{}:{line}: dropped a torn last line (the run stopped while writing it)", path.display()));
            file.file().set_len(back.good_len)?;
        }
        let mut log = RunLog {
            path,
            file,
            header,
            cache: EvalCache::default(),
            proposals: std::collections::HashMap::new(),
            replay: VecDeque::new(),
            evals_logged: 0,
            evals_run: 0,
        };
        if back.missing_newline {
            log.file.write_all(b"\n")?;
            log.file.sync_data()?;
        }
        for (line, rec) in records {
            match rec {
                LogRecord::Header(_) => {
                    return Err(LogError::BadLine { path: log.path, line, message: "a second header record".into() })
                }
                LogRecord::Eval(e) => {
                    log.evals_logged += 1;
                    log.cache.insert(key_of(&e), e.record);
                }
                LogRecord::Proposal(p) => {
                    log.proposals.insert(p.request_sha256.clone(), *p);
                }
                other => log.replay.push_back((line, other)),
            }
        }
        Ok((log, warnings))
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cached record.
    pub fn lookup(&self, key: &CacheKey) -> Option<&ExampleRecord> {
        self.cache.get(key)
    }

    /// `eval` records in the log (read back or written).
    pub fn evals_logged(&self) -> usize {
        self.evals_logged
    }

    /// Evals run by this process.
    pub fn evals_run(&self) -> usize {
        self.evals_run
    }

    /// Logs a new eval and caches it.
    pub fn add_eval(&mut self, entry: EvalEntry) -> Result<(), LogError> {
        let key = key_of(&entry);
        let rec = LogRecord::Eval(Box::new(entry));
        self.append(&rec)?;
        if let LogRecord::Eval(e) = rec {
            self.cache.insert(key, e.record);
        }
        self.evals_logged += 1;
        self.evals_run += 1;
        Ok(())
    }

    /// A logged optimizer call.
    pub fn proposal(&self, request_sha256: &str) -> Option<&ProposalEntry> {
        self.proposals.get(request_sha256)
    }

    /// Logs a new optimizer call (before its candidate is evaluated).
    pub fn add_proposal(&mut self, entry: ProposalEntry) -> Result<(), LogError> {
        let rec = LogRecord::Proposal(Box::new(entry));
        self.append(&rec)?;
        if let LogRecord::Proposal(p) = rec {
            self.proposals.insert(p.request_sha256.clone(), *p);
        }
        Ok(())
    }

    /// Writes a `candidate`, `decision` or `final` record, unless the log already holds it
    /// (resume): then it must be the same record, or the run has diverged.
    pub fn emit(&mut self, rec: &LogRecord) -> Result<(), LogError> {
        match self.replay.pop_front() {
            None => self.append(rec),
            Some((line, logged)) => {
                let same = logged.kind() == rec.kind() && serde_json::to_value(&logged).ok() == serde_json::to_value(rec).ok();
                if same {
                    Ok(())
                } else {
                    Err(LogError::Diverged { path: self.path.clone(), line, kind: rec.kind() })
                }
            }
        }
    }

    fn append(&mut self, rec: &LogRecord) -> Result<(), LogError> {
        let mut line = serde_json::to_vec(rec).map_err(|error| LogError::Serialize { kind: rec.kind(), error })?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.file.sync_data()?;
        Ok(())
    }
}

/// The header of an existing log.
pub fn read_header(path: &Path) -> Result<Header, LogError> {
    let bytes = fs_err::read(path)?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<LogRecord>(first) {
        Ok(LogRecord::Header(h)) => Ok(*h),
        Ok(other) => Err(LogError::BadHeader { path: path.into(), message: format!("line 1 is a `{}` record", other.kind()) }),
        Err(e) => Err(LogError::BadLine { path: path.into(), line: 1, message: e.to_string() }),
    }
}

fn key_of(e: &EvalEntry) -> CacheKey {
    CacheKey {
        instruction_sha256: e.instruction_sha256.clone(),
        example_id: e.record.id.clone(),
        engine_key: e.engine_key.clone(),
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
