//! What identifies an eval, so nothing is evaluated twice: the cache key, the engine key and
//! the fingerprints of the model file and the task files.
//!
//! The engine key hashes everything besides the instruction and the example that can change an
//! output: the model (SHA-256 of its first MiB, and its size), the engine kind, the constraint
//! backend and schema, the token cap and the engine configuration (batching, context, threads,
//! chat template). The model path itself is left out, so a moved model file keeps its cache.

use std::collections::HashMap;

use engines::{ConstraintBackend, EngineConfig, EngineKind};
use serde_json::json;

use crate::eval::ExampleRecord;
use crate::fingerprint::{sha256_hex, ModelFingerprint};

/// Identifies one eval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub instruction_sha256: String,
    pub example_id: String,
    pub engine_key: String,
}

/// Scored examples by [`CacheKey`]; filled from `eval` records on resume.
#[derive(Debug, Default)]
pub struct EvalCache {
    map: HashMap<CacheKey, ExampleRecord>,
}

impl EvalCache {
    pub fn get(&self, key: &CacheKey) -> Option<&ExampleRecord> {
        self.map.get(key)
    }
    pub fn insert(&mut self, key: CacheKey, record: ExampleRecord) {
        self.map.insert(key, record);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Inputs of the engine key.
pub struct EngineKeyParts<'a> {
    pub model: &'a ModelFingerprint,
    pub kind: EngineKind,
    pub overflow: crate::overflow::Overflow,
    pub constraint: ConstraintBackend,
    pub constraint_schema_sha256: Option<&'a str>,
    pub max_tokens: u32,
    pub config: &'a EngineConfig,
    /// What a fleet of llama-servers serves (`build model`, see `engines::server_identity`);
    /// `None` for in-process engines.
    pub server: Option<&'a str>,
}

/// SHA-256 over the parts, as canonical JSON.
pub fn engine_key(p: &EngineKeyParts<'_>) -> String {
    let c = p.config;
    let canon = json!({
        "model_sha256_first_mib": p.model.sha256_first_mib,
        "model_size": p.model.size,
        "engine": p.kind,
        "on_overflow": p.overflow,
        "constraint": p.constraint,
        "constraint_schema_sha256": p.constraint_schema_sha256,
        "max_tokens": p.max_tokens,
        "batch_size": c.batch_size,
        "n_batch": c.n_batch,
        "n_ctx": c.n_ctx,
        "threads": c.threads,
        "chat_template": c.chat_template,
        "kv_unified": c.kv_unified,
        "min_shared_prefix": c.min_shared_prefix,
        "flash_attention": c.flash_attention,
    });
    // Only a variant adds the key, so runs logged before variants existed keep their keys.
    let mut canon = canon;
    if c.weights != engines::WeightFormat::Gguf {
        canon["weights"] = json!(c.weights);
    }
    // Forced tokens are tokenized canonically, which can differ from the split greedy decoding
    // picks token by token, so outputs may differ. Only when on, like `weights`.
    if c.fast_forward && p.constraint == ConstraintBackend::Llguidance {
        canon["fast_forward"] = json!(true);
    }
    // Draft tokens are verified several per forward call, which can move logits by float
    // rounding (the greedy choice is the model's own either way). Only when on, like the others.
    if c.speculative {
        canon["speculative"] = json!(true);
    }
    // Only for the server engine (whose kind already differs): the servers' build and model.
    if let Some(server) = p.server {
        canon["server"] = json!(server);
    }
    sha256_hex(canon.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(model: &'a ModelFingerprint, config: &'a EngineConfig) -> EngineKeyParts<'a> {
        EngineKeyParts {
            model,
            kind: EngineKind::Llama,
            overflow: crate::overflow::Overflow::Error,
            constraint: ConstraintBackend::Llguidance,
            constraint_schema_sha256: Some("abc"),
            max_tokens: 192,
            config,
            server: None,
        }
    }

    #[test]
    fn engine_key_changes_with_what_changes_outputs_only() {
        let model = ModelFingerprint { path: "/a/m.gguf".into(), sha256_first_mib: "00".into(), size: 10 };
        let cfg = EngineConfig::new("/a/m.gguf");
        let base = engine_key(&parts(&model, &cfg));
        let moved = ModelFingerprint { path: "/b/m.gguf".into(), ..model.clone() };
        assert_eq!(base, engine_key(&parts(&moved, &EngineConfig::new("/b/m.gguf"))));
        let other_model = ModelFingerprint { sha256_first_mib: "01".into(), ..model.clone() };
        assert_ne!(base, engine_key(&parts(&other_model, &cfg)));
        let mut batch = cfg.clone();
        batch.batch_size = 1;
        assert_ne!(base, engine_key(&parts(&model, &batch)));
        let mut p = parts(&model, &cfg);
        p.max_tokens = 64;
        assert_ne!(base, engine_key(&p));
        let mut p = parts(&model, &cfg);
        p.constraint = ConstraintBackend::Gbnf;
        assert_ne!(base, engine_key(&p));
        let mut p = parts(&model, &cfg);
        p.constraint_schema_sha256 = None;
        assert_ne!(base, engine_key(&p));
        let mut plain = cfg.clone();
        plain.fast_forward = false;
        assert_ne!(base, engine_key(&parts(&model, &plain)), "forced tokens may change outputs");
        let mut plain = cfg.clone();
        plain.speculative = false;
        assert_ne!(base, engine_key(&parts(&model, &plain)), "verified drafts may move logits");
        let mut remote = parts(&model, &cfg);
        remote.kind = EngineKind::Server;
        remote.server = Some("b100 sha256:00");
        let fleet = engine_key(&remote);
        assert_ne!(base, fleet, "remote results never mix with in-process ones");
        remote.server = Some("b101 sha256:00");
        assert_ne!(fleet, engine_key(&remote), "nor with another build's");
    }

    #[test]
    fn cache_keys_differ_by_instruction_example_and_engine() {
        let mut cache = EvalCache::default();
        let key =
            |i: &str, e: &str, k: &str| CacheKey { instruction_sha256: i.into(), example_id: e.into(), engine_key: k.into() };
        cache.insert(key("p", "x", "e"), crate::optimize::proposers::demos::tests::record("x", 0.5));
        assert!(cache.get(&key("p", "x", "e")).is_some());
        assert!(cache.get(&key("q", "x", "e")).is_none());
        assert!(cache.get(&key("p", "y", "e")).is_none());
        assert!(cache.get(&key("p", "x", "f")).is_none());
        assert_eq!(cache.len(), 1);
    }
}
