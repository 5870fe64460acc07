//! A fault-injecting HTTP proxy in front of a real ClickHouse, for `tests/faults.rs`.
//!
//! Every request is forwarded (method, path, query string, headers, body) to the upstream
//! ClickHouse with reqwest and its answer returned as is, unless the current [`Mode`] says
//! otherwise. The proxy records what it saw (mode, the table of an `INSERT`, its
//! `insert_deduplication_token`, the status it answered), so a test can count attempts per
//! batch: a retried insert carries the same token again. It lives until the test process ends.

// Each test binary compiles its own copy and uses only part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Wait this long before forwarding each request (a slow ClickHouse).
    Delay(Duration),
    /// Answer every `INSERT` with HTTP 500 and ClickHouse's `Code: 117` (INCORRECT_DATA)
    /// error, as a real server does for data it cannot parse. Other queries pass.
    BadData,
    /// Answer every `INSERT` with a bare `503 Service Unavailable` (no ClickHouse code), as a
    /// load balancer in front of a restarting ClickHouse does. Other queries pass.
    Unavailable,
    /// Forward every `INSERT` (it lands in ClickHouse), then answer `502 Bad Gateway` as if
    /// the connection broke before the answer came back: the writer must retry, and the
    /// retry must not double the rows. Other queries pass.
    LoseAnswer,
    /// Accept every `INSERT` (its body is read) and never answer, as a stuck node or a
    /// half-open connection does. Nothing lands. Other queries pass.
    Hang,
    /// Forward every `INSERT` (it lands), then answer `200` with the upstream's body one byte
    /// per this interval and never end it: a ClickHouse (or a proxy in front) trickling its
    /// answer. The writer must give up on the attempt and retry it with the same token.
    Trickle(Duration),
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub mode: Mode,
    /// `Some(table)` for an `INSERT INTO table(...)`.
    pub insert_into: Option<String>,
    /// The `insert_deduplication_token` setting of the request, if any.
    pub token: Option<String>,
    /// The status the proxy answered (0: the upstream could not be reached).
    pub status: u16,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
}

/// A running proxy.
#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
}

/// What a real ClickHouse 26.9 answers for a RowBinary insert it cannot parse.
pub const CODE_117_BODY: &str = "Code: 117. DB::Exception: Cannot read all data. Bytes read: 3. Bytes expected: 8.: \
(at row 1)\n: While executing BinaryRowInputFormat. (INCORRECT_DATA) (version 26.9.0.1 (official build))\n";

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`http://host:port`).
    /// It runs on a thread and runtime of its own, so a test may block its own runtime (a
    /// capture guard's flush) while the pipeline still talks through the proxy.
    pub fn start(upstream: &str) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().pool_max_idle_per_host(8).build().expect("reqwest client"),
            mode: Mutex::new(Mode::Pass),
            seen: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
                    axum::serve(listener, app).await.expect("proxy serves")
                })
            })
            .expect("proxy thread");
        FaultProxy { url, shared }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Everything seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The inserts seen while in `mode`.
    pub fn inserts_in(&self, mode: Mode) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.mode == mode && s.insert_into.is_some()).collect()
    }
}

/// `Some(table)` when `sql` is an `INSERT INTO table ...`.
fn insert_table(sql: &str) -> Option<String> {
    let rest = sql.trim_start().strip_prefix("INSERT INTO ")?;
    let end = rest.find(|c: char| c == '(' || c.is_whitespace()).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('`').to_owned())
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let mode = *shared.mode.lock().unwrap();
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap_or_default();
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let insert_into = param("query").as_deref().and_then(insert_table);
    let token = param("insert_deduplication_token");
    // The whole body first, as ClickHouse would (an insert's rows).
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("proxy: reading the body: {e}")).into_response(),
    };
    let record = |status: u16| {
        shared.seen.lock().unwrap().push(Seen { mode, insert_into: insert_into.clone(), token: token.clone(), status });
    };
    match mode {
        Mode::BadData if insert_into.is_some() => {
            record(500);
            let mut resp = (StatusCode::INTERNAL_SERVER_ERROR, CODE_117_BODY).into_response();
            let h = resp.headers_mut();
            h.insert("x-clickhouse-exception-code", HeaderValue::from_static("117"));
            h.insert("content-type", HeaderValue::from_static("text/plain; charset=UTF-8"));
            return resp;
        }
        Mode::Unavailable if insert_into.is_some() => {
            record(503);
            return (StatusCode::SERVICE_UNAVAILABLE, "").into_response();
        }
        Mode::Hang if insert_into.is_some() => {
            record(0);
            return std::future::pending().await;
        }
        Mode::Delay(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let url = format!("{}{}{}{}", shared.upstream, parts.uri.path(), if query.is_empty() { "" } else { "?" }, query);
    let mut out = shared.http.request(parts.method.clone(), url).body(body);
    for (name, value) in parts.headers.iter() {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let lose_answer = mode == Mode::LoseAnswer && insert_into.is_some();
    let trickle = match mode {
        Mode::Trickle(every) if insert_into.is_some() => Some(every),
        _ => None,
    };
    match out.send().await {
        Ok(resp) if trickle.is_some() => {
            let landed = resp.status().is_success();
            let bytes = resp.bytes().await.unwrap_or_default().to_vec();
            record(if landed { 200 } else { 0 });
            let every = trickle.unwrap();
            // One byte per interval, then nothing more, never the end of the body.
            let stream = futures::stream::unfold(0usize, move |i| {
                let next = bytes.get(i).copied();
                async move {
                    tokio::time::sleep(every).await;
                    match next {
                        Some(b) => Some((Ok::<_, std::io::Error>(vec![b]), i + 1)),
                        None => std::future::pending().await,
                    }
                }
            });
            Response::builder().status(StatusCode::OK).body(Body::from_stream(stream)).unwrap()
        }
        Ok(resp) if lose_answer => {
            let landed = resp.status().is_success() && resp.bytes().await.is_ok();
            record(if landed { 502 } else { 0 });
            (StatusCode::BAD_GATEWAY, "").into_response()
        }
        Ok(resp) => {
            let status = resp.status();
            let headers = resp.headers().clone();
            match resp.bytes().await {
                Ok(bytes) => {
                    record(status.as_u16());
                    let mut answer = Response::builder().status(status).body(Body::from(bytes)).unwrap();
                    copy_headers(&headers, answer.headers_mut());
                    answer
                }
                Err(e) => {
                    record(0);
                    (StatusCode::BAD_GATEWAY, format!("proxy: reading the upstream answer: {e}")).into_response()
                }
            }
        }
        Err(e) => {
            record(0);
            (StatusCode::BAD_GATEWAY, format!("proxy: upstream unreachable: {e}")).into_response()
        }
    }
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str(), "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "te" | "upgrade")
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from.iter() {
        if !hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}
