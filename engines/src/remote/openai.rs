//! The `openai:` dialect of the remote engine: any OpenAI-compatible server (vLLM, `SGLang`,
//! llama-server's `/v1`) over `POST /v1/chat/completions`, with the task's JSON Schema as
//! `response_format` (structured outputs), greedy as temperature 0, and the request's seed.
//!
//! The server applies its own chat template and tokenizer, so unlike the native dialect the
//! prompt's tokens are not checked against the context here: a server that finds the input too
//! long answers 400, which becomes that example's error. Token counts come from `usage`, and
//! per-phase timings from llama-server's `timings` extension when present (the request's wall
//! time otherwise). The model is identified by the id `GET /v1/models` lists (every endpoint
//! must list the same one); the engine key carries it.
//!
//! [`count`] (prompt tokens of an instruction) uses llama-server's `/apply-template` and
//! `/tokenize`, or vLLM's `POST /tokenize` with messages, whichever the server has.

use std::time::Instant;

use reqwest::Client;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{self, ServerTimings};
use super::native;
use super::transport::{post, Failure, Target};
use crate::{ChatMessage, Constraint, EngineError, Request, Response, StopReason, Timings, TokenCounts};

/// A chat completion reply (non-streamed).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatReply {
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Usage,
    /// llama-server's extension.
    #[serde(default)]
    pub timings: Option<ServerTimings>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Choice {
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub completion_tokens: usize,
}

/// The `/v1/chat/completions` body for `req` on `model`. `cache_prompt` (llama-server's
/// extension; vLLM and `SGLang` ignore fields they do not know) is on only for a request with a
/// document prefix, as with `server:`: reusing a previous prompt's KV moves logits, so a request
/// without one is prefilled whole and its output does not depend on what the server ran before.
///
/// On a llama-server (`llama_server`) the constraint goes as its `grammar` extension when the
/// schema has a compact-JSON translation ([`api::grammar`]), as with `server:`: its own grammar
/// from `response_format` allows newlines between tokens, and greedy decoding takes them.
pub fn chat_body(req: &Request, model: &str, llama_server: bool) -> Value {
    let s = req.sampling;
    let mut body = json!({
        "model": model,
        "messages": req.messages,
        "max_tokens": req.max_tokens,
        "temperature": if s.is_greedy() { 0.0 } else { f64::from(s.temperature) },
        "top_p": if s.is_greedy() { 1.0 } else { f64::from(s.top_p) },
        "seed": s.seed,
        "n": 1,
        "stream": false,
        "cache_prompt": req.prefix_boundary.is_some(),
    });
    if let Constraint::JsonSchema(schema) = &req.constraint {
        if let Some(g) = llama_server.then(|| api::grammar(schema)).flatten() {
            body["grammar"] = json!(g);
            return body;
        }
        body["response_format"] = json!({
            "type": "json_schema",
            "json_schema": { "name": "output", "schema": schema, "strict": true },
        });
    }
    body
}

/// A reply as our [`Response`] parts: text, stop reason, counts and timings. `total_ms` is the
/// request's wall time.
///
/// # Errors
/// A reply without a choice.
pub fn response_parts(
    reply: &ChatReply,
    constrained: bool,
    total_ms: f64,
) -> Result<(String, StopReason, TokenCounts, Timings), String> {
    let choice = reply.choices.first().ok_or_else(|| "the /v1/chat/completions reply has no choice".to_owned())?;
    let text = choice.message.content.clone().unwrap_or_default();
    let stop = match choice.finish_reason.as_deref() {
        Some("length") => StopReason::MaxTokens,
        _ if constrained => StopReason::ConstraintComplete,
        _ => StopReason::Eos,
    };
    let counts =
        TokenCounts { input: reply.usage.prompt_tokens, output: reply.usage.completion_tokens, ..TokenCounts::default() };
    let timings = match reply.timings {
        Some(t) => {
            Timings { tokenize_ms: 0.0, prefill_ms: t.prompt_ms, ttft_ms: t.prompt_ms, decode_ms: t.predicted_ms, total_ms }
        }
        None => Timings { total_ms, ttft_ms: total_ms, ..Timings::default() },
    };
    Ok((text, stop, counts, timings))
}

/// One request on one endpoint.
pub async fn call(client: &Client, t: &Target, req: &Request, batch_id: u64) -> Result<Response, Failure> {
    let t0 = Instant::now();
    let body = chat_body(req, &t.model, t.llama_server);
    let bytes = post(client, &t.url, "/v1/chat/completions", &body, req.max_tokens).await?;
    let reply: ChatReply = api::parse(&bytes, "the /v1/chat/completions reply").map_err(Failure::Endpoint)?;
    let constrained = matches!(req.constraint, Constraint::JsonSchema(_));
    let total_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let (text, stop, tokens, timings) = response_parts(&reply, constrained, total_ms).map_err(Failure::Endpoint)?;
    Ok(Response {
        id: req.id.clone(),
        stop,
        text,
        tokens,
        timings,
        peak_rss_bytes: 0,
        batch_size: 1,
        batch_id,
        prefix_cache: None,
        engine: None,
        logprobs: Vec::new(),
    })
}

