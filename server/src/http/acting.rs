//! Who does an admin action, for the audit trail: the principal the gate let
//! through and the address the request came from.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use strata_pg::audit::Actor;

use crate::auth::Principal;

/// The [`Actor`] of a request. Never refuses: a route without a principal
/// (open routes have none) acts as `anonymous`, and a request that came
/// another way than the node's accept loop (a test calling the router)
/// from `unknown`.
///
/// A call a follower passes on to the leader names the follower's
/// address: the client's own is not carried (a header saying it could be
/// forged by any client).
pub struct Acting(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Acting {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let name = parts
            .extensions
            .get::<Arc<Principal>>()
            .map_or_else(|| "anonymous".to_owned(), |p| p.name.clone());
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(
                || "unknown".to_owned(),
                |ConnectInfo(peer)| peer.to_string(),
            );
        Ok(Acting(Actor::new(name, remote)))
    }
}
