//! What the engines that decode one sequence at a time share (candle and MLX): the job set and
//! engine handle, the worker's job loop, load-time set-up (tokenizer, llguidance tables,
//! context), and the whole request path: tokenize and check each request, prefill a group's
//! common prefix once, continue each request from a clone of that state, decode under the
//! constraint with fast-forward, and report timings, memory and token counts.
//!
//! A backend supplies only its model ([`SeqModel`]): how to start an empty sequence state and
//! how to feed tokens to it. The state (a KV cache, or candle's model with its cache) must be
//! cheap to clone: tensors and MLX arrays are reference-counted.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Instant;

use llguidance::Matcher;

use crate::guidance::{self, none_allowed, pick, SchemaCompiler};
use crate::memory::PeakWatch;
use crate::sampling::{logprob, request_rng};
use crate::support::{panic_message, Ready, Worker};
use crate::tokenizer::{GgufTokenizer, TokenizerError};
use crate::{
    Capabilities, ChatMessage, Constraint, ConstraintBackend, Engine, EngineConfig, EngineError, EngineInfo, EngineKind,
    JsonScanner, Request, Response, StopReason, Timings, TokenCounts, TokenLogprob,
};

/// A model that decodes one sequence at a time.
pub(crate) trait SeqModel {
    /// What a sequence has seen so far; cloning it forks the sequence.
    type State: Clone;
    /// A sequence that has seen nothing.
    fn empty(&self) -> Self::State;
    /// Tokens `state` holds.
    fn len(state: &Self::State) -> usize;
    /// Feeds `tokens` after what `state` holds and returns the logits after the last one.
    fn forward(&self, state: &mut Self::State, tokens: &[u32]) -> Result<Vec<f32>, EngineError>;
}

/// The jobs a sequential engine's worker serves.
pub(crate) enum Job {
    Generate {
        requests: Vec<Request>,
        reply: mpsc::Sender<Vec<Result<Response, EngineError>>>,
    },
    CountTokens {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<usize, EngineError>>,
    },
    /// Prompt token ids for `messages` (the parity tests compare them with llama.cpp's).
    Tokenize {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<u32>, EngineError>>,
    },
    /// Logits after prefilling `messages` (the logit-parity tests' hook).
    Logits {
        messages: Vec<ChatMessage>,
        reply: mpsc::Sender<Result<Vec<f32>, EngineError>>,
    },
}

/// The handle of a sequential engine: its info and the worker thread its model lives on.
pub(crate) struct Handle {
    info: EngineInfo,
    worker: Worker<Job>,
}

impl Handle {
    pub(crate) fn start(
        name: &str,
        config: &EngineConfig,
        run: fn(&EngineConfig, &mpsc::Receiver<Job>, &Ready),
    ) -> Result<Self, EngineError> {
        let (worker, info) = Worker::start(name, config, run)?;
        Ok(Self { info, worker })
    }

    pub(crate) fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        self.worker.call("tokenize", |reply| Job::Tokenize { messages: messages.to_vec(), reply })?
    }

    pub(crate) fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        self.worker.call("first_logits", |reply| Job::Logits { messages: messages.to_vec(), reply })?
    }
}

impl Engine for Handle {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        self.worker.call("count_tokens", |reply| Job::CountTokens { messages: messages.to_vec(), reply })?
    }

    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        self.worker.generate(requests, |requests, reply| Job::Generate { requests, reply })
    }
}

/// Runs `f`, a panic becoming an error.
fn guarded<R>(f: impl FnOnce() -> Result<R, EngineError>) -> Result<R, EngineError> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(EngineError::Decode(format!("engine panicked: {}", panic_message(Some(p))))))
}

