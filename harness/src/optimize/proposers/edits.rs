//! The `edits` proposer: structured edits of the prompt's field guidance, driven by the
//! scorer's failure classes and evidence. No LLM, no API.
//!
//! The current prompt's train records are tallied per field (missed, hallucinated, wrong), and
//! each candidate is the current prompt with one edit to a "Field guidance:" block at the end
//! of its instruction:
//! - a field mostly **hallucinated** gets "use null unless the document states it";
//! - a field mostly **missed** gets where to look: the words that most often stand just before
//!   its gold value in the train documents (from the evidence spans), or "read the whole text
//!   before answering null" when the value is never there verbatim;
//! - a field mostly **wrong** gets format hints from the schema (date format, enum values,
//!   pattern, list) and "copy it exactly as written" when the gold value is in the document;
//! - a guidance line already in the prompt can be **removed** (ablation), so a line that stopped
//!   helping after later edits is not kept forever.
//!
//! Candidates are ordered by how many failures an edit addresses (ablations last), so the
//! iteration's budget goes to the biggest failure class first; edits addressing as many failures
//! are taken in an order drawn from the run's seed and the iteration, and a prompt already
//! proposed in the run is skipped for the next edit in line. Only train examples are read; the
//! cue words are single words, never document passages, and words common to most train
//! documents are not cues (learned from the data, not a fixed list).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::{Context, Proposed, Proposer};
use crate::eval::ExampleRecord;
use crate::optimize::events::Observer;
use crate::optimize::log::RunLog;
use crate::optimize::prompt::Prompt;
use crate::optimize::OptimizeError;
use crate::score::FailureClass;
use crate::task::{Example, FieldSpec, MatchRule, Task};
use engines::SplitMix64;

/// The line that opens the guidance block in an instruction.
pub const GUIDANCE_HEADER: &str = "Field guidance:";
/// Bytes of document read before a gold value for cue words.
pub const CUE_WINDOW: usize = 80;
/// Cue words named in a where-to-look line.
pub const CUES: usize = 3;

/// A word in at least this share of the train documents is too common to be a cue ("shall" in
/// contracts, "please" in messages): the common words are learned from the data, in any language.
pub const COMMON_DOC_SHARE: f64 = 0.6;
/// Fewer train documents than this are too few to tell common words from cues: none is dropped.
pub const MIN_DOCS_FOR_COMMON: usize = 5;

/// The `edits` proposer: up to `candidates` prompts, each the current one with one edit.
#[derive(Debug, Clone)]
pub struct EditsProposer {
    pub candidates: usize,
    /// The run's seed: the order of edits that address as many failures.
    pub seed: u64,
}

impl Proposer for EditsProposer {
    fn propose(&mut self, ctx: &Context<'_>, _log: &mut RunLog, _obs: &mut dyn Observer) -> Result<Proposed, OptimizeError> {
        let order = Some((self.seed, ctx.iteration));
        let prompts = propose_with(ctx.task, ctx.current, ctx.train, ctx.current_train, self.candidates, order, ctx.seen);
        Ok(Proposed::offline(prompts))
    }

    fn exhausted(&self, proposed: &Proposed) -> Option<String> {
        proposed.candidates.is_empty().then(|| "no field edit left to try".to_owned())
    }
}

/// How one field fared on train under the current prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTally {
    pub field: String,
    pub missed: usize,
    pub hallucinated: usize,
    pub wrong: usize,
    /// Failures (missed or wrong) whose gold value is in the document verbatim.
    pub found: usize,
    /// Words before the gold value, by the number of train documents they stand in.
    pub cues: BTreeMap<String, usize>,
}

/// One change to the guidance block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Add a line (`- field: ...`).
    Add(String),
    /// Remove a line that is in the block.
    Remove(String),
}

/// The words too common to be cues: those in at least [`COMMON_DOC_SHARE`] of the documents,
/// when there are at least [`MIN_DOCS_FOR_COMMON`] of them.
pub fn common_words(train: &[Example]) -> BTreeSet<String> {
    if train.len() < MIN_DOCS_FOR_COMMON {
        return BTreeSet::new();
    }
    let mut df: BTreeMap<String, usize> = BTreeMap::new();
    for ex in train {
        let words: BTreeSet<String> = cue_words(&ex.text).collect();
        for w in words {
            *df.entry(w).or_insert(0) += 1;
        }
    }
    let min = (COMMON_DOC_SHARE * train.len() as f64).ceil() as usize;
    df.into_iter().filter(|(_, n)| *n >= min).map(|(w, _)| w).collect()
}

/// The lower-cased words of `text` that could be cues: alphabetic, at least 4 letters.
fn cue_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4 && w.chars().all(char::is_alphabetic))
        .map(str::to_lowercase)
}

