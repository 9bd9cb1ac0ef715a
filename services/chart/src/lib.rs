//! The chart page: candle history and the live candle of any symbol in a
//! browser, served by the mesh on its gRPC port (`server.chart`; on in dev
//! mode) at `/` and `/chart`.
//!
//! The page is static: HTML, CSS and ES modules in `web/`, plus TradingView
//! Lightweight Charts™ vendored in `vendor/lightweight-charts/` (pinned; see
//! its README). Everything is embedded in the binary, so the page works with
//! no internet access and no build step. In the browser it calls the mesh it
//! came from over gRPC-Web: `ListInstruments`, `GetCandles` (older pages as
//! the chart is scrolled left) and `SubscribeCandles` (resumed with its cursor
//! after a reconnect). `web/proto.js` encodes and decodes just the messages it
//! uses; `web/grpc_web.js` does the framing.
//!
//! Assets are revalidated on every load (`no-cache` with an `ETag`), so a new
//! binary is picked up at once. The page itself is served with a content
//! security policy that allows only its own origin.

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the page is served.
pub const PAGE_PATHS: &[&str] = &["/", "/chart"];

/// The vendored Lightweight Charts release (see `vendor/lightweight-charts/README.md`).
pub const LIGHTWEIGHT_CHARTS_VERSION: &str = "5.3.0";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Only this origin: scripts, styles, fetches. Lightweight Charts sets
/// element styles from script, and its attribution logo is an inline SVG
/// (hence `style-src 'unsafe-inline'` and `data:` images).
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file and the path it is served at.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const PAGE: Asset = Asset {
    path: "/",
    content_type: HTML,
    body: include_bytes!("../web/index.html"),
};

const ASSETS: &[Asset] = &[
    Asset {
        path: "/chart/app.js",
        content_type: JS,
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/chart/proto.js",
        content_type: JS,
        body: include_bytes!("../web/proto.js"),
    },
    Asset {
        path: "/chart/grpc_web.js",
        content_type: JS,
        body: include_bytes!("../web/grpc_web.js"),
    },
    Asset {
        path: "/chart/style.css",
        content_type: CSS,
        body: include_bytes!("../web/style.css"),
    },
    Asset {
        path: "/chart/lightweight-charts.mjs",
        content_type: JS,
        body: include_bytes!(
            "../vendor/lightweight-charts/lightweight-charts.standalone.production.mjs"
        ),
    },
    Asset {
        path: "/chart/lightweight-charts/LICENSE",
        content_type: TEXT,
        body: include_bytes!("../vendor/lightweight-charts/LICENSE"),
    },
    Asset {
        path: "/chart/lightweight-charts/NOTICE",
        content_type: TEXT,
        body: include_bytes!("../vendor/lightweight-charts/NOTICE"),
    },
];

/// The routes of the page and its assets (GET and HEAD), to serve next to
/// the gRPC services.
pub fn router() -> Router {
    let mut router = Router::new();
    for path in PAGE_PATHS {
        router = router.route(
            path,
            get(|headers: HeaderMap| async move { serve(&PAGE, &headers) }),
        );
    }
    for asset in ASSETS {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        );
    }
    router
}

/// A strong validator per asset: a hash of its bytes, computed once.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
        std::iter::once(&PAGE)
            .chain(ASSETS)
            .map(|a| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                a.body.hash(&mut hasher);
                (a.path, format!("\"{:016x}\"", hasher.finish()))
            })
            .collect()
    });
    TAGS.iter()
        .find(|(path, _)| *path == asset.path)
        .map(|(_, tag)| tag.as_str())
        .unwrap_or("\"0\"")
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset);
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ETAG, HeaderValue::from_static(tag));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.content_type == HTML {
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    let fresh = request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == tag || v.trim() == "*");
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = Request::get(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = router()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, body.to_vec())
    }

    #[tokio::test]
    async fn the_page_is_served_at_both_paths_with_its_policy() {
        for path in PAGE_PATHS {
            let (status, headers, body) = get(path, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[CONTENT_TYPE], HTML);
            assert!(
                headers[CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("connect-src 'self'")
            );
            assert_eq!(headers[CACHE_CONTROL], "no-cache");
            assert!(String::from_utf8(body).unwrap().contains("/chart/app.js"));
        }
    }

    #[tokio::test]
    async fn an_unchanged_asset_is_not_sent_again() {
        let (status, headers, body) = get("/chart/lightweight-charts.mjs", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], JS);
        assert!(body.len() > 100_000);
        let tag = headers[ETAG].to_str().unwrap().to_string();
        let (status, _, body) =
            get("/chart/lightweight-charts.mjs", &[("if-none-match", &tag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (status, _, _) = get(
            "/chart/lightweight-charts.mjs",
            &[("if-none-match", "\"x\"")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (_, page, _) = get("/", &[]).await;
        assert_ne!(page[ETAG].to_str().unwrap(), tag, "one tag per file");
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        let (status, _, _) = get("/chart/nope.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Every file the page and its modules refer to is served.
    #[tokio::test]
    async fn every_reference_resolves() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        let page = std::str::from_utf8(PAGE.body).unwrap();
        let mut references: Vec<String> = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                if target.starts_with('/') {
                    references.push(target.to_string());
                }
            }
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let source = std::str::from_utf8(asset.body).unwrap();
            for part in source.split("from './").skip(1) {
                references.push(format!("/chart/{}", &part[..part.find('\'').unwrap()]));
            }
        }
        assert!(references.len() >= 7, "{references:?}");
        for reference in &references {
            assert!(
                served.contains(&reference.as_str()),
                "{reference} is not served"
            );
            let (status, _, _) = get(reference, &[]).await;
            assert_eq!(status, StatusCode::OK, "{reference}");
        }
    }

    /// The vendored build, its README and the re-vendoring script name the same release.
    #[test]
    fn the_vendored_release_is_the_pinned_one() {
        let build = std::str::from_utf8(
            ASSETS
                .iter()
                .find(|a| a.path == "/chart/lightweight-charts.mjs")
                .unwrap()
                .body,
        )
        .unwrap();
        assert!(
            build[..400].contains(&format!(
                "Lightweight Charts™ v{LIGHTWEIGHT_CHARTS_VERSION}"
            )),
            "{}",
            &build[..400]
        );
        let readme = include_str!("../vendor/lightweight-charts/README.md");
        assert!(readme.contains(&format!(
            "| version | {LIGHTWEIGHT_CHARTS_VERSION} (pinned) |"
        )));
        let script = include_str!("../vendor/vendor-lightweight-charts.sh");
        assert!(script.contains(&format!("\nVERSION={LIGHTWEIGHT_CHARTS_VERSION}\n")));
        let sha = script
            .lines()
            .find_map(|l| l.strip_prefix("SHA256="))
            .unwrap();
        assert!(
            readme.contains(sha),
            "README and script name the same tarball sha256"
        );
    }
}
