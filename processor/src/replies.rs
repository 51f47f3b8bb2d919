//! Redis replies as types.
//!
//! Every stream reply the processor and the operator commands read is turned into a type here,
//! through `FromRedisValue`, in one place: RESP2 (flat arrays) and RESP3 (maps) are both
//! understood, and no other module looks inside a `redis::Value` by position.

use redis::{FromRedisValue, ParsingError, Value};
use std::time::Duration;

/// An entry's fields, in stream order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// A stream entry: `[id, [field, value, …]]`. `fields` is `None` when the id is pending but the
/// entry was deleted from the stream (XREADGROUP of history, XCLAIM answer `[id, nil]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub fields: Option<Fields>,
}

impl StreamEntry {
    /// A field's value as text (lossy), when present.
    pub fn get(&self, name: &str) -> Option<String> {
        self.bytes(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A field's raw value, when present.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields.as_ref()?.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
}

/// A list of entries: XRANGE, XREVRANGE, XCLAIM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries(pub Vec<StreamEntry>);

/// An XREADGROUP answer, flattened over its streams (nil when nothing arrived in time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReply(pub Vec<StreamEntry>);

/// One row of the extended XPENDING form: `[id, consumer, idle ms, delivery count]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub id: String,
    pub consumer: String,
    pub idle: Duration,
    pub deliveries: u64,
}

/// The extended XPENDING form: rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingRows(pub Vec<PendingRow>);

/// The summary XPENDING form: `[count, smallest id, greatest id, [[consumer, count], …]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    pub count: u64,
    pub oldest: Option<String>,
}

/// XAUTOCLAIM: `[next cursor, [entries], [deleted ids]]` (the third part since Redis 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoClaim {
    pub next: String,
    pub claimed: Vec<StreamEntry>,
    pub deleted: Vec<String>,
}

/// One consumer of XINFO CONSUMERS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: String,
    pub pending: u64,
    pub idle: Duration,
}

/// XINFO CONSUMERS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consumers(pub Vec<ConsumerInfo>);

fn bad(what: &str, v: &Value) -> ParsingError {
    ParsingError::from(format!("unexpected reply for {what}: {v:?}"))
}

/// A reply of the right kind whose inside is not as expected (the value itself is not kept:
/// copying every reply to describe a failure that never happens would cost more than parsing).
fn malformed(what: &str) -> ParsingError {
    ParsingError::from(format!("malformed reply for {what}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        other => text(&other).unwrap_or_default().into_bytes(),
    }
}

/// The items of an array, set or push reply; `None` for anything else.
fn items(v: Value) -> Result<Vec<Value>, Value> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => Err(other),
    }
}

/// Key/value pairs from a flat array (RESP2) or a map (RESP3).
fn pairs(v: Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Map(map) => Some(map),
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Some(out)
        }
        _ => None,
    }
}

impl FromRedisValue for StreamEntry {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let parts = items(v).map_err(|v| bad("a stream entry", &v))?;
        let mut parts = parts.into_iter();
        let (Some(id), fields) = (parts.next(), parts.next()) else { return Err(malformed("a stream entry")) };
        let id = text(&id).ok_or_else(|| malformed("a stream entry id"))?;
        let fields = match fields {
            None | Some(Value::Nil) => None,
            // RESP2: a flat array, read in place (the hot path: every entry read).
            Some(Value::Array(flat)) => {
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    fields.push((text(&k).unwrap_or_default(), bytes(v)));
                }
                Some(fields)
            }
            Some(fields) => {
                let pairs = pairs(fields).ok_or_else(|| malformed("stream entry fields"))?;
                Some(pairs.into_iter().map(|(k, v)| (text(&k).unwrap_or_default(), bytes(v))).collect())
            }
        };
        Ok(StreamEntry { id, fields })
    }
}

impl FromRedisValue for Entries {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match v {
            Value::Nil => Ok(Self::default()),
            v => {
                let list = items(v).map_err(|v| bad("stream entries", &v))?;
                list.into_iter().map(StreamEntry::from_redis_value).collect::<Result<_, _>>().map(Self)
            }
        }
    }
}

