//! `promptloop optimize` with LLM proposers against a real `llama-server` (Gemma 3 270M as the
//! optimizer, `OpenAI`- and Anthropic-compatible), the candidate being the real SmolLM2-135M.
//! Requests go through the fault-injecting proxy, which also records what was sent: that is how
//! "no optimizer call paid twice" and "the key is sent but never written" are checked. Runs are
//! tiny (2 train, 2 dev, 1 test example) so each test takes a minute or two on 2 cores.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::optimizer_http::llama_server;
use crate::support::{command_env, cuad_mini, log_lines, promptloop_env, random_in, records, require_model, stderr, stdout};
use crate::support_proxy::{Fault, FaultProxy, Seen};

const SECRET: &str = "sk-test-DO-NOT-LOG-4f1c9a";

fn of_type<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == kind).collect()
}

/// A short LLM run's arguments.
fn llm_args<'a>(out: &'a str, optimizer: &'a str, proposer: &'a str, iterations: &'a str, candidates: &'a str) -> Vec<&'a str> {
    vec![
        "optimize",
        "--task",
        CUAD_MINI.get_or_init(|| cuad_mini().to_string_lossy().into_owned()),
        "--optimizer",
        optimizer,
        "--proposer",
        proposer,
        "--out",
        out,
        "--limit-train",
        "2",
        "--limit-dev",
        "2",
        "--limit-test",
        "1",
        "--max-iterations",
        iterations,
        "--candidates",
        candidates,
        "--optimizer-max-tokens",
        "120",
        "--worst",
        "2",
        "--accept",
        "mean",
        "--optimizer-timeout",
        "20s",
        "--json",
    ]
}

static CUAD_MINI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn openai_env(proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    vec![("OPENAI_BASE_URL", format!("{}/v1", proxy.url())), ("OPENAI_API_KEY", SECRET.to_owned())]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Every file of the run directory, read as text, must not contain the key.
fn assert_no_secret(dir: &Path, outputs: &[&str]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        assert!(!text.contains(SECRET), "the API key is in {}", path.display());
    }
    for o in outputs {
        assert!(!o.contains(SECRET), "the API key is in the program's output");
    }
}

/// Proposal and candidate records agree; decisions follow the `--accept mean` rules.
fn check_rules(recs: &[Value]) {
    let proposals = of_type(recs, "proposal");
    let by_sha: HashMap<&str, &Value> = proposals.iter().map(|p| (p["request_sha256"].as_str().unwrap(), *p)).collect();
    assert_eq!(by_sha.len(), proposals.len(), "a request logged twice");
    for p in &proposals {
        assert!(p["prompt"].is_string() != p["error"].is_string(), "a proposal has a prompt or an error: {p}");
    }
    for c in of_type(recs, "candidate") {
        let sha = c["request_sha256"].as_str().expect("an LLM candidate names its proposal");
        let p = by_sha.get(sha).unwrap_or_else(|| panic!("candidate without a proposal record: {c}"));
        assert!(c["prompt"].as_str().unwrap().starts_with(p["prompt"].as_str().unwrap().trim()), "{c}");
        assert!(c["overlap"].is_object(), "the leakage guard ran: {c}");
        if c["rejected"].is_null() {
            assert_eq!(c["scores"].as_array().unwrap().len(), 2, "{c}");
        }
    }
    for d in of_type(recs, "decision") {
        let reason = d["reason"].as_str().unwrap();
        let (tc, tb) = (d["train"]["candidate_mean"].as_f64(), d["train"]["current_mean"].as_f64());
        let (dc, db) = (d["dev"]["candidate_mean"].as_f64(), d["dev"]["current_mean"].as_f64());
        if d["accepted"] == true && d["verdict"]["kind"] == "shorter" {
            // As good on train and dev, with fewer prompt tokens.
            assert!(tc.unwrap() >= tb.unwrap() && dc.unwrap() >= db.unwrap(), "{d}");
            assert!(d["verdict"]["tokens"].as_u64() < d["verdict"]["was"].as_u64(), "{d}");
        } else if d["accepted"] == true {
            assert!(tc.unwrap() > tb.unwrap() && dc.unwrap() >= db.unwrap(), "{d}");
        } else if reason.starts_with("rejected: no gain") && reason.contains("but lower on dev") {
            // A shorter candidate no lower on train went to dev and lost there.
            assert!(tc.unwrap() <= tb.unwrap() && dc.unwrap() < db.unwrap(), "{d}");
        } else if reason.starts_with("rejected: no gain") {
            assert!(tc.unwrap() <= tb.unwrap() && d["dev"].is_null(), "{d}");
        } else if reason.starts_with("rejected: overfit") {
            assert!(tc.unwrap() > tb.unwrap() && dc.unwrap() < db.unwrap(), "{d}");
        } else {
            assert!(reason.starts_with("rejected: no usable candidate") || reason.starts_with("stopped"), "{d}");
        }
    }
}

