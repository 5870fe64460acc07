//! `[serve]`: the dashboard service (`tether-pro serve`, and the demo).

use crate::invalid::{InvalidConfig, ensure_valid};
use serde::{Deserialize, Serialize};

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
    /// The basic auth password; required, non-empty, with `basic_username`.
    pub basic_password: Option<String>,
    /// Mutations per page on a request's detail page.
    pub mutations_page_size: usize,
    /// When a five-minute bucket is degraded or failing.
    pub health: super::HealthThresholds,
    /// Where a trace id links to: a URL with `{trace_id}` in it, e.g. Grafana's trace view
    /// (`https://grafana.example/d/tether-traces/tether-traces?var-trace_id={trace_id}`) or
    /// Jaeger's (`https://jaeger.example/trace/{trace_id}`). Unset (the default): trace ids
    /// are shown, not linked.
    pub trace_url: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            prefix: super::DashboardState::DEFAULT_PREFIX.into(),
            bearer_token: None,
            basic_username: None,
            basic_password: None,
            mutations_page_size: super::DashboardState::DEFAULT_MUTATIONS_PAGE_SIZE,
            health: super::HealthThresholds::default(),
            trace_url: None,
        }
    }
}

impl ServeConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        ensure_valid!(
            self.prefix.is_empty() || (self.prefix.starts_with('/') && !self.prefix.ends_with('/')),
            "serve.prefix must be empty or start with / and not end with /, got {:?}",
            self.prefix
        );
        ensure_valid!(self.mutations_page_size >= 1, "serve.mutations_page_size must be at least 1");
        ensure_valid!(
            self.trace_url.as_deref().is_none_or(|u| (u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/')) && u.contains("{trace_id}")),
            "serve.trace_url must be an http(s) URL or a path with {{trace_id}} in it, got {:?}",
            self.trace_url
        );
        ensure_valid!(
            self.bearer_token.as_deref().is_none_or(|t| !t.trim().is_empty()),
            "serve.bearer_token is set but empty (unset it to serve without auth)"
        );
        ensure_valid!(
            self.basic_username.as_deref().is_none_or(|u| !u.trim().is_empty()),
            "serve.basic_username is set but empty"
        );
        ensure_valid!(
            self.basic_username.is_none() || self.basic_password.as_deref().is_some_and(|p| !p.is_empty()),
            "serve.basic_username needs a non-empty serve.basic_password"
        );
        Ok(())
    }

    /// The auth `tether-pro serve` puts around every route; `None` when neither bearer nor
    /// basic auth is configured.
    pub fn auth(&self) -> Option<super::auth::AuthConfig> {
        let basic = self.basic_username.as_deref().map(|u| (u, self.basic_password.as_deref().unwrap_or("")));
        super::auth::AuthConfig::new(self.bearer_token.as_deref(), basic)
    }
}

