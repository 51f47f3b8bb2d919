//! Property tests of what the ingress does with what strangers send: arbitrary bodies and
//! arbitrary signature, timestamp, API-key and callback headers never panic the authentication,
//! the envelope or the dedup identity, and a request is accepted exactly when it is genuine
//! (SPEC §3.2) — never otherwise, so nothing that is not genuine is ever written.
//!
//! `PROPTEST_CASES` sets the number of inputs (256 by default); a long campaign:
//! `PROPTEST_CASES=1000000 cargo test --release -p ingress --test properties` (docs/testing.md).

use http::{HeaderMap, HeaderName, HeaderValue};
use ingress::auth::{sign, Verifier};
use ingress::identity::{dedup_identity, envelope};
use proptest::prelude::*;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const API_KEY: &str = "the-api-key";
const CALLBACK: &str = "the-callback-secret";
const NOW: i64 = 1_800_000_000;

/// What a request carries in its head, chosen so the genuine cases come up too.
#[derive(Debug, Clone)]
enum Signature {
    None,
    /// The right signature of the body at this offset from now (seconds), under this prefix.
    Right {
        prefix: &'static str,
        offset: i64,
        msg_id: String,
    },
    /// Arbitrary header values.
    Garbage {
        prefix: &'static str,
        id: Vec<u8>,
        timestamp: Vec<u8>,
        signature: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
enum Secret {
    None,
    Right,
    Garbage(Vec<u8>),
}

fn signature() -> impl Strategy<Value = Signature> {
    let prefix = proptest::sample::select(&["svix", "webhook"][..]);
    prop_oneof![
        Just(Signature::None),
        (prefix.clone(), -400i64..400, "[a-z0-9_]{1,20}").prop_map(|(prefix, offset, msg_id)| Signature::Right {
            prefix,
            offset,
            msg_id
        }),
        (prefix, bytes(), bytes(), bytes()).prop_map(|(prefix, id, timestamp, signature)| Signature::Garbage {
            prefix,
            id,
            timestamp,
            signature
        }),
    ]
}

fn secret() -> impl Strategy<Value = Secret> {
    prop_oneof![Just(Secret::None), Just(Secret::Right), bytes().prop_map(Secret::Garbage)]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..48), "\\PC{0,48}".prop_map(String::into_bytes)]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..128),
        ("\\PC{0,24}", "\\PC{0,24}")
            .prop_map(|(e, x)| serde_json::to_vec(&serde_json::json!({"event": e, "data": {"bot_id": x}}))
                .unwrap_or_default()),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ]
}

fn insert(headers: &mut HeaderMap, name: &str, value: &[u8]) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(value)) {
        headers.insert(name, value);
    }
}

/// The headers of the request, and whether SPEC §3.2 calls it genuine.
fn request(sig: &Signature, key: &Secret, callback: &Secret, body: &[u8]) -> (HeaderMap, bool) {
    let mut headers = HeaderMap::new();
    let signed = match sig {
        Signature::None => None,
        Signature::Right { prefix, offset, msg_id } => {
            let timestamp = NOW + offset;
            let value = sign(SECRET, msg_id, timestamp, body).expect("sign");
            insert(&mut headers, &format!("{prefix}-id"), msg_id.as_bytes());
            insert(&mut headers, &format!("{prefix}-timestamp"), timestamp.to_string().as_bytes());
            insert(&mut headers, &format!("{prefix}-signature"), value.as_bytes());
            Some(offset.abs() <= 300)
        }
        Signature::Garbage { prefix, id, timestamp, signature } => {
            insert(&mut headers, &format!("{prefix}-id"), id);
            insert(&mut headers, &format!("{prefix}-timestamp"), timestamp);
            insert(&mut headers, &format!("{prefix}-signature"), signature);
            // A random value is not a valid signature (and a header that could not be built was
            // not sent); present signature headers never fall back to the secrets.
            let present =
                ["id", "timestamp", "signature"].iter().any(|h| headers.contains_key(format!("{prefix}-{h}")));
            present.then_some(false)
        }
    };
    for (name, secret, right) in [("x-meeting-baas-api-key", key, API_KEY), ("x-mb-secret", callback, CALLBACK)] {
        match secret {
            Secret::None => {}
            Secret::Right => insert(&mut headers, name, right.as_bytes()),
            Secret::Garbage(value) => insert(&mut headers, name, value),
        }
    }
    let secret_ok = |name: &str, right: &str| headers.get(name).is_some_and(|v| v.as_bytes() == right.as_bytes());
    let genuine = match signed {
        Some(verified) => verified,
        None => secret_ok("x-meeting-baas-api-key", API_KEY) || secret_ok("x-mb-secret", CALLBACK),
    };
    (headers, genuine)
}

proptest! {
    #[test]
    fn a_request_is_accepted_exactly_when_it_is_genuine(
        sig in signature(), key in secret(), callback in secret(), body in body()
    ) {
        let verifier = Verifier::from_config(Some(SECRET), Some(API_KEY), Some(CALLBACK), false).expect("config");
        let (headers, genuine) = request(&sig, &key, &callback, &body);
        let verdict = verifier.verify(&headers, &body, NOW);
        prop_assert_eq!(verdict.is_ok(), genuine, "{:?} {:?} {:?}: {:?}", sig, key, callback, verdict);
    }

    #[test]
    fn envelopes_and_dedup_identities_never_panic(body in body(), id in proptest::option::of("\\PC{0,32}")) {
        if let Ok(env) = envelope(&body) {
                let value: serde_json::Value = serde_json::from_slice(&body).expect("an envelope is JSON");
                prop_assert!(value.is_object());
                prop_assert_eq!(value["event"].as_str(), Some(env.event.as_str()));
                let identity = dedup_identity(id.as_deref(), &env, &body);
                prop_assert!(!identity.is_empty() || id.as_deref() == Some(""));
                prop_assert_eq!(identity, dedup_identity(id.as_deref(), &env, &body), "stable");
        }
    }
}
