//! Instructions per captured push in the processing stage (`pipeline::rows::build`: decode,
//! parse, verdicts, redaction, diffs, column text), counted by `valgrind --tool=callgrind`:
//! repeatable where wall time on a shared 2-core machine is not.
//!
//! `scripts/callgrind-capture` runs this binary twice under callgrind, with 1 and with 1 + N
//! builds of the same representative push (BENCH `redact_and_diff/push_50`'s record: 50
//! mutations, 30 creates and 20 edits with before/after states, ~10 % carrying credentials),
//! and prints (Ir(1 + N) − Ir(1)) / N: the setup (the reference server making the record)
//! cancels out. Arguments: `[BUILDS] [POLICY]`, where POLICY is a `capture.applied` setting
//! (`full`, the default; `sampled`, at the default ratio; `counts`).
//!
//! Under `cargo test --all-targets` it builds once and checks the rows are real.

mod support;

use std::hint::black_box;

use tether_pro::config::{AppliedDetail, CaptureConfig};
use tether_pro::sync::SyncServer;

use support::{BATCH, Workload};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let builds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1);
    let applied = match args.get(1).map(String::as_str) {
        None | Some("full") => AppliedDetail::Full,
        Some("sampled") => AppliedDetail::Sampled,
        Some("counts") => AppliedDetail::Counts,
        Some(other) => panic!("unknown capture.applied policy {other:?} (full, sampled, counts)"),
    };
    let cfg = CaptureConfig { applied, ..CaptureConfig::default() };
    let settings = cfg.row_settings();
    let server = SyncServer::in_memory();
    let mut workload = Workload::new(3);
    for _ in 0..2 {
        support::apply_push(&server, &workload.next_body());
    }
    let rec = support::push_record(&server, &workload.next_body().into());
    let mut mutation_rows = 0;
    for _ in 0..builds {
        let rows = tether_pro::internals::rows::build(black_box(&rec), &settings);
        mutation_rows += rows.mutations.len();
        black_box(rows);
    }
    assert_eq!(mutation_rows, builds * BATCH, "every build makes a row per mutation");
    println!("capture_instructions: {builds} builds of a {}-byte push, {mutation_rows} mutation rows", rec.request_body.total);
}
