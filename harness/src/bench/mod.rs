//! Benchmarks shared by `cargo bench` (criterion, `benches/`) and `promptloop bench`.
//!
//! A [`Workload`] does one unit of measured work on engines that are already loaded (or on none,
//! for the scorer) and says how much work it did in how many seconds. Both front ends time the
//! same `Workload::run`, so their figures agree; model load and warm-up are outside every
//! measurement. [`measure`] repeats a workload and keeps the median; [`baseline`] saves results
//! and compares them with a saved baseline, direction-aware.

pub mod baseline;
mod inputs;
mod workloads;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use engines::{ConstraintBackend, Engine, EngineConfig, EngineError, EngineKind, WeightFormat};
use serde::{Deserialize, Serialize};

pub use inputs::{fit_prefix, scorer_cases, Inputs, ScorerCase};
pub use workloads::{ConstrainedDecode, Decode, EvalPass, Prefill, Scorer, Tokenizer};

/// What a metric measures; `--only` picks groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Prompt tokens per second, at a few prompt lengths.
    Prefill,
    /// Generated tokens per second, unconstrained.
    Decode,
    /// Milliseconds per generated token under each constraint backend.
    Constraint,
    /// Tokens per second of `Engine::count_tokens` (chat template + tokenizer).
    Tokenizer,
    /// Wall time of one eval pass over a fixed slice of a task.
    Eval,
    /// Scored outputs per second (CPU only, no model).
    Scorer,
}

impl Group {
    pub const ALL: [Group; 6] = [Group::Prefill, Group::Decode, Group::Constraint, Group::Tokenizer, Group::Eval, Group::Scorer];

    /// Whether measuring this group needs a model.
    pub fn needs_engine(self) -> bool {
        self != Group::Scorer
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Prefill => "prefill",
            Group::Decode => "decode",
            Group::Constraint => "constraint",
            Group::Tokenizer => "tokenizer",
            Group::Eval => "eval",
            Group::Scorer => "scorer",
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Group {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Group::ALL.into_iter().find(|g| g.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let all: Vec<_> = Group::ALL.iter().map(|g| g.as_str()).collect();
            format!("unknown metric group `{s}` (expected one of {})", all.join(", "))
        })
    }
}

/// Which way is better. A rate (tok/s) is higher-better and reported as work per second; a cost
/// (ms/token, ms/pass) is lower-better and reported as milliseconds per unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

impl fmt::Display for Better {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        })
    }
}

/// The name, group, unit and direction of a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    /// Unique, `/`-separated: `llama/prefill/512`, `scorer/cuad-mini`.
    pub name: String,
    pub group: Group,
    /// `tok/s`, `scores/s` (rates) or `ms/token`, `ms/pass` (costs).
    pub unit: String,
    pub better: Better,
}

impl MetricSpec {
    pub fn new(name: impl Into<String>, group: Group, unit: &str, better: Better) -> Self {
        Self { name: name.into(), group, unit: unit.into(), better }
    }
}

/// One run of a workload: `work` units (tokens, scores, passes) done in `seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub work: f64,
    pub seconds: f64,
}

impl Measured {
    /// The reported value: work per second when higher is better, milliseconds per unit of
    /// work when lower is better.
    pub fn value(&self, better: Better) -> f64 {
        match better {
            Better::Higher => self.work / self.seconds,
            Better::Lower => self.seconds * 1000.0 / self.work,
        }
    }
}

/// One repeatable, measured piece of work.
pub trait Workload {
    fn spec(&self) -> &MetricSpec;

    /// Does the work once and reports what was done and how long the measured phase took
    /// (set-up such as building requests is outside it).
    ///
    /// # Errors
    /// An engine failure, or a result that cannot be measured (no tokens generated).
    fn run(&self) -> Result<Measured, BenchError>;

    /// The engine it runs on (`None` for CPU-only work).
    fn engine_info(&self) -> Option<&engines::EngineInfo> {
        None
    }
}

