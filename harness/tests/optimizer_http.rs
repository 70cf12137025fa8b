//! The HTTP optimizer clients against a real llama-server (Gemma 3 270M, which speaks both the
//! chat-completions and the Anthropic Messages API), directly and through the fault-injecting proxy. The server comes from
//! `scripts/llama-server.sh start`; its URL is read from `PROMPTLOOP_LLAMA_SERVER`, and a
//! missing one fails the tests, it never skips them.
//!
//! The server has a single slot, so these tests hold [`server_lock`] and expect no other client
//! to keep it busy: the hang test needs a real request to finish within its 4 s timeout.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use harness::llm::http::{Api, HttpOptimizer, RetryPolicy};
use harness::llm::{CallError, ChatReply, ChatRequest, Message, Optimizer, Role};

use crate::support_proxy::{Fault, FaultProxy};

/// The running llama-server's base URL (`http://127.0.0.1:PORT`, no `/v1`).
pub fn llama_server() -> String {
    match std::env::var("PROMPTLOOP_LLAMA_SERVER") {
        Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_owned(),
        _ => panic!(
            "PROMPTLOOP_LLAMA_SERVER is not set: run `scripts/llama-server.sh start` and export \
             PROMPTLOOP_LLAMA_SERVER=<the URL it prints> (http://127.0.0.1:18080 by default)"
        ),
    }
}

/// The server has one slot: concurrent requests queue there, and then timeouts and attempt
/// counts stop meaning anything. Every test here holds this while it runs; tests in other
/// modules that use the server from parallel test threads should hold it too.
pub fn server_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Short waits so that the fault tests stay fast; a timeout long enough for a queued request.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(1),
        max_attempts: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
    }
}

fn openai(base: &str, policy: RetryPolicy) -> HttpOptimizer {
    HttpOptimizer::new(Api::OpenAi, "optimizer", &format!("{base}/v1"), None, policy).expect("openai client")
}

fn request() -> ChatRequest {
    ChatRequest {
        system: Some("Answer in one short sentence.".into()),
        messages: vec![Message { role: Role::User, content: "Name a colour of the sky.".into() }],
        temperature: 0.0,
        max_tokens: 8,
        seed: Some(1),
    }
}

fn assert_real_reply(reply: &ChatReply) {
    assert!(!reply.text.trim().is_empty(), "empty text: {reply:?}");
    assert!(reply.input_tokens > 0 && reply.output_tokens > 0, "token counts missing: {reply:?}");
    assert!(reply.output_tokens <= 8, "max_tokens ignored: {reply:?}");
    assert!(reply.latency_ms > 0.0);
}

/// The proxy's log, checked: `actions` in order, every forwarded request answered 200 by the
/// server, and every attempt carrying the same body.
fn assert_seen(proxy: &FaultProxy, actions: &[Fault]) {
    let seen = proxy.requests();
    let got: Vec<&Fault> = seen.iter().map(|s| &s.action).collect();
    assert_eq!(got, actions.iter().collect::<Vec<_>>(), "{seen:#?}");
    for s in &seen {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/v1/chat/completions"));
        assert_eq!(s.body_sha256, seen[0].body_sha256, "a retry sent another body");
        let forwarded = matches!(s.action, Fault::Pass | Fault::TruncateBody);
        assert_eq!(s.upstream_status, forwarded.then_some(200), "{s:?}");
    }
}

#[test]
fn openai_client_gets_a_reply_from_llama_server() {
    let _serial = server_lock();
    let mut o = openai(&llama_server(), fast_policy());
    assert!(o.describe().starts_with("openai:optimizer at http://127.0.0.1"), "{}", o.describe());
    let reply = o.complete(&request()).expect("reply");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 1);
}

#[test]
fn openai_canary_reaches_llama_server() {
    let _serial = server_lock();
    let reply = openai(&llama_server(), fast_policy()).canary().expect("canary");
    assert_eq!((reply.output_tokens, reply.attempts), (1, 1), "{reply:?}");
    assert!(!reply.text.trim().is_empty());
}

#[test]
fn anthropic_client_gets_a_reply_from_llama_server() {
    let _serial = server_lock();
    let key = "sk-ant-dummy-key";
    let base = format!("{}/", llama_server());
    let mut a =
        HttpOptimizer::new(Api::Anthropic, "optimizer", &base, Some(key.into()), fast_policy()).expect("anthropic client");
    assert!(!format!("{a:?}{}", a.describe()).contains(key));
    let reply = a.complete(&request()).expect("reply");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 1);
}

#[test]
fn rate_limit_waits_for_retry_after_then_succeeds() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::RateLimit { retry_after_s: 1 });
    let reply = openai(&proxy.url(), fast_policy()).complete(&request()).expect("reply after 429");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 2);
    assert!(reply.latency_ms >= 1000.0, "Retry-After: 1 not honoured: {reply:?}");
    assert_seen(&proxy, &[Fault::RateLimit { retry_after_s: 1 }, Fault::Pass]);
    let seen = proxy.requests();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1), "retried after {:?}", seen[1].at - seen[0].at);
}

#[test]
fn long_retry_after_is_capped_by_the_policy() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::RateLimit { retry_after_s: 3600 });
    let policy = RetryPolicy { max_retry_after: Duration::from_millis(100), ..fast_policy() };
    let reply = openai(&proxy.url(), policy).complete(&request()).expect("reply after 429");
    assert_eq!(reply.attempts, 2);
    let seen = proxy.requests();
    // Between the two arrivals: the 429 going back, the capped 100 ms wait, a new connection.
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(100) && gap < Duration::from_secs(2), "retried after {gap:?}");
}

