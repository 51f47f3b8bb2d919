//! `calendar.sync_events` (API v1): for each affected calendar event, read its current state and
//! schedule, unschedule, or leave it.
//!
//! Idempotent by construction: the decision is made from the event as the API has it now
//! (`bot_param` set or null), not from the webhook, so a second run after a success finds the
//! bot scheduled (or removed) and does nothing.
//!
//! Each affected event is a meeting (`v1:<uuid>`): a sync about several is fanned out into one
//! entry per meeting, each with the webhook's payload narrowed to its one uuid.

use super::meeting_baas::Api;
use super::{has_ended, parse_payload, Event, Handler, HandlerError, HandlerFuture, Meeting};
use crate::config::RecordPolicy;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

pub struct SyncEvents {
    api: Arc<Api>,
}

/// The payload of `calendar.sync_events`: the one model the fan-out split and the handler
/// both read. Unknown fields are kept (`rest`), so a narrowed payload is the webhook's but for
/// its list of events. A payload of another shape — `data` not an object, the list not a list
/// of strings — does not parse: a permanent error with serde's reason, never a panic.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SyncPayload {
    pub data: SyncData,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SyncData {
    #[serde(default)]
    pub affected_event_uuids: Vec<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl SyncPayload {
    /// Parses and checks the payload: every uuid non-empty (an empty one would name the list
    /// endpoint, not an event).
    pub fn parse(event: &Event) -> Result<Self, HandlerError> {
        let payload: Self = parse_payload(event)?;
        if payload.data.affected_event_uuids.iter().any(|u| u.trim().is_empty()) {
            return Err(HandlerError::permanent(format!(
                "malformed {} payload: an affected event uuid is empty",
                event.name
            )));
        }
        Ok(payload)
    }

    /// The affected events, each once, in payload order.
    pub fn uuids(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.data.affected_event_uuids.iter().map(String::as_str).filter(|u| seen.insert(*u)).collect()
    }

    /// One meeting per affected event (`v1:<uuid>`); with several, each carries the payload
    /// narrowed to its one uuid.
    pub fn meetings(&self) -> Result<Vec<Meeting>, HandlerError> {
        let uuids = self.uuids();
        if let [only] = uuids.as_slice() {
            return Ok(vec![Meeting { key: format!("v1:{only}"), payload: Vec::new() }]);
        }
        uuids
            .into_iter()
            .map(|uuid| {
                let mut narrowed = self.clone();
                narrowed.data.affected_event_uuids = vec![uuid.to_string()];
                let payload = serde_json::to_vec(&narrowed)
                    .map_err(|e| HandlerError::permanent(format!("cannot narrow the payload to {uuid}: {e}")))?;
                Ok(Meeting { key: format!("v1:{uuid}"), payload })
            })
            .collect()
    }
}

/// The fields of the v1 `Event` this handler reads.
#[derive(Debug, Deserialize)]
pub struct CalendarEvent {
    #[serde(default)]
    pub meeting_url: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub is_organizer: bool,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub bot_param: Option<Value>,
}

/// What to do with one calendar event.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Schedule,
    Unschedule,
    Nothing,
}

/// The decision of SPEC §4.1 for `calendar.sync_events`.
pub fn decide(event: &CalendarEvent, policy: RecordPolicy) -> Action {
    let wanted = match policy {
        RecordPolicy::All => true,
        RecordPolicy::Organizer => event.is_organizer,
        RecordPolicy::None => false,
    };
    let scheduled = event.bot_param.as_ref().is_some_and(|p| !p.is_null());
    if (event.deleted || !wanted) && scheduled {
        return Action::Unschedule;
    }
    let has_url = event.meeting_url.as_deref().is_some_and(|u| !u.trim().is_empty());
    if wanted && !event.deleted && !scheduled && has_url && !has_ended(event.end_time.as_deref()) {
        return Action::Schedule;
    }
    Action::Nothing
}

impl SyncEvents {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }

    async fn sync_one(&self, uuid: &str) -> Result<(), HandlerError> {
        let Some(event) = self.api.get::<CalendarEvent>(&["calendar_events", uuid]).await? else {
            tracing::info!(uuid, "calendar event no longer exists; nothing to do");
            return Ok(());
        };
        match decide(&event, self.api.policy) {
            Action::Schedule => {
                let body = self.api.bot_body(&[]);
                match self.api.call(Method::POST, &["calendar_events", uuid, "bot"], Some(&body)).await? {
                    Some(_) => tracing::info!(uuid, "bot scheduled"),
                    // The event vanished between the two calls: nothing to record.
                    None => tracing::info!(uuid, "calendar event gone before its bot was scheduled; nothing to do"),
                }
            }
            Action::Unschedule => match self.api.call(Method::DELETE, &["calendar_events", uuid, "bot"], None).await? {
                Some(_) => tracing::info!(uuid, "bot unscheduled"),
                None => tracing::info!(uuid, "no bot to unschedule (gone already)"),
            },
            Action::Nothing => tracing::debug!(uuid, "nothing to do"),
        }
        Ok(())
    }
}

impl Handler for SyncEvents {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            for uuid in SyncPayload::parse(event)?.uuids() {
                self.sync_one(uuid).await?;
            }
            Ok(())
        })
    }

    fn meetings(&self, event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        SyncPayload::parse(event)?.meetings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(deleted: bool, organizer: bool, scheduled: bool, url: &str, end: &str) -> CalendarEvent {
        CalendarEvent {
            meeting_url: Some(url.into()),
            end_time: Some(end.into()),
            is_organizer: organizer,
            deleted,
            bot_param: scheduled.then(|| serde_json::json!({"bot_name": "x"})),
        }
    }

    const PAST: &str = "2020-06-11T15:45:00Z";

    #[test]
    fn decisions() {
        use Action::*;
        use RecordPolicy as P;
        let future = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        let future = future.as_str();
        let url = "https://meet.example.com/x";
        assert_eq!(decide(&event(false, false, false, url, future), P::All), Schedule);
        assert_eq!(decide(&event(false, false, true, url, future), P::All), Nothing, "already scheduled");
        assert_eq!(decide(&event(true, false, true, url, future), P::All), Unschedule, "deleted");
        assert_eq!(decide(&event(true, false, false, url, future), P::All), Nothing, "deleted, no bot");
        assert_eq!(decide(&event(false, false, false, "", future), P::All), Nothing, "no url");
        assert_eq!(decide(&event(false, false, false, url, PAST), P::All), Nothing, "ended");
        assert_eq!(decide(&event(false, false, false, url, future), P::Organizer), Nothing);
        assert_eq!(decide(&event(false, true, false, url, future), P::Organizer), Schedule);
        assert_eq!(decide(&event(false, false, true, url, future), P::Organizer), Unschedule, "no longer wanted");
        assert_eq!(decide(&event(false, true, false, url, future), P::None), Nothing);
        assert_eq!(decide(&event(false, true, true, url, future), P::None), Unschedule);
    }
}
