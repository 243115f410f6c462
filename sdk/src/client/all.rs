//! The global `$all` log.

use strata_core::AllPage;

use super::{Client, ReadAll};
use crate::error::Result;

impl Client {
    /// One page of the global `$all` log, filtered as `options` says.
    pub async fn read_all(&self, options: &ReadAll) -> Result<AllPage> {
        self.get(&["all"]).query(options.query()).json().await
    }
}
