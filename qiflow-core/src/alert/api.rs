//! The JSON API behind `/qiflow/api/alerts`, shared by the axum and actix adapters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Alerts;
use super::model::parse_rfc3339;

/// An API answer: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiResponse {
    /// HTTP status code.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

impl ApiResponse {
    fn new(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            body: body.to_string(),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, serde_json::json!({ "error": message.into() }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: BTreeMap<String, String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    comment: String,
}

impl Alerts {
    /// `GET /qiflow/api/alerts`: `{"active":[…],"recent":[…],"silenced":[…],"channels":[…]}`.
    pub fn api_view(&self) -> ApiResponse {
        match serde_json::to_value(self.view()) {
            Ok(v) => ApiResponse::new(200, v),
            Err(e) => ApiResponse::error(500, format!("cannot serialize the alerts: {e}")),
        }
    }

    /// `POST /qiflow/api/alerts/silences` with `{"matchers":{…},"duration":"2h"|"expires_at":
    /// "<RFC 3339>","comment":"…"}`: 201 with the silence, or 400 saying what is wrong.
    pub fn api_create_silence(&self, body: &[u8]) -> ApiResponse {
        let request: NewSilence = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return ApiResponse::error(
                    400,
                    format!(
                        "the body must be JSON like {{\"matchers\":{{\"alertname\":\"disk_full\"}},\"duration\":\"2h\",\"comment\":\"…\"}}: {e}"
                    ),
                );
            }
        };
        let now = self.router.now();
        let expires_at = match (&request.expires_at, &request.duration) {
            (Some(at), None) => match parse_rfc3339(at) {
                Some(t) => t,
                None => {
                    return ApiResponse::error(
                        400,
                        format!("expires_at: {at:?} is not an RFC 3339 time"),
                    );
                }
            },
            (None, Some(d)) => match humantime::parse_duration(d) {
                Ok(d) if d > Duration::ZERO => now + d,
                _ => {
                    return ApiResponse::error(
                        400,
                        format!("duration: {d:?} is not a positive duration like \"2h\""),
                    );
                }
            },
            _ => return ApiResponse::error(400, "give exactly one of expires_at and duration"),
        };
        match self.silence(request.matchers, expires_at, request.comment) {
            Ok(s) => match serde_json::to_value(s) {
                Ok(v) => ApiResponse::new(201, v),
                Err(e) => ApiResponse::error(500, e.to_string()),
            },
            Err(e) => ApiResponse::error(400, e),
        }
    }

    /// `DELETE /qiflow/api/alerts/silences/{id}`: 204, or 404 when there is no such silence.
    pub fn api_delete_silence(&self, id: &str) -> ApiResponse {
        if self.unsilence(id) {
            ApiResponse {
                status: 204,
                body: String::new(),
            }
        } else {
            ApiResponse::error(404, format!("no silence with id {id:?}"))
        }
    }
}
