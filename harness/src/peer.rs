//! The peer of `promptloop compare`: the seed's workflow against a llama-server, one HTTP
//! request per example with the task's JSON Schema as `response_format`, one after another,
//! instruction first. [`Peer`] also asks the server what it holds (its slot context, its token
//! count of a prompt), so both sides run the same examples; [`fits`] is that check.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::score::score_example;
use crate::task::{Example, Task};

/// One side's pass of `compare`, the peer's or ours.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    pub wall_s: f64,
    pub mean_score: f64,
    pub format_failures: usize,
    pub errors: usize,
}

/// Errors talking to the peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("starting tokio")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// `/health` answered, but not with a success.
    #[error("GET /health answered {0}")]
    Health(reqwest::StatusCode),
    /// A request answered with an error status; `body` is the answer's first 300 characters.
    #[error("{status}: {body}")]
    Status { status: reqwest::StatusCode, body: String },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Whether every one of a side's prompts (one per pass and layout, in tokens) leaves room for
/// `max_tokens` in its context `ctx`: each pass's own prompt is checked, not the first pass's.
pub fn fits(prompts: &[usize], max_tokens: u32, ctx: usize) -> bool {
    prompts.iter().all(|&n| n + max_tokens as usize <= ctx)
}

/// The seed's workflow against a llama-server at `base`.
pub struct Peer {
    base: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Peer {
    /// A client of the server at `base`, each request bounded by `timeout`.
    ///
    /// # Errors
    /// The HTTP client or the runtime could not be built.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, PeerError> {
        let client = reqwest::Client::builder().timeout(timeout).build().map_err(PeerError::Client)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(PeerError::Runtime)?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), client, rt })
    }

    /// Whether the server answers `GET /health` with a success.
    ///
    /// # Errors
    /// It does not answer, or answers with an error status.
    pub fn check(&self) -> Result<(), PeerError> {
        let url = format!("{}/health", self.base);
        let status = self.rt.block_on(async { self.client.get(&url).timeout(Duration::from_secs(5)).send().await })?.status();
        if !status.is_success() {
            return Err(PeerError::Health(status));
        }
        Ok(())
    }

    /// The peer's context per slot (llama-server's `/props`); `None` when it does not say.
    pub fn context(&self) -> Option<usize> {
        let v = self.get_json("/props")?;
        v["default_generation_settings"]["n_ctx"].as_u64().map(|n| n as usize).filter(|&n| n > 0)
    }

    /// The tokens `messages` take on the peer: its own chat template (`/apply-template`) and
    /// tokenizer (`/tokenize`), as its `/v1/chat/completions` renders them. `None` when the peer
    /// has no such endpoints (not a llama-server).
    pub fn count_tokens(&self, messages: &[engines::ChatMessage]) -> Option<usize> {
        let prompt = self.post_json("/apply-template", &json!({ "messages": messages }))?;
        let prompt = prompt["prompt"].as_str()?;
        let body = json!({ "content": prompt, "add_special": true, "parse_special": true });
        Some(self.post_json("/tokenize", &body)?["tokens"].as_array()?.len())
    }

    fn get_json(&self, path: &str) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async { self.client.get(&url).send().await.ok()?.error_for_status().ok()?.json::<Value>().await.ok() })
    }

    fn post_json(&self, path: &str, body: &Value) -> Option<Value> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            self.client.post(&url).json(body).send().await.ok()?.error_for_status().ok()?.json::<Value>().await.ok()
        })
    }

    /// One pass over `examples`, one request at a time, greedy, `schema` (if any) as
    /// `response_format`, each answer scored against the example. A failed request scores 0
    /// and counts as an error (logged as a warning).
    pub fn pass(
        &self,
        task: &Task,
        examples: &[Example],
        instruction: &str,
        schema: Option<&Value>,
        max_tokens: u32,
        validator: &jsonschema::Validator,
    ) -> Pass {
        let t0 = Instant::now();
        let (mut scores, mut format_failures, mut errors) = (Vec::new(), 0, 0);
        for ex in examples {
            let mut body = json!({
                "model": "peer",
                "messages": [
                    {"role": "system", "content": instruction},
                    {"role": "user", "content": task.framing.document(&ex.text)},
                ],
                "temperature": 0.0,
                "max_tokens": max_tokens,
            });
            if let Some(schema) = schema {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "extraction", "schema": schema}});
            }
            match self.complete(&body) {
                Ok(v) => {
                    let choice = &v["choices"][0];
                    let text = choice["message"]["content"].as_str().unwrap_or_default();
                    let truncated = choice["finish_reason"] == "length";
                    let s = score_example(&task.fields, text, truncated, &ex.expected, Some(validator));
                    if !s.format_ok {
                        format_failures += 1;
                    }
                    scores.push(s.score);
                }
                Err(err) => {
                    tracing::warn!(id = %ex.id, error = %err, "peer request failed");
                    errors += 1;
                    scores.push(0.0);
                }
            }
        }
        Pass { wall_s: t0.elapsed().as_secs_f64(), mean_score: crate::stats::mean(scores), format_failures, errors }
    }

    /// One `/v1/chat/completions` request, its answer as JSON.
    fn complete(&self, body: &Value) -> Result<Value, PeerError> {
        let url = format!("{}/v1/chat/completions", self.base);
        self.rt.block_on(async {
            let resp = self.client.post(&url).json(body).send().await?;
            let status = resp.status();
            let text = resp.text().await?;
            if !status.is_success() {
                return Err(PeerError::Status { status, body: text.chars().take(300).collect() });
            }
            Ok(serde_json::from_str(&text)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn every_pass_prompt_must_fit_with_the_output_cap() {
        // Pass 1's prompt fits 8192 with 256 output tokens; pass 2's, 40 tokens longer, does not.
        assert!(fits(&[7900], 256, 8192));
        assert!(!fits(&[7900, 7940], 256, 8192), "pass 2's own prompt is checked");
        assert!(fits(&[7900, 7936], 256, 8192), "exactly full fits");
        assert!(fits(&[], 256, 8192));
    }
}
