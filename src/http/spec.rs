//! What the middleware adds to the generated OpenAPI spec, in one place: the routes' own annotations cannot say it,
//! since the answers come from code that runs around every handler.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Response, ResponseBuilder};

/// The operations of a path (samserve serves GET, POST, PUT and DELETE only).
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten()
}

/// An error response (an `ErrorBody`) with `description`.
pub fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
        .build()
}

/// Declares `Retry-After` on every 429 and 503 (both always carry it: see `ApiError` and the rate limiter). Runs
/// after the modifiers that add responses.
pub struct RetryAfterSpec;

impl utoipa::Modify for RetryAfterSpec {
    fn modify(&self, openapi: &mut OpenApi) {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1));
        let header =
            Header::builder().schema(Some(seconds)).description(Some("seconds to wait before trying again")).build();
        for operation in openapi.paths.paths.values_mut().flat_map(operations_mut) {
            for (status, response) in operation.responses.responses.iter_mut() {
                if let ("429" | "503", RefOr::T(response)) = (status.as_str(), response) {
                    response.headers.insert("Retry-After".to_string(), header.clone().into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use super::*;

    #[test]
    fn every_429_and_503_declares_retry_after() {
        let spec = super::super::ApiDoc::openapi();
        let mut declared = 0;
        for (path, mut item) in spec.paths.paths {
            for operation in operations_mut(&mut item) {
                for (status, response) in &operation.responses.responses {
                    if let ("429" | "503", RefOr::T(response)) = (status.as_str(), response) {
                        assert!(response.headers.contains_key("Retry-After"), "{path} {status}");
                        declared += 1;
                    }
                }
            }
        }
        assert!(declared >= 5, "only {declared} responses are 429 or 503");
    }
}
