//! The llama worker thread: loads the model, opens one context with a KV stream per sequence,
//! and serves jobs until the handle is dropped.
//!
//! A batch of requests is split into groups of at most `batch_size` sequences. In a group the
//! longest common token prefix is prefilled once on sequence 0 and copied to the others
//! (`llama_memory_seq_cp`); then every sequence's own suffix is prefilled, and decoding advances
//! all live sequences one token per `decode` call.
//!
//! One piece at ~850 lines: everything here runs on the worker thread that owns the llama
//! context, and the batch scheduler, the decode step, the constrained pick, drafts and the
//! prefix cache all mutate that one context and its per-sequence state.

use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::LlamaStateSeqFlags;

use super::constraint::{Compiler, SeqConstraint};
use super::{Job, BINDINGS_VERSION};
use crate::memory::PeakWatch;
use crate::prefix_cache::{Key, PrefixStore};
use crate::rng::SplitMix64;
use crate::sampling::{logprob, request_rng};
use crate::support::panic_message;
use crate::{
    CacheTier, Capabilities, ChatMessage, Constraint, ConstraintBackend, EngineConfig, EngineError, EngineInfo, EngineKind,
    JsonScanner, PrefixBoundary, PrefixCacheConfig, PrefixCacheUse, Request, Response, StopReason, Timings, TokenCounts,
    TokenLogprob,
};

/// Marks the end of a request's reusable prefix while rendering the chat template.
const CUT: &str = "\u{10FFFD}promptloop-prefix-end\u{10FFFD}";

// llama.cpp's `llama_flash_attn_type` values (the bindings take the raw C enum). Left at AUTO,
// this build resolved to off on CPU and prefill of 2048 tokens ran at 213 tok/s; on, 255 tok/s
// (llama-bench's own figures for SmolLM2 on 2 cores).
const FLASH_ATTN_DISABLED: i32 = 0;
const FLASH_ATTN_ENABLED: i32 = 1;

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load {
            kind: EngineKind::Llama,
            path: std::path::PathBuf::new(),
            reason: format!("llama backend init: {e}"),
        })
}

/// Entry point of the worker thread.
pub(super) fn run(cfg: &EngineConfig, jobs: &mpsc::Receiver<Job>, ready: &mpsc::Sender<Result<EngineInfo, EngineError>>) {
    let t0 = Instant::now();
    let load_err = |reason: String| EngineError::Load { kind: EngineKind::Llama, path: cfg.model.clone(), reason };
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let model = match LlamaModel::load_from_file(backend, &cfg.model, &LlamaModelParams::default()) {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) => {
            let _ = ready.send(Err(load_err(e.to_string())));
            return;
        }
    };
    let setup = (|| {
        let (template, template_name) = resolve_template(&model, cfg)?;
        let threads = cfg.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let n_seq = cfg.batch_size;
        let n_ctx_seq = cfg.n_ctx.unwrap_or_else(|| model.n_ctx_train().min(16_384));
        if n_ctx_seq < 16 {
            return Err(EngineError::Config(format!("context of {n_ctx_seq} tokens is too small")));
        }
        let total = n_ctx_seq
            .checked_mul(n_seq)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| EngineError::Config("context x batch size overflows".into()))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(total))
            .with_n_batch(cfg.n_batch)
            .with_n_ubatch(cfg.n_batch)
            .with_n_seq_max(n_seq)
            .with_n_threads(threads as i32)
            .with_n_threads_batch(threads as i32)
            .with_kv_unified(cfg.kv_unified)
            .with_flash_attention_policy(if cfg.flash_attention { FLASH_ATTN_ENABLED } else { FLASH_ATTN_DISABLED });
        let ctx = model.new_context(backend, params).map_err(|e| load_err(e.to_string()))?;
        let compiler = Compiler::new(&model, cfg.constraint_backend)?;
        let n_ctx_seq = (ctx.n_ctx() / n_seq) as usize;
        let store = match &cfg.prefix_cache {
            Some(pc) => Some(PrefixStore::open(pc.clone()).map_err(|e| {
                EngineError::Config(format!(
                    "prefix cache directory {}: {e}",
                    pc.disk_dir.as_deref().unwrap_or(std::path::Path::new("")).display()
                ))
            })?),
            None => None,
        };
        let identity = identity(cfg, threads).map_err(|e| load_err(format!("reading the model: {e}")))?;
        let info = describe(&model, cfg, &template_name, threads, n_ctx_seq, ctx.n_ctx(), t0);
        Ok((ctx, compiler, template, info, store, identity))
    })();
    let (ctx, compiler, template, info, store, identity) = match setup {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut worker = Worker {
        model: &model,
        ctx,
        compiler,
        template,
        n_ctx_seq: info.capabilities.max_context,
        n_seq: cfg.batch_size as usize,
        n_batch: cfg.n_batch as usize,
        min_shared_prefix: cfg.min_shared_prefix,
        fast_forward: cfg.fast_forward,
        speculative: cfg.speculative,
        batches_run: 0,
        min_cached: cfg.prefix_cache.as_ref().map_or(PrefixCacheConfig::default().min_tokens, |c| c.min_tokens).max(1),
        store,
        identity,
    };
    if ready.send(Ok(info)).is_err() {
        return;
    }
    for job in jobs {
        match job {
            Job::Generate { requests, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| worker.generate(&requests))).unwrap_or_else(|p| {
                    let why = panic_message(Some(p));
                    requests.iter().map(|_| Err(EngineError::Decode(format!("engine panicked: {why}")))).collect()
                });
                let _ = reply.send(out);
            }
            Job::CountTokens { messages, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| worker.tokenize(&messages).map(|t| t.len())))
                    .unwrap_or_else(|p| Err(EngineError::Decode(format!("engine panicked: {}", panic_message(Some(p))))));
                let _ = reply.send(out);
            }
            Job::Logits { messages, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| worker.first_logits(&messages)))
                    .unwrap_or_else(|p| Err(EngineError::Decode(format!("engine panicked: {}", panic_message(Some(p))))));
                let _ = reply.send(out);
            }
        }
    }
}

