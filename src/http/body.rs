//! Request bodies: bounded reading, raw image vs multipart uploads, and JSON with errors that say what is wrong.

use actix_multipart::Multipart;
use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::Payload;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads a byte stream, refusing (413) as soon as it passes `limit`.
pub async fn read_limited<S, B, E>(mut stream: S, limit: usize) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::malformed_body(format!("could not read the body: {e}")))?;
        if body.len() + chunk.as_ref().len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(chunk.as_ref());
    }
    Ok(body)
}

/// The body's length as its Content-Length header says, if it says.
pub fn declared_length(request: &HttpRequest) -> Option<usize> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The whole body, refused early from Content-Length when that already says too much.
pub async fn read_body(request: &HttpRequest, payload: Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    if declared_length(request).is_some_and(|length| length > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    read_limited(payload, limit).await
}

fn mime_essence(request: &HttpRequest) -> Option<String> {
    let value = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

pub fn is_multipart(request: &HttpRequest) -> bool {
    mime_essence(request).as_deref() == Some("multipart/form-data")
}

/// The fields of a multipart form that samserve reads: the file `image` and the JSON text `request`.
#[derive(Default)]
pub struct Form {
    pub image: Option<Vec<u8>>,
    pub request: Option<Vec<u8>>,
}

/// Reads a multipart form of the `fields` named (others are 422, as unknown JSON fields are) with a limit on all
/// of it together.
pub async fn read_form(
    request: &HttpRequest,
    payload: Payload,
    limit: usize,
    fields: &[&str],
) -> Result<Form, ApiError> {
    let mut multipart = Multipart::new(request.headers(), payload);
    let mut form = Form::default();
    let mut total = 0usize;
    while let Some(field) = multipart.next().await {
        let field = field.map_err(|e| ApiError::malformed_body(format!("malformed multipart body: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        if !fields.contains(&name.as_str()) {
            return Err(unknown_field(&name, fields));
        }
        let bytes = read_limited(field, limit - total).await?;
        total += bytes.len();
        match name.as_str() {
            "image" => form.image = Some(bytes),
            "request" => form.request = Some(bytes),
            _ => {} // not among `fields` of any route (checked above)
        }
    }
    Ok(form)
}

/// 422 for a form field the route does not take.
pub fn unknown_field(name: &str, fields: &[&str]) -> ApiError {
    ApiError::invalid_request(format!("unknown form field {name:?}: the form takes `{}`", fields.join("`, `")))
}

/// The image of an upload: the raw body (any `image/*` or `application/octet-stream`) or the multipart file `image`.
pub async fn read_image_upload(request: &HttpRequest, payload: Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    match mime_essence(request).as_deref() {
        Some("multipart/form-data") => read_form(request, payload, limit, &["image"])
            .await?
            .image
            .ok_or_else(|| ApiError::malformed_body("the multipart form has no file field `image`")),
        Some(mime) if mime.starts_with("image/") || mime == "application/octet-stream" => {
            read_body(request, payload, limit).await
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "Content-Type {} is not an image: send the image as the body with its image/* type, or as the file \
             field `image` of multipart/form-data",
            other.unwrap_or("(none)")
        ))),
    }
}

/// Whether the JSON text holds a bare NaN or Infinity token (outside strings): well-formed intent with an
/// invalid number, which deserves 422 rather than "malformed JSON". Python's json.dumps writes these.
fn has_non_finite_number(text: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for (i, &byte) in text.iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if text[i..].starts_with(b"NaN") || text[i..].starts_with(b"Infinity") {
            return true;
        }
    }
    false
}

/// Parses a JSON body: syntax errors are 400 `malformed_json`, well-formed JSON of the wrong shape or with
/// non-finite numbers is 422. Depth: the request types have a fixed shape (anything else is refused at its first
/// level), and serde_json refuses nesting deeper than 128 levels where it builds free-form values.
pub fn parse_json<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    if text.is_empty() {
        return Err(ApiError::new(actix_web::http::StatusCode::BAD_REQUEST, "empty_body", "the body is empty"));
    }
    serde_json::from_slice(text).map_err(|error| {
        // serde_json calls an array longer than a fixed-size field "trailing characters", a syntax error; the
        // text is well-formed JSON all the same.
        // (Parsed as values, so that nesting past serde_json's limit stays malformed.)
        let well_formed = || serde_json::from_slice::<serde_json::Value>(text).is_ok();
        if error.is_data() || (error.is_syntax() && well_formed()) {
            ApiError::invalid_request(error.to_string())
        } else if has_non_finite_number(text) {
            ApiError::invalid_prompt("coordinates must be finite numbers (NaN and Infinity are not)")
        } else {
            ApiError::malformed_json(error.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_are_found_outside_strings_only() {
        assert!(has_non_finite_number(br#"{"points": [[NaN, 1]]}"#));
        assert!(has_non_finite_number(br#"{"box": [0, 0, -Infinity, 1]}"#));
        assert!(!has_non_finite_number(br#"{"mask_input": "NaN \" Infinity"}"#));
        assert!(!has_non_finite_number(br#"{"points": [[1, 2]]"#));
    }

    #[test]
    fn json_errors_are_classified() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Shape {
            x: f64,
        }
        let status = |text: &[u8]| parse_json::<Shape>(text).unwrap_err().status.as_u16();
        assert_eq!(status(b"{\"x\": 1"), 400);
        assert_eq!(status(b"{\"x\": \"one\"}"), 422);
        assert_eq!(status(b"{\"x\": NaN}"), 422);
        assert_eq!(status(b""), 400);
        // Where a body is parsed into free-form values, nesting past serde_json's limit of 128 is refused.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse_json::<serde_json::Value>(deep.as_bytes()).unwrap_err().code, "malformed_json");
    }
}
