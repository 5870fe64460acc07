//! Loopback load: concurrent clients (tokio tasks, one keep-alive connection each) pushing
//! 50-mutation batches to a child server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_pro::protocol::{CLIENT_VERSION_HEADER, PushResponse};

use super::{BATCH, Workload};

/// Pre-generated push bodies, one sequence per client. Generated once and replayed against
/// every variant's fresh server, so each variant gets exactly the same work.
pub fn bodies(clients: usize, per_client: usize) -> Vec<Vec<Bytes>> {
    (0..clients)
        .map(|c| {
            let mut w = Workload::new(1000 + c as u64);
            (0..per_client).map(|_| Bytes::from(w.next_body())).collect()
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Measured {
    /// Pushes in the timed window.
    pub pushes: u64,
    /// Pushes that were not answered 200 with every mutation applied (whole run).
    pub errors: u64,
    pub elapsed: Duration,
    /// CPU time the server process used in the timed window.
    pub server_cpu: Duration,
    /// The server's CPU time when the window opened (to add work it deferred past the end).
    pub server_cpu_at_start: Duration,
    /// The server's CPU in the window by thread name (where an overhead goes).
    pub threads: std::collections::BTreeMap<String, Duration>,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.pushes as f64 / self.elapsed.as_secs_f64()
    }

    pub fn cpu_us_per_push(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.pushes.max(1) as f64
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(600)).build().expect("an HTTP client")
}

async fn push(http: &reqwest::Client, url: &str, body: Bytes) -> Result<Bytes, String> {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header(CLIENT_VERSION_HEADER, "ios/3.2.1")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body)
}

/// Every client sends its first `warmup` bodies, then all start together and the clock runs
/// until the last answer. Answers are checked after the clock stops (parsing them inside the
/// window would take CPU from the server on a small machine).
pub async fn run_fixed(url: &str, bodies: &[Vec<Bytes>], warmup: usize, server_pid: u32) -> Measured {
    let barrier = Arc::new(tokio::sync::Barrier::new(bodies.len() + 1));
    let tasks: Vec<_> = bodies
        .iter()
        .map(|seq| {
            let (url, seq, barrier) = (url.to_owned(), seq.clone(), barrier.clone());
            tokio::spawn(async move {
                let http = http();
                let mut answers = Vec::with_capacity(seq.len());
                for (i, body) in seq.into_iter().enumerate() {
                    if i == warmup {
                        barrier.wait().await;
                    }
                    answers.push(push(&http, &url, body).await);
                }
                answers
            })
        })
        .collect();
    barrier.wait().await;
    let threads0 = super::thread_cpu(server_pid);
    let (start, cpu0) = (Instant::now(), super::cpu_time(server_pid).expect("the server's /proc/PID/stat"));
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("a client task"));
    }
    let elapsed = start.elapsed();
    let server_cpu = super::cpu_time(server_pid).expect("the server's /proc/PID/stat").saturating_sub(cpu0);
    let threads = super::thread_cpu_delta(&threads0, &super::thread_cpu(server_pid));
    let mut errors = 0;
    for a in answers.iter().flatten() {
        let ok = match a {
            Ok(body) => serde_json::from_slice::<PushResponse>(body).is_ok_and(|r| r.applied.len() == BATCH),
            Err(e) => {
                eprintln!("push failed: {e}");
                false
            }
        };
        errors += u64::from(!ok);
    }
    let timed = bodies.iter().map(|s| s.len().saturating_sub(warmup)).sum::<usize>() as u64;
    Measured { pushes: timed, errors, elapsed, server_cpu, server_cpu_at_start: cpu0, threads }
}

/// Counters of an open-ended load.
#[derive(Default)]
pub struct Counters {
    pub pushes: AtomicU64,
    pub errors: AtomicU64,
}

/// `clients` devices pushing fresh batches at `rate` pushes/s in all until `stop` is set
/// (bodies are generated as they go: an endless run cannot replay a fixed set).
pub async fn run_until(url: &str, clients: usize, rate: f64, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let period = Duration::from_secs_f64(clients as f64 / rate);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (url, stop, counters) = (url.to_owned(), stop.clone(), counters.clone());
            tokio::spawn(async move {
                let http = http();
                let mut workload = Workload::new(5000 + c as u64);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let body = Bytes::from(workload.next_body());
                    match push(&http, &url, body).await {
                        Ok(_) => counters.pushes.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("push failed: {e}");
                            counters.errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a client task");
    }
}

/// Latencies of a paced run: every client sends its bodies at `rate / clients` pushes/s (a
/// load the server can carry), each latency measured from send to full answer.
pub struct Paced {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Paced {
    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort();
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

pub async fn run_paced(url: &str, bodies: &[Vec<Bytes>], warmup: usize, rate: f64) -> Paced {
    let period = Duration::from_secs_f64(bodies.len() as f64 / rate);
    let start = Instant::now();
    let tasks: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(c, seq)| {
            let (url, seq) = (url.to_owned(), seq.clone());
            tokio::spawn(async move {
                let http = http();
                // Clients start spread over one period, not in lock step.
                tokio::time::sleep(period.mul_f64(c as f64 / 8.0 % 1.0)).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut out = Vec::with_capacity(seq.len());
                for (i, body) in seq.into_iter().enumerate() {
                    tick.tick().await;
                    let sent = Instant::now();
                    let ok = push(&http, &url, body).await.is_ok_and(|b| {
                        serde_json::from_slice::<PushResponse>(&b).is_ok_and(|r| r.applied.len() == BATCH)
                    });
                    if i >= warmup {
                        out.push((sent.elapsed(), ok));
                    }
                }
                out
            })
        })
        .collect();
    let mut paced = Paced { latencies: Vec::new(), errors: 0, elapsed: Duration::ZERO };
    for t in tasks {
        for (latency, ok) in t.await.expect("a client task") {
            paced.latencies.push(latency);
            paced.errors += u64::from(!ok);
        }
    }
    paced.elapsed = start.elapsed();
    paced
}
