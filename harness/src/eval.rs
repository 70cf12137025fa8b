//! The eval runner: renders each example's prompt, sends the split through an engine in
//! batches, scores every output, and hands each record to a [`Reporter`] as soon as it exists
//! (so a `--out` file keeps everything computed even if the run stops half way).

use std::time::Instant;

use engines::{ChatMessage, Engine, EngineError, Request, Response, StopReason, TokenCounts, Timings};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::score::{score_example, ExampleScore, FieldVerdict};
use crate::task::{Example, FieldSpec, Layout};

/// How the model is asked: the instruction being optimized and where the document goes.
#[derive(Debug, Clone)]
pub struct PromptSpec<'a> {
    pub instruction: &'a str,
    pub layout: Layout,
}

impl PromptSpec<'_> {
    /// Chat messages for one document.
    pub fn messages(&self, document: &str) -> Vec<ChatMessage> {
        match self.layout {
            Layout::InstructionFirst => vec![
                ChatMessage::system(self.instruction),
                ChatMessage::user(format!("Contract:\n\n{document}")),
            ],
            Layout::DocumentFirst => vec![ChatMessage::user(format!(
                "Contract:\n\n{document}\n\n---\n\n{}",
                self.instruction
            ))],
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
}

/// Receives progress from [`run`]. The binary draws a progress bar and writes `--out`.
pub trait Reporter {
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

/// A reporter that does nothing.
pub struct Silent;
impl Reporter for Silent {}

/// Runs `examples` through `engine` and scores them. Records come back in example order.
///
/// # Errors
/// Only a reporter failure; engine failures are recorded per example.
pub fn run(
    engine: &dyn Engine,
    spec: &EvalSpec<'_>,
    examples: &[Example],
    reporter: &mut dyn Reporter,
) -> std::io::Result<(Vec<ExampleRecord>, f64)> {
    let t0 = Instant::now();
    reporter.start(examples.len());
    let chunk = engine.info().capabilities.max_batch.max(1);
    let mut records = Vec::with_capacity(examples.len());
    for group in examples.chunks(chunk) {
        let requests: Vec<Request> = group.iter().map(|ex| request(spec, ex)).collect();
        for (ex, res) in group.iter().zip(engine.generate(&requests)) {
            let rec = score(spec, ex, res);
            reporter.record(&rec)?;
            records.push(rec);
        }
    }
    reporter.finish();
    Ok((records, t0.elapsed().as_secs_f64() * 1000.0))
}

fn request(spec: &EvalSpec<'_>, ex: &Example) -> Request {
    let req = Request::new(ex.id.clone(), spec.prompt.messages(&ex.text), spec.max_tokens);
    match spec.constraint {
        Some(schema) => req.with_schema(schema.clone()),
        None => req,
    }
}

fn score(spec: &EvalSpec<'_>, ex: &Example, res: Result<Response, EngineError>) -> ExampleRecord {
    match res {
        Ok(r) => {
            let s = score_example(spec.fields, &r.text, r.truncated(), &ex.expected, Some(spec.validator));
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
            }
        }
        Err(e) => {
            let (kind, tokens) = match &e {
                EngineError::InputTooLong { tokens, .. } => {
                    ("too_long", TokenCounts { input: *tokens, ..TokenCounts::default() })
                }
                _ => ("engine", TokenCounts::default()),
            };
            let failed = ExampleScore::failed(spec.fields, &ex.expected, None, &|_| Value::Null);
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
            }
        }
    }
}

