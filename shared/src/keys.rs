//! Redis key names.
//!
//! **One partition** (`PARTITIONS=1`, the default): every key carries the namespace inside one
//! hash tag (`{hookstream}:events`), so all keys of one namespace live in the same Redis Cluster
//! slot and the dedup+append script, which touches the dedup key and the stream at once, is
//! valid on a cluster.
//!
//! **P partitions** (`PARTITIONS=P > 1`): the stream is split into P streams. Partition `i` keeps
//! its stream, dead stream and dedup keys under the hash tag `{ns:i}` (`{hookstream:3}:events`),
//! so each partition's keys share one slot (the script stays one atomic call) while different
//! partitions spread over a cluster's slots. An event goes to the partition given by its dedup
//! identity ([`Partitions::of`]), so a duplicate always meets its first copy.
//!
//! What is one per namespace whatever P is — the meeting locks, the API write limiter and the
//! record of P itself — stays under `{ns}`.

use sha2::{Digest, Sha256};

/// The keys of one partition of a namespace (with P = 1: the namespace's only partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Which partition (0 when there is one).
    pub partition: usize,
    /// `{ns}:events` or `{ns:i}:events` — the stream of accepted events.
    pub events: String,
    /// `{ns}:dead` or `{ns:i}:dead` — the stream of dead-lettered entries, each with the reason.
    pub dead: String,
    /// `{ns}:retry` or `{ns:i}:retry` — the entries parked for a later retry (a sorted set, score
    /// = due time in Unix ms; each member a JSON record of the entry).
    pub retry: String,
    /// `{ns}:ratelimit:api-writes` — the Meeting BaaS API write limiter every processor shares.
    pub api_writes: String,
    /// `{ns}:partitions` — the partition count the namespace was created with.
    pub layout: String,
    /// `{ns}:reconcile` — the reconciler's lease: one replica reconciles at a time.
    pub reconcile_lease: String,
    /// `{ns}:reconcile:dead` — meetings whose reconcile entries died, held back (a hash).
    pub reconcile_dead: String,
    /// `{ns}:reconcile:apis` — API version → when its calendar webhooks were last handled (Unix
    /// ms), for `RECONCILE_APIS=auto`.
    pub reconcile_apis: String,
    /// `{ns}:reconcile:last` — the last pass, for `processor status` (a hash).
    pub reconcile_last: String,
    /// `{ns}:ratelimit:reconcile-reads` — the reconciler's read limiter, shared by replicas.
    pub reconcile_reads: String,
    /// `{ns}:reconcile:now` — calendars to reconcile at once (a set: connections back to active).
    pub reconcile_now: String,
    /// `{ns}:calendars` — v2 calendar id → its connection record (JSON), SPEC §4.6.
    pub calendars: String,
    /// `{ns}:resend:` — prefix of the keys that hold back a second resend of a bot's result for
    /// an hour; the rest is the bot id.
    resend_prefix: String,
    /// `{ns}:dedup:` or `{ns:i}:dedup:` — prefix of the dedup keys; the rest is a hex SHA-256.
    dedup_prefix: String,
    /// `{ns}:lock:` — prefix of the per-meeting locks; the rest is a hex SHA-256.
    lock_prefix: String,
    /// `{ns}:breaker:` — prefix of the breakers; the rest names the downstream.
    breaker_prefix: String,
}

impl Keys {
    /// The keys for namespace `ns` with one partition (validated by the config: no braces, not
    /// empty).
    pub fn new(ns: &str) -> Self {
        Self::partition(ns, 0, 1)
    }

    /// The keys of partition `index` of `count` (`count` = 1: today's unpartitioned keys).
    pub fn partition(ns: &str, index: usize, count: usize) -> Self {
        let tag = if count <= 1 { ns.to_string() } else { format!("{ns}:{index}") };
        Self {
            partition: index,
            events: format!("{{{tag}}}:events"),
            dead: format!("{{{tag}}}:dead"),
            retry: format!("{{{tag}}}:retry"),
            dedup_prefix: format!("{{{tag}}}:dedup:"),
            api_writes: format!("{{{ns}}}:ratelimit:api-writes"),
            layout: format!("{{{ns}}}:partitions"),
            reconcile_lease: format!("{{{ns}}}:reconcile"),
            reconcile_dead: format!("{{{ns}}}:reconcile:dead"),
            reconcile_apis: format!("{{{ns}}}:reconcile:apis"),
            reconcile_last: format!("{{{ns}}}:reconcile:last"),
            reconcile_reads: format!("{{{ns}}}:ratelimit:reconcile-reads"),
            reconcile_now: format!("{{{ns}}}:reconcile:now"),
            calendars: format!("{{{ns}}}:calendars"),
            resend_prefix: format!("{{{ns}}}:resend:"),
            lock_prefix: format!("{{{ns}}}:lock:"),
            breaker_prefix: format!("{{{ns}}}:breaker:"),
        }
    }

    /// `{ns}:lock:<hex sha256 of the meeting key>`: held while one entry reads, decides and acts
    /// on that meeting (v1: `v1:<event uuid>`; v2: `v2:<calendar_id>:<event_id>`).
    pub fn lock(&self, meeting_key: &str) -> String {
        format!("{}{}", self.lock_prefix, hex::encode(Sha256::digest(meeting_key.as_bytes())))
    }

