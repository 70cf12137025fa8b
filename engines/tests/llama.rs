//! The llama backend against the real SmolLM2-135M (and Gemma 3 270M for the template
//! fallback). The models come from `scripts/setup.sh`; a missing model fails the test with the
//! command that fetches it, it never skips.
#![cfg(feature = "llama")]
#![allow(clippy::similar_names)] // `req`/`res`/`reqs` read best as they are

use std::path::PathBuf;
use std::sync::OnceLock;

use engines::{
    ChatMessage, ConstraintBackend, Engine, EngineConfig, EngineError, EngineKind, Request, StopReason,
};
use serde_json::json;

fn model(file: &str) -> PathBuf {
    let dir = std::env::var_os("PROMPTLOOP_MODELS").map_or_else(
        || {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".cache/promptloop/models")
        },
        PathBuf::from,
    );
    let path = dir.join(file);
    assert!(path.is_file(), "{} is missing: run `scripts/setup.sh models` first", path.display());
    path
}

fn smollm2() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn engine(backend: ConstraintBackend, batch: u32, ctx: u32) -> Box<dyn Engine> {
    let mut cfg = EngineConfig::new(smollm2());
    cfg.constraint_backend = backend;
    cfg.batch_size = batch;
    cfg.n_ctx = Some(ctx);
    engines::load(EngineKind::Llama, &cfg).expect("SmolLM2 loads")
}

/// One shared llguidance engine for the tests that only read from it.
fn shared() -> &'static dyn Engine {
    static ENGINE: OnceLock<Box<dyn Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| engine(ConstraintBackend::Llguidance, 4, 2048)).as_ref()
}

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "year", "tags", "kind"],
        "properties": {
            "name": {"type": ["string", "null"], "maxLength": 40},
            "year": {"type": ["integer", "null"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
            "kind": {"type": "string", "enum": ["lease", "license", "supply"]}
        }
    })
}

fn ask(id: &str, text: &str) -> Request {
    Request::new(
        id,
        vec![
            ChatMessage::system("Extract the contract's name, year, up to three tags and kind as JSON."),
            ChatMessage::user(text.to_string()),
        ],
        96,
    )
    .with_schema(schema())
}

const DOCS: [&str; 4] = [
    "SOFTWARE LICENSE AGREEMENT made in 2004 between Acme Corp. and Beta LLC for the Orion software.",
    "This SUPPLY AGREEMENT of March 3, 1999 binds Gamma Inc. to deliver steel to Delta Ltd.",
    "LEASE between Omega Holdings and Sigma Retail for the premises at 5 Main Street, signed 2011.",
    "Agreement for the license of patents, 2016, by Zeta University to Eta Pharmaceuticals.",
];

fn assert_valid(text: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let validator = jsonschema::validator_for(&schema()).expect("test schema compiles");
    assert!(validator.is_valid(&value), "output does not satisfy the schema: {text}");
    value
}

#[test]
fn llguidance_output_is_valid_json_for_the_schema() {
    let reqs: Vec<Request> = DOCS.iter().enumerate().map(|(i, d)| ask(&format!("d{i}"), d)).collect();
    for (req, res) in reqs.iter().zip(shared().generate(&reqs)) {
        let res = res.expect("generates");
        assert_eq!(res.id, req.id);
        assert_eq!(res.stop, StopReason::ConstraintComplete, "{}", res.text);
        assert_valid(&res.text);
        assert!(res.tokens.input > 20 && res.tokens.output > 5, "{:?}", res.tokens);
        assert!(res.timings.prefill_ms > 0.0 && res.timings.total_ms >= res.timings.ttft_ms);
        assert!(res.peak_rss_bytes > 50 << 20, "peak RSS {} too small to be real", res.peak_rss_bytes);
    }
}

#[test]
fn gbnf_output_is_valid_json_for_the_schema() {
    let e = engine(ConstraintBackend::Gbnf, 2, 1024);
    let reqs: Vec<Request> = DOCS[..2].iter().enumerate().map(|(i, d)| ask(&format!("g{i}"), d)).collect();
    for res in e.generate(&reqs) {
        let res = res.expect("generates");
        assert_valid(&res.text);
    }
}

