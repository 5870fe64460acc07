//! `ClickHouseWriter`: inserts batches of rows with the official `clickhouse` crate, retrying
//! transient failures with exponential backoff and jitter, and never retrying bad data.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;

use super::encoded::{EncodedRows, Framing, TableRow};
use super::rows::{MutationRow, RequestRow};

/// Deadline of one insert attempt unless the pipeline sets `capture.insert_timeout_ms`.
pub const DEFAULT_INSERT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// ClickHouse refused the data itself; retrying cannot help.
    #[error("ClickHouse rejected the batch as bad data: {0}")]
    BadData(String),
    /// The deadline passed while ClickHouse was unavailable.
    #[error("ClickHouse unavailable until the deadline: {0}")]
    GaveUp(String),
}

/// Server error codes that mean "this data will never insert" (vector's sink uses the same
/// rule): 117 INCORRECT_DATA, 53 TYPE_MISMATCH, 27 CANNOT_PARSE_INPUT_ASSERTION_FAILED,
/// 6 CANNOT_PARSE_TEXT, 16 NO_SUCH_COLUMN_IN_TABLE.
const BAD_DATA_CODES: &[u32] = &[117, 53, 27, 6, 16];

/// How long a batch refused for its schema (a column or table the insert names is missing, or
/// the table's columns are not the row's) keeps being retried before it counts as schema drift
/// and goes to the dead letters: a migration adding columns while the pipeline writes
/// (`tether-pro migrate` during a rolling upgrade, or ClickHouse coming back and being
/// migrated) finishes well within it.
pub const DEFAULT_SCHEMA_GRACE: Duration = Duration::from_secs(30);

/// A refusal that a migration in progress explains: 16 NO_SUCH_COLUMN_IN_TABLE, or a column
/// whose type is not the one the insert's header names (117 "while reading header").
fn is_schema_error(err: &clickhouse::error::Error) -> bool {
    match err {
        clickhouse::error::Error::SchemaMismatch(_) => true,
        clickhouse::error::Error::BadResponse(body) => match error_code(body) {
            Some(16) => true,
            Some(117) => body.contains("while reading header"),
            _ => false,
        },
        _ => false,
    }
}

/// Classifies a failure: `true` when it is worth retrying.
pub fn is_retryable(err: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error as E;
    match err {
        E::BadResponse(body) => match error_code(body) {
            Some(code) => !BAD_DATA_CODES.contains(&code),
            None => true,
        },
        E::SchemaMismatch(_) | E::InvalidParams(_) | E::Unsupported(_) => false,
        _ => true,
    }
}

