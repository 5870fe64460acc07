//! The shared query-string extractor of every page, and the window helpers built on it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};

use super::cursor::decode_cursor;
use super::queries::Cursor;
use super::views::{Nav, Tab, query_string, rfc3339};
use super::{MAX_PARAM_CHARS, PageError, WINDOWS, bad};
use crate::dashboard::metrics::{MetricsQuery, Window};

/// The query string as pairs; the last non-empty value of a name wins, empty means absent
/// (a submitted form sends every field).
pub struct Params(Vec<(String, String)>);

impl Params {
    fn from_query(q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Self, PageError> {
        let Query(pairs) = q.map_err(|_| bad("The query string could not be read."))?;
        for (k, v) in &pairs {
            if v.chars().count() > MAX_PARAM_CHARS {
                return Err(bad(format!("The parameter {k} is too long.")));
            }
        }
        Ok(Params(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == name && !v.trim().is_empty()).map(|(_, v)| v.trim())
    }

    /// The last non-empty value of `name` exactly as sent, blanks kept (an id is matched
    /// exactly: `" x"` is not `"x"`).
    pub fn exact(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    pub fn one_of(&self, name: &str, allowed: &[&'static str]) -> Result<Option<&'static str>, PageError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => allowed.iter().find(|a| **a == v).copied().map(Some).ok_or_else(|| {
                bad(format!("The parameter {name} must be one of: {}.", allowed.join(", ")))
            }),
        }
    }

    /// An RFC 3339 time as microseconds (1970..2100, what the tables hold).
    pub fn time(&self, name: &str) -> Result<Option<i64>, PageError> {
        let Some(v) = self.get(name) else { return Ok(None) };
        let t = DateTime::parse_from_rfc3339(v)
            .map_err(|_| bad(format!("The parameter {name} must be an RFC 3339 time, e.g. 2026-05-18T10:00:00Z.")))?
            .with_timezone(&Utc);
        let lo = DateTime::<Utc>::UNIX_EPOCH;
        let hi = DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z").expect("constant").with_timezone(&Utc);
        if t < lo || t >= hi {
            return Err(bad(format!("The parameter {name} must be between 1970 and 2100.")));
        }
        Ok(Some(t.timestamp_micros()))
    }

    pub fn cursor(&self) -> Result<Option<Cursor>, PageError> {
        self.cursor_named("before")
    }

    /// A paging cursor in the parameter `name`.
    pub fn cursor_named(&self, name: &str) -> Result<Option<Cursor>, PageError> {
        self.get(name).map(|v| decode_cursor(v).ok_or_else(|| bad(format!("The parameter {name} is not a valid cursor.")))).transpose()
    }

    /// `page`, from 1.
    pub fn page(&self) -> Result<u64, PageError> {
        match self.get("page") {
            None => Ok(1),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(n),
                _ => Err(bad("The parameter page must be a whole number from 1.")),
            },
        }
    }

    /// The window of the conflicts and failures pages: `window` (default 24h) or `from`/`to`.
    pub fn window(&self) -> Result<Window, PageError> {
        // Range-check the times first (the metrics parser accepts any RFC 3339 year).
        self.time("from")?;
        self.time("to")?;
        let q = MetricsQuery { window: self.owned("window"), from: self.owned("from"), to: self.owned("to") };
        Ok(q.window(Utc::now())?)
    }
}


impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        Params::from_query(Query::from_request_parts(parts, state).await)
    }
}

pub fn window_label(p: &Params, w: &Window) -> String {
    match p.get("window") {
        Some(name) => format!("last {name}"),
        None if p.get("from").is_some() => format!("{} to {}", rfc3339(w.from), rfc3339(w.to)),
        None => "last 24h".into(),
    }
}

pub fn window_tabs(nav: &Nav, path: &str, p: &Params) -> Vec<Tab> {
    let current = if p.get("from").is_some() { "" } else { p.get("window").unwrap_or("24h") };
    WINDOWS
        .iter()
        .map(|w| Tab { label: w, href: format!("{}{path}{}", nav.prefix, query_string(&[("window", w)])), current: *w == current })
        .collect()
}

