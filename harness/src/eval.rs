//! The eval runner: renders each example's prompt, sends the split through an engine in
//! batches, scores every output, and hands each record to a [`RecordSink`] as soon as it exists
//! (so a `--out` file keeps everything computed even if the run stops half way).

use std::time::Instant;

use engines::{ChatMessage, Engine, EngineError, Request, Response, StopReason, Timings, TokenCounts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::overflow::{self, Overflow};
use crate::score::{confidence, feedback, score_example, ExampleScore, FieldVerdict};
use crate::task::{Example, FieldSpec, Framing, Layout};

/// How the model is asked: the instruction being optimized, where the document goes and how it
/// is introduced (the task's [`Framing`]).
#[derive(Debug, Clone)]
pub struct PromptSpec<'a> {
    pub instruction: &'a str,
    pub layout: Layout,
    pub framing: &'a Framing,
}

impl PromptSpec<'_> {
    /// Chat messages for one document.
    pub fn messages(&self, document: &str) -> Vec<ChatMessage> {
        let framed = self.framing.document(document);
        match self.layout {
            Layout::InstructionFirst => vec![ChatMessage::system(self.instruction), ChatMessage::user(framed)],
            Layout::DocumentFirst => vec![ChatMessage::user(format!("{framed}\n\n---\n\n{}", self.instruction))],
        }
    }

    /// Where the part of [`Self::messages`] that does not depend on the instruction ends (a
    /// message index and a byte offset in its content): the end of the document (its head
    /// included), with document-first.
    pub fn reusable_prefix(&self, document: &str) -> Option<(usize, usize)> {
        match self.layout {
            Layout::InstructionFirst => None,
            Layout::DocumentFirst => Some((0, self.framing.head_len() + document.len())),
        }
    }
}

/// Everything one eval pass needs besides the engine and the examples.
pub struct EvalSpec<'a> {
    pub prompt: PromptSpec<'a>,
    pub fields: &'a [FieldSpec],
    /// The constraint schema (possibly hardened with bounds); `None` = unconstrained.
    pub constraint: Option<&'a Value>,
    /// Validates outputs (the task's own schema).
    pub validator: &'a jsonschema::Validator,
    pub max_tokens: u32,
    /// What to do with a document longer than the engine's context.
    pub overflow: Overflow,
    /// Earlier outputs by example id (the same documents under another prompt), handed to the
    /// engine as drafts: an engine that verifies drafts computes the tokens that agree several
    /// per step. The output is the model's own either way.
    pub drafts: Option<&'a Drafts>,
}

/// Earlier outputs by example id.
pub type Drafts = std::collections::HashMap<String, String>;

/// Drafts from records of an earlier pass: each example's output, when it has one.
pub fn drafts_from(records: &[ExampleRecord]) -> Drafts {
    records
        .iter()
        .filter(|r| !r.output.is_empty() && r.input_chunks.is_none())
        .map(|r| (r.id.clone(), r.output.clone()))
        .collect()
}

/// One scored example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExampleRecord {
    pub id: String,
    /// Line of the example in its split file.
    pub line: usize,
    /// Raw model output ("" when the engine failed).
    pub output: String,
    pub stop: Option<StopReason>,
    /// Engine error kind when the example could not run (`too_long`, `engine`).
    pub error: Option<String>,
    pub error_detail: Option<String>,
    pub score: f64,
    pub format_ok: bool,
    /// Why the output is not valid JSON for the schema, when it is not.
    pub format_error: Option<String>,
    pub truncated: bool,
    pub fields: Vec<FieldVerdict>,
    pub tokens: TokenCounts,
    pub timings: Timings,
    pub peak_rss_bytes: u64,
    pub batch_size: usize,
    pub batch_id: u64,
    /// The document did not fit: it was split into this many windows (`--on-overflow chunk`)
    /// and the windows' outputs merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_chunks: Option<usize>,
    /// The document did not fit and only its head was used (`--on-overflow truncate`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_truncated: bool,
    /// The engine's prefix cache: the document's KV state restored (memory or disk) or
    /// computed and stored (miss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<engines::PrefixCacheUse>,
    /// The engine that ran it, when examples are routed per example (`--engine auto` over a
    /// table with endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

impl ExampleRecord {
    /// Every field right: no error, well-formed output, each field correct.
    pub fn is_exact(&self) -> bool {
        self.error.is_none() && self.format_ok && self.fields.iter().all(|f| f.correct)
    }
}

/// Where [`run`] sends each record as soon as it is scored, with the pass's start and end (not
/// the HTML report: see `report`). The binary's sink draws a progress bar and writes `--out`.
pub trait RecordSink {
    fn start(&mut self, _total: usize) {}
    /// Called once per example, in order, as soon as it is scored.
    ///
    /// # Errors
    /// A failure here (e.g. the output file cannot be written) stops the run.
    fn record(&mut self, _rec: &ExampleRecord) -> std::io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) {}
}

/// A sink that drops everything.
pub struct Silent;
impl RecordSink for Silent {}

