//! The one error type of the HTTP layer and its mapping to status codes and `{"error": {"code", "message"}}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::engine::EngineError;
use crate::image_input::ImageError;

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case identifier, e.g. `image_not_found`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn malformed_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_body", message)
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub fn invalid_prompt(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_prompt", message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body is larger than {limit} bytes"))
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn not_ready() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the models are still loading")
    }

    pub fn timeout(seconds: f64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", format!("the request took longer than {seconds} s"))
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        let (status, code) = match &error {
            EngineError::ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found"),
            EngineError::ImageNotFound(_) => (StatusCode::NOT_FOUND, "image_not_found"),
            EngineError::LogitsNotFound(_) => (StatusCode::NOT_FOUND, "logits_not_found"),
            EngineError::Image(image) => match image {
                ImageError::Empty => (StatusCode::BAD_REQUEST, "empty_body"),
                ImageError::TooManyBytes { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
                ImageError::TooManyPixels { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large"),
                ImageError::UnsupportedFormat => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image_format"),
                ImageError::Undecodable(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "undecodable_image"),
            },
            EngineError::Prompt { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_prompt"),
            EngineError::InvalidParams(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            EngineError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            EngineError::Inference(_) => (StatusCode::INTERNAL_SERVER_ERROR, "inference_failed"),
        };
        Self { status, code, message }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS)));
        }
        response.json(ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message.clone() } })
    }
}
