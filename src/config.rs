//! One configuration struct, loaded from a TOML file and `TETHER_PRO_*` environment variables
//! (nested keys joined by `__`, e.g. `TETHER_PRO_CLICKHOUSE__DATABASE=tether`). The plain
//! `CLICKHOUSE_URL` variable is honoured too, because that is what everyone sets.
//! Unknown keys are rejected: a typo must not silently fall back to a default.

pub use crate::invalid::InvalidConfig;
use crate::invalid::ensure_valid;
use std::path::Path;

pub use crate::pipeline::config::{AppliedDetail, CaptureConfig, DeadLetterConfig, SpoolConfig};
pub use crate::store::config::{ClickHouseConfig, Compression, RetentionConfig};
#[cfg(feature = "dashboard")]
pub use crate::dashboard::ServeConfig;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file given does not exist.
    #[error("config file {} does not exist", .0.display())]
    Missing(std::path::PathBuf),
    /// The TOML or an environment variable could not be read: a syntax error, an unknown key,
    /// a value of the wrong type (figment names the key and where it came from).
    /// The message quotes the value, without the credentials of any URL in it.
    #[error("{}", crate::store::hide_credentials(&.0.to_string()))]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range or inconsistent (the message names the key).
    #[error(transparent)]
    Invalid(#[from] InvalidConfig),
}

/// Everything tether-pro can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[clickhouse]`: where captured data goes.
    pub clickhouse: ClickHouseConfig,
    /// `[retention]`: how long rows are kept.
    pub retention: RetentionConfig,
    /// `[capture]`: what is captured, how it is redacted and how it travels.
    pub capture: CaptureConfig,
    /// `[serve]`: the dashboard service (`tether-pro serve`).
    #[cfg(feature = "dashboard")]
    pub serve: ServeConfig,
    /// Without the `dashboard` feature a `[serve]` section is accepted and ignored: one file
    /// can configure both the host and `tether-pro serve`.
    #[cfg(not(feature = "dashboard"))]
    #[serde(skip_serializing)]
    pub serve: Option<serde::de::IgnoredAny>,
    /// `[replay]`: replay of captured pushes (off by default).
    pub replay: ReplayConfig,
    /// The original product's key names; folded into the keys above.
    #[serde(rename = "tether-pro-server", skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalKeys>,
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
    /// A secret shared by every `serve` replica (at least 32 characters): the key of the CSRF
    /// tokens of replay's apply form, so a preview served by one replica can be applied
    /// through another behind a load balancer. Unset: a random key per process (applies must
    /// reach the replica that served the preview, and tokens die with a restart).
    pub csrf_secret: Option<String>,
}

/// Keys under the original product's name (`tether-pro-server.replay.live_enabled`), accepted
/// so existing configuration keeps working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OriginalKeys {
    /// `tether-pro-server.replay`: only `live_enabled` is read (it switches replay on too); the
    /// other keys are accepted and ignored.
    pub replay: ReplayConfig,
}

