//! Where entries come in: the reader (XREADGROUP, own pending entries first, then new ones),
//! the reclaimer (XAUTOCLAIM of entries another consumer abandoned), and the dispatcher that
//! hands each delivery a `CONCURRENCY` slot and a task.

pub mod dispatch;
pub mod reader;
pub mod reclaim;
