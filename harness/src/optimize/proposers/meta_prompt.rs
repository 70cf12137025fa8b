//! The LLM proposers: `rewrite` (the optimizer reads the current prompt, the worst train
//! failures, the schema and the failure-class counts, and rewrites the prompt) and `opro` (the
//! meta-prompt also lists the best past prompts with their scores, ascending, as in "Large
//! Language Models as Optimizers", Yang et al. 2023).
//!
//! Only train examples are ever shown to the optimizer. The answer is the new instruction
//! between `<prompt>` and `</prompt>`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::eval::ExampleRecord;
use crate::llm::{ChatRequest, Message, Role};
use crate::score::FailureClass;
use crate::task::{Example, Task};

/// Characters of a document shown around the relevant text of one failure.
pub const FAILURE_EXCERPT_CHARS: usize = 700;
/// Characters of the candidate's output shown per failure.
pub const OUTPUT_CHARS: usize = 400;
/// Past prompts an OPRO meta-prompt shows at most (as in the paper).
pub const OPRO_HISTORY: usize = 20;
/// Failures an OPRO meta-prompt shows (it leans on the history instead).
pub const OPRO_FAILURES: usize = 3;
/// A new instruction shorter than this is treated as a malformed answer.
pub const MIN_PROMPT_CHARS: usize = 20;

const SYSTEM: &str = "You improve instructions (prompts) for a small language model that reads a \
document and outputs one JSON object. Its output is forced to match a JSON Schema, so it never \
fails on formatting: every failure is a wrong value, a value where null was expected, or a null \
where a value was expected. Small models follow short, concrete, rule-like instructions best.";

const ANSWER_FORMAT: &str = "Answer with the new instruction only, between <prompt> and </prompt>. \
Describe general rules; do not copy text from the documents into the instruction. Keep it under \
250 words.";

/// A train example the current prompt got wrong, as shown to the optimizer.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub example: &'a Example,
    pub record: &'a ExampleRecord,
}

/// The `n` lowest-scoring train examples below 1 (ties in split order).
pub fn worst<'a>(train: &'a [Example], records: &'a [ExampleRecord], n: usize) -> Vec<Failure<'a>> {
    let mut failures: Vec<Failure<'a>> = train
        .iter()
        .filter_map(|ex| records.iter().find(|r| r.id == ex.id).map(|record| Failure { example: ex, record }))
        .filter(|f| f.record.score < 1.0)
        .collect();
    failures.sort_by(|a, b| a.record.score.total_cmp(&b.record.score));
    failures.truncate(n);
    failures
}

/// A random minibatch of `n` failing train examples (score below 1), in split order; every
/// failure when there are at most `n`. Deterministic for `seed`.
pub fn minibatch<'a>(train: &'a [Example], records: &'a [ExampleRecord], n: usize, seed: u64) -> Vec<Failure<'a>> {
    let failing: Vec<Failure<'a>> = train
        .iter()
        .filter_map(|ex| records.iter().find(|r| r.id == ex.id).map(|record| Failure { example: ex, record }))
        .filter(|f| f.record.score < 1.0)
        .collect();
    if failing.len() <= n {
        return failing;
    }
    let mut picks = engines::SplitMix64::new(seed).sample_indices(failing.len(), n);
    picks.sort_unstable();
    picks.into_iter().map(|i| failing[i].clone()).collect()
}

