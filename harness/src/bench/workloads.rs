//! The workloads: prefill, decode, constrained decode, tokenizer, eval pass (on a loaded engine)
//! and scorer (CPU only). Engine workloads read the engine's own per-request phase timings, so
//! the set-up around a request (channel, template) is not counted; the tokenizer, eval pass and
//! scorer are timed with a wall clock around the work alone.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use engines::{ChatMessage, ConstraintBackend, Engine, EngineInfo, Request, Response};

use super::inputs::{fit_prefix, Inputs};
use super::{engine_err, BenchError, Better, Group, Measured, MetricSpec, Plan, Workload};
use crate::eval::{self, EvalSpec, PromptSpec, Silent};
use crate::overflow::Overflow;
use crate::score::score_example;

fn one(engine: &dyn Engine, req: Request, what: &str) -> Result<Response, BenchError> {
    let mut res = engine.generate(&[req]);
    match res.pop() {
        Some(r) => r.map_err(engine_err(what)),
        None => Err(BenchError::Unmeasurable { metric: what.into(), detail: "the engine returned no response".into() }),
    }
}

/// `llama`, `candle`, `candle:q8_0`: metrics of the stored weights keep the engine's plain name.
fn prefix(engine: &dyn Engine) -> String {
    let info = engine.info();
    super::Variant { kind: info.kind, weights: info.weights }.to_string()
}

/// Prompt tokens per second of prefilling a plain user message of a given length (1 token
/// generated; only the prefill phase is timed).
pub struct Prefill {
    spec: MetricSpec,
    engine: Arc<dyn Engine>,
    messages: Vec<ChatMessage>,
}

impl Prefill {
    /// # Errors
    /// When `text` cannot make a `tokens`-token prompt.
    pub fn new(engine: Arc<dyn Engine>, text: &str, tokens: usize) -> Result<Self, BenchError> {
        let messages = fit_prefix(engine.as_ref(), text, tokens, &|t| vec![ChatMessage::user(t)])?;
        let spec =
            MetricSpec::new(format!("{}/prefill/{tokens}", prefix(engine.as_ref())), Group::Prefill, "tok/s", Better::Higher);
        Ok(Self { spec, engine, messages })
    }
}

impl Workload for Prefill {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn engine_info(&self) -> Option<&EngineInfo> {
        Some(self.engine.info())
    }
    fn run(&self) -> Result<Measured, BenchError> {
        let r = one(self.engine.as_ref(), Request::new("prefill", self.messages.clone(), 1), &self.spec.name)?;
        let work = r.tokens.input.saturating_sub(r.tokens.shared_prefix);
        Ok(Measured { work: work as f64, seconds: r.timings.prefill_ms / 1000.0 })
    }
}

/// Generated tokens per second, unconstrained, end-of-generation ignored so every run decodes
/// the same number of tokens. The first token (it ends the prefill) is not counted.
pub struct Decode {
    spec: MetricSpec,
    engine: Arc<dyn Engine>,
    tokens: u32,
}

impl Decode {
    pub fn new(engine: Arc<dyn Engine>, tokens: u32) -> Self {
        let spec =
            MetricSpec::new(format!("{}/decode/{tokens}", prefix(engine.as_ref())), Group::Decode, "tok/s", Better::Higher);
        Self { spec, engine, tokens }
    }
}

impl Workload for Decode {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn engine_info(&self) -> Option<&EngineInfo> {
        Some(self.engine.info())
    }
    fn run(&self) -> Result<Measured, BenchError> {
        let mut req = Request::new("decode", vec![ChatMessage::user("Write about contracts.")], self.tokens + 1);
        req.ignore_eos = true;
        let r = one(self.engine.as_ref(), req, &self.spec.name)?;
        if r.tokens.output != self.tokens as usize + 1 {
            return Err(BenchError::Unmeasurable {
                metric: self.spec.name.clone(),
                detail: format!("asked for {} tokens, got {}", self.tokens + 1, r.tokens.output),
            });
        }
        Ok(Measured { work: f64::from(self.tokens), seconds: r.timings.decode_ms / 1000.0 })
    }
}

/// Milliseconds per generated token of a real extraction request (the task's instruction and a
/// contract cut to a fixed prompt length) under one constraint backend. The difference from
/// `none` is the constraint's overhead per token.
pub struct ConstrainedDecode {
    spec: MetricSpec,
    engine: Arc<dyn Engine>,
    request: Request,
}

impl ConstrainedDecode {
    /// `engine` must have been loaded with `backend`.
    ///
    /// # Errors
    /// When the texts cannot make the prompt.
    pub fn new(engine: Arc<dyn Engine>, inputs: &Inputs, backend: ConstraintBackend, plan: &Plan) -> Result<Self, BenchError> {
        let prompt = PromptSpec { instruction: &inputs.task.prompt, layout: inputs.task.layout, framing: &inputs.task.framing };
        let messages = fit_prefix(engine.as_ref(), &inputs.prefill_text, plan.constraint_prompt_tokens, &|t| prompt.messages(t))?;
        let mut request = Request::new("constraint", messages, plan.constraint_max_tokens);
        if backend == ConstraintBackend::None {
            // Free text may stop at once; decode the full budget so runs compare.
            request.ignore_eos = true;
        } else {
            request = request.with_schema(inputs.constraint.clone());
        }
        let name = format!("{}/constraint/{backend}", prefix(engine.as_ref()));
        Ok(Self { spec: MetricSpec::new(name, Group::Constraint, "ms/token", Better::Lower), engine, request })
    }
}

