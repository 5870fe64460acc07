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
    /// Each accepted `Authorization` value, with the basic-auth user it names.
    expected: Vec<(Vec<u8>, Option<String>)>,
    challenge: &'static str,
}

/// The user `tether-pro serve`'s basic auth let in, as a request extension (replay records
/// it as the actor: a header a client can set is not an identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicUser(pub String);

impl AuthConfig {
    /// `Authorization: Bearer <token>` and/or `Authorization: Basic <user:password>`.
    /// `None` when neither is configured. A credential that is configured but empty (an empty
    /// token, user or password, e.g. from an unset secret) accepts nothing: the dashboard then
    /// refuses every request instead of silently serving without auth.
    pub fn new(bearer: Option<&str>, basic: Option<(&str, &str)>) -> Option<Self> {
        if bearer.is_none() && basic.is_none() {
            return None;
        }
        let mut expected = Vec::new();
        if let Some(t) = bearer.filter(|t| !t.is_empty()) {
            expected.push((format!("Bearer {t}").into_bytes(), None));
        }
        if let Some((u, p)) = basic.filter(|(u, p)| !u.is_empty() && !p.is_empty()) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            expected.push((format!("Basic {encoded}").into_bytes(), Some(u.to_owned())));
        }
        let challenge = if basic.is_some() { "Basic realm=\"tether-pro\"" } else { "Bearer" };
        Some(AuthConfig { expected, challenge })
    }

    /// `Some(basic user)` when `presented` is one of the credentials.
    fn accepts(&self, presented: &[u8]) -> Option<Option<String>> {
        // Compare every candidate in full, in constant time for equal lengths.
        self.expected.iter().fold(None, |found, (e, user)| if constant_time_eq(e, presented) { Some(user.clone()) } else { found })
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
    let mut req = req;
    let presented = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    if let Some(user) = auth.accepts(presented) {
        if let Some(user) = user {
            req.extensions_mut().insert(BasicUser(user));
        }
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
        assert_eq!(a.accepts(b"Bearer s3cret"), Some(None));
        assert_eq!(a.accepts(b"Basic b3BzOnB3"), Some(Some("ops".to_owned())));
        for bad in [&b""[..], b"Bearer s3cre", b"Bearer s3cretX", b"bearer s3cret", b"Basic b3BzOnB4", b"s3cret"] {
            assert!(a.accepts(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(AuthConfig::new(None, None).is_none());
    }

    #[test]
    fn configured_but_empty_credentials_fail_closed() {
        for a in [AuthConfig::new(Some(""), None), AuthConfig::new(None, Some(("", "pw"))), AuthConfig::new(None, Some(("ops", "")))] {
            let a = a.expect("configured auth is never switched off");
            for presented in [&b""[..], b"Bearer ", b"Bearer", b"Basic Om53", b"Basic b3BzOg==", b"Basic OnB3"] {
                assert!(a.accepts(presented).is_none(), "{}", String::from_utf8_lossy(presented));
            }
        }
    }
}
