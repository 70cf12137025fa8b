//! llama-server's native API as promptloop uses it: the request bodies (`/apply-template`,
//! `/tokenize`, `/completion`) and the replies (`/props`, `/v1/models`, `/completion`, errors),
//! parsed leniently (unknown fields ignored) and mapped into our [`Response`] and
//! [`StopReason`]. Pure functions; no I/O.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::{ChatMessage, Constraint, EngineError, PrefixCacheUse, Request, StopReason, Timings, TokenCounts};

/// What `GET /props` says about a server (the fields we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Props {
    /// The GGUF path as the server was started with (`-m`).
    pub model_path: String,
    #[serde(default)]
    pub total_slots: usize,
    #[serde(default)]
    pub build_info: String,
    #[serde(default)]
    pub default_generation_settings: GenerationSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationSettings {
    /// Context per slot.
    #[serde(default)]
    pub n_ctx: usize,
}

/// `GET /v1/models` (the fields we use: the id, vLLM's `max_model_len`, llama-server's `meta`):
/// the one parser of it, for both dialects.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Models {
    #[serde(default)]
    pub data: Vec<Model>,
}

/// One model of `GET /v1/models`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Model {
    /// Empty when the server does not say (`openai:` endpoints must).
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub max_model_len: Option<usize>,
    /// llama-server's model shape, for comparing when the server's file is not readable here.
    #[serde(default)]
    pub meta: Option<ModelMeta>,
}

impl Model {
    /// The context the server states, when it states one.
    pub fn context(&self) -> Option<usize> {
        self.max_model_len.or_else(|| self.meta.as_ref().map(|m| m.n_ctx_train)).filter(|&n| n > 0)
    }
}

/// The served model of `GET /v1/models` (the first listed).
///
/// # Errors
/// Why the endpoint cannot be used, in words.
pub fn parse_models(bytes: &[u8]) -> Result<Model, String> {
    let models: Models = parse(bytes, "the /v1/models reply")?;
    models.data.into_iter().next().ok_or_else(|| "/v1/models lists no model".to_owned())
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelMeta {
    #[serde(default)]
    pub n_params: u64,
    #[serde(default)]
    pub n_vocab: usize,
    #[serde(default)]
    pub n_ctx_train: usize,
}

/// The timings object of a `/completion` reply.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct ServerTimings {
    /// Prompt tokens reused from the slot's cache (not computed).
    #[serde(default)]
    pub cache_n: usize,
    /// Prompt tokens computed.
    #[serde(default)]
    pub prompt_n: usize,
    #[serde(default)]
    pub prompt_ms: f64,
    #[serde(default)]
    pub predicted_n: usize,
    #[serde(default)]
    pub predicted_ms: f64,
}

/// A `/completion` reply (non-streamed).
#[derive(Debug, Clone, Deserialize)]
pub struct Completion {
    pub content: String,
    #[serde(default)]
    pub stop_type: String,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub tokens_evaluated: usize,
    #[serde(default)]
    pub tokens_predicted: usize,
    #[serde(default)]
    pub timings: ServerTimings,
}

/// The messages as `/apply-template` takes them.
pub fn apply_template_body(messages: &[ChatMessage]) -> Value {
    json!({ "messages": messages })
}

/// `/tokenize` of a templated prompt: special tokens parsed and added, as `/completion` does
/// with a string prompt (and as our in-process engine tokenizes).
pub fn tokenize_body(prompt: &str) -> Value {
    json!({ "content": prompt, "add_special": true, "parse_special": true })
}

/// The `/completion` body for `req` on prompt `tokens`: greedy (temperature 0, top-k 1) or
/// the request's seeded sampling, `n_predict` = `max_tokens`, the constraint as a compact-JSON
/// `grammar` ([`grammar`]; `json_schema` when it has no translation), and the slot pinned when
/// given.
///
/// `cache_prompt` is on only for a request with a document prefix (`prefix_boundary`): that is
/// the KV worth keeping across passes. llama-server's README warns that reusing cached KV can
/// change logits (prompt batches of another size), and on a real server it flipped a greedy
/// token of one cuad-mini example between a fleet and one server whose caches held different
/// earlier prompts; without a document prefix, every request is prefilled whole, so outputs do
/// not depend on routing or on what a server ran before.
pub fn completion_body(req: &Request, tokens: &[i64], id_slot: Option<usize>) -> Value {
    let s = req.sampling;
    let mut body = json!({
        "prompt": tokens,
        "n_predict": req.max_tokens,
        "temperature": if s.is_greedy() { 0.0 } else { f64::from(s.temperature) },
        "top_p": if s.is_greedy() { 1.0 } else { f64::from(s.top_p) },
        "min_p": 0.0,
        "seed": s.seed,
        "cache_prompt": req.prefix_boundary.is_some(),
        "stream": false,
        "ignore_eos": req.ignore_eos,
        "repeat_penalty": 1.0,
        "id_slot": id_slot.map_or(-1, |s| s as i64),
    });
    // Greedy: top-k 1 as well, so no sampler chain can pick anything but the argmax. Sampled:
    // no top-k cut (0 = off), like our own sampler (temperature, then nucleus).
    body["top_k"] = json!(i32::from(s.is_greedy()));
    if let Constraint::JsonSchema(schema) = &req.constraint {
        match grammar(schema) {
            Some(g) => body["grammar"] = json!(g),
            None => body["json_schema"] = schema.clone(),
        }
    }
    body
}

