//! The v2 calendar events: schedule bots for new or changed meetings, unschedule them for
//! cancelled ones.
//!
//! Idempotent: before scheduling, the handler reads the instance's current state
//! (`GET /v2/calendars/{calendar_id}/events/{event_id}`, which also says who organises it) and
//! skips it when `bot_scheduled` is already true; a `BOT_ALREADY_EXISTS` answer counts as done.
//! Unscheduling a bot that is already gone answers 404, which counts as done.

use super::meeting_baas::{require_uuid, Api};
use super::{has_ended, parse_payload, Event, Handler, HandlerError, HandlerFuture};
use crate::config::RecordPolicy;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
struct Payload {
    data: Data,
}

#[derive(Debug, Deserialize)]
struct Data {
    calendar_id: String,
    #[serde(default)]
    series_id: Option<String>,
    #[serde(default)]
    instances: Vec<Instance>,
    #[serde(default)]
    affected_instances: Vec<Instance>,
    #[serde(default)]
    cancelled_instances: Vec<Instance>,
    #[serde(default)]
    events: Vec<Series>,
}

#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    series_id: Option<String>,
    #[serde(default)]
    instances: Vec<Instance>,
}

#[derive(Debug, Deserialize)]
struct Instance {
    event_id: String,
    #[serde(default)]
    series_id: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    bot_scheduled: bool,
    #[serde(default)]
    meeting_url: Option<String>,
}

/// `(series_id, instance)` pairs of a payload, from `instances`, `affected_instances` or
/// `events[].instances` (or, for `cancelled`, `cancelled_instances`).
fn instances(data: &Data, cancelled: bool) -> Result<Vec<(&str, &Instance)>, HandlerError> {
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
    all.into_iter()
        .map(|(series, instance)| {
            let series_id =
                instance.series_id.as_deref().or(series).ok_or_else(|| {
                    HandlerError::permanent(format!("instance {} has no series_id", instance.event_id))
                })?;
            Ok((series_id, instance))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct Details {
    data: DetailsData,
}

#[derive(Debug, Deserialize)]
struct DetailsData {
    #[serde(default)]
    bot_scheduled: bool,
    #[serde(default)]
    attendees: Vec<Attendee>,
}

#[derive(Debug, Deserialize)]
struct Attendee {
    #[serde(default, rename = "self")]
    is_self: bool,
    #[serde(default)]
    organizer: bool,
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

    async fn schedule_one(&self, calendar_id: &str, series_id: &str, instance: &Instance) -> Result<(), HandlerError> {
        let event_id = instance.event_id.as_str();
        let candidate = instance.status.as_deref() == Some("confirmed")
            && instance.meeting_url.as_deref().is_some_and(|u| !u.trim().is_empty())
            && !instance.bot_scheduled
            && !has_ended(instance.end.as_deref())
            && self.api.policy != RecordPolicy::None;
        if !candidate {
            return Ok(());
        }
        require_uuid("series_id", series_id)?;
        require_uuid("event_id", event_id)?;
        // The current state: a bot may have been scheduled since the webhook was sent (or by an
        // earlier run of this very entry).
        let Some(details) = self.api.get::<Details>(&["v2", "calendars", calendar_id, "events", event_id]).await?
        else {
            tracing::info!(calendar_id, event_id, "event no longer exists; nothing to do");
            return Ok(());
        };
        if details.data.bot_scheduled {
            tracing::debug!(calendar_id, event_id, "bot already scheduled");
            return Ok(());
        }
        if self.api.policy == RecordPolicy::Organizer
            && !details.data.attendees.iter().any(|a| a.is_self && a.organizer)
        {
            tracing::debug!(calendar_id, event_id, "not organised by the calendar's owner; no bot");
            return Ok(());
        }
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

impl Handler for Schedule {
    fn handle<'a>(&'a self, event: &'a Event) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload: Payload = parse_payload(event)?;
            let calendar_id = payload.data.calendar_id.as_str();
            for (series_id, instance) in instances(&payload.data, false)? {
                require_uuid("calendar_id", calendar_id)?;
                self.schedule_one(calendar_id, series_id, instance).await?;
            }
            Ok(())
        })
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
            let payload: Payload = parse_payload(event)?;
            let calendar_id = payload.data.calendar_id.as_str();
            for (series_id, instance) in instances(&payload.data, true)? {
                if !instance.bot_scheduled {
                    continue;
                }
                require_uuid("calendar_id", calendar_id)?;
                require_uuid("series_id", series_id)?;
                require_uuid("event_id", &instance.event_id)?;
                let body: Value =
                    json!({"series_id": series_id, "event_id": instance.event_id, "all_occurrences": false});
                match self.api.call(Method::DELETE, &["v2", "calendars", calendar_id, "bots"], Some(&body)).await? {
                    Some(_) => tracing::info!(calendar_id, event_id = %instance.event_id, "bot unscheduled"),
                    None => tracing::info!(calendar_id, event_id = %instance.event_id, "no bot to unschedule"),
                }
            }
            Ok(())
        })
    }
}
