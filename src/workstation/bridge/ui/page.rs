//! The page's files, embedded in the binary (no CDN, no network fetches):
//! `index.html` with the session's CSRF token put in, `app.js` (plain
//! JavaScript, web components, no build step) and `style.css` (light and
//! dark by the system's preference).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::routes::hardened;
use crate::workstation::bridge::Bridge;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
/// Where `index.html` takes the CSRF token.
const CSRF_SLOT: &str = "{{csrf}}";

/// An asset with its type and the page's headers.
fn asset(content_type: &'static str, body: String) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    hardened(response.headers_mut());
    response
}

/// `GET /ui/`: the page, carrying this session's CSRF token.
pub(super) async fn index(State(bridge): State<Arc<Bridge>>, headers: HeaderMap) -> Response {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let csrf = bridge.ui.sessions.csrf_of(cookie).unwrap_or_default();
    asset("text/html; charset=utf-8", INDEX.replace(CSRF_SLOT, &csrf))
}

/// `GET /ui/app.js`.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT.into())
}

/// `GET /ui/style.css`.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_slot_for_its_token_and_no_outside_references() {
        assert_eq!(INDEX.matches(CSRF_SLOT).count(), 1);
        for text in [INDEX, SCRIPT, STYLE] {
            for outside in ["http://", "https://", "//cdn", "@import"] {
                assert!(
                    !text.contains(outside),
                    "the page refers outside: {outside}"
                );
            }
            // Text from files, printers and agents goes in as text only.
            assert!(!text.contains("innerHTML") && !text.contains("insertAdjacentHTML"));
        }
        let weight = INDEX.len() + SCRIPT.len() + STYLE.len();
        assert!(weight <= 150 * 1024, "the page weighs {weight} bytes");
    }
}
