//! Shared by the benches: the model and task they run on, and [`register`], which hands a
//! `harness::bench` workload to criterion, so `cargo bench` times exactly what
//! `promptloop bench` times (the measurement code lives in `harness/src/bench/`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use harness::bench::{Inputs, Plan, Workload};

/// Whether criterion runs this binary as a test (`cargo test --all-targets`, or `-- --test`)
/// rather than as a benchmark (`cargo bench` passes `--bench`): criterion then runs each
/// workload once to check that it works, and measures nothing.
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test")
}

/// The workload plan: [`Plan::default`] when benchmarking; in [test mode](test_mode) a short
/// one (prefill at 128 tokens, 16 decode tokens, one eval example) that still runs every
/// workload of every engine variant, so CI checks them all in minutes, not an hour.
pub fn plan() -> Plan {
    if test_mode() {
        Plan { prefill_tokens: vec![128], decode_tokens: 16, eval_examples: 1, scorer_rounds: 1, ..Plan::default() }
    } else {
        Plan::default()
    }
}

/// The `SmolLM2` GGUF installed by `scripts/setup.sh` (panics with the fix if missing: a bench
/// that silently measures nothing is worse than one that stops).
pub fn smollm2() -> PathBuf {
    harness::models::resolve("smollm2-135m").unwrap_or_else(|e| panic!("{e}"))
}

/// The cuad-mini task the workloads take their prompts, schema and gold answers from.
pub fn inputs(plan: &Plan) -> Arc<Inputs> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/cuad-mini");
    Arc::new(Inputs::load(&dir, plan).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
}

/// Benchmarks `w` as `GROUP/ID`, split at the last `/` of its metric name (`llama/prefill/512`
/// is group `llama/prefill`, id `512`). One unmeasured run first (warm-up) sizes the window and
/// gives the work per run, reported as criterion's throughput (tokens, scores or passes per
/// second). Each iteration is one `Workload::run`, timed by its own measured phase. In
/// [test mode](test_mode) there is no sizing run: criterion runs the workload once.
pub fn register(c: &mut Criterion, w: &dyn Workload) {
    let spec = w.spec();
    let (group, id) = spec.name.rsplit_once('/').unwrap_or(("promptloop", spec.name.as_str()));
    let run = || w.run().unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    let mut g = c.benchmark_group(group);
    if !test_mode() {
        let probe = run();
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs_f64((probe.seconds * 12.0).clamp(3.0, 900.0)))
            .throughput(Throughput::Elements(probe.work.round() as u64));
    }
    g.bench_function(id, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| Duration::from_secs_f64(run().seconds)).sum());
    });
    g.finish();
}
