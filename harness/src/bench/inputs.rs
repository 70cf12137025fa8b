//! What the benchmarks feed the engines and the scorer, all taken from a real task (cuad-mini):
//! contract texts for prompts and the tokenizer, the constraint schema, the eval slice, and
//! scorer cases derived from the gold answers.

use std::path::Path;

use engines::{ChatMessage, Engine};
use serde_json::Value;

use super::{engine_err, BenchError, Plan};
use crate::task::{Example, Task};

/// A task and everything derived from it once, before any measurement.
pub struct Inputs {
    pub task: Task,
    /// The eval split's contracts joined, to cut prefill prompts of any length from.
    pub prefill_text: String,
    /// Every contract of every split, for the tokenizer.
    pub contracts: Vec<String>,
    /// The task's schema hardened with bounds from its gold values, as `promptloop eval` does by
    /// default.
    pub constraint: Value,
    pub validator: jsonschema::Validator,
    /// The first `plan.eval_examples` examples of `plan.eval_split`.
    pub eval_examples: Vec<Example>,
    pub scorer_cases: Vec<ScorerCase>,
}

impl Inputs {
    /// Loads the task in `dir` and prepares the inputs `plan` needs.
    ///
    /// # Errors
    /// A task that does not load, a missing split, or an eval slice larger than the split.
    pub fn load(dir: &Path, plan: &Plan) -> Result<Inputs, BenchError> {
        let task = Task::load(dir)?;
        Self::new(task, plan)
    }

    /// # Errors
    /// As [`Inputs::load`].
    pub fn new(task: Task, plan: &Plan) -> Result<Inputs, BenchError> {
        let split = task.split(&plan.eval_split)?;
        if plan.eval_examples == 0 || plan.eval_examples > split.examples.len() {
            return Err(BenchError::Input(format!(
                "the eval pass needs 1 to {} examples of {} (split `{}`), not {}",
                split.examples.len(),
                split.path.display(),
                split.name,
                plan.eval_examples
            )));
        }
        let eval_examples = split.examples[..plan.eval_examples].to_vec();
        let prefill_text = split.examples.iter().map(|e| e.text.as_str()).collect::<Vec<_>>().join("\n\n");
        let contracts = task.splits.values().flat_map(|s| s.examples.iter().map(|e| e.text.clone())).collect();
        let constraint = if task.bounds.enabled {
            let from = task.split(&task.bounds.from_split)?;
            crate::bounds::harden_schema(&task.schema, &from.examples, &task.bounds).0
        } else {
            task.schema.clone()
        };
        let validator = task.validator()?;
        let scorer_cases = scorer_cases(&task);
        Ok(Inputs { task, prefill_text, contracts, constraint, validator, eval_examples, scorer_cases })
    }
}

/// The messages `make` builds from the longest prefix of `text` whose chat-templated prompt is
/// at most `tokens` tokens (binary search on the character count).
///
/// # Errors
/// A tokenizer failure, or a `text` too short to reach `tokens`.
pub fn fit_prefix(
    engine: &dyn Engine,
    text: &str,
    tokens: usize,
    make: &dyn Fn(&str) -> Vec<ChatMessage>,
) -> Result<Vec<ChatMessage>, BenchError> {
    let cut = |chars: usize| text.char_indices().nth(chars).map_or(text, |(i, _)| &text[..i]);
    let count = |chars: usize| engine.count_tokens(&make(cut(chars))).map_err(engine_err("counting prompt tokens"));
    let (mut lo, mut hi) = (0usize, text.chars().count());
    let most = count(hi)?;
    if most < tokens {
        return Err(BenchError::Input(format!("a {tokens}-token prompt: the texts give at most {most} tokens")));
    }
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(mid)? <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(make(cut(lo)))
}

/// One output to score against its gold answer.
#[derive(Debug, Clone)]
pub struct ScorerCase {
    pub output: String,
    pub truncated: bool,
    pub expected: Value,
}

/// Four outputs per gold answer of every split, covering the scorer's paths: the gold JSON
/// itself; every string upper-cased and every list reversed (normalisation, fuzzy list
/// matching); strings cut to half and lists missing their last item (partial credit, misses);
/// and the gold JSON cut in half, flagged truncated (a format failure).
pub fn scorer_cases(task: &Task) -> Vec<ScorerCase> {
    let mut cases = Vec::new();
    for ex in task.splits.values().flat_map(|s| &s.examples) {
        let gold = ex.expected.to_string();
        let case = |output: String, truncated: bool| ScorerCase { output, truncated, expected: ex.expected.clone() };
        let shouted = rewrite(&ex.expected, &|s| s.to_uppercase(), &|mut items| {
            items.reverse();
            items
        });
        let partial = rewrite(&ex.expected, &|s| s.chars().take(s.chars().count() / 2).collect(), &|mut items| {
            items.pop();
            items
        });
        let half: String = gold.chars().take(gold.chars().count() / 2).collect();
        cases.push(case(gold, false));
        cases.push(case(shouted.to_string(), false));
        cases.push(case(partial.to_string(), false));
        cases.push(case(half, true));
    }
    cases
}

fn rewrite(v: &Value, string: &dyn Fn(&str) -> String, list: &dyn Fn(Vec<Value>) -> Vec<Value>) -> Value {
    match v {
        Value::String(s) => Value::String(string(s)),
        Value::Array(items) => Value::Array(list(items.iter().map(|i| rewrite(i, string, list)).collect())),
        Value::Object(map) => Value::Object(map.iter().map(|(k, i)| (k.clone(), rewrite(i, string, list))).collect()),
        other => other.clone(),
    }
}
