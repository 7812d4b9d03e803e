//! API errors: an HTTP status plus Headscale's (grpc-gateway) error body
//! `{"code": <gRPC code>, "message": "...", "details": []}`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ironscale_state::StateError;

use crate::dto::{code, ErrorBody};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: i32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_ARGUMENT, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }
    /// A request for something this server does not do: the client's to
    /// change, so a 400 (with gRPC's UNIMPLEMENTED code), never a 5xx.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::UNIMPLEMENTED, message)
    }
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            "Unauthorized",
        )
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            "internal server error",
        )
    }
    /// A path id that is not a positive integer.
    pub fn bad_id(what: &str, raw: &str) -> Self {
        Self::invalid(format!(
            "invalid {what} id {raw:?}: expected a positive integer"
        ))
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::NodeNotFound(id) => ApiError::not_found(format!("node {} not found", id.0)),
            StateError::UserNotFound(_)
            | StateError::KeyNotFound(_)
            | StateError::RegistrationNotFound(_) => ApiError::not_found(e.to_string()),
            StateError::UserExists(_) => {
                ApiError::new(StatusCode::CONFLICT, code::ALREADY_EXISTS, e.to_string())
            }
            StateError::UserHasNodes { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                code::FAILED_PRECONDITION,
                e.to_string(),
            ),
            StateError::Invalid(_) => ApiError::invalid(e.to_string()),
            StateError::Ipam(_) => {
                tracing::error!("API request failed: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code::UNAVAILABLE,
                    e.to_string(),
                )
            }
            // Storage (and any newer) failures: details stay in the server log.
            _ => {
                tracing::error!("API request failed: {e}");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            details: vec![],
        };
        let text = crate::audit::ErrorText(body.message.clone());
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(text);
        resp
    }
}