/// The constraint as llama-server's `grammar`: compact JSON, the layout llguidance allows the
/// in-process engines (see [`crate::json_grammar`]), so greedy decoding agrees token for token.
/// `None` for a schema the translation does not cover: the server then gets it as
/// `json_schema`, and its own grammar allows newlines and indentation between tokens.
pub fn grammar(schema: &Value) -> Option<String> {
    match crate::json_grammar::compact_gbnf(schema) {
        Ok(g) => Some(g),
        Err(why) => {
            tracing::debug!(%why, "schema sent as json_schema: the server's whitespace, not compact JSON");
            None
        }
    }
}

/// `{"prompt": "..."}` of `/apply-template`.
pub fn parse_prompt(bytes: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Reply {
        prompt: String,
    }
    parse::<Reply>(bytes, "the /apply-template reply").map(|r| r.prompt)
}

/// `{"tokens": [...]}` of `/tokenize` (plain ids; `with_pieces` is off).
pub fn parse_tokens(bytes: &[u8]) -> Result<Vec<i64>, String> {
    #[derive(Deserialize)]
    struct Reply {
        tokens: Vec<i64>,
    }
    parse::<Reply>(bytes, "the /tokenize reply").map(|r| r.tokens)
}

/// Parses a JSON reply, saying what it was and how it starts when it is not the JSON expected.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        let head: String = String::from_utf8_lossy(bytes).chars().take(80).collect();
        format!("{what} is not the JSON expected ({e}); it starts `{head}`")
    })
}

/// Why decoding stopped: `limit` or a truncated prompt is the token cap; `eos` under a JSON
/// Schema means the value was complete (the grammar allows nothing else then).
pub fn stop_reason(c: &Completion, constrained: bool) -> StopReason {
    match c.stop_type.as_str() {
        _ if c.truncated => StopReason::MaxTokens,
        "limit" => StopReason::MaxTokens,
        _ if constrained => StopReason::ConstraintComplete,
        _ => StopReason::Eos,
    }
}

/// Token counts and timings of a reply. `client_ms` is the wall time of the template and
/// tokenize calls (our "tokenize" phase), `total_ms` the request's wall time end to end.
pub fn counts_and_timings(c: &Completion, input: usize, client_ms: f64, total_ms: f64) -> (TokenCounts, Timings) {
    let t = c.timings;
    // The server counts the end-of-generation token it sampled; the in-process engines stop
    // before it (at the end of the JSON value, or on the token itself), so it is not output.
    let predicted = t.predicted_n.max(c.tokens_predicted);
    let output = if c.stop_type == "eos" && !c.truncated { predicted.saturating_sub(1) } else { predicted };
    let counts = TokenCounts { input, output, ..TokenCounts::default() };
    let timings = Timings {
        tokenize_ms: client_ms,
        prefill_ms: t.prompt_ms,
        ttft_ms: client_ms + t.prompt_ms,
        decode_ms: t.predicted_ms,
        total_ms,
    };
    (counts, timings)
}

/// What the server's prompt cache did for a request with a document prefix: `cache_n` tokens
/// reused (a hit, held in the server's memory) or none (a miss).
pub fn prefix_cache_use(c: &Completion) -> PrefixCacheUse {
    let n = c.timings.cache_n;
    let tier = if n > 0 { crate::CacheTier::Memory } else { crate::CacheTier::Miss };
    PrefixCacheUse { tier, tokens: n, bytes: 0, ms: 0.0 }
}

