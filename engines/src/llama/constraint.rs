//! JSON-Schema constraints for the llama backend: llguidance token masks or llama.cpp GBNF.
//!
//! The llguidance token environment comes from llama.cpp's vocabulary, and forced text is
//! tokenized by llama.cpp itself (so llguidance may fast-forward it); compiling and choosing
//! under a mask is shared with the other backends (`crate::guidance`). Compiled schemas are
//! cached and cloned per request.

use std::collections::HashMap;
use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::Matcher;
use toktrie::{TokEnv, TokTrie, TokenId, TokenizerEnv};

use crate::guidance::{self, none_allowed, pick, SchemaCompiler};
use crate::rng::SplitMix64;
use crate::sampling::argmax;
use crate::{ConstraintBackend, EngineError, Sampling};

/// Compiles schemas for one model, with caches.
pub(super) struct Compiler {
    backend: ConstraintBackend,
    llg: Option<SchemaCompiler>,
    gbnf_cache: HashMap<String, String>,
}

/// A per-request constraint state.
pub(super) enum SeqConstraint {
    None,
    Llg(Box<Matcher>),
    Gbnf(LlamaSampler),
}

impl Compiler {
    pub(super) fn new(model: &Arc<LlamaModel>, backend: ConstraintBackend) -> Result<Self, EngineError> {
        let llg = if backend == ConstraintBackend::Llguidance {
            let vocab = LlamaSampler::llguidance_tok_env(model);
            let env: TokEnv = Arc::new(LlamaTokEnv { trie: vocab.tok_trie().clone(), model: Arc::clone(model) });
            Some(SchemaCompiler::new(&env)?)
        } else {
            None
        };
        Ok(Self { backend, llg, gbnf_cache: HashMap::new() })
    }

    /// The constraint state for a new request under `schema` (`None` = unconstrained).
    pub(super) fn start(&mut self, model: &LlamaModel, schema: Option<&serde_json::Value>) -> Result<SeqConstraint, EngineError> {
        let Some(schema) = schema else { return Ok(SeqConstraint::None) };
        let key = schema.to_string();
        let backend = self.backend;
        let err = |reason: String| EngineError::Constraint { backend, reason };
        match backend {
            ConstraintBackend::None => Ok(SeqConstraint::None),
            ConstraintBackend::Llguidance => {
                let compiler = self.llg.as_mut().ok_or_else(|| err("no parser factory".into()))?;
                Ok(SeqConstraint::Llg(Box::new(compiler.matcher(schema)?)))
            }
            ConstraintBackend::Gbnf => {
                let grammar = if let Some(g) = self.gbnf_cache.get(&key) {
                    g.clone()
                } else {
                    let g = llama_cpp_2::json_schema_to_grammar(&key).map_err(|e| err(e.to_string()))?;
                    self.gbnf_cache.insert(key, g.clone());
                    g
                };
                let sampler = LlamaSampler::grammar(model, &grammar, "root").map_err(|e| err(e.to_string()))?;
                Ok(SeqConstraint::Gbnf(sampler))
            }
        }
    }
}

/// llama.cpp's vocabulary (as llama-cpp-2 walks it) with llama.cpp's own tokenizer. The
/// bindings' environment tokenizes greedily over the trie and says it is not canonical, so
/// llguidance would never force tokens with it; the model's tokenizer is canonical by definition.
struct LlamaTokEnv {
    trie: TokTrie,
    model: Arc<LlamaModel>,
}

impl TokenizerEnv for LlamaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // No BOS, and special-token text stays text (llguidance marks special tokens itself).
        self.model.vocab().tokenize(s, false, false).into_iter().map(|t| u32::try_from(t.0).unwrap_or(u32::MAX)).collect()
    }
}

impl SeqConstraint {
    /// Picks the next token from `logits` under this constraint and advances the constraint.
    pub(super) fn choose(
        &mut self,
        logits: &[f32],
        sampling: &Sampling,
        rng: &mut SplitMix64,
    ) -> Result<LlamaToken, EngineError> {
        match self {
            SeqConstraint::None => pick(logits, None, sampling, rng).map(to_token).ok_or_else(none_allowed),
            SeqConstraint::Llg(m) => guidance::choose(m, logits, sampling, rng).map(to_token),
            SeqConstraint::Gbnf(grammar) => {
                // Greedy fast path: if the unconstrained argmax is grammatical, take it without
                // masking the whole vocabulary.
                if sampling.is_greedy() {
                    if let Some(best) = argmax(logits, None) {
                        let mut one =
                            LlamaTokenDataArray::new(vec![LlamaTokenData::new(to_token(best), logits[best], 0.0)], false);
                        one.apply_sampler(grammar);
                        if one.data[0].logit().is_finite() {
                            grammar.accept(to_token(best));
                            return Ok(to_token(best));
                        }
                    }
                }
                let mut all = LlamaTokenDataArray::from_iter(
                    logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(to_token(i), l, 0.0)),
                    false,
                );
                all.apply_sampler(grammar);
                let masked: Vec<f32> = all.data.iter().map(LlamaTokenData::logit).collect();
                let tok = pick(&masked, None, sampling, rng).ok_or_else(none_allowed)?;
                let tok = all.data[tok].id();
                grammar.accept(tok);
                Ok(tok)
            }
        }
    }

    /// Tokens the constraint forces next (at most `max`), consumed: see [`guidance::fast_forward`].
    /// Only llguidance computes them; GBNF and unconstrained decoding force nothing.
    pub(super) fn forced(&mut self, max: usize) -> Result<Vec<LlamaToken>, EngineError> {
        match self {
            SeqConstraint::Llg(m) => Ok(guidance::fast_forward(m, max)?.into_iter().map(|t| LlamaToken(t as i32)).collect()),
            _ => Ok(Vec::new()),
        }
    }

    pub(super) fn is_active(&self) -> bool {
        !matches!(self, SeqConstraint::None)
    }
}

fn to_token(i: usize) -> LlamaToken {
    LlamaToken(i as i32)
}
