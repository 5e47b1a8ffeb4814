//! What faces the network directly: TLS, CORS and the time a client has to send its request's body.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{ConnectionType, Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpMessage, ResponseError};
use anyhow::Context as _;
use futures_util::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::ApiError;
use super::{AppState, spec};

/// The HTTPS configuration of `--tls-cert` and `--tls-key` (PEM files).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the certificates of --tls-cert {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("--tls-cert {} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the private key of --tls-key {}", key.display()))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--tls-cert and --tls-key do not make a usable TLS identity")
}

/// Lets pages on `origins` (or any, with `*`) call the API: Bearer keys, not cookies, so no credentials mode.
pub fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::DELETE])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .max_age(3600);
    if origins.iter().any(|origin| origin == "*") {
        return cors.allow_any_origin().send_wildcard();
    }
    origins.iter().fold(cors, |cors, origin| cors.allowed_origin(origin))
}

/// Answers 408 (and closes the connection) when the body has not arrived within `--body-timeout-s` of the
/// headers, so that a client trickling its upload cannot hold a handler, its memory and a connection forever.
pub async fn limit_body_time(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = request.app_data::<Data<AppState>>().expect("state is registered").limits.body_timeout;
    let expired = Arc::new(AtomicBool::new(false));
    let body = Deadline {
        inner: request.take_payload(),
        timer: Box::pin(tokio::time::sleep(limit)),
        expired: Arc::clone(&expired),
    };
    request.set_payload(Payload::Stream { payload: Box::pin(body) });
    let response = next.call(request).await?;
    if !expired.load(Ordering::Relaxed) {
        return Ok(response.map_into_left_body());
    }
    // Whatever the handler made of its cut-off body, the client is told why.
    let (request, _) = response.into_parts();
    let mut timeout = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!("the request's body did not arrive within {} s", limit.as_secs_f64()),
    )
    .error_response();
    timeout.head_mut().set_connection_type(ConnectionType::Close);
    Ok(ServiceResponse::new(request, timeout).map_into_right_body())
}

/// Lists 408 on the operations that take a body (the body timeout's answer). Runs after the modifiers that add
/// request bodies.
pub struct BodyTimeoutSpec;

impl utoipa::Modify for BodyTimeoutSpec {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let timed_out = spec::error_response("the body did not arrive within --body-timeout-s (the connection closes)");
        for operation in openapi.paths.paths.values_mut().flat_map(spec::operations_mut) {
            if operation.request_body.is_some() {
                operation.responses.responses.insert("408".to_string(), timed_out.clone().into());
            }
        }
    }
}

/// A request body that ends in an error once its time is up.
struct Deadline {
    inner: Payload,
    timer: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(context) {
            return Poll::Ready(item);
        }
        if self.timer.as_mut().poll(context).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            let error = io::Error::new(ErrorKind::TimedOut, "the body did not arrive in time");
            return Poll::Ready(Some(Err(PayloadError::Io(error))));
        }
        Poll::Pending
    }
}
