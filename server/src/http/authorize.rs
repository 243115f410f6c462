//! The one authorization decision. Every request passes [`authorize`] after
//! routing and before its body is read: the route's template and
//! parameters say what it needs ([`need`]), the credentials say who asks,
//! and the grants decide. A handler never checks on its own, so a new route
//! cannot forget to: a route this table does not name needs `admin` on the
//! node, and the route-walking test (`e2e auth::`) checks every operation of
//! the OpenAPI document against API.md's table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::RequestExt;
use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sqlx::PgPool;
use strata_core::auth::Scope;
use strata_core::subscription::Source;

use super::AppState;
use super::error::ApiError;
use super::quota::Quotas;
use crate::auth::{AuthError, Authenticator, Credentials, Principal, Target};
use crate::config::QuotaSettings;
use crate::store::{self, StoreError};

/// What a route needs, owned (read off the request before it moves on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, the OpenAPI document, ending a session.
    Open,
    /// Valid credentials of any kind (`POST /auth/session`).
    Credentials,
    /// A read grant of any prefix: the handler shows only what the grants
    /// cover (`GET /streams`).
    Listing,
    /// `scope` on one stream.
    Stream(Scope, String),
    /// `read` on every stream of each category (`$all` filtered by
    /// category), or on every stream when the list is empty.
    All(Vec<String>),
    /// `subscribe` on the source of the named persistent subscription.
    Subscription(String),
    /// `scope` over every stream (`/metrics` needs `metrics` this way).
    Every(Scope),
    /// `admin` on the node.
    Node,
}

/// What the request on `route` (its template, as routed) needs.
pub fn need(
    method: &Method,
    route: &str,
    param: impl Fn(&str) -> Option<String>,
    query: Option<&str>,
    public_metrics: bool,
) -> Need {
    let stream = |scope| Need::Stream(scope, param("stream").unwrap_or_default());
    match (method.as_str(), route) {
        ("GET", "/health/live" | "/health/ready" | "/openapi.json") => Need::Open,
        ("GET", "/metrics") if public_metrics => Need::Open,
        ("GET", "/metrics") => Need::Every(Scope::Metrics),
        ("POST", "/auth/session") => Need::Credentials,
        ("DELETE", "/auth/session") => Need::Open,
        ("GET", "/streams") => Need::Listing,
        (
            "GET",
            "/streams/{stream}" | "/streams/{stream}/snapshot" | "/streams/{stream}/subscribe",
        ) => stream(Scope::Read),
        ("POST", "/streams/{stream}") | ("PUT", "/streams/{stream}/snapshot") => {
            stream(Scope::Write)
        }
        ("DELETE", "/streams/{stream}" | "/streams/{stream}/snapshot") => stream(Scope::Delete),
        ("GET", "/all" | "/all/subscribe") => Need::All(categories(query)),
        (
            "GET" | "POST",
            "/subscriptions/{name}/consume"
            | "/subscriptions/{name}/ack"
            | "/subscriptions/{name}/nack",
        ) => Need::Subscription(param("name").unwrap_or_default()),
        _ => Need::Node,
    }
}

