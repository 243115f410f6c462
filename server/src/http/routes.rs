//! The route table, declared once: each `routes!(...)` takes handlers of one
//! path and routes them by the method and path of their `#[utoipa::path]`,
//! adding that operation to the OpenAPI document as it goes. A route added
//! with a plain `.route(...)` would be served but undocumented; the test
//! below finds it.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    AppState, all, cluster, keys, openapi, ops, projections, sessions, snapshots, sse, streams,
    subscriptions,
};

/// Every endpoint with its OpenAPI operation. One `routes!` per path:
/// `OpenApiRouter::routes` serves every path of a group with the group's
/// whole method router, so handlers of different paths must not share one.
pub(super) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(streams::list_streams))
        .routes(routes!(
            streams::append_events,
            streams::read_stream,
            streams::delete_stream
        ))
        .routes(routes!(
            snapshots::get_snapshot,
            snapshots::put_snapshot,
            snapshots::delete_snapshot
        ))
        .routes(routes!(sse::live::subscribe_stream))
        .routes(routes!(all::read_all))
        .routes(routes!(sse::live::subscribe_all))
        .routes(routes!(subscriptions::list_subscriptions))
        .routes(routes!(
            subscriptions::get_subscription,
            subscriptions::put_subscription,
            subscriptions::delete_subscription
        ))
        .routes(routes!(subscriptions::delivery::consume))
        .routes(routes!(subscriptions::delivery::ack))
        .routes(routes!(subscriptions::delivery::nack))
        .routes(routes!(subscriptions::parked::list_parked))
        .routes(routes!(subscriptions::parked::replay_parked))
        .routes(routes!(subscriptions::delivery::reset))
        .routes(routes!(cluster::cluster))
        .routes(routes!(projections::list_projections))
        .routes(routes!(projections::pause))
        .routes(routes!(projections::resume))
        .routes(routes!(projections::rebuild))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(sessions::create_session, sessions::end_session))
        .routes(routes!(ops::health_live))
        .routes(routes!(ops::health_ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tokio::sync::{Semaphore, watch};
    use tower::ServiceExt;

    use crate::config::Limits;
    use crate::http::AppState;
    use crate::live::{Live, LiveOptions};
    use crate::store::Appender;

    /// A state to build the router with. Nothing here reaches a database:
    /// the pool connects lazily to a port where nothing listens, and the
    /// probes below never get to a handler that would use it.
    fn state() -> (AppState, watch::Sender<bool>) {
        let pool = crate::store::connect_lazy("postgres://strata@127.0.0.1:9/unused", 1)
            .expect("a well-formed URL");
        let (stop, shutdown) = watch::channel(false);
        let notifications = crate::notifications::Notifications::start(
            pool.clone(),
            "routes-test".into(),
            shutdown.clone(),
        );
        let live = Live::start(
            pool.clone(),
            notifications.clone(),
            LiveOptions {
                poll_interval: Duration::from_secs(60),
                buffer_bytes: 1 << 20,
            },
            shutdown.clone(),
        );
        // The feed's tasks end at once; the state only needs the handle.
        stop.send_replace(true);
        let state = AppState {
            appender: Appender::start(pool.clone(), 1, Arc::new(())),
            limits: Limits::default(),
            body_budget: Arc::new(Semaphore::new(1)),
            timeouts: crate::config::Timeouts::default(),
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            subscriptions: crate::subscriptions::Subscriptions::new(
                pool.clone(),
                live.clone(),
                notifications,
            ),
            leases: strata_pg::lease::Leases::new(
                pool.clone(),
                "routes-test",
                Duration::from_secs(10),
            ),
            live,
            shutdown,
            sse_keepalive: Duration::from_secs(15),
            node_id: "routes-test".into(),
            database: crate::health::DatabaseHealth::up(),
            follower_calls: crate::config::FollowerCalls::Proxy,
            forwarder: reqwest::Client::new(),
            gate: crate::http::authorize::Gate::new(
                crate::auth::Authenticator::open(crate::auth::keys::KeyStore::new(pool.clone())),
                crate::config::QuotaSettings {
                    rate: None,
                    sse_per_key: None,
                    sse_total: 10,
                },
            ),
            serves_tls: false,
            pool,
        };
        (state, stop)
    }

    /// The paths in the router's route table. axum has no public listing;
    /// its `Debug` output has one, the route table's node first:
    /// `node: Node { paths: {RouteId(0): "/streams", …} }`. Should that
    /// format change, this panics rather than find nothing.
    fn routed_paths(router: &Router) -> BTreeSet<String> {
        const NODE: &str = "node: Node { paths: {";
        let debug = format!("{router:?}");
        let start = debug
            .find(NODE)
            .expect("axum's Debug of Router lists the route table's paths")
            + NODE.len();
        let mut rest = &debug[start..];
        let mut paths = BTreeSet::new();
        while let Some(entry) = rest.strip_prefix("RouteId(") {
            let (_, quoted) = entry.split_once("): \"").expect("RouteId(n): \"path\"");
            let (path, after) = quoted.split_once('"').expect("a closing quote");
            paths.insert(path.to_owned());
            rest = after.trim_start_matches([',', ' ']);
        }
        assert!(
            rest.starts_with('}'),
            "unexpected Debug format of axum's route table at {:?}",
            &rest[..rest.len().min(80)]
        );
        paths
    }

    /// The methods the router serves at `path`: a request with a method no
    /// route takes is answered `405` by the method router with an `Allow`
    /// header listing the rest, without reaching a handler. `HEAD` is left
    /// out where `GET` is served: axum answers it for every `GET` route, and
    /// the document, like OpenAPI generally, leaves it implicit.
    async fn routed_methods(app: &Router, path: &str) -> BTreeSet<String> {
        let uri = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "probe"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let probe = Method::from_bytes(b"PROBE").expect("an extension method");
        let request = Request::builder()
            .method(probe)
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        let allow = response.headers()[header::ALLOW].to_str().unwrap();
        let methods: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
        if methods.contains("GET") {
            methods.into_iter().filter(|m| m != "HEAD").collect()
        } else {
            methods
        }
    }

    #[tokio::test]
    async fn the_router_serves_exactly_the_documented_operations() {
        let (state, _stop) = state();
        let app = crate::http::router(state, &[]);

        // The document as clients get it.
        let request = Request::get("/openapi.json").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if item.get(method).is_some() {
                    documented.insert((path.clone(), method.to_uppercase()));
                }
            }
        }

        let paths = routed_paths(&app);
        assert!(paths.contains("/openapi.json"), "{paths:?}");
        let mut served = BTreeSet::new();
        for path in paths {
            for method in routed_methods(&app, &path).await {
                served.insert((path.clone(), method));
            }
        }

        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in /openapi.json: {undocumented:?}; \
             in /openapi.json but not served: {unserved:?}"
        );
    }
}
