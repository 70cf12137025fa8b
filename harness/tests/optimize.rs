//! `promptloop optimize` end to end on the real SmolLM2-135M, kept short: 4 train and 3 dev
//! examples, one iteration of two one-demo candidates, 2 test examples.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{cuad_mini, promptloop, random_in, records, require_model, stderr, task_copy};

const SHORT: [&str; 12] =
    ["--limit-train", "4", "--limit-dev", "3", "--limit-test", "2", "--max-iterations", "1", "--candidates", "2", "--demos", "1"];

fn optimize_args<'a>(task: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec!["optimize", "--task", task, "--optimizer", "none", "--proposer", "demos", "--out", out, "--json"];
    args.extend(SHORT);
    args
}

fn of_type<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == kind).collect()
}

fn log_of(dir: &Path) -> Vec<Value> {
    records(&dir.join("run.jsonl"))
}

/// The records that depend on scores only: what a resumed run must reproduce exactly.
fn outcome(recs: &[Value]) -> Vec<Value> {
    recs.iter().filter(|r| ["candidate", "decision", "final"].contains(&r["type"].as_str().unwrap_or(""))).cloned().collect()
}

/// One uninterrupted run, checked; its resume redoes nothing; then a run killed part way and
/// resumed ends with the same candidates, decisions and final record.
#[test]
fn run_log_resume_and_kill_resume_match_an_uninterrupted_run() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let task = cuad_mini();
    let task = task.to_str().unwrap();

    // 1. An uninterrupted run.
    let a = tmp.path().join("a");
    let out = promptloop(&optimize_args(task, a.to_str().unwrap()));
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = log_of(&a);
    assert_eq!(recs[0]["type"], "header");
    assert_eq!(recs[0]["task"], "cuad-mini");
    assert_eq!(recs[0]["model"]["sha256_first_mib"].as_str().map(str::len), Some(64));
    assert_eq!(of_type(&recs, "candidate").len(), 2);
    assert_eq!(of_type(&recs, "decision").len(), 1);
    assert_eq!(of_type(&recs, "final").len(), 1);
    assert_eq!(recs.last().unwrap()["type"], "final");
    let evals = of_type(&recs, "eval");
    // baseline: 4 train + 3 dev + 2 test; each candidate's demo example sees the baseline
    // instruction (cached), so at most 3 new train evals per candidate.
    assert!(evals.len() >= 4 + 3 + 2 + 3 && evals.len() <= 4 + 3 + 2 + 2 * 3 + 3 + 2, "{}", evals.len());
    for e in &evals {
        assert!(e["record"]["fields"].as_array().is_some_and(|f| f.len() == 4), "{e}");
        assert!(["train", "dev", "test"].contains(&e["split"].as_str().unwrap()));
    }
    for c in of_type(&recs, "candidate") {
        let ids = c["demo_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1);
        // Demos come from train only (the first 4 train examples here).
        let train_ids: Vec<&str> =
            evals.iter().filter(|e| e["split"] == "train").map(|e| e["record"]["id"].as_str().unwrap()).collect();
        assert!(train_ids.contains(&ids[0].as_str().unwrap()), "{c}");
        assert_eq!(c["scores"].as_array().unwrap().len(), 4);
    }
    let best = std::fs::read_to_string(a.join("best_prompt.txt")).unwrap();
    assert!(!best.trim().is_empty());
    let fin = &of_type(&recs, "final")[0];
    assert_eq!(fin["rows"].as_array().unwrap().len(), 3, "{fin}");

    // 2. Resuming a finished run evaluates nothing and adds nothing.
    let out = promptloop(&["optimize", "--resume", a.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = log_of(&a);
    assert_eq!(again.len(), recs.len());
    assert_eq!(of_type(&again, "eval").len(), evals.len());
    let last: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["evals_run"], 0, "{last}");

    // 3. Killed part way (SIGKILL), then resumed: same outcome records as the run above.
    let b = tmp.path().join("b");
    kill_part_way(&optimize_args(task, b.to_str().unwrap()), &b, recs.len());
    let out = promptloop(&["optimize", "--resume", b.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = log_of(&b);
    assert_eq!(outcome(&resumed), outcome(&recs));
    assert_eq!(of_type(&resumed, "eval").len(), evals.len(), "no eval done twice");
    assert_eq!(std::fs::read_to_string(b.join("best_prompt.txt")).unwrap(), best);
}

/// A Pareto run (`--search pareto`: iteration 1's parent drawn from the frontier, seeded) of
/// the offline proposers on the real model, killed with SIGKILL at a random record and resumed,
/// ends with the same candidates, decisions and final record as the same run uninterrupted.
#[test]
fn a_killed_pareto_run_resumes_to_the_same_log() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let task = cuad_mini();
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["optimize", "--task", task.to_str().unwrap(), "--out", out.to_str().unwrap()]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for s in [
            "--optimizer",
            "none",
            "--proposer",
            "edits,demos",
            "--search",
            "pareto",
            "--limit-train",
            "3",
            "--limit-dev",
            "2",
            "--limit-test",
            "1",
            "--max-iterations",
            "2",
            "--candidates",
            "1",
            "--demos",
            "1",
            "--json",
        ] {
            a.push(s.to_owned());
        }
        a
    };
    let whole = tmp.path().join("whole");
    let a = args(&whole);
    let out = promptloop(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = log_of(&whole);
    assert_eq!(recs[0]["options"]["search"], "pareto", "{}", recs[0]);
    assert_eq!(of_type(&recs, "decision").len(), 2);
    let evals = of_type(&recs, "eval").len();

    let killed = tmp.path().join("killed");
    kill_part_way(&args(&killed), &killed, recs.len());
    let out = promptloop(&["optimize", "--resume", killed.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resumed = log_of(&killed);
    assert_eq!(outcome(&resumed), outcome(&recs));
    assert_eq!(of_type(&resumed, "eval").len(), evals, "no eval done twice");
}

/// Runs `promptloop args` (writing its log in `dir`) and kills it (SIGKILL) once the log has a
/// random number of lines between the first evals and the last of the `total` an uninterrupted
/// run writes.
fn kill_part_way<S: AsRef<std::ffi::OsStr>>(args: &[S], dir: &Path, total: usize) {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_promptloop")).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let lines = || std::fs::read_to_string(dir.join("run.jsonl")).map_or(0, |t| t.lines().count());
    let kill_at = random_in(3, total - 1, "log lines before the kill");
    while lines() < kill_at && t0.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = lines();
    assert!(partial >= kill_at, "killed with {partial} lines of {total}");
}

/// Starts a run of `task_dir` into `out` and kills it once the header is written (before or
/// while the first evals run).
fn header_only_run(task_dir: &str, out: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptloop"))
        .args(["optimize", "--task", task_dir, "--out", out.to_str().unwrap(), "--limit-train", "1", "--limit-dev", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(out.join("run.jsonl")).map_or(0, |t| t.lines().count()) < 1
        && t0.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn corrupt_middle_line_and_foreign_task_exit_2() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    let task = cuad_mini();
    header_only_run(task.to_str().unwrap(), &run);
    let log = run.join("run.jsonl");
    let header = std::fs::read_to_string(&log).unwrap().lines().next().unwrap().to_owned();

    // A fresh --out that already holds a run: error suggesting --resume, naming the task.
    let other = task_copy();
    std::fs::write(
        other.path().join("task.toml"),
        std::fs::read_to_string(other.path().join("task.toml")).unwrap().replace("name = \"cuad-mini\"", "name = \"other\""),
    )
    .unwrap();
    let out = promptloop(&["optimize", "--task", other.path().to_str().unwrap(), "--out", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--resume") && stderr(&out).contains("cuad-mini"), "{}", stderr(&out));

    // --resume of that run as another task's.
    let out = promptloop(&["optimize", "--resume", run.to_str().unwrap(), "--task", other.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`cuad-mini`") && stderr(&out).contains("`other`"), "{}", stderr(&out));

    // A bad line in the middle: an error naming it.
    std::fs::write(&log, format!("{header}\n{{\"type\": \"eval\", broken\n{header}\n")).unwrap();
    let out = promptloop(&["optimize", "--resume", run.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("run.jsonl:2"), "{}", stderr(&out));
}

/// Racing on a document-first task: four candidates start on a quarter of train (one example), the better
/// half goes on at each rung, one finalist runs on all of it; the documents' KV states are
/// computed once and restored for every later prompt.
#[test]
fn racing_drops_candidates_early_and_the_document_cache_serves_later_prompts() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let task = task_copy();
    let toml = std::fs::read_to_string(task.path().join("task.toml")).unwrap();
    std::fs::write(task.path().join("task.toml"), format!("layout = \"document-first\"\n{toml}")).unwrap();
    let out_dir = tmp.path().join("run");
    let kv = tmp.path().join("kv");
    let out = promptloop(&[
        "optimize",
        "--task",
        task.path().to_str().unwrap(),
        "--optimizer",
        "none",
        "--proposer",
        "demos",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
        "--limit-train",
        "4",
        "--limit-dev",
        "2",
        "--limit-test",
        "1",
        "--max-iterations",
        "1",
        "--candidates",
        "4",
        "--demos",
        "1",
        "--batch-size",
        "1",
        "--max-tokens",
        "64",
        "--prefix-cache-dir",
        kv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = log_of(&out_dir);
    let cands = of_type(&recs, "candidate");
    assert_eq!(cands.len(), 4);
    let scored = |c: &Value| c["scores"].as_array().unwrap().len();
    let dropped_at = |n: usize| {
        cands
            .iter()
            .filter(|c| c["rejected"]["kind"] == "raced" && c["rejected"]["evaluated"] == n && c["rejected"]["train"] == 4)
            .inspect(|c| assert_eq!(scored(c), n, "{c}"))
            .count()
    };
    assert_eq!(dropped_at(1), 2, "half of four dropped after the first rung");
    assert_eq!(dropped_at(2), 1, "half of two dropped after the second");
    let finalists: Vec<_> = cands.iter().filter(|c| c["rejected"].is_null()).collect();
    assert_eq!(finalists.len(), 1);
    assert_eq!(scored(finalists[0]), 4);

    // Train evals: the baseline's 4, then at most 1+1+1+1, 1+1 and 2 new ones (fewer when a
    // candidate's demo example sees the baseline instruction), against 4 + 4 x 4 unraced.
    let train_evals = of_type(&recs, "eval").iter().filter(|e| e["split"] == "train").count();
    assert!(train_evals <= 4 + 4 + 2 + 2, "{train_evals}");

    // Every document was computed once: later prompts on it restored its state.
    let tiers: Vec<&str> = of_type(&recs, "eval")
        .iter()
        .map(|e| e["record"]["prefix_cache"]["tier"].as_str().unwrap_or_else(|| panic!("no cache use: {e}")))
        .collect();
    let misses = tiers.iter().filter(|t| **t == "miss").count();
    assert!(misses <= 4 + 2 + 1, "each document misses at most once: {tiers:?}");
    assert!(tiers.iter().filter(|t| **t == "memory").count() >= 4, "{tiers:?}");

    // The report of this run: each dropped candidate with its partial train mean, in the
    // candidates table and on the score plot (never at 0.0 unless it scored 0.0).
    let run = harness::report::load_run(&out_dir).unwrap();
    let a = harness::report::analysis::analyze(&run, None);
    let dropped: Vec<_> =
        a.candidates().filter(|c| matches!(c.status, harness::report::analysis::CandStatus::Raced { .. })).collect();
    assert_eq!(dropped.len(), 3);
    for c in &dropped {
        let logged = cands.iter().find(|x| x["index"] == c.index).unwrap();
        let partial_scores: Vec<f64> =
            logged["scores"].as_array().unwrap().iter().map(|s| s["score"].as_f64().unwrap()).collect();
        let partial = partial_scores.iter().sum::<f64>() / partial_scores.len() as f64;
        assert!((c.train_mean - partial).abs() < 1e-9, "{} vs {partial}", c.train_mean);
    }
    let out = promptloop(&["report", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("dropped by racing: mean on part of train"), "the plot's legend names the dropped");
    for c in &dropped {
        let harness::report::analysis::CandStatus::Raced { evaluated, .. } = c.status else { unreachable!() };
        let cell = format!("{:.3} <span class=\"muted\">({evaluated} of 4)</span>", c.train_mean);
        assert!(html.contains(&cell), "the candidates table shows {cell}");
    }
}
