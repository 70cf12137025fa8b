//! The `server` engine (feature `remote`): the candidate model on a fleet of llama-servers,
//! behind the same [`Engine`] trait, speaking llama-server's native API.
//!
//! At connect each endpoint answers `GET /health` and `GET /props`; one that does not is left
//! out with a warning (all of them: [`EngineError::NoServer`]). An endpoint serving another
//! model or another llama.cpp build than the rest is an error ([`EngineError::ServerMismatch`]),
//! never a silent mix: the model is compared by the SHA-256 of the first MiB of the file the
//! server names in `/props` when that path is readable here (same host or shared disk), else by
//! file name and parameter count (`/v1/models`), which is all the API tells.
//!
//! Per request, on one endpoint: `POST /apply-template` (the server's chat template, so both
//! sides agree on the prompt), `POST /tokenize` (so the prompt plus `max_tokens` is checked
//! against the slot's context before decoding, as in-process engines do, and the prompt sent is
//! exactly the tokens counted), then `POST /completion` with the token ids, the constraint as
//! `json_schema`, greedy settings, and for a request with a document prefix `cache_prompt` and
//! the slot the prefix hashes to (see [`api::completion_body`] for why only then).
//! Routing (`fleet.rs`) and the pass (`pass.rs`) are client-side only: least busy, document
//! affinity, a window of the endpoint's slots, failover. Engines are synchronous: the network
//! edge runs on a current-thread tokio runtime the engine owns and blocks on.
//!
//! `PROMPTLOOP_SERVER_API_KEY`, when set, is sent as the bearer token (llama-server
//! `--api-key`); it is read from the environment so it never lands in a run log.

pub mod api;
pub mod fleet;
mod native;
pub mod openai;
mod pass;
mod transport;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Client;
use sha2::{Digest, Sha256};

use crate::{
    Capabilities, ChatMessage, ConstraintBackend, Engine, EngineConfig, EngineError, EngineInfo, EngineKind, Request, Response,
    ServerApi, WeightFormat,
};
use fleet::Fleet;
use transport::{Failure, Target};

/// What [`crate::backend_version`] reports for this backend (the servers' build is in
/// [`EngineInfo::backend_version`] once connected).
pub const BACKEND_VERSION: &str = "llama-server native API (reqwest)";

/// The environment variable holding the servers' API key.
pub const API_KEY_ENV: &str = "PROMPTLOOP_SERVER_API_KEY";

/// How long a completion may take (a long document on a slow server), and a connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(900);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one endpoint said at connect.
#[derive(Debug, Clone)]
struct Probe {
    props: api::Props,
    meta: api::ModelMeta,
    /// How the model was identified: `sha256:HEX` (file read here) or `file:NAME params:N`.
    model: String,
}

/// What both dialects set up before probing: the checked URLs, the local model's fingerprint
/// and name, the HTTP client and the runtime the engine blocks on.
struct Start {
    urls: Vec<String>,
    local: (String, u64),
    model_name: String,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl Start {
    fn new(config: &EngineConfig) -> Result<Start, EngineError> {
        let urls = check_config(config)?;
        let local = crate::digest::file_head_sha256(&config.model)
            .map_err(|e| EngineError::ModelFile { path: config.model.clone(), reason: e.to_string() })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Config(format!("cannot start the HTTP runtime: {e}")))?;
        Ok(Start { urls, local, model_name: file_name(&config.model), client: client()?, runtime })
    }
}

/// A fleet of llama-servers serving the configured model.
pub struct RemoteEngine {
    info: EngineInfo,
    identity: String,
    client: Client,
    runtime: tokio::runtime::Runtime,
    fleet: Mutex<Fleet>,
    targets: Vec<Target>,
    local: (String, u64),
    model_name: String,
    batches: AtomicU64,
    api: ServerApi,
    /// The served model's id (`openai:`; empty for the native API).
    model_id: String,
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEngine").field("identity", &self.identity).field("targets", &self.targets).finish_non_exhaustive()
    }
}

