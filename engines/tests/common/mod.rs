//! What the engine test binaries share: the real models (a missing one fails with the command
//! that fetches it, it never skips), a small extraction schema and request, and the greedy
//! agreement of an engine with the llama engine on cuad-mini dev. Each test binary uses part.
#![allow(dead_code)]

use std::path::PathBuf;

use engines::{ChatMessage, Engine, EngineConfig, EngineKind, Request, StopReason, WeightFormat};
use serde_json::json;

pub fn model(file: &str) -> PathBuf {
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

pub fn smollm2() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn config(weights: WeightFormat, ctx: u32) -> EngineConfig {
    let mut cfg = EngineConfig::new(smollm2());
    cfg.n_ctx = Some(ctx);
    cfg.weights = weights;
    cfg
}

pub fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "year", "kind"],
        "properties": {
            "name": {"type": ["string", "null"], "maxLength": 40},
            "year": {"type": ["integer", "null"]},
            "kind": {"type": "string", "enum": ["lease", "license", "supply"]}
        }
    })
}

pub fn ask(id: &str, text: &str) -> Request {
    Request::new(
        id,
        vec![ChatMessage::system("Extract the contract's name, year and kind as JSON."), ChatMessage::user(text.to_string())],
        64,
    )
    .with_schema(schema())
}

pub const DOC: &str = "SOFTWARE LICENSE AGREEMENT made in 2004 between Acme Corp. and Beta LLC for the Orion software.";

pub fn assert_valid(text: &str) {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    assert!(validator.is_valid(&value), "output does not satisfy the schema: {text}");
}

/// How far an engine's greedy outputs agree with the llama engine's.
pub struct Agreement {
    pub outputs_same: usize,
    pub outputs: usize,
    pub fields_same: usize,
    pub fields: usize,
}

impl Agreement {
    pub fn field_rate(&self) -> f64 {
        self.fields_same as f64 / self.fields.max(1) as f64
    }
}

/// Greedy outputs of `kind` and of the llama engine on the first `limit` cuad-mini dev
/// contracts (all 10 with `None`), under the
/// task's schema bounded as `eval` bounds it (lists of at most 4, strings of at most 100
/// characters), compared whole and field by field. Every output of `kind` that finished must be
/// valid JSON for the schema; a cut-off output counts all its fields as disagreeing. The rates
/// are printed and written to `CARGO_TARGET_TMPDIR/<kind>_agreement.txt`.
pub fn agreement_with_llama(kind: EngineKind, limit: Option<usize>) -> Agreement {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad-mini");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()));
    let instruction = read("prompt.txt");
    let schema: serde_json::Value = serde_json::from_str(&read("schema.json")).expect("schema.json");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut bounded = schema.clone();
    for (_, prop) in bounded["properties"].as_object_mut().expect("properties").iter_mut() {
        if prop.get("items").is_some() {
            prop["maxItems"] = json!(4);
            prop["items"]["maxLength"] = json!(100);
        } else {
            prop["maxLength"] = json!(100);
        }
    }
    let requests: Vec<Request> = cuad_mini_dev()
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(id, doc)| {
            let messages = vec![ChatMessage::system(instruction.clone()), ChatMessage::user(format!("Contract:\n\n{doc}"))];
            Request::new(&id, messages, 256).with_schema(bounded.clone())
        })
        .collect();
    let cfg = config(WeightFormat::Gguf, 4096);
    let run = |kind: EngineKind| {
        let engine: Box<dyn Engine> = engines::load(kind, &cfg).unwrap_or_else(|e| panic!("{kind} loads: {e}"));
        engine.generate(&requests)
    };
    let (theirs, ours) = (run(kind), run(EngineKind::Llama));
    let keys: Vec<String> = schema["properties"].as_object().expect("properties").keys().cloned().collect();
    let mut a = Agreement { outputs_same: 0, outputs: requests.len(), fields_same: 0, fields: requests.len() * keys.len() };
    for ((req, t), l) in requests.iter().zip(theirs).zip(ours) {
        let t = t.unwrap_or_else(|e| panic!("{}: {kind} fails: {e}", req.id));
        let l = l.unwrap_or_else(|e| panic!("{}: llama fails: {e}", req.id));
        assert_eq!(t.tokens.input, l.tokens.input, "{}: prompt tokens differ", req.id);
        if t.stop != StopReason::MaxTokens {
            let value: serde_json::Value = serde_json::from_str(&t.text)
                .unwrap_or_else(|e| panic!("{}: {kind} output is not JSON ({e}): {}", req.id, t.text));
            assert!(validator.is_valid(&value), "{}: {kind} output violates the schema: {}", req.id, t.text);
        }
        let values = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
        if let (Some(tv), Some(lv)) = (values(&t.text), values(&l.text)) {
            a.fields_same += keys.iter().filter(|k| tv[k.as_str()] == lv[k.as_str()]).count();
        }
        if t.text == l.text {
            a.outputs_same += 1;
        } else {
            println!("{}: differs\n  {kind}: {}\n  llama: {}", req.id, t.text, l.text);
        }
    }
    let report = format!(
        "greedy agreement {kind} vs llama on cuad-mini dev: outputs {}/{} = {:.2}, field values {}/{} = {:.2}",
        a.outputs_same,
        a.outputs,
        a.outputs_same as f64 / a.outputs as f64,
        a.fields_same,
        a.fields,
        a.field_rate()
    );
    println!("{report}");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{kind}_agreement.txt"));
    std::fs::write(&out, format!("{report}\n")).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    a
}

