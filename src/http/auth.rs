//! Who a request acts for: with API keys, every route but the page, health checks and the spec (and `/metrics`
//! unless `--metrics-require-key`) needs `Authorization: Bearer KEY` and acts for the key's tenant; without keys,
//! every request acts for the anonymous tenant. Handlers take a [`Tenant`] argument; the middleware puts it in the
//! request.

use std::future::{Ready, ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError};

use super::error::ApiError;
use super::{AppState, spec};
use crate::tenant::Tenant;

/// What a client without a valid key is told, and the challenge (RFC 6750) that comes with it.
fn unauthorized(presented: bool) -> (ApiError, &'static str) {
    if presented {
        let error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the API key is not valid");
        (error, "Bearer realm=\"samserve\", error=\"invalid_token\"")
    } else {
        let message = "this server needs an API key: send `Authorization: Bearer KEY`";
        (ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message), "Bearer realm=\"samserve\"")
    }
}

/// The key of an `Authorization: Bearer KEY` header (the scheme is case-insensitive).
fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Routes anyone may call on a server with keys: the page (which then asks for a key), health checks and the
/// spec. Everything else needs a key, routes added later included.
fn is_open(path: &str, state: &AppState) -> bool {
    matches!(path, "/" | "/favicon.ico" | "/healthz" | "/readyz" | "/openapi.json")
        || path.starts_with("/assets/")
        || (path == "/metrics" && !state.metrics_require_key)
}

/// Finds the request's tenant, or answers 401 with `WWW-Authenticate`.
pub async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = request.app_data::<Data<AppState>>().expect("state is registered").clone();
    // The path as routing sees it (percent-escapes decoded), not the raw one: `/%761/models` is `/v1/models`.
    let path = request.match_info().as_str().to_string();
    match &state.keys {
        None => {
            request.extensions_mut().insert(Tenant::anonymous());
        }
        Some(_) if is_open(&path, &state) => {}
        Some(keys) => {
            let presented = bearer_key(request.headers());
            let Some(tenant) = presented.and_then(|key| keys.tenant(key)) else {
                let (error, challenge) = unauthorized(presented.is_some());
                let mut response = error.error_response();
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                return Ok(request.into_response(response).map_into_right_body());
            };
            request.extensions_mut().insert(tenant);
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// The spec's side of the keys: a bearer scheme, and on every `/v1` operation a key that is optional (a server
/// without keys takes none) and the 401 it may answer.
pub struct ApiKeySpec;

impl utoipa::Modify for ApiKeySpec {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::Header;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        let mut refused = spec::error_response("the server has API keys and the request has no valid one");
        let challenge = Header::builder()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^Bearer "))))
            .description(Some(
                "the RFC 6750 challenge: `Bearer realm=\"samserve\"`, with `error=\"invalid_token\"` for a wrong key",
            ))
            .build();
        refused.headers.insert("WWW-Authenticate".to_string(), challenge.into());
        for item in openapi.paths.paths.iter_mut().filter(|(path, _)| path.starts_with("/v1")).map(|(_, item)| item) {
            for operation in spec::operations_mut(item) {
                operation.security = Some(vec![
                    SecurityRequirement::new("api_key", Vec::<String>::new()),
                    SecurityRequirement::default(),
                ]);
                operation.responses.responses.insert("401".to_string(), refused.clone().into());
            }
        }
    }
}

/// The tenant [`authenticate`] found; a route it did not run for acts for nobody (401).
impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(request.extensions().get::<Tenant>().cloned().ok_or_else(|| unauthorized(false).0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_keys() {
        let headers = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, header::HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_key(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_key(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_key(&headers("Basic abc")), None);
        assert_eq!(bearer_key(&headers("Bearer")), None);
        assert_eq!(bearer_key(&HeaderMap::new()), None);
    }
}
