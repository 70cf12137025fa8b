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

#[test]
fn two_servers_share_a_pass_and_answer_like_one() {
    require_model();
    let (a, b) = (Server::start(&smollm()), Server::start(&smollm()));
    let tmp = tempfile::tempdir().unwrap();
    let two = tmp.path().join("two.jsonl");
    let out = eval(&[a.url(), b.url()], 4, &two);
    assert!(out.status.success(), "{}", stderr(&out));
    let (pa, pb) = (a.metric("tokens_predicted_total"), b.metric("tokens_predicted_total"));
    assert!(pa > 0.0 && pb > 0.0, "both servers decoded: {pa} and {pb} tokens");
    let one = tmp.path().join("one.jsonl");
    let out = eval(&[b.url()], 4, &one);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(outputs(&two, 4), outputs(&one, 4), "the fleet's outputs are one server's, example for example");
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
