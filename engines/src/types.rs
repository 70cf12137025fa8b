//! Plain data shared by every backend: the named choices (engine kind, weight format,
//! constraint backend), what to generate and what came back. What to load and what was loaded
//! live in `config` (`EngineConfig`, `EngineInfo`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every backend promptloop knows, whether or not it is compiled into this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// llama.cpp through `llama-cpp-2`.
    Llama,
    /// candle (CPU; CUDA/Metal when enabled).
    Candle,
    /// MLX through `mlx-rs`.
    Mlx,
    /// llama-server processes over HTTP (`--engine server:URL[,URL...]`, feature `remote`): the
    /// same llama.cpp and GGUF, run elsewhere. Not in [`EngineKind::ALL`]: it needs URLs, so
    /// `auto` and calibration never pick it.
    Server,
}

impl EngineKind {
    /// All kinds, in routing preference order.
    pub const ALL: [EngineKind; 3] = [EngineKind::Llama, EngineKind::Candle, EngineKind::Mlx];

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            EngineKind::Llama => "llama",
            EngineKind::Candle => "candle",
            EngineKind::Mlx => "mlx",
            EngineKind::Server => "remote",
        }
    }

    /// The name `--engine` takes and logs show (the serialized name).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Server => "server",
            other => other.feature(),
        }
    }

    /// The weight formats this engine computes with ([`WeightFormat::Gguf`] first): llama.cpp
    /// the GGUF as stored; candle re-quantizes to any (its CPU kernels differ by format); MLX
    /// keeps the GGUF's quantization or dequantizes to f32 (`mlx:f32`: its CPU
    /// `quantized_matmul` runs on one thread, f32 matmuls on every core through BLAS).
    pub fn weight_formats(self) -> &'static [WeightFormat] {
        match self {
            EngineKind::Llama | EngineKind::Server => &[WeightFormat::Gguf],
            EngineKind::Candle => &WeightFormat::ALL,
            EngineKind::Mlx => &[WeightFormat::Gguf, WeightFormat::F32],
        }
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            EngineKind::Llama => cfg!(feature = "llama"),
            EngineKind::Candle => cfg!(feature = "candle"),
            EngineKind::Mlx => cfg!(feature = "mlx"),
            EngineKind::Server => cfg!(feature = "remote"),
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "llama" | "llama.cpp" | "llamacpp" => Ok(EngineKind::Llama),
            "candle" => Ok(EngineKind::Candle),
            "mlx" => Ok(EngineKind::Mlx),
            "server" => Ok(EngineKind::Server),
            other => Err(format!("unknown engine `{other}` (expected llama, candle, mlx or server:URL)")),
        }
    }
}

/// The weight format an engine computes with. The llama engine uses the GGUF as stored; candle
/// can re-quantize at load, because its CPU kernels differ by format (no SIMD kernel for `Q4_1`;
/// f32 prefills fastest but decodes slowest and takes the most memory): an engine *variant*
/// such as `candle:q8_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// The tensors as stored in the GGUF.
    #[default]
    Gguf,
    Q4_0,
    Q8_0,
    F16,
    /// Dequantized to f32 (plain matmuls).
    F32,
}

impl WeightFormat {
    /// Every format, the stored one first.
    pub const ALL: [WeightFormat; 5] =
        [WeightFormat::Gguf, WeightFormat::Q4_0, WeightFormat::Q8_0, WeightFormat::F16, WeightFormat::F32];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Gguf => "gguf",
            WeightFormat::Q4_0 => "q4_0",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::F16 => "f16",
            WeightFormat::F32 => "f32",
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        WeightFormat::ALL.into_iter().find(|w| w.name() == lower).ok_or_else(|| {
            let names: Vec<_> = WeightFormat::ALL.iter().map(|w| w.name()).collect();
            format!("unknown weight format `{s}` (expected {})", names.join(", "))
        })
    }
}

/// How a JSON-Schema constraint is enforced while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConstraintBackend {
    /// llguidance (Rust): token masks from a lexer/parser, ~0.2-0.9 ms per token.
    #[default]
    Llguidance,
    /// llama.cpp's JSON-Schema -> GBNF converter and grammar sampler (slow on big vocabularies).
    Gbnf,
    /// No constraint: the model writes free text.
    None,
}

