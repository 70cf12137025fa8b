//! `promptloop compare`: one eval pass the seed's way against promptloop's, on the same model,
//! threads, examples, prompts and greedy decoding, timed in the same run.
//!
//! The seed's workflow: a llama.cpp server, one HTTP request per example with the task's JSON
//! Schema as `response_format`, one after another, instruction first. Ours: the model in
//! process, batched, with the task's layout (document first by default, so each document's KV
//! state is cached). Two prompts are run, as in an optimize run's first two iterations: the
//! first pass of each side starts cold (a fresh prefix-cache directory), the second pass uses a
//! changed instruction on the same documents. Loading the model (ours) and starting the server
//! (theirs) are outside the timings.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use harness::eval::{self, EvalSpec, PromptSpec, Silent};
use harness::peer::{fits, Pass, Peer};
use harness::task::{Example, Layout, Task};
use serde::Serialize;

use harness::engine_setup::{constraint_schema, load_setup_engine};

use super::engine_args::EngineArgs;
use super::eval::{read_prompt, SplitArgs};
use super::InputError;

/// Appended to the task's prompt for the second pass when no `--prompt2` is given: a typical
/// small edit an optimizer makes, which leaves the documents unchanged.
const SECOND_PASS_EDIT: &str =
    "\n\nBefore answering, find the title, the signing parties, the date and the governing-law clause in the contract.";

#[derive(Debug, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub on: SplitArgs,
    /// Base URL of the peer: a running llama-server serving the same model (scripts/compare-peer.sh
    /// starts one).
    #[arg(long)]
    pub peer: String,
    /// Instruction of the second pass (default: the task's prompt with one sentence added).
    #[arg(long)]
    pub prompt2: Option<PathBuf>,
    /// Our layout (default: document-first; the peer is always instruction-first).
    #[arg(long, default_value = "document-first")]
    pub layout: Layout,
    /// Per-request timeout for the peer, in seconds.
    #[arg(long, default_value_t = 900)]
    pub peer_timeout: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The comparison of one pass.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub pass: usize,
    pub peer: Pass,
    pub ours: Pass,
    /// Peer wall time over ours.
    pub speedup: f64,
    /// Documents whose KV state ours restored instead of computing.
    pub cache_hits: usize,
    /// Draft tokens ours fed for verification (pass 2: pass 1's outputs), and those kept.
    pub drafted: usize,
    pub accepted: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    task: String,
    split: String,
    examples: usize,
    model: String,
    threads: usize,
    peer: String,
    ours_layout: String,
    /// Context per sequence on both sides.
    ctx: usize,
    /// Examples of the split (before `--limit` was reached) that do not fit `ctx`.
    left_out: Vec<LeftOut>,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct LeftOut {
    id: String,
    tokens: usize,
}

