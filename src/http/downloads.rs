//! What a page needs to run a model's decoder itself (in the browser): an image's cached embedding and the
//! decoder's ONNX file. Both are bytes that never change under their ETag, so clients and caches keep them and
//! revalidate with `If-None-Match` (304).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentDisposition, EntityTag, IfNoneMatch};
use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, get};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::model::{BrowserDecoder, EmbeddingDtype};
use crate::tenant::Tenant;

const OCTET_STREAM: &str = "application/octet-stream";
/// An image id's embedding never changes, but it is the tenant's data: its own browser may keep it, no shared cache.
const EMBEDDING_CACHING: &str = "private, max-age=86400";
/// The decoder URL that `GET /v1/models` lists names the file's hash: that URL's bytes never change.
const VERSIONED_DECODER_CACHING: &str = "public, max-age=31536000, immutable";
/// The same with API keys: a shared cache would hand the file to clients without a key.
const VERSIONED_DECODER_CACHING_WITH_KEYS: &str = "private, max-age=31536000, immutable";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingQuery {
    /// The float type of the tensors: `f16` when absent. `GET /v1/models` gives the one the server decodes from
    /// (`embedding_dtype`).
    pub dtype: Option<EmbeddingDtype>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DecoderQuery {
    /// The file's version, as `decoder_url` in `GET /v1/models` gives it (the first 16 hex digits of its SHA-256):
    /// the answer may then be cached for good. Without it, or with another value, the answer says `no-cache`.
    pub v: Option<String>,
}

/// A downloaded file's bytes, in the spec.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct FileBytes(Vec<u8>);

/// A cached image's embedding as a safetensors file: the tensors the model's decoder takes from the cache, named
/// by the decoder inputs they feed, and in the metadata the sizes needed to prepare prompts and read masks.
#[utoipa::path(
    params(
        ("image_id" = String, Path, description = "From the upload"),
        EmbeddingQuery,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer: 304 if it is this one"),
    ),
    responses(
        (status = 200, description = "the safetensors file", body = FileBytes, content_type = "application/octet-stream",
            headers(
                ("ETag" = String, description = "the image id, quoted"),
                ("Cache-Control" = String, description = "`private, max-age=86400`"),
                ("Content-Disposition" = String, description = "`attachment; filename=\"IMAGE_ID.safetensors\"`"),
            )),
        (status = 304, description = "If-None-Match names this file: the client's copy is current",
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 404, description = "unknown or evicted", body = ErrorBody),
        (status = 422, description = "a dtype other than f16 and f32, or an unknown query parameter", body = ErrorBody),
        (status = 503, description = "not ready", body = ErrorBody),
    )
)]
#[get("/v1/images/{image_id}/embedding")]
pub async fn embedding(
    state: Data<AppState>,
    request: HttpRequest,
    image_id: Path<String>,
    query: Query<EmbeddingQuery>,
    tenant: Tenant,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine()?;
    let record = engine.find_record(&tenant, &image_id).await?;
    // One ETag per URL: each dtype has its own.
    let etag = EntityTag::new_strong(record.image_id.clone());
    if client_holds(&request, &etag) {
        return Ok(validated(HttpResponse::NotModified(), etag, EMBEDDING_CACHING).finish());
    }
    let filename = format!("{}.safetensors", record.image_id);
    let file = engine.embedding_file(record, query.dtype.unwrap_or(EmbeddingDtype::F16)).await?;
    Ok(validated(HttpResponse::Ok(), etag, EMBEDDING_CACHING)
        .content_type(OCTET_STREAM)
        .insert_header(ContentDisposition::attachment(filename))
        .body(file))
}

