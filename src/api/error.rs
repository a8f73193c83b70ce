//! Every way a request can fail, and the one place each becomes an HTTP
//! status and a JSON:API error document.

use power_proto::wire::{ErrorDocument, ErrorObject};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// A refused request. The detail is for the person who sent it: it names
/// what was wrong and never holds a token or the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: a bad parameter (hostlist, unknown group).
    BadRequest(String),
    /// 403: no token, a bad token, or a token that does not allow this.
    Forbidden(String),
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 500: something the server should have handled.
    Internal(String),
    /// 503: the server cannot do this now (its audit log cannot be written).
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What was wrong, for a person.
    pub fn detail(&self) -> String {
        match self {
            Self::BadRequest(d) | Self::Forbidden(d) | Self::Internal(d) | Self::Unavailable(d) => {
                d.clone()
            }
            Self::NotFound => "no such route: expected /, /nodes, /groups, /healthz or /metrics".into(),
            Self::MethodNotAllowed => {
                "method not allowed: / takes GET, PATCH, PUT and DELETE; /nodes and /groups take GET"
                    .into()
            }
        }
    }

    /// The JSON:API error document.
    pub fn document(&self) -> ErrorDocument {
        let status = self.status();
        ErrorDocument {
            errors: vec![ErrorObject {
                status: status.as_u16().to_string(),
                title: status.canonical_reason().unwrap_or("Error").to_string(),
                detail: Some(self.detail()),
            }],
        }
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        warp::reply::with_status(warp::reply::json(&self.document()), self.status()).into_response()
    }
}

/// A method on `/` that asks for no action (`POST /`): a 405.
#[derive(Debug)]
pub struct NoSuchAction;

impl warp::reject::Reject for NoSuchAction {}

/// Map warp's own rejections (routing, query syntax) to the same documents.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let error = if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some()
        || rejection.find::<NoSuchAction>().is_some()
    {
        ApiError::MethodNotAllowed
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::BadRequest("the query string is not valid URL encoding".into())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(format!("the {} header is not valid", e.name()))
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::Internal("the server could not handle this request".into())
    };
    Ok(error.into_response())
}
