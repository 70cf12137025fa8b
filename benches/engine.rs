//! Engine benches on SmolLM2-135M: prefill tok/s at three prompt lengths, decode tok/s, and the
//! per-token cost of the JSON-Schema constraint (none / gbnf / llguidance).
//!
//! Model load and warm-up are outside the measurement; each sample times only the phase named,
//! from the engine's own per-request timings (`iter_custom`). Comparable to llama.cpp's
//! `llama-bench -p 512 -n 128` (see scripts/llama-bench.sh).
//!
//! With `--features candle`, `candle/<variant>/prefill` and `candle/<variant>/decode` measure the
//! candle engine on the same prompts for each weight format it can compute with.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engines::{ChatMessage, ConstraintBackend, Engine, EngineConfig, EngineKind, Request};
use promptloop_benches::{contracts, prompt_of_tokens, smollm2};

fn engine(constraint: ConstraintBackend) -> Box<dyn Engine> {
    let mut cfg = EngineConfig::new(smollm2());
    cfg.batch_size = 1;
    cfg.n_ctx = Some(4096);
    cfg.constraint_backend = constraint;
    engines::load(EngineKind::Llama, &cfg).expect("SmolLM2 loads")
}

fn secs(ms: f64) -> Duration {
    Duration::from_secs_f64(ms / 1000.0)
}

fn prefill_and_decode(c: &mut Criterion) {
    let text = contracts("dev").join("\n\n");
    let e = engine(ConstraintBackend::None);

    let mut g = c.benchmark_group("llama/prefill");
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    for n in [128, 512, 2048] {
        let msgs = prompt_of_tokens(e.as_ref(), &text, n);
        let tokens = e.count_tokens(&msgs).expect("tokenizes");
        g.throughput(Throughput::Elements(tokens as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let r = e.generate(&[Request::new("pp", msgs.clone(), 1)]).remove(0).expect("prefill");
                        secs(r.timings.prefill_ms)
                    })
                    .sum()
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("llama/decode");
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(128));
    g.bench_function("tg128", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let mut req = Request::new("tg", vec![ChatMessage::user("Write about contracts.")], 129);
                    req.ignore_eos = true;
                    let r = e.generate(&[req]).remove(0).expect("decode");
                    assert_eq!(r.tokens.output, 129);
                    secs(r.timings.decode_ms)
                })
                .sum()
        });
    });
    g.finish();
}

/// Time per generated token with each constraint backend, on a real extraction prompt.
fn constraint_overhead(c: &mut Criterion) {
    let schema: serde_json::Value = serde_json::from_str(include_str!("../evals/cuad-mini/schema.json")).expect("schema");
    let doc = contracts("dev").into_iter().next().expect("a contract");
    let mut g = c.benchmark_group("llama/constrained-decode");
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(1));
    for backend in [ConstraintBackend::None, ConstraintBackend::Llguidance, ConstraintBackend::Gbnf] {
        let e = engine(backend);
        let msgs = prompt_of_tokens(e.as_ref(), &doc, 512);
        let mut req = Request::new("c", msgs, 64);
        req.messages.insert(0, ChatMessage::system("Extract the contract's title, parties, date and governing law as JSON."));
        if backend != ConstraintBackend::None {
            req = req.with_schema(schema.clone());
        }
        g.bench_function(BenchmarkId::from_parameter(backend), |b| {
            // One iteration = one generated token (after the first), so outputs of different
            // lengths compare per token.
            b.iter_custom(|iters| {
                let (mut tokens, mut spent) = (0u64, Duration::ZERO);
                while tokens < iters {
                    let r = e.generate(&[req.clone()]).remove(0).expect("generates");
                    tokens += r.tokens.output.saturating_sub(1).max(1) as u64;
                    spent += secs(r.timings.decode_ms);
                }
                spent.mul_f64(iters as f64 / tokens as f64)
            });
        });
    }
    g.finish();
}

/// The candle engine's variants beside the llama engine: prefill of the same 512-token prompt
/// and decode of 32 tokens (f32 decodes at ~16 tok/s on 2 cores; 128 would take minutes).
#[cfg(feature = "candle")]
fn candle_variants(c: &mut Criterion) {
    use engines::WeightFormat;
    let text = contracts("dev").join("\n\n");
    for weights in [WeightFormat::Gguf, WeightFormat::Q4_0, WeightFormat::Q8_0, WeightFormat::F32] {
        let mut cfg = EngineConfig::new(smollm2());
        cfg.batch_size = 1;
        cfg.n_ctx = Some(4096);
        cfg.constraint_backend = ConstraintBackend::None;
        cfg.weights = weights;
        let e = engines::load(EngineKind::Candle, &cfg).expect("SmolLM2 loads in candle");
        let msgs = prompt_of_tokens(e.as_ref(), &text, 512);
        let tokens = e.count_tokens(&msgs).expect("tokenizes");
        let mut g = c.benchmark_group(format!("candle/{weights}"));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
        g.throughput(Throughput::Elements(tokens as u64));
        g.bench_function("prefill/512", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let r = e.generate(&[Request::new("pp", msgs.clone(), 1)]).remove(0).expect("prefill");
                        secs(r.timings.prefill_ms)
                    })
                    .sum()
            });
        });
        g.throughput(Throughput::Elements(32));
        g.bench_function("decode/tg32", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let mut req = Request::new("tg", vec![ChatMessage::user("Write about contracts.")], 33);
                        req.ignore_eos = true;
                        let r = e.generate(&[req]).remove(0).expect("decode");
                        assert_eq!(r.tokens.output, 33);
                        secs(r.timings.decode_ms)
                    })
                    .sum()
            });
        });
        g.finish();
    }
}

#[cfg(not(feature = "candle"))]
criterion_group!(benches, prefill_and_decode, constraint_overhead);
#[cfg(feature = "candle")]
criterion_group!(benches, prefill_and_decode, constraint_overhead, candle_variants);
criterion_main!(benches);
