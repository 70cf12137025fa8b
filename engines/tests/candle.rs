//! The candle backend against the real SmolLM2-135M: loading and its errors, constrained and
//! unconstrained generation, the context limit, variants, and greedy agreement with the llama
//! engine on cuad-mini dev. Token-id parity with llama.cpp is in `candle_parity.rs` (it needs
//! llama.cpp's backend in a process of its own). A missing model fails with the command that
//! fetches it.

/// Where the backend is not compiled in, this binary fails with one test saying so instead of
/// passing with none.
#[cfg(not(feature = "candle"))]
#[test]
fn candle_is_compiled_in() {
    panic!("this test binary tests the candle engine, which this build lacks: run `cargo test --features engines/candle` (scripts/test.sh does)");
}

#[cfg(feature = "candle")]
mod common;

#[cfg(feature = "candle")]
mod with_feature {
    use super::common;
    use std::sync::OnceLock;

    use engines::{ConstraintBackend, Engine, EngineKind, WeightFormat};

    use common::{ask, assert_valid, config, DOC};

    fn shared() -> &'static dyn Engine {
        static ENGINE: OnceLock<Box<dyn Engine>> = OnceLock::new();
        ENGINE
            .get_or_init(|| {
                engines::load(EngineKind::Candle, &config(WeightFormat::Gguf, 2048)).expect("SmolLM2 loads in candle")
            })
            .as_ref()
    }

    #[test]
    fn loads_and_reports_what_it_is() {
        let info = shared().info();
        assert_eq!(info.kind, EngineKind::Candle);
        assert_eq!(info.vocab_size, 49_152);
        assert_eq!(info.chat_template, "gguf");
        assert_eq!(info.capabilities.max_context, 2048);
        assert!(info.capabilities.shared_prefix);
        assert!(info.model_desc.contains("q4_1"), "{}", info.model_desc);
        assert_eq!(engines::backend_version(EngineKind::Candle), Some(info.backend_version.as_str()));
    }

    #[test]
    fn constrained_output_is_valid_json_with_full_reporting() {
        common::checks::constrained_output(shared());
    }

    /// A group's common prefix is prefilled once and each request continues from a clone of the
    /// KV cache. candle's logits depend on where the prompt is split into forward calls (measured
    /// on this prompt: up to 0.7 apart out of ~30 for splits at 13, 16 or 20 tokens, which flips a
    /// near-tie), so outputs are compared where the split is the same: identical prompts.
    #[test]
    fn shared_prefix_is_prefilled_once_from_a_kv_cache_clone() {
        common::checks::shared_prefix(shared());
    }

    /// Per-token confidences come from the logits the decoder has anyway (see
    /// `common::checks::logprobs_match_logits`).
    #[test]
    fn every_output_token_has_its_log_probability_from_the_engines_logits() {
        let e = engines::candle::CandleEngine::load(&config(WeightFormat::Gguf, 2048)).expect("candle loads");
        common::checks::logprobs_match_logits(&e, &|m| e.first_logits(m));
    }

    #[test]
    fn over_long_input_is_a_typed_error_and_neighbours_still_run() {
        common::checks::over_long_input(shared());
    }

    #[test]
    fn unconstrained_generation_stops_and_counts_tokens() {
        common::checks::unconstrained(shared());
    }

    #[test]
    fn missing_or_bad_model_files_are_clear_errors() {
        common::checks::bad_model_files(EngineKind::Candle);
    }

    #[test]
    fn unsupported_options_are_refused_at_load() {
        let mut cfg = config(WeightFormat::Gguf, 512);
        cfg.constraint_backend = ConstraintBackend::Gbnf;
        let err = engines::load(EngineKind::Candle, &cfg).err().expect("GBNF is llama.cpp's");
        assert!(err.to_string().contains("llguidance"), "{err}");
        let err = engines::load(EngineKind::Candle, &config(WeightFormat::Gguf, 100_000)).err().expect("too long");
        assert!(err.to_string().contains("rotary"), "{err}");
        let mut cfg = config(WeightFormat::Gguf, 512);
        cfg.chat_template = Some("llama3".into());
        let err = engines::load(EngineKind::Candle, &cfg).err().expect("template not rendered");
        assert!(err.to_string().contains("llama3"), "{err}");
        #[cfg(feature = "llama")]
        {
            let err = engines::load(EngineKind::Llama, &config(WeightFormat::Q8_0, 512)).err().expect("llama refuses");
            assert!(err.to_string().contains("has no weight format `q8_0`"), "{err}");
        }
    }

    #[test]
    fn requantized_variants_load_and_stay_valid() {
        for weights in [WeightFormat::Q8_0, WeightFormat::F32] {
            let e = engines::load(EngineKind::Candle, &config(weights, 512)).expect("variant loads");
            assert!(e.info().model_desc.contains(weights.name()), "{}", e.info().model_desc);
            let res = e.generate(&[ask("v", DOC)]).remove(0).expect("generates");
            assert_valid(&res.text);
        }
    }

    /// Greedy outputs under the same constraint, candle (the GGUF's own `Q4_1` weights) against the
    /// llama engine, on cuad-mini dev. Quantized kernels differ (rounding of activations, order of
    /// sums), so near-ties can flip a token, and once a token differs the rest of the output does
    /// too (a looping value runs to the cap on one side and not the other). Two rates are printed:
    /// whole outputs identical, and extracted field values identical (what the scores see).
    /// Measured in CI on 2026-11-25: outputs 1/10, field values 17/40 (0.42), most differences
    /// inside values both engines got wrong (looping dates and names). That is below the issue's
    /// "most examples"; the assertion is a floor that catches a broken engine (a tokenizer or
    /// weight-layout bug agrees on nothing), not the target. As `promptloop eval` does, strings and lists are bounded
    /// (`maxLength` 100, `maxItems` 4), so a looping value ends and both outputs parse. The rates are
    /// also written to `$CARGO_TARGET_TMPDIR/candle_agreement.txt` (CI keeps test output quiet).
    #[cfg(feature = "llama")]
    #[test]
    fn greedy_outputs_agree_with_llama_on_cuad_mini_dev() {
        let a = common::agreement_with_llama(EngineKind::Candle, None);
        let rate = a.field_rate();
        assert!(rate >= 0.3, "field agreement {rate:.2} fell below the 0.3 floor (0.42 measured)");
    }

    /// The logits of the first decode step (after prefilling the whole prompt in chunks of 256)
    /// from candle and from llama.cpp, on prompts of 12, 52 and 546 tokens. Both compute the same
    /// `Q4_1` weights with activations rounded to 8 bits, but sum in different orders, so they
    /// agree to a tolerance: the same top token, and differences under the bounds below. Measured
    /// (2026-11-25, 2 cores): max 1.52 / 0.89 / 0.75 and mean 0.49 / 0.22 / 0.18 on the three
    /// prompts (the MLX engine: max 0.56-0.89, mean 0.12-0.21); a wrong `RoPE` layout or tokenizer
    /// is off by 10 or more. This is the check that candle's forward pass is `llama.cpp`'s; the greedy
    /// agreement above shows how far near-ties then move whole outputs apart.
    #[cfg(feature = "llama")]
    #[test]
    fn first_step_logits_match_llama_cpp() {
        const MAX_ABS: f32 = 2.5;
        const MEAN_ABS: f64 = 0.75;
        let candle = engines::candle::CandleEngine::load(&common::logits_config()).expect("candle loads");
        for (i, d) in common::first_logits_against_llama("candle", |m| candle.first_logits(m)).iter().enumerate() {
            assert!(d.same_top, "prompt {i}: top tokens differ");
            assert!(d.max_abs < MAX_ABS, "prompt {i}: max abs logit difference {} >= {MAX_ABS}", d.max_abs);
            assert!(d.mean_abs < MEAN_ABS, "prompt {i}: mean abs logit difference {} >= {MEAN_ABS}", d.mean_abs);
        }
    }
}