/// An error reply: `exceed_context_size_error` becomes [`EngineError::InputTooLong`], anything
/// else a server error carrying the server's message.
pub fn error_reply(url: &str, status: u16, bytes: &[u8], max_tokens: u32) -> EngineError {
    #[derive(Deserialize)]
    struct Reply {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        message: String,
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        n_prompt_tokens: usize,
        #[serde(default)]
        n_ctx: usize,
    }
    match serde_json::from_slice::<Reply>(bytes) {
        Ok(r) if r.error.kind == "exceed_context_size_error" => {
            let context = r.error.n_ctx;
            EngineError::InputTooLong {
                tokens: r.error.n_prompt_tokens,
                max: context.saturating_sub(max_tokens as usize),
                context,
                max_tokens: max_tokens as usize,
            }
        }
        Ok(r) => EngineError::Server { url: url.to_owned(), reason: format!("HTTP {status}: {}", r.error.message) },
        Err(_) => {
            let head: String = String::from_utf8_lossy(bytes).chars().take(120).collect();
            EngineError::Server { url: url.to_owned(), reason: format!("HTTP {status}: {head}") }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(json: &str) -> Completion {
        parse(json.as_bytes(), "test").unwrap()
    }

    #[test]
    fn greedy_requests_pin_argmax_and_carry_the_schema() {
        let req = Request::new("a", vec![ChatMessage::user("hi")], 32)
            .with_schema(json!({"type": "object", "additionalProperties": false}))
            .with_prefix_boundary(0, 1);
        let body = completion_body(&req, &[1, 2, 3], Some(2));
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["top_k"], 1);
        assert_eq!(body["n_predict"], 32);
        assert_eq!(body["id_slot"], 2);
        assert_eq!(body["cache_prompt"], true);
        assert!(body.get("json_schema").is_none(), "{body}");
        assert!(body["grammar"].as_str().unwrap().starts_with(r#"root ::= "{}""#), "{body}");
        let open = Request::new("c", vec![], 8).with_schema(json!({"type": "object"}));
        assert_eq!(completion_body(&open, &[], None)["json_schema"], json!({"type": "object"}), "not translated: as json_schema");
        assert_eq!(body["prompt"], json!([1, 2, 3]));
        let free = completion_body(&Request::new("b", vec![], 8), &[], None);
        assert_eq!(free["id_slot"], -1);
        assert!(free.get("json_schema").is_none());
        assert_eq!(free["cache_prompt"], false, "no document prefix: prefilled whole, reproducibly");
    }

    #[test]
    fn replies_map_to_stop_reasons_counts_and_timings() {
        let c = completion(
            r#"{"content":"{}","stop_type":"eos","truncated":false,"tokens_predicted":5,"extra":1,
               "timings":{"cache_n":90,"prompt_n":10,"prompt_ms":20.0,"predicted_n":5,"predicted_ms":40.0}}"#,
        );
        assert_eq!(stop_reason(&c, true), StopReason::ConstraintComplete);
        assert_eq!(stop_reason(&c, false), StopReason::Eos);
        let (counts, t) = counts_and_timings(&c, 100, 3.0, 70.0);
        assert_eq!((counts.input, counts.output), (100, 4), "the end-of-generation token is not output");
        assert!((t.ttft_ms - 23.0).abs() < 1e-9 && (t.decode_ms - 40.0).abs() < 1e-9);
        assert!(prefix_cache_use(&c).hit());
        assert_eq!(stop_reason(&completion(r#"{"content":"","stop_type":"limit"}"#), true), StopReason::MaxTokens);
        assert_eq!(
            stop_reason(&completion(r#"{"content":"","stop_type":"eos","truncated":true}"#), false),
            StopReason::MaxTokens
        );
        assert!(!prefix_cache_use(&completion(r#"{"content":""}"#)).hit());
    }

    #[test]
    fn garbage_and_error_replies_say_what_they_were() {
        let err = parse::<Completion>(b"<html>oops", "the /completion reply").unwrap_err();
        assert!(err.contains("/completion") && err.contains("<html>oops"), "{err}");
        assert_eq!(parse_prompt(br#"{"prompt":"<|im_start|>"}"#).unwrap(), "<|im_start|>");
        assert_eq!(parse_tokens(br#"{"tokens":[1,2]}"#).unwrap(), vec![1, 2]);
        let long = br#"{"error":{"code":400,"message":"too big","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#;
        match error_reply("http://h", 400, long, 256) {
            EngineError::InputTooLong { tokens, max, context, .. } => assert_eq!((tokens, max, context), (5000, 3840, 4096)),
            other => panic!("{other}"),
        }
        let other = error_reply("http://h", 500, br#"{"error":{"message":"boom","type":"server_error"}}"#, 8).to_string();
        assert!(other.contains("http://h") && other.contains("HTTP 500: boom"), "{other}");
        assert!(error_reply("http://h", 502, b"bad gateway", 8).to_string().contains("bad gateway"));
    }
}
