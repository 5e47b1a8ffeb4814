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

    /// Property tests of the multipart reader: random and mutated bodies, cut into random chunks.
    mod multipart {
        use actix_web::FromRequest;
        use actix_web::dev;
        use actix_web::error::PayloadError;
        use actix_web::test::TestRequest;
        use actix_web::web::Bytes;
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::*;
        use crate::proptest_support::{apply, config, edit};

        #[derive(Debug, Clone)]
        struct Part {
            name: Option<&'static str>,
            filename: bool,
            content_type: Option<&'static str>,
            /// A Content-Length header of the part: its true length, or any other.
            content_length: Option<Option<u64>>,
            body: Vec<u8>,
        }

        #[derive(Debug, Clone)]
        struct Body {
            boundary: String,
            /// Content-Type: the form's with the boundary, or something else.
            content_type: Option<String>,
            parts: Vec<Part>,
            /// Whether the closing delimiter is there.
            closed: bool,
        }

        impl Body {
            fn bytes(&self) -> Vec<u8> {
                let mut out = Vec::new();
                for part in &self.parts {
                    out.extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
                    let mut disposition = "Content-Disposition: form-data".to_string();
                    if let Some(name) = part.name {
                        disposition += &format!("; name=\"{name}\"");
                    }
                    if part.filename {
                        disposition += "; filename=\"a.png\"";
                    }
                    out.extend_from_slice(format!("{disposition}\r\n").as_bytes());
                    if let Some(content_type) = part.content_type {
                        out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
                    }
                    if let Some(length) = part.content_length {
                        let length = length.unwrap_or(part.body.len() as u64);
                        out.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&part.body);
                    out.extend_from_slice(b"\r\n");
                }
                if self.closed {
                    out.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
                }
                out
            }

            fn content_type(&self) -> String {
                // Boundaries with characters outside a header token must be quoted (RFC 2046).
                let token = self.boundary.chars().all(|c| c.is_ascii_alphanumeric() || "'+_.-".contains(c));
                let boundary = if token { self.boundary.clone() } else { format!("\"{}\"", self.boundary) };
                self.content_type.clone().unwrap_or_else(|| format!("multipart/form-data; boundary={boundary}"))
            }
        }

        fn part() -> impl Strategy<Value = Part> {
            (
                prop::option::weighted(0.95, prop::sample::select(vec!["image", "request", "other", "", "Image"])),
                any::<bool>(),
                prop::option::of(prop::sample::select(vec![
                    "image/png",
                    "application/json",
                    "text/plain; charset=utf-8",
                    "x",
                ])),
                prop::option::weighted(0.2, prop::option::of(prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..300])),
                vec(any::<u8>(), 0..120),
            )
                .prop_map(|(name, filename, content_type, content_length, body)| Part {
                    name,
                    filename,
                    content_type,
                    content_length,
                    body,
                })
        }

        fn body() -> impl Strategy<Value = Body> {
            let boundary = prop_oneof![
                4 => "[A-Za-z0-9'()+_,./:=?-]{1,70}",
                1 => Just("----WebKitFormBoundary7MA4YWxkTrZu0gW".to_string()),
            ];
            let content_type = prop::option::weighted(
                0.15,
                prop::sample::select(vec![
                    "multipart/form-data",
                    "multipart/form-data; boundary=",
                    "multipart/form-data; boundary=\"other\"",
                    "Multipart/Form-Data; boundary=a; boundary=b",
                    "multipart/mixed; boundary=x",
                    "image/png",
                ])
                .prop_map(str::to_string),
            );
            (boundary, content_type, vec(part(), 0..4), prop::bool::weighted(0.9))
                .prop_map(|(boundary, content_type, parts, closed)| Body { boundary, content_type, parts, closed })
        }

        /// Cuts `bytes` at the given (relative) places: the reader must not depend on how the body arrives.
        fn chunks(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Bytes> {
            let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            at.extend([0, bytes.len()]);
            at.sort_unstable();
            at.windows(2).map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]])).collect()
        }

        /// A request with `content_type`, and a Content-Length header when `declared`, whatever the body's length.
        fn request(content_type: &str, declared: Option<u64>, chunks: Vec<Bytes>) -> (HttpRequest, Payload) {
            let mut request = TestRequest::post().insert_header((header::CONTENT_TYPE, content_type));
            if let Some(length) = declared {
                request = request.insert_header((header::CONTENT_LENGTH, length.to_string()));
            }
            let (request, _) = request.to_http_parts();
            let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
                Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
            let mut payload = dev::Payload::Stream { payload: stream };
            let payload = actix_web::rt::System::new()
                .block_on(Payload::from_request(&request, &mut payload))
                .expect("a payload is always extracted");
            (request, payload)
        }

        /// The form the reader should give for an intact body, when it gives one: the last of each field.
        fn expected(body: &Body, fields: &[&str], limit: usize) -> Option<Form> {
            let total: usize = body.parts.iter().map(|part| part.body.len()).sum();
            let exact = body.parts.iter().all(|part| part.content_length.is_none_or(|length| length.is_none()));
            let known = body.parts.iter().all(|part| part.name.is_some_and(|name| fields.contains(&name)));
            let last = |field: &str| body.parts.iter().rev().find(|p| p.name == Some(field)).map(|p| p.body.clone());
            (body.content_type.is_none() && body.closed && exact && known && total <= limit)
                .then(|| Form { image: last("image"), request: last("request") })
        }

        fn read(request: &HttpRequest, payload: Payload, limit: usize, fields: &[&str]) -> Result<Form, ApiError> {
            actix_web::rt::System::new().block_on(read_form(request, payload, limit, fields))
        }

        fn fields() -> impl Strategy<Value = &'static [&'static str]> {
            prop::sample::select(vec![&["image", "request"][..], &["image"][..]])
        }

        fn check(result: Result<Form, ApiError>, fields: &[&str], limit: usize) -> Result<(), TestCaseError> {
            match result {
                Ok(form) => {
                    let total = form.image.as_ref().map_or(0, Vec::len) + form.request.as_ref().map_or(0, Vec::len);
                    prop_assert!(total <= limit, "{total} bytes read past the limit of {limit}");
                    prop_assert!(form.request.is_none() || fields.contains(&"request"));
                }
                Err(error) => prop_assert!(error.status.is_client_error(), "{}: {}", error.status, error.message),
            }
            Ok(())
        }

        const TOKENS: &[&str] = &[
            "\r\n",
            "\r\n\r\n",
            "--",
            "\n",
            "\r",
            ";",
            "\"",
            "name=\"image\"",
            "Content-Disposition: form-data; name=\"request\"\r\n",
            "Content-Length: 18446744073709551615\r\n",
            "Content-Type: multipart/mixed; boundary=x\r\n",
            "--x--",
        ];

        proptest! {
            #![proptest_config(config(256))]

            #[test]
            fn intact_forms_are_read_whole(
                body in body(),
                fields in fields(),
                limit in 0usize..400,
                cuts in vec(any::<prop::sample::Index>(), 0..6),
            ) {
                let bytes = body.bytes();
                let (request, payload) = request(&body.content_type(), None, chunks(&bytes, &cuts));
                let result = read(&request, payload, limit, fields);
                if let Some(expected) = expected(&body, fields, limit) {
                    let form = result.map_err(|e| TestCaseError::fail(format!("{}: {}", e.status, e.message)))?;
                    prop_assert_eq!(form.image, expected.image);
                    prop_assert_eq!(form.request, expected.request);
                } else {
                    check(result, fields, limit)?;
                }
            }

            #[test]
            fn mutated_forms_are_read_or_refused_with_4xx(
                body in body(),
                edits in vec(edit(TOKENS), 1..5),
                fields in fields(),
                limit in 0usize..400,
                cuts in vec(any::<prop::sample::Index>(), 0..6),
            ) {
                let mut bytes = body.bytes();
                for edit in &edits {
                    apply(&mut bytes, edit);
                }
                let (request, payload) = request(&body.content_type(), None, chunks(&bytes, &cuts));
                check(read(&request, payload, limit, fields), fields, limit)?;
            }

            #[test]
            fn random_bodies_are_read_or_refused_with_4xx(
                bytes in vec(any::<u8>(), 0..300), boundary in "[a-z]{1,8}", limit in 0usize..400,
            ) {
                let content_type = format!("multipart/form-data; boundary={boundary}");
                let (request, payload) = request(&content_type, None, vec![bytes.into()]);
                let fields = &["image", "request"];
                check(read(&request, payload, limit, fields), fields, limit)?;
            }

            #[test]
            fn uploads_give_the_image_or_a_4xx(
                body in body(),
                edits in vec(edit(TOKENS), 0..3),
                content_type in prop::option::weighted(0.5, prop::sample::select(vec![
                    "image/png", "IMAGE/JPEG; q=1", "application/octet-stream", "application/json", "", "image",
                ])),
                limit in 0usize..400,
                declared in prop::option::of(prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..400]),
            ) {
                let mut bytes = body.bytes();
                for edit in &edits {
                    apply(&mut bytes, edit);
                }
                let content_type = content_type.map_or_else(|| body.content_type(), str::to_string);
                let (request, payload) = request(&content_type, declared, vec![bytes.into()]);
                match actix_web::rt::System::new().block_on(read_image_upload(&request, payload, limit)) {
                    Ok(image) => prop_assert!(image.len() <= limit),
                    Err(error) => prop_assert!(error.status.is_client_error(), "{}: {}", error.status, error.message),
                }
            }
        }
    }
}