/// How the first-step logits of an engine differ from llama.cpp's on one prompt.
pub struct LogitDiff {
    pub prompt_tokens: usize,
    pub max_abs: f32,
    pub mean_abs: f64,
    pub same_top: bool,
}

/// The config of the logit-parity tests: 2,048 context, prefill in chunks of 256.
pub fn logits_config() -> EngineConfig {
    let mut cfg = config(WeightFormat::Gguf, 2048);
    cfg.n_batch = 256;
    cfg
}

/// First-step logits of `ours` (an engine's test hook) against the llama engine's on three
/// prompts: 12 tokens, 52 tokens, and 546 tokens (three prefill chunks). Each difference is
/// printed with `name`.
#[cfg(feature = "llama")]
pub fn first_logits_against_llama(
    name: &str,
    ours: impl Fn(&[ChatMessage]) -> Result<Vec<f32>, engines::EngineError>,
) -> Vec<LogitDiff> {
    let long = format!("Contract:\n\n{}", "This Agreement is made between Acme Corp. and Beta LLC. ".repeat(40));
    let prompts = [
        vec![ChatMessage::user("Say hello.")],
        vec![ChatMessage::system("Extract the contract's name, year and kind as JSON."), ChatMessage::user(DOC)],
        vec![ChatMessage::system("Summarise the contract."), ChatMessage::user(long)],
    ];
    let llama = engines::llama::LlamaEngine::load(&logits_config()).expect("llama loads");
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    prompts
        .iter()
        .enumerate()
        .map(|(i, messages)| {
            let m = ours(messages).unwrap_or_else(|e| panic!("prompt {i}: {name} logits: {e}"));
            let l = llama.first_logits(messages).expect("llama logits");
            assert_eq!(m.len(), l.len(), "prompt {i}: vocabulary sizes differ");
            let d = LogitDiff {
                prompt_tokens: llama.count_tokens(messages).expect("counts"),
                max_abs: m.iter().zip(&l).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max),
                mean_abs: m.iter().zip(&l).map(|(a, b)| f64::from((a - b).abs())).sum::<f64>() / m.len() as f64,
                same_top: argmax(&m) == argmax(&l),
            };
            println!(
                "prompt {i} ({} tokens): max |{name} - llama| = {:.4}, mean = {:.4}, same top token: {}",
                d.prompt_tokens, d.max_abs, d.mean_abs, d.same_top
            );
            d
        })
        .collect()
}

/// The checks the single-sequence engines (candle, MLX) share: each engine's test file runs
/// them on its own engine.
pub mod checks {
    use super::*;
    use engines::EngineError;
    use std::path::Path;