/// A model's decoder as an ONNX file, for onnxruntime-web; only for decoders a browser can run (`browser_decoder`
/// in `GET /v1/models`, whose `decoder_url` names this route with the file's version).
#[utoipa::path(
    params(
        ("name" = String, Path, description = "A loaded model's name"),
        DecoderQuery,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier answer: 304 if it is this one"),
    ),
    responses(
        (status = 200, description = "the ONNX file", body = FileBytes, content_type = "application/octet-stream",
            headers(
                ("ETag" = String, description = "the file's SHA-256 (64 hex digits), quoted"),
                ("Cache-Control" = String, description = "`public, max-age=31536000, immutable` (`private, ...` with API keys) with the `v` of `decoder_url`, else `no-cache`"),
            )),
        (status = 304, description = "If-None-Match names this file: the client's copy is current",
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 404, description = "unknown model, or a decoder a browser cannot run", body = ErrorBody),
        (status = 422, description = "an unknown query parameter", body = ErrorBody),
        (status = 503, description = "not ready", body = ErrorBody),
    )
)]
#[get("/v1/models/{name}/decoder.onnx")]
pub async fn decoder_file(
    state: Data<AppState>,
    request: HttpRequest,
    name: Path<String>,
    query: Query<DecoderQuery>,
) -> Result<HttpResponse, ApiError> {
    let model = state.engine()?.model(Some(&name))?;
    let decoder = model.browser_decoder.as_ref().map_err(|why| {
        let message = format!("the decoder of {:?} cannot run in a browser: {why}", name.as_str());
        ApiError::new(StatusCode::NOT_FOUND, "no_browser_decoder", message)
    })?;
    let etag = EntityTag::new_strong(decoder.sha256().to_string());
    let caching = if query.v.as_deref() != Some(decoder.version()) {
        // Another version's URL, or none: it must not keep these bytes for good.
        "no-cache"
    } else if state.keys.is_some() {
        VERSIONED_DECODER_CACHING_WITH_KEYS
    } else {
        VERSIONED_DECODER_CACHING
    };
    if client_holds(&request, &etag) {
        return Ok(validated(HttpResponse::NotModified(), etag, caching).finish());
    }
    Ok(validated(HttpResponse::Ok(), etag, caching).content_type(OCTET_STREAM).body(Bytes::from_owner(decoder.bytes())))
}

/// Where `GET /v1/models` sends a page for a model's decoder file: this route, with the file's version.
pub fn decoder_url(model_name: &str, file: &BrowserDecoder) -> String {
    format!("/v1/models/{}/decoder.onnx?v={}", path_segment(model_name), file.version())
}

/// `text` as one URL path segment: unreserved characters (RFC 3986) as they are, every other byte percent-encoded.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Whether the client already holds what `etag` names: its `If-None-Match` lists it (weak comparison, as RFC 9110
/// has it for this header) or is `*`.
fn client_holds(request: &HttpRequest, etag: &EntityTag) -> bool {
    match request.get_header::<IfNoneMatch>() {
        Some(IfNoneMatch::Any) => true,
        Some(IfNoneMatch::Items(tags)) => tags.iter().any(|tag| tag.weak_eq(etag)),
        None => false,
    }
}

/// `response` with the validator and the caching rule; a 304 carries them as the 200 would (RFC 9110, 15.4.5).
fn validated(mut response: HttpResponseBuilder, etag: EntityTag, caching: &'static str) -> HttpResponseBuilder {
    response.insert_header(header::ETag(etag)).insert_header((header::CACHE_CONTROL, caching));
    response
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn model_names_become_one_path_segment() {
        assert_eq!(path_segment("sam2.1-tiny_v~2"), "sam2.1-tiny_v~2");
        assert_eq!(path_segment("my model/é?"), "my%20model%2F%C3%A9%3F");
    }

    #[test]
    fn if_none_match_holds_the_etag_in_a_list_weakly_or_as_a_star() {
        let etag = EntityTag::new_strong("abc".to_string());
        let holds = |value: &str| {
            client_holds(&TestRequest::default().insert_header(("If-None-Match", value)).to_http_request(), &etag)
        };
        assert!(holds("\"abc\""));
        assert!(holds("\"x\", W/\"abc\""));
        assert!(holds("*"));
        assert!(!holds("\"abcd\""));
        assert!(!holds("abc"), "an unquoted tag is no tag");
        assert!(!client_holds(&TestRequest::default().to_http_request(), &etag));
    }
}
