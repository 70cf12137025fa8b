//! Scorer throughput: `score_example` (JSON parse, schema validation, per-field matchers) over
//! outputs derived from every gold answer of cuad-mini. CPU only, no model.

use criterion::{criterion_group, criterion_main, Criterion};
use harness::bench::scorer_workload;
use promptloop_benches::{inputs, plan, register};

fn scorer(c: &mut Criterion) {
    let plan = plan();
    register(c, &scorer_workload(&inputs(&plan), &plan));
}

criterion_group!(benches, scorer);
criterion_main!(benches);