fn chat_posts(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.method == "POST" && (s.path.ends_with("/chat/completions") || s.path.ends_with("/messages")))
        .collect()
}

/// Bodies answered 200 more than once, the canary's (the first request) left out.
fn paid_twice(seen: &[Seen]) -> Vec<String> {
    let posts = chat_posts(seen);
    let canary = posts.first().map(|s| s.body_sha256.clone()).unwrap_or_default();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in posts.iter().filter(|s| s.action == Fault::Pass && s.upstream_status == Some(200) && s.body_sha256 != canary) {
        *counts.entry(s.body_sha256.as_str()).or_default() += 1;
    }
    counts.into_iter().filter(|(_, n)| *n > 1).map(|(s, _)| s.to_owned()).collect()
}

#[test]
fn rewrite_and_opro_run_against_llama_server_and_resume_pays_nothing() {
    require_model();
    let proxy = FaultProxy::start(&llama_server());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let env = openai_env(&proxy);
    let out = promptloop_env(&llm_args(dir.to_str().unwrap(), "openai:optimizer", "rewrite,opro", "2", "2"), &env_refs(&env));
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&dir.join("run.jsonl"));
    assert_eq!(recs[0]["options"]["proposer"], "rewrite,opro");
    assert_eq!(of_type(&recs, "proposal").len(), 4, "2 iterations x 2 candidates, one call each");
    assert_eq!(of_type(&recs, "decision").len(), 2);
    let proposers: Vec<&str> = of_type(&recs, "proposal").iter().map(|p| p["proposer"].as_str().unwrap()).collect();
    assert_eq!(proposers, ["rewrite", "rewrite", "opro", "opro"]);
    check_rules(&recs);
    let fin = of_type(&recs, "final")[0];
    assert_eq!(fin["spend"]["calls"], 4);
    assert!(fin["spend"]["input_tokens"].as_u64().unwrap() > 500, "{fin}");
    // Progress lines and the summary on stdout.
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.contains("\"event\":\"progress\"")), "{text}");
    assert!(text.lines().any(|l| l.contains("\"event\":\"proposal\"")), "{text}");
    assert!(text.lines().last().unwrap().contains("\"event\":\"summary\""));
    // The canary plus 4 calls, each carrying the key, which is written nowhere.
    let seen = proxy.requests();
    assert_eq!(chat_posts(&seen).len(), 5, "{seen:?}");
    assert!(chat_posts(&seen).iter().all(|s| s.header("authorization") == Some(&format!("Bearer {SECRET}"))));
    assert_no_secret(&dir, &[&text, &stderr(&out)]);

    // Resuming the finished run: the canary only; no eval and no optimizer call again.
    let out = promptloop_env(&["optimize", "--resume", dir.to_str().unwrap(), "--json"], &env_refs(&env));
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["evals_run"], 0, "{summary}");
    assert_eq!(summary["optimizer_calls_made"], 0, "{summary}");
    assert_eq!(chat_posts(&proxy.requests()).len(), 6);
    assert_eq!(records(&dir.join("run.jsonl")).len(), recs.len());
}

#[test]
fn anthropic_api_run_against_llama_server() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let server = llama_server();
    let env = [("ANTHROPIC_BASE_URL", server.as_str()), ("ANTHROPIC_API_KEY", SECRET)];
    let out = promptloop_env(&llm_args(dir.to_str().unwrap(), "anthropic:optimizer", "rewrite", "1", "1"), &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&dir.join("run.jsonl"));
    let p = of_type(&recs, "proposal");
    assert_eq!(p.len(), 1);
    assert!(p[0]["input_tokens"].as_u64().unwrap() > 100 && p[0]["answer"].is_string(), "{}", p[0]);
    check_rules(&recs);
    assert_no_secret(&dir, &[&stdout(&out), &stderr(&out)]);
}

