//! Engine-independent llguidance plumbing: a schema compiler built once per loaded model from
//! its token environment, and token choice under a matcher's mask.
//!
//! Every backend that enforces JSON Schemas with llguidance (llama.cpp, candle, MLX later) goes
//! through here, so the schema semantics (compact JSON, no free whitespace) are the same for all
//! of them. Only how the [`TokEnv`] is made differs: llama.cpp's vocabulary for the llama
//! backend, the GGUF tokenizer for candle.

use std::collections::HashMap;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::TokEnv;

use crate::json_grammar::{ITEM_SEPARATOR, KEY_SEPARATOR};
use crate::rng::SplitMix64;
use crate::sampling::{argmax, sample};
use crate::{ConstraintBackend, EngineError, Sampling};

/// Compiles JSON Schemas into llguidance matchers for one model, with a cache by schema text.
pub(crate) struct SchemaCompiler {
    factory: ParserFactory,
    cache: HashMap<String, Matcher>,
}

impl SchemaCompiler {
    /// Builds the parser factory (the expensive part: tens to hundreds of ms per vocabulary).
    pub(crate) fn new(env: &TokEnv) -> Result<Self, EngineError> {
        let mut factory = ParserFactory::new_simple(env).map_err(|e| EngineError::Constraint {
            backend: ConstraintBackend::Llguidance,
            reason: format!("building the llguidance parser factory: {e}"),
        })?;
        factory.set_stderr_log_level(0);
        Ok(Self { factory, cache: HashMap::new() })
    }

    /// A fresh matcher for `schema` (compiled once, then cloned).
    pub(crate) fn matcher(&mut self, schema: &serde_json::Value) -> Result<Matcher, EngineError> {
        let err = |reason: String| EngineError::Constraint { backend: ConstraintBackend::Llguidance, reason };
        let key = schema.to_string();
        if let Some(m) = self.cache.get(&key) {
            return Ok(m.deep_clone());
        }
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_json_schema(compact_json(schema)))
            .map_err(|e| err(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(err(e));
        }
        self.cache.insert(key, matcher.deep_clone());
        Ok(matcher)
    }
}

/// Asks llguidance for compact JSON (`, ` and `: `, no free whitespace; the layout
/// `crate::json_grammar` gives llama-servers): small models given flexible whitespace can fill
/// the token budget with newlines. `uniqueItems`, which llguidance
/// does not implement (a grammar cannot track the items already written), is dropped: the
/// output is still checked against the whole schema when it is scored.
pub(crate) fn compact_json(schema: &serde_json::Value) -> serde_json::Value {
    let mut s = schema.clone();
    drop_unique_items(&mut s);
    if let Some(obj) = s.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false, "item_separator": ITEM_SEPARATOR, "key_separator": KEY_SEPARATOR}));
    }
    s
}

/// Removes every `uniqueItems` keyword from a schema, at any depth (a property that happens to
/// be called `uniqueItems` stays).
fn drop_unique_items(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.get("uniqueItems").is_some_and(serde_json::Value::is_boolean) {
                map.remove("uniqueItems");
            }
            map.values_mut().for_each(drop_unique_items);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unique_items),
        _ => {}
    }
}

/// Picks a token from `logits` among those `allowed` (all when `None`): argmax when greedy,
/// else seeded temperature/top-p sampling.
pub(crate) fn pick(
    logits: &[f32],
    allowed: Option<&dyn Fn(usize) -> bool>,
    sampling: &Sampling,
    rng: &mut SplitMix64,
) -> Option<usize> {
    if sampling.is_greedy() {
        argmax(logits, allowed)
    } else {
        sample(logits, allowed, sampling.temperature, sampling.top_p, rng)
    }
}

/// The error for a state in which no token may follow.
pub(crate) fn none_allowed() -> EngineError {
    EngineError::Decode("the constraint allows no token".into())
}

/// The tokens the grammar forces next (at most `max`), already consumed by `matcher`: with a
/// fixed key order, keys, quotes, separators and the rest of an enum value after its first
/// token leave the model no choice. Engines append them without sampling (several tokens in
/// one forward call, like a prefill) instead of one decode step each. Empty when nothing is
/// forced, when the matcher has stopped, or when the tokenizer is not canonical.
pub(crate) fn fast_forward(matcher: &mut Matcher, max: usize) -> Result<Vec<u32>, EngineError> {
    if max == 0 || matcher.is_stopped() {
        return Ok(Vec::new());
    }
    let mut forced = matcher.compute_ff_tokens();
    forced.truncate(max);
    if !forced.is_empty() {
        matcher.consume_tokens(&forced).map_err(|e| EngineError::Decode(format!("llguidance: {e}")))?;
    }
    Ok(forced)
}

/// Picks the next token under `matcher`'s mask and advances the matcher with it.
pub(crate) fn choose(
    matcher: &mut Matcher,
    logits: &[f32],
    sampling: &Sampling,
    rng: &mut SplitMix64,
) -> Result<usize, EngineError> {
    let mask = matcher.compute_mask().map_err(|e| EngineError::Decode(format!("llguidance: {e}")))?;
    let allowed = |i: usize| u32::try_from(i).is_ok_and(|t| mask.is_allowed(t));
    let tok = pick(logits, Some(&allowed), sampling, rng).ok_or_else(none_allowed)?;
    let id = u32::try_from(tok).map_err(|_| EngineError::Decode(format!("token id {tok} out of range")))?;
    matcher.consume_token(id).map_err(|e| EngineError::Decode(format!("llguidance: {e}")))?;
    Ok(tok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_items_is_dropped_at_any_depth_but_a_property_of_that_name_stays() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
                "uniqueItems": {"type": "string"}
            }
        });
        let out = super::compact_json(&schema);
        assert!(out["properties"]["tags"].get("uniqueItems").is_none(), "{out}");
        assert_eq!(out["properties"]["uniqueItems"], serde_json::json!({"type": "string"}));
        assert_eq!(out["x-guidance"]["whitespace_flexible"], false);
    }
}