impl RemoteEngine {
    /// Connects to `config.servers` and checks that they serve `config.model`.
    ///
    /// # Errors
    /// A bad URL or set-up value ([`EngineError::Config`]), an unreadable model file, a server
    /// serving something else ([`EngineError::ServerMismatch`]), or none usable
    /// ([`EngineError::NoServer`]).
    pub fn connect(config: &EngineConfig) -> Result<Self, EngineError> {
        if config.server_api == ServerApi::OpenAi {
            return Self::connect_openai(config);
        }
        let t0 = Instant::now();
        let Start { urls, local, model_name, client, runtime } = Start::new(config)?;
        let probes: Vec<Result<Probe, String>> = runtime.block_on(async {
            let mut out = Vec::new();
            for url in &urls {
                out.push(probe(&client, url, &local, &model_name).await);
            }
            out
        });
        let identity = fleet_identity(&urls, &probes, config)?;
        let mut targets = Vec::new();
        let mut endpoints = Vec::new();
        let (mut slots, mut n_ctx, mut meta) = (0, usize::MAX, api::ModelMeta::default());
        for (url, p) in urls.iter().zip(&probes) {
            match p {
                Ok(p) => {
                    let ctx = p.props.default_generation_settings.n_ctx;
                    tracing::info!(endpoint = %url, slots = p.props.total_slots, n_ctx = ctx, build = %p.props.build_info, model = %p.model, "llama-server ready");
                    slots += p.props.total_slots.max(1);
                    n_ctx = n_ctx.min(ctx);
                    meta = p.meta.clone();
                    targets.push(Target {
                        url: url.clone(),
                        n_ctx: ctx,
                        slots: p.props.total_slots.max(1),
                        api: ServerApi::Native,
                        model: String::new(),
                        llama_server: true,
                    });
                    endpoints.push((url.clone(), p.props.total_slots, None));
                }
                Err(why) => {
                    tracing::warn!(endpoint = %url, reason = %why, "llama-server left out of the fleet");
                    targets.push(Target {
                        url: url.clone(),
                        n_ctx: 0,
                        slots: 1,
                        api: ServerApi::Native,
                        model: String::new(),
                        llama_server: true,
                    });
                    endpoints.push((url.clone(), 1, Some(why.clone())));
                }
            }
        }
        let build = probes.iter().flatten().map(|p| p.props.build_info.clone()).next().unwrap_or_default();
        let up = probes.iter().filter(|p| p.is_ok()).count();
        let info = EngineInfo {
            kind: EngineKind::Server,
            weights: WeightFormat::Gguf,
            backend_version: format!("llama-server {build}"),
            model_path: config.model.clone(),
            model_desc: format!("{model_name} on {up} of {} llama-server(s)", urls.len()),
            model_bytes: local.1,
            n_params: meta.n_params,
            vocab_size: meta.n_vocab,
            chat_template: "server".into(),
            threads: 0,
            constraint_backend: match config.constraint_backend {
                ConstraintBackend::None => ConstraintBackend::None,
                _ => ConstraintBackend::Gbnf,
            },
            capabilities: Capabilities {
                max_context: n_ctx,
                // Four requests per slot in one pass: the fleet hands each to the least busy
                // endpoint, longest first, so a pass is not cut into rounds that each wait for
                // their slowest request.
                max_batch: (slots * 4).max(config.batch_size as usize).max(1),
                shared_prefix: false,
                prefix_cache: true,
                constraint_backends: vec![ConstraintBackend::Gbnf, ConstraintBackend::None],
            },
            kv_cache_bytes: 0,
            train_context: meta.n_ctx_train,
            load_ms: t0.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(RemoteEngine {
            info,
            identity,
            client,
            runtime,
            fleet: Mutex::new(Fleet::new(endpoints)),
            targets,
            local,
            model_name,
            batches: AtomicU64::new(0),
            api: ServerApi::Native,
            model_id: String::new(),
        })
    }

    /// `connect` for `openai:` endpoints: each must list the same model in `GET /v1/models`;
    /// the window per endpoint is the batch size (an OpenAI-compatible server batches itself).
    fn connect_openai(config: &EngineConfig) -> Result<Self, EngineError> {
        let t0 = Instant::now();
        let Start { urls, local, model_name, client, runtime } = Start::new(config)?;
        let probes: Vec<Result<api::Model, String>> = runtime.block_on(async {
            let mut out = Vec::new();
            for url in &urls {
                out.push(probe_openai(&client, url).await);
            }
            out
        });
        let mut first: Option<(&str, &str)> = None;
        for (url, p) in urls.iter().zip(&probes) {
            let Ok(m) = p else { continue };
            match first {
                None => first = Some((m.id.as_str(), url)),
                Some((id, first_url)) if id != m.id => {
                    return Err(EngineError::ServerMismatch(format!(
                        "the servers differ: {first_url} serves `{id}`, {url} serves `{}`; serve one model on every endpoint",
                        m.id
                    )));
                }
                Some(_) => {}
            }
        }
        let Some((model_id, _)) = first else {
            let why: Vec<String> =
                urls.iter().zip(&probes).filter_map(|(u, p)| p.as_ref().err().map(|e| format!("{u} ({e})"))).collect();
            return Err(EngineError::NoServer(why.join("; ")));
        };
        let model_id = model_id.to_owned();
        let window = (config.batch_size as usize).max(1);
        let mut targets = Vec::new();
        let mut endpoints = Vec::new();
        let mut n_ctx = usize::MAX;
        for (url, p) in urls.iter().zip(&probes) {
            match p {
                Ok(m) => {
                    let ctx = m.context().unwrap_or(usize::MAX);
                    tracing::info!(endpoint = %url, model = %m.id, context = ?m.context(), "OpenAI-compatible server ready");
                    n_ctx = n_ctx.min(ctx);
                    targets.push(Target {
                        url: url.clone(),
                        n_ctx: ctx,
                        slots: window,
                        api: ServerApi::OpenAi,
                        model: m.id.clone(),
                        llama_server: m.meta.is_some(),
                    });
                    endpoints.push((url.clone(), window, None));
                }
                Err(why) => {
                    tracing::warn!(endpoint = %url, reason = %why, "server left out of the fleet");
                    targets.push(Target {
                        url: url.clone(),
                        n_ctx: 0,
                        slots: 1,
                        api: ServerApi::OpenAi,
                        model: String::new(),
                        llama_server: false,
                    });
                    endpoints.push((url.clone(), 1, Some(why.clone())));
                }
            }
        }
        let up = probes.iter().filter(|p| p.is_ok()).count();
        let info = EngineInfo {
            kind: EngineKind::Server,
            weights: WeightFormat::Gguf,
            backend_version: "OpenAI-compatible chat completions".into(),
            model_path: config.model.clone(),
            model_desc: format!("{model_id} on {up} of {} OpenAI-compatible server(s)", urls.len()),
            model_bytes: local.1,
            n_params: 0,
            vocab_size: 0,
            chat_template: "server".into(),
            threads: 0,
            constraint_backend: match config.constraint_backend {
                ConstraintBackend::None => ConstraintBackend::None,
                _ => ConstraintBackend::Gbnf,
            },
            capabilities: Capabilities {
                max_context: n_ctx,
                max_batch: (window * up * 4).max(1),
                shared_prefix: false,
                prefix_cache: false,
                constraint_backends: vec![ConstraintBackend::Gbnf, ConstraintBackend::None],
            },
            kv_cache_bytes: 0,
            train_context: 0,
            load_ms: t0.elapsed().as_secs_f64() * 1000.0,
        };
        Ok(RemoteEngine {
            info,
            identity: format!("openai {model_id}"),
            client,
            runtime,
            fleet: Mutex::new(Fleet::new(endpoints)),
            targets,
            local,
            model_name,
            batches: AtomicU64::new(0),
            api: ServerApi::OpenAi,
            model_id,
        })
    }

    /// What the fleet serves: the llama.cpp build and the model as identified (the engine key
    /// includes it, so results of different servers never mix).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Requests each endpoint answered so far, by URL.
    pub fn served(&self) -> Vec<(String, u64)> {
        pass::lock(&self.fleet).endpoints.iter().map(|e| (e.url.clone(), e.served)).collect()
    }

    /// Probes endpoints taken out during a pass; those healthy again and serving the same come
    /// back. One left out at connect stays out (its slots and context were never known).
    fn recheck_down(&self) {
        let down: Vec<usize> = pass::lock(&self.fleet)
            .endpoints
            .iter()
            .enumerate()
            .filter(|(i, e)| e.down.is_some() && self.targets[*i].n_ctx > 0)
            .map(|(i, _)| i)
            .collect();
        for i in down {
            let url = &self.targets[i].url;
            if self.api == ServerApi::OpenAi {
                let p = self.runtime.block_on(probe_openai(&self.client, url));
                if p.is_ok_and(|m| m.id == self.model_id) {
                    tracing::info!(endpoint = %url, "server back in the fleet");
                    pass::lock(&self.fleet).bring_back(i);
                }
                continue;
            }
            let p = self.runtime.block_on(probe(&self.client, url, &self.local, &self.model_name));
            if let Ok(p) = p {
                if format!("{} {}", p.props.build_info, p.model) == self.identity {
                    tracing::info!(endpoint = %url, "llama-server back in the fleet");
                    pass::lock(&self.fleet).bring_back(i);
                }
            }
        }
    }
}

/// The fleet's identity for the engine key, without keeping a connection: `build model`.
///
/// # Errors
/// As [`RemoteEngine::connect`].
pub fn identity(config: &EngineConfig) -> Result<String, EngineError> {
    RemoteEngine::connect(config).map(|e| e.identity)
}

impl Engine for RemoteEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn count_tokens(&self, messages: &[ChatMessage]) -> Result<usize, EngineError> {
        let up: Vec<usize> =
            pass::lock(&self.fleet).endpoints.iter().enumerate().filter(|(_, e)| e.down.is_none()).map(|(i, _)| i).collect();
        let mut errors = Vec::new();
        for i in up {
            let url = &self.targets[i].url;
            let counted = match self.api {
                ServerApi::Native => self.runtime.block_on(native::tokens(&self.client, url, messages)).map(|t| t.len()),
                ServerApi::OpenAi => self.runtime.block_on(openai::count(&self.client, url, &self.model_id, messages)),
            };
            match counted {
                Ok(n) => return Ok(n),
                Err(Failure::Request(e)) => return Err(e),
                Err(Failure::Endpoint(why)) => {
                    pass::lock(&self.fleet).failed(i, &why, Instant::now());
                    errors.push(format!("{url} ({why})"));
                }
            }
        }
        let down = pass::lock(&self.fleet).down_report();
        errors.extend((!down.is_empty()).then_some(down));
        Err(EngineError::NoServer(errors.join("; ")))
    }

