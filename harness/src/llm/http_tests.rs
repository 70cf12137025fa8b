//! Tests of the HTTP clients' pure parts: status classes, retry delays, `Retry-After`, key
//! redaction and the two APIs' reply parsing (the live paths are in `harness/tests/optimizer_http.rs`).

use super::*;

const KEY: &str = "sk-fake-0123456789abcdef";

fn client(api: Api, base: &str, key: Option<&str>) -> Result<HttpOptimizer, ConfigError> {
    HttpOptimizer::new(api, "m", base, key.map(str::to_owned), RetryPolicy::default())
}

#[test]
fn retry_after_takes_seconds_and_http_dates() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
    for date in ["Sun, 06 Nov 1994 08:50:07 GMT", "Sunday, 06-Nov-94 08:50:07 GMT", "Sun Nov  6 08:50:07 1994"] {
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(30)), "{date}");
    }
    // A date already past means: retry now.
    assert_eq!(parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
    assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
    for garbage in [
        "",
        "soon",
        "-3",
        "1.5",
        "Sun, 06 Nov 1994 08:49:37 PST",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
    ] {
        assert_eq!(parse_retry_after(garbage, now), None, "{garbage}");
    }
}

#[test]
fn backoff_doubles_caps_and_jitters_within_half_to_full() {
    let p = RetryPolicy { base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1), ..RetryPolicy::default() };
    assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
    assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
    assert_eq!(p.backoff(3, 1.0), Duration::from_millis(400));
    assert_eq!(p.backoff(5, 1.0), Duration::from_secs(1));
    assert_eq!(p.backoff(u32::MAX, 1.0), Duration::from_secs(1));
    let mut rng = SplitMix64::new(1);
    for attempt in 1..=40 {
        let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let d = p.backoff(attempt, unit);
        let full = (Duration::from_millis(100) * 2u32.saturating_pow(attempt - 1)).min(p.max_delay);
        assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} outside [{:?}, {full:?}]", full / 2);
    }
}

