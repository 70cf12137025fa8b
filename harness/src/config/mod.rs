//! The configuration of an optimize run, parsed and validated once: how the search runs
//! ([`SearchOptions`]: optimizer, proposer schedule, caps, gates) and what runs the candidate
//! model ([`EngineSetup`]). The run log's header stores a [`RunConfig`] whole, so `--resume`
//! continues with exactly the configuration the run started with.
//!
//! Both halves serialize flat under the header's `options` key, field for field as logs of
//! format 2 wrote them, so older logs still read.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use engines::{ConstraintBackend, EngineConfig, EngineKind, PrefixCacheConfig, WeightFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::llm::prices::PriceTable;
use crate::llm::OptimizerSpec;
use crate::overflow::Overflow;

/// Leakage guard defaults (see [`crate::optimize::leakage`]).
pub use crate::optimize::leakage::{DEFAULT_NGRAM, DEFAULT_THRESHOLD};

/// A run's whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(flatten)]
    pub search: SearchOptions,
    #[serde(flatten)]
    pub engine: EngineSetup,
}

/// A configuration value the user got wrong (`--flag`: what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl RunConfig {
    /// Everything the user can get wrong in the options, before any work is done.
    ///
    /// # Errors
    /// The first bad value, naming its flag.
    pub fn validate(&self, prices: &PriceTable) -> Result<(), ConfigError> {
        self.search.validate(prices)?;
        if self.engine.batch_size == 0 {
            return Err(ConfigError("--batch-size must be at least 1".into()));
        }
        Ok(())
    }
}

/// How the search runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchOptions {
    #[serde(with = "as_text")]
    pub optimizer: OptimizerSpec,
    /// Proposers used in turn (iteration i uses entry i mod len).
    #[serde(with = "as_text")]
    pub proposer: Schedule,
    /// Worst train examples shown to the optimizer.
    pub worst: usize,
    /// Sampling temperature of `rewrite` calls (`opro` uses 1.0).
    pub temperature: f32,
    /// Output token cap of one optimizer call.
    pub optimizer_max_tokens: u32,
    /// Leakage guard: words per n-gram and the share of copied n-grams that rejects.
    pub leak_ngram: usize,
    pub leak_threshold: f64,
    /// Caps: the loop stops before a call that could cross them.
    pub max_cost: Option<f64>,
    pub max_optimizer_tokens: Option<u64>,
    /// Wall-clock budget of one process (seconds), checked before each iteration and call.
    pub time_budget_s: Option<f64>,
    pub max_iterations: usize,
    /// Candidates per iteration.
    pub candidates: usize,
    /// Demos added per candidate (K).
    pub demos: usize,
    /// What part of its document a demo shows. Logs written before this existed used the head.
    pub demo_excerpt: DemoExcerpt,
    /// Where each iteration's proposals start from: the incumbent, or a Pareto-frontier member.
    pub search: SearchMode,
    pub seed: u64,
    pub accept: Accept,
    pub confidence: f64,
    /// Dev (held out): how far a candidate's mean may fall below the current prompt's and
    /// still be accepted (non-inferiority margin; 0: not at all).
    pub dev_margin: f64,
    /// Cap on evaluations (rollouts: one example scored under one prompt, logged or run): the
    /// loop stops before an iteration that could cross it, keeping room for the test split.
    pub max_evals: Option<usize>,
    /// Candidates whose instruction takes more prompt tokens are rejected before any eval.
    pub max_prompt_tokens: Option<usize>,
    /// How candidates are evaluated on train. Logs written before racing existed did not race.
    #[serde(default = "Racing::off")]
    pub racing: Racing,
    pub limit_train: Option<usize>,
    pub limit_dev: Option<usize>,
    pub limit_test: Option<usize>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            optimizer: OptimizerSpec::None,
            proposer: Schedule(vec![ProposerKind::Demos]),
            worst: 5,
            temperature: 0.7,
            optimizer_max_tokens: 1024,
            leak_ngram: DEFAULT_NGRAM,
            leak_threshold: DEFAULT_THRESHOLD,
            max_cost: None,
            max_optimizer_tokens: None,
            time_budget_s: None,
            max_iterations: 4,
            candidates: 4,
            demos: 2,
            demo_excerpt: DemoExcerpt::Head,
            search: SearchMode::Greedy,
            seed: 0,
            accept: Accept::Bootstrap,
            confidence: 0.9,
            dev_margin: 0.0,
            max_evals: None,
            max_prompt_tokens: None,
            racing: Racing::Halving,
            limit_train: None,
            limit_dev: None,
            limit_test: None,
        }
    }
}