/// The categories of a `$all` request's `category` parameter (an empty list
/// when there is none: then it reads every stream). A malformed one is the
/// handler's `400`; here it only has to be covered.
fn categories(query: Option<&str>) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == "category")
        .flat_map(|(_, value)| value.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// Whether `principal` may do what `need` asks (a subscription's source is
/// looked up first, see [`may_subscribe`]).
fn allowed(principal: &Principal, need: &Need) -> Result<(), (Scope, String)> {
    let refuse = |scope: Scope, what: &str| Err((scope, what.to_owned()));
    match need {
        Need::Open | Need::Credentials => Ok(()),
        Need::Listing if principal.prefixes(Scope::Read).next().is_some() => Ok(()),
        Need::Listing => refuse(Scope::Read, "any stream"),
        Need::Stream(scope, stream) if principal.may(*scope, Target::Stream(stream)) => Ok(()),
        Need::Stream(scope, stream) => refuse(*scope, &format!("stream {stream:?}")),
        Need::All(categories) if categories.is_empty() => {
            if principal.may(Scope::Read, Target::Every) {
                Ok(())
            } else {
                refuse(Scope::Read, "every stream (an unfiltered $all)")
            }
        }
        Need::All(categories) => match categories
            .iter()
            .find(|c| !principal.may(Scope::Read, Target::Category(c)))
        {
            None => Ok(()),
            Some(category) => refuse(Scope::Read, &format!("category {category:?}")),
        },
        Need::Every(scope) if principal.may(*scope, Target::Every) => Ok(()),
        Need::Every(scope) => refuse(*scope, "every stream"),
        Need::Node if principal.may(Scope::Admin, Target::Node) => Ok(()),
        Need::Node => refuse(Scope::Admin, "the node"),
        Need::Subscription(_) => unreachable!("resolved by authorize"),
    }
}

/// The authorization state of a node: how credentials are checked, and the
/// sources of persistent subscriptions (a consumer's `ack` should not cost
/// a query to find what the subscription reads).
#[derive(Clone)]
pub struct Gate {
    /// Credentials.
    pub auth: Authenticator,
    /// Rates and open streams.
    quotas: Arc<Quotas>,
    sources: Arc<Mutex<HashMap<String, (Source, Instant)>>>,
}

/// How long a subscription's source is taken as known (an update that
/// changes it is seen this much later at most).
const SOURCE_FRESH: Duration = Duration::from_secs(1);

/// Sources remembered at most; beyond, the oldest are dropped.
const SOURCES_HELD: usize = 10_000;

impl Gate {
    /// A gate checking credentials with `auth` and use with `quotas`.
    pub fn new(auth: Authenticator, quotas: QuotaSettings) -> Gate {
        Gate {
            auth,
            quotas: Arc::new(Quotas::new(quotas)),
            sources: Arc::default(),
        }
    }

    /// The source of subscription `name`, `None` when there is none.
    async fn source(&self, pool: &PgPool, name: &str) -> Result<Option<Source>, StoreError> {
        let now = Instant::now();
        if let Some((source, at)) = self.sources.lock().expect("unpoisoned").get(name)
            && now.duration_since(*at) < SOURCE_FRESH
        {
            return Ok(Some(source.clone()));
        }
        let Some(row) = store::subscriptions::load_subscription(pool, name).await? else {
            return Ok(None);
        };
        let source = row.settings.source;
        let mut sources = self.sources.lock().expect("unpoisoned");
        if sources.len() >= SOURCES_HELD {
            sources.retain(|_, (_, at)| now.duration_since(*at) < SOURCE_FRESH);
        }
        sources.insert(name.to_owned(), (source.clone(), now));
        Ok(Some(source))
    }
}

/// Whether `principal` may consume from a subscription reading `source`.
fn may_subscribe(
    principal: &Principal,
    name: &str,
    source: &Source,
) -> Result<(), (Scope, String)> {
    let target = match source {
        Source::Stream(stream) => Target::Stream(stream),
        Source::Category(category) => Target::Category(category),
        Source::All | Source::Type(_) => Target::Every,
    };
    if principal.may(Scope::Subscribe, target) {
        Ok(())
    } else {
        Err((
            Scope::Subscribe,
            format!("the source of subscription {name:?}"),
        ))
    }
}

/// The middleware: authenticate, decide, and hand the principal on to the
/// handler as an extension.
pub(super) async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        // Unrouted: the fallback answers 404 and reaches no handler.
        return next.run(request).await;
    };
    // A parameter that is no text (`%FF`) names nothing a grant could
    // cover: the contract's 400, as the handler's extractor would answer.
    let params = match request.extract_parts::<RawPathParams>().await {
        Ok(params) => params,
        Err(rejection) => {
            return ApiError::invalid(
                "path",
                format!("bad path parameter: {}", rejection.body_text()),
            )
            .into_response();
        }
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
    };
    let need = need(
        request.method(),
        route.as_str(),
        param,
        request.uri().query(),
        state.gate.auth.public_metrics(),
    );
    if need == Need::Open {
        return next.run(request).await;
    }
    let credentials = credentials(request.headers());
    let principal = match state.gate.auth.authenticate(credentials).await {
        Ok(Some(principal)) => principal,
        Ok(None) => {
            return ApiError::Unauthorized {
                presented: credentials.is_some(),
            }
            .into_response();
        }
        Err(AuthError::Token(refusal)) => {
            return ApiError::TokenRefused(refusal.to_string()).into_response();
        }
        Err(AuthError::Database(error)) => {
            return ApiError::from(StoreError::from(error)).into_response();
        }
    };
    let decision = match &need {
        Need::Subscription(name) => match state.gate.source(&state.pool, name).await {
            Ok(Some(source)) => may_subscribe(&principal, name, &source),
            // No such subscription: the handler's 404 (or the leader's).
            Ok(None) => Ok(()),
            Err(error) => return ApiError::from(error).into_response(),
        },
        need => allowed(&principal, need),
    };
    if let Err((scope, what)) = decision {
        return ApiError::Forbidden {
            key: principal.name.clone(),
            scope,
            what,
            hint: state.gate.auth.forbidden_hint(&principal),
        }
        .into_response();
    }
    let quotas = &state.gate.quotas;
    let permit = quotas.request(&principal.name).and_then(|()| {
        streaming(request.method(), route.as_str())
            .then(|| quotas.open_stream(&principal.name))
            .transpose()
    });
    let permit = match permit {
        Ok(permit) => permit,
        Err(refusal) => return ApiError::from(refusal).into_response(),
    };
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    match permit {
        None => response,
        // Counted as long as the stream is open: the permit goes with the
        // body.
        Some(permit) => {
            let (parts, body) = response.into_parts();
            let body = body.into_data_stream().map(move |chunk| {
                let _held = &permit;
                chunk
            });
            Response::from_parts(parts, Body::from_stream(body))
        }
    }
}

