//! How fresh a read must be.

use serde::{Deserialize, Serialize};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// ReadIndex on the leader: sees every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// The leader answers from its lease (no confirmation round while the lease is fresh).
    Lease,
    /// This node's applied state: possibly stale, never uncommitted.
    Local,
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(text: &str) -> Result<Consistency, String> {
        match text {
            "linearizable" => Ok(Consistency::Linearizable),
            "lease" => Ok(Consistency::Lease),
            "local" => Ok(Consistency::Local),
            other => Err(format!(
                "unknown consistency '{other}' (linearizable, lease or local)"
            )),
        }
    }
}
