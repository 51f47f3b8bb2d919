//! The event names hookstream knows, and which handler does each: the one table that drives
//! both the handler registry (the handler registry (`handlers::Registry::standard`)) and the `event` label of
//! the metrics (`metrics`). Adding a handler: its file in `handlers/`, a [`Family`] for
//! it, and its rows here.
//!
//! Senders choose event names, so every name outside this table is counted as [`OTHER_EVENT`]
//! and handled by the forwarder: a label set that senders could grow would grow the exporter's
//! memory and `/metrics` for ever.

/// Which handler does an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `calendar.sync_events` (API v1): `handlers/calendar_v1.rs`.
    CalendarV1,
    /// The v2 calendar events that name instances to schedule: `handlers/calendar_v2.rs`.
    CalendarV2,
    /// `calendar.event_cancelled` (API v2): `handlers/calendar_v2.rs`.
    CalendarV2Cancelled,
    /// `hookstream.reconcile`, one drifted meeting: `handlers/reconcile.rs`.
    Reconcile,
    /// Forwarded to `FORWARD_URL`: the forwarder (also every unknown name).
    Forward,
    /// `calendar.connection_*` (API v2): the calendar's connection record, no bot changed.
    Connection,
    /// `hookstream.resend`, one bot whose final webhook never came: ask for it again.
    Resend,
}

/// One known event name.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub name: &'static str,
    pub family: Family,
}

const fn known(name: &'static str, family: Family) -> Known {
    Known { name, family }
}

/// The event names Meeting BaaS sends (API v1 and v2), and hookstream's own.
pub const EVENTS: &[Known] = &[
    // API v1
    known("calendar.sync_events", Family::CalendarV1),
    known("bot.status_change", Family::Forward),
    known("complete", Family::Forward),
    known("failed", Family::Forward),
    known("transcription_complete", Family::Forward),
    // API v2
    known("calendar.event_created", Family::CalendarV2),
    known("calendar.event_updated", Family::CalendarV2),
    known("calendar.event_cancelled", Family::CalendarV2Cancelled),
    known("calendar.events_synced", Family::CalendarV2),
    known("calendar.connection_created", Family::Connection),
    known("calendar.connection_updated", Family::Connection),
    known("calendar.connection_deleted", Family::Connection),
    known("calendar.connection_error", Family::Connection),
    known("bot.completed", Family::Forward),
    known("bot.failed", Family::Forward),
    known("bot.chat_message", Family::Forward),
    // hookstream's own
    known("hookstream.reconcile", Family::Reconcile),
    known("hookstream.resend", Family::Resend),
];

/// The `event` label of every event name outside [`EVENTS`].
pub const OTHER_EVENT: &str = "other";

/// The position of `name` in [`EVENTS`], if known.
pub fn position(name: &str) -> Option<usize> {
    EVENTS.iter().position(|e| e.name == name)
}

/// The `event` label for `name`: itself when known, else [`OTHER_EVENT`].
pub fn label(name: &str) -> &'static str {
    position(name).map_or(OTHER_EVENT, |i| EVENTS[i].name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label("bot.completed"), "bot.completed");
        assert_eq!(label("calendar.sync_events"), "calendar.sync_events");
        assert_eq!(label("made.up.by.a.sender"), OTHER_EVENT);
        assert_eq!(label(""), OTHER_EVENT);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = EVENTS.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EVENTS.len());
    }
}
