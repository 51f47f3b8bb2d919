//! The decision of SPEC §4.2: one rule, both ways, for every calendar entry — v1 sync, v2
//! created, updated, synced and cancelled, and the reconciler's entries — and both API versions.
//! It reads only the API's **current** event (never the webhook's copy, which may be stale by
//! the time the entry runs), so a late, repeated or out-of-order webhook leads to the same bots
//! as a timely one.
//!
//! | the current event is | and has a bot | the effect |
//! |---|---|---|
//! | wanted: confirmed, with a meeting URL, not ended, wanted by `RECORD_POLICY` | no | schedule |
//! | unwanted: cancelled, or without a meeting URL, or not wanted by `RECORD_POLICY=organizer` — and not yet started | yes | unschedule |
//! | anything else: ended or started, v2 `tentative`, or `RECORD_POLICY=none` | | nothing |

/// Which meetings get a recording bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPolicy {
    /// Every event with a meeting URL that has not ended.
    All,
    /// Only events the calendar's owner organises.
    Organizer,
    /// None.
    None,
}

impl std::str::FromStr for RecordPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(Self::All),
            "organizer" => Ok(Self::Organizer),
            "none" => Ok(Self::None),
            _ => Err("expected all, organizer or none".into()),
        }
    }
}

/// What to do with one meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Schedule,
    Unschedule,
    Nothing,
}

/// Whether the meeting takes place, as the API says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// v1 not `deleted`; v2 `confirmed`.
    Confirmed,
    /// v1 `deleted`; v2 `cancelled`.
    Cancelled,
    /// v2 `tentative`, or a status hookstream does not know: neither way.
    Undecided,
}

/// The API's current event, in the terms of the decision (each API version maps its own fields
/// to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub status: Status,
    /// A non-empty `meeting_url`.
    pub has_url: bool,
    /// Its start lies in the past (unknown: not started).
    pub started: bool,
    /// Its end lies in the past (unknown: not ended).
    pub ended: bool,
    /// The calendar's owner organises it (v1 `is_organizer`; v2 the `self` attendee is the
    /// organizer).
    pub owner_organises: bool,
    /// A bot is scheduled (v1 `bot_param` set; v2 `bot_scheduled`).
    pub has_bot: bool,
}

/// The decision of SPEC §4.2.
pub fn decide(facts: &Facts, policy: RecordPolicy) -> Decision {
    let policy_wants = match policy {
        // hookstream leaves every bot as it is.
        RecordPolicy::None => return Decision::Nothing,
        RecordPolicy::All => true,
        RecordPolicy::Organizer => facts.owner_organises,
    };
    if facts.status == Status::Undecided {
        return Decision::Nothing;
    }
    let wanted = facts.status == Status::Confirmed && facts.has_url && !facts.ended && policy_wants;
    let unwanted = (facts.status == Status::Cancelled || !facts.has_url || !policy_wants) && !facts.started;
    match (wanted, unwanted, facts.has_bot) {
        (true, _, false) => Decision::Schedule,
        (_, true, true) => Decision::Unschedule,
        _ => Decision::Nothing,
    }
}

/// Whether an RFC 3339 time lies in the past. A missing or unreadable time counts as not yet:
/// a meeting is never skipped for want of a parsable time.
pub fn is_past(time: Option<&str>) -> bool {
    time.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t.with_timezone(&chrono::Utc) < crate::clock::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use RecordPolicy as P;
    use Status::*;

    const UPCOMING: Facts =
        Facts { status: Confirmed, has_url: true, started: false, ended: false, owner_organises: true, has_bot: false };

    fn with(change: impl FnOnce(&mut Facts)) -> Facts {
        let mut f = UPCOMING;
        change(&mut f);
        f
    }

    /// Every row of SPEC §4.2, for every policy.
    #[test]
    fn the_table() {
        let running = |f: &mut Facts| f.started = true;
        let over = |f: &mut Facts| {
            f.started = true;
            f.ended = true
        };
        let bot = |f: &mut Facts| f.has_bot = true;
        let cases: Vec<(&str, Facts, [Decision; 3])> = vec![
            // [all, organizer, none]
            ("wanted, no bot", UPCOMING, [Schedule, Schedule, Nothing]),
            ("wanted, a bot", with(bot), [Nothing, Nothing, Nothing]),
            ("wanted but started, no bot: join late", with(running), [Schedule, Schedule, Nothing]),
            ("ended, no bot", with(over), [Nothing, Nothing, Nothing]),
            (
                "ended, a bot",
                with(|f| {
                    over(f);
                    bot(f)
                }),
                [Nothing, Nothing, Nothing],
            ),
            (
                "cancelled, a bot",
                with(|f| {
                    f.status = Cancelled;
                    bot(f)
                }),
                [Unschedule, Unschedule, Nothing],
            ),
            ("cancelled, no bot", with(|f| f.status = Cancelled), [Nothing, Nothing, Nothing]),
            (
                "cancelled but started, a bot",
                with(|f| {
                    f.status = Cancelled;
                    running(f);
                    bot(f)
                }),
                [Nothing, Nothing, Nothing],
            ),
            (
                "no URL, a bot",
                with(|f| {
                    f.has_url = false;
                    bot(f)
                }),
                [Unschedule, Unschedule, Nothing],
            ),
            ("no URL, no bot", with(|f| f.has_url = false), [Nothing, Nothing, Nothing]),
            ("not the owner's, no bot", with(|f| f.owner_organises = false), [Schedule, Nothing, Nothing]),
            (
                "not the owner's, a bot",
                with(|f| {
                    f.owner_organises = false;
                    bot(f)
                }),
                [Nothing, Unschedule, Nothing],
            ),
            (
                "not the owner's, started, a bot",
                with(|f| {
                    f.owner_organises = false;
                    running(f);
                    bot(f)
                }),
                [Nothing, Nothing, Nothing],
            ),
            ("tentative, no bot", with(|f| f.status = Undecided), [Nothing, Nothing, Nothing]),
            (
                "tentative, a bot",
                with(|f| {
                    f.status = Undecided;
                    bot(f)
                }),
                [Nothing, Nothing, Nothing],
            ),
        ];
        for (what, facts, expected) in cases {
            for (policy, want) in [P::All, P::Organizer, P::None].into_iter().zip(expected) {
                assert_eq!(decide(&facts, policy), want, "{what}, RECORD_POLICY={policy:?}");
            }
        }
    }

    #[test]
    fn times() {
        let at = |offset: chrono::Duration| (chrono::Utc::now() + offset).to_rfc3339();
        assert!(is_past(Some("2001-01-01T00:00:00Z")));
        assert!(is_past(Some(&at(chrono::Duration::minutes(-1)))));
        assert!(!is_past(Some(&at(chrono::Duration::days(1)))));
        assert!(!is_past(None));
        assert!(!is_past(Some("soon")));
    }
}
