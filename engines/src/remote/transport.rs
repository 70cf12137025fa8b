//! The remote engine's transport, shared by both dialects: what one endpoint needs
//! ([`Target`]), how a call ended ([`Failure`]), `POST` and `GET` with errors in words.

use std::time::{Duration, Instant};

use reqwest::Client;

use super::api;
use crate::EngineError;

/// How a call ended, seen from the router.
#[derive(Debug)]
pub enum Failure {
    /// The endpoint's fault (transport, 5xx, garbage): retry elsewhere.
    Endpoint(String),
    /// The request's own (4xx, too long): answer it with this.
    Request(EngineError),
}

/// What one endpoint needs to run a request.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// Context per slot (`usize::MAX` when the server does not say: `openai:`).
    pub n_ctx: usize,
    pub slots: usize,
    pub api: crate::ServerApi,
    /// The served model's id (`openai:`; empty for the native API).
    pub model: String,
    /// The endpoint is a llama-server (always for the native API; for `openai:`, when
    /// `/v1/models` carries its `meta`): the constraint goes as its compact-JSON `grammar`.
    pub llama_server: bool,
}

/// POSTs JSON; a 2xx body comes back. Transport errors and 5xx are the endpoint's failures,
/// other statuses the request's.
pub(super) async fn post(
    client: &Client,
    url: &str,
    path: &str,
    body: &serde_json::Value,
    max_tokens: u32,
) -> Result<Vec<u8>, Failure> {
    let reply =
        client.post(format!("{url}{path}")).json(body).send().await.map_err(|e| Failure::Endpoint(transport(path, &e)))?;
    let status = reply.status();
    let bytes = reply.bytes().await.map_err(|e| Failure::Endpoint(transport(path, &e)))?;
    if status.is_success() {
        return Ok(bytes.to_vec());
    }
    let err = api::error_reply(url, status.as_u16(), &bytes, max_tokens);
    if status.is_server_error() {
        Err(Failure::Endpoint(format!("{path}: {err}")))
    } else {
        Err(Failure::Request(err))
    }
}

/// A transport error in words, with its cause (reqwest's own message is only "error sending
/// request").
pub fn transport(path: &str, e: &reqwest::Error) -> String {
    use std::error::Error;
    use std::fmt::Write;
    let mut msg = format!("{path}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    msg
}

/// GETs `path` within `timeout`; a 2xx body comes back, anything else is why the endpoint
/// cannot be used, in words.
pub(super) async fn get(client: &Client, url: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let reply = client.get(format!("{url}{path}")).timeout(timeout).send().await.map_err(|e| transport(path, &e))?;
    let status = reply.status();
    let bytes = reply.bytes().await.map_err(|e| transport(path, &e))?;
    if status.is_success() {
        Ok(bytes.to_vec())
    } else {
        let head: String = String::from_utf8_lossy(&bytes).chars().take(120).collect();
        Err(format!("{path}: HTTP {status}: {head}"))
    }
}

pub(super) fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}
