//! Tests of the run log: torn-line recovery, bad lines, replay on resume.

use super::*;
use crate::optimize::proposers::demos::tests::record;
use crate::optimize::records::{DecisionEntry, ModelFingerprint};

fn header(task: &str) -> Header {
    Header {
        format: super::super::records::FORMAT_VERSION,
        promptloop_version: "test".into(),
        task: task.into(),
        task_dir: "/tasks/t".into(),
        task_sha256: "t".into(),
        model: ModelFingerprint { path: "/m.gguf".into(), sha256_first_mib: "m".into(), size: 1 },
        engine: engines::EngineConfig::new("/m.gguf"),
        constraint_schema_sha256: None,
        max_tokens: 8,
        engine_key: "k".into(),
        options: crate::config::RunConfig::for_tests(),
        started_at: None,
        baseline_prompt: None,
    }
}

fn eval(id: &str) -> EvalEntry {
    EvalEntry {
        prompt_sha256: "p".into(),
        instruction_sha256: "i".into(),
        split: "train".into(),
        engine_key: "k".into(),
        record: record(id, 0.5),
        logged_at: None,
    }
}

fn decision(it: usize) -> LogRecord {
    LogRecord::Decision(DecisionEntry {
        iteration: it,
        candidate: None,
        prompt_sha256: None,
        accepted: false,
        verdict: crate::optimize::Verdict::from_text(false, "stopped"),
        reason: "stopped".into(),
        train: None,
        dev: None,
    })
}

fn key(id: &str) -> CacheKey {
    CacheKey { instruction_sha256: "i".into(), example_id: id.into(), engine_key: "k".into() }
}

#[test]
fn a_torn_last_line_is_truncated_and_the_cache_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLog::create(dir.path(), header("t")).unwrap();
    log.add_eval(eval("a")).unwrap();
    log.add_eval(eval("b")).unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let good = std::fs::read(&path).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(br#"{"type":"eval","prompt_sha256":"p","instr"#);
    std::fs::write(&path, &torn).unwrap();

    let (log, warnings) = RunLog::resume(dir.path()).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("run.jsonl:4"), "{warnings:?}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert!(log.lookup(&key("a")).is_some() && log.lookup(&key("b")).is_some());
    assert_eq!(log.evals_logged(), 2);
    assert_eq!(log.evals_run(), 0);
}

#[test]
fn a_last_line_without_newline_is_kept_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLog::create(dir.path(), header("t")).unwrap();
    log.add_eval(eval("a")).unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    std::fs::write(&path, &bytes).unwrap();
    let (mut log, warnings) = RunLog::resume(dir.path()).unwrap();
    assert!(warnings.is_empty());
    log.add_eval(eval("b")).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn a_bad_middle_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLog::create(dir.path(), header("t")).unwrap();
    log.add_eval(eval("a")).unwrap();
    log.add_eval(eval("b")).unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{not json";
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let err = RunLog::resume(dir.path()).unwrap_err();
    assert!(err.is_input());
    assert!(err.to_string().contains("run.jsonl:2"), "{err}");
}

#[test]
fn create_refuses_an_existing_log_and_names_its_task() {
    let dir = tempfile::tempdir().unwrap();
    drop(RunLog::create(dir.path(), header("cuad-mini")).unwrap());
    let err = RunLog::create(dir.path(), header("other")).unwrap_err();
    assert!(err.is_input());
    let msg = err.to_string();
    assert!(msg.contains("cuad-mini") && msg.contains("--resume"), "{msg}");
}

#[test]
fn resume_replays_logged_records_and_detects_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = RunLog::create(dir.path(), header("t")).unwrap();
    log.emit(&decision(0)).unwrap();
    drop(log);
    let path = dir.path().join(LOG_FILE);
    let before = std::fs::read(&path).unwrap();
    let (mut log, _) = RunLog::resume(dir.path()).unwrap();
    log.emit(&decision(0)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), before, "a replayed record is not written twice");
    log.emit(&decision(1)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);

    let (mut log, _) = RunLog::resume(dir.path()).unwrap();
    let err = log.emit(&decision(5)).unwrap_err();
    assert!(matches!(err, LogError::Diverged { line: 2, .. }), "{err}");
}