impl SearchOptions {
    /// Whether some iteration calls the optimizer model.
    pub fn needs_llm(&self) -> bool {
        self.proposer.0.iter().any(|k| k.needs_llm())
    }

    /// The search half of [`RunConfig::validate`].
    ///
    /// # Errors
    /// The first bad value, naming its flag.
    pub fn validate(&self, prices: &PriceTable) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.optimizer.is_none() {
            if let Some(k) = self.proposer.0.iter().find(|k| k.needs_llm()) {
                return bad(format!(
                    "--proposer {}: `{}` needs an optimizer model; pass --optimizer openai:MODEL, anthropic:MODEL or local:PATH (or use --proposer demos)",
                    self.proposer,
                    k.as_str()
                ));
            }
        }
        if self.candidates == 0 {
            return bad("--candidates must be at least 1".into());
        }
        if self.demos == 0 && self.proposer.0.contains(&ProposerKind::Demos) {
            return bad("--demos must be at least 1".into());
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return bad("--confidence must be between 0 and 1 (exclusive)".into());
        }
        if !(0.0..=1.0).contains(&self.dev_margin) {
            return bad("--dev-margin must be between 0 and 1 (a drop in mean dev score)".into());
        }
        if self.max_prompt_tokens == Some(0) {
            return bad("--max-prompt-tokens must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.leak_threshold) {
            return bad("--leak-threshold must be between 0 and 1".into());
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("--temperature must be between 0 and 2".into());
        }
        if self.optimizer_max_tokens == 0 {
            return bad("--optimizer-max-tokens must be at least 1".into());
        }
        if let Some(c) = self.max_cost {
            if !(c >= 0.0 && c.is_finite()) {
                return bad("--max-cost must be a non-negative number of USD".into());
            }
            if prices.lookup(&self.optimizer).is_none() {
                return bad(format!(
                    "--max-cost: no price is known for `{}` in {}; add it to a price table (--prices FILE) or cap tokens with --max-optimizer-tokens",
                    self.optimizer, prices.source
                ));
            }
        }
        Ok(())
    }
}

/// Evaluations a run needs at most, by the sizes of its splits (after the limits): the
/// baseline on train and dev, `iterations` iterations of every candidate on all of train plus
/// one finalist on dev, and baseline and best on test. Racing and the eval cache only lower it.
pub fn evals_needed(train: usize, dev: usize, test: usize, candidates: usize, iterations: usize) -> usize {
    train + dev + iterations * (candidates * train + dev) + 2 * test
}

impl SearchOptions {
    /// How many iterations `--max-evals` allows on splits of these sizes (all when uncapped).
    pub fn iterations_within_budget(&self, train: usize, dev: usize, test: usize) -> usize {
        let Some(cap) = self.max_evals else { return self.max_iterations };
        let fixed = evals_needed(train, dev, test, self.candidates, 0);
        let per = self.candidates * train + dev;
        if cap < fixed || per == 0 {
            return 0;
        }
        ((cap - fixed) / per).min(self.max_iterations)
    }

