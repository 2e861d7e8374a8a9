//! `explain --message-format json`: one [`Explanation`] per unit, per line.

use schemars::JsonSchema;
use serde::Serialize;

/// A unit's last build beside its inputs now.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Explanation {
    /// The unit (`dir/arch`, relative to the current directory).
    pub unit: String,
    /// Whether the inputs are the last build's.
    pub fresh: bool,
    /// Why they differ (empty when fresh).
    pub reasons: Vec<String>,
    /// The inputs now, `[name, value]` in key order.
    pub current: Vec<(String, String)>,
    /// The last build lkpkg recorded, if any.
    pub last: Option<LastBuild>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LastBuild {
    /// The digest of the image it built.
    pub manifest: String,
    pub inputs: Vec<(String, String)>,
    pub builder: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
}
