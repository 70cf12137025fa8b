//! The candle worker thread: loads the model and tokenizer, builds the llguidance tables once,
//! and serves jobs until the handle is dropped.
//!
//! candle's quantized llama keeps one KV cache per model value and decodes one sequence at a
//! time (a batch would need per-sequence positions and padding masks it does not have), so
//! requests run one after another. What it does allow is cloning the model, KV cache included
//! (tensors are reference-counted): the longest common token prefix of a group of requests is
//! prefilled once and each request continues from a clone of it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use llguidance::Matcher;

use super::model::{self, LLAMA_MAX_POSITIONS};
use crate::tokenizer::{GgufTokenizer, TokenizerError};
use super::{Job, BACKEND_VERSION};
use crate::support::panic_message;
use crate::guidance::{self, none_allowed, pick, SchemaCompiler};
use crate::memory::PeakWatch;
use crate::sampling::Rng;
use crate::{
    Capabilities, ChatMessage, Constraint, ConstraintBackend, EngineConfig, EngineError, EngineInfo, EngineKind,
    JsonScanner, Request, Response, StopReason, Timings, TokenCounts,
};

/// Entry point of the worker thread.
pub(super) fn run(cfg: &EngineConfig, jobs: &mpsc::Receiver<Job>, ready: &mpsc::Sender<Result<EngineInfo, EngineError>>) {
    let threads = cfg.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    // candle's CPU kernels run on rayon: a pool of `threads` makes `--threads` hold for them.
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("candle-{i}")).build() {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(EngineError::Config(format!("cannot start {threads} threads: {e}"))));
            return;
        }
    };
    let setup = catch_unwind(AssertUnwindSafe(|| pool.install(|| Worker::load(cfg, threads))))
        .unwrap_or_else(|p| Err(load_err(cfg, format!("panicked while loading: {}", panic_message(Some(p))))));
    let (mut worker, info) = match setup {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(info)).is_err() {
        return;
    }
    for job in jobs {
        let panicked = |p| EngineError::Decode(format!("engine panicked: {}", panic_message(Some(p))));
        match job {
            Job::Generate { requests, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| pool.install(|| worker.generate(&requests)))).unwrap_or_else(|p| {
                    let e = panicked(p);
                    requests.iter().map(|_| Err(EngineError::Decode(e.to_string()))).collect()
                });
                let _ = reply.send(out);
            }
            Job::CountTokens { messages, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| worker.tokenize(&messages).map(|t| t.len())))
                    .unwrap_or_else(|p| Err(panicked(p)));
                let _ = reply.send(out);
            }
            Job::Tokenize { messages, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| worker.tokenize(&messages))).unwrap_or_else(|p| Err(panicked(p)));
                let _ = reply.send(out);
            }
            Job::Logits { messages, reply } => {
                let out = catch_unwind(AssertUnwindSafe(|| pool.install(|| worker.first_logits(&messages))))
                    .unwrap_or_else(|p| Err(panicked(p)));
                let _ = reply.send(out);
            }
        }
    }
}

fn load_err(cfg: &EngineConfig, reason: String) -> EngineError {
    EngineError::Load { kind: EngineKind::Candle, path: cfg.model.clone(), reason }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn decode_err(e: &candle_core::Error) -> EngineError {
    EngineError::Decode(format!("candle: {e}"))
}

struct Worker {
    model: ModelWeights,
    tokenizer: GgufTokenizer,
    compiler: Option<SchemaCompiler>,
    n_ctx: usize,
    n_batch: usize,
    group: usize,
    min_shared_prefix: usize,
    fast_forward: bool,
    batches_run: u64,
}

/// One request, tokenized and checked, waiting for its turn.
struct Prepared<'r> {
    req: &'r Request,
    slot: usize,
    tokens: Vec<u32>,
    tokenize_ms: f64,
    matcher: Option<Matcher>,
}

