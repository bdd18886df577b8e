//! Who is calling the ops API: the bootstrap admin token from config, or a user's token.
//!
//! The bootstrap token is compared as a SHA-256 in constant time. A user token (`lp_...`)
//! is looked up by its SHA-256 on every request: nothing is cached, so a revoked token or a
//! deactivated user is refused from the next request on.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ingest::problem::Problem;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::common::{ApiState, Caller, store_problem};

/// The bearer token of a request, trimmed; `None` without an `Authorization: Bearer` header.
fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn bad_token() -> Response {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "bad_token",
        "the bearer token is not valid for this API (unknown, revoked, or its user is deactivated)",
    )
    .into_response()
}

fn missing_token() -> Response {
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "missing_token",
        "send `Authorization: Bearer <token>`: a user token from `leadpipe token create`, or api.admin_token",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Lets a request through with the bootstrap admin token or a valid user token, and puts
/// the [`Caller`] in its extensions.
pub(crate) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match bearer(&request) {
        Some(token) => {
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if state
                .admin_token_hash
                .is_some_and(|expected| bool::from(hash.ct_eq(&expected)))
            {
                Caller::bootstrap_admin()
            } else {
                match state.store.authenticate(token).await {
                    Ok(Some(holder)) => Caller {
                        user_id: Some(holder.user_id),
                        role: holder.role,
                    },
                    Ok(None) => return bad_token(),
                    Err(error) => return store_problem(error).into_response(),
                }
            }
        }
        None if state.admin_token_hash.is_some() => return missing_token(),
        // Without a bootstrap token the API is usable only once a user token exists.
        None => match state.store.any_usable_token().await {
            Ok(true) => return missing_token(),
            Ok(false) => {
                return Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "api_disabled",
                    "the ops API has no token configured: set api.admin_token (or LEADPIPE__API__ADMIN_TOKEN), or create a user token with `leadpipe token create`",
                )
                .into_response();
            }
            Err(error) => return store_problem(error).into_response(),
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}
