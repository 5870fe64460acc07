//! One configuration struct, loaded from a TOML file and `TETHER_PRO_*` environment variables
//! (nested keys joined by `__`, e.g. `TETHER_PRO_CLICKHOUSE__DATABASE=tether`). The plain
//! `CLICKHOUSE_URL` variable is honoured too, because that is what everyone sets.
//! Unknown keys are rejected: a typo must not silently fall back to a default.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything tether-pro can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub clickhouse: ClickHouseConfig,
    pub retention: RetentionConfig,
    pub capture: CaptureConfig,
    pub serve: ServeConfig,
    pub replay: ReplayConfig,
    /// The original product's key names; folded into the keys above.
    #[serde(rename = "tether-pro-server", skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalKeys>,
}

/// Where captured data goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP URL of a ClickHouse server. Unset: the demo starts the embedded local one.
    pub url: Option<String>,
    /// Database holding tether-pro's tables (created by `migrate`).
    pub database: String,
    pub user: String,
    pub password: String,
    /// Data directory of the embedded ClickHouse (used only when `url` is unset).
    pub embedded_data_dir: PathBuf,
    /// Compression of inserted data: `lz4` saves bandwidth to a remote ClickHouse; `none`
    /// saves the pipeline's CPU (a third of it); `auto`: none on loopback, else lz4.
    pub compression: Compression,
}

/// Compression of what the pipeline sends to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `none` for a ClickHouse on this host (loopback), `lz4` otherwise.
    #[default]
    Auto,
    Lz4,
    None,
}

impl Compression {
    /// What `auto` means for `url`.
    pub fn resolve(self, url: &str) -> Compression {
        match self {
            Compression::Auto => {
                let url = reqwest::Url::parse(url).ok();
                let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or("");
                let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
                let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback());
                if loopback { Compression::None } else { Compression::Lz4 }
            }
            other => other,
        }
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: None,
            database: "tether".into(),
            user: "default".into(),
            password: String::new(),
            embedded_data_dir: PathBuf::from(".tether-pro/clickhouse"),
            compression: Compression::Auto,
        }
    }
}

/// How long rows are kept (ClickHouse TTL; whole daily partitions are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Raw requests and mutations, in days.
    pub days: u32,
    /// Five-minute aggregates, in days.
    pub aggregate_days: u32,
}

impl RetentionConfig {
    pub const DEFAULT_DAYS: u32 = 30;
    pub const DEFAULT_AGGREGATE_DAYS: u32 = 400;
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: Self::DEFAULT_DAYS, aggregate_days: Self::DEFAULT_AGGREGATE_DAYS }
    }
}

/// What is captured and how it travels to ClickHouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Capture on/off. Off: `CaptureLayer` passes requests through untouched, no span, no copy.
    pub enabled: bool,
    /// Keys redacted in addition to the defaults (`pipeline::redact::DEFAULT_KEYS`): their
    /// values are replaced by `[REDACTED]` at any depth of any JSON, matched on normalized
    /// word parts (README "Redaction").
    pub redact_keys: Vec<String>,
    /// Default keys not to redact, each spelled exactly as in the default list (an unknown
    /// name is a configuration error, so a typo cannot silently keep a secret).
    pub redact_keys_disabled: Vec<String>,
    /// Largest stored text of one request or response body; longer bodies are cut with a
    /// marker naming the true size.
    pub body_cap_bytes: usize,
    /// Bytes of one body kept in memory for parsing (per-mutation rows come from it).
    pub retain_bytes: usize,
    /// Most bytes a compressed body (`Content-Encoding` gzip, deflate, br, zstd) is decoded
    /// to by the pipeline; a larger one (a compression bomb) stops here and is stored as
    /// truncated.
    pub decoded_max_bytes: usize,
    /// Queue capacity in records.
    pub queue_records: usize,
    /// Queue capacity in bytes (bodies held); together with the batch in flight this bounds
    /// the pipeline's memory.
    pub queue_bytes: usize,
    /// Rows per insert at most.
    pub batch_rows: usize,
    /// Bytes of row data per insert at most.
    pub batch_bytes: usize,
    /// How often finished rows are inserted, in milliseconds.
    pub batch_interval_ms: u64,
    /// How often queued records are processed into rows, in milliseconds (at most the batch
    /// interval): small, so the work is spread out instead of a burst per interval that the
    /// host's tail latency feels.
    pub process_interval_ms: u64,
    /// How long shutdown waits for the last records to be written, in milliseconds.
    pub flush_timeout_ms: u64,
    /// Deadline of one ClickHouse insert attempt, in milliseconds; a timed-out attempt is
    /// retried (same deduplication token) like any transient failure.
    pub insert_timeout_ms: u64,
    /// Nice value of the pipeline thread (Linux): it yields the CPU to the host's request
    /// threads when both want it. 0 keeps the default priority.
    pub pipeline_nice: i32,
    /// What is kept of an applied mutation (README "Capture policy"): `full` (its payload,
    /// states and diff, the default), `sampled` (those of a fraction, `applied_sample_ratio`,
    /// chosen by a hash of the mutation id; the others as `counts`), or `counts` (its row with
    /// ids, model, operation, outcome and version, which every count and chart needs, but no
    /// payload, states or diff). Mutations that were not applied (rejected, conflicts,
    /// duplicates, unprocessed, unknown) are always kept in full.
    pub applied: AppliedDetail,
    /// With `applied = "sampled"`: the fraction of applied mutations kept in full, 0 to 1.
    pub applied_sample_ratio: f64,
    /// The disk spool for batches the write buffer cannot hold (off by default).
    pub spool: SpoolConfig,
    /// Where batches ClickHouse refuses as bad data are kept (on by default).
    pub dead_letter: DeadLetterConfig,
}