impl FromRedisValue for ReadReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let streams: Vec<(Value, Value)> = match v {
            Value::Nil => return Ok(Self::default()),
            // RESP3: {stream: entries}.
            Value::Map(map) => map,
            // RESP2: [[stream, entries], …].
            other => items(other)
                .map_err(|v| bad("XREADGROUP", &v))?
                .into_iter()
                .map(|s| {
                    let kv = items(s).map_err(|v| bad("XREADGROUP stream", &v))?;
                    let mut kv = kv.into_iter();
                    match (kv.next(), kv.next()) {
                        (Some(k), Some(v)) => Ok((k, v)),
                        _ => Err(malformed("XREADGROUP stream")),
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let mut out = Vec::new();
        for (_, entries) in streams {
            out.extend(Entries::from_redis_value(entries)?.0);
        }
        Ok(Self(out))
    }
}

impl FromRedisValue for PendingRow {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let cols = items(v).map_err(|v| bad("an XPENDING row", &v))?;
        match cols.as_slice() {
            [id, consumer, idle, deliveries, ..] => Ok(PendingRow {
                id: text(id).ok_or_else(|| malformed("an XPENDING row"))?,
                consumer: text(consumer).ok_or_else(|| malformed("an XPENDING row"))?,
                idle: Duration::from_millis(int(idle).ok_or_else(|| malformed("an XPENDING row"))?),
                deliveries: int(deliveries).ok_or_else(|| malformed("an XPENDING row"))?,
            }),
            _ => Err(malformed("an XPENDING row")),
        }
    }
}

impl FromRedisValue for PendingRows {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match v {
            Value::Nil => Ok(Self::default()),
            v => items(v)
                .map_err(|v| bad("XPENDING", &v))?
                .into_iter()
                .map(PendingRow::from_redis_value)
                .collect::<Result<_, _>>()
                .map(Self),
        }
    }
}

impl FromRedisValue for PendingSummary {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let parts = items(v).map_err(|v| bad("the XPENDING summary", &v))?;
        let count = parts.first().and_then(int).ok_or_else(|| malformed("the XPENDING summary"))?;
        Ok(PendingSummary { count, oldest: parts.get(1).and_then(text) })
    }
}

impl FromRedisValue for AutoClaim {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let mut parts = items(v).map_err(|v| bad("XAUTOCLAIM", &v))?.into_iter();
        let next = parts.next().as_ref().and_then(text).ok_or_else(|| malformed("XAUTOCLAIM"))?;
        let claimed = Entries::from_redis_value(parts.next().ok_or_else(|| malformed("XAUTOCLAIM"))?)?.0;
        let deleted = match parts.next() {
            None | Some(Value::Nil) => Vec::new(),
            Some(ids) => items(ids).map_err(|v| bad("XAUTOCLAIM deleted ids", &v))?.iter().filter_map(text).collect(),
        };
        Ok(AutoClaim { next, claimed, deleted })
    }
}

impl FromRedisValue for ConsumerInfo {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let pairs = pairs(v).ok_or_else(|| malformed("a consumer"))?;
        let field = |name: &str| pairs.iter().find(|(k, _)| text(k).as_deref() == Some(name)).map(|(_, v)| v);
        Ok(ConsumerInfo {
            name: field("name").and_then(text).ok_or_else(|| malformed("a consumer"))?,
            pending: field("pending").and_then(int).unwrap_or(0),
            idle: Duration::from_millis(field("idle").and_then(int).unwrap_or(0)),
        })
    }
}