/// The worker thread's life: loads with `load` and reports the outcome on `ready`, then serves
/// jobs until the handle is dropped. A panic while loading or serving becomes an error.
pub(crate) fn serve<M: SeqModel>(
    kind: EngineKind,
    cfg: &EngineConfig,
    load: impl FnOnce() -> Result<(Sequential<M>, EngineInfo), EngineError>,
    jobs: &mpsc::Receiver<Job>,
    ready: &mpsc::Sender<Result<EngineInfo, EngineError>>,
) {
    let setup = catch_unwind(AssertUnwindSafe(load))
        .unwrap_or_else(|p| Err(load_err(kind, cfg, format!("panicked while loading: {}", panic_message(Some(p))))));
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
        match job {
            Job::Generate { requests, reply } => {
                let out = guarded(|| Ok(worker.generate(&requests)))
                    .unwrap_or_else(|e| requests.iter().map(|_| Err(EngineError::Decode(e.to_string()))).collect());
                let _ = reply.send(out);
            }
            Job::CountTokens { messages, reply } => {
                let _ = reply.send(guarded(|| worker.tokenize(&messages).map(|t| t.len())));
            }
            Job::Tokenize { messages, reply } => {
                let _ = reply.send(guarded(|| worker.tokenize(&messages)));
            }
            Job::Logits { messages, reply } => {
                let _ = reply.send(guarded(|| worker.first_logits(&messages)));
            }
        }
    }
}

/// What a sequential engine can do with a context of `n_ctx` tokens: one sequence decodes at a
/// time, a group shares its common prefix, llguidance or no constraint, and no persistent
/// prefix cache (candle's KV cache lives inside the model's layers; MLX's is not saved).
pub(crate) fn capabilities(n_ctx: usize) -> Capabilities {
    Capabilities {
        max_context: n_ctx,
        max_batch: 1,
        shared_prefix: true,
        prefix_cache: false,
        constraint_backends: vec![ConstraintBackend::Llguidance, ConstraintBackend::None],
    }
}

/// A load failure of `kind` for `cfg`'s model.
pub(crate) fn load_err(kind: EngineKind, cfg: &EngineConfig, reason: String) -> EngineError {
    EngineError::Load { kind, path: cfg.model.clone(), reason }
}

pub(crate) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// The GGUF's tokenizer and chat template, and the llguidance tables built from it once (for
/// `--constraint llguidance`); GBNF is refused (it is llama.cpp's sampler).
pub(crate) fn tokenizer_and_compiler(
    kind: EngineKind,
    cfg: &EngineConfig,
    content: &candle_core::quantized::gguf_file::Content,
    arch: &str,
) -> Result<(GgufTokenizer, Option<SchemaCompiler>), EngineError> {
    let tokenizer = GgufTokenizer::from_gguf(content, cfg.chat_template.as_deref()).map_err(|e| match e {
        TokenizerError::NoTemplate => EngineError::NoChatTemplate { path: cfg.model.clone() },
        TokenizerError::Template { name, reason } => EngineError::ChatTemplate { template: name, reason },
        TokenizerError::Metadata(m) | TokenizerError::Unsupported(m) => load_err(kind, cfg, format!("tokenizer: {m}")),
    })?;
    let compiler = match cfg.constraint_backend {
        ConstraintBackend::Llguidance => {
            let n_vocab = content
                .metadata
                .get(&format!("{arch}.vocab_size"))
                .and_then(|v| v.to_u32().ok())
                .map_or(tokenizer.vocab_size(), |v| v as usize);
            Some(SchemaCompiler::new(&tokenizer.tok_env(n_vocab.max(tokenizer.vocab_size())))?)
        }
        ConstraintBackend::None => None,
        ConstraintBackend::Gbnf => {
            return Err(EngineError::Config(format!(
                "the {kind} engine enforces schemas with llguidance (GBNF is llama.cpp's sampler)"
            )))
        }
    };
    Ok((tokenizer, compiler))
}

/// A loaded model with its tokenizer and constraint tables, serving requests one sequence at a
/// time.
pub(crate) struct Sequential<M> {
    model: M,
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

impl<M: SeqModel> Sequential<M> {
    pub(crate) fn new(
        model: M,
        tokenizer: GgufTokenizer,
        compiler: Option<SchemaCompiler>,
        n_ctx: usize,
        cfg: &EngineConfig,
    ) -> Self {
        Sequential {
            model,
            tokenizer,
            compiler,
            n_ctx,
            n_batch: cfg.n_batch as usize,
            group: cfg.batch_size as usize,
            min_shared_prefix: cfg.min_shared_prefix.max(1),
            fast_forward: cfg.fast_forward,
            batches_run: 0,
        }
    }

