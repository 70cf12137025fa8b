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
    Command::new(env!("CARGO_BIN_EXE_promptloop")).args(args).current_dir(repo()).output().expect("promptloop runs")
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

/// A self-contained copy of cuad-mini in a temp dir, for breaking one file: its records, read
/// from the data root as the task selects them, written as `train.jsonl`, `dev.jsonl` and
/// `test.jsonl` beside a `task.toml` that names those files instead of the dataset.
pub fn task_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let task = harness::task::Task::load(&cuad_mini()).unwrap_or_else(|e| panic!("{e}"));
    for f in ["schema.json", "prompt.txt"] {
        std::fs::copy(cuad_mini().join(f), dir.path().join(f)).expect("copy task file");
    }
    let toml_text = std::fs::read_to_string(cuad_mini().join("task.toml")).expect("task.toml");
    let mut toml: toml::Table = toml_text.parse().expect("task.toml parses");
    toml.remove("data");
    let mut splits = toml::Table::new();
    for (name, split) in &task.splits {
        let file = format!("{name}.jsonl");
        let lines: Vec<String> = split
            .examples
            .iter()
            .map(|e| serde_json::json!({"id": e.id, "text": e.text, "expected": e.expected}).to_string())
            .collect();
        std::fs::write(dir.path().join(&file), lines.join("\n") + "\n").expect("write split");
        splits.insert(name.clone(), toml::Value::String(file));
    }
    toml.insert("splits".into(), toml::Value::Table(splits));
    std::fs::write(dir.path().join("task.toml"), toml::to_string(&toml).expect("task.toml")).expect("write task.toml");
    dir
}

/// The binary with the optimizer environment cleared, then `envs` set.
pub fn command_env(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptloop"));
    cmd.args(args).current_dir(repo());
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"] {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    cmd
}

pub fn promptloop_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    command_env(args, envs).output().expect("promptloop runs")
}

/// Lines of a run's log so far (0 when it does not exist yet).
pub fn log_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("run.jsonl")).map_or(0, |t| t.lines().count())
}

/// A pseudo-random number in `lo..=hi` from the clock, printed so a failure can be replayed.
pub fn random_in(lo: usize, hi: usize, what: &str) -> usize {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as usize);
    let v = lo + nanos % (hi - lo + 1);
    eprintln!("random {what}: {v} (of {lo}..={hi})");
    v
}