    /// With `--max-evals`: an error when the budget allows fewer than 3 proposals (candidates
    /// evaluated) on splits of these sizes, naming the budget it needs.
    ///
    /// # Errors
    /// The budget is too small.
    pub fn check_budget(&self, train: usize, dev: usize, test: usize) -> Result<(), ConfigError> {
        let Some(cap) = self.max_evals else { return Ok(()) };
        let iterations = 3usize.div_ceil(self.candidates.max(1));
        let needed = evals_needed(train, dev, test, self.candidates, iterations);
        if cap < needed {
            return Err(ConfigError(format!(
                "--max-evals {cap} allows fewer than 3 proposals here (train {train}, dev {dev}, test {test}, {} candidates per iteration); it needs at least {needed}",
                self.candidates
            )));
        }
        Ok(())
    }
}

/// What runs the candidate model: the engine flags of `eval` and `optimize`, resolved (an
/// `--engine auto` is routed before it lands here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(clippy::struct_excessive_bools)] // independent switches, each its own flag
pub struct EngineSetup {
    /// `--model` as given (a known name or a path).
    pub model: String,
    pub engine: EngineKind,
    /// `--on-overflow`: documents longer than the context.
    pub on_overflow: Overflow,
    pub constraint: ConstraintBackend,
    pub batch_size: u32,
    pub threads: Option<usize>,
    pub ctx: Option<u32>,
    pub max_tokens: Option<u32>,
    pub no_bounds: bool,
    pub chat_template: Option<String>,
    /// The engine variant's weight format (`--engine candle:q8_0`).
    pub weights: WeightFormat,
    /// Budgets of the engine's document KV cache (`None`: off). Outputs are the same either way.
    pub prefix_cache: Option<PrefixCacheConfig>,
    /// Forced constraint tokens appended without sampling. Logs written before it existed
    /// decoded every token (`false`), so a resumed run keeps its engine key.
    #[serde(default)]
    pub fast_forward: bool,
    /// Each example's latest output is the draft of its next eval (verified, greedy). Logs
    /// written before it existed drafted nothing (`false`), so a resumed run keeps its key.
    #[serde(default)]
    pub speculative: bool,
    /// The llama-servers of `--engine server:URL,...` (empty otherwise, and then not written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// The API of `servers` (`openai:`; native otherwise, and then not written).
    #[serde(default, skip_serializing_if = "engines::ServerApi::is_native")]
    pub server_api: engines::ServerApi,
    /// `--engine auto` over a routing table that holds endpoints: the engines each example is
    /// routed among (`None`: one engine, `engine`, runs every example). Stored in the header,
    /// so a resumed run routes as it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_example: Option<PerExample>,
}

/// Per-example routing: each prompt goes to the member predicted fastest among those whose
/// threshold holds it (the routing table's rule, per example instead of per run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerExample {
    /// The output tokens the predictions assume (the table's).
    pub max_tokens: u32,
    /// In-process members first (they count tokens without a network call).
    pub members: Vec<RouteMember>,
}

/// One engine of a [`PerExample`] set, with what the routing table learned about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteMember {
    pub engine: EngineKind,
    /// Context per sequence an in-process member is opened with (a server has its own).
    pub ctx: Option<u32>,
    /// The longest prompt (tokens) routed to it.
    pub max_input_tokens: usize,
    /// The endpoints of a `server` member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "engines::ServerApi::is_native")]
    pub server_api: engines::ServerApi,
    /// Prefill milliseconds per input token against input tokens, as in the table.
    pub prefill_ms_per_token: crate::calibrate::LinearFit,
    pub decode_tok_s: f64,
}

impl RouteMember {
    /// `llama`, or `server` (what each record's `engine` says).
    pub fn label(&self) -> String {
        self.engine.to_string()
    }

    /// Predicted milliseconds of one example of `input` tokens with `output` tokens out.
    pub fn predicted_ms(&self, input: usize, output: u32) -> f64 {
        crate::calibrate::predicted_ms(&self.prefill_ms_per_token, self.decode_tok_s, input, output)
    }
}

