//! The scripts that settle one entry — ack, dead letter, fan-out — each acting only on entries
//! this consumer still owns (see the module docs of [`crate::stream`]): the dead letter and the
//! fan-out open with one shared preamble, [`ack_if_owned`], so what follows runs at most once
//! per entry.

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
        let failed_at = shared::entry::timestamp_now();
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
}