impl Worker {
    fn load(cfg: &EngineConfig, threads: usize) -> Result<(Self, EngineInfo), EngineError> {
        let t0 = Instant::now();
        let (content, _) = crate::gguf_header::read_header(&cfg.model).map_err(|e| load_err(cfg, e))?;
        let arch = crate::gguf_header::check_architecture(&content, "candle").map_err(|e| load_err(cfg, e))?;
        let tokenizer = GgufTokenizer::from_gguf(&content, cfg.chat_template.as_deref()).map_err(|e| match e {
            TokenizerError::NoTemplate => EngineError::NoChatTemplate { path: cfg.model.clone() },
            TokenizerError::Template { name, reason } => EngineError::ChatTemplate { template: name, reason },
            TokenizerError::Metadata(m) | TokenizerError::Unsupported(m) => load_err(cfg, format!("tokenizer: {m}")),
        })?;
        let meta_u = |k: &str| content.metadata.get(k).and_then(|v| v.to_u32().ok()).map(|v| v as usize);
        let train_context = meta_u(&format!("{arch}.context_length")).unwrap_or(LLAMA_MAX_POSITIONS);
        let n_ctx = match cfg.n_ctx {
            Some(n) if n as usize > LLAMA_MAX_POSITIONS => {
                return Err(EngineError::Config(format!(
                    "context of {n} tokens: candle's llama model precomputes rotary tables for {LLAMA_MAX_POSITIONS} positions"
                )))
            }
            Some(n) => n as usize,
            None => train_context.min(16_384).min(LLAMA_MAX_POSITIONS),
        };
        if n_ctx < 16 {
            return Err(EngineError::Config(format!("context of {n_ctx} tokens is too small")));
        }
        let compiler = match cfg.constraint_backend {
            ConstraintBackend::Llguidance => {
                let n_vocab = meta_u(&format!("{arch}.vocab_size")).unwrap_or(tokenizer.vocab_size());
                Some(SchemaCompiler::new(&tokenizer.tok_env(n_vocab.max(tokenizer.vocab_size())))?)
            }
            ConstraintBackend::None => None,
            ConstraintBackend::Gbnf => {
                return Err(EngineError::Config(
                    "the candle engine enforces schemas with llguidance (GBNF is llama.cpp's sampler)".into(),
                ))
            }
        };
        let loaded = model::load(&cfg.model, cfg.weights).map_err(|e| load_err(cfg, e))?;
        let meta_s = |k: &str| content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
        let name = meta_s("general.name").unwrap_or_else(|| "unnamed".into());
        let n_layer = meta_u(&format!("{arch}.block_count")).unwrap_or(0) as u64;
        let n_head = meta_u(&format!("{arch}.attention.head_count")).unwrap_or(1).max(1) as u64;
        let n_head_kv = meta_u(&format!("{arch}.attention.head_count_kv")).unwrap_or(n_head as usize) as u64;
        let n_embd = meta_u(&format!("{arch}.embedding_length")).unwrap_or(0) as u64;
        // f32 K and V for every layer, one sequence (plus a shared prefix's while it is reused).
        let kv_cache_bytes = n_layer * n_ctx as u64 * n_head_kv * (n_embd / n_head) * 2 * 4;
        let info = EngineInfo {
            kind: EngineKind::Candle,
            weights: cfg.weights,
            backend_version: BACKEND_VERSION.into(),
            model_path: cfg.model.clone(),
            model_desc: format!(
                "{name} ({arch}, {:.0}M params, computed as {})",
                loaded.n_params as f64 / 1e6,
                loaded.compute_dtype
            ),
            model_bytes: std::fs::metadata(&cfg.model).map_or(0, |m| m.len()),
            n_params: loaded.n_params,
            vocab_size: tokenizer.vocab_size(),
            chat_template: tokenizer.format_name.clone(),
            threads,
            constraint_backend: cfg.constraint_backend,
            capabilities: Capabilities {
                max_context: n_ctx,
                // One sequence decodes at a time; a group shares its common prefix.
                max_batch: 1,
                shared_prefix: true,
                prefix_cache: false,
                constraint_backends: vec![ConstraintBackend::Llguidance, ConstraintBackend::None],
            },
            kv_cache_bytes,
            train_context,
            load_ms: ms(t0),
        };
        let worker = Worker {
            model: loaded.weights,
            tokenizer,
            compiler,
            n_ctx,
            n_batch: cfg.n_batch as usize,
            group: cfg.batch_size as usize,
            min_shared_prefix: cfg.min_shared_prefix.max(1),
            fast_forward: cfg.fast_forward,
            batches_run: 0,
        };
        Ok((worker, info))
    }

    fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        let text = self.tokenizer.render(messages);
        self.tokenizer.encode(&text).map_err(|reason| EngineError::ChatTemplate { template: "model".into(), reason })
    }

    /// The logits after prefilling `messages` from an empty KV cache, in `n_batch` chunks as
    /// `generate` does.
    fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        let tokens = self.tokenize(messages)?;
        let mut model = self.model.clone();
        model.clear_kv_cache();
        self.prefill(&mut model, &tokens, 0)
    }

    fn prepare<'r>(&mut self, slot: usize, req: &'r Request) -> Result<Prepared<'r>, EngineError> {
        let t = Instant::now();
        let tokens = self.tokenize(&req.messages)?;
        let tokenize_ms = ms(t);
        let max_tokens = req.max_tokens.max(1) as usize;
        let max = self.n_ctx.saturating_sub(max_tokens);
        if tokens.len() > max {
            return Err(EngineError::InputTooLong { tokens: tokens.len(), max, context: self.n_ctx, max_tokens });
        }
        let matcher = match (&req.constraint, self.compiler.as_mut()) {
            (Constraint::JsonSchema(schema), Some(c)) => Some(c.matcher(schema)?),
            _ => None,
        };
        Ok(Prepared { req, slot, tokens, tokenize_ms, matcher })
    }

    fn generate(&mut self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        let mut results: Vec<Option<Result<Response, EngineError>>> = requests.iter().map(|_| None).collect();
        let mut ready = Vec::new();
        for (slot, req) in requests.iter().enumerate() {
            match self.prepare(slot, req) {
                Ok(p) => ready.push(p),
                Err(e) => results[slot] = Some(Err(e)),
            }
        }
        for group in ready.chunks_mut(self.group.max(1)) {
            for (slot, res) in self.run_group(group) {
                results[slot] = Some(res);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(EngineError::Decode("request was not processed".into()))))
            .collect()
    }

    /// Prefills the group's common prefix once (when long enough), then runs each request from
    /// a clone of it. The prefix time counts in the latency of every request that reused it.
    fn run_group(&mut self, group: &mut [Prepared<'_>]) -> Vec<(usize, Result<Response, EngineError>)> {
        let shared = if group.len() > 1 { shared_prefix(group) } else { 0 };
        let shared = if shared >= self.min_shared_prefix { shared } else { 0 };
        let watch = PeakWatch::start();
        let t_prefix = Instant::now();
        let mut base = self.model.clone();
        base.clear_kv_cache();
        let prefix = if shared > 0 {
            self.prefill(&mut base, &group[0].tokens[..shared], 0).map(|_| ())
        } else {
            Ok(())
        };
        let prefix_ms = ms(t_prefix);
        let prefix_peak = watch.peak();
        let mut out = Vec::with_capacity(group.len());
        for p in group.iter_mut() {
            let res = match &prefix {
                Err(e) => Err(EngineError::Decode(e.to_string())),
                Ok(()) => self.run_one(&base, p, shared, prefix_ms).map(|mut r| {
                    r.peak_rss_bytes = r.peak_rss_bytes.max(prefix_peak);
                    r
                }),
            };
            out.push((p.slot, res));
        }
        out
    }

    /// Feeds `tokens` at positions from `pos` in chunks of `n_batch`; returns the logits after
    /// the last one.
    fn prefill(&self, model: &mut ModelWeights, tokens: &[u32], pos: usize) -> Result<Vec<f32>, EngineError> {
        let mut logits = None;
        let mut at = pos;
        for chunk in tokens.chunks(self.n_batch.max(1)) {
            logits = Some(Self::forward(model, chunk, at)?);
            at += chunk.len();
        }
        logits.ok_or_else(|| EngineError::Decode("nothing to prefill".into()))
    }

    fn forward(model: &mut ModelWeights, tokens: &[u32], pos: usize) -> Result<Vec<f32>, EngineError> {
        let input = Tensor::new(tokens, &Device::Cpu).and_then(|t| t.unsqueeze(0)).map_err(|e| decode_err(&e))?;
        let logits = model.forward(&input, pos).map_err(|e| decode_err(&e))?;
        logits.squeeze(0).and_then(|l| l.to_vec1::<f32>()).map_err(|e| decode_err(&e))
    }

    fn run_one(
        &mut self,
        base: &ModelWeights,
        p: &mut Prepared<'_>,
        shared: usize,
        prefix_ms: f64,
    ) -> Result<Response, EngineError> {
        let watch = PeakWatch::start();
        let t0 = Instant::now();
        let mut model = base.clone();
        let req = p.req;
        let mut logits = self.prefill(&mut model, &p.tokens[shared..], shared)?;
        let prefill_ms = prefix_ms + ms(t0);
        let mut rng = Rng::new(req.sampling.seed);
        let mut scanner = JsonScanner::new();
        let mut out: Vec<u8> = Vec::new();
        let (mut n_out, mut n_forced, mut t_first) = (0usize, 0usize, None);
        let mut pos = p.tokens.len();
        let stop = 'gen: loop {
            let tok = match p.matcher.as_mut() {
                Some(m) => guidance::choose(m, &logits, &req.sampling, &mut rng)?,
                None => pick(&logits, None, &req.sampling, &mut rng).ok_or_else(none_allowed)?,
            } as u32;
            if t_first.is_none() {
                t_first = Some(prefix_ms + ms(t0));
            }
            if self.tokenizer.is_eog(tok) && !req.ignore_eos {
                break StopReason::Eos;
            }
            // The sampled token, then any the constraint forces after it (fed in one forward).
            let mut feed = vec![tok];
            let budget = (req.max_tokens.max(1) as usize).saturating_sub(n_out + 1);
            if let (true, Some(m)) = (self.fast_forward, p.matcher.as_mut()) {
                let forced = guidance::fast_forward(m, budget.min(self.n_batch.max(2) - 1))?;
                n_forced += forced.len();
                feed.extend(forced);
            }
            for &t in &feed {
                n_out += 1;
                let piece = self.tokenizer.piece(t);
                out.extend_from_slice(piece);
                if p.matcher.is_some() && scanner.feed(piece) {
                    break 'gen StopReason::ConstraintComplete;
                }
                if n_out >= req.max_tokens.max(1) as usize {
                    break 'gen StopReason::MaxTokens;
                }
            }
            if pos + feed.len() > self.n_ctx {
                break StopReason::MaxTokens;
            }
            logits = Self::forward(&mut model, &feed, pos)?;
            pos += feed.len();
        };
        let done = prefix_ms + ms(t0);
        let first = t_first.unwrap_or(done);
        let batch_id = self.batches_run;
        self.batches_run += 1;
        Ok(Response {
            id: req.id.clone(),
            text: String::from_utf8_lossy(&out).into_owned(),
            stop,
            tokens: TokenCounts { input: p.tokens.len(), output: n_out, shared_prefix: shared, forced: n_forced },
            timings: Timings {
                tokenize_ms: p.tokenize_ms,
                prefill_ms,
                ttft_ms: p.tokenize_ms + first,
                decode_ms: (done - first).max(0.0),
                total_ms: p.tokenize_ms + done,
            },
            peak_rss_bytes: watch.peak(),
            batch_size: 1,
            batch_id,
            // No persistent prefix cache in candle (its KV lives inside the model's layers).
            prefix_cache: None,
        })
    }
}

/// Longest common token prefix of all requests, leaving each at least one token of its own
/// (its last prompt token must be fed on its own clone to give its first logits).
fn shared_prefix(group: &[Prepared<'_>]) -> usize {
    let first = &group[0].tokens;
    let mut n = group.iter().map(|p| p.tokens.len()).min().unwrap_or(0).saturating_sub(1);
    for p in &group[1..] {
        n = n.min(first.iter().zip(&p.tokens).take_while(|(a, b)| a == b).count());
    }
    n
}
