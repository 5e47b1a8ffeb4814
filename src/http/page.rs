//! The web page (`assets/`), embedded in the binary: no files to find at run time, no build step.

use actix_web::http::header;
use actix_web::web::Path;
use actix_web::{HttpResponse, get};

use super::error::ApiError;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const RLE_MJS: &str = include_str!("../../assets/rle.mjs");
const STYLE_CSS: &str = include_str!("../../assets/style.css");
const FAVICON_SVG: &str = include_str!("../../assets/favicon.svg");
const SVG: &str = "image/svg+xml";

/// Same-origin everything: the page works with cross-origin isolation (COOP/COEP) and loads nothing from elsewhere.
fn page_response(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Embedder-Policy", "require-corp"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'",
        ))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The page: upload an image, click to segment.
#[get("/")]
pub async fn index() -> HttpResponse {
    page_response("text/html; charset=utf-8", INDEX_HTML)
}

/// The icon, also where clients that ignore the page's `<link rel="icon">` look for it.
#[get("/favicon.ico")]
pub async fn favicon() -> HttpResponse {
    page_response(SVG, FAVICON_SVG)
}

#[get("/assets/{file}")]
pub async fn asset(file: Path<String>) -> Result<HttpResponse, ApiError> {
    match file.as_str() {
        "app.js" => Ok(page_response("text/javascript; charset=utf-8", APP_JS)),
        "rle.mjs" => Ok(page_response("text/javascript; charset=utf-8", RLE_MJS)),
        "style.css" => Ok(page_response("text/css; charset=utf-8", STYLE_CSS)),
        "favicon.svg" => Ok(page_response(SVG, FAVICON_SVG)),
        other => Err(ApiError::new(actix_web::http::StatusCode::NOT_FOUND, "not_found", format!("no asset {other:?}"))),
    }
}
