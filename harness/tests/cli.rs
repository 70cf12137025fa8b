//! `promptloop eval` end to end: constrained outputs, records, summaries, errors and exit codes.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{cuad_mini, promptloop, promptloop_env, records, repo, require_model, stderr, stdout, summary, task_copy};

/// Every shipped task evals on the head of its dev split with the real model: records read from
/// the data root, every output well formed under the constraint, a score in [0, 1].
#[test]
fn every_shipped_task_evals_on_its_dev_split() {
    require_model();
    for (name, limit) in
        [("cuad-mini", "2"), ("banking77", "3"), ("nlupp-hotels", "3"), ("evidence-inference", "1"), ("cuad", "1")]
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let out_path = dir.path().join("dev.jsonl");
        let task = repo().join("evals").join(name);
        let out = promptloop(&[
            "eval",
            "--task",
            task.to_str().unwrap(),
            "--split",
            "dev",
            "--limit",
            limit,
            "--on-overflow",
            "truncate",
            "--json",
            "--out",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let s = summary(&out);
        assert_eq!(s["examples"].as_u64(), limit.parse().ok(), "{name}: {s}");
        assert_eq!(s["failure_classes"]["format"].as_u64().unwrap_or(0), 0, "{name}: {s}");
        let mean = s["mean_score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{name}: {s}");
        let recs = records(&out_path);
        assert_eq!(recs.len().to_string(), limit, "{name}");
        assert!(recs.iter().all(|r| r["score"].as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))), "{name}");
    }
}

