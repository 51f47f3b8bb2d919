//! The reconciler's settings (`RECONCILE_*`).

use crate::downstream::meeting_baas::ApiVersion;
use std::time::Duration;

/// Which API versions to reconcile (`RECONCILE_APIS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apis {
    /// The versions whose calendar webhooks the namespace processed in the last 30 days.
    Auto,
    /// These (`none`: empty).
    These(Vec<ApiVersion>),
}

impl std::str::FromStr for Apis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => return Ok(Self::Auto),
            "none" => return Ok(Self::These(Vec::new())),
            _ => {}
        }
        let mut versions = Vec::new();
        for part in s.split(',').map(str::trim) {
            let version = match part {
                "v1" => ApiVersion::V1,
                "v2" => ApiVersion::V2,
                _ => return Err("expected auto, none, v1, v2 or v1,v2".into()),
            };
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        Ok(Self::These(versions))
    }
}

/// The reconciler's settings (`RECONCILE_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `RECONCILE_INTERVAL_SECS`; zero: off.
    pub interval: Duration,
    pub horizon: Duration,
    pub apis: Apis,
    pub reads_per_sec: u32,
    /// `RECONCILE_RESULTS_HOURS`: how far back ended bots are listed for missing results
    /// (SPEC §4.5); zero: off.
    pub results_lookback: Duration,
    /// `RECONCILE_RESULTS_GRACE_SECS`: a bot that ended more recently is not yet missing its
    /// result (its webhook may be on its way).
    pub results_grace: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apis_setting() {
        assert_eq!("auto".parse(), Ok(Apis::Auto));
        assert_eq!("none".parse(), Ok(Apis::These(vec![])));
        assert_eq!("v2".parse(), Ok(Apis::These(vec![ApiVersion::V2])));
        assert_eq!("V1, v2".parse(), Ok(Apis::These(vec![ApiVersion::V1, ApiVersion::V2])));
        assert!("v3".parse::<Apis>().is_err());
    }
}