/// A measured metric: the median over the repeats, with the extremes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub group: Group,
    pub value: f64,
    pub unit: String,
    pub better: Better,
    /// Smallest and largest value over the repeats (equal to `value` in a hand-written file).
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Repeats the median is taken over.
    #[serde(default)]
    pub repeats: usize,
}

/// Runs `w` `warmup` times unmeasured, then `repeats` times, and reports the median value.
///
/// # Errors
/// The first failing run's error; `repeats` of 0.
pub fn measure(w: &dyn Workload, warmup: usize, repeats: usize) -> Result<Metric, BenchError> {
    if repeats == 0 {
        return Err(BenchError::Input("repeats must be at least 1".into()));
    }
    let spec = w.spec();
    for _ in 0..warmup {
        w.run()?;
    }
    let mut values = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let m = w.run()?;
        if !(m.work > 0.0 && m.seconds > 0.0) {
            return Err(BenchError::Unmeasurable {
                metric: spec.name.clone(),
                detail: format!("{} units in {} s", m.work, m.seconds),
            });
        }
        values.push(m.value(spec.better));
    }
    values.sort_by(f64::total_cmp);
    Ok(Metric {
        name: spec.name.clone(),
        group: spec.group,
        value: crate::stats::median(&values),
        unit: spec.unit.clone(),
        better: spec.better,
        min: values.first().copied(),
        max: values.last().copied(),
        repeats,
    })
}

/// Sizes of the benchmark workloads. The defaults are what `cargo bench` and `promptloop bench`
/// measure; a baseline records the plan it was measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Plan {
    /// Prompt lengths of the prefill metrics, in tokens.
    pub prefill_tokens: Vec<usize>,
    /// Tokens generated (after the first) by the decode metric.
    pub decode_tokens: u32,
    /// Prompt length of the constraint metrics (a real extraction prompt cut to this size).
    pub constraint_prompt_tokens: usize,
    /// Output cap of the constraint metrics.
    pub constraint_max_tokens: u32,
    /// Split and number of leading examples of the eval pass.
    pub eval_split: String,
    pub eval_examples: usize,
    /// Sequences decoded together in the eval pass (as `promptloop eval`'s default).
    pub eval_batch: u32,
    /// Passes over all scorer cases per scorer run.
    pub scorer_rounds: usize,
    /// Context per sequence of every engine.
    pub ctx: u32,
    /// CPU threads (`None`: all cores).
    pub threads: Option<usize>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            prefill_tokens: vec![128, 512, 2048],
            decode_tokens: 128,
            constraint_prompt_tokens: 512,
            constraint_max_tokens: 64,
            eval_split: "dev".into(),
            eval_examples: 2,
            eval_batch: 4,
            scorer_rounds: 20,
            ctx: 4096,
            threads: None,
        }
    }
}

/// Errors building or running a workload.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Engine {
        what: String,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Task(#[from] crate::task::TaskError),
    /// Bad sizes or inputs (a prompt length the texts cannot reach, an empty slice).
    #[error("{0}")]
    Input(String),
    /// A run that did no work or took no time (e.g. the model stopped at once).
    #[error("{metric}: nothing to measure ({detail})")]
    Unmeasurable { metric: String, detail: String },
}

fn engine_err(what: impl Into<String>) -> impl FnOnce(EngineError) -> BenchError {
    let what = what.into();
    move |source| BenchError::Engine { what, source }
}

/// An engine and the weight format it computes with: `llama`, `candle`, `candle:q8_0`, ….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub kind: EngineKind,
    pub weights: WeightFormat,
}

impl Variant {
    /// The variants worth benchmarking for an engine: llama computes the GGUF as stored; candle
    /// also re-quantizes (its CPU kernels differ by format: `Q4_1` has no SIMD kernel; f16 is
    /// not benchmarked); MLX also runs dequantized to f32.
    pub fn all_of(kind: EngineKind) -> Vec<Variant> {
        let formats: &[WeightFormat] = match kind {
            EngineKind::Candle => &[WeightFormat::Gguf, WeightFormat::Q4_0, WeightFormat::Q8_0, WeightFormat::F32],
            other => other.weight_formats(),
        };
        formats.iter().map(|&weights| Variant { kind, weights }).collect()
    }
}