    fn generate(&self, requests: &[Request]) -> Vec<Result<Response, EngineError>> {
        if requests.is_empty() {
            return Vec::new();
        }
        self.recheck_down();
        let batch_id = self.batches.fetch_add(1, Ordering::SeqCst);
        let keys: Vec<Option<u64>> = requests.iter().map(prefix_key).collect();
        self.runtime.block_on(pass::run(&self.client, &self.fleet, &self.targets, requests, &keys, batch_id))
    }
}

/// The URLs of `config.servers`, checked; set-up values that belong to the servers refused.
fn check_config(config: &EngineConfig) -> Result<Vec<String>, EngineError> {
    if config.servers.is_empty() {
        return Err(EngineError::Config("the server engine needs URLs: --engine server:http://HOST:PORT[,URL...]".into()));
    }
    if let Some(t) = &config.chat_template {
        return Err(EngineError::Config(format!(
            "--chat-template {t}: a llama-server applies its own template; start it with --chat-template {t}"
        )));
    }
    if let Some(n) = config.n_ctx {
        return Err(EngineError::Config(format!(
            "--ctx {n}: a llama-server's context is set where it starts (-c TOTAL with -np SLOTS)"
        )));
    }
    if config.threads.is_some() {
        return Err(EngineError::Config("--threads: a llama-server's threads are set where it starts (-t N)".into()));
    }
    let mut urls = Vec::new();
    for raw in &config.servers {
        let url = raw.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&url).map_err(|e| EngineError::Config(format!("server URL `{raw}`: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
            return Err(EngineError::Config(format!("server URL `{raw}`: expected http://HOST:PORT or https://HOST:PORT")));
        }
        if urls.contains(&url) {
            return Err(EngineError::Config(format!("server URL `{raw}` is given twice")));
        }
        urls.push(url);
    }
    Ok(urls)
}

fn client() -> Result<Client, EngineError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(key) = std::env::var(API_KEY_ENV) {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| EngineError::Config(format!("{API_KEY_ENV} is not a valid header value")))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Client::builder()
        .default_headers(headers)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| EngineError::Config(format!("cannot build the HTTP client: {e}")))
}

