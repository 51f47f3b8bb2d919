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
use super::{has_ended, parse_payload, payload_json, Event, Handler, HandlerError, HandlerFuture, Meeting};
use crate::config::RecordPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

pub struct SyncEvents {
    api: Arc<Api>,
}

#[derive(Deserialize)]
struct Payload {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    affected_event_uuids: Vec<String>,
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
                // A 404 here means the event vanished between the two calls: nothing to record.
                self.api.call(Method::POST, &["calendar_events", uuid, "bot"], Some(&body)).await?;
                tracing::info!(uuid, "bot scheduled");
            }
            Action::Unschedule => {
                self.api.call(Method::DELETE, &["calendar_events", uuid, "bot"], None).await?;
                tracing::info!(uuid, "bot unscheduled");
            }
            Action::Nothing => tracing::debug!(uuid, "nothing to do"),
        }
        Ok(())
    }
}

impl Handler for SyncEvents {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload: Payload = parse_payload(event)?;
            for uuid in &payload.data.affected_event_uuids {
                self.sync_one(uuid).await?;
            }
            Ok(())
        })
    }

    fn meetings(&self, event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        let payload: Payload = parse_payload(event)?;
        let mut uuids = payload.data.affected_event_uuids;
        let mut seen = std::collections::HashSet::new();
        uuids.retain(|uuid| seen.insert(uuid.clone()));
        if uuids.len() == 1 {
            return Ok(uuids
                .into_iter()
                .map(|uuid| Meeting { key: format!("v1:{uuid}"), payload: Vec::new() })
                .collect());
        }
        let whole = payload_json(event)?;
        uuids
            .into_iter()
            .map(|uuid| {
                let mut narrowed = whole.clone();
                narrowed["data"]["affected_event_uuids"] = Value::Array(vec![Value::String(uuid.clone())]);
                let payload = serde_json::to_vec(&narrowed)
                    .map_err(|e| HandlerError::permanent(format!("cannot narrow the payload to {uuid}: {e}")))?;
                Ok(Meeting { key: format!("v1:{uuid}"), payload })
            })
            .collect()
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
