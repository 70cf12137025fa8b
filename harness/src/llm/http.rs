//! HTTP optimizer clients: [`HttpOptimizer`] speaks the chat-completions API of `OpenAI` (and of
//! vLLM, llama-server, ollama's /v1) or the Anthropic Messages API, and retries transient
//! failures under a [`RetryPolicy`].
//!
//! What is retried: transport errors (refused or reset connections, the whole-request timeout,
//! a body cut off), HTTP 408, 409, 429 and 5xx, and 2xx answers whose JSON is broken or whose
//! text is empty. The delay is exponential with jitter, or the server's `Retry-After` on 429 and
//! 503. What is not: 401/403 (credentials) and any other 4xx (unknown model, bad request), which
//! fail at once with [`CallError::Fatal`]. The API key is never printed: not by `describe`, not
//! by `Debug`, not in any error message.
//!
//! One piece at ~700 lines: the two APIs share the client, the retry loop, the error classes and
//! the key redaction; only their request and reply shapes differ (the small wire structs at the
//! end).

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{CallError, ChatReply, ChatRequest, Message, Optimizer};
use engines::SplitMix64;

/// Which wire format an [`HttpOptimizer`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST {base}/chat/completions`, `Authorization: Bearer KEY` (key optional off api.openai.com).
    OpenAi,
    /// `POST {base}/v1/messages`, `x-api-key: KEY` (always required).
    Anthropic,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
    /// The environment variable holding the API key.
    pub fn key_var(self) -> &'static str {
        match self {
            Api::OpenAi => "OPENAI_API_KEY",
            Api::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
    /// The environment variable that overrides the base URL.
    pub fn base_var(self) -> &'static str {
        match self {
            Api::OpenAi => "OPENAI_BASE_URL",
            Api::Anthropic => "ANTHROPIC_BASE_URL",
        }
    }
    pub fn default_base_url(self) -> &'static str {
        match self {
            Api::OpenAi => "https://api.openai.com/v1",
            Api::Anthropic => "https://api.anthropic.com",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Api::OpenAi => "/chat/completions",
            Api::Anthropic => "/v1/messages",
        }
    }
    /// Hosted APIs need a key; self-hosted OpenAI-compatible servers usually do not.
    fn key_required(self, base: &Url) -> bool {
        match self {
            Api::OpenAi => base.host_str() == Some("api.openai.com"),
            Api::Anthropic => true,
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Timeouts and retries of one [`HttpOptimizer::complete`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The whole request, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts in all, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// Backoff before retry `n` is `base_delay * 2^(n-1)`, capped at `max_delay`, times a jitter
    /// factor in [0.5, 1.0].
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` (429, 503) that is honoured; longer ones are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retrying after failed attempt `attempt` (1-based); `unit` in [0, 1)
    /// picks the jitter factor in [0.5, 1.0).
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        let capped = self.base_delay.saturating_mul(factor).min(self.max_delay);
        capped.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }
}

/// Why an [`HttpOptimizer`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: {api} at {url} needs an API key{hint}")]
    MissingKey { api: Api, var: &'static str, url: String, hint: &'static str },
    #[error("{var} contains characters that cannot go in an HTTP header (a stray newline or quote?)")]
    BadKey { var: &'static str },
    #[error("{api} base URL `{url}` is not usable: {reason} (set {var} to http(s)://host[:port][/path])")]
    BadBaseUrl { api: Api, var: &'static str, url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the tokio runtime of the HTTP client: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A chat model behind an HTTP API. Synchronous: it owns a current-thread tokio runtime and
/// blocks on it, so it must not be called from inside another tokio runtime.
pub struct HttpOptimizer {
    api: Api,
    model: String,
    /// As given, trailing `/` removed; may carry userinfo, which reqwest sends as basic auth.
    base_url: String,
    /// `base_url` without userinfo, query or fragment: what messages show.
    shown_base: String,
    key: Option<String>,
    policy: RetryPolicy,
    /// Auth and version headers, the key marked sensitive.
    headers: HeaderMap,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    jitter: SplitMix64,
}

impl fmt::Debug for HttpOptimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptimizer")
            .field("api", &self.api)
            .field("model", &self.model)
            .field("base_url", &self.shown_base)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpOptimizer {
    /// A client for `model` at `base_url` (a trailing `/` is fine). `key` may be `None` only
    /// for OpenAI-compatible servers other than api.openai.com.
    pub fn new(
        api: Api,
        model: impl Into<String>,
        base_url: &str,
        key: Option<String>,
        policy: RetryPolicy,
    ) -> Result<Self, ConfigError> {
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        let bad = |reason: String| ConfigError::BadBaseUrl { api, var: api.base_var(), url: redact_unparsed(&base_url), reason };
        let parsed = Url::parse(&base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad(format!("the scheme is `{}`, not http or https", parsed.scheme())));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host".into()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("it has a query or fragment, and the API path goes after it".into()));
        }
        let shown_base = shown_url(&parsed);
        let key = key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty());
        if key.is_none() && api.key_required(&parsed) {
            let hint = match api {
                Api::OpenAi => " (or point OPENAI_BASE_URL at a server that needs none)",
                Api::Anthropic => "",
            };
            return Err(ConfigError::MissingKey { api, var: api.key_var(), url: shown_base, hint });
        }
        let headers = auth_headers(api, key.as_deref())?;
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .user_agent(concat!("promptloop/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ConfigError::Client)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ConfigError::Runtime)?;
        let seed =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id());
        Ok(Self {
            api,
            model: model.into(),
            base_url,
            shown_base,
            key,
            policy,
            headers,
            client,
            runtime,
            jitter: SplitMix64::new(seed),
        })
    }

    /// Base URL and key from `OPENAI_BASE_URL`/`OPENAI_API_KEY` or
    /// `ANTHROPIC_BASE_URL`/`ANTHROPIC_API_KEY`; empty variables count as unset.
    pub fn from_env(api: Api, model: impl Into<String>, policy: RetryPolicy) -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let base = var(api.base_var()).unwrap_or_else(|| api.default_base_url().to_owned());
        Self::new(api, model, &base, var(api.key_var()), policy)
    }

    pub fn api(&self) -> Api {
        self.api
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn endpoint(&self) -> String {
        format!("{}{}", self.base_url, self.api.path())
    }

    fn shown_endpoint(&self) -> String {
        format!("{}{}", self.shown_base, self.api.path())
    }

    fn body(&self, req: &ChatRequest) -> Vec<u8> {
        let result = match self.api {
            Api::OpenAi => {
                let system = req.system.as_deref().map(|content| WireMessage { role: "system", content });
                let messages = system.into_iter().chain(req.messages.iter().map(WireMessage::from)).collect();
                let body = OpenAiBody {
                    model: &self.model,
                    messages,
                    temperature: req.temperature,
                    max_tokens: req.max_tokens,
                    seed: req.seed,
                };
                serde_json::to_vec(&body)
            }
            Api::Anthropic => {
                let messages = req.messages.iter().map(WireMessage::from).collect();
                let body = AnthropicBody {
                    model: &self.model,
                    max_tokens: req.max_tokens,
                    temperature: req.temperature,
                    system: req.system.as_deref(),
                    messages,
                };
                serde_json::to_vec(&body)
            }
        };
        // Strings and numbers only: serialization cannot fail.
        result.expect("request body serializes")
    }

    /// One HTTP exchange, judged.
    fn attempt(&self, body: &[u8]) -> Result<Parsed, Failure> {
        let request = self.client.post(self.endpoint()).headers(self.headers.clone()).body(body.to_vec());
        let sent = self.runtime.block_on(async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        });
        let (status, headers, bytes) = match sent {
            Ok(ok) => ok,
            Err(e) => {
                let reason = format!("{} at {}", describe_transport(&e, &self.policy), self.shown_endpoint());
                return Err(Failure::Retry { reason, retry_after: None, malformed: false });
            }
        };
        match classify(status) {
            StatusClass::Success => {
                let parsed = match self.api {
                    Api::OpenAi => parse_openai(&bytes),
                    Api::Anthropic => parse_anthropic(&bytes),
                };
                parsed.map_err(|detail| Failure::Retry {
                    reason: format!("HTTP {} from {}: {}", status, self.shown_endpoint(), self.redact(&detail)),
                    retry_after: None,
                    malformed: true,
                })
            }
            StatusClass::Retry => {
                let retry_after = if matches!(status.as_u16(), 429 | 503) {
                    headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, SystemTime::now()))
                } else {
                    None
                };
                let reason = format!("HTTP {} from {}: {}", status, self.shown_endpoint(), self.snippet(&bytes));
                Err(Failure::Retry { reason, retry_after, malformed: false })
            }
            StatusClass::Auth => {
                let given = if self.key.is_some() { "check" } else { "no key was given; set" };
                Err(Failure::Fatal(format!(
                    "{} at {} rejected the credentials (HTTP {}): {given} {}",
                    self.api,
                    self.shown_base,
                    status.as_u16(),
                    self.api.key_var()
                )))
            }
            StatusClass::Fatal => Err(Failure::Fatal(format!(
                "{}:{} at {} answered HTTP {}: {}",
                self.api,
                self.model,
                self.shown_endpoint(),
                status,
                self.snippet(&bytes)
            ))),
        }
    }

    /// The first ~300 characters of a body, whitespace collapsed, any echo of the key removed.
    fn snippet(&self, bytes: &[u8]) -> String {
        // Redacted before the cut, so that no prefix of the key survives at the edge.
        let text = self.redact(&String::from_utf8_lossy(bytes));
        let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut cut: String = collapsed.chars().take(300).collect();
        if cut.len() < collapsed.len() {
            cut.push_str("...");
        }
        if cut.is_empty() {
            cut.push_str("(empty body)");
        }
        cut
    }

    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) if text.contains(key.as_str()) => text.replace(key.as_str(), "[redacted]"),
            _ => text.to_owned(),
        }
    }

    fn unit(&mut self) -> f64 {
        (self.jitter.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Optimizer for HttpOptimizer {
    fn describe(&self) -> String {
        format!("{}:{} at {}", self.api, self.model, self.shown_base)
    }

    fn complete(&mut self, req: &ChatRequest) -> Result<ChatReply, CallError> {
        let start = Instant::now();
        let body = self.body(req);
        let max = self.policy.max_attempts.max(1);
        let mut all_malformed = true;
        let mut last = String::new();
        for attempt in 1..=max {
            let (reason, retry_after, malformed) = match self.attempt(&body) {
                Ok(p) => {
                    return Ok(ChatReply {
                        text: p.text,
                        input_tokens: p.input_tokens,
                        output_tokens: p.output_tokens,
                        attempts: attempt,
                        latency_ms: start.elapsed().as_secs_f64() * 1e3,
                    })
                }
                Err(Failure::Fatal(msg)) => return Err(CallError::Fatal(msg)),
                Err(Failure::Retry { reason, retry_after, malformed }) => (reason, retry_after, malformed),
            };
            all_malformed &= malformed;
            if attempt < max {
                let delay = if let Some(d) = retry_after {
                    d.min(self.policy.max_retry_after)
                } else {
                    let unit = self.unit();
                    self.policy.backoff(attempt, unit)
                };
                tracing::warn!(
                    attempt,
                    max_attempts = max,
                    delay_ms = delay.as_millis() as u64,
                    "{}: attempt {attempt}/{max} failed ({reason}); retrying in {:.2} s",
                    self.describe(),
                    delay.as_secs_f64()
                );
                std::thread::sleep(delay);
            }
            last = reason;
        }
        Err(if all_malformed {
            CallError::Malformed { attempts: max, detail: last }
        } else {
            CallError::Exhausted { attempts: max, last }
        })
    }
}

/// The outcome of one failed attempt.
#[derive(Debug)]
enum Failure {
    Retry { reason: String, retry_after: Option<Duration>, malformed: bool },
    Fatal(String),
}

/// What a status code means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    Success,
    Retry,
    Auth,
    Fatal,
}

fn classify(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Success,
        408 | 409 | 429 | 500..=599 => StatusClass::Retry,
        401 | 403 => StatusClass::Auth,
        _ => StatusClass::Fatal,
    }
}

fn auth_headers(api: Api, key: Option<&str>) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let secret = |value: String| {
        let mut v = HeaderValue::from_str(&value).map_err(|_| ConfigError::BadKey { var: api.key_var() })?;
        v.set_sensitive(true);
        Ok::<_, ConfigError>(v)
    };
    match api {
        Api::OpenAi => {
            if let Some(key) = key {
                headers.insert(AUTHORIZATION, secret(format!("Bearer {key}"))?);
            }
        }
        Api::Anthropic => {
            if let Some(key) = key {
                headers.insert(HeaderName::from_static("x-api-key"), secret(key.to_owned())?);
            }
            headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static("2023-06-01"));
        }
    }
    Ok(headers)
}

/// `scheme://host[:port]/path` without userinfo, query or fragment, no trailing `/`.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Only fails for URLs that cannot have userinfo, which then have none to strip.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.as_str().trim_end_matches('/').to_owned()
}

/// A URL that did not parse, with anything that looks like `user:password@` cut out.
fn redact_unparsed(url: &str) -> String {
    let start = url.find("://").map_or(0, |s| s + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}[redacted]@{}", &url[..start], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn describe_transport(e: &reqwest::Error, policy: &RetryPolicy) -> String {
    let kind = if e.is_connect() && e.is_timeout() {
        format!("connecting timed out after {:?}", policy.connect_timeout)
    } else if e.is_timeout() {
        format!("timed out after {:?}", policy.timeout)
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "reading the body failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    // The innermost cause says what happened ("Connection refused (os error 111)").
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let root = root.to_string();
    if root.is_empty() || e.is_timeout() || kind.contains(&root) {
        kind
    } else {
        format!("{kind} ({root})")
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (a past date means now); `None` if neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = UNIX_EPOCH + Duration::from_secs(parse_http_date(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP-date (RFC 9110 §5.6.7: IMF-fixdate, or the obsolete RFC 850 and asctime forms) as
/// seconds since the Unix epoch.
fn parse_http_date(value: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let tokens: Vec<&str> = value.split_ascii_whitespace().collect();
    let (day, month, year, time) = match tokens.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT, or asctime's Sun Nov  6 08:49:37 1994
        [_, d, m, y, t, "GMT"] | [_, m, d, t, y] => (*d, *m, (*y).to_owned(), *t),
        // Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let mut parts = dmy.split('-');
            let (d, m, yy) = (parts.next()?, parts.next()?, parts.next()?);
            let yy: u32 = yy.parse().ok().filter(|_| yy.len() == 2)?;
            (d, m, (if yy < 70 { 2000 + yy } else { 1900 + yy }).to_string(), *t)
        }
        _ => return None,
    };
    let day: u32 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year: i64 = year.parse().ok().filter(|y| *y >= 1970)?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok().filter(|_| p.len() == 2));
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A reply's text and token counts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    text: String,
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    fn from(m: &'a Message) -> Self {
        let role = match m.role {
            super::Role::User => "user",
            super::Role::Assistant => "assistant",
        };
        WireMessage { role, content: &m.content }
    }
}

#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    temperature: f32,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    model: &'a str,
    max_tokens: u32,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<WireMessage<'a>>,
}

#[derive(Deserialize)]
struct OpenAiReply {
    choices: Vec<OpenAiChoice>,
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    message: OpenAiMessage,
}

#[derive(Deserialize)]
struct OpenAiMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct AnthropicReply {
    content: Vec<AnthropicBlock>,
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
#[allow(clippy::struct_field_names)] // the API's own names
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// Prompt tokens served from or written to the prompt cache; not in `input_tokens`.
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

fn not_json(api: Api, e: &serde_json::Error, body: &[u8]) -> String {
    let start: String = String::from_utf8_lossy(body).chars().take(120).collect();
    format!("not the {api} reply JSON ({e}); the body starts `{start}`")
}

fn non_empty(text: String, api: Api) -> Result<String, String> {
    if text.trim().is_empty() {
        Err(format!("the {api} reply text is empty"))
    } else {
        Ok(text)
    }
}

/// `choices[0].message.content` and `usage.{prompt,completion}_tokens` (0 when absent).
fn parse_openai(body: &[u8]) -> Result<Parsed, String> {
    let reply: OpenAiReply = serde_json::from_slice(body).map_err(|e| not_json(Api::OpenAi, &e, body))?;
    let text = reply.choices.into_iter().next().ok_or("the openai reply has no choices")?.message.content.unwrap_or_default();
    let usage = reply.usage.unwrap_or(OpenAiUsage { prompt_tokens: None, completion_tokens: None });
    Ok(Parsed {
        text: non_empty(text, Api::OpenAi)?,
        input_tokens: usage.prompt_tokens.unwrap_or(0),
        output_tokens: usage.completion_tokens.unwrap_or(0),
    })
}

/// The `text` blocks of `content` joined, and `usage.{input,output}_tokens` (0 when absent).
fn parse_anthropic(body: &[u8]) -> Result<Parsed, String> {
    let reply: AnthropicReply = serde_json::from_slice(body).map_err(|e| not_json(Api::Anthropic, &e, body))?;
    let text: String = reply.content.into_iter().filter(|b| b.kind == "text").filter_map(|b| b.text).collect();
    let usage = reply.usage.unwrap_or(AnthropicUsage {
        input_tokens: None,
        output_tokens: None,
        cache_read_input_tokens: None,
        cache_creation_input_tokens: None,
    });
    // Every prompt token counts, cached or not (spend is reported high rather than low).
    let input = usage.input_tokens.unwrap_or(0)
        + usage.cache_read_input_tokens.unwrap_or(0)
        + usage.cache_creation_input_tokens.unwrap_or(0);
    Ok(Parsed { text: non_empty(text, Api::Anthropic)?, input_tokens: input, output_tokens: usage.output_tokens.unwrap_or(0) })
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
