//! What one event means for the activity metrics (docs/metrics.md, Inputs), and the
//! small value types rollups are made of: local days and sorted minute lists.

use std::collections::HashMap;

use chrono::{NaiveDate, TimeZone};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::metrics::MetricsConfig;

/// The activity meaning of an event that counts as activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The feature it is a use of, if any (never logins, logouts, heartbeats, pages).
    pub feature: Option<String>,
    pub login: bool,
    pub education: bool,
    /// A use of a key action (config `key_actions`), for `rate_of_adoption`.
    pub key: bool,
}

/// Classifies events by type and name, following the `[metrics]` config. Names are
/// classified once and remembered.
pub struct Classifier {
    config: MetricsConfig,
    passive: GlobSet,
    /// (exact name or glob, feature) in config order; exact names win over globs.
    feature_globs: Vec<(GlobSet, String)>,
    cache: HashMap<String, Option<Activity>>,
}

impl Classifier {
    pub fn new(config: &MetricsConfig) -> Classifier {
        let glob_set = |patterns: &[&String]| {
            let mut builder = GlobSetBuilder::new();
            for pattern in patterns {
                builder.add(
                    Glob::new(pattern).expect("invariant: globs are checked when the config loads"),
                );
            }
            builder.build().expect("invariant: checked globs build")
        };
        let passive = glob_set(&config.passive_events.iter().collect::<Vec<_>>());
        let feature_globs = config
            .features
            .iter()
            .map(|(pattern, feature)| (glob_set(&[pattern]), feature.clone()))
            .collect();
        Classifier {
            config: config.clone(),
            passive,
            feature_globs,
            cache: HashMap::new(),
        }
    }

    /// `None` when the event is no activity: identify/group/alias, passive, or unnamed track.
    pub fn classify(&mut self, kind: &str, name: Option<&str>) -> Option<Activity> {
        match kind {
            "page" | "screen" => {
                if name.is_some_and(|n| self.passive.is_match(n)) {
                    return None;
                }
                Some(Activity {
                    feature: None,
                    login: false,
                    education: false,
                    key: false,
                })
            }
            "track" => {
                let name = name?;
                if let Some(known) = self.cache.get(name) {
                    return known.clone();
                }
                let activity = self.classify_track(name);
                if self.cache.len() < 100_000 {
                    self.cache.insert(name.to_string(), activity.clone());
                }
                activity
            }
            _ => None,
        }
    }

    fn classify_track(&self, name: &str) -> Option<Activity> {
        if self.passive.is_match(name) {
            return None;
        }
        let config = &self.config;
        let education = config
            .education_prefixes
            .iter()
            .any(|p| name.starts_with(p.as_str()));
        if name == config.login_event {
            return Some(Activity {
                feature: None,
                login: true,
                education,
                key: false,
            });
        }
        if name == config.logout_event || name == config.heartbeat_event {
            return Some(Activity {
                feature: None,
                login: false,
                education,
                key: false,
            });
        }
        let feature = config
            .features
            .get(name)
            .cloned()
            .or_else(|| {
                self.feature_globs
                    .iter()
                    .find(|(glob, _)| glob.is_match(name))
                    .map(|(_, f)| f.clone())
            })
            .unwrap_or_else(|| name.to_string());
        let key = config.key_actions.contains(&feature);
        Some(Activity {
            feature: Some(feature),
            login: false,
            education,
            key,
        })
    }
}

/// Days since 1970-01-01 of a date.
pub fn day_number(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")).num_days() as i32
}

pub fn day_date(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid") + chrono::Duration::days(i64::from(day))
}

/// The local day (days since 1970-01-01) an instant falls on in `tz`.
pub fn local_day(ms: i64, tz: chrono_tz::Tz) -> i32 {
    let utc = chrono::Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default();
    day_number(utc.with_timezone(&tz).date_naive())
}

/// The UTC minute (minutes since the epoch) an instant falls in.
pub fn minute(ms: i64) -> u32 {
    ms.div_euclid(60_000).clamp(0, i64::from(u32::MAX)) as u32
}

/// Sorted distinct minutes, stored as little-endian u32s.
pub fn decode_minutes(blob: &[u8]) -> Vec<u32> {
    blob.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn encode_minutes(minutes: &[u32]) -> Vec<u8> {
    minutes.iter().flat_map(|m| m.to_le_bytes()).collect()
}

/// Sorts and removes duplicates in place.
pub fn normalize(minutes: &mut Vec<u32>) {
    minutes.sort_unstable();
    minutes.dedup();
}

/// Runs of activity: a gap longer than `idle` minutes starts a new session.
pub fn sessions(minutes: &[u32], idle: u32) -> u32 {
    if minutes.is_empty() {
        return 0;
    }
    1 + minutes.windows(2).filter(|w| w[1] - w[0] > idle).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_config() {
        let mut config = MetricsConfig::default();
        config.features.insert("Report *".into(), "reports".into());
        config
            .features
            .insert("Report Exported".into(), "export".into());
        config.passive_events.push("Background *".into());
        config.key_actions.push("reports".into());
        let mut c = Classifier::new(&config);
        assert_eq!(
            c.classify("track", Some("Signed In")).unwrap(),
            Activity {
                feature: None,
                login: true,
                education: false,
                key: false
            }
        );
        assert_eq!(
            c.classify("track", Some("Active Ping")).unwrap().feature,
            None
        );
        assert_eq!(
            c.classify("track", Some("Signed Out")).unwrap().feature,
            None
        );
        assert_eq!(
            c.classify("track", Some("Report Viewed")).unwrap(),
            Activity {
                feature: Some("reports".into()),
                login: false,
                education: false,
                key: true
            }
        );
        assert_eq!(
            c.classify("track", Some("Report Exported"))
                .unwrap()
                .feature
                .as_deref(),
            Some("export")
        );
        assert_eq!(
            c.classify("track", Some("Doc Viewed")).unwrap(),
            Activity {
                feature: Some("Doc Viewed".into()),
                login: false,
                education: true,
                key: false
            }
        );
        assert_eq!(c.classify("track", Some("Background Sync")), None);
        assert_eq!(c.classify("page", Some("Home")).unwrap().feature, None);
        assert_eq!(c.classify("identify", None), None);
    }

    #[test]
    fn local_days_follow_the_timezone() {
        // 2026-03-01T23:30:00Z is already 2 March in Stockholm (UTC+1).
        let ms = chrono::DateTime::parse_from_rfc3339("2026-03-01T23:30:00Z")
            .unwrap()
            .timestamp_millis();
        let utc_day = local_day(ms, chrono_tz::UTC);
        assert_eq!(day_date(utc_day).to_string(), "2026-03-01");
        assert_eq!(
            day_date(local_day(ms, chrono_tz::Europe::Stockholm)).to_string(),
            "2026-03-02"
        );
        assert_eq!(
            sessions(&[10, 20, 50, 80, 200], 30),
            2,
            "a 30-minute gap continues, 120 minutes start anew"
        );
        assert_eq!(
            decode_minutes(&encode_minutes(&[1, 70_000_000])),
            vec![1, 70_000_000]
        );
    }
}
