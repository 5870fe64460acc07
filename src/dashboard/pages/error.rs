//! The pages' error type, which is a response: a handler returns it, and [`render`] (the
//! pages' response middleware, which has the dashboard's state) turns it into an HTML page
//! with the navigation and the matching status. The body never shows internals.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::prefix;
use super::views::{ErrorPage, Nav};
use crate::dashboard::{DashboardError, DashboardState};

/// Why a page could not be shown; rendered as an HTML page with the matching status.
#[derive(Debug, Clone)]
pub enum PageError {
    BadRequest(String),
    NotFound(String),
    Unavailable,
}

impl From<DashboardError> for PageError {
    fn from(e: DashboardError) -> Self {
        match e {
            DashboardError::BadRequest(m) => PageError::BadRequest(m),
            DashboardError::NotFound => PageError::NotFound("Nothing here.".into()),
            DashboardError::Store(e) => e.into(),
        }
    }
}

impl From<clickhouse::error::Error> for PageError {
    fn from(e: clickhouse::error::Error) -> Self {
        tracing::error!(target: "tether_pro::dashboard", error = %e, "dashboard page query failed");
        PageError::Unavailable
    }
}

impl PageError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ClickHouse is unavailable",
                "The captured data cannot be read right now. Your sync server is not affected; try again shortly.".into(),
            ),
        }
    }
}

/// The status and a plain body; the error itself rides along for [`render`].
impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, heading, _) = self.parts();
        let mut resp = (status, heading).into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// Renders a [`PageError`] response as the HTML error page; every other response passes.
pub async fn render(State(state): State<DashboardState>, mut resp: Response) -> Response {
    let Some(e) = resp.extensions_mut().remove::<PageError>() else { return resp };
    let (status, heading, message) = e.parts();
    let page = ErrorPage { nav: Nav::new(&prefix(&state), "", heading), status: status.as_u16(), heading, message };
    let body = page.render().unwrap_or_else(|_| heading.to_owned());
    (status, Html(body)).into_response()
}
