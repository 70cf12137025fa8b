//! `promptloop calibrate`: probe each engine over a ladder of input lengths (each probe in a
//! child process under a memory watchdog), fit memory and latency, write the routing table.
//! `promptloop probe` is the hidden child side.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engines::memory::Machine;
use engines::EngineKind;
use harness::calibrate::fit::{self, Budget, EngineProbes};
use harness::calibrate::probe::{self, ProbeResult, ProbeSpec};
use harness::calibrate::{self, RoutingTable, TABLE_VERSION};
use harness::fingerprint::model_fingerprint;
use harness::router::EngineChoice;
use harness::task::Task;

use super::InputError;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// GGUF path or a known name (smollm2-135m, gemma3-270m).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Engines to calibrate, comma-separated (those not compiled in are skipped with a note).
    #[arg(long, default_value = "llama")]
    pub engines: String,
    /// Endpoints to calibrate too: `server:URL[,URL...]` (llama-servers) or `openai:URL[,URL...]`.
    /// Their latency by input length and their slot context go into the table, and
    /// `--engine auto` then routes each example among them and the in-process engines (e.g.
    /// short inputs in-process, long ones to a server with more memory).
    #[arg(long, value_name = "ENGINE")]
    pub fleet: Option<EngineChoice>,
    /// Output tokens per example the thresholds leave room for (and each probe decodes).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Memory budget, e.g. 6GiB or 800MiB (default: --memory-fraction of the machine's memory).
    #[arg(long, conflicts_with = "memory_fraction")]
    pub memory_budget: Option<String>,
    /// Share of the machine's memory to budget.
    #[arg(long, default_value_t = 0.8)]
    pub memory_fraction: f64,
    /// Safety margin on predicted peaks.
    #[arg(long, default_value_t = 0.1)]
    pub margin: f64,
    /// Repetitions per length (inputs over 2048 tokens get one).
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
    /// Longest input probed (default: the model's context).
    #[arg(long)]
    pub max_input: Option<usize>,
    /// Task whose documents make the probe prompts (default: padded text).
    #[arg(long)]
    pub task: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
    /// Routing table to write (default: the model's table in the cache, which `--engine auto`
    /// reads).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds one probe may take before it is stopped.
    #[arg(long, default_value_t = 300)]
    pub probe_timeout: u64,
    /// Print the table as one JSON object (the last line on stdout).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {}

