//! The native dialect of the remote engine: llama-server's own API, one request as
//! `/apply-template`, `/tokenize` (so the prompt is checked against the slot's context, and the
//! prompt sent is exactly the tokens counted) and `/completion` with the token ids.

use std::time::Instant;

use reqwest::Client;

use super::api::{self, Completion};
use super::transport::{ms, post, Failure, Target};
use crate::{EngineError, Request, Response};

/// The prompt `requests` messages become on `target` (its chat template), as token ids.
///
/// # Errors
/// [`Failure::Endpoint`] when the endpoint fails; [`Failure::Request`] when it rejects them.
pub async fn tokens(client: &Client, url: &str, messages: &[crate::ChatMessage]) -> Result<Vec<i64>, Failure> {
    let bytes = post(client, url, "/apply-template", &api::apply_template_body(messages), 0).await?;
    let prompt = api::parse_prompt(&bytes).map_err(Failure::Endpoint)?;
    let bytes = post(client, url, "/tokenize", &api::tokenize_body(&prompt), 0).await?;
    api::parse_tokens(&bytes).map_err(Failure::Endpoint)
}

/// One request on one endpoint: `/apply-template`, `/tokenize` (checked against the slot's
/// context), `/completion`.
pub async fn call(client: &Client, t: &Target, req: &Request, slot: Option<usize>, batch_id: u64) -> Result<Response, Failure> {
    let t0 = Instant::now();
    let tokens = tokens(client, &t.url, &req.messages).await?;
    let max_tokens = req.max_tokens as usize;
    if tokens.len() + max_tokens > t.n_ctx {
        return Err(Failure::Request(EngineError::InputTooLong {
            tokens: tokens.len(),
            max: t.n_ctx.saturating_sub(max_tokens),
            context: t.n_ctx,
            max_tokens,
        }));
    }
    let client_ms = ms(t0);
    let body = api::completion_body(req, &tokens, slot);
    let bytes = post(client, &t.url, "/completion", &body, req.max_tokens).await?;
    let c: Completion = api::parse(&bytes, "the /completion reply").map_err(Failure::Endpoint)?;
    let constrained = matches!(req.constraint, crate::Constraint::JsonSchema(_));
    let (tokens, timings) = api::counts_and_timings(&c, tokens.len(), client_ms, ms(t0));
    Ok(Response {
        id: req.id.clone(),
        stop: api::stop_reason(&c, constrained),
        text: c.content.clone(),
        tokens,
        timings,
        peak_rss_bytes: 0,
        batch_size: 1,
        batch_id,
        prefix_cache: req.prefix_boundary.map(|_| api::prefix_cache_use(&c)),
        engine: None,
        logprobs: Vec::new(),
    })
}