/// Every output of the whole dev split parses and satisfies the task's schema under the default
/// constraint (llguidance): `format` failures are 0 over the split.
#[test]
fn llguidance_outputs_validate_for_every_example_of_the_split() {
    require_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("dev.jsonl");
    let task = cuad_mini();
    let out = promptloop(&[
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--split",
        "dev",
        "--model",
        "smollm2-135m",
        "--json",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["examples"], 10);
    assert_eq!(s["failure_classes"]["format"].as_u64().unwrap_or(0), 0, "{s}");
    assert!(s["errors"].as_object().is_some_and(serde_json::Map::is_empty), "{s}");
    assert!(s["speed"]["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(s["speed"]["peak_rss_bytes"].as_u64().unwrap() > 50 << 20);

    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(task.join("schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let recs = records(&out_path);
    assert_eq!(recs.len(), 10);
    let mut complete = 0;
    for r in &recs {
        let text = r["output"].as_str().unwrap();
        assert_eq!(r["fields"].as_array().unwrap().len(), 4);
        assert!(r["timings"]["total_ms"].as_f64().unwrap() > 0.0);
        if r["stop"] == "max_tokens" {
            // Cut off by the token cap: reported as truncated, never as a format failure.
            assert_eq!(r["truncated"], true, "{}", r["id"]);
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{}: {e}: {text}", r["id"]));
        assert!(validator.is_valid(&value), "{}: {text}", r["id"]);
        assert_eq!(r["format_ok"], true);
        complete += 1;
    }
    assert_eq!(s["truncated"].as_u64().unwrap() as usize, 10 - complete, "{s}");
    assert!(complete >= 8, "only {complete} of 10 outputs completed within the token cap");
    assert_confidences(&recs, &s);
}

/// Every completed record has a confidence on each field whose value the model chose (forced
/// tokens aside), mean >= min, both log-probabilities; the summary counts them.
fn assert_confidences(recs: &[serde_json::Value], s: &serde_json::Value) {
    let mut with = 0;
    for r in recs.iter().filter(|r| r["format_ok"] == true) {
        let confs: Vec<&serde_json::Value> = r["fields"].as_array().unwrap().iter().filter_map(|f| f.get("confidence")).collect();
        assert!(!confs.is_empty(), "no field confidence in {}", r["id"]);
        for c in confs {
            let (mean, min) = (c["mean_logprob"].as_f64().unwrap(), c["min_logprob"].as_f64().unwrap());
            assert!(min <= mean + 1e-6 && mean <= 1e-6 && c["tokens"].as_u64().unwrap() >= 1, "{c}");
            with += 1;
        }
    }
    assert_eq!(s["confidence"]["fields"].as_u64(), Some(with), "{s}");
}

/// candle and MLX give the same per-field confidences as llama: one dev example each.
#[test]
fn candle_and_mlx_records_carry_field_confidences() {
    require_model();
    let task = cuad_mini();
    for engine in ["candle", "mlx"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let out_path = dir.path().join("dev.jsonl");
        let out = promptloop(&[
            "eval",
            "--task",
            task.to_str().unwrap(),
            "--split",
            "dev",
            "--limit",
            "1",
            "--engine",
            engine,
            "--json",
            "--out",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{engine}: {}", stderr(&out));
        assert_confidences(&records(&out_path), &summary(&out));
    }
}

#[test]
fn gbnf_outputs_validate_and_table_is_printed() {
    require_model();
    let task = cuad_mini();
    let out = promptloop(&["eval", "--task", task.to_str().unwrap(), "--split", "dev", "--limit", "3", "--constraint", "gbnf"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for needle in [
        "mean score",
        "agreement_date",
        "failures        format 0,",
        "latency",
        "prefill",
        "decode",
        "peak memory",
        "confidence      mean p",
    ] {
        assert!(table.contains(needle), "missing `{needle}` in:\n{table}");
    }
    assert!(table.contains("constraint gbnf"), "{table}");
}

#[test]
fn inputs_longer_than_the_context_are_reported_and_the_run_continues() {
    require_model();
    let task = cuad_mini();
    let out = promptloop(&["eval", "--task", task.to_str().unwrap(), "--split", "dev", "--limit", "3", "--ctx", "256", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["errors"]["too_long"], 3, "{s}");
    assert_eq!(s["mean_score"], 0.0);
}

#[test]
fn malformed_split_line_exits_2_naming_file_and_line() {
    let dir = task_copy();
    let dev = dir.path().join("dev.jsonl");
    let mut text = std::fs::read_to_string(&dev).unwrap();
    let second = text.lines().nth(1).unwrap().to_string();
    text = text.replacen(&second, "{\"id\": \"broken\", \"text\": ", 1);
    std::fs::write(&dev, text).unwrap();
    let out = promptloop(&["eval", "--task", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("dev.jsonl:2"), "{err}");
}

#[test]
fn expected_not_matching_schema_exits_2_naming_line_and_field() {
    let dir = task_copy();
    let train = dir.path().join("train.jsonl");
    let text = std::fs::read_to_string(&train).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut row: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    row["expected"]["parties"] = serde_json::json!("not a list");
    lines[2] = row.to_string();
    std::fs::write(&train, lines.join("\n")).unwrap();
    let out = promptloop(&["eval", "--task", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("train.jsonl:3") && err.contains("/parties"), "{err}");
}

/// A data root without the task's dataset, or a dataset without one of its split files: exit 2,
/// naming the path, before any model is loaded.
#[test]
fn a_missing_data_root_or_split_file_exits_2_naming_the_path() {
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().to_str().unwrap();
    let out = promptloop(&["eval", "--task", "evals/cuad-mini", "--data-root", root]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&empty.path().join("cuad").display().to_string()) && err.contains("task.toml"), "{err}");
    let out = promptloop_env(&["eval", "--task", "evals/banking77"], &[("PROMPTLOOP_DATA", root)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&empty.path().join("banking77").display().to_string()), "{}", stderr(&out));
    // The dataset is there but lacks the test split's file.
    let ds = empty.path().join("banking77");
    std::fs::create_dir(&ds).unwrap();
    let shared = harness::task::Task::load(&repo().join("evals/banking77")).unwrap().data.unwrap();
    for f in ["train.jsonl", "dev.jsonl"] {
        std::fs::copy(shared.join(f), ds.join(f)).unwrap();
    }
    let out = promptloop(&["eval", "--task", "evals/banking77", "--data-root", root]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&ds.join("test.jsonl").display().to_string()), "{}", stderr(&out));
}

#[test]
fn unknown_split_and_missing_model_are_input_errors() {
    let task = cuad_mini();
    let out = promptloop(&["eval", "--task", task.to_str().unwrap(), "--split", "validation"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("validation") && stderr(&out).contains("dev"), "{}", stderr(&out));

    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptloop"))
        .args(["eval", "--task", task.to_str().unwrap(), "--model", "smollm2-135m"])
        .env("PROMPTLOOP_MODELS", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("scripts/setup.sh models"), "{}", stderr(&out));

    let out = promptloop(&["eval", "--task", task.to_str().unwrap(), "--model", "/no/such/model.gguf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/model.gguf"), "{}", stderr(&out));
}

#[test]
fn bad_arguments_exit_2() {
    let out = promptloop(&["eval", "--task", "evals/cuad-mini", "--constraint", "regex"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("regex"), "{}", stderr(&out));
    let out = promptloop(&["eval", "--task", "/no/such/task"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/task"), "{}", stderr(&out));
}

/// `--draft FILE`: the outputs of an earlier `--out` file are the drafts of a second pass under
/// a changed instruction; the summary counts the draft tokens fed and kept, the records carry
/// them, and the outputs stay valid. A draft file that is not eval records exits 2 naming its
/// line.
#[test]
fn a_second_pass_drafts_from_the_first_passes_records() {
    require_model();
    let dir = tempfile::tempdir().expect("temp dir");
    let task = cuad_mini();
    let first = dir.path().join("first.jsonl");
    let base = ["eval", "--task", task.to_str().unwrap(), "--split", "dev", "--limit", "2", "--batch-size", "2", "--json"];
    let out = promptloop(&[&base[..], &["--out", first.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let prompt = dir.path().join("prompt.txt");
    let text = std::fs::read_to_string(task.join("prompt.txt")).unwrap();
    std::fs::write(&prompt, format!("{}\nUse null when the contract does not say.\n", text.trim_end())).unwrap();
    let second = dir.path().join("second.jsonl");
    let args = ["--prompt", prompt.to_str().unwrap(), "--draft", first.to_str().unwrap(), "--out", second.to_str().unwrap()];
    let out = promptloop(&[&base[..], &args[..]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    let (drafted, kept) = (s["speed"]["drafted_tokens"].as_u64().unwrap(), s["speed"]["accepted_tokens"].as_u64().unwrap());
    assert!(drafted > 0 && kept > 0 && kept <= drafted, "{s}");
    assert_eq!(s["failure_classes"]["format"].as_u64().unwrap_or(0), 0, "{s}");
    let recs = records(&second);
    let kept_in_records: u64 = recs.iter().map(|r| r["tokens"]["accepted"].as_u64().unwrap()).sum();
    assert_eq!(kept_in_records, kept);
    eprintln!("{kept} of {drafted} draft tokens kept");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"id\": 3}}\n", std::fs::read_to_string(&first).unwrap().lines().next().unwrap()))
        .unwrap();
    let out = promptloop(&[&base[..], &["--draft", bad.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.jsonl:2"), "{}", stderr(&out));
}

/// A run directory whose log ends in a torn line: `optimize --resume` warns through tracing that
/// it drops the line, then stops with exit 2 because `--task` is not the run's task. No model is
/// loaded, so the warning path costs milliseconds.
fn torn_run(dir: &Path) -> [String; 5] {
    let example = repo().join("reports/examples/cuad-mini-demos/run.jsonl");
    let header = std::fs::read_to_string(&example).expect("example run log").lines().next().expect("header line").to_owned();
    std::fs::write(dir.join("run.jsonl"), format!("{header}\n{{\"type\":\"eval\",\"split\":\"tr")).unwrap();
    let copy = task_copy();
    let task = dir.join("task");
    std::fs::create_dir_all(&task).unwrap();
    for f in ["task.toml", "schema.json", "prompt.txt", "train.jsonl", "dev.jsonl", "test.jsonl"] {
        std::fs::copy(copy.path().join(f), task.join(f)).unwrap();
    }
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    ["optimize".into(), "--resume".into(), s(dir), "--task".into(), s(&task)]
}

fn assert_warned(out: &Output, log: &str) {
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("dropped a torn last line") && log.contains("WARN"), "the warning is missing: {log}");
}

/// Logs sent to a pipe (or a file) are plain text: no ANSI escape, with or without `NO_COLOR`.
#[test]
fn warnings_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let args = torn_run(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for envs in [&[][..], &[("NO_COLOR", "1")][..]] {
        let out = promptloop_env(&args, envs);
        let log = stderr(&out);
        assert_warned(&out, &log);
        assert!(!out.stderr.windows(2).any(|w| w == b"\x1b["), "ANSI escape in piped stderr ({envs:?}): {log:?}");
        // the torn line was truncated away; put it back for the next round
        let _ = torn_run(dir.path());
    }
}

/// On a terminal (a pseudo-terminal from util-linux's `script`) warnings are coloured, unless
/// `NO_COLOR` is set to a non-empty value; an empty `NO_COLOR` does not count.
#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let args = torn_run(dir.path());
        let line = std::iter::once(env!("CARGO_BIN_EXE_promptloop").to_owned())
            .chain(args)
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]).current_dir(repo()).env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("`script` (util-linux; apt-get install bsdutils) runs: {e}"));
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_warned(&out, &log);
        let escaped = out.stdout.windows(2).any(|w| w == b"\x1b[");
        assert_eq!(escaped, coloured, "NO_COLOR={no_color:?}: colour expected {coloured}: {log:?}");
    }
}
