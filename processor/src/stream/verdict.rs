//! The scripts that settle one entry — ack, dead letter, fan-out, park — each acting only on
//! entries this consumer still owns (see the module docs of [`crate::stream`]): the dead letter,
//! the fan-out and the park open with one shared preamble, [`ack_if_owned`], so what follows
//! runs at most once per entry. Beside them, the re-append of parked entries that are due
//! ([`crate::outcome::parking`]).

use super::Stream;
use crate::replies::StreamEntry;
use redis::RedisResult;

/// The fields a dead-letter entry adds to the original ones.
pub const DEAD_FIELDS: &[&str] = &["original_id", "error", "attempts", "deliveries", "failed_at", "consumer"];

pub(super) const ACK_SCRIPT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] lowest id, ARGV[4] highest id,
-- ARGV[5..] entry ids (distinct).
-- XACKs the ids this consumer still owns; returns the ids it does not own (acked already, or
-- reclaimed by another consumer, whose verdict it is now). Ownership is read from this
-- consumer's own pending list between the lowest and the highest id, paged: one XPENDING per
-- thousand of its entries in that range, not one per id.
local want = {}
for i = 5, #ARGV do want[ARGV[i]] = true end
local mine, start = {}, ARGV[3]
while true do
  local rows = redis.call('XPENDING', KEYS[1], ARGV[1], start, ARGV[4], 1000, ARGV[2])
  for _, row in ipairs(rows) do
    if want[row[1]] then
      mine[#mine + 1] = row[1]
      want[row[1]] = nil
    end
  end
  if #rows < 1000 then break end
  start = '(' .. rows[#rows][1]
end
if #mine > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(mine))
end
local lost = {}
for i = 5, #ARGV do
  if want[ARGV[i]] then lost[#lost + 1] = ARGV[i] end
end
return lost
"#;

/// The start of the scripts that settle one entry (ARGV[1] group, ARGV[2] consumer, ARGV[3] id):
/// ack it if this consumer owns it, and go on only if that ack removed it from the pending
/// list; otherwise answer nil. What follows runs at most once per entry.
macro_rules! ack_if_owned {
    () => {
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then
  return false
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[3]) == 0 then
  return false
end
"#
    };
}

pub(super) const DEAD_LETTER_SCRIPT: &str = concat!(
    ack_if_owned!(),
    r#"
-- KEYS[1] stream, KEYS[2] dead stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id,
-- ARGV[4..] the dead entry's fields and values.
-- Acks the entry if this consumer owns it and, only if that ack removed it, adds the dead copy.
-- Returns the dead entry's id, or nil when nothing was done (not owned, or already settled).
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
"#
);

pub(super) const FAN_OUT_SCRIPT: &str = concat!(
    ack_if_owned!(),
    r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] n, ARGV[5..4+n]
-- the fields and values every new entry shares, then (payload, meeting) for each new entry.
-- Acks the entry if this consumer owns it and, only if that ack removed it, appends one entry
-- per meeting: exactly once, even when sent again. Returns the new ids, or nil.
local n = tonumber(ARGV[4])
local ids = {}
for i = 5 + n, #ARGV, 2 do
  local fields = {}
  for j = 5, 4 + n do
    fields[#fields + 1] = ARGV[j]
  end
  fields[#fields + 1] = 'payload'
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = 'meeting'
  fields[#fields + 1] = ARGV[i + 1]
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
return ids
"#
);

pub(super) const PARK_SCRIPT: &str = concat!(
    ack_if_owned!(),
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] stream, KEYS[2] retry set; ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id,
-- ARGV[4] delay, ms; ARGV[5] the record (JSON).
-- Acks the entry if this consumer owns it and, only if that ack removed it, parks the record,
-- due ARGV[4] ms from now on Redis's clock. Returns the due time (Unix ms), or nil.
local due = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], due, ARGV[5])
return due
"#
);

pub(super) const REAPPEND_SCRIPT: &str = concat!(
    crate::clock::lua_now!(),
    r#"
-- KEYS[1] retry set, KEYS[2] stream, KEYS[3] dead stream; ARGV[1] most members at once.
-- Moves the members due now (Redis's clock) back to the stream, each as one new entry with its
-- fields plus attempts, first_attempt_at and parked; a member that is not a readable record
-- goes to the dead stream as it is. Each is appended before it is removed, and both happen in
-- this one script: exactly once. Returns {appended, unreadable}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local function readable(r)
  if type(r) ~= 'table' or type(r.fields) ~= 'table' or #r.fields == 0 then return false end
  for _, name in ipairs({'attempts', 'first_attempt_at', 'parked'}) do
    if type(r[name]) ~= 'string' then return false end
  end
  for _, kv in ipairs(r.fields) do
    if type(kv) ~= 'table' or type(kv[1]) ~= 'string' or type(kv[2]) ~= 'string' then return false end
  end
  return true
end
local appended, unreadable = 0, 0
for _, member in ipairs(due) do
  local ok, r = pcall(cjson.decode, member)
  if ok and readable(r) then
    local f = {}
    for _, kv in ipairs(r.fields) do
      f[#f + 1] = kv[1]
      f[#f + 1] = kv[2]
    end
    f[#f + 1] = 'attempts'
    f[#f + 1] = r.attempts
    f[#f + 1] = 'first_attempt_at'
    f[#f + 1] = r.first_attempt_at
    f[#f + 1] = 'parked'
    f[#f + 1] = r.parked
    redis.call('XADD', KEYS[2], '*', unpack(f))
    appended = appended + 1
  else
    redis.call('XADD', KEYS[3], '*', 'error', 'an unreadable member of the retry set (kept as record)',
      'record', member, 'failed_at', tostring(now))
    unreadable = unreadable + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
return {appended, unreadable}
"#
);

impl Stream {
    /// Acks the ids this consumer still owns, in one script call; returns the ids it did not
    /// own (see [`ACK_SCRIPT`]).
    pub async fn ack_owned(&self, ids: &[&str]) -> RedisResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let by_time = |id: &&str| super::parse_id(id).unwrap_or((u64::MAX, u64::MAX));
        let lowest = ids.iter().copied().min_by_key(by_time).unwrap_or("-");
        let highest = ids.iter().copied().max_by_key(by_time).unwrap_or("+");
        let mut invocation = self.ack_script.key(&self.keys.events);
        invocation.arg(&self.group).arg(&self.consumer).arg(lowest).arg(highest).arg(ids);
        invocation.invoke_async(&mut self.con()).await
    }

    /// The dead-letter script (see the module docs): `Some(dead id)` when this call moved the
    /// entry to `{ns}:dead`, `None` when it was not this consumer's to move (any more).
    pub async fn dead_letter(
        &self,
        entry: &StreamEntry,
        error: &str,
        attempts: u32,
        deliveries: u64,
    ) -> RedisResult<Option<String>> {
        let failed_at = crate::clock::timestamp();
        let mut invocation = self.dead_letter_script.key(&self.keys.events);
        invocation.key(&self.keys.dead).arg(&self.group).arg(&self.consumer).arg(&entry.id);
        for (field, value) in entry.fields.iter().flatten() {
            if !DEAD_FIELDS.contains(&field.as_str()) {
                invocation.arg(field).arg(value.as_slice());
            }
        }
        invocation
            .arg("original_id")
            .arg(&entry.id)
            .arg("error")
            .arg(error)
            .arg("attempts")
            .arg(attempts)
            .arg("deliveries")
            .arg(deliveries)
            .arg("failed_at")
            .arg(&failed_at)
            .arg("consumer")
            .arg(&self.consumer);
        invocation.invoke_async(&mut self.con()).await
    }

    /// Splits `entry` into one entry per meeting — `(payload, meeting key)` each, with the
    /// original's other fields and `fanout_of` — and acks it, in one script (see
    /// [`FAN_OUT_SCRIPT`]): `Some(new ids)` when done by this call, `None` when the entry was not
    /// this consumer's to split (any more).
    pub async fn fan_out(
        &self,
        entry: &StreamEntry,
        meetings: &[(Vec<u8>, String)],
    ) -> RedisResult<Option<Vec<String>>> {
        use shared::entry::{FANOUT_OF, MEETING, PAYLOAD};
        let shared: Vec<(&str, &[u8])> = entry
            .fields
            .iter()
            .flatten()
            .filter(|(k, _)| k != PAYLOAD && k != MEETING && k != FANOUT_OF)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .chain(std::iter::once((FANOUT_OF, entry.id.as_bytes())))
            .collect();
        let mut invocation = self.fan_out_script.key(&self.keys.events);
        invocation.arg(&self.group).arg(&self.consumer).arg(&entry.id).arg(shared.len() * 2);
        for (field, value) in &shared {
            invocation.arg(*field).arg(*value);
        }
        for (payload, meeting) in meetings {
            invocation.arg(payload.as_slice()).arg(meeting);
        }
        invocation.invoke_async(&mut self.con()).await
    }

    /// Parks `record` (the entry `id`, acked in the same script if this consumer owns it) in the
    /// retry set, due after `delay` (see [`PARK_SCRIPT`]): `Some(due, Unix ms)` when done by
    /// this call, `None` when the entry was not this consumer's to park (any more).
    pub async fn park(&self, id: &str, record: &str, delay: std::time::Duration) -> RedisResult<Option<u64>> {
        let mut invocation = self.park_script.key(&self.keys.events);
        invocation
            .key(&self.keys.retry)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(id)
            .arg(delay.as_millis() as u64)
            .arg(record);
        invocation.invoke_async(&mut self.con()).await
    }

    /// Re-appends at most `most` due members of the retry set (see [`REAPPEND_SCRIPT`]):
    /// `(appended, unreadable)`.
    pub async fn reappend_due(&self, most: usize) -> RedisResult<(u64, u64)> {
        let mut invocation = self.reappend_script.key(&self.keys.retry);
        invocation.key(&self.keys.events).key(&self.keys.dead).arg(most);
        invocation.invoke_async(&mut self.con()).await
    }
}
