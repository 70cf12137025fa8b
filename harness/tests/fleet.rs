//! `--engine server:URL,...`: the candidate on a fleet of real llama-servers (`SmolLM2`, one slot
//! and one thread each) on 127.0.0.1, started and stopped by the tests. A few examples each:
//! the routing rules themselves are unit-tested in `engines/src/remote/fleet.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{command_env, cuad_mini, records, repo, require_model, stderr};

fn models_dir() -> PathBuf {
    harness::models::cache_dir().join("models")
}

/// The llama-server binary `scripts/build-llama-cpp.sh` builds (and caches); fails, never
/// skips, when it cannot.
fn server_bin() -> PathBuf {
    let out = Command::new(repo().join("scripts/build-llama-cpp.sh")).arg("llama-server").output().expect("bash runs");
    assert!(
        out.status.success(),
        "llama-server is not built and could not be: run scripts/build-llama-cpp.sh llama-server\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("llama-server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET on 127.0.0.1 with a plain socket: (status, body); `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// A llama-server serving `model` with one slot and one thread; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(model: &Path) -> Server {
        assert!(model.exists(), "{} missing: run scripts/setup.sh", model.display());
        let port = free_port();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("promptloop-fleet-{port}.log"))).unwrap();
        // --no-jinja: llama.cpp's built-in template detection, as the in-process engine uses.
        let child = Command::new(server_bin())
            .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", "1", "-t", "1", "-c", "8192", "--no-jinja", "--metrics", "--no-webui"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("llama-server starts");
        let mut server = Server { child, port };
        let t0 = Instant::now();
        while get(port, "/health").map(|r| r.0) != Some(200) {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "llama-server on port {port} exited; see its log in the temp dir"
            );
            assert!(t0.elapsed() < Duration::from_secs(120), "llama-server on port {port} not healthy within 120 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A counter of `/metrics` (`llamacpp:NAME`), 0 when absent.
    fn metric(&self, name: &str) -> f64 {
        let (_, body) = get(self.port, "/metrics").unwrap_or_default();
        let prefix = format!("llamacpp:{name} ");
        body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A listener that answers every request with `200 OK` and a body that is not JSON.
struct Garbage {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Garbage {
    fn start() -> Garbage {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 16384];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!");
            }
        });
        Garbage { port, stop }
    }
}

impl Drop for Garbage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn smollm() -> PathBuf {
    models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn eval_args(urls: &[String], limit: usize, out: &Path) -> Vec<String> {
    api_eval_args("server", urls, limit, out)
}

/// `eval` args for the `api:` dialect (`server` or `openai`).
fn api_eval_args(api: &str, urls: &[String], limit: usize, out: &Path) -> Vec<String> {
    let task = cuad_mini();
    [
        "eval",
        "--task",
        task.to_str().unwrap(),
        "--split",
        "dev",
        "--limit",
        &limit.to_string(),
        "--engine",
        &format!("{api}:{}", urls.join(",")),
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn eval(urls: &[String], limit: usize, out: &Path) -> std::process::Output {
    let args = eval_args(urls, limit, out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command_env(&args, &[]).output().expect("promptloop runs")
}

/// (id, output) of each record, checking every example was scored once and without error.
fn outputs(path: &Path, n: usize) -> Vec<(String, String)> {
    let recs = records(path);
    assert_eq!(recs.len(), n, "one record per example");
    let mut ids: Vec<&str> = recs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), n, "every example scored once");
    for r in &recs {
        assert!(r["error"].is_null(), "example {} failed: {}", r["id"], r["error_detail"]);
    }
    recs.iter().map(|r| (r["id"].as_str().unwrap().to_owned(), r["output"].as_str().unwrap().to_owned())).collect()
}

/// The two `SmolLM2` llama-servers `scripts/test.sh` starts for the tests (`PROMPTLOOP_FLEET`:
/// one slot and one thread each), or two started here when it is not set.
struct Fleet {
    urls: Vec<String>,
    _own: Vec<Server>,
}

fn fleet() -> Fleet {
    if let Ok(list) = std::env::var("PROMPTLOOP_FLEET") {
        let urls: Vec<String> = list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        assert!(urls.len() >= 2, "PROMPTLOOP_FLEET names two llama-servers: {list}");
        for u in &urls {
            assert_eq!(get(port_of(u), "/health").map(|r| r.0), Some(200), "{u} (PROMPTLOOP_FLEET) is not healthy");
        }
        return Fleet { urls, _own: Vec::new() };
    }
    let own = vec![Server::start(&smollm()), Server::start(&smollm())];
    Fleet { urls: own.iter().map(Server::url).collect(), _own: own }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("http://127.0.0.1:PORT")
}

/// A counter of a server's `/metrics` (`llamacpp:NAME`), 0 when absent.
fn metric(url: &str, name: &str) -> f64 {
    let (_, body) = get(port_of(url), "/metrics").unwrap_or_default();
    let prefix = format!("llamacpp:{name} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// Examples in cuad-mini's dev split.
fn dev_size() -> usize {
    harness::task::Task::load(&cuad_mini()).unwrap_or_else(|e| panic!("{e}")).splits["dev"].examples.len()
}

#[test]
fn two_servers_share_a_pass_and_answer_like_one() {
    require_model();
    let fleet = fleet();
    let (a, b) = (&fleet.urls[0], &fleet.urls[1]);
    let n = dev_size();
    let tmp = tempfile::tempdir().unwrap();
    let two = tmp.path().join("two.jsonl");
    let before = (metric(a, "tokens_predicted_total"), metric(b, "tokens_predicted_total"));
    let out = eval(&[a.clone(), b.clone()], n, &two);
    assert!(out.status.success(), "{}", stderr(&out));
    let (pa, pb) = (metric(a, "tokens_predicted_total") - before.0, metric(b, "tokens_predicted_total") - before.1);
    assert!(pa > 0.0 && pb > 0.0, "both servers decoded: {pa} and {pb} tokens");
    let one = tmp.path().join("one.jsonl");
    let out = eval(std::slice::from_ref(b), n, &one);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outputs(&two, n), outputs(&one, n), "the fleet's outputs are one server's, example for example");
}

/// `calibrate --fleet` probes an endpoint into the routing table; `--engine auto` over it sends
/// each example to the engine the table predicts fastest among those that fit: with the
/// in-process engine's threshold lowered to 1200 tokens (a small context), the short contracts
/// run in-process and the long ones on the server.
#[test]
fn auto_routes_short_inputs_in_process_and_long_ones_to_the_server() {
    use engines::EngineKind;
    use harness::calibrate::{Route, RoutingTable};
    const SMALL: usize = 1200;
    require_model();
    let fleet = fleet();
    let url = &fleet.urls[0];
    let tmp = tempfile::tempdir().unwrap();
    let table_path = tmp.path().join("routing.toml");
    let args = ["calibrate", "--engines", "llama", "--fleet", &format!("server:{url}"), "--max-input", "512", "--reps", "1"];
    let mut args = args.to_vec();
    args.extend(["--out", table_path.to_str().unwrap(), "--json"]);
    let out = command_env(&args, &[]).output().expect("promptloop runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut table = RoutingTable::load(&table_path).unwrap();
    let server = table.engines.iter().find(|e| e.kind == EngineKind::Server).expect("the endpoint is in the table");
    assert_eq!(server.servers, std::slice::from_ref(url));
    // Bounded by the server's slot context (-c 8192, one slot), not by this machine's memory.
    assert!(server.max_input_tokens > 4000 && server.max_input_tokens < 8192, "{}", server.max_input_tokens);
    assert!(server.decode_tok_s > 0.0 && server.points.iter().filter(|p| p.fits).count() >= 2, "{server:?}");
    let local = table.engines.iter_mut().find(|e| e.kind == EngineKind::Llama).expect("llama is calibrated");
    local.max_input_tokens = SMALL;
    table.save(&table_path).unwrap();

    let n = dev_size();
    let records_path = tmp.path().join("auto.jsonl");
    let task = cuad_mini();
    let args = ["eval", "--task", task.to_str().unwrap(), "--split", "dev", "--engine", "auto", "--json"];
    let mut args = args.to_vec();
    args.extend(["--routing", table_path.to_str().unwrap(), "--out", records_path.to_str().unwrap()]);
    let out = command_env(&args, &[]).output().expect("promptloop runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let recs = records(&records_path);
    assert_eq!(recs.len(), n);
    let available = [EngineKind::Llama, EngineKind::Server];
    let (mut in_process, mut on_server) = (0, 0);
    for r in &recs {
        assert!(r["error"].is_null(), "{}: {}", r["id"], r["error_detail"]);
        let input = r["tokens"]["input"].as_u64().unwrap() as usize;
        let engine = r["engine"].as_str().unwrap_or_else(|| panic!("{} names no engine", r["id"]));
        // Token counts of the two sides may differ by a token or two at the edges.
        if input + 8 < SMALL {
            let Route::Engine(expected) = table.route(input, &available) else { panic!("{input} tokens fit the table") };
            assert_eq!(engine, expected.to_string(), "{} ({input} tokens)", r["id"]);
        } else if input > SMALL + 8 {
            assert_eq!(engine, "server", "{} ({input} tokens) is past the in-process threshold", r["id"]);
        }
        if engine == "llama" {
            in_process += 1;
        } else {
            on_server += 1;
        }
    }
    assert!(in_process > 0 && on_server > 0, "short inputs in-process ({in_process}), long ones on the server ({on_server})");
    assert_eq!(summary["routed"]["llama"].as_u64(), Some(in_process), "{summary}");
    assert_eq!(summary["routed"]["server"].as_u64(), Some(on_server), "{summary}");
}

/// An optimize run on the fleet, killed (`SIGKILL`) part way and resumed: nothing already logged is run
/// again, and the run ends.
#[test]
fn an_optimize_run_on_the_fleet_killed_and_resumed_reruns_nothing_logged() {
    require_model();
    let fleet = fleet();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let task = cuad_mini();
    let engine = format!("server:{}", fleet.urls.join(","));
    let args = [
        "optimize",
        "--task",
        task.to_str().unwrap(),
        "--optimizer",
        "none",
        "--proposer",
        "demos",
        "--engine",
        &engine,
        "--out",
        dir.to_str().unwrap(),
        "--json",
        "--limit-train",
        "4",
        "--limit-dev",
        "3",
        "--limit-test",
        "2",
        "--max-iterations",
        "1",
        "--candidates",
        "2",
        "--demos",
        "1",
    ];
    let mut child = command_env(&args, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let evals = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p.join("run.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["type"] == "eval")
            .collect()
    };
    // Killed after a random number of evals, within the baseline's 9 (4 + 3 + 2).
    let kill_after = crate::support::random_in(2, 8, "evals logged before the kill");
    let t0 = Instant::now();
    while evals(&dir).len() < kill_after {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the kill");
        assert!(t0.elapsed() < Duration::from_secs(600), "no progress on the fleet");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = evals(&dir);
    let out = command_env(&["optimize", "--resume", dir.to_str().unwrap(), "--json"], &[]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = evals(&dir);
    assert_eq!(&after[..before.len()], &before[..], "the logged evals are kept as they were");
    let key = |e: &serde_json::Value| {
        (e["instruction_sha256"].to_string(), e["split"].to_string(), e["record"]["id"].to_string(), e["engine_key"].to_string())
    };
    let mut keys: Vec<_> = after.iter().map(key).collect();
    keys.sort();
    let total = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), total, "no eval is run twice");
    let last: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["evals_run"].as_u64(), Some((after.len() - before.len()) as u64), "{last}");
    let log = std::fs::read_to_string(dir.join("run.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"type\":\"final\""), "the resumed run ends");
}

#[test]
fn a_server_killed_mid_pass_leaves_the_pass_to_the_other() {
    require_model();
    let (a, mut b) = (Server::start(&smollm()), Server::start(&smollm()));
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("out.jsonl");
    let args = eval_args(&[a.url(), b.url()], 4, &path);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = command_env(&args, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Killed while it works on its first request.
    let t0 = Instant::now();
    while b.metric("requests_processing") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(300), "server b never got a request");
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&b.url()) && err.contains("taken out of the fleet"), "the failover is logged: {err}");
    outputs(&path, 4);
    assert!(a.metric("tokens_predicted_total") > 0.0);
}

#[test]
fn bad_urls_another_model_and_garbage_are_clear_errors() {
    require_model();
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("out.jsonl");
    // Nothing listening: exit 2 at start, naming the URL.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let out = eval(std::slice::from_ref(&nobody), 1, &out_path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&nobody) && err.contains("no llama-server"), "{err}");
    // Not a URL: exit 2.
    let out = eval(&["ftp://127.0.0.1:1".to_owned()], 1, &out_path);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("expected http://"), "{}", stderr(&out));
    // Garbage: exit 2 when it is the only endpoint; left out beside a good one.
    let garbage = Garbage::start();
    let junk = format!("http://127.0.0.1:{}", garbage.port);
    let out = eval(std::slice::from_ref(&junk), 1, &out_path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/props reply is not the JSON expected") && err.contains("not json!"), "{err}");
    let good = Server::start(&smollm());
    let out = eval(&[junk, good.url()], 1, &out_path);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("left out of the fleet"), "{}", stderr(&out));
    outputs(&out_path, 1);
    drop(good);
    // Another model: exit 2, naming the server's file.
    let gemma = Server::start(&models_dir().join("gemma-3-270m-q4_k_m.gguf"));
    let out = eval(&[gemma.url()], 1, &out_path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gemma-3-270m-q4_k_m.gguf") && err.contains("not ") && !err.contains("panicked"), "{err}");
}

#[test]
fn an_openai_compatible_endpoint_answers_like_the_native_api() {
    require_model();
    let server = Server::start(&smollm());
    let tmp = tempfile::tempdir().unwrap();
    let run = |api: &str, path: &Path| {
        let args = api_eval_args(api, &[server.url()], 3, path);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = command_env(&args, &[]).output().expect("promptloop runs");
        assert!(out.status.success(), "{api}: {}", stderr(&out));
    };
    let (native, openai) = (tmp.path().join("native.jsonl"), tmp.path().join("openai.jsonl"));
    run("server", &native);
    run("openai", &openai);
    // The same template, tokens, grammar and greedy decoding behind /v1/chat/completions.
    assert_eq!(outputs(&openai, 3), outputs(&native, 3), "openai: and server: agree example for example");
    for r in records(&openai) {
        assert!(r["tokens"]["input"].as_u64().unwrap() > 100, "prompt tokens from `usage`: {}", r["tokens"]);
        assert!(r["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    }
    // A URL serving no OpenAI API (garbage): exit 2, naming what it answered.
    let garbage = Garbage::start();
    let junk = format!("http://127.0.0.1:{}", garbage.port);
    let args = api_eval_args("openai", std::slice::from_ref(&junk), 1, &tmp.path().join("junk.jsonl"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = command_env(&args, &[]).output().expect("promptloop runs");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/v1/models reply is not the JSON expected") && !err.contains("panicked"), "{err}");
}

/// Contracts of cuad-mini dev the parity test runs on each side (about 20 s each per side on
/// one thread).
const PARITY_EXAMPLES: usize = 4;

/// Engine parity (docs/fleet.md, "Engine parity"): the in-process llama engine and a llama-server
/// serving the same GGUF get the same prompt tokens, the same compact-JSON constraint
/// (llguidance in process, its GBNF translation on the server) and greedy decoding, and both
/// write compact JSON (before, the server's own grammar from `json_schema` let it start every
/// answer with a newline). Token-for-token agreement is not reached yet: measured 2026-12-06,
/// 0 of these 4 contracts gave identical text (they part at the first value); the test prints
/// the count and asserts what holds: equal prompts, equal JSON layout, identical token counts
/// wherever the text is identical.
#[test]
fn in_process_and_a_llama_server_answer_alike_on_cuad_mini_dev() {
    require_model();
    let fleet = fleet();
    let n = PARITY_EXAMPLES.min(dev_size());
    let tmp = tempfile::tempdir().unwrap();
    let server = tmp.path().join("server.jsonl");
    let out = eval(std::slice::from_ref(&fleet.urls[0]), n, &server);
    assert!(out.status.success(), "{}", stderr(&out));
    let local = tmp.path().join("llama.jsonl");
    let task = cuad_mini();
    let args = ["eval", "--task", task.to_str().unwrap(), "--split", "dev", "--limit", &n.to_string()];
    let mut args = args.to_vec();
    // No fast-forward: the server picks every token itself, so forced tokens (the tokenizer's
    // canonical split of a key) could differ from its picks and move the rest.
    args.extend(["--engine", "llama", "--threads", "1", "--fast-forward", "off", "--json", "--out", local.to_str().unwrap()]);
    let out = command_env(&args, &[]).output().expect("promptloop runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (records(&local), records(&server));
    assert_eq!((a.len(), b.len()), (n, n));
    let mut same = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["id"], y["id"]);
        assert_eq!(x["tokens"]["input"], y["tokens"]["input"], "{}: the same prompt tokens", x["id"]);
        for r in [x, y] {
            let text = r["output"].as_str().unwrap();
            assert!(!text.contains('\n'), "{} ({}): compact JSON, no newline: {text}", r["id"], r["engine"]);
        }
        if x["output"] == y["output"] {
            assert_eq!(x["tokens"]["output"], y["tokens"]["output"], "{}: the same text in as many tokens", x["id"]);
            same.push(x["id"].as_str().unwrap().to_owned());
        }
    }
    eprintln!("engine parity: in-process and server outputs identical on {} of {n} contracts: {same:?}", same.len());
}
