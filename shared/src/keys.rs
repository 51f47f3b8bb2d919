//! Redis key names.
//!
//! Every key carries the namespace inside one hash tag (`{hookstream}:events`), so all keys of
//! one namespace live in the same Redis Cluster slot and the dedup+append script, which touches
//! the dedup key and the stream at once, is valid on a cluster.

use sha2::{Digest, Sha256};

/// The keys of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `{ns}:events` — the stream of accepted events.
    pub events: String,
    /// `{ns}:dead` — the stream of dead-lettered entries, each with the reason.
    pub dead: String,
    /// `{ns}:ratelimit:api-writes` — the Meeting BaaS API write limiter every processor shares.
    pub api_writes: String,
    /// `{ns}:dedup:` — prefix of the dedup keys; the rest is a hex SHA-256.
    dedup_prefix: String,
    /// `{ns}:lock:` — prefix of the per-meeting locks; the rest is a hex SHA-256.
    lock_prefix: String,
}

impl Keys {
    /// The keys for namespace `ns` (validated by the config: no braces, not empty).
    pub fn new(ns: &str) -> Self {
        Self {
            events: format!("{{{ns}}}:events"),
            dead: format!("{{{ns}}}:dead"),
            api_writes: format!("{{{ns}}}:ratelimit:api-writes"),
            dedup_prefix: format!("{{{ns}}}:dedup:"),
            lock_prefix: format!("{{{ns}}}:lock:"),
        }
    }

    /// `{ns}:lock:<hex sha256 of the meeting key>`: held while one entry reads, decides and acts
    /// on that meeting (v1: `v1:<event uuid>`; v2: `v2:<calendar_id>:<event_id>`).
    pub fn lock(&self, meeting_key: &str) -> String {
        format!("{}{}", self.lock_prefix, hex::encode(Sha256::digest(meeting_key.as_bytes())))
    }

    /// `{ns}:dedup:<hex sha256 of the dedup identity>`. Hashing bounds the key length whatever the
    /// sender put in its message id, and keeps the identity's characters out of the key space.
    pub fn dedup(&self, dedup_identity: &str) -> String {
        let digest = Sha256::digest(dedup_identity.as_bytes());
        let mut key = String::with_capacity(self.dedup_prefix.len() + 64);
        key.push_str(&self.dedup_prefix);
        key.push_str(&hex::encode(digest));
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