#[test]
fn server_error_is_retried() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::ServerError(500));
    let reply = openai(&proxy.url(), fast_policy()).complete(&request()).expect("reply after 500");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 2);
    assert_seen(&proxy, &[Fault::ServerError(500), Fault::Pass]);
}

#[test]
fn anthropic_overload_is_retried() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::ServerError(503));
    let mut a =
        HttpOptimizer::new(Api::Anthropic, "optimizer", &proxy.url(), Some("dummy".into()), fast_policy()).expect("client");
    let reply = a.complete(&request()).expect("reply after 503");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 2);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    for s in &seen {
        assert_eq!(s.path, "/v1/messages");
        assert_eq!(s.header("x-api-key"), Some("dummy"));
        assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    }
    assert_eq!(seen[1].upstream_status, Some(200));
}

#[test]
fn hang_past_the_timeout_is_retried() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::Hang(Duration::from_secs(5)));
    let policy = RetryPolicy { timeout: Duration::from_secs(4), ..fast_policy() };
    let reply = openai(&proxy.url(), policy).complete(&request()).expect("reply after a hang");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 2);
    assert!(reply.latency_ms >= 4000.0, "the timeout did not run out: {reply:?}");
    assert_seen(&proxy, &[Fault::Hang(Duration::from_secs(5)), Fault::Pass]);
}

#[test]
fn truncated_body_is_retried() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::TruncateBody);
    let reply = openai(&proxy.url(), fast_policy()).complete(&request()).expect("reply after a cut body");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 2);
    assert_seen(&proxy, &[Fault::TruncateBody, Fault::Pass]);
}

#[test]
fn truncated_body_every_time_is_malformed() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    for _ in 0..3 {
        proxy.push(Fault::TruncateBody);
    }
    let err = openai(&proxy.url(), fast_policy()).complete(&request()).unwrap_err();
    let CallError::Malformed { attempts, detail } = &err else { panic!("expected Malformed, got {err:?}") };
    assert_eq!(*attempts, 3);
    assert!(detail.contains("not the openai reply JSON") && detail.contains(&proxy.url()), "{detail}");
    assert_seen(&proxy, &[Fault::TruncateBody, Fault::TruncateBody, Fault::TruncateBody]);
}

#[test]
fn dropped_connection_is_retried() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::Drop);
    let reply = openai(&proxy.url(), fast_policy()).complete(&request()).expect("reply after a drop");
    assert_real_reply(&reply);
    assert_eq!(reply.attempts, 2);
    assert_seen(&proxy, &[Fault::Drop, Fault::Pass]);
}

#[test]
fn server_errors_every_time_are_exhausted() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    for _ in 0..3 {
        proxy.push(Fault::ServerError(502));
    }
    let err = openai(&proxy.url(), fast_policy()).complete(&request()).unwrap_err();
    let CallError::Exhausted { attempts, last } = &err else { panic!("expected Exhausted, got {err:?}") };
    assert_eq!(*attempts, 3);
    assert!(last.contains("HTTP 502") && last.contains("injected failure"), "{last}");
    assert_eq!(proxy.requests().len(), 3);
}

#[test]
fn refused_connections_mid_run_are_exhausted_then_recover() {
    let _serial = server_lock();
    let mut proxy = FaultProxy::start(&llama_server());
    let url = proxy.url();
    let mut o = openai(&url, fast_policy());
    assert_eq!(o.complete(&request()).expect("first call").attempts, 1);
    proxy.set_down(true);
    let start = Instant::now();
    let err = o.complete(&request()).unwrap_err();
    let CallError::Exhausted { attempts, last } = &err else { panic!("expected Exhausted, got {err:?}") };
    assert_eq!(*attempts, 3);
    assert!(last.contains("connection failed") && last.contains("refused") && last.contains(&url), "{last}");
    assert!(start.elapsed() < Duration::from_secs(2), "backoff too long: {:?}", start.elapsed());
    proxy.set_down(false);
    assert_eq!(proxy.url(), url);
    assert_eq!(o.complete(&request()).expect("call after the proxy is back").attempts, 1);
    assert_eq!(proxy.requests().len(), 2, "refused connections reached the proxy");
}

#[test]
fn rejected_credentials_are_fatal_at_once() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::Status(401, r#"{"error":{"message":"Incorrect API key provided: sk-secret"}}"#.into()));
    let key = "sk-secret";
    let mut o =
        HttpOptimizer::new(Api::OpenAi, "optimizer", &format!("{}/v1", proxy.url()), Some(key.into()), fast_policy()).unwrap();
    let err = o.complete(&request()).unwrap_err();
    let CallError::Fatal(msg) = &err else { panic!("expected Fatal, got {err:?}") };
    assert!(msg.contains("rejected the credentials (HTTP 401)") && msg.contains("OPENAI_API_KEY"), "{msg}");
    assert!(!msg.contains(key), "the key leaked: {msg}");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "a 401 was retried");
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-secret"));
}

#[test]
fn unknown_model_is_fatal_with_the_body() {
    let _serial = server_lock();
    let proxy = FaultProxy::start(&llama_server());
    proxy.push(Fault::Status(404, r#"{"error":{"message":"The model `gpt-9` does not exist"}}"#.into()));
    let err = openai(&proxy.url(), fast_policy()).complete(&request()).unwrap_err();
    let CallError::Fatal(msg) = &err else { panic!("expected Fatal, got {err:?}") };
    assert!(msg.contains("404") && msg.contains("`gpt-9` does not exist"), "{msg}");
    assert_eq!(proxy.requests().len(), 1);
}
