//! Shared fixtures for the benches: model paths and prompts of a given token length cut from
//! real CUAD contracts.

use std::path::PathBuf;

use engines::{ChatMessage, Engine};

/// The `SmolLM2` GGUF installed by `scripts/setup.sh` (panics with the fix if missing: a bench
/// that silently measures nothing is worse than one that stops).
pub fn smollm2() -> PathBuf {
    harness::models::resolve("smollm2-135m").unwrap_or_else(|e| panic!("{e}"))
}

/// The contract texts of `evals/cuad-mini/<split>.jsonl`.
pub fn contracts(split: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../evals/cuad-mini/{split}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v["text"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// A user message whose chat-templated prompt is as close to `tokens` tokens as the text
/// allows (never above), cut from `text` on a character boundary.
pub fn prompt_of_tokens(engine: &dyn Engine, text: &str, tokens: usize) -> Vec<ChatMessage> {
    let make = |chars: usize| vec![ChatMessage::user(text.chars().take(chars).collect::<String>())];
    let count = |chars: usize| engine.count_tokens(&make(chars)).expect("tokenizes");
    let (mut lo, mut hi) = (0usize, text.chars().count());
    assert!(count(hi) >= tokens, "text too short for a {tokens}-token prompt");
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(mid) <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    make(lo)
}