/// The child side: read the probe (JSON) from stdin, run it, print its report as one JSON line.
pub fn probe(_args: &ProbeArgs) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading the probe from stdin")?;
    let spec: ProbeSpec = serde_json::from_str(&text).context("parsing the probe")?;
    let report = probe::run_in_process(&spec)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub fn run(args: &CalibrateArgs, quiet: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let machine = Machine::current();
    let budget = if let Some(s) = &args.memory_budget {
        calibrate::parse_bytes(s).map_err(|m| InputError(format!("--memory-budget: {m}")))?
    } else {
        if !(args.memory_fraction > 0.0 && args.memory_fraction <= 1.0) {
            return Err(InputError("--memory-fraction must be in (0, 1]".into()).into());
        }
        (machine.total_memory_bytes as f64 * args.memory_fraction) as u64
    };
    if !(0.0..=1.0).contains(&args.margin) {
        return Err(InputError("--margin must be between 0 and 1".into()).into());
    }
    // What to probe: each in-process engine, then the fleet (its endpoints and API).
    let mut kinds: Vec<(EngineKind, Vec<String>, engines::ServerApi)> = Vec::new();
    for part in args.engines.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let kind: EngineKind = part.parse().map_err(|e| InputError(format!("--engines: {e}")))?;
        if kind == EngineKind::Server {
            return Err(InputError("--engines: name endpoints with --fleet server:URL[,URL...]".into()).into());
        }
        kinds.push((kind, Vec::new(), engines::ServerApi::Native));
    }
    match &args.fleet {
        None => {}
        Some(fleet @ (EngineChoice::Servers(urls) | EngineChoice::OpenAi(urls))) => {
            kinds.push((EngineKind::Server, urls.clone(), fleet.server_api()));
        }
        Some(other) => {
            return Err(InputError(format!("--fleet: expected server:URL[,URL...] or openai:URL[,URL...], not `{other}`")).into())
        }
    }
    if kinds.is_empty() {
        return Err(InputError("--engines: name at least one engine".into()).into());
    }
    let model_path = harness::models::resolve(&args.model)?;
    let model = model_fingerprint(&model_path).with_context(|| format!("reading {}", model_path.display()))?;
    let corpus = match &args.task {
        Some(dir) => {
            let task = Task::load(dir)?;
            task.splits.values().flat_map(|s| s.examples.iter().map(|e| e.text.clone())).collect()
        }
        None => Vec::new(),
    };
    let exe = std::env::current_exe().context("locating the promptloop binary for the probes")?;
    let say = |line: &str| {
        if !quiet && !args.json {
            eprintln!("{line}");
        }
    };
    say(&format!("budget {} MiB ({}), margin {:.0}%", budget >> 20, machine.cpu, args.margin * 100.0));

    let mut entries = Vec::new();
    for (kind, servers, server_api) in kinds {
        if !kind.is_compiled() {
            say(&format!("{kind}: skipped: not compiled into this build (rebuild with --features {})", kind.feature()));
            continue;
        }
        let spec = |input_tokens: usize, reps: usize| ProbeSpec {
            model: model_path.clone(),
            engine: kind,
            input_tokens,
            max_tokens: args.max_tokens,
            reps,
            threads: args.threads,
            corpus: corpus.clone(),
            servers: servers.clone(),
            server_api,
        };
        let timeout = Duration::from_secs(args.probe_timeout);
        let run_probe = |input: usize, reps: usize| -> anyhow::Result<ProbeResult> {
            let r = probe::spawn(&exe, &spec(input, reps), budget, timeout)?;
            say(&describe(kind, &r));
            Ok(r)
        };
        let first = run_probe(128, args.reps)?;
        // A server's slot context bounds its inputs as the trained context does the others'.
        let remote = !servers.is_empty();
        let Some(train_context) = first.report.as_ref().map(|r| {
            if remote && r.max_context > 0 {
                r.train_context.min(r.max_context)
            } else {
                r.train_context
            }
        }) else {
            say(&format!("{kind}: skipped: the first probe failed: {}", first.note.clone().unwrap_or_default()));
            continue;
        };
        let backend_version = first.report.as_ref().map(|r| r.backend_version.clone()).unwrap_or_default();
        let ladder = calibrate::ladder(train_context, args.max_tokens, args.max_input);
        let mut results = vec![first];
        for &n in ladder.iter().filter(|&&n| n != 128) {
            // Long prompts are dominated by a prefill that varies little: one rep past 2k.
            let r = run_probe(n, if n > 2048 { 1 } else { args.reps })?;
            let fits = r.fits;
            results.push(r);
            if !fits {
                break; // longer inputs only need more
            }
        }
        let fitting: Vec<usize> = results.iter().filter(|r| r.fits).map(|r| r.input_tokens).collect();
        let held = match calibrate::held_back(&fitting) {
            Some(n) => Some(run_probe(n, 1)?),
            None => None,
        };
        let probes =
            EngineProbes { kind, backend_version: &backend_version, train_context, ladder: &results, held: held.as_ref() };
        let mut entry = fit::fit_engine(&probes, &Budget { bytes: budget, margin: args.margin, max_tokens: args.max_tokens });
        entry.servers = servers;
        entry.server_api = server_api;
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(anyhow::anyhow!("no engine could be calibrated (see the notes above)"));
    }
    let table = RoutingTable {
        version: TABLE_VERSION,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        promptloop_version: env!("CARGO_PKG_VERSION").into(),
        machine,
        model: model.clone(),
        budget_bytes: budget,
        margin: args.margin,
        max_tokens: args.max_tokens,
        engines: entries,
    };
    let out = args.out.clone().unwrap_or_else(|| calibrate::default_table_path(&model));
    table.save(&out)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&table)?;
        v["path"] = serde_json::json!(out);
        v["wall_s"] = serde_json::json!(wall_s);
        writeln!(stdout, "{v}")?;
        return Ok(());
    }
    for e in &table.engines {
        let at = if e.servers.is_empty() { String::new() } else { format!(" at {}", e.servers.join(",")) };
        writeln!(stdout, "engine {}{at} ({})", e.kind, e.backend_version)?;
        writeln!(
            stdout,
            "{:>7} {:>7} {:>9} {:>11} {:>9} {:>10} {:>10}  note",
            "input", "ctx", "peak MiB", "prefill ms", "ttft ms", "decode t/s", "total ms"
        )?;
        for p in &e.points {
            let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            writeln!(
                stdout,
                "{:>7} {:>7} {:>9.1} {:>11} {:>9} {:>10} {:>10}  {}",
                p.input_tokens,
                p.n_ctx,
                p.peak_rss_bytes as f64 / 1_048_576.0,
                f(p.prefill_ms),
                f(p.ttft_ms),
                f(p.decode_tok_s),
                f(p.total_ms),
                p.note.as_deref().unwrap_or("")
            )?;
        }
        // A server's memory is its own: the peaks above are this client's.
        writeln!(
            stdout,
            "memory  = {:.1} MiB + {:.1} KiB per context token (max error on the points {:.1}%){}",
            e.memory.intercept / 1_048_576.0,
            e.memory.slope / 1024.0,
            e.memory.max_rel_error * 100.0,
            if e.servers.is_empty() { "" } else { " (this client's; the servers' memory is theirs)" }
        )?;
        writeln!(
            stdout,
            "prefill = tokens x ({:.3} ms + {:.5} ms x tokens) (max error {:.1}%); decode {:.1} tok/s",
            e.prefill_ms_per_token.intercept,
            e.prefill_ms_per_token.slope,
            e.prefill_ms_per_token.max_rel_error * 100.0,
            e.decode_tok_s
        )?;
        if let Some(h) = e.check {
            writeln!(
                stdout,
                "held back {} tokens: predicted peak {:.1} MiB, measured {:.1} MiB, error {:.1}%",
                h.input_tokens,
                h.predicted_peak_bytes / 1_048_576.0,
                h.measured_peak_bytes as f64 / 1_048_576.0,
                h.rel_error * 100.0
            )?;
        }
        if e.servers.is_empty() {
            writeln!(
                stdout,
                "threshold: inputs up to {} tokens fit {} MiB with a {:.0}% margin",
                e.max_input_tokens,
                table.budget_bytes >> 20,
                table.margin * 100.0
            )?;
        } else {
            writeln!(stdout, "threshold: inputs up to {} tokens (the servers' slot context)", e.max_input_tokens)?;
        }
        writeln!(stdout)?;
    }
    writeln!(stdout, "routing table   {}", out.display())?;
    writeln!(stdout, "wall time       {wall_s:.1} s")?;
    Ok(())
}

fn describe(kind: EngineKind, r: &ProbeResult) -> String {
    let timing = r
        .report
        .as_ref()
        .and_then(|rep| rep.reps.last())
        .map_or_else(String::new, |rep| format!(", prefill {:.0} ms, decode {:.0} tok/s", rep.prefill_ms, rep.decode_tok_s));
    let note = r.note.as_deref().map_or_else(String::new, |n| format!(" ({n})"));
    format!("{kind}: {} tokens, ctx {}: peak {} MiB{timing}{note}", r.input_tokens, r.n_ctx, r.peak_rss_bytes >> 20)
}