/// Tokens `messages` become on the server (its chat template applied): llama-server's
/// `/apply-template` + `/tokenize`, else vLLM's `/tokenize` with messages.
pub async fn count(client: &Client, url: &str, model: &str, messages: &[ChatMessage]) -> Result<usize, Failure> {
    match native::tokens(client, url, messages).await {
        Ok(tokens) => Ok(tokens.len()),
        Err(Failure::Request(_)) => {
            #[derive(Deserialize)]
            struct Reply {
                count: usize,
            }
            let body = json!({ "model": model, "messages": messages, "add_generation_prompt": true });
            let bytes = post(client, url, "/tokenize", &body, 0).await.map_err(|e| match e {
                Failure::Request(err) => Failure::Request(EngineError::Server {
                    url: url.to_owned(),
                    reason: format!(
                        "the server counts no tokens (neither llama-server's /apply-template nor vLLM's /tokenize): {err}"
                    ),
                }),
                other @ Failure::Endpoint(_) => other,
            })?;
            api::parse::<Reply>(&bytes, "the /tokenize reply").map(|r| r.count).map_err(Failure::Endpoint)
        }
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::api::parse_models;

    #[test]
    fn a_greedy_request_asks_for_structured_output_at_temperature_zero() {
        let req = Request::new("a", vec![ChatMessage::user("hi")], 32).with_schema(json!({"type": "object"}));
        let body = chat_body(&req, "smol", false);
        assert_eq!(body["model"], "smol");
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["max_tokens"], 32);
        assert_eq!(body["messages"][0]["content"], "hi");
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
        assert_eq!(body["cache_prompt"], false, "no document prefix: prefilled whole");
        assert!(chat_body(&Request::new("b", vec![], 8), "smol", false).get("response_format").is_none());
        // A llama-server gets the compact-JSON grammar instead (the same as `server:` sends).
        let closed = Request::new("c", vec![], 8).with_schema(json!({"type": "object", "additionalProperties": false}));
        let body = chat_body(&closed, "smol", true);
        assert!(body.get("response_format").is_none() && body["grammar"].as_str().is_some(), "{body}");
        assert!(chat_body(&req, "smol", true).get("response_format").is_some(), "an open object: no translation");
    }

    #[test]
    fn replies_map_to_text_stop_counts_and_timings() {
        let reply: ChatReply = api::parse(
            br#"{"choices":[{"message":{"role":"assistant","content":"{\"a\":1}"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":120,"completion_tokens":7},
                "timings":{"prompt_n":120,"prompt_ms":50.0,"predicted_n":7,"predicted_ms":30.0}}"#,
            "test",
        )
        .unwrap();
        let (text, stop, counts, t) = response_parts(&reply, true, 90.0).unwrap();
        assert_eq!((text.as_str(), stop), ("{\"a\":1}", StopReason::ConstraintComplete));
        assert_eq!((counts.input, counts.output), (120, 7));
        assert!((t.prefill_ms - 50.0).abs() < 1e-9 && (t.decode_ms - 30.0).abs() < 1e-9 && (t.total_ms - 90.0).abs() < 1e-9);
        let cut: ChatReply =
            api::parse(br#"{"choices":[{"message":{"content":"{\"a\":"},"finish_reason":"length"}]}"#, "test").unwrap();
        let (_, stop, _, t) = response_parts(&cut, true, 12.0).unwrap();
        assert_eq!(stop, StopReason::MaxTokens);
        assert!((t.ttft_ms - 12.0).abs() < 1e-9, "no timings: the wall time");
        let none: ChatReply = api::parse(br#"{"choices":[]}"#, "test").unwrap();
        assert!(response_parts(&none, true, 1.0).unwrap_err().contains("no choice"));
    }

    #[test]
    fn the_served_model_and_its_context_come_from_v1_models() {
        let vllm = parse_models(br#"{"object":"list","data":[{"id":"Qwen/Qwen2.5-0.5B","max_model_len":32768}]}"#).unwrap();
        assert_eq!((vllm.id.as_str(), vllm.context()), ("Qwen/Qwen2.5-0.5B", Some(32768)));
        let llama = parse_models(br#"{"data":[{"id":"smol.gguf","meta":{"n_ctx_train":8192,"n_params":1}}]}"#).unwrap();
        assert_eq!(llama.context(), Some(8192));
        assert!(parse_models(br#"{"data":[]}"#).unwrap_err().contains("no model"));
        assert!(parse_models(b"<html>").unwrap_err().contains("/v1/models"));
    }
}
