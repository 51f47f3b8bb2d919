//! The v2 calendar events: schedule bots for new or changed meetings, unschedule them for
//! cancelled ones.
//!
//! Every decision — schedule or unschedule — is made from the API's current event
//! (`GET /v2/calendars/{calendar_id}/events/{event_id}`; 404: nothing to do), never from the
//! webhook's copy, which may be stale by the time the entry runs: the webhook only names the
//! candidate instances. That also makes the handlers idempotent: a second run finds the bot
//! scheduled (or gone) and does nothing; `BOT_ALREADY_EXISTS` counts as done, and unscheduling
//! a bot that is already gone answers 404, which counts as done too.
//!
//! Each instance is a meeting (`v2:<calendar_id>:<event_id>`): an entry about several is fanned
//! out into one entry per instance.

use super::decision::RecordPolicy;
use super::decision::{decide, is_past, Decision, Facts, Status};
use super::{parse_payload, Event, Handler, HandlerError, HandlerFuture, Meeting};
use crate::downstream::meeting_baas::{require_uuid, Api};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The payload of the v2 calendar events: the one model the fan-out split and the handlers both
/// read. Unknown fields are kept (`rest`), so a narrowed payload is the webhook's but for its
/// instances. A payload of another shape — `data` not an object, a list where an object
/// belongs, ids that are not strings — does not parse: a permanent error with serde's reason.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Payload {
    pub data: Data,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Data {
    pub calendar_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<Instance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_instances: Vec<Instance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancelled_instances: Vec<Instance>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Series>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Series {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    #[serde(default)]
    pub instances: Vec<Instance>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A candidate instance the webhook names. Only its ids are read: everything the decision
/// needs comes from the API's current event.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Instance {
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_id: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One candidate: the instance and its series id (the instance's, else its series', else the
/// payload's).
pub struct Candidate<'a> {
    pub series_id: Option<&'a str>,
    pub instance: &'a Instance,
}

impl Payload {
    /// Parses and checks the payload: the calendar, series and event ids are UUIDs, as the v2
    /// OpenAPI document requires (no retry can make a request with another id valid).
    pub fn parse(event: &Event) -> Result<Self, HandlerError> {
        let payload: Self = parse_payload(event)?;
        let data = &payload.data;
        require_uuid("calendar_id", &data.calendar_id)?;
        let series = data.series_id.iter().chain(data.events.iter().filter_map(|s| s.series_id.as_ref()));
        for series_id in series {
            require_uuid("series_id", series_id)?;
        }
        let all = data.instances.iter().chain(&data.affected_instances).chain(&data.cancelled_instances);
        for instance in all.chain(data.events.iter().flat_map(|s| &s.instances)) {
            require_uuid("event_id", &instance.event_id)?;
            if let Some(series_id) = &instance.series_id {
                require_uuid("series_id", series_id)?;
            }
        }
        Ok(payload)
    }

    /// The candidates, each event once, in payload order: from `instances`,
    /// `affected_instances` and `events[].instances` — or, for `cancelled`,
    /// `cancelled_instances`.
    pub fn candidates(&self, cancelled: bool) -> Vec<Candidate<'_>> {
        let data = &self.data;
        let top = data.series_id.as_deref();
        let mut all: Vec<(Option<&str>, &Instance)> = Vec::new();
        if cancelled {
            all.extend(data.cancelled_instances.iter().map(|i| (top, i)));
        } else {
            all.extend(data.instances.iter().chain(&data.affected_instances).map(|i| (top, i)));
            for series in &data.events {
                all.extend(series.instances.iter().map(|i| (series.series_id.as_deref().or(top), i)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        all.into_iter()
            .filter(|(_, instance)| seen.insert(instance.event_id.as_str()))
            .map(|(series, instance)| Candidate { series_id: instance.series_id.as_deref().or(series), instance })
            .collect()
    }

    /// One meeting per candidate (`v2:<calendar_id>:<event_id>`); with several, each carries the
    /// payload narrowed to its one instance, its series id filled in.
    pub fn meetings(&self, cancelled: bool) -> Result<Vec<Meeting>, HandlerError> {
        let calendar_id = &self.data.calendar_id;
        let candidates = self.candidates(cancelled);
        if let [only] = candidates.as_slice() {
            return Ok(vec![Meeting {
                key: format!("v2:{calendar_id}:{}", only.instance.event_id),
                payload: Vec::new(),
            }]);
        }
        candidates
            .iter()
            .map(|candidate| {
                let mut instance = candidate.instance.clone();
                instance.series_id = candidate.series_id.map(str::to_string);
                let mut narrowed = self.clone();
                let data = &mut narrowed.data;
                data.instances.clear();
                data.affected_instances.clear();
                data.cancelled_instances.clear();
                data.events.clear();
                let event_id = instance.event_id.clone();
                if cancelled {
                    data.cancelled_instances.push(instance);
                } else {
                    data.instances.push(instance);
                }
                let payload = serde_json::to_vec(&narrowed)
                    .map_err(|e| HandlerError::permanent(format!("cannot narrow the payload to {event_id}: {e}")))?;
                Ok(Meeting { key: format!("v2:{calendar_id}:{event_id}"), payload })
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
struct Details {
    data: Current,
}

/// The fields of the API's current event (`GET /v2/calendars/{calendar_id}/events/{event_id}`)
/// that the decisions read.
#[derive(Debug, Default, Deserialize)]
pub struct Current {
    #[serde(default)]
    pub series_id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub end_time: Option<String>,
    #[serde(default)]
    pub meeting_url: Option<String>,
    #[serde(default)]
    pub bot_scheduled: bool,
    #[serde(default)]
    pub attendees: Vec<Attendee>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Attendee {
    #[serde(default, rename = "self")]
    pub is_self: bool,
    #[serde(default)]
    pub organizer: bool,
}

impl Current {
    /// The event in the terms of the decision (SPEC §4.2).
    pub fn facts(&self) -> Facts {
        Facts {
            status: match self.status.as_deref() {
                Some("confirmed") => Status::Confirmed,
                Some("cancelled") => Status::Cancelled,
                _ => Status::Undecided,
            },
            has_url: self.meeting_url.as_deref().is_some_and(|u| !u.trim().is_empty()),
            started: is_past(self.start_time.as_deref()),
            ended: is_past(self.end_time.as_deref()),
            owner_organises: self.attendees.iter().any(|a| a.is_self && a.organizer),
            has_bot: self.bot_scheduled,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct CreateAnswer {
    #[serde(default)]
    errors: Vec<CreateError>,
}

#[derive(Debug, Deserialize)]
struct CreateError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The v2 calendar events — `calendar.event_created`, `calendar.event_updated`,
/// `calendar.events_synced` and (`cancelled`) `calendar.event_cancelled`: the webhook names the
/// candidates; for each, the API's current event decides, both ways (SPEC §4.2).
pub struct Calendar {
    api: Arc<Api>,
    policy: RecordPolicy,
    /// `calendar.event_cancelled`: the candidates are its `cancelled_instances`.
    cancelled: bool,
}

impl Calendar {
    pub fn new(api: Arc<Api>, policy: RecordPolicy, cancelled: bool) -> Self {
        Self { api, policy, cancelled }
    }

    /// Reads one instance's current event and acts on the decision. `series_id` is the
    /// webhook's (the instance's, else its series'); the current event's is used when the
    /// webhook names none.
    pub async fn decide_one(
        &self,
        calendar_id: &str,
        series_id: Option<&str>,
        event_id: &str,
    ) -> Result<(), HandlerError> {
        if self.policy == RecordPolicy::None {
            return Ok(()); // hookstream leaves every bot as it is: nothing to read
        }
        let Some(current) = current_event(&self.api, calendar_id, event_id).await? else {
            tracing::info!(calendar_id, event_id, "event no longer exists; nothing to do");
            return Ok(());
        };
        let decision = decide(&current.facts(), self.policy);
        if decision == Decision::Nothing {
            tracing::debug!(calendar_id, event_id, "the bots match the event; nothing to do");
            return Ok(());
        }
        let Some(series_id) = series_id.or(current.series_id.as_deref()) else {
            return Err(HandlerError::permanent(format!("instance {event_id} has no series_id")));
        };
        require_uuid("series_id", series_id)?;
        match decision {
            Decision::Schedule => self.schedule(calendar_id, series_id, event_id).await,
            Decision::Unschedule => self.unschedule(calendar_id, series_id, event_id).await,
            Decision::Nothing => Ok(()),
        }
    }

    async fn schedule(&self, calendar_id: &str, series_id: &str, event_id: &str) -> Result<(), HandlerError> {
        let body = self.api.bot_body(&[
            ("series_id", json!(series_id)),
            ("event_id", json!(event_id)),
            ("all_occurrences", json!(false)),
        ]);
        let Some(answer) = self.api.call(Method::POST, &["v2", "calendars", calendar_id, "bots"], Some(&body)).await?
        else {
            tracing::info!(calendar_id, event_id, "calendar or event gone; nothing to do");
            return Ok(());
        };
        let created: CreateAnswer = serde_json::from_str(&answer.body).unwrap_or_default();
        for error in created.errors {
            if error.code.as_deref() == Some("BOT_ALREADY_EXISTS") {
                continue;
            }
            return Err(HandlerError::permanent(format!(
                "POST /v2/calendars/{calendar_id}/bots refused event {event_id}: {} {}",
                error.code.unwrap_or_default(),
                error.message.unwrap_or_default()
            )));
        }
        tracing::info!(calendar_id, event_id, "bot scheduled");
        Ok(())
    }

    /// DELETE the instance's bot: 404 (gone already) is done; 409 (too close to the start to
    /// change) is done too, with a log line — retrying cannot help, and the meeting is about to
    /// begin.
    async fn unschedule(&self, calendar_id: &str, series_id: &str, event_id: &str) -> Result<(), HandlerError> {
        let body: Value = json!({"series_id": series_id, "event_id": event_id, "all_occurrences": false});
        let segments = ["v2", "calendars", calendar_id, "bots"];
        match self.api.call_accepting(Method::DELETE, &segments, Some(&body), &[StatusCode::CONFLICT]).await? {
            Some(answer) if answer.status == StatusCode::CONFLICT => tracing::warn!(
                calendar_id,
                event_id,
                "the API refused to unschedule the bot (409: too close to the start to change); left as it is"
            ),
            Some(_) => tracing::info!(calendar_id, event_id, "bot unscheduled"),
            None => tracing::info!(calendar_id, event_id, "no bot to unschedule (gone already)"),
        }
        Ok(())
    }
}

/// The API's current event; `None` when it no longer exists (404).
async fn current_event(api: &Api, calendar_id: &str, event_id: &str) -> Result<Option<Current>, HandlerError> {
    Ok(api.get::<Details>(&["v2", "calendars", calendar_id, "events", event_id]).await?.map(|d| d.data))
}

impl Handler for Calendar {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = Payload::parse(event)?;
            self.api.saw(crate::downstream::meeting_baas::ApiVersion::V2).await;
            let calendar_id = payload.data.calendar_id.as_str();
            let candidates = payload.candidates(self.cancelled);
            if candidates.is_empty() {
                // A webhook about no event does nothing; say why, so a sender that put the
                // events under the other field (`instances` on a cancel) is told.
                let (expected, other) = if self.cancelled {
                    ("cancelled_instances", !payload.candidates(false).is_empty())
                } else {
                    ("instances, affected_instances or events[].instances", !payload.candidates(true).is_empty())
                };
                if other {
                    return Err(HandlerError::permanent(format!(
                        "{} names no event in {expected}: its events are under another field, which this \
                         event does not read",
                        event.name
                    )));
                }
                tracing::warn!(stream_id = %event.id, event = %event.name, "the webhook names no event in {expected}; nothing to do");
            }
            for candidate in candidates {
                self.decide_one(calendar_id, candidate.series_id, &candidate.instance.event_id).await?;
            }
            Ok(())
        })
    }

    fn meetings(&self, event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        Payload::parse(event)?.meetings(self.cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_fields_map_to_the_decision() {
        let at = |offset: chrono::Duration| (chrono::Utc::now() + offset).to_rfc3339();
        let current = |status: &str, url: &str, start: chrono::Duration, bot: bool, organizer: bool| Current {
            series_id: None,
            status: Some(status.into()),
            start_time: Some(at(start)),
            end_time: Some(at(start + chrono::Duration::hours(1))),
            meeting_url: Some(url.into()),
            bot_scheduled: bot,
            attendees: vec![Attendee { is_self: true, organizer }],
        };
        let day = chrono::Duration::days(1);
        assert_eq!(
            current("confirmed", "https://meet.example.com/x", day, false, true).facts(),
            Facts {
                status: Status::Confirmed,
                has_url: true,
                started: false,
                ended: false,
                owner_organises: true,
                has_bot: false
            }
        );
        let f = current("cancelled", " ", -day, true, false).facts();
        assert_eq!(
            (f.status, f.has_url, f.started, f.ended, f.owner_organises, f.has_bot),
            (Status::Cancelled, false, true, true, false, true)
        );
        assert_eq!(current("tentative", "u", day, false, true).facts().status, Status::Undecided);
        assert_eq!(current("made-up", "u", day, false, true).facts().status, Status::Undecided);
    }
}