    /// A constrained output is valid JSON for the schema, ends when the schema does, and comes with token counts, every timing and peak memory.
    pub fn constrained_output(e: &dyn Engine) {
        let res = e.generate(&[ask("a", DOC)]).remove(0).expect("generates");
        assert_valid(&res.text);
        assert_eq!(res.stop, StopReason::ConstraintComplete, "{}", res.text);
        assert_eq!(res.tokens.input, e.count_tokens(&ask("a", DOC).messages).expect("counts"));
        assert!(res.tokens.output > 3);
        let t = res.timings;
        assert!(t.tokenize_ms > 0.0 && t.prefill_ms > 0.0 && t.decode_ms > 0.0, "{t:?}");
        assert!(t.ttft_ms >= t.prefill_ms && t.total_ms >= t.ttft_ms + t.decode_ms - 1e-6, "{t:?}");
        assert!(res.peak_rss_bytes > 50 << 20, "peak RSS {}", res.peak_rss_bytes);
    }

    /// A group's common prefix is prefilled once and each request continues from a clone of that state; clones of one state decode alike (identical prompts: the split into forward calls is the same).
    pub fn shared_prefix(e: &dyn Engine) {
        let other = "LEASE between Omega Holdings and Sigma Retail for 5 Main Street, signed 2011.";
        let together = e.generate(&[ask("a", DOC), ask("b", other)]);
        for res in together {
            let res = res.expect("generates");
            assert!(res.tokens.shared_prefix >= 16, "shared prefix {}", res.tokens.shared_prefix);
            assert!(res.tokens.shared_prefix < res.tokens.input);
            assert_valid(&res.text);
        }
        let same = e.generate(&[ask("a", DOC), ask("a2", DOC), ask("a3", DOC)]);
        let texts: Vec<String> = same.into_iter().map(|r| r.expect("generates").text).collect();
        assert_eq!(texts[0], texts[1], "clones of one KV cache must decode alike");
        assert_eq!(texts[1], texts[2]);
    }

    /// An input longer than the context (2,048, minus the output cap) is a typed error, and the request beside it still runs.
    pub fn over_long_input(e: &dyn Engine) {
        let long = "word ".repeat(3000);
        let mut out = e.generate(&[ask("long", &long), ask("ok", DOC)]);
        match out.remove(0) {
            Err(EngineError::InputTooLong { tokens, context, .. }) => {
                assert!(tokens > context - 64);
                assert_eq!(context, 2048);
            }
            other => panic!("expected InputTooLong, got {other:?}"),
        }
        assert_valid(&out.remove(0).expect("the neighbour runs").text);
    }

    /// Without a constraint, generation stops at end-of-generation or the cap and counts its tokens.
    pub fn unconstrained(e: &dyn Engine) {
        let req = Request::new("u", vec![ChatMessage::user("Say hello.")], 12);
        let res = e.generate(&[req]).remove(0).expect("generates");
        assert!(matches!(res.stop, StopReason::Eos | StopReason::MaxTokens), "{:?}", res.stop);
        assert!(res.tokens.output >= 1 && res.tokens.output <= 12);
        assert!(!res.text.is_empty());
    }

    /// An engine's first-step logits for a chat (the same prefill as `generate`).
    pub type FirstLogits<'a> = dyn Fn(&[ChatMessage]) -> Result<Vec<f32>, EngineError> + 'a;