/// Tallies the current prompt's `records` of `train` per field of `fields`.
pub fn tally(fields: &[FieldSpec], train: &[Example], records: &[ExampleRecord]) -> Vec<FieldTally> {
    let common = common_words(train);
    let mut out: Vec<FieldTally> = fields.iter().map(|f| FieldTally { field: f.name.clone(), ..FieldTally::default() }).collect();
    for ex in train {
        let Some(rec) = records.iter().find(|r| r.id == ex.id) else { continue };
        if rec.error.is_some() {
            continue;
        }
        for v in &rec.fields {
            let Some(t) = out.iter_mut().find(|t| t.field == v.field) else { continue };
            match v.class {
                Some(FailureClass::Missed) => t.missed += 1,
                Some(FailureClass::Hallucinated) => t.hallucinated += 1,
                Some(FailureClass::Wrong) => t.wrong += 1,
                _ => continue,
            }
            if !matches!(v.class, Some(FailureClass::Missed | FailureClass::Wrong)) {
                continue;
            }
            let Some((start, _)) = v.evidence.as_ref().and_then(crate::score::feedback::Evidence::first_found) else {
                continue;
            };
            t.found += 1;
            let mut seen: Vec<String> = Vec::new();
            for w in words_before(&ex.text, start).into_iter().filter(|w| !common.contains(w)) {
                if !seen.contains(&w) {
                    *t.cues.entry(w.clone()).or_insert(0) += 1;
                    seen.push(w);
                }
            }
        }
    }
    out
}

/// The lower-cased words of the [`CUE_WINDOW`] bytes before `at` that can serve as cues.
fn words_before(text: &str, at: usize) -> Vec<String> {
    // Offsets come from records; one past the end or off a char boundary of this text (a record
    // of another version of the document) gives no cue rather than a panic.
    let at = at.min(text.len());
    if !text.is_char_boundary(at) {
        return Vec::new();
    }
    let mut from = at.saturating_sub(CUE_WINDOW);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    cue_words(&text[from..at]).collect()
}

/// The most frequent cue words of a tally (ties in alphabetical order). With two or more
/// documents to learn from, a cue must stand before the value in at least two of them: a word
/// seen once is as likely noise as a cue.
fn top_cues(t: &FieldTally) -> Vec<&str> {
    let min = if t.found >= 2 { 2 } else { 1 };
    let mut cues: Vec<(&String, &usize)> = t.cues.iter().filter(|(_, n)| **n >= min).collect();
    cues.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    cues.into_iter().take(CUES).map(|(w, _)| w.as_str()).collect()
}

/// The schema's property for `field`.
fn property<'a>(schema: &'a Value, field: &str) -> Option<&'a Value> {
    schema.get("properties").and_then(|p| p.get(field))
}

/// Format hints for a field from its schema property and match rule.
fn format_hints(spec: &FieldSpec, prop: Option<&Value>) -> Vec<String> {
    let mut hints = Vec::new();
    let types: Vec<&str> = match prop.and_then(|p| p.get("type")) {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let format = prop.and_then(|p| p.get("format")).and_then(Value::as_str);
    if matches!(spec.rule, MatchRule::Date { .. }) || format == Some("date") {
        hints.push("write the date as YYYY-MM-DD".to_owned());
    }
    if let Some(values) = prop.and_then(|p| p.get("enum")).and_then(Value::as_array) {
        let names: Vec<String> = values.iter().filter(|v| !v.is_null()).map(ToString::to_string).collect();
        if !names.is_empty() && names.len() <= 12 {
            hints.push(format!("answer with one of {}", names.join(", ")));
        }
    }
    if let Some(pattern) = prop.and_then(|p| p.get("pattern")).and_then(Value::as_str) {
        hints.push(format!("it must match the pattern {pattern}"));
    }
    if types.contains(&"array") {
        hints.push("list every one, each once".to_owned());
    }
    if let Some(d) = prop.and_then(|p| p.get("description")).and_then(Value::as_str) {
        let d = d.trim().trim_end_matches('.');
        if !d.is_empty() && d.len() <= 200 {
            hints.push(format!("it is {}", lower_first(d)));
        }
    }
    hints
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if c.clone().next().is_some_and(char::is_lowercase) => f.to_lowercase().chain(c).collect(),
        _ => s.to_owned(),
    }
}

