//! Where the page for people lives: `GET /api/profiling/` and its assets under
//! `/api/profiling/page/`. Static files compiled into the binary (`include_str!` of
//! `profiling-server/page/*`) that render everything from the JSON API in the browser: the
//! server builds no HTML. They carry no recorded data, so they are served without the bearer
//! token; the page asks for the token once, keeps it for the tab (`sessionStorage`) and sends
//! it with every API call.
//!
//! Caching: every asset has a strong `ETag` (a hash of its bytes, fixed at compile time) and
//! `Cache-Control: no-cache`, so a browser revalidates and gets `304 Not Modified` until the
//! server is rebuilt with other assets.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::routes::API_PREFIX;

/// Where the page is: the API prefix and a slash (relative asset paths resolve under it).
const INDEX_PATH: &str = "/api/profiling/";

/// One compiled-in file.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: &'static str,
}

/// FNV-1a, 64 bits: cheap, deterministic, evaluated at compile time for the ETags.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"<16 hex digits>"`, the quoted form an ETag header takes.
const fn etag_of(body: &str) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(body.as_bytes());
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {{
        const BODY: &str = include_str!(concat!("../page/", $name));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            name: $name,
            content_type: $content_type,
            body: BODY,
            // The bytes are ASCII (quote and hex digits) by construction.
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("etag is ASCII"),
            },
        }
    }};
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the page; the first is the document itself.
static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("format.js", JS),
    asset!("charts.js", JS),
    asset!("flame.js", JS),
    asset!("overview.js", JS),
    asset!("functions.js", JS),
    asset!("flameview.js", JS),
    asset!("snapshots.js", JS),
];

/// The page's routes: the document at `{API_PREFIX}/`, the files at `{API_PREFIX}/page/{file}`,
/// and `{API_PREFIX}` redirecting to the document. Mounted outside the bearer-token check.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(API_PREFIX, get(|| async { Redirect::permanent(INDEX_PATH) }))
        .route(INDEX_PATH, get(index))
        .route(&format!("{API_PREFIX}/page/{{file}}"), get(asset))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// `GET /api/profiling/`: the page.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

/// `GET /api/profiling/page/{file}`: a script or style sheet of the page.
pub(crate) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == file)
        .map(|a| serve(a, &headers))
        .ok_or_else(|| ApiError::NotFound(format!("no page asset named {file:?}")))
}

fn serve(a: &Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(a.content_type)),
        (header::ETAG, HeaderValue::from_static(a.etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, a.body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_sits_under_the_api_prefix() {
        assert_eq!(INDEX_PATH, format!("{API_PREFIX}/"));
    }

    #[test]
    fn etags_are_quoted_hashes_that_differ_by_content() {
        let tags: Vec<&str> = ASSETS.iter().map(|a| a.etag).collect();
        for t in &tags {
            assert_eq!(t.len(), 18, "{t}");
            assert!(t.starts_with('"') && t.ends_with('"'), "{t}");
            assert!(t[1..17].chars().all(|c| c.is_ascii_hexdigit()), "{t}");
        }
        let mut unique = tags.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
        assert_eq!(etag_of("a"), etag_of("a"));
        assert_ne!(etag_of("a"), etag_of("b"));
    }

    #[test]
    fn the_document_loads_every_script_and_style_it_names() {
        let html = ASSETS[0].body;
        for a in &ASSETS[1..] {
            // app.js imports the other modules itself; the document names app.js and style.css.
            if a.name == "app.js" || a.name == "style.css" {
                assert!(
                    html.contains(&format!("page/{}", a.name)),
                    "index.html does not load {}",
                    a.name
                );
            }
        }
        let app = ASSETS
            .iter()
            .find(|a| a.name == "app.js")
            .map(|a| a.body)
            .unwrap_or_default();
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js") && a.name != "app.js") {
            let imported = ASSETS
                .iter()
                .any(|b| b.name.ends_with(".js") && b.body.contains(&format!("./{}", a.name)));
            assert!(
                imported || app.contains(a.name),
                "{} is served but never imported",
                a.name
            );
        }
    }
}