    /// Every output token comes with its log-probability: as many entries as output tokens,
    /// their pieces add up to the text, the forced ones (and only those) have none, and the rest
    /// are log-probabilities. The first token of an unconstrained greedy output is the argmax of
    /// the engine's own first-step logits (`first_logits`, the same prefill), and its recorded
    /// log-probability is their log-softmax at that token, computed here independently.
    pub fn logprobs_match_logits(e: &dyn Engine, first_logits: &FirstLogits<'_>) {
        let res = e.generate(&[ask("lp", DOC)]).remove(0).expect("generates");
        assert_eq!(res.logprobs.len(), res.tokens.output, "{:?}", res.tokens);
        assert_eq!(res.logprobs.iter().map(|t| t.bytes as usize).sum::<usize>(), res.text.len(), "{}", res.text);
        assert_eq!(res.logprobs.iter().filter(|t| t.logprob.is_none()).count(), res.tokens.forced);
        assert!(res.tokens.forced < res.tokens.output, "some tokens were sampled");
        for t in &res.logprobs {
            if let Some(lp) = t.logprob {
                assert!(lp.is_finite() && lp <= 1e-6, "{t:?}");
            }
        }
        let req = Request::new("lp0", vec![ChatMessage::user("Name a colour.")], 4);
        let res = e.generate(std::slice::from_ref(&req)).remove(0).expect("generates");
        let logits = first_logits(&req.messages).expect("first-step logits");
        let first = res.logprobs[0];
        let top = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32);
        assert_eq!(Some(first.token), top, "greedy picks the argmax of its own logits");
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let want = f64::from(logits[first.token as usize] - max) - z.ln();
        let got = f64::from(first.logprob.expect("a sampled token has a log-probability"));
        println!("first token {}: recorded log-probability {got:.5}, log-softmax of the logits {want:.5}", first.token);
        assert!((got - want).abs() < 1e-3, "recorded {got}, from the logits {want}");
    }

    /// A missing file, a non-GGUF, a corrupt GGUF and an unsupported model (Gemma 3's `SentencePiece` vocabulary) are clear errors, never panics.
    pub fn bad_model_files(kind: EngineKind) {
        let load = |path: &Path| engines::load(kind, &EngineConfig::new(path)).err().expect("error");
        let err = load(Path::new("/nonexistent/x.gguf"));
        assert!(err.to_string().contains("/nonexistent/x.gguf"), "{err}");
        let dir = std::env::temp_dir().join(format!("promptloop-{kind}-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bad = dir.join("bad.gguf");
        std::fs::write(&bad, b"not a model").expect("write");
        assert!(load(&bad).to_string().contains("not a GGUF"));
        // GGUF magic, then garbage: the reader must fail, not panic.
        std::fs::write(&bad, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xffjunk").expect("write");
        let err = load(&bad);
        assert!(matches!(err, EngineError::Load { kind: k, .. } if k == kind), "{err}");
        // A real GGUF whose SentencePiece vocabulary and architecture this engine does not build.
        let gemma = model("gemma-3-270m-q4_k_m.gguf");
        let err = load(&gemma);
        assert!(err.to_string().contains("gemma3") || err.to_string().contains("tokenizer"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The folder of a shared dataset: under `PROMPTLOOP_DATA`, else the nearest `shared/datasets`
/// above the repository (the rule `harness::task` applies; the engines crate cannot depend on the
/// harness). Panics with where it looked: these tests need the real records.
pub fn dataset(name: &str) -> PathBuf {
    if let Some(root) = std::env::var_os("PROMPTLOOP_DATA").filter(|v| !v.is_empty()) {
        return PathBuf::from(root).join(name);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let looked: Vec<PathBuf> = repo.ancestors().map(|a| a.join("shared/datasets").join(name)).collect();
    looked.iter().find(|p| p.is_dir()).cloned().unwrap_or_else(|| {
        panic!("dataset `{name}` not found under PROMPTLOOP_DATA or any of {looked:?}: these tests read the real records")
    })
}

/// `(id, text)` of a dataset file's records, in file order.
pub fn records(name: &str, file: &str) -> Vec<(String, String)> {
    let path = dataset(name).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (v["id"].as_str().expect("id").to_owned(), v["text"].as_str().expect("text").to_owned())
        })
        .collect()
}

/// The cuad-mini dev contracts, in split order, as `evals/cuad-mini/task.toml` selects them:
/// CUAD's dev contracts of at most 10,000 characters sorted by id, then the unused pool's short
/// ones sorted by id after the 16 - (short train) that the train split takes first, 10 in all.
pub fn cuad_mini_dev() -> Vec<(String, String)> {
    let short = |file: &str| {
        let mut r: Vec<(String, String)> =
            records("cuad", file).into_iter().filter(|(_, t)| t.chars().count() <= 10_000).collect();
        r.sort_by(|a, b| a.0.cmp(&b.0));
        r
    };
    let train = short("train.jsonl").len().min(16);
    let mut pool = short("unused_pool.jsonl").into_iter().skip(16 - train);
    let mut dev = short("dev.jsonl");
    dev.truncate(10);
    while dev.len() < 10 {
        dev.push(pool.next().expect("enough short contracts in the pool"));
    }
    dev
}
