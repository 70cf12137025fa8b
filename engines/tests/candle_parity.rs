//! Token-id parity between the candle engine's GGUF tokenizer and llama.cpp's, on every CUAD
//! dev document with the chat template applied, and on strings that stress the pre-tokenizer.
//! llama.cpp is driven directly (`llama-cpp-2`), so this file is its own test binary: llama.cpp's
//! backend may be initialised once per process.

/// Where the backend is not compiled in, this binary fails with one test saying so instead of
/// passing with none.
#[cfg(not(all(feature = "candle", feature = "llama")))]
#[test]
fn candle_parity_is_compiled_in() {
    panic!("this test binary tests candle against llama.cpp, which this build lacks: run `cargo test --features engines/candle` (scripts/test.sh does)");
}

#[cfg(all(feature = "candle", feature = "llama"))]
mod common;

#[cfg(all(feature = "candle", feature = "llama"))]
mod with_feature {
    use super::common;
    use std::path::PathBuf;

    use engines::candle::CandleEngine;
    use engines::{ChatMessage, EngineConfig};
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};

    use common::smollm2;

    fn repo_file(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    /// llama.cpp's prompt ids: the GGUF's template as llama.cpp applies it, special tokens parsed.
    fn llama_ids(model: &LlamaModel, messages: &[ChatMessage]) -> Vec<u32> {
        let template = model.chat_template(None).expect("SmolLM2 has a chat template");
        let chat: Vec<LlamaChatMessage> =
            messages.iter().map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()).expect("no NUL")).collect();
        let text = model.apply_chat_template(&template, &chat, true).expect("template applies");
        model.vocab().tokenize(text.as_bytes(), true, true).into_iter().map(|t| t.0 as u32).collect()
    }

    #[test]
    fn prompt_tokens_equal_llama_cpp_on_every_cuad_dev_document() {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        let backend = LlamaBackend::init().expect("llama backend");
        let llama = LlamaModel::load_from_file(&backend, smollm2(), &LlamaModelParams::default()).expect("llama.cpp loads");
        let candle = CandleEngine::load(&EngineConfig::new(smollm2())).expect("candle loads");
        let instruction = std::fs::read_to_string(repo_file("evals/cuad/prompt.txt")).expect("evals/cuad/prompt.txt");
        let mut cases: Vec<(String, Vec<ChatMessage>)> = Vec::new();
        for (id, text) in common::records("cuad", "dev.jsonl") {
            // Both layouts the eval uses: instruction as system message, and document first.
            cases.push((
                id.clone(),
                vec![ChatMessage::system(instruction.clone()), ChatMessage::user(format!("Contract:\n\n{text}"))],
            ));
            cases.push((
                format!("{id} (document first)"),
                vec![ChatMessage::user(format!("Contract:\n\n{text}\n\n---\n\n{instruction}"))],
            ));
        }
        assert!(cases.len() >= 80, "expected the 40 CUAD dev documents, got {}", cases.len() / 2);
        // Strings that stress the pre-tokenizer: digits, contractions, runs of spaces and newlines,
        // non-ASCII, special tokens inside text.
        let tricky = [
            "It's 2024-01-31; we'll pay $1,234,567.89 (USD)   now.\n\n\n  Indented\ttab",
            "Ünïcödé — “quotes” 日本語 😀 and <|im_end|> inside <|im_start|>text",
            "   leading spaces, trailing spaces   ",
            "\n\nstarts with newlines",
        ];
        for t in tricky {
            cases.push((t.to_owned(), vec![ChatMessage::user(t)]));
        }
        let mut mismatches = Vec::new();
        let mut total = 0usize;
        for (name, messages) in &cases {
            let want = llama_ids(&llama, messages);
            let got = candle.tokenize(messages).expect("candle tokenizes");
            total += want.len();
            if got != want {
                let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
                mismatches.push(format!(
                    "{name}: llama.cpp {} tokens, candle {}; first difference at {at}: {:?} vs {:?}",
                    want.len(),
                    got.len(),
                    want.get(at..(at + 5).min(want.len())),
                    got.get(at..(at + 5).min(got.len()))
                ));
            }
        }
        println!("token parity: {} prompts, {total} llama.cpp tokens, {} mismatches", cases.len(), mismatches.len());
        assert!(mismatches.is_empty(), "{} of {} prompts differ:\n{}", mismatches.len(), cases.len(), mismatches.join("\n"));
    }
}
