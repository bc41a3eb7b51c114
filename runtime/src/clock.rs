//! The scheduling clock: nanoseconds since the first use, from the
//! monotonic clock (`Instant`, a vDSO call on Linux). Task enqueue stamps and
//! scheduling delays are measured with it.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's scheduling epoch.
#[inline]
pub(crate) fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    // u64 nanoseconds last 584 years.
    epoch.elapsed().as_nanos() as u64
}