#[test]
fn openai_replies_parse_with_or_without_usage() {
    let full = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"}}],"usage":{"prompt_tokens":15,"completion_tokens":2}}"#;
    assert_eq!(parse_openai(full), Ok(Parsed { text: "Hi".into(), input_tokens: 15, output_tokens: 2 }));
    let bare = br#"{"choices":[{"message":{"content":"Hi"}}]}"#;
    assert_eq!(parse_openai(bare).unwrap().input_tokens, 0);
    let null_usage = br#"{"choices":[{"message":{"content":"Hi"}}],"usage":null}"#;
    assert_eq!(parse_openai(null_usage).unwrap().output_tokens, 0);
    assert!(parse_openai(br#"{"choices":[{"message":{"content":" \n"}}]}"#).unwrap_err().contains("empty"));
    assert!(parse_openai(br#"{"choices":[{"message":{"content":null}}]}"#).unwrap_err().contains("empty"));
    assert!(parse_openai(br#"{"choices":[]}"#).unwrap_err().contains("no choices"));
    let cut = parse_openai(br#"{"choices":[{"message":{"con"#).unwrap_err();
    assert!(cut.contains("not the openai reply JSON") && cut.contains("starts `{\"choices\""), "{cut}");
}

#[test]
fn anthropic_replies_join_text_blocks() {
    let body = br#"{"content":[{"type":"text","text":"Hel"},{"type":"tool_use","id":"x"},{"type":"text","text":"lo"}],"usage":{"input_tokens":5,"output_tokens":8}}"#;
    assert_eq!(parse_anthropic(body), Ok(Parsed { text: "Hello".into(), input_tokens: 5, output_tokens: 8 }));
    assert_eq!(parse_anthropic(br#"{"content":[{"type":"text","text":"x"}]}"#).unwrap().output_tokens, 0);
    assert!(parse_anthropic(br#"{"content":[]}"#).unwrap_err().contains("empty"));
    assert!(parse_anthropic(br#"{"type":"error","error":{"type":"overloaded_error"}}"#)
        .unwrap_err()
        .contains("not the anthropic reply JSON"));
}

#[test]
fn statuses_are_classified() {
    let class = |c: u16| classify(StatusCode::from_u16(c).unwrap());
    for c in [200, 201] {
        assert_eq!(class(c), StatusClass::Success, "{c}");
    }
    for c in [408, 409, 429, 500, 502, 503, 504, 529] {
        assert_eq!(class(c), StatusClass::Retry, "{c}");
    }
    for c in [401, 403] {
        assert_eq!(class(c), StatusClass::Auth, "{c}");
    }
    for c in [400, 404, 413, 422, 302] {
        assert_eq!(class(c), StatusClass::Fatal, "{c}");
    }
}

#[test]
fn missing_keys_name_the_variable() {
    let e = client(Api::OpenAi, "https://api.openai.com/v1/", None).unwrap_err().to_string();
    assert!(e.contains("OPENAI_API_KEY") && e.contains("OPENAI_BASE_URL"), "{e}");
    let e = client(Api::OpenAi, "https://api.openai.com/v1", Some("  ")).unwrap_err().to_string();
    assert!(e.contains("OPENAI_API_KEY"), "{e}");
    let e = client(Api::Anthropic, "http://127.0.0.1:9", None).unwrap_err().to_string();
    assert!(e.contains("ANTHROPIC_API_KEY"), "{e}");
    // Self-hosted OpenAI-compatible servers need no key.
    assert!(client(Api::OpenAi, "http://127.0.0.1:9/v1", None).is_ok());
    let e = client(Api::OpenAi, "http://127.0.0.1:9/v1", Some("bad\nkey")).unwrap_err().to_string();
    assert!(e.contains("OPENAI_API_KEY") && !e.contains("bad"), "{e}");
}

#[test]
fn bad_base_urls_are_config_errors() {
    for (url, want) in [
        ("ftp://host/v1", "scheme is `ftp`"),
        ("not a url", "relative URL"),
        ("http://", "empty host"),
        ("http://h/v1?k=1", "query"),
    ] {
        let e = client(Api::OpenAi, url, None).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("OPENAI_BASE_URL"), "{url}: {e}");
    }
    let e = client(Api::OpenAi, "http//user:pw@host", None).unwrap_err().to_string();
    assert!(!e.contains("pw"), "{e}");
}

#[test]
fn describe_and_debug_never_show_the_key_or_userinfo() {
    let o = client(Api::OpenAi, "http://bob:hunter2@127.0.0.1:18080/v1/", Some(KEY)).unwrap();
    assert_eq!(o.describe(), "openai:m at http://127.0.0.1:18080/v1");
    assert_eq!(o.endpoint(), "http://bob:hunter2@127.0.0.1:18080/v1/chat/completions");
    let a = client(Api::Anthropic, "https://api.anthropic.com/", Some(KEY)).unwrap();
    assert_eq!(a.describe(), "anthropic:m at https://api.anthropic.com");
    assert_eq!(a.shown_endpoint(), "https://api.anthropic.com/v1/messages");
    for o in [&o, &a] {
        let debug = format!("{o:?}");
        assert!(!debug.contains(KEY) && !debug.contains("hunter2") && debug.contains("<redacted>"), "{debug}");
        assert!(!o.describe().contains(KEY));
    }
    assert_eq!(o.snippet(format!("bad key {KEY}").as_bytes()), "bad key [redacted]");
    let long = format!("{}{KEY}", "x".repeat(290));
    assert!(!o.snippet(long.as_bytes()).contains(&KEY[..10]));
}

#[test]
fn bodies_follow_each_api() {
    let req = ChatRequest {
        system: Some("Be brief.".into()),
        messages: vec![Message { role: super::super::Role::User, content: "Hi".into() }],
        temperature: 0.7,
        max_tokens: 8,
        seed: None,
    };
    let o = client(Api::OpenAi, "http://127.0.0.1:9/v1", None).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&o.body(&req)).unwrap();
    assert_eq!(body["messages"][0], serde_json::json!({"role": "system", "content": "Be brief."}));
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(body.get("seed").is_none());
    assert!(String::from_utf8(o.body(&req)).unwrap().contains("\"temperature\":0.7,"));
    let a = client(Api::Anthropic, "http://127.0.0.1:9", Some(KEY)).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&a.body(&req)).unwrap();
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert!(a.headers["x-api-key"].is_sensitive());
    assert_eq!(a.headers["anthropic-version"], "2023-06-01");
}