impl Workload for ConstrainedDecode {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn engine_info(&self) -> Option<&EngineInfo> {
        Some(self.engine.info())
    }
    fn run(&self) -> Result<Measured, BenchError> {
        let r = one(self.engine.as_ref(), self.request.clone(), &self.spec.name)?;
        Ok(Measured { work: r.tokens.output.saturating_sub(1) as f64, seconds: r.timings.decode_ms / 1000.0 })
    }
}

/// Tokens per second of `Engine::count_tokens` (chat template and tokenizer) over every contract
/// of the task.
pub struct Tokenizer {
    spec: MetricSpec,
    engine: Arc<dyn Engine>,
    messages: Vec<Vec<ChatMessage>>,
}

impl Tokenizer {
    pub fn new(engine: Arc<dyn Engine>, inputs: &Inputs) -> Self {
        let messages = inputs.contracts.iter().map(|t| vec![ChatMessage::user(t.as_str())]).collect();
        let spec = MetricSpec::new(format!("{}/tokenizer", prefix(engine.as_ref())), Group::Tokenizer, "tok/s", Better::Higher);
        Self { spec, engine, messages }
    }
}

impl Workload for Tokenizer {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn engine_info(&self) -> Option<&EngineInfo> {
        Some(self.engine.info())
    }
    fn run(&self) -> Result<Measured, BenchError> {
        let t0 = Instant::now();
        let mut tokens = 0;
        for m in &self.messages {
            tokens += self.engine.count_tokens(m).map_err(engine_err(&self.spec.name))?;
        }
        Ok(Measured { work: tokens as f64, seconds: t0.elapsed().as_secs_f64() })
    }
}

/// Wall time of one `promptloop eval` pass (llguidance, bounded schema, batched) over the first
/// examples of a split, scoring included.
pub struct EvalPass {
    spec: MetricSpec,
    engine: Arc<dyn Engine>,
    inputs: Arc<Inputs>,
}

impl EvalPass {
    /// # Errors
    /// Never at present; kept fallible like the other constructors.
    pub fn new(engine: Arc<dyn Engine>, inputs: Arc<Inputs>, plan: &Plan) -> Result<Self, BenchError> {
        let name =
            format!("{}/eval/{}-{}-{}", prefix(engine.as_ref()), inputs.task.name, plan.eval_split, inputs.eval_examples.len());
        Ok(Self { spec: MetricSpec::new(name, Group::Eval, "ms/pass", Better::Lower), engine, inputs })
    }
}

impl Workload for EvalPass {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn engine_info(&self) -> Option<&EngineInfo> {
        Some(self.engine.info())
    }
    fn run(&self) -> Result<Measured, BenchError> {
        let task = &self.inputs.task;
        let spec = EvalSpec {
            prompt: PromptSpec { instruction: &task.prompt, layout: task.layout, framing: &task.framing },
            fields: &task.fields,
            constraint: Some(&self.inputs.constraint),
            validator: &self.inputs.validator,
            max_tokens: task.max_tokens,
            overflow: Overflow::Error,
            drafts: None,
        };
        let (records, wall_ms) = eval::run(self.engine.as_ref(), &spec, &self.inputs.eval_examples, &mut Silent)
            .map_err(|e| BenchError::Unmeasurable { metric: self.spec.name.clone(), detail: e.to_string() })?;
        if let Some(r) = records.iter().find(|r| r.error.is_some()) {
            return Err(BenchError::Unmeasurable {
                metric: self.spec.name.clone(),
                detail: format!(
                    "example {} (line {}) failed: {}",
                    r.id,
                    r.line,
                    r.error_detail.as_deref().or(r.error.as_deref()).unwrap_or("")
                ),
            });
        }
        Ok(Measured { work: 1.0, seconds: wall_ms / 1000.0 })
    }
}

/// Scored outputs per second: `score_example` with schema validation over the scorer cases,
/// `rounds` times per run.
pub struct Scorer {
    spec: MetricSpec,
    inputs: Arc<Inputs>,
    rounds: usize,
}

impl Scorer {
    pub fn new(inputs: Arc<Inputs>, rounds: usize) -> Self {
        let spec = MetricSpec::new(format!("scorer/{}", inputs.task.name), Group::Scorer, "scores/s", Better::Higher);
        Self { spec, inputs, rounds: rounds.max(1) }
    }
}

impl Workload for Scorer {
    fn spec(&self) -> &MetricSpec {
        &self.spec
    }
    fn run(&self) -> Result<Measured, BenchError> {
        let fields = &self.inputs.task.fields;
        let t0 = Instant::now();
        for _ in 0..self.rounds {
            for c in &self.inputs.scorer_cases {
                black_box(score_example(fields, black_box(&c.output), c.truncated, &c.expected, Some(&self.inputs.validator)));
            }
        }
        Ok(Measured { work: (self.rounds * self.inputs.scorer_cases.len()) as f64, seconds: t0.elapsed().as_secs_f64() })
    }
}