impl From<EngineKind> for Variant {
    fn from(kind: EngineKind) -> Self {
        Variant { kind, weights: WeightFormat::Gguf }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.weights {
            WeightFormat::Gguf => write!(f, "{}", self.kind),
            w => write!(f, "{}:{w}", self.kind),
        }
    }
}

/// Loads `model` with an engine variant for the benchmarks.
///
/// # Errors
/// Whatever the engine reports while loading.
pub fn load_engine(
    variant: Variant,
    model: &Path,
    plan: &Plan,
    backend: ConstraintBackend,
    batch: u32,
) -> Result<Arc<dyn Engine>, BenchError> {
    let Variant { kind, weights } = variant;
    let mut cfg = EngineConfig::new(model);
    cfg.weights = weights;
    cfg.n_ctx = Some(plan.ctx);
    cfg.threads = plan.threads;
    cfg.batch_size = batch;
    cfg.constraint_backend = backend;
    let engine =
        engines::load(kind, &cfg).map_err(engine_err(format!("loading {} with {variant} ({backend})", model.display())))?;
    Ok(Arc::from(engine))
}

/// The workloads of `groups` for one engine kind: loads the engines they need (one per
/// constraint backend, one batched engine for the eval pass) and prepares their prompts.
/// The scorer group needs no engine and is left out; see [`scorer_workload`].
///
/// # Errors
/// An engine that does not load, or a plan the inputs cannot satisfy.
pub fn engine_workloads(
    variant: Variant,
    model: &Path,
    plan: &Plan,
    inputs: &Arc<Inputs>,
    groups: &[Group],
) -> Result<Vec<Box<dyn Workload>>, BenchError> {
    let wants = |g: Group| groups.contains(&g);
    let mut out: Vec<Box<dyn Workload>> = Vec::new();
    let unconstrained = if [Group::Prefill, Group::Decode, Group::Tokenizer, Group::Constraint].into_iter().any(wants) {
        Some(load_engine(variant, model, plan, ConstraintBackend::None, 1)?)
    } else {
        None
    };
    if let Some(e) = unconstrained.as_ref().filter(|_| wants(Group::Prefill)) {
        for &n in &plan.prefill_tokens {
            out.push(Box::new(Prefill::new(e.clone(), &inputs.prefill_text, n)?));
        }
    }
    if let Some(e) = unconstrained.as_ref().filter(|_| wants(Group::Decode)) {
        out.push(Box::new(Decode::new(e.clone(), plan.decode_tokens)));
    }
    if wants(Group::Constraint) {
        // The backends this engine has (candle has no GBNF).
        let backends = match &unconstrained {
            Some(e) => e.info().capabilities.constraint_backends.clone(),
            None => vec![ConstraintBackend::None, ConstraintBackend::Llguidance, ConstraintBackend::Gbnf],
        };
        for backend in [ConstraintBackend::None, ConstraintBackend::Llguidance, ConstraintBackend::Gbnf]
            .into_iter()
            .filter(|b| backends.contains(b))
        {
            let e = match (backend, &unconstrained) {
                (ConstraintBackend::None, Some(e)) => e.clone(),
                _ => load_engine(variant, model, plan, backend, 1)?,
            };
            out.push(Box::new(ConstrainedDecode::new(e, inputs, backend, plan)?));
        }
    }
    if let Some(e) = unconstrained.as_ref().filter(|_| wants(Group::Tokenizer)) {
        out.push(Box::new(Tokenizer::new(e.clone(), inputs)));
    }
    if wants(Group::Eval) {
        let e = load_engine(variant, model, plan, ConstraintBackend::Llguidance, plan.eval_batch)?;
        out.push(Box::new(EvalPass::new(e, inputs.clone(), plan)?));
    }
    Ok(out)
}

/// The scorer workload (no engine).
pub fn scorer_workload(inputs: &Arc<Inputs>, plan: &Plan) -> Scorer {
    Scorer::new(inputs.clone(), plan.scorer_rounds)
}