/// The `Code: N` of a ClickHouse error body.
pub fn error_code(body: &str) -> Option<u32> {
    let rest = &body[body.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Writes captured rows into `sync_requests` and `sync_mutations`.
#[derive(Clone)]
pub struct ClickHouseWriter {
    client: clickhouse::Client,
    min_backoff: Duration,
    max_backoff: Duration,
    insert_timeout: Duration,
    schema_grace: Duration,
    framing: Framing,
}

impl ClickHouseWriter {
    /// `client` must be bound to the database holding the tables (`with_database`).
    pub fn new(client: clickhouse::Client) -> Self {
        ClickHouseWriter {
            client,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            insert_timeout: DEFAULT_INSERT_TIMEOUT,
            schema_grace: DEFAULT_SCHEMA_GRACE,
            framing: Framing::Plain,
        }
    }

    /// The deadline of one insert attempt (both tables). A ClickHouse that accepts the
    /// connection and never answers (a stuck node, a half-open connection) then costs one
    /// timed-out attempt, retried like any transient failure with the same token.
    pub fn with_insert_timeout(mut self, timeout: Duration) -> Self {
        self.insert_timeout = timeout;
        self
    }

    /// The deadline of one insert attempt (default [`DEFAULT_INSERT_TIMEOUT`], 10 s).
    pub fn insert_timeout(&self) -> Duration {
        self.insert_timeout
    }

    /// How long schema refusals are retried (default [`DEFAULT_SCHEMA_GRACE`]).
    pub fn with_schema_grace(mut self, grace: Duration) -> Self {
        self.schema_grace = grace;
        self
    }

    /// The delay between retries: exponential with jitter, from `min` up to `max` (default
    /// 100 ms and 5 s).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// How the pipeline should hold batches for this writer: LZ4 frames when the client
    /// compresses (a remote ClickHouse), so that they are compressed once and held small.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Batches in LZ4 frames (`clickhouse.compression = lz4`, or `auto` for a remote server).
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    async fn insert_once<T: TableRow>(&self, rows: &EncodedRows<T>, token: &str) -> clickhouse::error::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Rows still in the open chunk would be left out while the insert succeeds.
        if !rows.is_finished() {
            return Err(clickhouse::error::Error::InvalidParams("a batch was sent before it was finished (a tether-pro bug)".into()));
        }
        // Frames already compressed go out as they are (`decompress=1`), past the client's
        // own compression.
        let client = match rows.framing() {
            Framing::Plain => self.client.clone(),
            Framing::Lz4 => self.client.clone().with_compression(clickhouse::Compression::None),
        };
        // The token makes a retried insert of the same batch a no-op if the first attempt
        // landed but its answer was lost (tables set non_replicated_deduplication_window).
        // deduplicate_blocks_in_dependent_materialized_views: the token also guards the
        // five-minute aggregates (their tables set the window too, migration 0005); it is the
        // default on ClickHouse 26.9 and set here so older servers behave the same.
        let mut insert = client
            .insert_formatted_with(EncodedRows::<T>::insert_sql())
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1");
        if rows.framing() == Framing::Lz4 {
            insert = insert.with_setting("decompress", "1");
        }
        for chunk in rows.chunks() {
            insert.send(chunk.clone()).await?;
        }
        insert.end().await
    }

    /// [`write_encoded`](Self::write_encoded) for rows as structs.
    pub async fn write(
        &self,
        requests: &[RequestRow],
        mutations: &[MutationRow],
        token: &str,
        deadline: &dyn Fn() -> Option<Instant>,
        on_failure: &(dyn Fn(&clickhouse::error::Error) + Sync),
    ) -> Result<(), WriteError> {
        let requests = EncodedRows::from_rows(self.framing, requests).map_err(|e| WriteError::BadData(e.to_string()))?;
        let mutations = EncodedRows::from_rows(self.framing, mutations).map_err(|e| WriteError::BadData(e.to_string()))?;
        self.write_encoded(&requests, &mutations, token, deadline, on_failure).await
    }

    /// Inserts with retries until `deadline()` (re-read before every retry: it appears when
    /// shutdown begins). `on_failure` is called for every failed attempt.
    pub async fn write_encoded(
        &self,
        requests: &EncodedRows<RequestRow>,
        mutations: &EncodedRows<MutationRow>,
        token: &str,
        deadline: &dyn Fn() -> Option<Instant>,
        on_failure: &(dyn Fn(&clickhouse::error::Error) + Sync),
    ) -> Result<(), WriteError> {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .without_max_times()
            .build();
        // Mutations first: a request row is the index of its mutations, so it lands last.
        let mut done_mutations = false;
        let mut schema_refused_since: Option<Instant> = None;
        loop {
            // Past the shutdown deadline an attempt could only delay the spool or the count.
            if deadline().is_some_and(|d| Instant::now() >= d) {
                return Err(WriteError::GaveUp("the shutdown deadline passed".into()));
            }
            let attempt = async {
                if !done_mutations {
                    self.insert_once(mutations, &format!("{token}-m")).await?;
                    done_mutations = true;
                }
                self.insert_once(requests, &format!("{token}-r")).await
            };
            // Bounded by the insert timeout and by the shutdown deadline, whichever comes
            // first: dropping the attempt aborts the HTTP request, so nothing half-sent lands.
            let bounded = tokio::select! {
                r = tokio::time::timeout(self.insert_timeout, attempt) => r.unwrap_or(Err(clickhouse::error::Error::TimedOut)),
                () = passed(deadline) => Err(clickhouse::error::Error::TimedOut),
            };
            match bounded {
                Ok(()) => return Ok(()),
                Err(e) => {
                    on_failure(&e);
                    if is_schema_error(&e) {
                        // The client caches each table's columns: read them again next time.
                        self.client.clear_cached_metadata().await;
                        if schema_refused_since.get_or_insert_with(Instant::now).elapsed() >= self.schema_grace {
                            return Err(WriteError::BadData(e.to_string()));
                        }
                    } else if !is_retryable(&e) {
                        return Err(WriteError::BadData(e.to_string()));
                    }
                    let delay = delays.next().unwrap_or(self.max_backoff);
                    if deadline().is_some_and(|d| Instant::now() + delay > d) {
                        return Err(WriteError::GaveUp(e.to_string()));
                    }
                    // A backoff (up to max_backoff) must not outlast the flush: when shutdown
                    // begins, one more attempt at once, then the spool or the count.
                    let stopping = deadline().is_some();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown_began(deadline), if !stopping => {}
                    }
                }
            }
        }
    }
}

/// Resolves once `deadline()` is set (shutdown began).
async fn shutdown_began(deadline: &dyn Fn() -> Option<Instant>) {
    while deadline().is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resolves once `deadline()` is set and has passed (it is set when shutdown begins).
async fn passed(deadline: &dyn Fn() -> Option<Instant>) {
    loop {
        match deadline() {
            Some(d) => return tokio::time::sleep_until(d.into()).await,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_data_codes_are_not_retried() {
        let bad = clickhouse::error::Error::BadResponse("Code: 117. DB::Exception: Cannot parse input".into());
        assert!(!is_retryable(&bad));
        let bad = clickhouse::error::Error::BadResponse("Code: 53. DB::Exception: Type mismatch".into());
        assert!(!is_retryable(&bad));
        let busy = clickhouse::error::Error::BadResponse("Code: 202. DB::Exception: Too many simultaneous queries".into());
        assert!(is_retryable(&busy));
        assert!(is_retryable(&clickhouse::error::Error::TimedOut));
    }

    #[test]
    fn a_missing_column_is_a_schema_refusal_that_gets_a_grace() {
        assert!(is_schema_error(&clickhouse::error::Error::BadResponse("Code: 16. DB::Exception: No such column redacted_paths".into())));
        assert!(is_schema_error(&clickhouse::error::Error::SchemaMismatch("sync_mutations: column redacted_paths is missing".into())));
        assert!(is_schema_error(&clickhouse::error::Error::BadResponse(
            "Code: 117. DB::Exception: Type of 'duration_us' must be String, not UInt64: (while reading header): While executing BinaryRowInputFormat. (INCORRECT_DATA)".into()
        )));
        assert!(!is_schema_error(&clickhouse::error::Error::BadResponse("Code: 117. DB::Exception: Cannot parse input".into())));
    }

    #[test]
    fn error_code_reads_the_code() {
        assert_eq!(error_code("Code: 117. DB::Exception"), Some(117));
        assert_eq!(error_code("garbage"), None);
    }
}