#[test]
fn faults_are_retried_and_the_run_completes() {
    require_model();
    let proxy = FaultProxy::start(&llama_server());
    // The canary passes; then each of the four calls meets one fault before it gets through.
    for f in [
        Fault::Pass,
        Fault::RateLimit { retry_after_s: 1 },
        Fault::Pass,
        Fault::ServerError(500),
        Fault::Pass,
        Fault::Hang(Duration::from_secs(25)),
        Fault::Pass,
        Fault::TruncateBody,
        Fault::Pass,
    ] {
        proxy.push(f);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let env = openai_env(&proxy);
    // llm_args sets --optimizer-timeout 20s: long enough for a real call (a ~3k-token
    // meta-prompt on 2 cores), shorter than the hang.
    let args = llm_args(dir.to_str().unwrap(), "openai:optimizer", "rewrite", "2", "2");
    let out = promptloop_env(&args, &env_refs(&env));
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&dir.join("run.jsonl"));
    let proposals = of_type(&recs, "proposal");
    assert_eq!(proposals.len(), 4);
    for p in &proposals {
        assert_eq!(p["attempts"], 2, "one fault, then through: {p}");
        assert!(p["answer"].is_string(), "{p}");
    }
    check_rules(&recs);
    let actions: Vec<Fault> = chat_posts(&proxy.requests()).iter().map(|s| s.action.clone()).collect();
    assert!(actions.contains(&Fault::TruncateBody) && actions.contains(&Fault::Hang(Duration::from_secs(25))), "{actions:?}");
    assert_eq!(of_type(&recs, "final").len(), 1);
}

