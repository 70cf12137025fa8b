//! Engine benches, for every engine compiled in, on SmolLM2-135M: prefill tok/s at 128/512/2048
//! prompt tokens, decode tok/s, time per token under each constraint backend (none / gbnf /
//! llguidance), tokenizer tok/s, and the wall time of an eval pass over the first dev examples
//! of cuad-mini. The workloads are `harness::bench`'s, the same `promptloop bench` measures.
//!
//! Model load and warm-up are outside the measurement; each sample times only the phase named,
//! from the engine's own per-request timings (`iter_custom`). Prefill and decode compare with
//! llama.cpp's `llama-bench -p 512 -n 128` (see scripts/llama-bench.sh).
//!
//! With `--features candle`, the same groups run for each candle weight format
//! (`candle/…`, `candle:q4_0/…`, `candle:q8_0/…`, `candle:f32/…`).

use criterion::{criterion_group, criterion_main, Criterion};
use harness::bench::{engine_workloads, Group, Variant};
use promptloop_benches::{inputs, plan, register, smollm2};

fn engines(c: &mut Criterion) {
    let plan = plan();
    let inputs = inputs(&plan);
    let model = smollm2();
    // Every engine compiled in, every weight format it computes with (`candle:q8_0`, …).
    for variant in engines::compiled_engines().into_iter().flat_map(Variant::all_of) {
        // One group at a time, so only that group's engines are loaded.
        for group in Group::ALL.into_iter().filter(|g| g.needs_engine()) {
            let workloads =
                engine_workloads(variant, &model, &plan, &inputs, &[group]).unwrap_or_else(|e| panic!("{variant} {group}: {e}"));
            for w in &workloads {
                register(c, w.as_ref());
            }
        }
    }
}

criterion_group!(benches, engines);
criterion_main!(benches);