impl PerExample {
    /// The member for a prompt of `tokens` tokens: the fastest predicted among those whose
    /// threshold holds it; `None` when none does.
    pub fn pick(&self, tokens: usize) -> Option<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.max_input_tokens > 0 && tokens <= m.max_input_tokens)
            .min_by(|(_, a), (_, b)| a.predicted_ms(tokens, self.max_tokens).total_cmp(&b.predicted_ms(tokens, self.max_tokens)))
            .map(|(i, _)| i)
    }

    /// In words, for the router's note and the report.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let at = if m.servers.is_empty() { String::new() } else { format!(" at {}", m.servers.join(",")) };
                format!("{}{at} up to {} tokens", m.label(), m.max_input_tokens)
            })
            .collect();
        format!("each example routed to the fastest that fits: {}", parts.join("; "))
    }
}

impl Default for EngineSetup {
    fn default() -> Self {
        EngineSetup {
            model: "smollm2-135m".into(),
            engine: EngineKind::Llama,
            on_overflow: Overflow::Error,
            constraint: ConstraintBackend::Llguidance,
            batch_size: 4,
            threads: None,
            ctx: None,
            max_tokens: None,
            no_bounds: false,
            chat_template: None,
            weights: WeightFormat::Gguf,
            prefix_cache: None,
            fast_forward: true,
            speculative: true,
            servers: Vec::new(),
            server_api: engines::ServerApi::Native,
            per_example: None,
        }
    }
}

impl EngineSetup {
    /// The engine configuration for the model file at `model_path` (the one recipe `eval`,
    /// `compare` and `optimize` share).
    pub fn engine_config(&self, model_path: &Path) -> EngineConfig {
        let mut cfg = EngineConfig::new(model_path);
        cfg.n_ctx = self.ctx;
        cfg.threads = self.threads;
        cfg.batch_size = self.batch_size;
        cfg.constraint_backend = self.constraint;
        cfg.chat_template.clone_from(&self.chat_template);
        cfg.weights = self.weights;
        cfg.prefix_cache.clone_from(&self.prefix_cache);
        cfg.fast_forward = self.fast_forward;
        cfg.speculative = self.speculative;
        cfg.servers.clone_from(&self.servers);
        cfg.server_api = self.server_api;
        cfg
    }

    /// The configuration of one member of [`Self::per_example`]: this set-up's, with the
    /// member's context and endpoints.
    pub fn member_config(&self, model_path: &Path, member: &RouteMember) -> EngineConfig {
        let mut cfg = self.engine_config(model_path);
        cfg.n_ctx = member.ctx;
        cfg.servers.clone_from(&member.servers);
        cfg.server_api = member.server_api;
        cfg
    }

    /// The prefix cache's default spill directory.
    pub fn default_kv_dir() -> PathBuf {
        crate::models::cache_dir().join("kv")
    }
}

/// How a candidate must beat the current prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    /// Paired bootstrap over per-example deltas: train lower bound > 0; dev upper bound >= 0.
    #[default]
    Bootstrap,
    /// Higher train mean; dev mean not lower.
    Mean,
}

impl fmt::Display for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accept::Bootstrap => "bootstrap",
            Accept::Mean => "mean",
        })
    }
}

impl FromStr for Accept {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "bootstrap" => Ok(Accept::Bootstrap),
            "mean" => Ok(Accept::Mean),
            other => Err(format!("unknown acceptance rule `{other}` (expected bootstrap or mean)")),
        }
    }
}

/// How an iteration's candidates share the train evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Racing {
    /// Every candidate on all of train.
    Off,
    /// Successive halving from a quarter of train: only the better half goes on at each rung.
    #[default]
    Halving,
}

impl Racing {
    fn off() -> Self {
        Racing::Off
    }
}

impl fmt::Display for Racing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Racing::Off => "off",
            Racing::Halving => "halving",
        })
    }
}

impl FromStr for Racing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Racing::Off),
            "halving" => Ok(Racing::Halving),
            other => Err(format!("unknown racing `{other}` (expected halving or off)")),
        }
    }
}

