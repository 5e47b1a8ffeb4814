//! Rate limits of uploads and prompts (`--rate-uploads`, `--rate-prompts`): per tenant, or per client address on a
//! server without keys; a request over its limit gets 429 `rate_limited` with `Retry-After`, before its body is read.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{HttpMessage, ResponseError};

use super::error::ApiError;
use super::{AppState, spec};
use crate::rate_limit::Limiter;
use crate::tenant::Tenant;

/// The limiters of the two kinds of requests; `None` is unlimited.
#[derive(Default)]
pub struct RateLimits {
    pub uploads: Option<Limiter>,
    pub prompts: Option<Limiter>,
}

/// The kinds of limited requests: uploads (an image to encode, a job) and prompts (decoder work on a cached image).
fn kind_of(method: &Method, path: &str) -> Option<&'static str> {
    if method != Method::POST {
        return None;
    }
    if matches!(path, "/v1/images" | "/v1/segment" | "/v1/jobs") {
        return Some("uploads");
    }
    let on_image = path
        .strip_prefix("/v1/images/")
        .is_some_and(|rest| rest.split_once('/').is_some_and(|(_, route)| route == "segment" || route == "everything"));
    on_image.then_some("prompts")
}

impl RateLimits {
    /// The kind of a request and its limiter, for the requests that are limited.
    fn of(&self, method: &Method, path: &str) -> Option<(&'static str, &Limiter)> {
        let kind = kind_of(method, path)?;
        let limiter = if kind == "uploads" { &self.uploads } else { &self.prompts };
        limiter.as_ref().map(|limiter| (kind, limiter))
    }
}

/// Lists 429 on the operations that may be rate limited.
pub struct RateLimitSpec;

impl utoipa::Modify for RateLimitSpec {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let limited = spec::error_response("over --rate-uploads or --rate-prompts");
        for (path, item) in openapi.paths.paths.iter_mut() {
            if let Some(operation) = item.post.as_mut().filter(|_| kind_of(&Method::POST, path).is_some()) {
                operation.responses.responses.insert("429".to_string(), limited.clone().into());
            }
        }
    }
}

pub async fn limit_rates(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = request.app_data::<Data<AppState>>().expect("state is registered").clone();
    let path = request.match_info().as_str().to_string();
    if let Some((kind, limiter)) = state.rates.of(request.method(), &path) {
        let tenant = request.extensions().get::<Tenant>().map(|tenant| tenant.name().to_string());
        let client = match tenant {
            Some(name) if !name.is_empty() => format!("tenant {name}"),
            _ => request.peer_addr().map_or_else(|| "unknown".to_string(), |address| address.ip().to_string()),
        };
        if let Err(wait) = limiter.take(&client, Instant::now()) {
            state.metrics.rate_limited.with_label_values(&[kind]).inc();
            let limit = limiter.limit();
            let message = format!(
                "too many {kind}: at most {} per second ({} at once); retry in {:.1} s",
                limit.rate,
                limit.burst,
                wait.as_secs_f64()
            );
            let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).error_response();
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return Ok(request.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::RateLimit;

    #[test]
    fn uploads_and_prompts_are_told_apart_by_route() {
        let limit = RateLimit { rate: 1.0, burst: 1.0 };
        let limits = RateLimits { uploads: Some(Limiter::new(limit)), prompts: Some(Limiter::new(limit)) };
        let kind = |method: Method, path: &str| limits.of(&method, path).map(|(kind, _)| kind);
        assert_eq!(kind(Method::POST, "/v1/images"), Some("uploads"));
        assert_eq!(kind(Method::POST, "/v1/segment"), Some("uploads"));
        assert_eq!(kind(Method::POST, "/v1/jobs"), Some("uploads"));
        assert_eq!(kind(Method::POST, "/v1/images/abc/segment"), Some("prompts"));
        assert_eq!(kind(Method::POST, "/v1/images/abc/everything"), Some("prompts"));
        assert_eq!(kind(Method::GET, "/v1/images/abc"), None);
        assert_eq!(kind(Method::POST, "/v1/images/abc/other"), None);
        assert_eq!(kind(Method::GET, "/v1/jobs/abc"), None);
        assert!(RateLimits::default().of(&Method::POST, "/v1/images").is_none());
    }
}
