//! Errors in the AWS JSON 1.1 shape: `{"__type": "<Code>", "message": "..."}`, the code also in
//! `x-amzn-ErrorType`. botocore reads the code from `__type`, so boto3 raises a `ClientError`
//! whose `response["Error"]["Code"]` is that code (and the modelled exception class when the
//! SSM model names it).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The content type of every SSM answer.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// An SSM error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmError {
    /// HTTP status (400 for client errors, as AWS answers them).
    pub status: StatusCode,
    /// The exception name botocore knows (`InvalidDocument`...).
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl SsmError {
    /// A 400 with this code.
    pub fn client(code: &'static str, message: impl Into<String>) -> SsmError {
        SsmError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// `ValidationException`: a field breaks the model's rules.
    pub fn validation(message: impl Into<String>) -> SsmError {
        SsmError::client("ValidationException", message)
    }

    /// `InternalServerError` (500).
    pub fn internal(e: impl std::fmt::Display) -> SsmError {
        SsmError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalServerError",
            message: e.to_string(),
        }
    }

    /// `InvalidDocument`: no such document.
    pub fn no_document(name: &str) -> SsmError {
        SsmError::client(
            "InvalidDocument",
            format!("Document with name {name} does not exist."),
        )
    }

    /// `AutomationExecutionNotFoundException`.
    pub fn no_execution(id: &str) -> SsmError {
        SsmError::client(
            "AutomationExecutionNotFoundException",
            format!("Automation Execution id {id} is not found."),
        )
    }
}

impl std::fmt::Display for SsmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl IntoResponse for SsmError {
    fn into_response(self) -> Response {
        let body = json!({"__type": self.code, "message": self.message}).to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        h.insert("x-amzn-ErrorType", HeaderValue::from_static(self.code));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_type_and_message() {
        let resp = SsmError::no_document("Nope").into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()["x-amzn-ErrorType"], "InvalidDocument");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