    fn tokenize(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, EngineError> {
        let text = self.tokenizer.render(messages);
        self.tokenizer.encode(&text).map_err(|reason| EngineError::ChatTemplate { template: "model".into(), reason })
    }

    /// The logits after prefilling `messages` from an empty state, in `n_batch` chunks as
    /// `generate` does.
    fn first_logits(&self, messages: &[ChatMessage]) -> Result<Vec<f32>, EngineError> {
        let tokens = self.tokenize(messages)?;
        self.prefill(&mut self.model.empty(), &tokens)
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
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(EngineError::Decode("request was not processed".into())))).collect()
    }

    /// Prefills the group's common prefix once (when long enough), then runs each request from
    /// a clone of it. The prefix time counts in the latency of every request that reused it.
    fn run_group(&mut self, group: &mut [Prepared<'_>]) -> Vec<(usize, Result<Response, EngineError>)> {
        let shared = if group.len() > 1 { shared_prefix(group) } else { 0 };
        let shared = if shared >= self.min_shared_prefix { shared } else { 0 };
        let watch = PeakWatch::start();
        let t_prefix = Instant::now();
        let mut base = self.model.empty();
        let prefix = if shared > 0 { self.prefill(&mut base, &group[0].tokens[..shared]).map(|_| ()) } else { Ok(()) };
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

    /// Feeds `tokens` after what `state` holds, in chunks of `n_batch`; returns the logits
    /// after the last one.
    fn prefill(&self, state: &mut M::State, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        let mut logits = None;
        for chunk in tokens.chunks(self.n_batch.max(1)) {
            logits = Some(self.model.forward(state, chunk)?);
        }
        logits.ok_or_else(|| EngineError::Decode("nothing to prefill".into()))
    }

    fn run_one(&mut self, base: &M::State, p: &mut Prepared<'_>, shared: usize, prefix_ms: f64) -> Result<Response, EngineError> {
        let watch = PeakWatch::start();
        let t0 = Instant::now();
        let mut state = base.clone();
        let req = p.req;
        let mut logits = self.prefill(&mut state, &p.tokens[shared..])?;
        let prefill_ms = prefix_ms + ms(t0);
        let mut rng = request_rng(req.sampling.seed);
        let mut scanner = JsonScanner::new();
        let mut out: Vec<u8> = Vec::new();
        let mut logprobs: Vec<TokenLogprob> = Vec::new();
        let (mut n_out, mut n_forced, mut t_first) = (0usize, 0usize, None);
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
            let mut picked_lp = logprob(&logits, tok as usize);
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
                logprobs.push(TokenLogprob { token: t, bytes: piece.len() as u32, logprob: picked_lp.take() });
                if p.matcher.is_some() && scanner.feed(piece) {
                    break 'gen StopReason::ConstraintComplete;
                }
                if n_out >= req.max_tokens.max(1) as usize {
                    break 'gen StopReason::MaxTokens;
                }
            }
            if M::len(&state) + feed.len() > self.n_ctx {
                break StopReason::MaxTokens;
            }
            logits = self.model.forward(&mut state, &feed)?;
        };
        let done = prefix_ms + ms(t0);
        let first = t_first.unwrap_or(done);
        let batch_id = self.batches_run;
        self.batches_run += 1;
        Ok(Response {
            id: req.id.clone(),
            text: String::from_utf8_lossy(&out).into_owned(),
            stop,
            tokens: TokenCounts {
                input: p.tokens.len(),
                output: n_out,
                shared_prefix: shared,
                forced: n_forced,
                ..TokenCounts::default()
            },
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
            // No persistent prefix cache in these engines (`Capabilities::prefix_cache`).
            prefix_cache: None,
            engine: None,
            logprobs,
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
