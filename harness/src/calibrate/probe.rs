//! One calibration probe: an engine loaded with a context sized for one input length, timed on
//! a real prompt of that length, its peak memory read from the kernel.
//!
//! The parent runs every probe in a child process (the binary re-executed in its hidden
//! `probe` mode), so one probe's memory does not hide the next one's and a probe that runs out
//! of memory cannot take the calibrate run down. A watchdog thread reads the child's RSS every
//! few milliseconds and kills it once it passes the budget: that probe is recorded as "does not
//! fit", never as a crash.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engines::{ChatMessage, EngineConfig, EngineKind, Request};
use serde::{Deserialize, Serialize};

/// What one probe measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub model: PathBuf,
    pub engine: EngineKind,
    /// Prompt tokens (chat template included).
    pub input_tokens: usize,
    /// Tokens decoded after the prompt (end-of-text ignored, so every rep decodes as many).
    pub max_tokens: u32,
    pub reps: usize,
    pub threads: Option<usize>,
    /// Documents the prompt is cut from (repeated when too short).
    pub corpus: Vec<String>,
    /// The endpoints of a `server` probe (`calibrate --fleet`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default)]
    pub server_api: engines::ServerApi,
}

/// Timings of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rep {
    pub tokenize_ms: f64,
    pub prefill_ms: f64,
    pub ttft_ms: f64,
    pub decode_tok_s: f64,
    pub total_ms: f64,
}

/// What the child reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub input_tokens: usize,
    /// Context the engine was opened with (input + output + a margin).
    pub n_ctx: usize,
    pub load_ms: f64,
    pub reps: Vec<Rep>,
    /// Peak RSS of the whole child process (load included).
    pub peak_rss_bytes: u64,
    pub backend_version: String,
    /// The model's trained context.
    pub train_context: usize,
    /// The context one sequence may use (a server's slot context).
    #[serde(default)]
    pub max_context: usize,
}

/// A probe as the parent saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub input_tokens: usize,
    pub n_ctx: usize,
    /// `false`: killed at the memory budget, or died without a report.
    pub fits: bool,
    /// Peak RSS: the child's own report, or the watchdog's last reading.
    pub peak_rss_bytes: u64,
    pub report: Option<ProbeReport>,
    pub note: Option<String>,
}

/// Context a probe of `input_tokens` opens the engine with.
pub fn probe_ctx(input_tokens: usize, max_tokens: u32) -> usize {
    input_tokens + max_tokens as usize + 16
}

/// Runs the probe in this process (the child side). Prints nothing; returns the report.
pub fn run_in_process(spec: &ProbeSpec) -> anyhow::Result<ProbeReport> {
    let n_ctx = probe_ctx(spec.input_tokens, spec.max_tokens);
    let mut cfg = EngineConfig::new(&spec.model);
    cfg.n_ctx = Some(u32::try_from(n_ctx)?);
    cfg.batch_size = 1;
    cfg.threads = spec.threads;
    cfg.constraint_backend = engines::ConstraintBackend::None;
    if !spec.servers.is_empty() {
        // A server's context is its own (set where it starts).
        cfg.n_ctx = None;
    }
    cfg.servers.clone_from(&spec.servers);
    cfg.server_api = spec.server_api;
    let engine = engines::load(spec.engine, &cfg)?;
    let text = text_of_tokens(engine.as_ref(), &spec.corpus, spec.input_tokens)?;
    let mut reps = Vec::with_capacity(spec.reps);
    for i in 0..spec.reps.max(1) {
        let mut req = Request::new(format!("probe{i}"), vec![ChatMessage::user(text.clone())], spec.max_tokens);
        req.ignore_eos = true;
        let out = engine
            .generate(std::slice::from_ref(&req))
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the engine returned no response to the probe"))??;
        reps.push(Rep {
            tokenize_ms: out.timings.tokenize_ms,
            prefill_ms: out.timings.prefill_ms,
            ttft_ms: out.timings.ttft_ms,
            decode_tok_s: out.timings.decode_tok_s(&out.tokens),
            total_ms: out.timings.total_ms,
        });
    }
    let info = engine.info();
    Ok(ProbeReport {
        input_tokens: spec.input_tokens,
        n_ctx,
        load_ms: info.load_ms,
        reps,
        peak_rss_bytes: engines::memory::peak_rss(),
        backend_version: info.backend_version.clone(),
        train_context: info.train_context,
        max_context: info.capabilities.max_context,
    })
}