/// Where an iteration's proposals start from (`--search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchMode {
    /// Always the incumbent (the best prompt kept so far).
    #[default]
    Greedy,
    /// A member of the Pareto frontier over train examples, drawn by the examples it leads
    /// (see `optimize::frontier`); the gate still compares with the incumbent.
    Pareto,
}

impl fmt::Display for SearchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SearchMode::Greedy => "greedy",
            SearchMode::Pareto => "pareto",
        })
    }
}

impl FromStr for SearchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "greedy" => Ok(SearchMode::Greedy),
            "pareto" => Ok(SearchMode::Pareto),
            other => Err(format!("unknown search `{other}` (expected greedy or pareto)")),
        }
    }
}

/// What part of a train document a demo shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DemoExcerpt {
    /// The first characters of the document.
    #[default]
    Head,
    /// The head and a window around each gold value where the document states it.
    Evidence,
}

impl fmt::Display for DemoExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DemoExcerpt::Head => "head",
            DemoExcerpt::Evidence => "evidence",
        })
    }
}

impl FromStr for DemoExcerpt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "head" => Ok(DemoExcerpt::Head),
            "evidence" => Ok(DemoExcerpt::Evidence),
            other => Err(format!("unknown demo excerpt `{other}` (expected head or evidence)")),
        }
    }
}

/// A way of making candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposerKind {
    /// The optimizer rewrites the prompt from the worst failures.
    Rewrite,
    /// OPRO: the optimizer sees past prompts with their scores.
    Opro,
    /// Worked examples from failing train examples (no LLM).
    Demos,
    /// Field-guidance edits driven by the scorer's failure classes and evidence (no LLM).
    Edits,
    /// Two Pareto-frontier members combined: one's instruction with the other's field
    /// guidance and demos added (no LLM).
    Merge,
    /// GEPA's reflective step: a random minibatch of the parent's failing train examples with
    /// the scorer's feedback goes to the optimizer, which diagnoses each failed field and
    /// writes a new instruction.
    Reflect,
    /// Instructions and demos searched together: a UCB bandit over the components, fed by
    /// every candidate's train score, picks the next combinations (no LLM).
    Joint,
}

impl ProposerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposerKind::Rewrite => "rewrite",
            ProposerKind::Opro => "opro",
            ProposerKind::Demos => "demos",
            ProposerKind::Edits => "edits",
            ProposerKind::Merge => "merge",
            ProposerKind::Reflect => "reflect",
            ProposerKind::Joint => "joint",
        }
    }
    pub fn needs_llm(self) -> bool {
        !matches!(self, ProposerKind::Demos | ProposerKind::Edits | ProposerKind::Merge | ProposerKind::Joint)
    }
}

/// `--proposer`: one proposer or a comma-separated schedule used in turn, e.g.
/// `rewrite,rewrite,demos`. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<ProposerKind>);

impl Schedule {
    /// The proposer of iteration `it`.
    pub fn at(&self, it: usize) -> ProposerKind {
        self.0[it % self.0.len()]
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|k| k.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            out.push(match part.to_ascii_lowercase().as_str() {
                "rewrite" => ProposerKind::Rewrite,
                "opro" => ProposerKind::Opro,
                "demos" => ProposerKind::Demos,
                "edits" => ProposerKind::Edits,
                "merge" => ProposerKind::Merge,
                "reflect" => ProposerKind::Reflect,
                "joint" => ProposerKind::Joint,
                "" => return Err(format!("--proposer `{s}`: an empty entry in the schedule")),
                other => {
                    return Err(format!(
                        "unknown proposer `{other}` in `{s}`: expected rewrite, opro, reflect, demos, edits, merge or joint (or a comma-separated schedule of them)"
                    ))
                }
            });
        }
        Ok(Schedule(out))
    }
}

/// Serde as the value's text (`Display` / `FromStr`), as logs of format 2 stored it.
mod as_text {
    use super::{fmt, Deserialize, Deserializer, FromStr, Serializer};