/// The candidate edits for `base`, best first: (failures addressed, edit).
pub fn edits(task: &Task, base: &str, tallies: &[FieldTally]) -> Vec<(usize, Edit)> {
    let doc = match task.framing.label() {
        "" => "document".to_owned(),
        l => l.to_lowercase(),
    };
    let mut out: Vec<(usize, Edit)> = Vec::new();
    for (spec, t) in task.fields.iter().zip(tallies) {
        let f = &spec.name;
        if t.hallucinated > 0 {
            out.push((
                t.hallucinated,
                Edit::Add(format!("- {f}: use null unless the {doc} states it in so many words; never guess.")),
            ));
        }
        if t.missed > 0 {
            let cues = top_cues(t);
            let line = if cues.is_empty() {
                format!("- {f}: the {doc} usually states it; read the whole text before answering null.")
            } else {
                let quoted: Vec<String> = cues.iter().map(|w| format!("\"{w}\"")).collect();
                format!("- {f}: the {doc} usually states it; look near words such as {}.", quoted.join(", "))
            };
            out.push((t.missed, Edit::Add(line)));
        }
        if t.wrong > 0 {
            let mut hints = format_hints(spec, property(&task.schema, f));
            if t.found * 2 >= t.wrong + t.missed {
                hints.push(format!("copy it exactly as the {doc} writes it"));
            }
            if !hints.is_empty() {
                out.push((t.wrong, Edit::Add(format!("- {f}: {}.", hints.join("; ")))));
            }
        }
    }
    // The biggest failure count first; the field order of the task breaks ties (stable sort).
    out.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let present = guidance(base);
    out.retain(|(_, e)| matches!(e, Edit::Add(line) if !present.contains(&line.as_str())));
    // Ablations only while something still fails: with every field right there is nothing a
    // removal could fix (the gate keeps a candidate only for a higher train score).
    if tallies.iter().any(|t| t.missed + t.hallucinated + t.wrong > 0) {
        out.extend(present.into_iter().map(|line| (0, Edit::Remove(line.to_owned()))));
    }
    out
}

/// The lines of the guidance block of `base` (empty when it has none).
pub fn guidance(base: &str) -> Vec<&str> {
    match block_start(base) {
        Some(at) => base[at..].lines().skip(1).filter(|l| l.starts_with("- ")).collect(),
        None => Vec::new(),
    }
}

/// Byte offset of the guidance header line in `base`.
fn block_start(base: &str) -> Option<usize> {
    let mut at = 0;
    for line in base.split_inclusive('\n') {
        if line.trim_end() == GUIDANCE_HEADER {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// `base` with `edit` applied; `None` when it changes nothing.
pub fn apply(base: &str, edit: &Edit) -> Option<String> {
    let (head, mut lines) = match block_start(base) {
        Some(at) => (base[..at].trim_end().to_owned(), guidance(base).into_iter().map(str::to_owned).collect::<Vec<_>>()),
        None => (base.trim_end().to_owned(), Vec::new()),
    };
    match edit {
        Edit::Add(line) => {
            if lines.contains(line) {
                return None;
            }
            lines.push(line.clone());
        }
        Edit::Remove(line) => {
            let before = lines.len();
            lines.retain(|l| l != line);
            if lines.len() == before {
                return None;
            }
        }
    }
    if lines.is_empty() {
        return Some(format!("{head}\n"));
    }
    Some(format!("{head}\n\n{GUIDANCE_HEADER}\n{}\n", lines.join("\n")))
}

/// Up to `count` candidates: `current` with one edit each, best edit first (ties in field order).
pub fn propose(task: &Task, current: &Prompt, train: &[Example], records: &[ExampleRecord], count: usize) -> Vec<Prompt> {
    propose_with(task, current, train, records, count, None, &HashSet::new())
}

/// [`propose`], with ties among edits that address as many failures shuffled by `order`'s
/// (seed, iteration), and prompts whose SHA-256 is in `seen` (already proposed) skipped.
#[allow(clippy::implicit_hasher)] // the loop's own set
pub fn propose_with(
    task: &Task,
    current: &Prompt,
    train: &[Example],
    records: &[ExampleRecord],
    count: usize,
    order: Option<(u64, usize)>,
    seen: &HashSet<String>,
) -> Vec<Prompt> {
    let tallies = tally(&task.fields, train, records);
    let mut edits = edits(task, &current.base, &tallies);
    if let Some((seed, iteration)) = order {
        let mut rng = SplitMix64::derive(seed, "edits", iteration as u64);
        // Within each run of equal counts (the list is sorted by count), a seeded shuffle.
        let mut start = 0;
        while start < edits.len() {
            let end = start + edits[start..].iter().take_while(|(n, _)| *n == edits[start].0).count();
            for i in (start + 1..end).rev() {
                let j = start + rng.below(i - start + 1);
                edits.swap(i, j);
            }
            start = end;
        }
    }
    edits
        .into_iter()
        .filter_map(|(_, edit)| apply(&current.base, &edit))
        .map(|base| Prompt { base, ..current.clone() })
        .filter(|p| !seen.contains(&p.sha256()))
        .take(count)
        .collect()
}

#[cfg(test)]
#[path = "edits_tests.rs"]
mod tests;
