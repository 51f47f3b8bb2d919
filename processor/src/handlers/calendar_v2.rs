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

use super::meeting_baas::{require_uuid, Api};
use super::{has_ended, parse_payload, Event, Handler, HandlerError, HandlerFuture, Meeting};
use crate::config::RecordPolicy;
use reqwest::Method;
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

/// What to do with one instance.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Schedule,
    Unschedule,
    Nothing,
}

/// Whether a `created`/`updated`/`synced` instance gets a bot, from the API's current event
/// (never from the webhook's copy, which may be stale by the time the entry runs): confirmed,
/// with a meeting URL, not ended, wanted by `RECORD_POLICY`, and no bot yet.
pub fn decide_schedule(current: &Current, policy: RecordPolicy) -> Action {
    let wanted = match policy {
        RecordPolicy::All => true,
        RecordPolicy::Organizer => current.attendees.iter().any(|a| a.is_self && a.organizer),
        RecordPolicy::None => false,
    };
    let confirmed = current.status.as_deref() == Some("confirmed");
    let has_url = current.meeting_url.as_deref().is_some_and(|u| !u.trim().is_empty());
    if wanted && confirmed && has_url && !current.bot_scheduled && !has_ended(current.end_time.as_deref()) {
        Action::Schedule
    } else {
        Action::Nothing
    }
}

/// Whether a cancelled instance's bot is removed: when the API's current event shows one.
pub fn decide_cancel(current: &Current) -> Action {
    if current.bot_scheduled {
        Action::Unschedule
    } else {
        Action::Nothing
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

/// `calendar.event_created`, `calendar.event_updated`, `calendar.events_synced`.
pub struct Schedule {
    api: Arc<Api>,
}

impl Schedule {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }

    /// `series_id` is the webhook's (the instance's, else its series'); the current event's is
    /// used when the webhook names none.
    async fn schedule_one(
        &self,
        calendar_id: &str,
        series_id: Option<&str>,
        event_id: &str,
    ) -> Result<(), HandlerError> {
        if self.api.policy == RecordPolicy::None {
            return Ok(());
        }
        let Some(current) = current_event(&self.api, calendar_id, event_id).await? else {
            tracing::info!(calendar_id, event_id, "event no longer exists; nothing to do");
            return Ok(());
        };
        if decide_schedule(&current, self.api.policy) != Action::Schedule {
            tracing::debug!(calendar_id, event_id, "no bot wanted, or one is scheduled already");
            return Ok(());
        }
        let Some(series_id) = series_id.or(current.series_id.as_deref()) else {
            return Err(HandlerError::permanent(format!("instance {event_id} has no series_id")));
        };
        require_uuid("series_id", series_id)?;
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
}

/// The API's current event; `None` when it no longer exists (404).
async fn current_event(api: &Api, calendar_id: &str, event_id: &str) -> Result<Option<Current>, HandlerError> {
    Ok(api.get::<Details>(&["v2", "calendars", calendar_id, "events", event_id]).await?.map(|d| d.data))
}

impl Handler for Schedule {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = Payload::parse(event)?;
            let calendar_id = payload.data.calendar_id.as_str();
            for candidate in payload.candidates(false) {
                self.schedule_one(calendar_id, candidate.series_id, &candidate.instance.event_id).await?;
            }
            Ok(())
        })
    }

    fn meetings(&self, event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        Payload::parse(event)?.meetings(false)
    }
}

/// `calendar.event_cancelled`.
pub struct Cancel {
    api: Arc<Api>,
}

impl Cancel {
    pub fn new(api: Arc<Api>) -> Self {
        Self { api }
    }
}

impl Handler for Cancel {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = Payload::parse(event)?;
            let calendar_id = payload.data.calendar_id.as_str();
            for Candidate { series_id, instance } in payload.candidates(true) {
                let event_id = instance.event_id.as_str();
                // The webhook's `bot_scheduled` may be stale (a bot scheduled since, or removed):
                // the API's current event decides.
                let Some(current) = current_event(&self.api, calendar_id, event_id).await? else {
                    tracing::info!(calendar_id, event_id, "event no longer exists; nothing to do");
                    continue;
                };
                if decide_cancel(&current) != Action::Unschedule {
                    tracing::debug!(calendar_id, event_id, "no bot to unschedule");
                    continue;
                }
                let Some(series_id) = series_id.or(current.series_id.as_deref()) else {
                    return Err(HandlerError::permanent(format!("instance {event_id} has no series_id")));
                };
                require_uuid("series_id", series_id)?;
                let body: Value = json!({"series_id": series_id, "event_id": event_id, "all_occurrences": false});
                match self.api.call(Method::DELETE, &["v2", "calendars", calendar_id, "bots"], Some(&body)).await? {
                    Some(_) => tracing::info!(calendar_id, event_id, "bot unscheduled"),
                    None => tracing::info!(calendar_id, event_id, "no bot to unschedule"),
                }
            }
            Ok(())
        })
    }

    fn meetings(&self, event: &Event) -> Result<Vec<Meeting>, HandlerError> {
        Payload::parse(event)?.meetings(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(status: &str, url: &str, end: chrono::Duration, bot: bool) -> Current {
        Current {
            series_id: None,
            status: Some(status.into()),
            end_time: Some((chrono::Utc::now() + end).to_rfc3339()),
            meeting_url: Some(url.into()),
            bot_scheduled: bot,
            attendees: vec![Attendee { is_self: true, organizer: false }],
        }
    }

    #[test]
    fn schedule_decisions_come_from_the_current_event() {
        use RecordPolicy as P;
        let (url, later, earlier) =
            ("https://meet.example.com/x", chrono::Duration::days(1), chrono::Duration::hours(-1));
        assert_eq!(decide_schedule(&current("confirmed", url, later, false), P::All), Action::Schedule);
        assert_eq!(decide_schedule(&current("cancelled", url, later, false), P::All), Action::Nothing, "cancelled");
        assert_eq!(decide_schedule(&current("tentative", url, later, false), P::All), Action::Nothing, "not confirmed");
        assert_eq!(decide_schedule(&current("confirmed", " ", later, false), P::All), Action::Nothing, "no URL");
        assert_eq!(decide_schedule(&current("confirmed", url, earlier, false), P::All), Action::Nothing, "ended");
        assert_eq!(decide_schedule(&current("confirmed", url, later, true), P::All), Action::Nothing, "has a bot");
        assert_eq!(decide_schedule(&current("confirmed", url, later, false), P::None), Action::Nothing);
        assert_eq!(decide_schedule(&current("confirmed", url, later, false), P::Organizer), Action::Nothing);
        let mut organised = current("confirmed", url, later, false);
        organised.attendees[0].organizer = true;
        assert_eq!(decide_schedule(&organised, P::Organizer), Action::Schedule);
    }

    #[test]
    fn cancel_decisions_come_from_the_current_event() {
        let later = chrono::Duration::days(1);
        assert_eq!(decide_cancel(&current("cancelled", "u", later, true)), Action::Unschedule);
        assert_eq!(decide_cancel(&current("cancelled", "u", later, false)), Action::Nothing, "no bot (any more)");
    }
}