#[test]
fn greedy_decoding_is_deterministic() {
    let reqs: Vec<Request> = DOCS.iter().enumerate().map(|(i, d)| ask(&format!("d{i}"), d)).collect();
    let a: Vec<String> = shared().generate(&reqs).into_iter().map(|r| r.expect("generates").text).collect();
    let b: Vec<String> = shared().generate(&reqs).into_iter().map(|r| r.expect("generates").text).collect();
    assert_eq!(a, b);
}

#[test]
fn shared_prefix_is_prefilled_once_per_batch() {
    let reqs: Vec<Request> = DOCS.iter().enumerate().map(|(i, d)| ask(&format!("d{i}"), d)).collect();
    let out = shared().generate(&reqs);
    let res: Vec<_> = out.into_iter().map(|r| r.expect("generates")).collect();
    assert!(res.iter().all(|r| r.batch_size == 4));
    assert!(res.iter().all(|r| r.tokens.shared_prefix >= 16), "{:?}", res[0].tokens);
    assert!(res.iter().all(|r| r.tokens.shared_prefix < r.tokens.input));
}

#[test]
fn over_long_input_is_a_typed_error_and_neighbours_still_run() {
    let long = "The parties agree as follows. ".repeat(800);
    let reqs = vec![ask("short", DOCS[0]), ask("long", &long)];
    let out = shared().generate(&reqs);
    assert!(out[0].is_ok(), "{:?}", out[0]);
    match &out[1] {
        Err(EngineError::InputTooLong { tokens, max, context, max_tokens }) => {
            assert!(*tokens > *max, "{tokens} <= {max}");
            assert_eq!(*context, 2048);
            assert_eq!(*max, context - max_tokens);
        }
        other => panic!("expected InputTooLong, got {other:?}"),
    }
}

#[test]
fn unconstrained_generation_stops_and_counts_tokens() {
    let mut req = Request::new("free", vec![ChatMessage::user("Say hello.")], 8);
    req.ignore_eos = true;
    let res = shared().generate(&[req]).remove(0).expect("generates");
    assert_eq!(res.stop, StopReason::MaxTokens);
    assert_eq!(res.tokens.output, 8);
    let n = shared().count_tokens(&[ChatMessage::user("Say hello.")]).expect("counts");
    assert_eq!(n, res.tokens.input);
}

#[test]
fn seeded_sampling_reproduces_with_the_same_seed() {
    let mut req = ask("s", DOCS[1]);
    req.sampling = engines::Sampling::seeded(1.0, 0.95, 42);
    let a = shared().generate(&[req.clone()]).remove(0).expect("generates").text;
    let b = shared().generate(&[req]).remove(0).expect("generates").text;
    assert_eq!(a, b);
    assert_valid(&a);
}

#[test]
fn model_without_chat_template_falls_back_or_uses_the_named_one() {
    let gemma = model("gemma-3-270m-q4_k_m.gguf");
    let mut cfg = EngineConfig::new(&gemma);
    cfg.n_ctx = Some(512);
    cfg.batch_size = 1;
    let e = engines::load(EngineKind::Llama, &cfg).expect("gemma loads");
    assert!(["gguf", "gemma"].contains(&e.info().chat_template.as_str()), "{}", e.info().chat_template);
    cfg.chat_template = Some("chatml".into());
    let e = engines::load(EngineKind::Llama, &cfg).expect("gemma loads with chatml");
    assert_eq!(e.info().chat_template, "chatml");
    cfg.chat_template = Some("no-such-template".into());
    let err = engines::load(EngineKind::Llama, &cfg).err().expect("unknown template is refused");
    assert!(err.to_string().contains("no-such-template"), "{err}");
}

#[test]
fn missing_or_bad_model_files_are_clear_errors() {
    let err = engines::load(EngineKind::Llama, &EngineConfig::new("/nonexistent/x.gguf")).err().expect("error");
    assert!(err.to_string().contains("/nonexistent/x.gguf"), "{err}");
    let dir = std::env::temp_dir().join(format!("promptloop-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"not a model").expect("write");
    let err = engines::load(EngineKind::Llama, &EngineConfig::new(&bad)).err().expect("error");
    assert!(err.to_string().contains("not a GGUF"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn engines_not_compiled_in_say_how_to_get_them() {
    let err = engines::load(EngineKind::Mlx, &EngineConfig::new(smollm2())).err().expect("error");
    assert!(err.to_string().contains("--features mlx"), "{err}");
}