/// Whether the route answers with a live stream (counted against
/// `--max-sse` and `--max-sse-per-key`).
fn streaming(method: &Method, route: &str) -> bool {
    method == Method::GET
        && matches!(
            route,
            "/streams/{stream}/subscribe" | "/all/subscribe" | "/subscriptions/{name}/consume"
        )
}

/// What a request presents: its bearer token, or, when it has none, its
/// session cookie (a bearer token is never passed over for a cookie).
pub fn credentials(headers: &axum::http::HeaderMap) -> Option<Credentials<'_>> {
    bearer(headers)
        .map(Credentials::Bearer)
        .or_else(|| session_cookie(headers).map(Credentials::Session))
}

/// The value of the session cookie among a request's `Cookie` headers (the
/// first, should there be several).
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    // Split the bytes, not the text: another application's cookie with a
    // non-ASCII value on the same site must not hide this one.
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == crate::auth::sessions::COOKIE)
        .map(|(_, value)| value.trim())
}

/// The bearer token of a request's `Authorization` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_bearer_token_wins_over_a_cookie() {
        let both = headers(&[
            (header::AUTHORIZATION, "Bearer strata_x"),
            (header::COOKIE, "strata_session=abc"),
        ]);
        assert_eq!(credentials(&both), Some(Credentials::Bearer("strata_x")));
    }

    #[test]
    fn another_cookie_that_is_not_ascii_hides_nothing() {
        let mut map = HeaderMap::new();
        map.append(
            header::COOKIE,
            HeaderValue::from_bytes("name=m\u{fc}ller; strata_session=abc".as_bytes()).unwrap(),
        );
        assert_eq!(credentials(&map), Some(Credentials::Session("abc")));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        for (cookies, expected) in [
            (&["strata_session=abc"][..], Some("abc")),
            (
                &["theme=dark; strata_session=abc; lang=en"][..],
                Some("abc"),
            ),
            (&["theme=dark", "strata_session=abc"][..], Some("abc")),
            (&["strata_session_old=x; xstrata_session=y"][..], None),
            (&["strata_session"][..], None),
            (&[][..], None),
        ] {
            let map = headers(
                &cookies
                    .iter()
                    .map(|c| (header::COOKIE, *c))
                    .collect::<Vec<_>>(),
            );
            assert_eq!(
                credentials(&map),
                expected.map(Credentials::Session),
                "{cookies:?}"
            );
        }
    }
}
