//! Optional bearer or basic auth for `tether-pro serve` (the library router has none, like
//! the original product: a host wraps it in its own auth layer).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// The credentials every request must present.
#[derive(Clone)]
pub struct AuthConfig {
    expected: Vec<Vec<u8>>,
    challenge: &'static str,
}

impl AuthConfig {
    /// `Authorization: Bearer <token>` and/or `Authorization: Basic <user:password>`.
    /// `None` when neither is configured.
    pub fn new(bearer: Option<&str>, basic: Option<(&str, &str)>) -> Option<Self> {
        let mut expected = Vec::new();
        if let Some(t) = bearer.filter(|t| !t.is_empty()) {
            expected.push(format!("Bearer {t}").into_bytes());
        }
        if let Some((u, p)) = basic.filter(|(u, _)| !u.is_empty()) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            expected.push(format!("Basic {encoded}").into_bytes());
        }
        let challenge = if basic.is_some() { "Basic realm=\"tether-pro\"" } else { "Bearer" };
        (!expected.is_empty()).then_some(AuthConfig { expected, challenge })
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        // Compare every candidate in full, in constant time for equal lengths.
        self.expected.iter().fold(false, |ok, e| ok | constant_time_eq(e, presented))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 unless the request carries one of the configured credentials.
pub async fn require(State(auth): State<AuthConfig>, req: Request, next: Next) -> Response {
    let presented = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    if auth.accepts(presented) {
        return next.run(req).await;
    }
    let mut resp = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(auth.challenge));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_configured_credentials() {
        let a = AuthConfig::new(Some("s3cret"), Some(("ops", "pw"))).unwrap();
        assert!(a.accepts(b"Bearer s3cret"));
        assert!(a.accepts(b"Basic b3BzOnB3"));
        for bad in [&b""[..], b"Bearer s3cre", b"Bearer s3cretX", b"bearer s3cret", b"Basic b3BzOnB4", b"s3cret"] {
            assert!(!a.accepts(bad), "{}", String::from_utf8_lossy(bad));
        }
        assert!(AuthConfig::new(None, None).is_none());
        assert!(AuthConfig::new(Some(""), None).is_none());
    }
}