/// Failure classes over every field of `records`.
pub fn class_counts(records: &[ExampleRecord]) -> BTreeMap<FailureClass, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        if !r.format_ok {
            let class = if r.truncated { FailureClass::Truncated } else { FailureClass::Format };
            *counts.entry(class).or_insert(0) += 1;
        }
        for f in &r.fields {
            if let Some(c) = f.class {
                *counts.entry(c).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The part of `text` around the first expected value found in it (case-insensitive), at most
/// `max` characters, cut on char boundaries; the start of the text when no value is found.
pub fn excerpt_around(text: &str, expected: &Value, max: usize) -> String {
    let lower = text.to_lowercase();
    // Lower-casing can change byte lengths; only use a hit when the lengths agree.
    let needle_at = (lower.len() == text.len())
        .then(|| needles(expected).into_iter().filter(|n| n.chars().count() >= 4).find_map(|n| lower.find(&n.to_lowercase())))
        .flatten();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    if chars.len() <= max {
        return text.to_owned();
    }
    let center = needle_at.map_or(0, |b| chars.partition_point(|(i, _)| *i < b));
    let start = center.saturating_sub(max / 3).min(chars.len() - max);
    let end = start + max;
    let byte = |i: usize| chars.get(i).map_or(text.len(), |(b, _)| *b);
    let mut out = String::new();
    if start > 0 {
        out.push_str("[...] ");
    }
    out.push_str(text[byte(start)..byte(end)].trim());
    if end < chars.len() {
        out.push_str(" [...]");
    }
    out
}

/// The strings of an expected object, in field order.
fn needles(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(needles).collect(),
        Value::Object(o) => o.values().flat_map(needles).collect(),
        _ => Vec::new(),
    }
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{} [... cut]", &s[..i]),
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// One failure, as the meta-prompt shows it.
fn write_failure(out: &mut String, i: usize, f: &Failure<'_>) {
    let r = f.record;
    let _ = writeln!(out, "### Case {} (score {:.2})", i + 1, r.score);
    let _ = writeln!(
        out,
        "Document excerpt:\n\"\"\"\n{}\n\"\"\"",
        excerpt_around(&f.example.text, &f.example.expected, FAILURE_EXCERPT_CHARS)
    );
    let output = if r.output.trim().is_empty() { "(nothing)".to_owned() } else { cut(r.output.trim(), OUTPUT_CHARS) };
    let _ = writeln!(out, "Model output: {output}");
    if r.truncated {
        let _ = writeln!(out, "(the output hit the token cap: the model was repeating itself)");
    }
    let _ = writeln!(out, "Expected: {}", compact(&f.example.expected));
    let wrong: Vec<_> = r.fields.iter().filter(|v| !v.correct).collect();
    if !wrong.is_empty() {
        out.push_str("Field verdicts:\n");
        for v in wrong {
            let class = v.class.map_or("wrong", FailureClass::as_str);
            if v.feedback.is_empty() {
                let _ = writeln!(
                    out,
                    "- {}: {class} (predicted {}, expected {})",
                    v.field,
                    cut(&compact(&v.predicted), 160),
                    cut(&compact(&v.expected), 160)
                );
            } else {
                // The scorer's feedback: the values, and whether (and where) the expected
                // value is in the document.
                let _ = writeln!(out, "- {}: {class}: {}", v.field, cut(&v.feedback, 320));
            }
        }
    }
    // Fields the model got right on a coin flip: the next prompt may lose them.
    let lucky: Vec<&str> = r.fields.iter().filter(|v| v.right_by_luck()).map(|v| v.field.as_str()).collect();
    if !lucky.is_empty() {
        let _ = writeln!(out, "Right by luck (correct, but the model was unsure): {}", lucky.join(", "));
    }
    out.push('\n');
}

fn describe_classes(counts: &BTreeMap<FailureClass, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(c, n)| {
            let what = match c {
                FailureClass::Format => "output not valid JSON for the schema",
                FailureClass::Truncated => "hit the token cap, usually repeating itself",
                FailureClass::Missed => "null or empty where a value was expected",
                FailureClass::Hallucinated => "a value where null was expected",
                FailureClass::Wrong => "a value that does not match",
            };
            format!("{c} {n} ({what})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn task_header(task: &Task) -> String {
    let mut out = String::new();
    if let Some(d) = &task.description {
        let _ = writeln!(out, "Task: {d}\n");
    }
    let schema = serde_json::to_string_pretty(&task.schema).unwrap_or_default();
    let _ = writeln!(out, "JSON Schema of the output:\n```json\n{}\n```\n", cut(&schema, 4000));
    out
}

/// The `rewrite` meta-prompt.
pub fn rewrite_request(
    task: &Task,
    current: &str,
    records: &[ExampleRecord],
    failures: &[Failure<'_>],
    temperature: f32,
    max_tokens: u32,
    seed: u64,
) -> ChatRequest {
    let mut u = task_header(task);
    let _ = writeln!(u, "Current instruction:\n<prompt>\n{}\n</prompt>\n", current.trim());
    let mean = records.iter().map(|r| r.score).sum::<f64>() / records.len().max(1) as f64;
    let exact = records.iter().filter(|r| r.score >= 1.0).count();
    let _ = writeln!(
        u,
        "With it the model scores {mean:.3} on average over {} training documents ({exact} fully correct). \
         Failures by class (per field): {}.\n",
        records.len(),
        describe_classes(&class_counts(records))
    );
    if !failures.is_empty() {
        let _ = writeln!(u, "The {} worst cases:\n", failures.len());
        for (i, f) in failures.iter().enumerate() {
            write_failure(&mut u, i, f);
        }
    }
    let _ = write!(u, "Rewrite the instruction so that the model gets cases like these right. {ANSWER_FORMAT}");
    request(u, temperature, max_tokens, seed)
}

/// The `reflect` meta-prompt (GEPA's reflective mutation): the current instruction, a minibatch
/// of its failures with the scorer's per-field feedback (what was answered, what was expected,
/// where the expected value is in the document), and a request to diagnose each failed field
/// before writing the new instruction.
pub fn reflect_request(
    task: &Task,
    current: &str,
    batch: &[Failure<'_>],
    temperature: f32,
    max_tokens: u32,
    seed: u64,
) -> ChatRequest {
    let mut u = task_header(task);
    let _ = writeln!(
        u,
        "Current instruction:
<prompt>
{}
</prompt>
",
        current.trim()
    );
    let _ = writeln!(
        u,
        "The model got these {} training cases wrong under it:
",
        batch.len()
    );
    for (i, f) in batch.iter().enumerate() {
        write_failure(&mut u, i, f);
    }
    let _ = write!(
        u,
        "First, under \"Analysis:\", write one line per failed field: what the model did wrong, and the general \
         rule that would have made it right (where in a document to look, when to answer null, how to write \
         the value). Then write the improved instruction: keep what works, add the rules. {ANSWER_FORMAT}"
    );
    request(u, temperature, max_tokens, seed)
}

/// The `opro` meta-prompt: past prompts with their train scores in ascending order (the best
/// [`OPRO_HISTORY`] of them), then a few failures of the current prompt.
pub fn opro_request(
    task: &Task,
    history: &[(String, f64)],
    failures: &[Failure<'_>],
    temperature: f32,
    max_tokens: u32,
    seed: u64,
) -> ChatRequest {
    // Highest first (stable: earlier entries win ties), one entry per text, the best 20.
    let mut sorted: Vec<&(String, f64)> = history.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut best: Vec<&(String, f64)> = Vec::new();
    for h in sorted {
        if !best.iter().any(|b| b.0.trim() == h.0.trim()) {
            best.push(h);
        }
    }
    best.truncate(OPRO_HISTORY);
    best.reverse();
    let mut u = task_header(task);
    u.push_str("Below are earlier instructions with their scores on the training documents (0 to 1, higher is better), in ascending order of score.\n\n");
    for (text, score) in best {
        let _ = writeln!(u, "<prompt>\n{}\n</prompt>\nscore: {score:.3}\n", text.trim());
    }
    if !failures.is_empty() {
        u.push_str("Cases the best instruction still gets wrong:\n\n");
        for (i, f) in failures.iter().take(OPRO_FAILURES).enumerate() {
            write_failure(&mut u, i, f);
        }
    }
    let _ = write!(u, "Write a new instruction that is different from all of the above and scores higher. {ANSWER_FORMAT}");
    request(u, temperature, max_tokens, seed)
}

fn request(user: String, temperature: f32, max_tokens: u32, seed: u64) -> ChatRequest {
    ChatRequest {
        system: Some(SYSTEM.to_owned()),
        messages: vec![Message { role: Role::User, content: user }],
        temperature,
        max_tokens,
        seed: Some(seed),
    }
}

/// The new instruction in an answer: between `<prompt>` and `</prompt>` (the closing tag may be
/// missing when the answer was cut), else inside a code fence, else the whole answer. `Err`
/// when nothing usable is left.
pub fn parse_answer(text: &str) -> Result<String, String> {
    let body = if let Some(start) = text.find("<prompt>") {
        let rest = &text[start + "<prompt>".len()..];
        rest.find("</prompt>").map_or(rest, |end| &rest[..end])
    } else if let Some(start) = text.find("```") {
        let rest = &text[start + 3..];
        let rest = rest.split_once('\n').map_or(rest, |(_, r)| r);
        rest.find("```").map_or(rest, |end| &rest[..end])
    } else {
        text
    };
    let body = body.trim();
    if body.chars().count() < MIN_PROMPT_CHARS {
        return Err(format!("no instruction in the answer ({} characters after extraction)", body.chars().count()));
    }
    Ok(body.to_owned())
}

/// Tokens of a request, estimated from its characters (about 4 per token; 3 to err high).
pub fn estimate_input_tokens(req: &ChatRequest) -> u64 {
    let chars = req.system.as_ref().map_or(0, String::len) + req.messages.iter().map(|m| m.content.len()).sum::<usize>();
    (chars / 3) as u64 + 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::proposers::demos::tests::{example, record};
    use serde_json::json;

    #[test]
    fn answers_are_taken_from_tags_fences_or_whole() {
        assert_eq!(
            parse_answer("Sure!\n<prompt>\nExtract the parties carefully.\n</prompt>\nDone").unwrap(),
            "Extract the parties carefully."
        );
        assert_eq!(parse_answer("<prompt>Extract the parties carefully, cut").unwrap(), "Extract the parties carefully, cut");
        assert_eq!(parse_answer("```text\nExtract the parties carefully.\n```").unwrap(), "Extract the parties carefully.");
        assert_eq!(parse_answer("Extract the parties carefully.").unwrap(), "Extract the parties carefully.");
        assert!(parse_answer("<prompt></prompt>").is_err());
        assert!(parse_answer("   ").is_err());
    }

    #[test]
    fn excerpts_center_on_the_expected_value_and_stay_bounded() {
        let text = format!("{}This Agreement is governed by the laws of Delaware.{}", "x".repeat(3000), "y".repeat(3000));
        let e = excerpt_around(&text, &json!({"governing_law": "Delaware"}), 300);
        assert!(e.contains("Delaware"), "{e}");
        assert!(e.chars().count() <= 300 + 12);
        let none = excerpt_around(&text, &json!({"governing_law": null}), 300);
        assert!(none.starts_with("xxx") && none.ends_with("[...]"));
        assert_eq!(excerpt_around("short", &json!({}), 300), "short");
        let multi = "é".repeat(1000);
        assert!(excerpt_around(&multi, &json!({"a": "zz"}), 100).chars().count() <= 112);
    }

    #[test]
    fn worst_takes_the_lowest_failing_train_examples() {
        let train: Vec<Example> = ["a", "b", "c", "d"].map(example).to_vec();
        let recs = vec![record("a", 0.5), record("b", 1.0), record("c", 0.0), record("d", 0.25)];
        let ids: Vec<&str> = worst(&train, &recs, 2).iter().map(|f| f.example.id.as_str()).collect();
        assert_eq!(ids, ["c", "d"]);
        assert_eq!(worst(&train, &recs, 10).len(), 3);
    }

    #[test]
    fn a_minibatch_is_a_seeded_sample_of_the_failures_in_split_order() {
        let train: Vec<Example> = ["a", "b", "c", "d", "e", "f"].map(example).to_vec();
        let recs: Vec<ExampleRecord> =
            train.iter().enumerate().map(|(i, e)| record(&e.id, if i == 1 { 1.0 } else { 0.0 })).collect();
        let ids = |seed| minibatch(&train, &recs, 3, seed).iter().map(|f| f.example.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(1), ids(1));
        assert_eq!(ids(1).len(), 3);
        assert!(!ids(1).contains(&"b".to_owned()), "only failures");
        let mut sorted = ids(1);
        sorted.sort();
        assert_eq!(sorted, ids(1), "split order");
        assert!((0..20).any(|s| ids(s) != ids(1)), "another seed, another minibatch");
        assert_eq!(minibatch(&train, &recs, 9, 1).len(), 5, "all five failures when they fit");
    }

    #[test]
    fn the_reflect_request_shows_each_failure_with_its_feedback_and_asks_for_a_diagnosis() {
        let task = Task::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad-mini")).unwrap();
        let ex = Example {
            id: "x".into(),
            text: "This Agreement is governed by the laws of Delaware.".into(),
            expected: json!({"governing_law": "Delaware"}),
            line: 1,
        };
        let mut rec = record("x", 0.0);
        rec.output = r#"{"governing_law": null}"#.into();
        rec.fields = vec![crate::score::FieldVerdict {
            field: "governing_law".into(),
            score: 0.0,
            correct: false,
            class: Some(FailureClass::Missed),
            predicted: json!(null),
            expected: json!("Delaware"),
            feedback: "answered null, expected \"Delaware\"; the expected value is in the document at byte 42 of 51".into(),
            evidence: None,
            confidence: None,
            scored: true,
        }];
        // A correct field on a coin flip (a chosen token at p 0.14) is named as such.
        let mut lucky = rec.fields[0].clone();
        lucky.field = "parties".into();
        (lucky.correct, lucky.class, lucky.score, lucky.feedback) = (true, None, 1.0, String::new());
        lucky.confidence = Some(crate::score::confidence::Confidence { mean_logprob: -1.0, min_logprob: -2.0, tokens: 2 });
        rec.fields.push(lucky);
        let req = reflect_request(&task, "Extract the facts.", &[Failure { example: &ex, record: &rec }], 0.7, 512, 3);
        let text = &req.messages[0].content;
        assert!(text.contains("<prompt>\nExtract the facts.\n</prompt>"), "{text}");
        assert!(
            text.contains(
                "- governing_law: missed: answered null, expected \"Delaware\"; the expected value is in the document at byte 42"
            ),
            "{text}"
        );
        assert!(text.contains("governed by the laws of Delaware"), "the excerpt around the evidence: {text}");
        assert!(text.contains("Right by luck (correct, but the model was unsure): parties\n"), "{text}");
        assert!(text.contains("Analysis:") && text.contains("between <prompt> and </prompt>"), "{text}");
        assert_eq!(req.seed, Some(3));
    }

    #[test]
    fn opro_history_is_ascending_unique_and_capped() {
        let task = Task::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad-mini")).unwrap();
        let history: Vec<(String, f64)> = (0..30)
            .map(|i| (format!("Instruction number {i} for the task."), f64::from(i) / 30.0))
            .chain([("Instruction number 29 for the task.".to_owned(), 0.0)])
            .collect();
        let req = opro_request(&task, &history, &[], 1.0, 512, 7);
        let text = &req.messages[0].content;
        assert_eq!(text.matches("\nscore: ").count(), OPRO_HISTORY);
        let first = text.find("number 10 ").unwrap();
        let last = text.find("number 29 ").unwrap();
        assert!(first < last, "ascending order");
        assert!(!text.contains("number 9 "), "only the best 20");
        assert!((req.temperature - 1.0).abs() < f32::EPSILON);
        assert_eq!(req.seed, Some(7));
    }
}
