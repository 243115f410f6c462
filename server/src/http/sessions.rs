//! `/auth/session`: browser sessions (API.md, "Security → Sessions"). An
//! `EventSource` cannot send `Authorization`, so a page trades its bearer
//! API key for an HttpOnly cookie once, and the browser sends that cookie
//! itself; the gate (`authorize.rs`) accepts it on any request without a
//! bearer token. The sessions themselves are `auth::sessions`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::authorize::{bearer, session_cookie};
use super::error::ApiError;
use super::extract::Params;
use crate::auth::keys::TOKEN_PREFIX;
use crate::auth::sessions::{COOKIE, SessionError};

/// Starts a session of the bearer API key: `204` with
/// `Set-Cookie: strata_session=…; HttpOnly; SameSite=Strict; Path=/;
/// Max-Age=N` (and `Secure` when the node serves TLS), `N` being 12 hours
/// or the key's remaining lifetime if shorter. The session holds the key's
/// grants for as long as the key holds them: revoking the key ends it.
/// Under `--auth none` there is nothing to carry: `204` without a cookie.
#[utoipa::path(post, path = "/auth/session", tag = "auth",
    responses(
        (status = 204, description = "Started: the session cookie is in Set-Cookie",
            headers(("set-cookie" = String, description = "strata_session=SECRET; HttpOnly; SameSite=Strict; Path=/; Max-Age=N (; Secure under TLS)"))),
        (status = 401, description = "unauthorized: no bearer API key, or not a valid one (a session cannot start another)", body = strata_core::ErrorBody),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    let auth = &state.gate.auth;
    if !auth.required() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // The gate let the request in on any credentials; a session is made
    // from a bearer key only, else a session could renew itself forever.
    let Some(token) = bearer(&headers) else {
        return Err(ApiError::Unauthorized { presented: false });
    };
    if !token.starts_with(TOKEN_PREFIX) {
        return Err(ApiError::TokenRefused(
            "a session is made from an API key (a token starting with `strata_`); a JWT cannot \
             start one yet: send the JWT itself with each request"
                .into(),
        ));
    }
    let session = match auth.start_session(token).await {
        Ok(Some(session)) => session,
        Ok(None) | Err(SessionError::KeyEnding { .. }) => {
            return Err(ApiError::Unauthorized { presented: true });
        }
        Err(SessionError::Database(error)) => {
            return Err(crate::store::StoreError::from(error).into());
        }
        Err(error @ SessionError::Randomness(_)) => {
            tracing::error!(%error, "cannot start a session");
            return Err(ApiError::Internal);
        }
    };
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        session.secret,
        session.max_age,
        secure(state.serves_tls)
    );
    with_cookie(&cookie)
}

/// Ends the session the request's cookie names, on every node within 2
/// seconds: `204` with a `Set-Cookie` that expires the cookie; `204` too
/// when there was none, or it had ended.
#[utoipa::path(delete, path = "/auth/session", tag = "auth",
    responses(
        (status = 204, description = "Ended (or there was none); Set-Cookie expires the cookie",
            headers(("set-cookie" = String, description = "strata_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"))),
    ))]
pub async fn end_session(
    State(state): State<AppState>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    params.finish("no parameters")?;
    if let Some(cookie) = session_cookie(&headers) {
        state
            .gate
            .auth
            .sessions()
            .end(cookie)
            .await
            .map_err(crate::store::StoreError::from)?;
    }
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        secure(state.serves_tls)
    );
    with_cookie(&cookie)
}

/// The cookie attribute that keeps it off plain HTTP, when the node serves
/// HTTPS (a browser refuses `Secure` cookies from an `http://` origin).
fn secure(serves_tls: bool) -> &'static str {
    if serves_tls { "; Secure" } else { "" }
}

/// `204` with `cookie` as its `Set-Cookie`, never cached.
fn with_cookie(cookie: &str) -> Result<Response, ApiError> {
    // The secret is URL-safe base64: always a valid header value.
    let value = HeaderValue::from_str(cookie).map_err(|_| ApiError::Internal)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, value);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_secure_exactly_when_the_node_serves_tls() {
        assert_eq!(secure(true), "; Secure");
        assert_eq!(secure(false), "");
        let response = with_cookie("strata_session=x; HttpOnly; Secure").unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers()[header::SET_COOKIE],
            "strata_session=x; HttpOnly; Secure"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