impl FromRedisValue for Consumers {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match v {
            Value::Nil => Ok(Self::default()),
            v => items(v)
                .map_err(|v| bad("XINFO CONSUMERS", &v))?
                .into_iter()
                .map(ConsumerInfo::from_redis_value)
                .collect::<Result<_, _>>()
                .map(Self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    fn entry_resp2(id: &str) -> Value {
        arr(vec![b(id), arr(vec![b("event"), b("x"), b("payload"), b("{}")])])
    }

    fn entry_resp3(id: &str) -> Value {
        arr(vec![b(id), Value::Map(vec![(b("event"), b("x")), (b("payload"), b("{}"))])])
    }

    fn parse<T: FromRedisValue>(v: Value) -> T {
        T::from_redis_value(v).expect("parses")
    }

    #[test]
    fn entries_in_both_protocols_and_deleted_ones() {
        for entry in [entry_resp2("1-0"), entry_resp3("1-0")] {
            let e: StreamEntry = parse(entry);
            assert_eq!(e.id, "1-0");
            assert_eq!(e.get("event").as_deref(), Some("x"));
            assert_eq!(e.bytes("payload"), Some(&b"{}"[..]));
        }
        let deleted: StreamEntry = parse(arr(vec![b("2-0"), Value::Nil]));
        assert_eq!(deleted, StreamEntry { id: "2-0".into(), fields: None });
        let list: Entries = parse(arr(vec![entry_resp2("1-0"), arr(vec![b("2-0"), Value::Nil])]));
        assert_eq!(list.0.len(), 2);
        assert!(StreamEntry::from_redis_value(Value::Int(3)).is_err());
        assert!(StreamEntry::from_redis_value(arr(vec![])).is_err());
    }

    #[test]
    fn xreadgroup_in_both_protocols() {
        let resp2 = arr(vec![arr(vec![b("{ns}:events"), arr(vec![entry_resp2("1-0"), entry_resp2("2-0")])])]);
        let resp3 = Value::Map(vec![(b("{ns}:events"), arr(vec![entry_resp3("1-0"), entry_resp3("2-0")]))]);
        for reply in [resp2, resp3] {
            let read: ReadReply = parse(reply);
            assert_eq!(read.0.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["1-0", "2-0"]);
        }
        assert_eq!(parse::<ReadReply>(Value::Nil), ReadReply::default());
    }

    #[test]
    fn pending_rows_and_summary() {
        let rows: PendingRows = parse(arr(vec![
            arr(vec![b("1-0"), b("alice"), Value::Int(1500), Value::Int(3)]),
            arr(vec![b("2-0"), b("bob"), Value::Int(0), Value::Int(1)]),
        ]));
        assert_eq!(
            rows.0[0],
            PendingRow { id: "1-0".into(), consumer: "alice".into(), idle: Duration::from_millis(1500), deliveries: 3 }
        );
        assert_eq!(rows.0[1].consumer, "bob");
        assert!(PendingRow::from_redis_value(arr(vec![b("1-0"), b("alice")])).is_err());
        let summary: PendingSummary =
            parse(arr(vec![Value::Int(2), b("1-0"), b("2-0"), arr(vec![arr(vec![b("alice"), b("2")])])]));
        assert_eq!(summary, PendingSummary { count: 2, oldest: Some("1-0".into()) });
        let empty: PendingSummary = parse(arr(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]));
        assert_eq!(empty, PendingSummary { count: 0, oldest: None });
    }

    #[test]
    fn xautoclaim_with_and_without_deleted_ids() {
        let reply = arr(vec![b("0-0"), arr(vec![entry_resp2("1-0")]), arr(vec![b("3-0")])]);
        let claim: AutoClaim = parse(reply);
        assert_eq!((claim.next.as_str(), claim.claimed.len(), claim.deleted), ("0-0", 1, vec!["3-0".to_string()]));
        let claim: AutoClaim = parse(arr(vec![b("5-0"), arr(vec![entry_resp3("4-0")])]));
        assert_eq!((claim.next.as_str(), claim.claimed[0].id.as_str()), ("5-0", "4-0"));
        assert!(claim.deleted.is_empty());
    }

    #[test]
    fn consumers_in_both_protocols() {
        let resp2 = arr(vec![arr(vec![
            b("name"),
            b("alice"),
            b("pending"),
            Value::Int(2),
            b("idle"),
            Value::Int(900),
            b("inactive"),
            Value::Int(900),
        ])]);
        let resp3 = arr(vec![Value::Map(vec![
            (b("name"), b("alice")),
            (b("pending"), Value::Int(2)),
            (b("idle"), Value::Int(900)),
        ])]);
        for reply in [resp2, resp3] {
            let consumers: Consumers = parse(reply);
            assert_eq!(
                consumers.0,
                vec![ConsumerInfo { name: "alice".into(), pending: 2, idle: Duration::from_millis(900) }]
            );
        }
    }
}