pub fn run(args: &CompareArgs, quiet: bool) -> anyhow::Result<()> {
    let task = Task::load(&args.on.task)?;
    let split = task.split(&args.on.split)?;
    let prompt1 = task.prompt.clone();
    let prompt2 = match &args.prompt2 {
        Some(p) => read_prompt(p)?,
        None => format!("{}{SECOND_PASS_EDIT}", prompt1.trim_end()),
    };
    let validator = task.validator()?;
    let e = &args.engine;
    let (schema, _) = constraint_schema(&task, e.constraint, e.no_bounds)?;
    let max_tokens = e.max_tokens.unwrap_or(task.max_tokens);
    let model_path = harness::models::resolve(&e.model)?;
    let (setup, _) = e.setup_with_note()?;
    let mut cfg = setup.engine_config(&model_path);
    // A cold cache for the first pass: a fresh spill directory unless one is given.
    let scratch = tempfile::tempdir().context("creating a temp dir for the prefix cache")?;
    cfg.prefix_cache = cfg.prefix_cache.take().map(|mut pc| {
        if e.prefix_cache_dir.is_none() {
            pc.disk_dir = Some(scratch.path().to_path_buf());
        }
        pc
    });
    let peer = Peer::new(&args.peer, Duration::from_secs(args.peer_timeout))?;
    peer.check().map_err(|err| InputError(format!("--peer {}: {err}", args.peer)))?;
    let engine = load_setup_engine(&setup, &cfg)?;
    let info = engine.info().clone();
    // Both sides run the same examples: those whose prompt of each pass plus the output cap
    // fits each side's context, ours counted by our engine (either layout) and the peer's by
    // the peer itself (its template, tokenizer and slot context, when it is a llama-server).
    // Longer ones would be a fast error on one side (the server's 400, our `too_long`), which
    // says nothing about speed and leaves that side's pass short of a document; they are left
    // out and named. `--limit` counts the examples kept.
    let ctx = info.capabilities.max_context;
    let peer_ctx = peer.context();
    let mut examples: Vec<Example> = Vec::new();
    let mut left_out = Vec::new();
    for ex in &split.examples {
        if args.on.limit.is_some_and(|n| examples.len() >= n) {
            break;
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for instruction in [&prompt1, &prompt2] {
            for layout in [Layout::InstructionFirst, args.layout] {
                let msgs = PromptSpec { instruction, layout, framing: &task.framing }.messages(&ex.text);
                ours.push(engine.count_tokens(&msgs).with_context(|| format!("counting the tokens of {}", ex.id))?);
            }
            let msgs = PromptSpec { instruction, layout: Layout::InstructionFirst, framing: &task.framing }.messages(&ex.text);
            theirs.push(peer_ctx.and_then(|_| peer.count_tokens(&msgs)).unwrap_or(ours[ours.len() - 2]));
        }
        let need = ours.iter().chain(&theirs).copied().max().unwrap_or(0);
        if fits(&ours, max_tokens, ctx) && fits(&theirs, max_tokens, peer_ctx.unwrap_or(ctx)) {
            examples.push(ex.clone());
        } else {
            left_out.push(LeftOut { id: ex.id.clone(), tokens: need });
        }
    }
    anyhow::ensure!(
        !examples.is_empty(),
        "no example of split {} fits the context of {ctx} tokens with {max_tokens} output tokens",
        split.name
    );
    let examples = &examples[..];
    let say = |msg: &str| {
        if !quiet && !args.json {
            eprintln!("{msg}");
        }
    };

    let mut rows = Vec::new();
    // Pass 2 drafts from pass 1's outputs, as an optimize run drafts from the latest output of
    // each document.
    let mut drafts: Option<eval::Drafts> = None;
    for (pass, instruction) in [(1, &prompt1), (2, &prompt2)] {
        say(&format!("pass {pass}: peer, {} examples one request at a time…", examples.len()));
        let peer_pass = peer.pass(&task, examples, instruction, schema.as_ref(), max_tokens, &validator);
        say(&format!("pass {pass}: peer {:.1} s; promptloop…", peer_pass.wall_s));
        let spec = EvalSpec {
            prompt: PromptSpec { instruction, layout: args.layout, framing: &task.framing },
            fields: &task.fields,
            constraint: schema.as_ref(),
            validator: &validator,
            max_tokens,
            overflow: e.on_overflow,
            drafts: drafts.as_ref(),
        };
        let (records, wall_ms) = eval::run(engine.as_ref(), &spec, examples, &mut Silent).context("eval pass")?;
        drafts = Some(eval::drafts_from(&records));
        let drafted: usize = records.iter().map(|r| r.tokens.drafted).sum();
        let accepted: usize = records.iter().map(|r| r.tokens.accepted).sum();
        let ours = Pass {
            wall_s: wall_ms / 1000.0,
            mean_score: harness::stats::mean(records.iter().map(|r| r.score)),
            format_failures: records.iter().filter(|r| r.error.is_none() && !r.format_ok).count(),
            errors: records.iter().filter(|r| r.error.is_some()).count(),
        };
        let cache_hits = records.iter().filter(|r| r.prefix_cache.is_some_and(|u| u.hit())).count();
        say(&format!("pass {pass}: promptloop {:.1} s", ours.wall_s));
        rows.push(Row {
            pass,
            speedup: peer_pass.wall_s / ours.wall_s.max(1e-9),
            peer: peer_pass,
            ours,
            cache_hits,
            drafted,
            accepted,
        });
    }
    let report = Report {
        task: task.name.clone(),
        split: split.name.clone(),
        examples: examples.len(),
        model: info.model_desc.clone(),
        threads: info.threads,
        peer: args.peer.clone(),
        ours_layout: args.layout.to_string(),
        ctx,
        left_out,
        rows,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(out, "{}", table(&report, &info))?;
    }
    Ok(())
}

fn table(r: &Report, info: &engines::EngineInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "task {} / split {} / {} examples / {}", r.task, r.split, r.examples, r.model);
    if !r.left_out.is_empty() {
        let ids: Vec<String> = r.left_out.iter().map(|l| format!("{} ({} tokens)", l.id, l.tokens)).collect();
        let _ = writeln!(s, "left out, longer than the context of {} tokens with the output cap: {}", r.ctx, ids.join(", "));
    }
    let _ = writeln!(s, "peer: llama-server at {}, sequential, instruction-first, response_format json_schema", r.peer);
    let _ = writeln!(
        s,
        "ours: {} in process ({}), {} threads, batch {}, {}, prefix cache {}",
        info.kind,
        info.backend_version,
        info.threads,
        info.capabilities.max_batch,
        r.ours_layout,
        if info.capabilities.prefix_cache { "on" } else { "off" }
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<6} {:>10} {:>10} {:>8} {:>11} {:>11} {:>10} {:>16}",
        "pass", "peer s", "ours s", "ratio", "peer mean", "ours mean", "doc hits", "draft kept"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:<6} {:>10.1} {:>10.1} {:>7.1}x {:>11.3} {:>11.3} {:>7}/{:<2} {:>16}",
            row.pass,
            row.peer.wall_s,
            row.ours.wall_s,
            row.speedup,
            row.peer.mean_score,
            row.ours.mean_score,
            row.cache_hits,
            r.examples,
            format!("{}/{}", row.accepted, row.drafted)
        );
    }
    for row in &r.rows {
        for (who, p) in [("peer", &row.peer), ("ours", &row.ours)] {
            if p.format_failures + p.errors > 0 {
                let _ = writeln!(s, "pass {}: {who} had {} format failures, {} errors", row.pass, p.format_failures, p.errors);
            }
        }
    }
    s
}
