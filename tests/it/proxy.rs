//! A small HTTP/1.1 proxy on 127.0.0.1 in front of the S3 server, for tests that need to
//! count requests or see what hubvault does when S3 misbehaves.
//!
//! ```ignore
//! let proxy = Proxy::s3();                         // in front of common::s3_endpoint()
//! let tb = TestBucket::s3();
//! proxy.inject("GET", "/sqlite.db", Fault::SlowDown, 2); // the next 2 matching requests
//! let out = run(proxy.cmd(&tb).args(["backup", "--db"]).arg(&db));
//! let b = proxy.bucket(&tb, settings);             // the library, through the proxy
//! proxy.requests();                                // [(method, path_and_query)], in order
//! proxy.reset();                                   // forget requests and rules
//! ```
//!
//! It runs on a runtime of its own (one thread), so it works whatever the test does
//! with its own runtime. Each request is read whole (head, then a `Content-Length` or
//! chunked body), forwarded on a fresh upstream connection, and the whole response is
//! read and sent back with a `Content-Length` (re-framed, so an upstream that closes
//! after each response still gives the client keep-alive). Bounded: heads to 64 KiB,
//! bodies to 256 MiB, idle client connections to 60 s, upstream exchanges to 60 s.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubvault::store::Bucket;
use hubvault::store::s3::S3Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Kind, TestBucket, s3_endpoint};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 256 * 1024 * 1024;
const IDLE: Duration = Duration::from_secs(60);
const UPSTREAM: Duration = Duration::from_secs(60);

/// What to do to a request that matches a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500 InternalError without forwarding.
    Status500,
    /// Answer 503 with S3's `SlowDown` XML without forwarding (throttling).
    SlowDown,
    /// Forward; send the response head and half the body (half the head if there is no
    /// body), then reset the connection (RST).
    ResetMidBody,
    /// Forward; hold the response this long before sending it (past a client timeout).
    Delay(Duration),
    /// Forward; send the head with the full `Content-Length` but only half the body
    /// (half the head if there is no body), then close cleanly (FIN).
    TruncatedBody,
    /// Forward; send the first half of the body with a `Content-Length` that agrees with
    /// it: a server that lies consistently. Only a checksum can catch this one.
    ShortBody,
    /// Answer 403 AccessDenied, without forwarding, to a write that starts an object
    /// (a PUT that is not a part, a POST that starts a multipart upload) and carries no
    /// `x-amz-server-side-encryption` header: what a bucket policy that requires
    /// encryption does on S3 (moto does not evaluate bucket policies). Others pass.
    DenyUnencrypted,
}

/// One request as the proxy saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    /// The status sent back (`None`: the connection was cut or timed out).
    pub status: Option<u16>,
    pub fault: Option<Fault>,
    /// The request's `x-amz-server-side-encryption` and its KMS key id header.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Bytes of the response body the server gave (before any fault cut it).
    pub body_bytes: usize,
}

/// Names a rule given to [`Proxy::inject`], to ask how often it fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleId(usize);

struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    remaining: usize,
    hits: usize,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    rules: Vec<Rule>,
    /// Bumped by `reset`, so a request still in flight from before cannot touch the log.
    generation: u64,
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy in front of the moto server started by scripts/test.
    pub fn s3() -> Proxy {
        Proxy::start(&s3_endpoint())
    }

    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let up = upstream
            .strip_prefix("http://")
            .expect("upstream is http://host:port")
            .trim_end_matches('/')
            .to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let (st, up) = (st.clone(), up.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &up, &st).await;
                });
            }
        });
        Proxy {
            addr,
            state,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT`: give this as `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen since the start or the last [`Proxy::reset`], in arrival order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log()
            .into_iter()
            .map(|s| (s.method, s.path_and_query))
            .collect()
    }

    /// As [`Proxy::requests`], with the status sent back and the fault applied.
    pub fn log(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Forgets the requests seen and every rule.
    pub fn reset(&self) {
        let mut s = self.state.lock().unwrap();
        s.seen.clear();
        s.rules.clear();
        s.generation += 1;
    }

    /// Applies `fault` to the next `times` requests whose method is `method` ("" for
    /// any) and whose path and query contain `path_contains`; later ones pass. Rules are
    /// tried in the order given; the first that still has uses wins.
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: usize) -> RuleId {
        let mut s = self.state.lock().unwrap();
        s.rules.push(Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            fault,
            remaining: times,
            hits: 0,
        });
        RuleId(s.rules.len() - 1)
    }

    /// How many requests the rule has been applied to.
    pub fn hits(&self, rule: RuleId) -> usize {
        self.state.lock().unwrap().rules[rule.0].hits
    }

    /// The binary with `tb`'s environment, talking to S3 through this proxy.
    pub fn cmd(&self, tb: &TestBucket) -> Command {
        assert_eq!(tb.kind, Kind::S3, "the proxy stands in front of S3 only");
        let mut c = tb.cmd();
        c.env("AWS_ENDPOINT_URL", self.url());
        c
    }

    /// The library's handle on `tb`, through this proxy, with `settings`' timeouts and
    /// retries (the endpoint is replaced by the proxy's).
    pub fn bucket(&self, tb: &TestBucket, settings: S3Settings) -> Bucket {
        assert_eq!(tb.kind, Kind::S3, "the proxy stands in front of S3 only");
        let s = S3Settings {
            endpoint: Some(self.url()),
            ..settings
        };
        Bucket::open_with(&tb.url, &s).unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Never blocks, so a proxy may be dropped inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Short settings for fault tests: 2 s per request, 3 retries, 10 s for all retries.
pub fn short_settings() -> S3Settings {
    S3Settings {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        retries: 3,
        retry_timeout: Duration::from_secs(10),
        ..crate::common::s3_settings()
    }
}

struct Message {
    head: Vec<u8>,
    /// Request line or status line, and the headers as (lowercase name, value).
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one client connection: requests one after another (keep-alive).
async fn serve(mut client: TcpStream, up: &str, st: &Mutex<State>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let req = match tokio::time::timeout(IDLE, read_message(&mut client, &mut buf, None)).await
        {
            Ok(Ok(Some(m))) => m,
            _ => return Ok(()),
        };
        let mut parts = req.start.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let (fault, index, generation) = {
            let mut s = st.lock().unwrap();
            let fault = s
                .rules
                .iter_mut()
                .find(|r| {
                    r.remaining > 0
                        && (r.method.is_empty() || r.method == method)
                        && target.contains(&r.path_contains)
                })
                .map(|r| {
                    r.remaining -= 1;
                    r.hits += 1;
                    r.fault
                });
            s.seen.push(Seen {
                method: method.clone(),
                path_and_query: target.clone(),
                status: None,
                fault,
                sse: req
                    .header("x-amz-server-side-encryption")
                    .map(str::to_string),
                sse_kms_key_id: req
                    .header("x-amz-server-side-encryption-aws-kms-key-id")
                    .map(str::to_string),
                body_bytes: 0,
            });
            (fault, s.seen.len() - 1, s.generation)
        };
        let set_status = |code: u16| {
            let mut s = st.lock().unwrap();
            if s.generation == generation {
                s.seen[index].status = Some(code);
            }
        };
        let close_after = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let starts_object = (method == "PUT" && !target.contains("partNumber="))
            || (method == "POST" && target.contains("uploads"));
        match fault {
            Some(Fault::DenyUnencrypted)
                if starts_object && req.header("x-amz-server-side-encryption").is_none() =>
            {
                set_status(403);
                send_error(&mut client, 403, "AccessDenied", "Access Denied").await?;
                continue;
            }
            Some(Fault::Status500) => {
                set_status(500);
                send_error(&mut client, 500, "InternalError", "injected").await?;
                continue;
            }
            Some(Fault::SlowDown) => {
                set_status(503);
                send_error(
                    &mut client,
                    503,
                    "SlowDown",
                    "Please reduce your request rate.",
                )
                .await?;
                continue;
            }
            _ => {}
        }

        let resp = match tokio::time::timeout(UPSTREAM, forward(up, &req, &method)).await {
            Ok(Ok(r)) => r,
            _ => {
                set_status(502);
                send_error(&mut client, 502, "BadGateway", "upstream failed").await?;
                continue;
            }
        };
        let status: u16 = resp
            .start
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(502);
        let bodiless = method == "HEAD" || status == 204 || status == 304 || status < 200;
        let body = resp.body.as_slice();
        let half = &body[..body.len() / 2];
        let head = head_bytes(&resp, body.len(), bodiless);
        // Where a response is cut: mid-body, or mid-head when it has no body (HEAD, an
        // empty PUT response), so the cut is always a fault the client must notice.
        let cut: Vec<u8> = if bodiless || body.is_empty() {
            head[..head.len() / 2].to_vec()
        } else {
            [head.as_slice(), half].concat()
        };
        // Recorded before the first byte goes out: once the client has the response, the
        // log already says what was sent (a test may read it the moment its call returns).
        {
            let mut s = st.lock().unwrap();
            if s.generation == generation {
                s.seen[index].body_bytes = if bodiless { 0 } else { body.len() };
            }
        }
        set_status(status);
        match fault {
            Some(Fault::ResetMidBody) => {
                client.write_all(&cut).await?;
                client.flush().await?;
                // Let the bytes leave before the RST, so the client is mid-response.
                tokio::time::sleep(Duration::from_millis(50)).await;
                client.set_zero_linger()?;
                return Ok(());
            }
            Some(Fault::TruncatedBody) => {
                client.write_all(&cut).await?;
                client.shutdown().await?;
                return Ok(());
            }
            Some(Fault::ShortBody) => {
                client
                    .write_all(&head_bytes(&resp, half.len(), bodiless))
                    .await?;
                client.write_all(half).await?;
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                client
                    .write_all(&head_bytes(&resp, body.len(), bodiless))
                    .await?;
                client.write_all(body).await?;
            }
            _ => {
                client
                    .write_all(&head_bytes(&resp, body.len(), bodiless))
                    .await?;
                if !bodiless {
                    client.write_all(body).await?;
                }
            }
        }
        client.flush().await?;
        if close_after {
            return Ok(());
        }
    }
}

/// Sends `req` on a fresh connection to `up` and reads the whole response.
async fn forward(up: &str, req: &Message, method: &str) -> std::io::Result<Message> {
    let mut conn = TcpStream::connect(up).await?;
    conn.write_all(&req.head).await?;
    conn.write_all(&req.body).await?;
    conn.flush().await?;
    let mut buf = Vec::new();
    read_message(&mut conn, &mut buf, Some(method))
        .await?
        .ok_or_else(|| std::io::Error::other("upstream closed without a response"))
}

/// The response head with hop-by-hop framing replaced by `Content-Length: len`
/// (kept as sent for bodiless responses, where it describes the object).
fn head_bytes(resp: &Message, len: usize, bodiless: bool) -> Vec<u8> {
    let mut out = format!("{}\r\n", resp.start);
    for (n, v) in &resp.headers {
        let framing = n == "content-length" || n == "transfer-encoding" || n == "connection";
        if framing && !(bodiless && n == "content-length") {
            continue;
        }
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !bodiless {
        out.push_str(&format!("content-length: {len}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

async fn send_error(
    client: &mut TcpStream,
    status: u16,
    code: &str,
    message: &str,
) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>proxy</RequestId></Error>"
    );
    let reason = match status {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Slow Down",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.flush().await
}

/// Reads one HTTP/1.x message. `buf` carries bytes read past the previous message.
/// `response_to`: the request's method when reading a response (decides whether a body
/// follows, and allows a body delimited by the connection's end). `None` when the peer
/// closed cleanly before a new message.
async fn read_message(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    response_to: Option<&str>,
) -> std::io::Result<Option<Message>> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("head too long"));
        }
        if read_more(conn, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("closed inside a head"))
            };
        }
    };
    let head: Vec<u8> = buf.drain(..head_end).collect();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let status: Option<u16> =
        response_to.and_then(|_| start.split_whitespace().nth(1)?.parse().ok());
    let no_body = match (response_to, status) {
        (Some(m), Some(s)) => m == "HEAD" || s == 204 || s == 304 || s < 200,
        _ => false,
    };
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if no_body {
        Vec::new()
    } else if chunked {
        read_chunked(conn, buf).await?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        while buf.len() < len {
            if read_more(conn, buf).await? == 0 {
                return Err(bad("closed inside a body"));
            }
        }
        buf.drain(..len).collect()
    } else if response_to.is_some() {
        // A response without framing ends with the connection.
        while read_more(conn, buf).await? > 0 {
            if buf.len() > MAX_BODY {
                return Err(bad("body too large"));
            }
        }
        std::mem::take(buf)
    } else {
        Vec::new()
    };
    Ok(Some(Message {
        head,
        start,
        headers,
        body,
    }))
}

