//! Persistent subscriptions: settings, acks, parked events, resets. Their
//! consumers are in `crate::subscribe`.

use reqwest::StatusCode;
use serde_json::Value;
use strata_core::subscription::{
    AckRequest, NackAction, NackRequest, ParkedList, ResetRequest, StartFrom, SubscriptionSettings,
    SubscriptionStatus,
};

use super::{Client, Upsert};
use crate::error::{Error, Result};

impl Client {
    /// Creates persistent subscription `name`, or updates its settings.
    pub async fn put_subscription(
        &self,
        name: &str,
        settings: &SubscriptionSettings,
    ) -> Result<Upsert> {
        let status = self
            .put(&["subscriptions", name])
            .body(settings)
            .status()
            .await?;
        Ok(if status == StatusCode::CREATED {
            Upsert::Created
        } else {
            Upsert::Updated
        })
    }

    /// The status of persistent subscription `name` (leader, checkpoint, lag…).
    pub async fn get_subscription(&self, name: &str) -> Result<SubscriptionStatus> {
        self.get(&["subscriptions", name]).json().await
    }

    /// Every persistent subscription with its status.
    pub async fn list_subscriptions(&self) -> Result<Vec<SubscriptionStatus>> {
        self.get(&["subscriptions"]).json().await
    }

    /// Deletes persistent subscription `name` with its progress.
    pub async fn delete_subscription(&self, name: &str) -> Result<()> {
        self.delete(&["subscriptions", name]).once().send().await
    }

    /// Acknowledges handled deliveries of subscription `name` by position.
    pub async fn ack(&self, name: &str, positions: &[u64]) -> Result<()> {
        let body = AckRequest {
            positions: positions.to_vec(),
        };
        self.post(&["subscriptions", name, "ack"])
            .body(&body)
            .send()
            .await
    }

    /// Refuses deliveries: `retry` them, `park` them (dead letters) or `skip` them.
    pub async fn nack(&self, name: &str, positions: &[u64], action: NackAction) -> Result<()> {
        let body = NackRequest {
            positions: positions.to_vec(),
            action,
        };
        self.post(&["subscriptions", name, "nack"])
            .body(&body)
            .send()
            .await
    }

    /// The parked (dead-lettered) events of subscription `name`.
    pub async fn parked(&self, name: &str) -> Result<ParkedList> {
        self.get(&["subscriptions", name, "parked"]).json().await
    }

    /// Puts the parked events of `name` back in line; returns how many.
    pub async fn replay_parked(&self, name: &str) -> Result<u64> {
        let answer: Value = self
            .post(&["subscriptions", name, "parked", "replay"])
            .json()
            .await?;
        answer["replayed"]
            .as_u64()
            .ok_or_else(|| Error::Json(format!("replay answered {answer}, without \"replayed\"")))
    }

    /// Moves subscription `name`'s checkpoint to `to` (start or a position).
    pub async fn reset_subscription(&self, name: &str, to: StartFrom) -> Result<()> {
        self.post(&["subscriptions", name, "reset"])
            .body(&ResetRequest { to })
            .send()
            .await
    }
}