#[test]
fn refused_connections_stop_the_run_and_resume_finishes_it() {
    require_model();
    let mut proxy = FaultProxy::start(&llama_server());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let env = openai_env(&proxy);
    let mut args = llm_args(dir.to_str().unwrap(), "openai:optimizer", "rewrite", "2", "3");
    args.extend(["--optimizer-attempts", "2"]);
    let child = command_env(&args, &env_refs(&env)).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Down as soon as the first call is logged.
    let t0 = Instant::now();
    while !std::fs::read_to_string(dir.join("run.jsonl")).unwrap_or_default().contains("\"type\":\"proposal\"") {
        assert!(t0.elapsed() < Duration::from_secs(300), "no proposal logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.set_down(true);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("calls in a row failed") && err.contains("--resume"), "{err}");
    // Everything logged is intact and parses; the failed calls are logged as such.
    let recs = records(&dir.join("run.jsonl"));
    assert!(of_type(&recs, "final").is_empty());
    let failed = of_type(&recs, "proposal").iter().filter(|p| p["error"].as_str().is_some_and(|e| e.contains("gave up"))).count();
    assert!(failed >= 2, "{recs:?}");

    proxy.set_down(false);
    let out = promptloop_env(&["optimize", "--resume", dir.to_str().unwrap(), "--json"], &env_refs(&env));
    assert!(out.status.success(), "{}", stderr(&out));
    let after = records(&dir.join("run.jsonl"));
    assert_eq!(of_type(&after, "final").len(), 1);
    assert_eq!(&after[..recs.len()], &recs[..], "resume only appends");
    check_rules(&after);
    assert!(paid_twice(&proxy.requests()).is_empty());
}

#[test]
fn sigkill_at_a_random_point_then_resume_redoes_and_repays_nothing() {
    require_model();
    let proxy = FaultProxy::start(&llama_server());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let env = openai_env(&proxy);
    let args = llm_args(dir.to_str().unwrap(), "openai:optimizer", "rewrite,opro", "2", "2");
    // header, 2+2 baseline evals, then calls, candidates and their evals: ~25 lines in all.
    let kill_at = random_in(2, 16, "log lines before the kill");
    let mut child = command_env(&args, &env_refs(&env)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while log_lines(&dir) < kill_at && t0.elapsed() < Duration::from_secs(400) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = log_lines(&dir);
    eprintln!("killed with {before} log lines");
    // Calls logged before the kill (a torn last line is not a logged call).
    let logged_before = std::fs::read_to_string(dir.join("run.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["type"] == "proposal")
        .count();
    let sent_before = proxy.requests().len();
    let out = promptloop_env(&["optimize", "--resume", dir.to_str().unwrap(), "--json"], &env_refs(&env));
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&dir.join("run.jsonl"));
    assert_eq!(of_type(&recs, "final").len(), 1);
    // No eval twice: one record per (instruction, example, engine).
    let mut keys = std::collections::HashSet::new();
    for e in of_type(&recs, "eval") {
        let key = (e["instruction_sha256"].clone(), e["record"]["id"].clone(), e["engine_key"].clone());
        assert!(keys.insert(key), "eval done twice: {e}");
    }
    check_rules(&recs);
    // No repay: after the resume's canary, the calls answered are exactly the ones the log
    // lacked. (A call answered but not yet logged when the kill came is paid again: its
    // answer was lost with the process.)
    let seen = proxy.requests();
    let answered_after = chat_posts(&seen[sent_before..]).iter().filter(|s| s.upstream_status == Some(200)).count();
    let logged_after = of_type(&recs, "proposal").len();
    assert_eq!(answered_after, 1 + logged_after - logged_before, "canary + the calls the log lacked");
}

#[test]
fn local_optimizer_runs_in_process() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = promptloop_env(&llm_args(dir.to_str().unwrap(), "local:gemma3-270m", "rewrite", "1", "1"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = records(&dir.join("run.jsonl"));
    let p = of_type(&recs, "proposal");
    assert_eq!(p.len(), 1);
    assert!(p[0]["output_tokens"].as_u64().unwrap() > 0, "{}", p[0]);
    assert_eq!(p[0]["cost_usd"], 0.0);
    check_rules(&recs);
}

type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn bad_optimizer_input_fails_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let d = dir.to_str().unwrap();
    let task = cuad_mini();
    let t = task.to_str().unwrap();
    let cases: Vec<Case> = vec![
        (vec!["--proposer", "llm"], vec![], "unknown proposer `llm`"),
        (vec!["--optimizer", "gpt"], vec![], "openai:MODEL"),
        (vec!["--optimizer", "mistral:large"], vec![], "unknown optimizer kind `mistral`"),
        (vec!["--proposer", "rewrite"], vec![], "needs an optimizer model"),
        (vec!["--optimizer", "openai:gpt-4o-mini"], vec![], "OPENAI_API_KEY"),
        (vec!["--optimizer", "anthropic:claude-haiku-4-5"], vec![], "ANTHROPIC_API_KEY"),
        (
            vec!["--optimizer", "openai:m", "--optimizer-attempts", "1"],
            vec![("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")],
            "canary call",
        ),
        (
            vec!["--optimizer", "openai:my-model", "--max-cost", "1"],
            vec![("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")],
            "no price is known",
        ),
        (vec!["--optimizer", "local:/nonexistent/model.gguf"], vec![], "/nonexistent/model.gguf"),
    ];
    for (extra, env, want) in cases {
        let mut args = vec!["optimize", "--task", t, "--out", d];
        args.extend(&extra);
        let out = promptloop_env(&args, &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: wanted `{want}` in: {err}");
        assert!(!dir.exists(), "{extra:?} created the run directory");
    }
    // --resume of a directory that is not a run.
    let out = promptloop_env(&["optimize", "--resume", tmp.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a run directory"), "{}", stderr(&out));
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let task = cuad_mini();
    let args = [
        "optimize",
        "--task",
        task.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--optimizer",
        "openai:gpt-4o-mini",
        "--max-iterations",
        "3",
        "--candidates",
        "2",
        "--dry-run",
        "--json",
    ];
    // No key and no server: a dry run calls nothing.
    let out = promptloop_env(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    // cuad-mini: 16 train, 10 dev, 12 test.
    assert_eq!(plan["candidate_evaluations_max"], 16 + 10 + 3 * (2 * 16 + 10) + 2 * 12, "{plan}");
    assert_eq!(plan["optimizer_calls_max"], 3 * 2 + 1);
    assert_eq!(plan["optimizer_output_tokens_max"], 6 * 1024);
    let cost = plan["cost_usd_max"].as_f64().unwrap();
    let tin = plan["optimizer_input_tokens_max"].as_f64().unwrap();
    assert!((cost - (tin * 0.15 + 6.0 * 1024.0 * 0.60) / 1e6).abs() < 1e-9, "{plan}");
    assert!(!dir.exists());
    // Human-readable form.
    let out = promptloop_env(&args[..args.len() - 1], &[]);
    assert!(stdout(&out).contains("optimizer calls   at most 7"), "{}", stdout(&out));
    // Without an optimizer the default search is the offline one: field-guidance edits and
    // the joint instruction x demo search, no optimizer call.
    let offline = [
        "optimize",
        "--task",
        task.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--optimizer",
        "none",
        "--dry-run",
        "--json",
    ];
    let out = promptloop_env(&offline, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(plan["proposer"], "edits,joint", "{plan}");
    assert_eq!(plan["optimizer_calls_max"], 0, "{plan}");
    assert!(!dir.exists());
}