/// `GET /v1/models` of an OpenAI-compatible endpoint: the model it serves (it must name it).
async fn probe_openai(client: &Client, url: &str) -> Result<api::Model, String> {
    let model = api::parse_models(&transport::get(client, url, "/v1/models", PROBE_TIMEOUT).await?)?;
    if model.id.is_empty() {
        return Err("the /v1/models reply names no model id".into());
    }
    Ok(model)
}

/// `GET /health`, `GET /props`, `GET /v1/models` of one endpoint, and its model identified.
/// `Err` says why it cannot be used (down, loading, garbage).
async fn probe(client: &Client, url: &str, local: &(String, u64), local_name: &str) -> Result<Probe, String> {
    let get = |path: &'static str| transport::get(client, url, path, PROBE_TIMEOUT);
    get("/health").await?;
    let props: api::Props = api::parse(&get("/props").await?, "the /props reply")?;
    let meta = get("/v1/models").await.and_then(|b| api::parse_models(&b)).ok().and_then(|m| m.meta).unwrap_or_default();
    let path = Path::new(&props.model_path);
    let model = match crate::digest::file_head_sha256(path) {
        Ok((sha, size)) if (sha.as_str(), size) == (local.0.as_str(), local.1) => format!("sha256:{sha}"),
        Ok((sha, size)) => format!("MISMATCH {} (sha256 of its first MiB {sha}, {size} bytes)", props.model_path),
        Err(_) if file_name(path) == local_name => format!("file:{local_name} params:{}", meta.n_params),
        Err(_) => format!("MISMATCH {} (not readable here; another file name)", props.model_path),
    };
    Ok(Probe { props, meta, model })
}

