//! Errors as OpenAI's API writes them: a 4xx (or 5xx) status and
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchyard::models::ModelError;

/// One failed request: what the client is told.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: a request field is wrong.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400: the body is not the JSON expected.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400: prompt plus completion exceed the context.
    pub fn context_length(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: Some("context_length_exceeded"),
            ..Self::invalid(param, message)
        }
    }

    /// 401: a missing or wrong API key.
    pub fn unauthorized() -> Self {
        ApiError {
            code: Some("invalid_api_key"),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "missing or incorrect API key: send the header `Authorization: Bearer <key>`",
            )
        }
    }

    /// 404: a model this server does not serve.
    pub fn unknown_model(requested: &str, served: &str) -> Self {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("the model `{requested}` does not exist; this server serves `{served}`"),
            )
        }
    }

    /// 404: no such route.
    pub fn no_route(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no route for {path}"))
    }

    /// 413: a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes (--max-body-bytes)"),
        )
    }

    /// 429: every slot busy and the queue full.
    pub fn queue_full(slots: usize, max_queue: usize) -> Self {
        ApiError {
            code: Some("rate_limit_exceeded"),
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the server is at capacity ({slots} running, {max_queue} waiting); retry later"
                ),
            )
        }
    }

    /// 503: still loading, or shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 500: the engine failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A model-layer refusal of a request's values (named by their CLI flag there) as a 400
    /// naming the request field.
    pub fn from_model(e: &ModelError) -> Self {
        match e {
            ModelError::InvalidOption { option, message } => {
                let param = option.trim_start_matches("--").replace('-', "_");
                Self::invalid(&param, format!("{param}: {message}"))
            }
            ModelError::PromptTooLong { .. } => Self::context_length("prompt", e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }

    /// OpenAI's error `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The `requests_total` outcome this error counts as.
    pub fn outcome(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "unauthorized",
            429 => "rejected",
            503 => "aborted",
            400..=499 => "invalid",
            _ => "error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}
