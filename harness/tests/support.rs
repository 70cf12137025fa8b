//! Helpers: run the binary, find the repository's tasks, make broken tasks in temp dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cuad_mini() -> PathBuf {
    repo().join("evals/cuad-mini")
}

/// Fails (never skips) when the model is not installed; the message names the set-up command.
pub fn require_model() {
    if let Err(e) = harness::models::resolve("smollm2-135m") {
        panic!("{e}");
    }
}

pub fn promptloop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptloop"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promptloop runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The summary object `--json` prints as the last stdout line.
pub fn summary(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_else(|| panic!("no stdout; stderr: {}", stderr(out)));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

pub fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("records file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record is JSON"))
        .collect()
}

/// A copy of cuad-mini in a temp dir, for breaking one file.
pub fn task_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in ["task.toml", "schema.json", "prompt.txt", "train.jsonl", "dev.jsonl", "test.jsonl"] {
        std::fs::copy(cuad_mini().join(f), dir.path().join(f)).expect("copy task file");
    }
    dir
}