/// What the pipeline keeps of an applied mutation (`capture.applied`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliedDetail {
    #[default]
    Full,
    Sampled,
    Counts,
}

/// The dead-letter directory (`[capture.dead_letter]`): a batch ClickHouse refuses as bad
/// data (a parse error, a dropped or retyped column) is never retried; its rows, already
/// redacted, are kept here as one JSON file with ClickHouse's error, for inspection and
/// re-insertion once the schema is fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    /// Bytes on disk at most; a refused batch beyond it is counted but not kept.
    pub max_bytes: u64,
}

impl DeadLetterConfig {
    pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig { enabled: true, dir: PathBuf::from(".tether-pro/dead-letter"), max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

/// The disk spool (`[capture.spool]`): when ClickHouse is away longer than the memory
/// buffers last, batches (already redacted) go to files here instead of being dropped, and
/// are written from there when ClickHouse is back, also after a restart or a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub enabled: bool,
    /// Directory of this process's spool (one process per directory; a lock file enforces it).
    pub dir: PathBuf,
    /// Bytes on disk at most; batches beyond it are dropped and counted.
    pub max_bytes: u64,
}

impl SpoolConfig {
    pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig { enabled: false, dir: PathBuf::from(".tether-pro/spool"), max_bytes: Self::DEFAULT_MAX_BYTES }
    }
}

impl CaptureConfig {
    /// The redactor these settings describe: the default keys, plus `redact_keys`, less
    /// `redact_keys_disabled`. Falls back to the defaults alone when the lists are invalid
    /// (`validate` refuses such a configuration first).
    pub fn redactor(&self) -> crate::pipeline::redact::Redactor {
        crate::pipeline::redact::Redactor::with_defaults(&self.redact_keys, &self.redact_keys_disabled).unwrap_or_default()
    }

    /// How the pipeline builds rows under these settings.
    pub fn row_settings(&self) -> crate::pipeline::RowSettings {
        crate::pipeline::RowSettings {
            redactor: self.redactor(),
            body_cap_bytes: self.body_cap_bytes,
            decoded_max_bytes: self.decoded_max_bytes,
            applied: match self.applied {
                AppliedDetail::Full => crate::pipeline::rows::KeepApplied::All,
                AppliedDetail::Sampled => crate::pipeline::rows::KeepApplied::Fraction(self.applied_sample_ratio),
                AppliedDetail::Counts => crate::pipeline::rows::KeepApplied::None,
            },
        }
    }

