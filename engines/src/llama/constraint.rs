//! JSON-Schema constraints for the llama backend: llguidance token masks or llama.cpp GBNF.
//!
//! The llguidance token environment and parser factory are built once per loaded model (they
//! cost 30-630 ms); compiled schemas are cached and cloned per request.

use std::collections::HashMap;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use crate::sampling::{argmax, sample, Rng};
use crate::{ConstraintBackend, EngineError, Sampling};

/// Compiles schemas for one model, with caches.
pub(super) struct Compiler {
    backend: ConstraintBackend,
    llg: Option<ParserFactory>,
    llg_cache: HashMap<String, Matcher>,
    gbnf_cache: HashMap<String, String>,
}

/// A per-request constraint state.
pub(super) enum SeqConstraint {
    None,
    Llg(Box<Matcher>),
    Gbnf(LlamaSampler),
}

impl Compiler {
    pub(super) fn new(model: &LlamaModel, backend: ConstraintBackend) -> Result<Self, EngineError> {
        let llg = if backend == ConstraintBackend::Llguidance {
            let env = LlamaSampler::llguidance_tok_env(model);
            let mut factory = ParserFactory::new_simple(&env).map_err(|e| EngineError::Constraint {
                backend,
                reason: format!("building the llguidance parser factory: {e}"),
            })?;
            factory.set_stderr_log_level(0);
            Some(factory)
        } else {
            None
        };
        Ok(Self { backend, llg, llg_cache: HashMap::new(), gbnf_cache: HashMap::new() })
    }

    /// The constraint state for a new request under `schema` (`None` = unconstrained).
    pub(super) fn start(
        &mut self,
        model: &LlamaModel,
        schema: Option<&serde_json::Value>,
    ) -> Result<SeqConstraint, EngineError> {
        let Some(schema) = schema else { return Ok(SeqConstraint::None) };
        let key = schema.to_string();
        let backend = self.backend;
        let err = |reason: String| EngineError::Constraint { backend, reason };
        match backend {
            ConstraintBackend::None => Ok(SeqConstraint::None),
            ConstraintBackend::Llguidance => {
                if let Some(m) = self.llg_cache.get(&key) {
                    return Ok(SeqConstraint::Llg(Box::new(m.deep_clone())));
                }
                let factory = self.llg.as_ref().ok_or_else(|| err("no parser factory".into()))?;
                let parser = factory
                    .create_parser(TopLevelGrammar::from_json_schema(compact_json(schema)))
                    .map_err(|e| err(e.to_string()))?;
                let matcher = Matcher::new(Ok(parser));
                if let Some(e) = matcher.get_error() {
                    return Err(err(e));
                }
                self.llg_cache.insert(key, matcher.deep_clone());
                Ok(SeqConstraint::Llg(Box::new(matcher)))
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

/// Asks llguidance for compact JSON (`, ` and `: `, no free whitespace): small models given
/// flexible whitespace can fill the token budget with newlines.
fn compact_json(schema: &serde_json::Value) -> serde_json::Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
        });
    }
    s
}

impl SeqConstraint {
    /// Picks the next token from `logits` under this constraint and advances the constraint.
    pub(super) fn choose(
        &mut self,
        logits: &[f32],
        sampling: &Sampling,
        rng: &mut Rng,
    ) -> Result<LlamaToken, EngineError> {
        let pick = |allowed: Option<&dyn Fn(usize) -> bool>, rng: &mut Rng| {
            if sampling.is_greedy() {
                argmax(logits, allowed)
            } else {
                sample(logits, allowed, sampling.temperature, sampling.top_p, rng)
            }
        };
        let none_allowed = || EngineError::Decode("the constraint allows no token".into());
        match self {
            SeqConstraint::None => pick(None, rng).map(to_token).ok_or_else(none_allowed),
            SeqConstraint::Llg(m) => {
                let mask = m.compute_mask().map_err(|e| EngineError::Decode(format!("llguidance: {e}")))?;
                let allowed = |i: usize| u32::try_from(i).is_ok_and(|t| mask.is_allowed(t));
                let tok = pick(Some(&allowed), rng).ok_or_else(none_allowed)?;
                m.consume_token(tok as u32).map_err(|e| EngineError::Decode(format!("llguidance: {e}")))?;
                Ok(to_token(tok))
            }
            SeqConstraint::Gbnf(grammar) => {
                // Greedy fast path: if the unconstrained argmax is grammatical, take it without
                // masking the whole vocabulary.
                if sampling.is_greedy() {
                    if let Some(best) = argmax(logits, None) {
                        let mut one = LlamaTokenDataArray::new(
                            vec![LlamaTokenData::new(to_token(best), logits[best], 0.0)],
                            false,
                        );
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
                let tok = if sampling.is_greedy() {
                    argmax(&masked, None)
                } else {
                    sample(&masked, None, sampling.temperature, sampling.top_p, rng)
                }
                .ok_or_else(none_allowed)?;
                let tok = all.data[tok].id();
                grammar.accept(tok);
                Ok(tok)
            }
        }
    }

    pub(super) fn is_active(&self) -> bool {
        !matches!(self, SeqConstraint::None)
    }
}

fn to_token(i: usize) -> LlamaToken {
    LlamaToken(i as i32)
}
