//! The bounds this client keeps, in one leaf module every other one may read: what HSS accepts
//! (page sizes, offsets) and what a hostile or broken server may cost (response size, waits).

use std::time::Duration;

/// Responses larger than this are not read (hostile or broken servers cannot exhaust memory).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ListTasks and ListTaskResources page size bounds.
pub const MIN_PAGE: u32 = 10;
pub const MAX_PAGE: u32 = 200;
/// Largest offset HSS accepts.
pub const MAX_OFFSET: u32 = 2_000_000;
/// The longest wait a server's `Retry-After` can impose: a hostile or broken answer must not
/// block a budget shared by every object for years (or overflow the clock).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 60);
/// Most `hit_path_list` entries kept of one affected resource (ListClusterRiskAffectResources);
/// the rest are dropped where they are decoded.
pub const MAX_HIT_PATHS: usize = 32;