    pub const DEFAULT_BODY_CAP_BYTES: usize = 64 * 1024;
    pub const DEFAULT_RETAIN_BYTES: usize = 16 * 1024 * 1024;
    pub const DEFAULT_DECODED_MAX_BYTES: usize = 16 * 1024 * 1024;
    pub const DEFAULT_QUEUE_RECORDS: usize = 10_000;
    /// With six batches of [`Self::DEFAULT_BATCH_BYTES`], a memory bound of 56 MiB: issue
    /// 15's budget is the host's resident memory + 64 MiB at saturation.
    pub const DEFAULT_QUEUE_BYTES: usize = 32 * 1024 * 1024;
    pub const DEFAULT_BATCH_ROWS: usize = 10_000;
    pub const DEFAULT_BATCH_BYTES: usize = 4 * 1024 * 1024;
    pub const DEFAULT_BATCH_INTERVAL_MS: u64 = 1_000;
    pub const DEFAULT_PROCESS_INTERVAL_MS: u64 = 50;
    pub const DEFAULT_FLUSH_TIMEOUT_MS: u64 = 5_000;
    pub const DEFAULT_INSERT_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_PIPELINE_NICE: i32 = 19;
    pub const DEFAULT_APPLIED_SAMPLE_RATIO: f64 = 0.1;

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.queue_records >= 1, "capture.queue_records must be at least 1");
        anyhow::ensure!(self.queue_bytes >= 1024, "capture.queue_bytes must be at least 1024");
        anyhow::ensure!(self.batch_rows >= 1, "capture.batch_rows must be at least 1");
        anyhow::ensure!(self.batch_interval_ms >= 1, "capture.batch_interval_ms must be at least 1");
        anyhow::ensure!(self.process_interval_ms >= 1, "capture.process_interval_ms must be at least 1");
        anyhow::ensure!(self.insert_timeout_ms >= 1, "capture.insert_timeout_ms must be at least 1");
        anyhow::ensure!(
            !self.dead_letter.enabled || !self.dead_letter.dir.as_os_str().is_empty(),
            "capture.dead_letter.dir is empty"
        );
        anyhow::ensure!((0..=19).contains(&self.pipeline_nice), "capture.pipeline_nice must be 0..=19");
        anyhow::ensure!(self.body_cap_bytes >= 64, "capture.body_cap_bytes must be at least 64");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.applied_sample_ratio),
            "capture.applied_sample_ratio must be between 0 and 1"
        );
        anyhow::ensure!(self.decoded_max_bytes >= 1024, "capture.decoded_max_bytes must be at least 1024");
        anyhow::ensure!(self.redact_keys.iter().all(|k| !k.trim().is_empty()), "capture.redact_keys has an empty key");
        crate::pipeline::redact::Redactor::with_defaults(&self.redact_keys, &self.redact_keys_disabled)?;
        anyhow::ensure!(
            !self.spool.enabled || self.spool.max_bytes >= 1024 * 1024,
            "capture.spool.max_bytes must be at least 1 MiB"
        );
        anyhow::ensure!(!self.spool.enabled || !self.spool.dir.as_os_str().is_empty(), "capture.spool.dir is empty");
        Ok(())
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: true,
            redact_keys: Vec::new(),
            redact_keys_disabled: Vec::new(),
            body_cap_bytes: Self::DEFAULT_BODY_CAP_BYTES,
            retain_bytes: Self::DEFAULT_RETAIN_BYTES,
            decoded_max_bytes: Self::DEFAULT_DECODED_MAX_BYTES,
            queue_records: Self::DEFAULT_QUEUE_RECORDS,
            queue_bytes: Self::DEFAULT_QUEUE_BYTES,
            batch_rows: Self::DEFAULT_BATCH_ROWS,
            batch_bytes: Self::DEFAULT_BATCH_BYTES,
            batch_interval_ms: Self::DEFAULT_BATCH_INTERVAL_MS,
            process_interval_ms: Self::DEFAULT_PROCESS_INTERVAL_MS,
            flush_timeout_ms: Self::DEFAULT_FLUSH_TIMEOUT_MS,
            insert_timeout_ms: Self::DEFAULT_INSERT_TIMEOUT_MS,
            pipeline_nice: Self::DEFAULT_PIPELINE_NICE,
            applied: AppliedDetail::Full,
            applied_sample_ratio: Self::DEFAULT_APPLIED_SAMPLE_RATIO,
            spool: SpoolConfig::default(),
            dead_letter: DeadLetterConfig::default(),
        }
    }
}

/// The dashboard service (`tether-pro serve`, and the demo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Listen address of `tether-pro serve`.
    pub listen: String,
    /// Where the dashboard is mounted.
    pub prefix: String,
    /// Require `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Require HTTP basic auth with this user (and `basic_password`).
    pub basic_username: Option<String>,
    pub basic_password: Option<String>,
    /// Mutations per page on a request's detail page.
    pub mutations_page_size: usize,
    /// When a five-minute bucket is degraded or failing.
    pub health: crate::dashboard::HealthThresholds,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            prefix: crate::dashboard::DashboardState::DEFAULT_PREFIX.into(),
            bearer_token: None,
            basic_username: None,
            basic_password: None,
            mutations_page_size: crate::dashboard::DashboardState::DEFAULT_MUTATIONS_PAGE_SIZE,
            health: crate::dashboard::HealthThresholds::default(),
        }
    }
}

