//! The reconciler (SPEC §4.4): even a webhook that never came.
//!
//! Webhooks can be lost before they reach hookstream (the sender gives up after its retry
//! schedule, an endpoint is disabled, a proxy drops them). So every `RECONCILE_INTERVAL_SECS`
//! (±10 % jitter) one replica — the one that takes the lease `{ns}:reconcile`, held for the
//! interval, so one pass per interval across all replicas; a dead holder's lease lapses — lists
//! every calendar of each API version in `RECONCILE_APIS` and each calendar's events from now
//! to now + `RECONCILE_HORIZON_HOURS`, every page of the cursor.
//!
//! **It only finds candidates** (the shape of kube-rs's `Controller`): an event whose listed
//! state the decision ([`crate::handlers::decision`]) would act on — it looks wanted and has no
//! bot, or unwanted and has one — is *drift*, and gets one `hookstream.reconcile` entry. The
//! stream is the work queue: that entry takes the meeting's lock, reads the current event,
//! decides, writes within the write limit, retries and dead-letters like any other. The
//! reconciler never writes to the API, and a converged calendar costs no writes and no entries.
//!
//! Reads are paced at `RECONCILE_READS_PER_SEC` across replicas (a limiter in Redis,
//! `{ns}:ratelimit:reconcile-reads`). An API that misbehaves cannot trap the pass: a cursor
//! that repeats, more than [`MAX_PAGES`] pages, or a page that cannot be read ends that
//! listing with a `warn` line and the pass's `error` result; the other calendars are still
//! reconciled.
//!
//! `auto` means the API versions whose calendar webhooks this namespace processed in the last
//! 30 days: the calendar handlers record it in `{ns}:reconcile:apis` (a hash, version → Unix
//! ms), at most once an hour per version and process.

pub mod pass;
pub mod runner;
pub mod settings;

pub use pass::{Drift, DriftKind, Reconciler, Report, MAX_HOLD_BACK, MAX_PAGES};
pub use settings::{Apis, Settings};
