//! Unit tests of the optimize loop on the scripted engine (no model): accept, no gain, overfit,
//! racing with partial means, LLM candidates rejected for leakage and duplicates, and a session
//! started, killed and resumed through the library alone. Each runs in milliseconds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use engines::{Request, ScriptedEngine};
use serde_json::{json, Value};

use super::events::{Event, Recorder};
use super::outcome::{Rejection, Verdict};
use super::records::{CandidateEntry, DecisionEntry, LogRecord};
use super::{OptimizeError, LOG_FILE};
use crate::config::{Accept, RunConfig};
use crate::llm::{CallError, ChatReply, ChatRequest, Optimizer};
use crate::session::Session;
use crate::task::Task;

/// A task directory: one string field `label`; documents say "the label is L<i>", train
/// documents are marked `(train)`, dev `(dev)`, test `(test)`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(train: usize, dev: usize, test: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let mut toml = "name = \"labels\"\nschema = \"schema.json\"\nprompt = \"prompt.txt\"\n\n[splits]\n".to_owned();
        for (split, n) in [("train", train), ("dev", dev), ("test", test)] {
            if n > 0 {
                let _ = writeln!(toml, "{split} = \"{split}.jsonl\"");
            }
        }
        std::fs::write(p.join("task.toml"), toml).unwrap();
        let schema = json!({
            "type": "object", "additionalProperties": false, "required": ["label"],
            "properties": {"label": {"type": "string"}}
        });
        std::fs::write(p.join("schema.json"), schema.to_string()).unwrap();
        std::fs::write(p.join("prompt.txt"), "Extract the label as JSON.\n").unwrap();
        for (split, n) in [("train", train), ("dev", dev), ("test", test)] {
            let lines: Vec<String> = (0..n)
                .map(|i| {
                    json!({"id": format!("{split}{i}"), "text": format!("Document ({split}) number {i}: the label is L{i}."),
                           "expected": {"label": format!("L{i}")}})
                    .to_string()
                })
                .collect();
            std::fs::write(p.join(format!("{split}.jsonl")), lines.join("\n") + "\n").unwrap();
        }
        // Any file stands for the model: the scripted engine never reads it.
        std::fs::write(p.join("model.gguf"), b"GGUF scripted test model").unwrap();
        Fixture { dir }
    }

    fn task(&self) -> Task {
        Task::load(self.dir.path()).unwrap()
    }

    fn config(&self) -> RunConfig {
        let mut c = RunConfig::for_tests();
        c.engine.model = self.dir.path().join("model.gguf").display().to_string();
        c.search.max_iterations = 2;
        c.search.candidates = 2;
        c.search.demos = 1;
        c.search.accept = Accept::Mean;
        c
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The whole prompt text of a request.
fn prompt_of(r: &Request) -> String {
    r.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")
}

/// The label the document states.
fn label(r: &Request) -> String {
    let text = prompt_of(r);
    let at = text.rfind("the label is L").expect("a fixture document");
    text[at + "the label is ".len()..].split('.').next().unwrap().to_owned()
}

fn answer(label: &str) -> String {
    json!({ "label": label }).to_string()
}

/// Right only once the prompt shows a worked example; `overfit`: then wrong on dev, which the
/// plain prompt gets right.
fn demos_help(overfit: bool) -> impl Fn(&Request) -> engines::scripted::ScriptResult + Send + Sync {
    move |r| {
        let text = prompt_of(r);
        let with_demo = text.contains("Worked examples");
        let dev = text.contains("Document (dev)");
        let right = if overfit && dev { !with_demo } else { with_demo };
        Ok(answer(&if right { label(r) } else { "none".into() }))
    }
}

fn run(
    fx: &Fixture,
    config: RunConfig,
    engine: &ScriptedEngine,
    out: &str,
) -> (Result<super::RunOutcome, OptimizeError>, Vec<Event>) {
    let mut session = Session::start(fx.task(), &fx.out(out), config).unwrap();
    let mut events = Recorder::default();
    let result = session.run(engine, None, None, &mut events);
    (result, events.0)
}

fn records(dir: &Path) -> Vec<LogRecord> {
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn decisions(dir: &Path) -> Vec<DecisionEntry> {
    records(dir)
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Decision(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn candidates(dir: &Path) -> Vec<CandidateEntry> {
    records(dir)
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Candidate(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn a_candidate_that_wins_on_train_and_holds_on_dev_is_accepted() {
    let fx = Fixture::new(4, 2, 2);
    let engine = ScriptedEngine::new(demos_help(false));
    let (out, events) = run(&fx, fx.config(), &engine, "accept");
    let out = out.unwrap();
    let d = decisions(&fx.out("accept"));
    assert_eq!(d[0].verdict, Verdict::Accepted);
    assert!(d[0].accepted && d[0].dev.is_some());
    // Only the demo's own example still fails (it never sees itself): nothing left to draw from.
    assert_eq!(d[1].verdict, Verdict::Stopped { by: "stopped: no failing train example left to draw demos from".into() });
    assert_eq!(out.summary.accepted, 1);
    let test = out.summary.rows.iter().find(|r| r.split == "test").unwrap();
    assert_eq!((test.baseline_mean, test.best_mean), (0.0, 1.0));
    assert!(std::fs::read_to_string(fx.out("accept").join(super::BEST_PROMPT_FILE)).unwrap().contains("Worked examples"));
    assert!(events.iter().any(|e| matches!(e, Event::Decision { verdict: Verdict::Accepted, .. })));
}

#[test]
fn edits_add_field_guidance_for_a_missed_field_and_the_gate_keeps_it() {
    let fx = Fixture::new(4, 2, 2);
    let mut config = fx.config();
    config.search.proposer = "edits".parse().unwrap();
    // Empty (a miss) until the prompt has field guidance for `label`, then right.
    let engine = ScriptedEngine::new(|r| {
        let guided = prompt_of(r).contains("Field guidance:\n- label:");
        Ok(answer(if guided { label(r) } else { String::new() }.as_str()))
    });
    let (out, _) = run(&fx, config, &engine, "edits");
    let out = out.unwrap();
    let d = decisions(&fx.out("edits"));
    assert_eq!(d[0].verdict, Verdict::Accepted, "{d:?}");
    let c = &candidates(&fx.out("edits"))[0];
    assert_eq!(c.proposer, "edits");
    // The labels ("L0") are too short to search for, so the line says to read the whole text.
    assert!(
        c.prompt
            .ends_with("Field guidance:\n- label: the document usually states it; read the whole text before answering null.\n"),
        "{}",
        c.prompt
    );
    // Nothing fails after the edit: the second iteration has no edit to make.
    assert_eq!(d[1].verdict, Verdict::Stopped { by: "stopped: no field edit left to try".into() });
    let test = out.summary.rows.iter().find(|r| r.split == "test").unwrap();
    assert_eq!((test.baseline_mean, test.best_mean), (0.0, 1.0));
}

#[test]
fn joint_proposes_instruction_and_demo_combinations_and_the_gate_keeps_a_winner() {
    let fx = Fixture::new(4, 2, 2);
    let mut config = fx.config();
    config.search.proposer = "joint".parse().unwrap();
    config.search.max_iterations = 2;
    let engine = ScriptedEngine::new(demos_help(false));
    let (out, _) = run(&fx, config, &engine, "joint");
    let out = out.unwrap();
    let cands = candidates(&fx.out("joint"));
    assert!(cands.iter().all(|c| c.proposer == "joint" && c.demo_ids.len() == 1));
    // Two combinations a round, never the same one twice.
    let mut seen: Vec<&Vec<String>> = cands.iter().map(|c| &c.demo_ids).collect();
    seen.dedup();
    assert_eq!(seen.len(), cands.len(), "{seen:?}");
    assert_eq!(decisions(&fx.out("joint"))[0].verdict, Verdict::Accepted);
    assert!((out.summary.rows.iter().find(|r| r.split == "test").unwrap().best_mean - 1.0).abs() < 1e-12);
}

#[test]
fn no_gain_on_train_is_rejected_and_the_loop_goes_on() {
    let fx = Fixture::new(4, 2, 0);
    let engine = ScriptedEngine::new(|r| Ok(answer(if label(r) == "L0" { "L0" } else { "none" })));
    let (out, _) = run(&fx, fx.config(), &engine, "flat");
    let d = decisions(&fx.out("flat"));
    assert_eq!(d.iter().map(|d| d.verdict.clone()).collect::<Vec<_>>(), vec![Verdict::NoTrainGain, Verdict::NoTrainGain]);
    assert!(d.iter().all(|d| d.dev.is_none() && d.reason.starts_with("rejected: no gain on train")));
    assert_eq!(out.unwrap().summary.accepted, 0);
}

#[test]
fn a_shorter_prompt_as_good_on_train_and_dev_is_kept_and_one_lower_on_dev_is_not() {
    // Scores that no prompt changes (even examples right, odd ones wrong), and a task prompt
    // whose field guidance line does nothing: the edits' ablation (the line removed) ties on
    // train with fewer prompt tokens, so racing sends it on and the gate keeps it as shorter.
    for lower_on_dev in [false, true] {
        let fx = Fixture::new(4, 2, 0);
        let prompt = "Extract the label as JSON.\n\nField guidance:\n- label: a line of guidance that changes nothing at all for this model.\n";
        std::fs::write(fx.dir.path().join("prompt.txt"), prompt).unwrap();
        let mut config = fx.config();
        config.search.proposer = "edits".parse().unwrap();
        config.search.max_iterations = 1;
        let engine = ScriptedEngine::new(move |r| {
            let n: usize = label(r)[1..].parse().unwrap();
            let dev = prompt_of(r).contains("Document (dev)");
            let right = if lower_on_dev && dev { prompt_of(r).contains("changes nothing") } else { n % 2 == 0 };
            Ok(answer(&if right { label(r) } else { "none".into() }))
        });
        let (out, _) = run(&fx, config, &engine, "short");
        let out = out.unwrap();
        let d = &decisions(&fx.out("short"))[0];
        let cand = &candidates(&fx.out("short"))[d.candidate.unwrap()];
        assert!(!cand.prompt.contains("changes nothing"), "the ablation went on: {}", cand.prompt);
        let train = d.train.as_ref().unwrap();
        assert!((train.candidate_mean - train.current_mean).abs() < 1e-12, "{d:?}");
        let (base, best) = out.summary.prompt_tokens.unwrap();
        if lower_on_dev {
            assert_eq!(d.verdict, Verdict::NoTrainGain, "{d:?}");
            assert!(!d.accepted && d.reason.contains("but lower on dev (dev mean 0.0000 vs 1.0000)"), "{}", d.reason);
            assert_eq!(out.summary.best_sha256, out.summary.baseline_sha256);
            assert_eq!(base, best);
        } else {
            let tokens = cand.prompt_tokens.unwrap();
            assert_eq!(d.verdict, Verdict::Shorter { tokens, was: base }, "{d:?}");
            assert!(d.accepted && tokens < base);
            assert_eq!(d.reason, format!("accepted: as good on train and dev with {tokens} prompt tokens instead of {base}"));
            assert_eq!((out.summary.accepted, best), (1, tokens));
            assert_eq!(std::fs::read_to_string(fx.out("short").join("best_prompt.txt")).unwrap(), cand.prompt);
        }
    }
}

#[test]
fn winning_on_train_and_losing_on_dev_is_overfit() {
    for accept in [Accept::Mean, Accept::Bootstrap] {
        let fx = Fixture::new(8, 4, 0);
        let mut config = fx.config();
        config.search.accept = accept;
        config.search.max_iterations = 1;
        let engine = ScriptedEngine::new(demos_help(true));
        let (out, _) = run(&fx, config, &engine, "overfit");
        let d = &decisions(&fx.out("overfit"))[0];
        assert_eq!(d.verdict, Verdict::Overfit, "{accept}: {d:?}");
        assert!(!d.accepted && d.reason.starts_with("rejected: overfit"));
        let dev = d.dev.as_ref().unwrap();
        assert_eq!((dev.current_mean, dev.candidate_mean), (1.0, 0.0));
        let out = out.unwrap();
        assert_eq!(out.summary.best_sha256, out.summary.baseline_sha256);
    }
}

#[test]
fn racing_drops_the_worse_half_and_logs_their_partial_means() {
    let fx = Fixture::new(8, 2, 0);
    let mut config = fx.config();
    config.search.candidates = 4;
    config.search.max_iterations = 1;
    // Right on the documents whose number is below the demo's: candidates differ by their demo.
    let engine = ScriptedEngine::new(|r| {
        let text = prompt_of(r);
        let demo = text.split("Document (train) number ").skip(1).last().and_then(|s| s.split(':').next()?.parse::<usize>().ok());
        let own: usize = label(r)[1..].parse().unwrap();
        let with_demo = text.contains("Worked examples");
        Ok(answer(&if with_demo && demo.is_some_and(|d| own < d) { label(r) } else { "none".into() }))
    })
    .with_max_batch(1);
    let (out, _) = run(&fx, config, &engine, "race");
    out.unwrap();
    let cands = candidates(&fx.out("race"));
    assert_eq!(cands.len(), 4);
    let mut after: Vec<usize> = Vec::new();
    for c in &cands {
        match &c.rejected {
            Some(Rejection::Raced { evaluated, train: 8, went_on, .. }) => {
                after.push(*evaluated);
                assert_eq!(c.scores.len(), *evaluated, "{c:?}");
                let mean = c.scores.iter().map(|s| s.score).sum::<f64>() / c.scores.len() as f64;
                assert!((c.train_mean - mean).abs() < 1e-12);
                assert!(*went_on >= 1);
            }
            None => assert_eq!(c.scores.len(), 8, "the finalist ran on all of train"),
            other => panic!("{other:?}"),
        }
    }
    after.sort_unstable();
    assert_eq!(after, vec![2, 2, 4], "a quarter of train, then half");
    // The report reads the typed outcome: dropped candidates keep their partial means.
    let run = crate::report::load_run(&fx.out("race")).unwrap();
    let a = crate::report::analysis::analyze(&run, None);
    let raced: Vec<_> =
        a.candidates().filter(|c| matches!(c.status, crate::report::analysis::CandStatus::Raced { .. })).collect();
    assert_eq!(raced.len(), 3);
    for c in raced {
        let logged = cands.iter().find(|x| x.index == c.index).unwrap();
        assert!((c.train_mean - logged.train_mean).abs() < 1e-12);
    }
}

/// Answers every call with `text`.
struct Scripted(String);

impl Optimizer for Scripted {
    fn describe(&self) -> String {
        "scripted optimizer".into()
    }
    fn complete(&mut self, _req: &ChatRequest) -> Result<ChatReply, CallError> {
        Ok(ChatReply { text: self.0.clone(), input_tokens: 10, output_tokens: 5, attempts: 1, latency_ms: 0.0 })
    }
}

#[test]
fn llm_candidates_that_copy_train_or_repeat_the_prompt_are_rejected_typed() {
    let fx = Fixture::new(4, 2, 0);
    let task = fx.task();
    let copy = format!("<prompt>Answer like this: {}</prompt>", task.split("train").unwrap().examples[0].text.repeat(3));
    for (name, text, want) in
        [("leak", copy, "leakage"), ("dup", format!("<prompt>{}</prompt>", task.prompt.trim()), "duplicate")]
    {
        let mut config = fx.config();
        config.search.optimizer = "openai:scripted".parse().unwrap();
        config.search.proposer = "rewrite".parse().unwrap();
        config.search.max_iterations = 1;
        config.search.leak_ngram = 4;
        let engine = ScriptedEngine::new(|_| Ok(answer("none")));
        let mut session = Session::start(fx.task(), &fx.out(name), config).unwrap();
        let out = session.run(&engine, Some(Box::new(Scripted(text))), None, &mut super::events::Quiet).unwrap();
        let cands = candidates(&fx.out(name));
        assert_eq!(cands.len(), 2);
        for c in &cands {
            let ok = matches!(
                (&c.rejected, want),
                (Some(Rejection::Leakage { ngram: 4, .. }), "leakage") | (Some(Rejection::Duplicate), "duplicate")
            );
            assert!(ok, "{name}: {:?}", c.rejected);
            assert!(c.scores.is_empty(), "never evaluated");
        }
        assert_eq!(decisions(&fx.out(name))[0].verdict, Verdict::NoCandidate { failed_calls: 0 });
        assert_eq!((out.calls_made, out.summary.spend.calls), (2, 2));
    }
}

/// Answers with a better instruction only when the request is a reflection with feedback.
struct Reflective;

impl Optimizer for Reflective {
    fn describe(&self) -> String {
        "reflective scripted optimizer".into()
    }
    fn complete(&mut self, req: &ChatRequest) -> Result<ChatReply, CallError> {
        let text = &req.messages[0].content;
        let reflective = text.contains("Analysis:") && text.contains("- label: wrong: answered \"none\"");
        let answer = if reflective {
            "Analysis:\n- label: guessed; copy it.\n<prompt>Copy the label exactly as the document states it.</prompt>"
        } else {
            "<prompt>Say none.</prompt>"
        };
        Ok(ChatReply { text: answer.into(), input_tokens: 10, output_tokens: 5, attempts: 1, latency_ms: 0.0 })
    }
}

#[test]
fn reflect_sends_failures_with_feedback_and_its_instruction_is_kept_when_it_wins() {
    let fx = Fixture::new(4, 2, 2);
    let mut config = fx.config();
    config.search.optimizer = "openai:scripted".parse().unwrap();
    config.search.proposer = "reflect".parse().unwrap();
    config.search.max_iterations = 1;
    config.search.worst = 2;
    // Right only under the reflected instruction.
    let engine = ScriptedEngine::new(|r| {
        Ok(answer(&if prompt_of(r).contains("Copy the label exactly") { label(r) } else { "none".into() }))
    });
    let mut session = Session::start(fx.task(), &fx.out("reflect"), config).unwrap();
    let out = session.run(&engine, Some(Box::new(Reflective)), None, &mut super::events::Quiet).unwrap();
    let d = decisions(&fx.out("reflect"));
    assert_eq!(d[0].verdict, Verdict::Accepted, "{d:?}");
    let c = &candidates(&fx.out("reflect"))[0];
    assert_eq!(c.proposer, "reflect");
    assert!((out.summary.rows.iter().find(|r| r.split == "test").unwrap().best_mean - 1.0).abs() < 1e-12);
}

#[test]
fn the_library_starts_and_resumes_a_run_that_ends_as_an_uninterrupted_one() {
    let fx = Fixture::new(6, 2, 2);
    let engine = ScriptedEngine::new(demos_help(false));
    let (whole, _) = run(&fx, fx.config(), &engine, "whole");
    whole.unwrap();
    let full = std::fs::read_to_string(fx.out("whole").join(LOG_FILE)).unwrap();

    // The same run, killed after its 12th record with half of the 13th written.
    let (_, _) = run(&fx, fx.config(), &engine, "killed");
    let log = fx.out("killed").join(LOG_FILE);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 14);
    let cut = format!("{}\n{}", lines[..12].join("\n"), &lines[12][..lines[12].len() / 2]);
    std::fs::write(&log, cut).unwrap();

    let before = engine.requests();
    let mut session = Session::resume(&fx.out("killed"), Some(fx.dir.path())).unwrap();
    assert_eq!(session.warnings.len(), 1, "the torn line is reported: {:?}", session.warnings);
    session.run(&engine, None, None, &mut super::events::Quiet).unwrap();
    let resumed = std::fs::read_to_string(&log).unwrap();
    let outcome = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| ["candidate", "decision", "final"].contains(&v["type"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(outcome(&resumed), outcome(&full));
    let evals = |text: &str| text.lines().filter(|l| l.contains("\"type\":\"eval\"")).count();
    assert_eq!(evals(&resumed), evals(&full), "every example scored once");
    let logged_evals = lines[..12].iter().filter(|l| l.contains("\"type\":\"eval\"")).count();
    assert_eq!(engine.requests() - before, evals(&full) - logged_evals, "nothing already logged ran again");

    // A resumed run's task must be the run's task.
    let other = Fixture::new(2, 1, 0);
    let err = Session::resume(&fx.out("killed"), Some(other.dir.path())).unwrap_err();
    assert!(err.is_input() && err.to_string().contains("is a run of task"), "{err}");
    let err = Session::resume(&fx.out("nothing"), None).unwrap_err();
    assert!(err.is_input() && err.to_string().contains("not a run directory"), "{err}");
}

/// Right on document i when the prompt shows a demo of train document j != i with
/// i % 3 == j % 3: each demo fixes other examples, so candidates lead different examples.
fn demo_classes(r: &Request) -> String {
    let text = prompt_of(r);
    let own: usize = label(r)[1..].parse().unwrap();
    let demos = text.split("Document (train) number ").skip(1).filter_map(|s| s.split(':').next()?.parse::<usize>().ok());
    let scored = text.rfind("Document (").map_or("", |at| &text[at..]);
    let is_train = scored.starts_with("Document (train)");
    let right = demos.into_iter().any(|j| j % 3 == own % 3 && !(is_train && j == own));
    answer(&if right { label(r) } else { "none".into() })
}

fn pareto_config(fx: &Fixture) -> RunConfig {
    let mut config = fx.config();
    config.search.search = crate::config::SearchMode::Pareto;
    config.search.proposer = "demos,demos,merge".parse().unwrap();
    config.search.racing = crate::config::Racing::Off;
    config.search.max_iterations = 6;
    config
}

#[test]
fn a_pareto_run_draws_parents_from_the_frontier_and_merges_two_of_them() {
    let fx = Fixture::new(6, 3, 3);
    let engine = ScriptedEngine::new(|r| Ok(demo_classes(r)));
    let (out, _) = run(&fx, pareto_config(&fx), &engine, "pareto");
    out.unwrap();
    let cands = candidates(&fx.out("pareto"));
    let baseline = super::prompt::Prompt::new(fx.task().prompt.clone(), fx.task().framing.clone()).sha256();
    for (i, c) in cands.iter().enumerate() {
        // A parent is always a prompt scored on all of train before this candidate.
        if let Some(p) = &c.parent_sha256 {
            let known = *p == baseline || cands[..i].iter().any(|e| &e.prompt_sha256 == p && e.scores.len() == 6);
            assert!(known, "candidate {i}: parent {p} was not scored on all of train before it");
        }
    }
    // Iteration 1 started from a frontier member that was not the incumbent.
    assert!(cands.iter().any(|c| c.iteration == 1 && c.proposer == "demos" && c.parent_sha256.is_some()));
    // Iteration 2 merged iteration 1's two candidates (demos {5, 3} and {5, 4}) both ways: each
    // carries the three demos, fixes three examples where its parents fixed two, and is kept.
    let merges: Vec<_> = cands.iter().filter(|c| c.proposer == "merge").collect();
    assert_eq!(merges.len(), 2);
    for m in &merges {
        assert!(m.parent_sha256.is_some());
        assert_eq!(m.demo_ids.len(), 3, "a merge carries both parents' demos: {:?}", m.demo_ids);
        assert!((m.train_mean - 0.5).abs() < 1e-12);
    }
    let d = decisions(&fx.out("pareto"));
    assert_eq!(d[2].verdict, Verdict::Accepted);
    // Then demos has nothing left to draw from, which does not stop the schedule until merge
    // has nothing either.
    assert!(d[3].reason.contains("the other proposers of the schedule go on"), "{}", d[3].reason);
    assert!(matches!(&d.last().unwrap().verdict, Verdict::Stopped { by } if by.contains("no two frontier prompts")));
}

#[test]
fn a_killed_pareto_run_resumes_to_the_same_log() {
    let fx = Fixture::new(6, 3, 3);
    let engine = ScriptedEngine::new(|r| Ok(demo_classes(r)));
    let (whole, _) = run(&fx, pareto_config(&fx), &engine, "whole");
    whole.unwrap();
    let full = std::fs::read_to_string(fx.out("whole").join(LOG_FILE)).unwrap();
    let outcome = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| ["candidate", "decision", "final"].contains(&v["type"].as_str().unwrap()))
            .collect()
    };
    let n = full.lines().count();
    // Killed at several points, each resumed to the end.
    for keep in [n / 3, n / 2, 2 * n / 3] {
        let name = format!("killed{keep}");
        let (_, _) = run(&fx, pareto_config(&fx), &engine, &name);
        let log = fx.out(&name).join(LOG_FILE);
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&log, lines[..keep].join("\n") + "\n").unwrap();
        let mut session = Session::resume(&fx.out(&name), Some(fx.dir.path())).unwrap();
        session.run(&engine, None, None, &mut super::events::Quiet).unwrap();
        let resumed = std::fs::read_to_string(&log).unwrap();
        assert_eq!(outcome(&resumed), outcome(&full), "killed after {keep} of {n} records");
    }
}

#[test]
fn engine_errors_are_scored_not_fatal() {
    let fx = Fixture::new(2, 1, 0);
    let engine = ScriptedEngine::new(|r| {
        if label(r) == "L1" {
            Err(engines::EngineError::Decode("scripted failure".into()))
        } else {
            Ok(answer(&label(r)))
        }
    });
    let (out, _) = run(&fx, fx.config(), &engine, "errors");
    let row = out.unwrap().summary.rows.into_iter().find(|r| r.split == "train").unwrap();
    assert!((row.baseline_mean - 0.5).abs() < 1e-12, "{}", row.baseline_mean);
}

#[test]
fn an_eval_budget_stops_the_loop_and_too_small_a_budget_is_refused() {
    let fx = Fixture::new(8, 2, 2);
    let mut config = fx.config();
    config.search.max_iterations = 50;
    config.search.candidates = 2;
    // Baseline 8 + 2, test 2 x 2, an iteration at worst 2 x 8 + 2: the worst case leaves room
    // for 2 iterations; counting the evaluations actually run (racing, the cache) fits more.
    config.search.max_evals = Some(10 + 4 + 2 * 18 + 9);
    let engine = ScriptedEngine::new(|r| Ok(answer(if label(r) == "L0" { "L0" } else { "none" })));
    let (out, _) = run(&fx, config.clone(), &engine, "budget");
    let out = out.unwrap();
    assert!(out.summary.iterations >= 2, "{}", out.summary.iterations);
    assert!(out.summary.stopped_by.starts_with("eval budget 59"), "{}", out.summary.stopped_by);
    let evals = records(&fx.out("budget")).iter().filter(|r| matches!(r, LogRecord::Eval(_))).count();
    // Never over the cap, and it stopped only when a worst-case iteration (18) plus test (4)
    // no longer fit: the budget is used, not reserved.
    assert!(evals <= 59 && evals + 18 + 4 > 59, "{evals}");

    config.search.max_evals = Some(20);
    let err = Session::start(fx.task(), &fx.out("tiny"), config).unwrap_err();
    assert!(err.is_input() && err.to_string().contains("it needs at least"), "{err}");
}

#[test]
fn prompt_tokens_are_recorded_and_capped() {
    let fx = Fixture::new(4, 2, 0);
    let mut config = fx.config();
    config.search.max_iterations = 1;
    // The scripted engine counts words: the task's prompt is 5, a demo adds about 20.
    config.search.max_prompt_tokens = Some(12);
    let engine = ScriptedEngine::new(demos_help(false));
    let (out, events) = run(&fx, config, &engine, "tokens");
    let out = out.unwrap();
    let cands = candidates(&fx.out("tokens"));
    assert!(!cands.is_empty());
    for c in &cands {
        let tokens = c.prompt_tokens.unwrap();
        assert!(tokens > 12, "{tokens}");
        assert_eq!(c.rejected, Some(Rejection::PromptTooLong { tokens, max: 12 }));
    }
    assert_eq!(out.summary.prompt_tokens, Some((5, 5)), "nothing longer was accepted");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Power { train: 4, min_detectable_gain: Some(g) } if (g - 0.25).abs() < 1e-12)));
}