impl ServeConfig {
    pub fn auth(&self) -> Option<crate::dashboard::auth::AuthConfig> {
        let basic = self.basic_username.as_deref().map(|u| (u, self.basic_password.as_deref().unwrap_or("")));
        crate::dashboard::auth::AuthConfig::new(self.bearer_token.as_deref(), basic)
    }
}

/// Replay of captured pushes. Off unless explicitly enabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Enables replay preview and live apply.
    pub live_enabled: bool,
    /// For `tether-pro serve`: the host's push URL (e.g. `http://sync:3000/tether/push`).
    pub push_url: Option<String>,
    /// For `tether-pro serve`: the host's state lookup, with `{model}` and `{entity_id}`
    /// (e.g. `http://sync:3000/tether/state/{model}/{entity_id}`).
    pub state_url_template: Option<String>,
}

/// Keys under the original product's name (`tether-pro-server.replay.live_enabled`), accepted
/// so existing configuration keeps working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OriginalKeys {
    pub replay: ReplayConfig,
}

impl Config {
    /// Defaults, then the TOML file (if given, it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(Env::raw().only(&["CLICKHOUSE_URL"]).map(|_| "clickhouse.url".into()))
            .merge(
                Env::prefixed("TETHER_PRO_")
                    .ignore(&["CONFIG"])
                    .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("server__"))
                    .split("__"),
            )
            .merge(Env::prefixed("TETHER_PRO_SERVER__").split("__").map(|k| format!("tether-pro-server.{k}").into()));
        let mut cfg: Config = fig.extract()?;
        if let Some(orig) = cfg.original.take() {
            cfg.replay.live_enabled |= orig.replay.live_enabled;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot, before anything is started.
    pub fn validate(&self) -> anyhow::Result<()> {
        let db = &self.clickhouse.database;
        anyhow::ensure!(
            !db.is_empty()
                && db.len() <= 64
                && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !db.starts_with(|c: char| c.is_ascii_digit()),
            "clickhouse.database must be a plain identifier (letters, digits, _), got {db:?}"
        );
        self.capture.validate()?;
        anyhow::ensure!(
            self.serve.prefix.is_empty() || (self.serve.prefix.starts_with('/') && !self.serve.prefix.ends_with('/')),
            "serve.prefix must be empty or start with / and not end with /, got {:?}",
            self.serve.prefix
        );
        anyhow::ensure!(self.serve.mutations_page_size >= 1, "serve.mutations_page_size must be at least 1");
        anyhow::ensure!(
            self.serve.bearer_token.as_deref().is_none_or(|t| !t.trim().is_empty()),
            "serve.bearer_token is set but empty (unset it to serve without auth)"
        );
        anyhow::ensure!(
            self.serve.basic_username.as_deref().is_none_or(|u| !u.trim().is_empty()),
            "serve.basic_username is set but empty"
        );
        anyhow::ensure!(
            self.serve.basic_username.is_none() || self.serve.basic_password.as_deref().is_some_and(|p| !p.is_empty()),
            "serve.basic_username needs a non-empty serve.basic_password"
        );
        anyhow::ensure!(self.retention.days >= 1, "retention.days must be at least 1");
        anyhow::ensure!(
            self.retention.aggregate_days >= self.retention.days,
            "retention.aggregate_days must be at least retention.days"
        );
        if let Some(url) = &self.clickhouse.url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "clickhouse.url must be an http(s) URL, got {url:?}"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's error type
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::default();
        assert_eq!(c.clickhouse.database, "tether");
        assert_eq!(c.retention.days, 30);
        assert!(!c.replay.live_enabled);
    }

    #[test]
    fn toml_then_env_override_and_clickhouse_url_is_honoured() {
        Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[clickhouse]\ndatabase = \"obs\"\n[retention]\ndays = 7\n[replay]\nlive_enabled = true\n")?;
            jail.set_env("TETHER_PRO_RETENTION__DAYS", "9");
            jail.set_env("CLICKHOUSE_URL", "http://127.0.0.1:1234");
            let c = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.clickhouse.database, "obs");
            assert_eq!(c.retention.days, 9);
            assert!(c.replay.live_enabled);
            assert_eq!(c.clickhouse.url.as_deref(), Some("http://127.0.0.1:1234"));
            Ok(())
        });
    }

    #[test]
    fn the_original_replay_key_enables_replay() {
        Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[tether-pro-server.replay]\nlive_enabled = true\n")?;
            let c = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            assert!(c.replay.live_enabled);
            Ok(())
        });
        Jail::expect_with(|_| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(!c.replay.live_enabled, "off by default");
            Ok(())
        });
    }

    /// Issue 12, input 3: one extra key used to replace the whole default list.
    #[test]
    fn configured_redact_keys_extend_the_defaults_and_removal_is_explicit() {
        Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[capture]\nredact_keys = [\"pin\"]\n")?;
            let c = Config::load(Some(Path::new("t.toml"))).map_err(|e| e.to_string())?;
            let r = c.capture.redactor();
            assert!(r.is_sensitive("pin") && r.is_sensitive("password") && r.is_sensitive("api_key"));
            jail.create_file("u.toml", "[capture]\nredact_keys_disabled = [\"session\"]\n")?;
            let c = Config::load(Some(Path::new("u.toml"))).map_err(|e| e.to_string())?;
            assert!(!c.capture.redactor().is_sensitive("session") && c.capture.redactor().is_sensitive("password"));
            jail.create_file("v.toml", "[capture]\nredact_keys_disabled = [\"pasword\"]\n")?;
            let err = Config::load(Some(Path::new("v.toml"))).map(|_| ()).expect_err("a typo in a removal is refused at start").to_string();
            assert!(err.contains("pasword") && err.contains("not a default key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[clickhouse]\ndatabse = \"typo\"\n")?;
            let err = Config::load(Some(Path::new("t.toml"))).unwrap_err().to_string();
            assert!(err.contains("databse"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn auto_compression_is_none_on_loopback_and_lz4_elsewhere() {
        for (url, want) in [
            ("http://127.0.0.1:8123", Compression::None),
            ("http://localhost:8123/", Compression::None),
            ("http://user:pw@[::1]:8123/?x=1", Compression::None),
            ("http://127.0.0.2:8123", Compression::None),
            ("https://clickhouse.internal:8443", Compression::Lz4),
            ("http://10.0.0.5:8123", Compression::Lz4),
            ("http://127.0.0.1.evil.example:8123", Compression::Lz4),
        ] {
            assert_eq!(Compression::Auto.resolve(url), want, "{url}");
            assert_eq!(Compression::Lz4.resolve(url), Compression::Lz4);
        }
    }

    #[test]
    fn compression_is_auto_unless_set() {
        Jail::expect_with(|jail| {
            assert_eq!(Config::load(None).map_err(|e| e.to_string())?.clickhouse.compression, Compression::Auto);
            jail.set_env("TETHER_PRO_CLICKHOUSE__COMPRESSION", "none");
            assert_eq!(Config::load(None).map_err(|e| e.to_string())?.clickhouse.compression, Compression::None);
            jail.set_env("TETHER_PRO_CLICKHOUSE__COMPRESSION", "gzip");
            assert!(Config::load(None).is_err(), "an unknown compression is an error");
            Ok(())
        });
    }

    #[test]
    fn empty_credentials_are_refused_at_start() {
        let mut c = Config::default();
        c.serve.bearer_token = Some(" ".into());
        assert!(c.validate().unwrap_err().to_string().contains("bearer_token"));
        let mut c = Config::default();
        c.serve.basic_username = Some(String::new());
        c.serve.basic_password = Some("pw".into());
        assert!(c.validate().unwrap_err().to_string().contains("basic_username"));
    }

    #[test]
    fn the_spool_is_off_by_default_and_set_from_the_environment() {
        Jail::expect_with(|jail| {
            assert!(!Config::load(None).map_err(|e| e.to_string())?.capture.spool.enabled);
            jail.set_env("TETHER_PRO_CAPTURE__SPOOL__ENABLED", "true");
            jail.set_env("TETHER_PRO_CAPTURE__SPOOL__DIR", "/var/spool/tether");
            jail.set_env("TETHER_PRO_CAPTURE__SPOOL__MAX_BYTES", "1000");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("spool.max_bytes"), "{err}");
            jail.set_env("TETHER_PRO_CAPTURE__SPOOL__MAX_BYTES", "2097152");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!((c.capture.spool.enabled, c.capture.spool.dir.to_str(), c.capture.spool.max_bytes), (true, Some("/var/spool/tether"), 2097152));
            Ok(())
        });
    }

    #[test]
    fn hostile_database_names_are_refused() {
        let mut c = Config::default();
        for bad in ["", "a;DROP TABLE x", "x`y", "1abc", "a b", "db.name"] {
            c.clickhouse.database = bad.into();
            assert!(c.validate().is_err(), "{bad:?} accepted");
        }
    }
}