/// The identity every usable endpoint shares (`build model`), or why there is none.
fn fleet_identity(urls: &[String], probes: &[Result<Probe, String>], config: &EngineConfig) -> Result<String, EngineError> {
    let mut identity: Option<(String, &str)> = None;
    for (url, p) in urls.iter().zip(probes) {
        let Ok(p) = p else { continue };
        if let Some(rest) = p.model.strip_prefix("MISMATCH ") {
            return Err(EngineError::ServerMismatch(format!(
                "{url} serves {rest}, not {}: start it with -m {}",
                config.model.display(),
                config.model.display()
            )));
        }
        let this = format!("{} {}", p.props.build_info, p.model);
        match &identity {
            None => identity = Some((this, url)),
            Some((first, first_url)) if *first != this => {
                return Err(EngineError::ServerMismatch(format!(
                    "the servers differ: {first_url} is `{first}`, {url} is `{this}`; run one llama.cpp build and model on every endpoint"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some((id, _)) = identity {
        if id.contains(" file:") {
            tracing::warn!("the servers' model file is not readable here: compared by file name and parameter count only ({id})");
        }
        return Ok(id);
    }
    let why: Vec<String> = urls.iter().zip(probes).filter_map(|(u, p)| p.as_ref().err().map(|e| format!("{u} ({e})"))).collect();
    Err(EngineError::NoServer(why.join("; ")))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The document key of a request: a hash of its messages up to the prefix boundary (`None`
/// without one). The same document under another instruction has the same key.
pub fn prefix_key(req: &Request) -> Option<u64> {
    let b = req.prefix_boundary?;
    let mut h = Sha256::new();
    for m in req.messages.iter().take(b.message) {
        h.update(m.role.as_bytes());
        h.update([0]);
        h.update(m.content.as_bytes());
        h.update([0]);
    }
    if let Some(m) = req.messages.get(b.message) {
        h.update(m.role.as_bytes());
        h.update([0]);
        let cut = m.content.get(..b.byte).unwrap_or(&m.content);
        h.update(cut.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    Some(u64::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_key_covers_the_prefix_only() {
        let req = |doc: &str, ask: &str| {
            Request::new("x", vec![ChatMessage::user(format!("{doc}{ask}"))], 8).with_prefix_boundary(0, doc.len())
        };
        assert_eq!(prefix_key(&req("contract A. ", "Find the title.")), prefix_key(&req("contract A. ", "Find the date.")));
        assert_ne!(prefix_key(&req("contract A. ", "x")), prefix_key(&req("contract B. ", "x")));
        assert_eq!(prefix_key(&Request::new("x", vec![], 8)), None);
    }

    #[test]
    fn config_values_that_belong_to_the_servers_are_refused() {
        let mut c = EngineConfig::new("m.gguf");
        assert!(check_config(&c).unwrap_err().to_string().contains("needs URLs"));
        c.servers = vec!["http://127.0.0.1:8081/".into(), "https://h:1".into()];
        assert_eq!(check_config(&c).unwrap(), vec!["http://127.0.0.1:8081".to_owned(), "https://h:1".to_owned()]);
        c.servers = vec!["ftp://h".into()];
        assert!(check_config(&c).unwrap_err().to_string().contains("expected http://"));
        c.servers = vec!["not a url".into()];
        assert!(check_config(&c).unwrap_err().to_string().contains("`not a url`"));
        c.servers = vec!["http://a:1".into(), "http://a:1/".into()];
        assert!(check_config(&c).unwrap_err().to_string().contains("twice"));
        c.servers = vec!["http://a:1".into()];
        c.n_ctx = Some(512);
        assert!(check_config(&c).unwrap_err().to_string().contains("-c TOTAL"));
    }

    #[test]
    fn nothing_listening_is_no_server_naming_the_url() {
        // A port bound and dropped: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let mut c = EngineConfig::new(&model);
        c.servers = vec![format!("http://127.0.0.1:{port}")];
        let err = RemoteEngine::connect(&c).unwrap_err();
        assert!(matches!(err, EngineError::NoServer(_)), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.is_setup());
    }
}