/// A user message of `target` prompt tokens (template included), cut from `corpus` (repeated
/// as needed) by bisection on its length in characters.
fn text_of_tokens(engine: &dyn engines::Engine, corpus: &[String], target: usize) -> anyhow::Result<String> {
    let joined: String = if corpus.iter().all(|d| d.trim().is_empty()) {
        "This Agreement is entered into by and between the parties named below. ".repeat(64)
    } else {
        corpus.join("\n\n")
    };
    let count = |chars: usize| -> anyhow::Result<(String, usize)> {
        let text: String = joined.chars().cycle().take(chars).collect();
        let n = engine.count_tokens(&[ChatMessage::user(text.clone())])?;
        Ok((text, n))
    };
    let (mut lo, mut hi) = (1usize, target * 8 + 64);
    let mut best = count(lo)?;
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let (text, n) = count(mid)?;
        if n <= target {
            best = (text, n);
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(best.0)
}

/// Runs `spec` in a child (`exe probe`, the spec as JSON on stdin), killing it when its RSS passes `budget`.
pub fn spawn(exe: &std::path::Path, spec: &ProbeSpec, budget: u64, timeout: Duration) -> anyhow::Result<ProbeResult> {
    let n_ctx = probe_ctx(spec.input_tokens, spec.max_tokens);
    // The spec (with its corpus) goes through stdin: too long for an argument list.
    let mut child = Command::new(exe).arg("probe").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(serde_json::to_string(spec)?.as_bytes())?;
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let child = Arc::new(Mutex::new(child));
    let peak = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (peak, killed, done, child) = (peak.clone(), killed.clone(), done.clone(), child.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = engines::memory::process_rss(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                if peak.load(Ordering::Relaxed) > budget || t0.elapsed() > timeout {
                    killed.store(true, Ordering::Relaxed);
                    let _ = child.lock().unwrap_or_else(PoisonError::into_inner).kill();
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = err {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    let mut stdout = String::new();
    if let Some(mut o) = out {
        o.read_to_string(&mut stdout)?;
    }
    // stdout is closed: the child has exited or been killed, so waiting holds the lock briefly.
    let status = child.lock().unwrap_or_else(PoisonError::into_inner).wait()?;
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let stderr = err_reader.join().unwrap_or_default();
    let watched = peak.load(Ordering::Relaxed);
    if killed.load(Ordering::Relaxed) {
        let note = if watched > budget {
            format!("does not fit: RSS reached {} MiB, over the {} MiB budget (stopped)", watched >> 20, budget >> 20)
        } else {
            format!("stopped after the {} s probe timeout", timeout.as_secs())
        };
        return Ok(ProbeResult {
            input_tokens: spec.input_tokens,
            n_ctx,
            fits: false,
            peak_rss_bytes: watched,
            report: None,
            note: Some(note),
        });
    }
    let report = stdout.lines().rev().find_map(|l| serde_json::from_str::<ProbeReport>(l).ok());
    match report {
        Some(r) if status.success() => {
            let peak_rss_bytes = r.peak_rss_bytes.max(watched);
            let fits = peak_rss_bytes <= budget;
            let note =
                (!fits).then(|| format!("does not fit: peak {} MiB over the {} MiB budget", peak_rss_bytes >> 20, budget >> 20));
            Ok(ProbeResult { input_tokens: spec.input_tokens, n_ctx, fits, peak_rss_bytes, report: Some(r), note })
        }
        _ => {
            let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
            Ok(ProbeResult {
                input_tokens: spec.input_tokens,
                n_ctx,
                fits: false,
                peak_rss_bytes: watched,
                report: None,
                note: Some(format!("the probe failed ({status}): {tail}")),
            })
        }
    }
}