fn resolve_template(model: &LlamaModel, cfg: &EngineConfig) -> Result<(LlamaChatTemplate, String), EngineError> {
    let named = |name: &str| {
        LlamaChatTemplate::new(name)
            .map(|t| (t, name.to_string()))
            .map_err(|e| EngineError::ChatTemplate { template: name.into(), reason: e.to_string() })
    };
    let (template, name) = if let Some(name) = &cfg.chat_template {
        named(name)?
    } else if let Ok(t) = model.chat_template(None) {
        (t, "gguf".to_string())
    } else {
        // Base models ship without a template; Gemma's own turn format is the only safe guess.
        let arch = model.meta_val_str("general.architecture").unwrap_or_default();
        if arch.starts_with("gemma") {
            tracing::warn!(%arch, "model has no chat template; using the built-in `gemma` template");
            named("gemma")?
        } else {
            return Err(EngineError::NoChatTemplate { path: cfg.model.clone() });
        }
    };
    // Fail at load, not on the first request, if the template name is unknown.
    let probe = [LlamaChatMessage::new("user".into(), "hi".into())
        .map_err(|e| EngineError::ChatTemplate { template: name.clone(), reason: e.to_string() })?];
    model
        .apply_chat_template(&template, &probe, true)
        .map_err(|e| EngineError::ChatTemplate { template: name.clone(), reason: e.to_string() })?;
    Ok((template, name))
}