    /// `{ns}:resend:<bot_id>`: set for an hour when the reconciler asked for a bot's final
    /// webhook again (SPEC §4.5: at most once an hour per bot).
    pub fn resend(&self, bot_id: &str) -> String {
        format!("{}{bot_id}", self.resend_prefix)
    }

    /// `{ns}:breaker:<downstream>`: a downstream's breaker, shared by every replica.
    pub fn breaker(&self, downstream: &str) -> String {
        format!("{}{downstream}", self.breaker_prefix)
    }

    /// `{ns}:dedup:<hex sha256 of the dedup identity>` (in this partition). Hashing bounds the key
    /// length whatever the sender put in its message id, and keeps the identity's characters out
    /// of the key space.
    pub fn dedup(&self, dedup_identity: &str) -> String {
        self.dedup_of(&Sha256::digest(dedup_identity.as_bytes()))
    }

    fn dedup_of(&self, digest: &[u8]) -> String {
        let mut key = String::with_capacity(self.dedup_prefix.len() + 64);
        key.push_str(&self.dedup_prefix);
        push_hex(&mut key, digest);
        key
    }
}

/// Appends `bytes` as lowercase hex (no allocation of its own: on the ingress's hot path, where
/// `hex::encode`'s per-character iterator and its `String` showed in the profile).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        let hex = &mut buf[..chunk.len() * 2];
        // The buffer is exactly twice the chunk: this cannot fail.
        if hex::encode_to_slice(chunk, hex).is_ok() {
            out.push_str(std::str::from_utf8(hex).unwrap_or_default());
        }
    }
}

/// Every partition of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    parts: Vec<Keys>,
}

impl Partitions {
    /// The `count` partitions of namespace `ns` (`count` ≥ 1).
    pub fn new(ns: &str, count: usize) -> Self {
        let count = count.max(1);
        Self { parts: (0..count).map(|i| Keys::partition(ns, i, count)).collect() }
    }

    pub fn count(&self) -> usize {
        self.parts.len()
    }

    pub fn all(&self) -> &[Keys] {
        &self.parts
    }

    /// The namespace-wide keys (locks, limiter, layout) — the same in every partition.
    pub fn namespace(&self) -> &Keys {
        &self.parts[0]
    }

    /// The partition of an event and its dedup key: the SHA-256 of the dedup identity (the one
    /// hashed into the dedup key), its first 8 bytes as a number, modulo P. Stable across
    /// processes, versions and machines, so every copy of an event lands where the first did.
    pub fn of(&self, dedup_identity: &str) -> (&Keys, String) {
        let digest = Sha256::digest(dedup_identity.as_bytes());
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        let index = (u64::from_be_bytes(head) % self.parts.len() as u64) as usize;
        let keys = &self.parts[index];
        (keys, keys.dedup_of(&digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_whole() {
        let mut out = String::from("x:");
        push_hex(&mut out, &[0x00, 0xab, 0xff]);
        assert_eq!(out, "x:00abff");
        let long: Vec<u8> = (0..=255).collect();
        let mut all = String::new();
        push_hex(&mut all, &long);
        assert_eq!(all, hex::encode(&long));
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("hookstream");
        assert_eq!(keys.events, "{hookstream}:events");
        assert_eq!(keys.dead, "{hookstream}:dead");
        assert_eq!(
            keys.dedup("abc"),
            "{hookstream}:dedup:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            keys.lock("abc"),
            "{hookstream}:lock:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(keys.api_writes, "{hookstream}:ratelimit:api-writes");
        assert_eq!(keys.layout, "{hookstream}:partitions");
        assert_eq!(keys.retry, "{hookstream}:retry");
        assert_eq!(keys.breaker("forward"), "{hookstream}:breaker:forward");
    }

    #[test]
    fn one_partition_keeps_the_unpartitioned_keys() {
        let parts = Partitions::new("hookstream", 1);
        assert_eq!(parts.count(), 1);
        assert_eq!(parts.all()[0], Keys::new("hookstream"));
        let (keys, dedup) = parts.of("abc");
        assert_eq!((keys.partition, dedup), (0, Keys::new("hookstream").dedup("abc")));
    }

    #[test]
    fn partitions_have_their_own_hash_tag_and_share_the_namespace_keys() {
        let parts = Partitions::new("ns", 8);
        let third = &parts.all()[3];
        assert_eq!((third.events.as_str(), third.dead.as_str()), ("{ns:3}:events", "{ns:3}:dead"));
        assert!(third.dedup("x").starts_with("{ns:3}:dedup:"));
        assert_eq!(third.lock("m"), Keys::new("ns").lock("m"));
        assert_eq!(third.api_writes, "{ns}:ratelimit:api-writes");
        assert_eq!(third.layout, "{ns}:partitions");
        assert_eq!(third.retry, "{ns:3}:retry");
        assert_eq!(third.breaker("meeting_baas"), "{ns}:breaker:meeting_baas");
    }

    #[test]
    fn an_identity_always_lands_in_the_same_partition_and_they_all_get_some() {
        let parts = Partitions::new("ns", 8);
        // sha256("abc") starts ba7816bf8f01cfea: 0xba7816bf8f01cfea % 8 = 2.
        let (keys, dedup) = parts.of("abc");
        assert_eq!(keys.partition, 2);
        assert_eq!(dedup, keys.dedup("abc"));
        assert_eq!(parts.of("abc").0.partition, 2);
        let mut seen = [0usize; 8];
        for i in 0..800 {
            seen[parts.of(&format!("event-{i}")).0.partition] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
