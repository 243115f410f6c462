//! The OpenAPI document, generated from the handlers and wire types so that
//! it cannot drift from the code.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata",
        description = "An event store and CQRS server on PostgreSQL. Errors are \
            `{\"error\": CODE, \"message\": TEXT, ...details}`. Choices where the contract is \
            silent: a batch over --max-batch-events is `413 payload_too_large`; a soft-deleted \
            stream accepts `no_stream` and its last version as expected versions, and reports \
            that version as `actual` in a conflict; unknown query parameters are `400`; a \
            non-JSON Content-Type is `415 unsupported_media_type`; JSON strings with \\u0000 are \
            `400` (PostgreSQL cannot store them).",
    ),
    paths(
        super::streams::append_events,
        super::streams::read_stream,
        super::streams::delete_stream,
        super::streams::list_streams,
        super::snapshots::put_snapshot,
        super::snapshots::get_snapshot,
        super::snapshots::delete_snapshot,
        super::all::read_all,
        super::sse::subscribe_all,
        super::sse::subscribe_stream,
        super::subscriptions::put_subscription,
        super::subscriptions::list_subscriptions,
        super::subscriptions::get_subscription,
        super::subscriptions::delete_subscription,
        super::subscriptions::consume,
        super::subscriptions::ack,
        super::subscriptions::nack,
        super::subscriptions::list_parked,
        super::subscriptions::replay_parked,
        super::subscriptions::reset,
        super::subscriptions::cluster,
        super::projections::list_projections,
        super::projections::pause,
        super::projections::resume,
        super::projections::rebuild,
        super::ops::health_live,
        super::ops::health_ready,
        super::ops::metrics,
        super::ops::openapi,
    ),
    components(schemas(
        strata_core::RecordedEvent,
        strata_core::NewEvent,
        strata_core::AppendRequest,
        strata_core::AppendResult,
        strata_core::AppendedEvent,
        strata_core::StreamPage,
        strata_core::AllPage,
        strata_core::StreamInfo,
        strata_core::StreamList,
        strata_core::PutSnapshot,
        strata_core::Snapshot,
        strata_core::ErrorBody,
        strata_core::subscription::SubscriptionSettings,
        strata_core::subscription::SubscriptionStatus,
        strata_core::subscription::AckRequest,
        strata_core::subscription::NackRequest,
        strata_core::subscription::NackAction,
        strata_core::subscription::PartitionBy,
        strata_core::subscription::ResetRequest,
        strata_core::subscription::ParkedEvent,
        strata_core::subscription::ParkedList,
        strata_core::subscription::ClusterView,
        strata_core::subscription::NodeInfo,
        strata_core::subscription::LeaseInfo,
        strata_core::subscription::ProjectionStatus,
    ))
)]
struct ApiDoc;

/// The OpenAPI 3 document of everything the server serves.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