impl fmt::Display for ConstraintBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConstraintBackend::Llguidance => "llguidance",
            ConstraintBackend::Gbnf => "gbnf",
            ConstraintBackend::None => "none",
        })
    }
}

impl FromStr for ConstraintBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "llguidance" | "llg" => Ok(ConstraintBackend::Llguidance),
            "gbnf" | "grammar" => Ok(ConstraintBackend::Gbnf),
            "none" | "off" => Ok(ConstraintBackend::None),
            other => Err(format!("unknown constraint `{other}` (expected llguidance, gbnf or none)")),
        }
    }
}

/// What a request's output must satisfy.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Constraint {
    /// Free text.
    #[default]
    None,
    /// A JSON value valid for this JSON Schema (enforced by the engine's [`ConstraintBackend`]).
    JsonSchema(serde_json::Value),
}

/// Token selection. Greedy is deterministic for a given engine configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus cut-off, applied after temperature; 1.0 keeps everything.
    pub top_p: f32,
    /// Seed of the per-request random stream.
    pub seed: u64,
}

impl Sampling {
    /// Argmax decoding: the same input gives the same output on the same configuration.
    pub const fn greedy() -> Self {
        Sampling { temperature: 0.0, top_p: 1.0, seed: 0 }
    }

    /// Seeded random sampling.
    pub const fn seeded(temperature: f32, top_p: f32, seed: u64) -> Self {
        Sampling { temperature, top_p, seed }
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

/// One chat message; the engine applies the model's own chat template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: "system".into(), content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: "assistant".into(), content: content.into() }
    }
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Caller's id, echoed in the response.
    pub id: String,
    pub messages: Vec<ChatMessage>,
    pub constraint: Constraint,
    pub max_tokens: u32,
    pub sampling: Sampling,
    /// Keep decoding past end-of-generation tokens (benchmarks only).
    pub ignore_eos: bool,
    /// Where the part of the prompt that repeats across calls (a document) ends. When set and
    /// the engine has a prefix cache, the KV state of the tokens before it is kept and restored
    /// on later calls instead of being recomputed.
    pub prefix_boundary: Option<PrefixBoundary>,
    /// A likely output: this document's output under an earlier prompt. An engine that drafts
    /// (llama, greedy sampling, [`EngineConfig::speculative`]) feeds its tokens ahead of the
    /// model and keeps those the model picks itself, so the output is what plain greedy decoding
    /// gives while most tokens are computed several per step. Others ignore it.
    pub draft: Option<String>,
}

/// A point in a request's messages: everything before byte `byte` of message `message`'s
/// content (and the chat template before it) is the reusable prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixBoundary {
    pub message: usize,
    pub byte: usize,
}

impl Request {
    /// A greedy request with no constraint.
    pub fn new(id: impl Into<String>, messages: Vec<ChatMessage>, max_tokens: u32) -> Self {
        Self {
            id: id.into(),
            messages,
            constraint: Constraint::None,
            max_tokens,
            sampling: Sampling::greedy(),
            ignore_eos: false,
            prefix_boundary: None,
            draft: None,
        }
    }

    /// The same request under a JSON-Schema constraint.
    #[must_use]
    pub fn with_schema(mut self, schema: serde_json::Value) -> Self {
        self.constraint = Constraint::JsonSchema(schema);
        self
    }

    /// The same request with a draft of its output (see [`Request::draft`]).
    #[must_use]
    pub fn with_draft(mut self, draft: impl Into<String>) -> Self {
        self.draft = Some(draft.into());
        self
    }

