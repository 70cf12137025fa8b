//! A fault-injecting HTTP/1.1 proxy for the optimizer client tests: std threads, one request
//! per connection, every answer `Connection: close`.
//!
//! [`FaultProxy::push`] queues a [`Fault`] for the next request (FIFO; an empty queue passes
//! requests through to the upstream). [`FaultProxy::requests`] lists what arrived and what was
//! done with it. [`FaultProxy::set_down`] closes the listener (new connections are refused) and
//! re-binds the same port. Requests must carry `Content-Length` (no chunked request bodies);
//! chunked upstream answers are de-chunked.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the upstream and relay its answer.
    Pass,
    /// 429 with `Retry-After: retry_after_s` and a small JSON error body.
    RateLimit { retry_after_s: u64 },
    /// This 5xx status with a small JSON error body.
    ServerError(u16),
    /// Any status with this body.
    Status(u16, String),
    /// Read the request, send nothing for this long, then close.
    Hang(Duration),
    /// Forward, then relay the upstream status and headers with only the first half of the body
    /// (and a `Content-Length` that matches it).
    TruncateBody,
    /// Read the request, then close without answering.
    Drop,
}

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Lower-case hex SHA-256 of the request body.
    pub body_sha256: String,
    /// What was done with it.
    pub action: Fault,
    /// The upstream's status, for forwarded requests that got one.
    pub upstream_status: Option<u16>,
    /// When the whole request had arrived.
    pub at: Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    faults: Mutex<VecDeque<Fault>>,
    seen: Mutex<Vec<Seen>>,
}

/// The proxy; it stops listening when dropped (connection threads already running finish).
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let authority = upstream.trim().trim_start_matches("http://").split('/').next().unwrap_or_default();
        assert!(
            !authority.is_empty() && !upstream.starts_with("https://"),
            "upstream must be http://HOST:PORT, got `{upstream}`"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = FaultProxy { addr, upstream: authority.to_owned(), shared: Arc::default(), acceptor: None };
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a fault for the next request that has none.
    pub fn push(&self, fault: Fault) {
        lock(&self.shared.faults).push_back(fault);
    }

    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// `true`: close the listener, so new connections are refused. `false`: listen again on the
    /// same port.
    pub fn set_down(&mut self, down: bool) {
        if down {
            self.stop();
        } else if self.acceptor.is_none() {
            let listener = TcpListener::bind(self.addr).unwrap_or_else(|e| panic!("re-bind the proxy on {}: {e}", self.addr));
            self.serve(listener);
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, upstream, flag) = (Arc::clone(&self.shared), self.upstream.clone(), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (shared, upstream) = (Arc::clone(&shared), upstream.clone());
                        std::thread::spawn(move || handle(stream, &upstream, &shared));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => panic!("proxy accept failed: {e}"),
                }
            }
            // The listener drops here: the port refuses connections from now on.
        });
        self.acceptor = Some((stop, handle));
    }

    fn stop(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            handle.join().expect("proxy accept thread");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request or response: the head's first line, its headers, and its body.
struct Parts {
    first: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parts {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Serialized with `Connection: close` and an exact `Content-Length`.
    fn to_bytes(&self, host: Option<&str>) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first);
        for (name, value) in &self.headers {
            let skip = ["connection", "keep-alive", "content-length", "transfer-encoding"].contains(&name.as_str())
                || (host.is_some() && name == "host");
            if !skip {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        if let Some(host) = host {
            let _ = write!(out, "host: {host}\r\n");
        }
        let _ = write!(out, "content-length: {}\r\nconnection: close\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Splits a head (up to `\r\n\r\n`) into its first line and lower-cased headers.
fn parse_head(head: &[u8]) -> Option<(String, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((first, headers))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Reads one request: the head, then `Content-Length` bytes of body.
fn read_request(stream: &mut TcpStream) -> Option<Parts> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let (first, headers) = parse_head(&buf[..end])?;
    let mut parts = Parts { first, headers, body: buf[end + 4..].to_vec() };
    let len: usize = parts.header("content-length").map_or(Some(0), |v| v.parse().ok())?;
    while parts.body.len() < len {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        parts.body.extend_from_slice(&chunk[..n]);
    }
    parts.body.truncate(len);
    Some(parts)
}

/// Parses a whole response read to EOF, de-chunking a chunked body.
fn parse_response(raw: &[u8]) -> Option<Parts> {
    let end = find_head_end(raw)?;
    let (first, headers) = parse_head(&raw[..end])?;
    let mut parts = Parts { first, headers, body: raw[end + 4..].to_vec() };
    if parts.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        parts.body = dechunk(&parts.body)?;
    } else if let Some(len) = parts.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        parts.body.truncate(len);
    }
    Some(parts)
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?.split(';').next()?.trim().to_owned();
        let size = usize::from_str_radix(&size_text, 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// Sends the request upstream with `Connection: close` and reads the answer to EOF.
fn forward(req: &Parts, upstream: &str) -> io::Result<Parts> {
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    up.write_all(&req.to_bytes(Some(upstream)))?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "upstream answer is not HTTP"))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn canned(status: u16, extra: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
    Parts { first: format!("HTTP/1.1 {status} {}", reason(status)), headers, body: body.as_bytes().to_vec() }.to_bytes(None)
}

fn handle(mut client: TcpStream, upstream: &str, shared: &Shared) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(req) = read_request(&mut client) else { return };
    let fault = lock(&shared.faults).pop_front().unwrap_or(Fault::Pass);
    let mut words = req.first.split_whitespace();
    let seen = Seen {
        method: words.next().unwrap_or_default().to_owned(),
        path: words.next().unwrap_or_default().to_owned(),
        headers: req.headers.clone(),
        body_sha256: Sha256::digest(&req.body).iter().fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        }),
        action: fault.clone(),
        upstream_status: None,
        at: Instant::now(),
    };
    // Recorded on arrival, so a hanging request is visible while it hangs.
    let index = {
        let mut all = lock(&shared.seen);
        all.push(seen);
        all.len() - 1
    };
    let answer = match fault {
        Fault::Pass | Fault::TruncateBody => match forward(&req, upstream) {
            Ok(mut resp) => {
                let status = resp.first.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                lock(&shared.seen)[index].upstream_status = status;
                if fault == Fault::TruncateBody {
                    resp.body.truncate(resp.body.len() / 2);
                }
                resp.to_bytes(None)
            }
            Err(e) => canned(502, &[], &format!(r#"{{"error":{{"message":"proxy: upstream {upstream}: {e}"}}}}"#)),
        },
        Fault::RateLimit { retry_after_s } => canned(
            429,
            &[("retry-after", retry_after_s.to_string())],
            r#"{"error":{"type":"rate_limit_error","message":"proxy: rate limited"}}"#,
        ),
        Fault::ServerError(status) => {
            canned(status, &[], r#"{"error":{"type":"server_error","message":"proxy: injected failure"}}"#)
        }
        Fault::Status(status, body) => canned(status, &[], &body),
        Fault::Hang(d) => {
            std::thread::sleep(d);
            return;
        }
        Fault::Drop => return,
    };
    let _ = client.write_all(&answer);
    let _ = client.flush();
}