async fn read_chunked(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD || read_more(conn, buf).await? == 0 {
                return Err(bad("bad chunk size line"));
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        buf.drain(..line_end + 2);
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                if let Some(i) = find(buf, b"\r\n") {
                    let empty = i == 0;
                    buf.drain(..i + 2);
                    if empty {
                        return Ok(body);
                    }
                } else if read_more(conn, buf).await? == 0 {
                    return Err(bad("closed inside trailers"));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("body too large"));
        }
        while buf.len() < size + 2 {
            if read_more(conn, buf).await? == 0 {
                return Err(bad("closed inside a chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    let n = conn.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

mod tests {
    use hubvault::store::bucket::WriteMode;
    use object_store::path::Path;

    use super::*;
    use crate::common::{connector_db, json_of, rt, run};

    #[test]
    fn proxy_counts_the_requests_of_a_backup_by_method_and_path() {
        let proxy = Proxy::s3();
        let tb = TestBucket::s3();
        let hub = tempfile::tempdir().unwrap();
        let (db, spec) = connector_db(hub.path(), "sdc", 50);
        let out = json_of(
            &run(proxy.cmd(&tb).args(["backup", "--json", "--db"]).arg(&db)),
            0,
        );
        assert_eq!(out["decision"], "uploaded");
        let canonical = format!(
            "/{}/acme/datahub/{}/connector/{}/sqlite.db",
            tb.name, spec.datahub, spec.connector
        );
        let reqs = proxy.requests();
        assert_eq!(reqs[0], ("HEAD".to_string(), canonical.clone()), "{reqs:?}");
        assert!(
            reqs.contains(&("PUT".to_string(), canonical.clone())),
            "{reqs:?}"
        );
        assert!(
            proxy
                .log()
                .iter()
                .all(|s| s.status.is_some() && s.fault.is_none())
        );

        // A fresh backup is one HEAD, and reset() starts the count again.
        proxy.reset();
        json_of(
            &run(proxy.cmd(&tb).args(["backup", "--json", "--db"]).arg(&db)),
            0,
        );
        assert_eq!(proxy.requests(), vec![("HEAD".to_string(), canonical)]);
    }

    #[test]
    fn proxy_applies_a_rule_the_given_number_of_times_then_passes() {
        let proxy = Proxy::s3();
        let tb = TestBucket::s3();
        let b = proxy.bucket(&tb, short_settings());
        let key = Path::from("acme/x/latest.json");
        let rule = proxy.inject("GET", "latest.json", Fault::Status500, 2);
        let got = rt().block_on(async {
            b.put_bytes(&key, &b"{}"[..], WriteMode::Overwrite)
                .await
                .unwrap();
            b.get_bytes(&key).await.unwrap()
        });
        assert_eq!(&got[..], b"{}");
        assert_eq!(proxy.hits(rule), 2);
        let gets: Vec<Option<u16>> = proxy
            .log()
            .into_iter()
            .filter(|s| s.method == "GET")
            .map(|s| s.status)
            .collect();
        assert_eq!(gets, vec![Some(500), Some(500), Some(200)]);
    }
}