    /// The same request with a reusable prefix ending at `byte` of message `message`.
    #[must_use]
    pub fn with_prefix_boundary(mut self, message: usize, byte: usize) -> Self {
        self.prefix_boundary = Some(PrefixBoundary { message, byte });
        self
    }
}

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model emitted an end-of-generation token.
    Eos,
    /// The output token budget ran out (the output may be cut off).
    MaxTokens,
    /// The constrained JSON value was complete.
    ConstraintComplete,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ConstraintComplete => "constraint_complete",
        })
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    /// Prompt tokens after the chat template.
    pub input: usize,
    /// Generated tokens (end-of-generation token not counted).
    pub output: usize,
    /// Leading prompt tokens shared with the rest of the batch and prefilled once.
    pub shared_prefix: usize,
    /// Output tokens the constraint forced (appended without sampling; part of `output`).
    #[serde(default)]
    pub forced: usize,
    /// Draft tokens fed ahead of the model for verification (see [`Request::draft`]).
    #[serde(default)]
    pub drafted: usize,
    /// Of those, the ones the model would have picked itself, kept as output.
    #[serde(default)]
    pub accepted: usize,
}

/// Wall-clock phases of one request, in milliseconds.
///
/// In a batch, `prefill_ms` and `ttft_ms` run from the start of the batch: they are the latency
/// this request saw, not CPU time attributed to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub tokenize_ms: f64,
    pub prefill_ms: f64,
    /// Time to first token, tokenization included.
    pub ttft_ms: f64,
    /// From the first generated token to the last.
    pub decode_ms: f64,
    pub total_ms: f64,
}

impl Timings {
    /// Prompt tokens per second of prefill (0 when nothing was measured).
    pub fn prefill_tok_s(&self, counts: &TokenCounts) -> f64 {
        rate(counts.input.saturating_sub(counts.shared_prefix).max(1), self.prefill_ms)
    }

    /// Generated tokens per second after the first one.
    pub fn decode_tok_s(&self, counts: &TokenCounts) -> f64 {
        rate(counts.output.saturating_sub(1), self.decode_ms)
    }
}

fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 && n > 0 {
        n as f64 / (ms / 1000.0)
    } else {
        0.0
    }
}

/// One request's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    pub text: String,
    pub stop: StopReason,
    pub tokens: TokenCounts,
    pub timings: Timings,
    /// Peak resident memory of the process while this request's batch ran (bytes).
    pub peak_rss_bytes: u64,
    /// Requests decoded together with this one (1 = alone).
    pub batch_size: usize,
    /// Which engine batch this request ran in (increasing per engine), to aggregate throughput.
    pub batch_id: u64,
    /// What the prefix cache did for this request (`None`: no boundary or no cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache: Option<PrefixCacheUse>,
    /// Which engine of a per-example routed set ran this request (`None`: not routed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Every output token in order, with its log-probability under the model (in-process
    /// engines; empty for remote ones and the scripted engine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
}

/// One output token and how sure the model was of it: the natural log of its probability under
/// the softmax of the raw logits at that step (before the constraint's mask and the sampler's
/// temperature), computed from logits the decoder has anyway. `logprob` is `None` for a token
/// the constraint forced (fed without a choice: it says nothing about the model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: u32,
    /// Bytes of output text the token added (its piece).
    pub bytes: u32,
    pub logprob: Option<f32>,
}

/// Where a cached prefix came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheTier {
    /// Held in memory.
    Memory,
    /// Read back from the spill directory.
    Disk,
    /// Not cached: computed now and stored.
    Miss,
}

impl fmt::Display for CacheTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheTier::Memory => "memory",
            CacheTier::Disk => "disk",
            CacheTier::Miss => "miss",
        })
    }
}

/// One request's use of the prefix cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrefixCacheUse {
    /// Memory or disk for a hit; `miss` when the prefix was computed (and stored).
    pub tier: CacheTier,
    /// Prompt tokens covered by the cached state.
    pub tokens: usize,
    /// Size of the state restored or stored.
    pub bytes: u64,
    /// Time to restore it (hit) or to compute and store it (miss), in milliseconds.
    pub ms: f64,
}

impl PrefixCacheUse {
    /// Whether the prefix came from the cache.
    pub fn hit(&self) -> bool {
        self.tier != CacheTier::Miss
    }
}

impl Response {
    /// Whether the output hit the token cap.
    pub fn truncated(&self) -> bool {
        self.stop == StopReason::MaxTokens
    }
}