/// Runs `examples` through `engine` and scores them. Records come back in example order.
///
/// # Errors
/// Only a sink failure; engine failures are recorded per example.
pub fn run(
    engine: &dyn Engine,
    spec: &EvalSpec<'_>,
    examples: &[Example],
    sink: &mut dyn RecordSink,
) -> std::io::Result<(Vec<ExampleRecord>, f64)> {
    let t0 = Instant::now();
    sink.start(examples.len());
    let chunk = engine.info().capabilities.max_batch.max(1);
    let mut records = Vec::with_capacity(examples.len());
    for group in examples.chunks(chunk) {
        // Each example becomes one request, or one per window when chunked; all of the group's
        // requests go to the engine together.
        let plans: Vec<Plan> = group.iter().map(|ex| plan(engine, spec, ex)).collect();
        let requests: Vec<Request> = group
            .iter()
            .zip(&plans)
            .flat_map(|(ex, p)| {
                let whole = p.texts.len() == 1;
                p.texts.iter().enumerate().map(move |(i, t)| request(spec, ex, t, i, whole))
            })
            .collect();
        let mut responses = engine.generate(&requests).into_iter();
        for (ex, p) in group.iter().zip(plans) {
            let res: Vec<_> = responses.by_ref().take(p.texts.len()).collect();
            let rec = match p.kind {
                PlanKind::Whole | PlanKind::Truncated => {
                    let mut rec = score(spec, ex, res.into_iter().next().unwrap_or_else(|| Err(missing())));
                    rec.input_truncated = p.kind == PlanKind::Truncated;
                    rec
                }
                PlanKind::Chunked => merge_windows(spec, ex, res),
            };
            sink.record(&rec)?;
            records.push(rec);
        }
    }
    sink.finish();
    Ok((records, t0.elapsed().as_secs_f64() * 1000.0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlanKind {
    Whole,
    Chunked,
    Truncated,
}

/// The document texts an example is run with.
struct Plan {
    kind: PlanKind,
    texts: Vec<String>,
}

fn missing() -> EngineError {
    EngineError::Config("the engine returned fewer responses than requests".into())
}

/// Whole, unless the document does not fit the engine's context and `--on-overflow` says to
/// chunk or truncate it. Token counts use the engine's own tokenizer and chat template.
fn plan(engine: &dyn Engine, spec: &EvalSpec<'_>, ex: &Example) -> Plan {
    let whole = || Plan { kind: PlanKind::Whole, texts: vec![ex.text.clone()] };
    if spec.overflow == Overflow::Error {
        return whole();
    }
    let max_ctx = engine.info().capabilities.max_context;
    let mut fits = |text: &str| -> Result<bool, EngineError> {
        Ok(engine.count_tokens(&spec.prompt.messages(text))? + spec.max_tokens as usize <= max_ctx)
    };
    match fits(&ex.text) {
        Ok(true) | Err(_) => return whole(),
        Ok(false) => {}
    }
    let planned = match spec.overflow {
        Overflow::Chunk => overflow::windows(&ex.text, &mut fits).map(|w| Plan { kind: PlanKind::Chunked, texts: w }),
        _ => overflow::fitting_head(&ex.text, &mut fits).map(|h| Plan { kind: PlanKind::Truncated, texts: vec![h] }),
    };
    match planned {
        Ok(p) if !p.texts.is_empty() && !p.texts[0].is_empty() => p,
        // Not even a sliver fits (the instruction alone is too long): report it as too long.
        _ => whole(),
    }
}

/// The request for window `window` of `ex` (0 when `whole`: not chunked).
fn request(spec: &EvalSpec<'_>, ex: &Example, text: &str, window: usize, whole: bool) -> Request {
    let id = if window == 0 { ex.id.clone() } else { format!("{}#w{window}", ex.id) };
    let mut req = Request::new(id, spec.prompt.messages(text), spec.max_tokens);
    if let Some((message, byte)) = spec.prompt.reusable_prefix(text) {
        req = req.with_prefix_boundary(message, byte);
    }
    // A window of a chunked document has no output of its own to draft from.
    if let Some(draft) = spec.drafts.and_then(|d| d.get(&ex.id)).filter(|_| whole) {
        req = req.with_draft(draft.clone());
    }
    match spec.constraint {
        Some(schema) => req.with_schema(schema.clone()),
        None => req,
    }
}

/// One record from the windows of a chunked document: their outputs merged field-wise, token
/// counts and times summed, the peak the largest.
fn merge_windows(spec: &EvalSpec<'_>, ex: &Example, res: Vec<Result<Response, EngineError>>) -> ExampleRecord {
    let n = res.len();
    let mut tokens = TokenCounts::default();
    let mut timings = Timings::default();
    let (mut peak, mut batch_size, mut batch_id) = (0, 0, u64::MAX);
    let mut engine = None;
    let mut outputs = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for r in res {
        match r {
            Ok(r) => {
                tokens.input += r.tokens.input;
                tokens.output += r.tokens.output;
                tokens.shared_prefix += r.tokens.shared_prefix;
                timings.tokenize_ms += r.timings.tokenize_ms;
                timings.prefill_ms += r.timings.prefill_ms;
                timings.decode_ms += r.timings.decode_ms;
                timings.total_ms += r.timings.total_ms;
                if timings.ttft_ms == 0.0 {
                    timings.ttft_ms = r.timings.ttft_ms;
                }
                peak = peak.max(r.peak_rss_bytes);
                batch_size = batch_size.max(r.batch_size);
                batch_id = batch_id.min(r.batch_id);
                if engine.is_none() {
                    engine.clone_from(&r.engine);
                }
                outputs.push(serde_json::from_str::<Value>(&r.text).ok());
            }
            Err(e) => {
                errors.push(e.to_string());
                outputs.push(None);
            }
        }
    }
    let keys: Vec<&str> = spec.fields.iter().map(|f| f.name.as_str()).collect();
    let merged = overflow::merge(&outputs, &keys).to_string();
    let mut s = score_example(spec.fields, &merged, false, &ex.expected, Some(spec.validator));
    feedback::attach(&mut s, &ex.text);
    ExampleRecord {
        id: ex.id.clone(),
        line: ex.line,
        output: merged,
        stop: None,
        error: None,
        error_detail: (!errors.is_empty()).then(|| format!("{} of {n} windows failed: {}", errors.len(), errors.join("; "))),
        score: s.score,
        format_ok: s.format_ok,
        format_error: s.format_error,
        truncated: false,
        fields: s.fields,
        tokens,
        timings,
        peak_rss_bytes: peak,
        batch_size,
        batch_id,
        input_chunks: Some(n),
        input_truncated: false,
        prefix_cache: None,
        engine,
    }
}

fn score(spec: &EvalSpec<'_>, ex: &Example, res: Result<Response, EngineError>) -> ExampleRecord {
    match res {
        Ok(r) => {
            let mut s = score_example(spec.fields, &r.text, r.truncated(), &ex.expected, Some(spec.validator));
            feedback::attach(&mut s, &ex.text);
            confidence::attach(&mut s, &r.text, &r.logprobs);
            ExampleRecord {
                id: ex.id.clone(),
                line: ex.line,
                output: r.text,
                stop: Some(r.stop),
                error: None,
                error_detail: None,
                score: s.score,
                format_ok: s.format_ok,
                format_error: s.format_error,
                truncated: s.truncated,
                fields: s.fields,
                tokens: r.tokens,
                timings: r.timings,
                peak_rss_bytes: r.peak_rss_bytes,
                batch_size: r.batch_size,
                batch_id: r.batch_id,
                input_chunks: None,
                input_truncated: false,
                prefix_cache: r.prefix_cache,
                engine: r.engine,
            }
        }
        Err(e) => {
            let (kind, tokens) = match &e {
                EngineError::InputTooLong { tokens, .. } => {
                    ("too_long", TokenCounts { input: *tokens, ..TokenCounts::default() })
                }
                _ => ("engine", TokenCounts::default()),
            };
            let mut failed = ExampleScore::failed(spec.fields, &ex.expected, None, &|_| Value::Null);
            feedback::attach(&mut failed, &ex.text);
            ExampleRecord {
                id: ex.id.clone(),
                line: ex.line,
                output: String::new(),
                stop: None,
                error: Some(kind.into()),
                error_detail: Some(e.to_string()),
                score: 0.0,
                format_ok: false,
                format_error: None,
                truncated: false,
                fields: failed.fields,
                tokens,
                timings: Timings::default(),
                peak_rss_bytes: 0,
                batch_size: 0,
                batch_id: u64::MAX,
                input_chunks: None,
                input_truncated: false,
                prefix_cache: None,
                engine: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reusable_prefix_ends_with_the_document_for_any_framing() {
        let doc = "Ticket: printer on fire.\nPlease help.";
        for label in ["Document", "Support ticket #", "Résumé", ""] {
            let framing = Framing::new(label).unwrap();
            let spec = PromptSpec { instruction: "Extract.", layout: Layout::DocumentFirst, framing: &framing };
            let messages = spec.messages(doc);
            let (message, byte) = spec.reusable_prefix(doc).unwrap();
            let content = &messages[message].content;
            assert_eq!(&content[..byte], framing.document(doc), "{label:?}");
            assert_eq!(&content[byte..], "\n\n---\n\nExtract.", "{label:?}");

            let first = PromptSpec { layout: Layout::InstructionFirst, ..spec };
            let messages = first.messages(doc);
            assert_eq!(messages[1].content, framing.document(doc));
            assert_eq!(first.reusable_prefix(doc), None);
        }
        let none = Framing::new("").unwrap();
        let spec = PromptSpec { instruction: "Extract.", layout: Layout::DocumentFirst, framing: &none };
        assert_eq!(spec.messages(doc)[0].content, format!("{doc}\n\n---\n\nExtract."));
    }
}