impl Config {
    /// Defaults, then the TOML file (if given, it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig
            .merge(Env::raw().only(&["CLICKHOUSE_URL"]).map(|_| "clickhouse.url".into()))
            .merge(
                // The project's own variables that are not configuration keys share the
                // prefix (README: TETHER_PRO_CONFIG, the cache, the test tools, the soak);
                // every other TETHER_PRO_* must be a key, so a typo is still an error.
                Env::prefixed("TETHER_PRO_")
                    .ignore(&["CONFIG", "CACHE", "NPM_CACHE", "COMPOSE_BIN"])
                    .filter(|k| {
                        let k = k.as_str().to_ascii_lowercase();
                        !k.starts_with("server__") && !k.starts_with("soak_")
                    })
                    .split("__"),
            )
            .merge(Env::prefixed("TETHER_PRO_SERVER__").split("__").map(|k| format!("tether-pro-server.{k}").into()));
        let mut cfg: Config = fig.extract().map_err(Box::new)?;
        if let Some(orig) = cfg.original.take() {
            cfg.replay.live_enabled |= orig.replay.live_enabled;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what serde cannot, before anything is started.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let db = &self.clickhouse.database;
        ensure_valid!(
            !db.is_empty()
                && db.len() <= 64
                && db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !db.starts_with(|c: char| c.is_ascii_digit()),
            "clickhouse.database must be a plain identifier (letters, digits, _), got {db:?}"
        );
        self.capture.validate()?;
        #[cfg(feature = "dashboard")]
        self.serve.validate()?;
        ensure_valid!(self.retention.days >= 1, "retention.days must be at least 1");
        ensure_valid!(
            self.retention.aggregate_days >= self.retention.days,
            "retention.aggregate_days must be at least retention.days"
        );
        if let Some(cluster) = &self.clickhouse.cluster {
            // Spliced into DDL (Distributed engine) as a quoted name.
            ensure_valid!(
                // It is an XML element name in the servers' remote_servers.
                cluster.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && cluster.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'),
                "clickhouse.cluster must be a cluster name (letters, digits, _ - ., starting with a letter or _), got {cluster:?}"
            );
        }
        ensure_valid!(
            self.replay.csrf_secret.as_ref().is_none_or(|s| s.chars().count() >= 32),
            "replay.csrf_secret must be at least 32 characters (e.g. `openssl rand -hex 32`)"
        );
        ensure_valid!(
            self.clickhouse.cluster.is_some() || (!self.clickhouse.replicated && self.clickhouse.nodes.is_empty()),
            "clickhouse.replicated and clickhouse.nodes need clickhouse.cluster"
        );
        // The HTTP clients are built without TLS: an https URL could only fail later. A
        // user or password in a URL would be ignored (clickhouse.user/.password are used) or
        // end up in error messages: refused. Messages show URLs without credentials.
        let plain = |url: &str| url.starts_with("http://") && !url["http://".len()..].split(['/', '?', '#']).next().unwrap_or("").contains('@');
        for node in &self.clickhouse.nodes {
            ensure_valid!(
                plain(node) && !node.contains('?'),
                "clickhouse.nodes must hold http:// URLs (no TLS in this build) without user, password or query (set clickhouse.user and clickhouse.password), got {:?}",
                crate::store::display_url(node)
            );
        }
        if let Some(url) = &self.clickhouse.url {
            ensure_valid!(
                plain(url) && !url.contains('?'),
                "clickhouse.url must be an http:// URL (no TLS in this build) without user, password or query (set clickhouse.user and clickhouse.password), got {:?}",
                crate::store::display_url(url)
            );
        }
        for (key, url) in [("replay.push_url", &self.replay.push_url), ("replay.state_url_template", &self.replay.state_url_template)] {
            if let Some(url) = url {
                ensure_valid!(plain(url), "{key} must be an http:// URL (no TLS in this build) without user or password, got {:?}", crate::store::display_url(url));
            }
        }
        ensure_valid!(
            !["system", "information_schema"].contains(&db.to_ascii_lowercase().as_str()),
            "clickhouse.database must not be one of ClickHouse's own databases, got {db:?}"
        );
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

    /// URLs that would be ignored in part, fail later, or carry a secret into messages are
    /// refused at start, and the message never shows the secret.
    #[test]
    fn urls_with_credentials_tls_or_queries_and_system_databases_are_refused() {
        for (toml, says) in [
            ("[clickhouse]\nurl = \"http://writer:S3cret@ch:8123\"", "clickhouse.url must be an http:// URL"),
            ("[clickhouse]\nurl = \"u:S3cret@ch:8123\"", "clickhouse.url must be an http:// URL"),
            ("[clickhouse]\nurl = \"http://ch:8123/?password=S3cret\"", "clickhouse.url must be an http:// URL"),
            ("[clickhouse]\nurl = \"https://ch:8443\"", "no TLS in this build"),
            ("[clickhouse]\ncluster = \"c\"\nnodes = [\"http://a:8123\", \"default:S3cret@b:8123\"]", "clickhouse.nodes must hold http:// URLs"),
            ("[replay]\npush_url = \"http://admin:S3cret@host/tether/push\"", "replay.push_url must be an http:// URL"),
            ("[replay]\npush_url = \"https://host/tether/push\"", "replay.push_url must be an http:// URL"),
            ("[replay]\nstate_url_template = \"host/tether/state/{model}/{entity_id}\"", "replay.state_url_template must be an http:// URL"),
            ("[clickhouse]\ndatabase = \"system\"", "ClickHouse's own databases"),
            ("[clickhouse]\ndatabase = \"INFORMATION_SCHEMA\"", "ClickHouse's own databases"),
        ] {
            Jail::expect_with(|jail| {
                // scripts/test exports CLICKHOUSE_URL, which would override the file's url.
                jail.clear_env();
                jail.create_file("t.toml", toml)?;
                let err = Config::load(Some(Path::new("t.toml"))).map(|_| ()).unwrap_err().to_string();
                assert!(err.contains(says) && !err.contains("S3cret"), "{toml}: {err}");
                Ok(())
            });
        }
        // A malformed list quoted back by the loader does not show the password either.
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TETHER_PRO_CLICKHOUSE__NODES", "[\"http://a:1\",\"http://default:S3cret@b:1\"");
            let err = Config::load(None).map(|_| ()).unwrap_err().to_string();
            assert!(!err.contains("S3cret") && err.contains("b:1"), "{err}");
            Ok(())
        });
    }

    /// Found by a fresh-clone run: `TETHER_PRO_CACHE` (where the embedded ClickHouse is
    /// installed, README) made every command fail as an unknown configuration key.
    #[test]
    fn the_projects_own_variables_are_not_configuration_keys() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in [("TETHER_PRO_CACHE", "/tmp/c"), ("TETHER_PRO_NPM_CACHE", "/tmp/n"), ("TETHER_PRO_COMPOSE_BIN", "/bin/x"), ("TETHER_PRO_SOAK_SECS", "9")] {
                jail.set_env(k, v);
            }
            jail.set_env("TETHER_PRO_RETENTION__DAYS", "9");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.retention.days, 9);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("TETHER_PRO_RETENTION_DAYS", "9");
            let err = Config::load(None).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("RETENTION_DAYS"), "a typo is still an error: {err}");
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
