//! The web page (`assets/`), embedded in the binary: no files to find at run time, no build step.

use std::io::Read;

use actix_web::body::MessageBody;
use actix_web::http::{StatusCode, header};
use actix_web::web::Path;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, get};

use super::error::ApiError;

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const RLE_MJS: &str = include_str!("../../assets/rle.mjs");
const STYLE_CSS: &str = include_str!("../../assets/style.css");
const FAVICON_SVG: &str = include_str!("../../assets/favicon.svg");
const LOCAL_DECODER_MJS: &str = include_str!("../../assets/local_decoder.mjs");
const SVG: &str = "image/svg+xml";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// onnxruntime-web, which the page runs the mask decoder with (fetched from npm by build.rs; empty files where the
/// build could not fetch it, and then the page decodes on the server).
const ORT_WEB_VERSION: &str = env!("SAMSERVE_ORT_WEB_VERSION");
const ORT_WASM_MJS: &[u8] = include_bytes!(concat!(env!("SAMSERVE_ORT_WEB_DIR"), "/ort.wasm.min.mjs"));
const ORT_RUNTIME_MJS: &[u8] = include_bytes!(concat!(env!("SAMSERVE_ORT_WEB_DIR"), "/ort-wasm-simd-threaded.mjs"));
const ORT_RUNTIME_WASM_GZ: &[u8] =
    include_bytes!(concat!(env!("SAMSERVE_ORT_WEB_DIR"), "/ort-wasm-simd-threaded.wasm.gz"));

/// Same-origin everything: the page works with cross-origin isolation (COOP/COEP, which WebAssembly threads need)
/// and loads nothing from elsewhere; `wasm-unsafe-eval` lets it compile onnxruntime-web's WebAssembly.
fn page_headers(content_type: &'static str) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Embedder-Policy", "require-corp"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
             connect-src 'self'",
        ))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    response
}

fn page_response(content_type: &'static str, body: impl MessageBody + 'static) -> HttpResponse {
    page_headers(content_type).body(body)
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
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
        "app.js" => Ok(page_response(JAVASCRIPT, APP_JS)),
        "rle.mjs" => Ok(page_response(JAVASCRIPT, RLE_MJS)),
        "local_decoder.mjs" => Ok(page_response(JAVASCRIPT, LOCAL_DECODER_MJS)),
        "style.css" => Ok(page_response("text/css; charset=utf-8", STYLE_CSS)),
        "favicon.svg" => Ok(page_response(SVG, FAVICON_SVG)),
        other => Err(not_found(format!("no asset {other:?}"))),
    }
}

/// onnxruntime-web's files, revalidated by version (`ETag`); the WebAssembly gzipped to browsers that take it.
#[get("/assets/ort/{file}")]
pub async fn onnxruntime_web(request: HttpRequest, file: Path<String>) -> Result<HttpResponse, ApiError> {
    let (content_type, body) = match file.as_str() {
        "ort.wasm.min.mjs" => (JAVASCRIPT, ORT_WASM_MJS),
        "ort-wasm-simd-threaded.mjs" => (JAVASCRIPT, ORT_RUNTIME_MJS),
        "ort-wasm-simd-threaded.wasm" => ("application/wasm", ORT_RUNTIME_WASM_GZ),
        other => return Err(not_found(format!("no onnxruntime-web file {other:?}"))),
    };
    if body.is_empty() {
        return Err(not_found("this build of samserve has no onnxruntime-web: the page decodes on the server".into()));
    }
    let etag = format!("\"onnxruntime-web-{ORT_WEB_VERSION}\"");
    let header_has = |name: header::HeaderName, wanted: &str| {
        request.headers().get(name).and_then(|value| value.to_str().ok()).is_some_and(|value| value.contains(wanted))
    };
    if header_has(header::IF_NONE_MATCH, &etag) {
        return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
    }
    let mut response = page_headers(content_type);
    response.insert_header((header::ETAG, etag));
    if content_type != "application/wasm" {
        return Ok(response.body(body));
    }
    response.insert_header((header::VARY, "Accept-Encoding"));
    if header_has(header::ACCEPT_ENCODING, "gzip") {
        return Ok(response.insert_header((header::CONTENT_ENCODING, "gzip")).body(body));
    }
    let mut wasm = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut wasm).expect("build.rs gzipped it");
    Ok(response.body(wasm))
}
