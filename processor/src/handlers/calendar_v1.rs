//! `calendar.sync_events` (API v1): for each affected calendar event, read its current state and
//! schedule, unschedule, or leave it.
//!
//! Idempotent by construction: the decision is made from the event as the API has it now
//! (`bot_param` set or null), not from the webhook, so a second run after a success finds the
//! bot scheduled (or removed) and does nothing.
//!
//! Each affected event is a meeting (`v1:<uuid>`): a sync about several is fanned out into one
//! entry per meeting, each with the webhook's payload narrowed to its one uuid.

use super::decision::RecordPolicy;
use super::decision::{decide, is_past, Decision, Facts, Status};
use super::{parse_payload, Event, Handler, HandlerError, HandlerFuture, Meeting};
use crate::downstream::meeting_baas::Api;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

pub struct SyncEvents {
    api: Arc<Api>,
    policy: RecordPolicy,
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

/// The fields of the v1 `Event` the decision reads.
#[derive(Debug, Deserialize)]
pub struct CalendarEvent {
    #[serde(default)]
    pub meeting_url: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub is_organizer: bool,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub bot_param: Option<Value>,
}

impl CalendarEvent {
    /// The event in the terms of the decision (SPEC §4.2).
    pub fn facts(&self) -> Facts {
        Facts {
            status: if self.deleted { Status::Cancelled } else { Status::Confirmed },
            has_url: self.meeting_url.as_deref().is_some_and(|u| !u.trim().is_empty()),
            started: is_past(self.start_time.as_deref()),
            ended: is_past(self.end_time.as_deref()),
            owner_organises: self.is_organizer,
            has_bot: self.bot_param.as_ref().is_some_and(|p| !p.is_null()),
        }
    }
}

impl SyncEvents {
    pub fn new(api: Arc<Api>, policy: RecordPolicy) -> Self {
        Self { api, policy }
    }

    /// Reads one event's current state and acts on the decision.
    pub async fn sync_one(&self, uuid: &str) -> Result<(), HandlerError> {
        if self.policy == RecordPolicy::None {
            return Ok(()); // hookstream leaves every bot as it is: nothing to read
        }
        let Some(event) = self.api.get::<CalendarEvent>(&["calendar_events", uuid]).await? else {
            tracing::info!(uuid, "calendar event no longer exists; nothing to do");
            return Ok(());
        };
        match decide(&event.facts(), self.policy) {
            Decision::Schedule => {
                let body = self.api.bot_body(&[]);
                match self.api.call(Method::POST, &["calendar_events", uuid, "bot"], Some(&body)).await? {
                    Some(_) => tracing::info!(uuid, "bot scheduled"),
                    // The event vanished between the two calls: nothing to record.
                    None => tracing::info!(uuid, "calendar event gone before its bot was scheduled; nothing to do"),
                }
            }
            Decision::Unschedule => match self.api.call(Method::DELETE, &["calendar_events", uuid, "bot"], None).await?
            {
                Some(_) => tracing::info!(uuid, "bot unscheduled"),
                None => tracing::info!(uuid, "no bot to unschedule (gone already)"),
            },
            Decision::Nothing => tracing::debug!(uuid, "nothing to do"),
        }
        Ok(())
    }
}

impl Handler for SyncEvents {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = SyncPayload::parse(event)?;
            self.api.saw(crate::downstream::meeting_baas::ApiVersion::V1).await;
            for uuid in payload.uuids() {
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

    fn event(json: serde_json::Value) -> CalendarEvent {
        serde_json::from_value(json).expect("a v1 event")
    }

    #[test]
    fn the_v1_fields_map_to_the_decision() {
        let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
        let later = (chrono::Utc::now() + chrono::Duration::days(1) + chrono::Duration::hours(1)).to_rfc3339();
        let e = event(serde_json::json!({
            "meeting_url": "https://meet.example.com/x", "start_time": soon, "end_time": later,
            "is_organizer": true, "deleted": false, "bot_param": null
        }));
        assert_eq!(
            e.facts(),
            Facts {
                status: Status::Confirmed,
                has_url: true,
                started: false,
                ended: false,
                owner_organises: true,
                has_bot: false
            }
        );
        let e = event(serde_json::json!({
            "meeting_url": " ", "start_time": "2020-06-11T15:00:00Z", "end_time": "2020-06-11T15:45:00Z",
            "deleted": true, "bot_param": {"bot_name": "x"}
        }));
        assert_eq!(
            e.facts(),
            Facts {
                status: Status::Cancelled,
                has_url: false,
                started: true,
                ended: true,
                owner_organises: false,
                has_bot: true
            }
        );
    }
}