fn describe(
    model: &LlamaModel,
    cfg: &EngineConfig,
    template: &str,
    threads: usize,
    n_ctx_seq: usize,
    n_ctx_total: u32,
    t0: Instant,
) -> EngineInfo {
    let meta = |k: &str| model.meta_val_str(k).ok();
    let arch = meta("general.architecture").unwrap_or_else(|| "unknown".into());
    let name = meta("general.name").unwrap_or_else(|| "unnamed".into());
    let n_head = u64::from(model.n_head().max(1));
    let head_dim = |key: &str| {
        meta(&format!("{arch}.attention.{key}"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(model.n_embd().max(0) as u64 / n_head)
    };
    // Upper bound: f16 K and V for every layer and every cell (SWA layers may use less).
    let kv_cache_bytes = u64::from(model.n_layer())
        * u64::from(n_ctx_total)
        * u64::from(model.n_head_kv())
        * (head_dim("key_length") + head_dim("value_length"))
        * 2;
    EngineInfo {
        kind: EngineKind::Llama,
        weights: crate::WeightFormat::Gguf,
        backend_version: BINDINGS_VERSION.into(),
        model_path: cfg.model.clone(),
        model_desc: format!("{name} ({arch}, {:.0}M params)", model.n_params() as f64 / 1e6),
        model_bytes: model.size(),
        n_params: model.n_params(),
        vocab_size: model.n_vocab().max(0) as usize,
        chat_template: template.into(),
        threads,
        constraint_backend: cfg.constraint_backend,
        capabilities: Capabilities {
            max_context: n_ctx_seq,
            max_batch: cfg.batch_size as usize,
            shared_prefix: true,
            prefix_cache: cfg.prefix_cache.is_some(),
            constraint_backends: vec![ConstraintBackend::Llguidance, ConstraintBackend::Gbnf, ConstraintBackend::None],
        },
        kv_cache_bytes,
        train_context: model.n_ctx_train() as usize,
        load_ms: ms(t0),
    }
}

/// What, besides the prefix tokens, decides the KV state: the model file (size and SHA-256 of
/// its first MiB), the bindings, and the settings that change the numbers (attention kernel,
/// micro-batch, threads, KV layout).
fn identity(cfg: &EngineConfig, threads: usize) -> std::io::Result<String> {
    let (sha, size) = crate::digest::file_head_sha256(&cfg.model)?;
    Ok(format!(
        "{BINDINGS_VERSION};model={sha}:{size};fa={};n_batch={};threads={threads};kv_unified={}",
        cfg.flash_attention, cfg.n_batch, cfg.kv_unified
    ))
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub(super) struct Worker<'m> {
    model: &'m LlamaModel,
    pub(super) ctx: LlamaContext<'m>,
    compiler: Compiler,
    template: LlamaChatTemplate,
    n_ctx_seq: usize,
    n_seq: usize,
    pub(super) n_batch: usize,
    min_shared_prefix: usize,
    batches_run: u64,
    /// Shortest reusable prefix worth a separate prefill (and a cache entry).
    min_cached: usize,
    store: Option<PrefixStore>,
    identity: String,
    fast_forward: bool,
    speculative: bool,
}

/// Draft tokens fed at a request's first drafting step, and after a rejection; doubled after
/// each step whose draft was kept whole, up to what the batch has room for.
const DRAFT_START: usize = 16;
const DRAFT_MIN: usize = 4;
/// Longest and shortest output tail looked up in the draft to find where to continue from.
const DRAFT_MATCH_MAX: usize = 8;
const DRAFT_MATCH_MIN: usize = 3;

/// A request's draft and where the output stands in it.
#[derive(Default)]
struct Draft {
    tokens: Vec<LlamaToken>,
    /// Lookups search from here on, so the alignment only moves forward.
    floor: usize,
    /// Most draft tokens to feed at the next step.
    len: usize,
    /// Draft tokens fed at this step after `pending`, to be verified against the logits.
    fed: Vec<LlamaToken>,
    drafted: usize,
    accepted: usize,
}

impl Draft {
    fn new(tokens: Vec<LlamaToken>) -> Self {
        Self { tokens, len: DRAFT_START, ..Self::default() }
    }

    /// The draft tokens that should follow `out` (the output so far), at most `room`: where
    /// `out` is a prefix of the draft, what comes after it; otherwise what follows the first
    /// occurrence, from `floor` on, of the longest tail of `out` (8 down to 3 tokens) found.
    fn propose(&mut self, out: &[LlamaToken], room: usize) -> &[LlamaToken] {
        let room = room.min(self.len);
        if room == 0 || self.tokens.is_empty() {
            return &[];
        }
        let mut from = None;
        if self.floor == 0 && self.tokens.starts_with(out) {
            from = Some(out.len());
        } else {
            for n in (DRAFT_MATCH_MIN..=DRAFT_MATCH_MAX.min(out.len())).rev() {
                let tail = &out[out.len() - n..];
                if let Some(p) = self.tokens[self.floor..].windows(n).position(|w| w == tail) {
                    self.floor += p;
                    from = Some(self.floor + n);
                    break;
                }
            }
        }
        match from {
            Some(start) if start < self.tokens.len() => &self.tokens[start..(start + room).min(self.tokens.len())],
            _ => &[],
        }
    }
}

/// One request in flight.
struct Seq<'r> {
    req: &'r Request,
    slot: usize,
    tokens: Vec<LlamaToken>,
    tokenize_ms: f64,
    constraint: SeqConstraint,
    /// The request's draft, when it has one and drafting applies (greedy, `speculative`).
    draft: Option<Draft>,
    /// Output token ids so far (pending ones included): what the draft is matched against.
    out_tokens: Vec<LlamaToken>,
    scanner: JsonScanner,
    rng: SplitMix64,
    n_past: i32,
    /// Tokens to feed at the next decode step: the one just sampled and any it forced.
    pending: Vec<LlamaToken>,
    out: Vec<u8>,
    /// Each output token with its log-probability (`None`: forced).
    logprobs: Vec<TokenLogprob>,
    /// The log-probability of the token `pick` just chose, for `emit` (forced tokens: `None`).
    picked_lp: Option<f32>,
    n_out: usize,
    n_forced: usize,
    shared: usize,
    /// Tokens of the request's reusable prefix (0: none); prefilled on their own, and cached.
    reusable: usize,
    cache_use: Option<PrefixCacheUse>,
    stop: Option<StopReason>,
    error: Option<EngineError>,
    t_prefilled: f64,
    t_first: f64,
    t_done: f64,
}

impl Worker<'_> {
    pub(super) fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<LlamaToken>, EngineError> {
        let text = self.render(messages)?;
        Ok(self.model.vocab().tokenize(text.as_bytes(), true, true))
    }

    fn render(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let tmpl_err = |reason: String| EngineError::ChatTemplate { template: "model".into(), reason };
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()).map_err(|e| tmpl_err(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        self.model.apply_chat_template(&self.template, &chat, true).map_err(|e| tmpl_err(e.to_string()))
    }

    /// How many leading tokens of `tokens` (the whole prompt) lie before `boundary`: the
    /// template is rendered up to the boundary (marked, then cut), tokenized, and compared with
    /// the whole prompt, so the count is always a true prefix of what is prefilled. 0 when it is
    /// too short to be worth it or the template does not copy the content verbatim.
    fn reusable_prefix(
        &self,
        messages: &[ChatMessage],
        boundary: PrefixBoundary,
        tokens: &[LlamaToken],
    ) -> Result<usize, EngineError> {
        let bad = |why: String| EngineError::Config(format!("prefix boundary {}:{}: {why}", boundary.message, boundary.byte));
        let msg = messages.get(boundary.message).ok_or_else(|| bad(format!("there are only {} messages", messages.len())))?;
        let head = msg
            .content
            .get(..boundary.byte)
            .ok_or_else(|| bad(format!("not a character boundary inside the message's {} bytes", msg.content.len())))?;
        let mut cut = messages[..=boundary.message].to_vec();
        cut[boundary.message].content = format!("{head}{CUT}");
        let text = self.render(&cut)?;
        let Some(end) = text.find(CUT) else {
            tracing::debug!("chat template does not copy the content verbatim: no reusable prefix");
            return Ok(0);
        };
        let prefix = self.model.vocab().tokenize(&text.as_bytes()[..end], true, true);
        let common = prefix.iter().zip(tokens).take_while(|(a, b)| a == b).count();
        // The prompt's last token must be prefilled with logits after the prefix.
        let n = common.min(tokens.len().saturating_sub(1));
        Ok(if n >= self.min_cached { n } else { 0 })
    }

    fn prepare<'r>(&mut self, slot: usize, req: &'r Request) -> Result<Seq<'r>, EngineError> {
        let t = Instant::now();
        let tokens = self.tokenize(&req.messages)?;
        let tokenize_ms = ms(t);
        let max_tokens = req.max_tokens.max(1) as usize;
        let max = self.n_ctx_seq.saturating_sub(max_tokens);
        if tokens.len() > max {
            return Err(EngineError::InputTooLong { tokens: tokens.len(), max, context: self.n_ctx_seq, max_tokens });
        }
        let schema = match &req.constraint {
            Constraint::None => None,
            Constraint::JsonSchema(s) => Some(s),
        };
        let constraint = self.compiler.start(self.model, schema)?;
        let draft = req
            .draft
            .as_deref()
            .filter(|d| self.speculative && req.sampling.is_greedy() && !d.is_empty())
            .map(|d| Draft::new(self.model.vocab().tokenize(d.as_bytes(), false, false)));
        let reusable = match req.prefix_boundary {
            Some(b) => self.reusable_prefix(&req.messages, b, &tokens)?,
            None => 0,
        };
        Ok(Seq {
            req,
            slot,
            tokens,
            tokenize_ms,
            constraint,
            draft,
            out_tokens: Vec::new(),
            scanner: JsonScanner::new(),
            rng: request_rng(req.sampling.seed),
            n_past: 0,
            pending: Vec::new(),
            n_forced: 0,
            out: Vec::new(),
            logprobs: Vec::new(),
            picked_lp: None,
            n_out: 0,
            shared: 0,
            reusable,
            cache_use: None,
            stop: None,
            error: None,
            t_prefilled: 0.0,
            t_first: 0.0,
            t_done: 0.0,
        })
    }

    fn generate(&mut self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        let mut results: Vec<Option<Result<Response, EngineError>>> = requests.iter().map(|_| None).collect();
        let mut ready = Vec::new();
        for (slot, req) in requests.iter().enumerate() {
            match self.prepare(slot, req) {
                Ok(seq) => ready.push(seq),
                Err(e) => results[slot] = Some(Err(e)),
            }
        }
        while !ready.is_empty() {
            let rest = ready.split_off(ready.len().min(self.n_seq));
            let group = std::mem::replace(&mut ready, rest);
            for (slot, res) in self.run_group(group) {
                results[slot] = Some(res);
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(EngineError::Decode("request was not processed".into())))).collect()
    }

    fn run_group(&mut self, mut seqs: Vec<Seq<'_>>) -> Vec<(usize, Result<Response, EngineError>)> {
        let watch = PeakWatch::start();
        let t0 = Instant::now();
        let outcome = self.prefill(&mut seqs, t0).and_then(|()| self.decode(&mut seqs, t0));
        let peak = watch.peak();
        let batch_size = seqs.len();
        let batch_id = self.batches_run;
        self.batches_run += 1;
        seqs.into_iter()
            .map(|s| {
                let slot = s.slot;
                if let Err(e) = &outcome {
                    return (slot, Err(EngineError::Decode(e.to_string())));
                }
                if let Some(e) = s.error {
                    return (slot, Err(e));
                }
                let timings = Timings {
                    tokenize_ms: s.tokenize_ms,
                    prefill_ms: s.t_prefilled,
                    ttft_ms: s.tokenize_ms + s.t_first,
                    decode_ms: (s.t_done - s.t_first).max(0.0),
                    total_ms: s.tokenize_ms + s.t_done,
                };
                let response = Response {
                    id: s.req.id.clone(),
                    text: String::from_utf8_lossy(&s.out).into_owned(),
                    stop: s.stop.unwrap_or(StopReason::MaxTokens),
                    tokens: TokenCounts {
                        input: s.tokens.len(),
                        output: s.n_out,
                        shared_prefix: s.shared,
                        forced: s.n_forced,
                        drafted: s.draft.as_ref().map_or(0, |d| d.drafted),
                        accepted: s.draft.as_ref().map_or(0, |d| d.accepted),
                    },
                    timings,
                    peak_rss_bytes: peak,
                    batch_size,
                    batch_id,
                    prefix_cache: s.cache_use,
                    engine: None,
                    logprobs: s.logprobs,
                };
                (slot, Ok(response))
            })
            .collect()
    }

    /// Prefills every sequence of the group; samples each sequence's first token as soon as its
    /// last prompt token has logits (they are overwritten by the next `decode`).
    fn prefill(&mut self, seqs: &mut [Seq<'_>], t0: Instant) -> Result<(), EngineError> {
        self.ctx.clear_kv_cache();
        // Reusable prefixes (documents) first, each on its own sequence, restored from the
        // cache or computed alone, so their KV state depends on their tokens only. Requests
        // with one do not share a batch prefix: their prompts differ from the first token on.
        let reusable = seqs.iter().any(|s| s.reusable > 0);
        for (id, s) in seqs.iter_mut().enumerate() {
            if s.reusable > 0 {
                self.reuse_prefix(s, id)?;
            }
        }
        let shared = if seqs.len() > 1 && !reusable { shared_prefix(seqs) } else { 0 };
        let shared = if shared >= self.min_shared_prefix { shared } else { 0 };
        let mut batch = LlamaBatch::new(self.n_batch, self.n_seq as i32);
        if shared > 0 {
            for chunk in seqs[0].tokens[..shared].chunks(self.n_batch) {
                batch.clear();
                let start = seqs[0].n_past;
                for (i, &tok) in chunk.iter().enumerate() {
                    add(&mut batch, tok, start + i as i32, 0, false)?;
                }
                self.decode_batch(&mut batch)?;
                seqs[0].n_past += chunk.len() as i32;
            }
            for (id, s) in seqs.iter_mut().enumerate() {
                if id > 0 {
                    self.ctx
                        .kv_cache_seq_cp(0, id as i32, None, None)
                        .map_err(|e| EngineError::Decode(format!("KV copy: {e}")))?;
                }
                s.n_past = shared as i32;
                s.shared = shared;
            }
        }
        // Each sequence's own suffix; the batch may span sequences.
        batch.clear();
        let mut waiting: Vec<(usize, i32)> = Vec::new();
        for id in 0..seqs.len() {
            let (start, n) = (seqs[id].n_past, seqs[id].tokens.len());
            for i in (start as usize)..n {
                let last = i + 1 == n;
                add(&mut batch, seqs[id].tokens[i], i as i32, id as i32, last)?;
                if last {
                    waiting.push((id, batch.n_tokens() - 1));
                }
                if batch.n_tokens() as usize == self.n_batch {
                    self.decode_batch(&mut batch)?;
                    self.first_tokens(seqs, &mut waiting, t0)?;
                    batch.clear();
                }
            }
            seqs[id].n_past = n as i32;
        }
        if batch.n_tokens() > 0 {
            self.decode_batch(&mut batch)?;
            self.first_tokens(seqs, &mut waiting, t0)?;
        }
        Ok(())
    }

    /// Puts sequence `id`'s reusable prefix in the KV cache: restored when the store has it,
    /// otherwise prefilled alone and stored.
    fn reuse_prefix(&mut self, s: &mut Seq<'_>, id: usize) -> Result<(), EngineError> {
        let t = Instant::now();
        let k = s.reusable;
        let ids: Vec<i32> = s.tokens[..k].iter().map(|t| t.0).collect();
        let key = Key::new(&self.identity, &ids);
        if let Some(hit) = self.store.as_mut().and_then(|st| st.get(&key)) {
            // SAFETY: the bytes were produced by `state_seq_get_data_ext` of a context with the
            // same identity (the key covers it) and were checked (length, CRC) when read back.
            let ok =
                hit.tokens == k && unsafe { self.ctx.state_seq_set_data_ext(&hit.state, id as i32, LlamaStateSeqFlags::empty()) };
            if ok && self.ctx.kv_cache_seq_pos_max(id as i32) == k as i32 - 1 {
                s.n_past = k as i32;
                s.cache_use = Some(PrefixCacheUse { tier: hit.tier, tokens: k, bytes: hit.state.len() as u64, ms: ms(t) });
                return Ok(());
            }
            tracing::warn!(tokens = k, "prefix cache: restore failed; recomputing the prefix");
            self.ctx
                .clear_kv_cache_seq(Some(id as u32), None, None)
                .map_err(|e| EngineError::Decode(format!("KV clear: {e}")))?;
        }
        let mut batch = LlamaBatch::new(self.n_batch, 1);
        for (c, chunk) in s.tokens[..k].chunks(self.n_batch).enumerate() {
            batch.clear();
            for (i, &tok) in chunk.iter().enumerate() {
                add(&mut batch, tok, (c * self.n_batch + i) as i32, id as i32, false)?;
            }
            self.decode_batch(&mut batch)?;
        }
        s.n_past = k as i32;
        if let Some(store) = self.store.as_mut() {
            let flags = LlamaStateSeqFlags::empty();
            let size = self.ctx.state_seq_get_size_ext(id as i32, flags);
            let mut state = vec![0u8; size];
            // SAFETY: `state` holds the `size` bytes llama.cpp asked for just above.
            let n = unsafe { self.ctx.state_seq_get_data_ext(state.as_mut_ptr(), id as i32, flags) };
            if n == size {
                store.put(key, state, k);
            }
            s.cache_use = Some(PrefixCacheUse { tier: CacheTier::Miss, tokens: k, bytes: n as u64, ms: ms(t) });
        }
        Ok(())
    }

    fn first_tokens(&mut self, seqs: &mut [Seq<'_>], waiting: &mut Vec<(usize, i32)>, t0: Instant) -> Result<(), EngineError> {
        for (id, idx) in waiting.drain(..) {
            seqs[id].t_prefilled = ms(t0);
            self.step(&mut seqs[id], id, idx, t0)?;
        }
        Ok(())
    }

    fn decode(&mut self, seqs: &mut [Seq<'_>], t0: Instant) -> Result<(), EngineError> {
        // Each live sequence adds its sampled token plus forced ones (at most `ff_cap` each, so
        // a step fits `n_batch`), logits only for its last; then, in the room the others leave,
        // tokens of its draft, each with logits, to be verified by `step`.
        let mut batch = LlamaBatch::new(self.n_batch.max(self.n_seq), self.n_seq as i32);
        loop {
            batch.clear();
            let is_live = |s: &Seq<'_>| s.stop.is_none() && !s.pending.is_empty();
            let n_live = seqs.iter().filter(|s| is_live(s)).count();
            if n_live == 0 {
                return Ok(());
            }
            let pending: usize = seqs.iter().filter(|s| is_live(s)).map(|s| s.pending.len()).sum();
            let room = self.n_batch.saturating_sub(pending) / n_live;
            let mut live = Vec::with_capacity(n_live);
            for (id, s) in seqs.iter_mut().enumerate() {
                if !is_live(s) {
                    continue;
                }
                let n = s.pending.len();
                for (i, tok) in s.pending.drain(..).enumerate() {
                    add(&mut batch, tok, s.n_past, id as i32, i + 1 == n)?;
                    s.n_past += 1;
                }
                live.push((id, batch.n_tokens() - 1));
                if let Some(d) = s.draft.as_mut() {
                    let fed = d.propose(&s.out_tokens, room).to_vec();
                    for &tok in &fed {
                        add(&mut batch, tok, s.n_past, id as i32, true)?;
                        s.n_past += 1;
                    }
                    d.fed = fed;
                }
            }
            self.decode_batch(&mut batch)?;
            for (id, idx) in live {
                self.step(&mut seqs[id], id, idx, t0)?;
            }
        }
    }

    /// Picks `s`'s next token from the logits at batch index `idx`, then verifies the draft
    /// tokens fed after it: while the model's own pick (or the constraint's forced tokens)
    /// equals the next fed token, that token is kept and the pick moves on to its logits. The
    /// first pick that differs is kept instead of the draft (with the tokens it forces, it is
    /// fed at the next step), and the KV cells of the fed tokens not kept are removed.
    fn step(&mut self, s: &mut Seq<'_>, id: usize, idx: i32, t0: Instant) -> Result<(), EngineError> {
        let fed = s.draft.as_mut().map(|d| std::mem::take(&mut d.fed)).unwrap_or_default();
        let mut at = idx;
        let mut kept = 0;
        'pick: while let Some(tok) = self.pick(s, at, t0) {
            let mut on_draft = fed.get(kept) == Some(&tok);
            if on_draft {
                kept += 1;
                at += 1;
            }
            if let Some(stop) = self.emit(s, tok) {
                finish(s, stop, t0);
                break;
            }
            if !on_draft {
                s.pending.push(tok);
            }
            if self.fast_forward {
                let budget = s.req.max_tokens.max(1) as usize - s.n_out;
                let forced = match s.constraint.forced(budget.min(self.ff_cap())) {
                    Ok(f) => f,
                    Err(e) => {
                        fail(s, e, t0);
                        break;
                    }
                };
                for tok in forced {
                    s.n_forced += 1;
                    if let Some(stop) = self.emit(s, tok) {
                        finish(s, stop, t0);
                        break 'pick;
                    }
                    if on_draft && fed.get(kept) == Some(&tok) {
                        kept += 1;
                        at += 1;
                    } else {
                        on_draft = false;
                        s.pending.push(tok);
                    }
                }
            }
            if !on_draft {
                break;
            }
        }
        let Some(d) = s.draft.as_mut() else { return Ok(()) };
        d.drafted += fed.len();
        d.accepted += kept;
        let rejected = fed.len() - kept;
        if rejected > 0 {
            d.len = DRAFT_MIN;
            s.n_past -= rejected as i32;
            self.ctx
                .clear_kv_cache_seq(Some(id as u32), Some(s.n_past as u32), None)
                .map_err(|e| EngineError::Decode(format!("KV clear after a rejected draft: {e}")))?;
        } else if !fed.is_empty() {
            d.len = (d.len * 2).min(self.n_batch);
        }
        Ok(())
    }

    /// The token picked for `s` from the logits at batch index `idx` (under its constraint);
    /// `None` when `s` stops instead (end of generation, or a constraint error).
    fn pick(&mut self, s: &mut Seq<'_>, idx: i32, t0: Instant) -> Option<LlamaToken> {
        let logits = self.ctx.get_logits_ith(idx);
        let tok = match s.constraint.choose(logits, &s.req.sampling, &mut s.rng) {
            Ok(t) => t,
            Err(e) => {
                fail(s, e, t0);
                return None;
            }
        };
        s.picked_lp = logprob(logits, tok.0 as usize);
        if s.n_out == 0 {
            s.t_first = ms(t0);
        }
        if self.model.vocab().is_eog(tok) && !s.req.ignore_eos {
            finish(s, StopReason::Eos, t0);
            return None;
        }
        Some(tok)
    }

    /// Appends an output token's text; the reason to stop after it, if any.
    fn emit(&self, s: &mut Seq<'_>, tok: LlamaToken) -> Option<StopReason> {
        s.n_out += 1;
        s.out_tokens.push(tok);
        let piece = self.model.vocab().token_to_piece(tok, false, None);
        s.out.extend_from_slice(&piece);
        // `pick` leaves the chosen token's log-probability; a forced token finds none.
        s.logprobs.push(TokenLogprob { token: tok.0 as u32, bytes: piece.len() as u32, logprob: s.picked_lp.take() });
        if s.constraint.is_active() && s.scanner.feed(&piece) {
            Some(StopReason::ConstraintComplete)
        } else if s.n_out >= s.req.max_tokens.max(1) as usize {
            Some(StopReason::MaxTokens)
        } else {
            None
        }
    }

    /// Most forced tokens one sequence adds per decode step, so that every sequence's sampled
    /// and forced tokens fit one `n_batch` batch.
    fn ff_cap(&self) -> usize {
        (self.n_batch / self.n_seq.max(1)).saturating_sub(1)
    }

    fn decode_batch(&mut self, batch: &mut LlamaBatch) -> Result<(), EngineError> {
        self.ctx.decode(batch).map_err(|e| EngineError::Decode(e.to_string()))
    }
}

/// `s` is done, for `stop`.
fn finish(s: &mut Seq<'_>, stop: StopReason, t0: Instant) {
    s.stop = Some(stop);
    s.t_done = ms(t0);
}

/// `s` is done with an error (its response carries it).
fn fail(s: &mut Seq<'_>, e: EngineError, t0: Instant) {
    s.error = Some(e);
    finish(s, StopReason::Eos, t0);
}

fn add(batch: &mut LlamaBatch, tok: LlamaToken, pos: i32, seq: i32, logits: bool) -> Result<(), EngineError> {
    batch.add(tok, pos, &[seq], logits).map_err(|e| EngineError::Decode(format!("batch: {e}")))
}

/// Longest common token prefix of all sequences, leaving every sequence at least one token of
/// its own (its last prompt token must be decoded with logits on its own sequence).
fn shared_prefix(seqs: &[Seq<'_>]) -> usize {
    let first = &seqs[0].tokens;
    let mut n = seqs.iter().map(|s| s.tokens.len()).min().unwrap_or(0).saturating_sub(1);
    for s in &seqs[1..] {
        n = n.min(first.iter().zip(&s.tokens).take_while(|(a, b)| a == b).count());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::{Draft, LlamaToken};

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    #[test]
    fn a_draft_continues_where_the_output_is_its_prefix() {
        let mut d = Draft::new(toks(&[1, 2, 3, 4, 5, 6]));
        assert_eq!(d.propose(&toks(&[1, 2]), 3), &toks(&[3, 4, 5])[..]);
        assert_eq!(d.propose(&toks(&[1, 2, 3, 4, 5, 6]), 3), &[] as &[LlamaToken], "nothing after the end");
        assert_eq!(d.propose(&toks(&[1, 2]), 0), &[] as &[LlamaToken], "no room");
        d.len = 2;
        assert_eq!(d.propose(&toks(&[1]), 10), &toks(&[2, 3])[..], "at most `len`");
    }

    #[test]
    fn after_a_divergence_the_draft_resyncs_on_the_longest_tail_found_and_only_moves_forward() {
        // Draft: key A (10 11 12), value 1, key B (20 21 22), value 2, key A again, value 3.
        let mut d = Draft::new(toks(&[10, 11, 12, 1, 20, 21, 22, 2, 10, 11, 12, 3]));
        // The output diverged in value 1 (99) and now stands after key B.
        assert_eq!(d.propose(&toks(&[10, 11, 12, 99, 20, 21, 22]), 4), &toks(&[2, 10, 11, 12])[..]);
        // Later on, key A's second occurrence is found, not the first one behind the floor.
        assert_eq!(d.propose(&toks(&[10, 11, 12, 99, 20, 21, 22, 7, 10, 11, 12]), 4), &toks(&[3])[..]);
        // A tail shorter than three tokens is no evidence.
        let mut d = Draft::new(toks(&[5, 6, 7, 8]));
        assert_eq!(d.propose(&toks(&[9, 6, 7]), 4), &[] as &[LlamaToken]);
        assert_eq!(d.propose(&toks(&[9, 5, 6, 7]), 4), &toks(&[8])[..]);
    }
}