    pub fn serialize<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_once_and_print_back() {
        let s: Schedule = "rewrite, opro,demos".parse().unwrap();
        assert_eq!(s.0, vec![ProposerKind::Rewrite, ProposerKind::Opro, ProposerKind::Demos]);
        assert_eq!(s.to_string(), "rewrite,opro,demos");
        assert_eq!(s.at(4), ProposerKind::Opro);
        assert!("rewrite,,demos".parse::<Schedule>().unwrap_err().contains("empty entry"));
        assert!("magic".parse::<Schedule>().unwrap_err().contains("unknown proposer `magic`"));
    }

    #[test]
    fn a_format_2_options_object_reads_as_a_run_config() {
        // As `optimize` wrote the header's options before the split (flat; no fast_forward).
        let old = serde_json::json!({
            "optimizer": "openai:gpt-x", "proposer": "rewrite,demos", "worst": 3, "temperature": 0.5,
            "optimizer_max_tokens": 512, "leak_ngram": 8, "leak_threshold": 0.1, "max_cost": null,
            "max_optimizer_tokens": null, "time_budget_s": null, "max_iterations": 2, "candidates": 3,
            "demos": 1, "seed": 7, "accept": "mean", "confidence": 0.9, "limit_train": 4,
            "limit_dev": null, "limit_test": null, "model": "smollm2-135m", "engine": "llama",
            "on_overflow": "error", "constraint": "llguidance", "batch_size": 2, "threads": 1,
            "ctx": null, "max_tokens": 64, "no_bounds": false, "chat_template": null
        });
        let c: RunConfig = serde_json::from_value(old).unwrap();
        assert_eq!(c.search.optimizer, OptimizerSpec::OpenAi { model: "gpt-x".into() });
        assert_eq!(c.search.proposer.to_string(), "rewrite,demos");
        assert_eq!((c.search.seed, c.search.accept, c.search.racing), (7, Accept::Mean, Racing::Off));
        assert_eq!((c.engine.batch_size, c.engine.max_tokens, c.engine.threads), (2, Some(64), Some(1)));
        assert!(!c.engine.fast_forward && !c.engine.speculative, "older logs neither forwarded nor drafted");
        let back: RunConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn an_eval_budget_is_counted_in_rollouts_and_refused_below_three_proposals() {
        let mut s = SearchOptions { candidates: 2, max_iterations: 10, ..SearchOptions::default() };
        // Baseline 8 + 4, test 2 x 3, one iteration 2 x 8 + 4 = 20.
        assert_eq!(evals_needed(8, 4, 3, 2, 1), 8 + 4 + 20 + 6);
        assert_eq!(s.iterations_within_budget(8, 4, 3), 10);
        s.max_evals = Some(18 + 2 * 20 + 5);
        assert_eq!(s.iterations_within_budget(8, 4, 3), 2);
        assert_eq!(s.check_budget(8, 4, 3), Ok(()), "2 iterations of 2 candidates: 4 proposals");
        s.max_evals = Some(18 + 20);
        let err = s.check_budget(8, 4, 3).unwrap_err().0;
        assert!(err.contains("fewer than 3 proposals") && err.contains("it needs at least 58"), "{err}");
        s.max_evals = Some(10);
        assert_eq!(s.iterations_within_budget(8, 4, 3), 0);
    }

    #[test]
    fn validation_names_the_flag() {
        let prices = PriceTable::builtin();
        let mut c = RunConfig::default();
        assert_eq!(c.validate(&prices), Ok(()));
        c.search.proposer = "rewrite".parse().unwrap();
        assert!(c.validate(&prices).unwrap_err().0.contains("needs an optimizer model"));
        let mut c = RunConfig::default();
        c.engine.batch_size = 0;
        assert!(c.validate(&prices).unwrap_err().0.contains("--batch-size"));
        let mut c = RunConfig::default();
        c.search.confidence = 1.0;
        assert!(c.validate(&prices).unwrap_err().0.contains("--confidence"));
    }
}
