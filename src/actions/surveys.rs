//! The survey policy, pure: who may be asked what, and when, without pestering anyone.
//! Seed 003: "after each support inquiry (up to once per month) or proactively on a
//! quarterly basis if the customer hasn't initiated outreach".

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::share::Quarter;

/// `[actions.surveys]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Send surveys at all (off by default: bellwether does not survey anyone unasked).
    pub enabled: bool,
    /// CSAT to the person who opened a ticket, after it closes...
    pub after_ticket: bool,
    /// ...at most once per this many days per person.
    pub after_ticket_days: u32,
    /// What the after-ticket survey asks: `csat` (1-5) or `ces` (1-7, effort).
    pub after_ticket_kind: String,
    /// NPS each quarter to the active people of accounts with no ticket in the quarter.
    pub quarterly_nps: bool,
    /// The go-live question ("would you recommend...", yes/no) when a contract goes live.
    pub go_live: bool,
    /// Never two surveys to one person within this many days.
    pub global_gap_days: u32,
    /// A survey link works this long.
    pub token_valid_days: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: false,
            after_ticket: true,
            after_ticket_days: 30,
            after_ticket_kind: "csat".into(),
            quarterly_nps: true,
            go_live: true,
            global_gap_days: 14,
            token_valid_days: 30,
        }
    }
}

impl Policy {
    pub fn check(&self) -> Result<(), (String, String)> {
        if !["csat", "ces"].contains(&self.after_ticket_kind.as_str()) {
            return Err((
                "after_ticket_kind".into(),
                format!("{:?} is not csat or ces", self.after_ticket_kind),
            ));
        }
        for (key, value, max) in [
            ("after_ticket_days", self.after_ticket_days, 366),
            ("global_gap_days", self.global_gap_days, 366),
            ("token_valid_days", self.token_valid_days, 365),
        ] {
            if value > max || (key == "token_valid_days" && value == 0) {
                return Err((
                    key.into(),
                    format!(
                        "must be at most {max}{}",
                        if key == "token_valid_days" {
                            " and at least 1"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Why a survey would be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A ticket of this person closed.
    Ticket { ticket_id: String },
    /// The quarterly NPS; the account had no ticket in the quarter.
    Quarterly { quarter: Quarter },
    /// A contract went live.
    GoLive { subscription_id: String },
}

impl Trigger {
    /// The `trigger` column of the survey answer it leads to.
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Ticket { .. } => "ticket",
            Trigger::Quarterly { .. } => "quarterly",
            Trigger::GoLive { .. } => "go-live",
        }
    }

    /// The survey kind asked (after a ticket: the policy's `after_ticket_kind`).
    pub fn kind<'a>(&self, policy: &'a Policy) -> &'a str {
        match self {
            Trigger::Ticket { .. } => policy.after_ticket_kind.as_str(),
            Trigger::Quarterly { .. } => "nps",
            Trigger::GoLive { .. } => "go_live_recommend",
        }
    }

    /// Unique per person and occasion: the same occasion never asks twice.
    pub fn key(&self, user_id: &str) -> String {
        match self {
            Trigger::Ticket { ticket_id } => format!("ticket:{ticket_id}:{user_id}"),
            Trigger::Quarterly { quarter } => format!("quarterly:{quarter}:{user_id}"),
            Trigger::GoLive { subscription_id } => format!("go-live:{subscription_id}:{user_id}"),
        }
    }
}

/// A survey already sent to the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub trigger: &'static str,
    pub day: NaiveDate,
}

/// Whether `trigger` may survey a person today given what they were sent before; the
/// reason when not.
pub fn allowed(
    trigger: &Trigger,
    history: &[Sent],
    today: NaiveDate,
    policy: &Policy,
) -> Result<(), String> {
    let within = |days: u32, filter: &dyn Fn(&Sent) -> bool| {
        history
            .iter()
            .any(|s| filter(s) && (today - s.day).num_days() < i64::from(days))
    };
    if within(policy.global_gap_days, &|_| true) {
        return Err(format!("surveyed within {} days", policy.global_gap_days));
    }
    match trigger {
        Trigger::Ticket { .. } if within(policy.after_ticket_days, &|s| s.trigger == "ticket") => {
            Err(format!(
                "a ticket survey within {} days",
                policy.after_ticket_days
            ))
        }
        Trigger::Quarterly { quarter }
            if history
                .iter()
                .any(|s| s.trigger == "quarterly" && Quarter::of(s.day) == *quarter) =>
        {
            Err(format!("already asked in {quarter}"))
        }
        _ => Ok(()),
    }
}

/// Longest comment kept from an answer.
pub const COMMENT_CHARS_MAX: usize = 2_000;

/// The score range of a kind: (low, high).
pub fn scale(kind: &str) -> Option<(i64, i64)> {
    match kind {
        "nps" => Some((0, 10)),
        "csat" => Some((1, 5)),
        "ces" => Some((1, 7)),
        "go_live_recommend" => Some((0, 1)),
        _ => None,
    }
}

/// The question shown for a kind.
pub fn question(kind: &str) -> &'static str {
    match kind {
        "nps" => "How likely are you to recommend us to a friend or colleague?",
        "csat" => "How satisfied are you with the help you got?",
        "ces" => "How easy was it to get what you needed done?",
        _ => "Would you recommend us, now that you are live?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            enabled: true,
            ..Policy::default()
        }
    }

    #[test]
    fn a_ticket_survey_at_most_once_per_30_days() {
        let ticket = Trigger::Ticket {
            ticket_id: "t2".into(),
        };
        let history = [Sent {
            trigger: "ticket",
            day: day("2026-03-01"),
        }];
        // Day 29 after the last one: refused; day 30: allowed.
        assert!(allowed(&ticket, &history, day("2026-03-30"), &policy())
            .unwrap_err()
            .contains("within 30 days"));
        assert_eq!(
            allowed(&ticket, &history, day("2026-03-31"), &policy()),
            Ok(())
        );
    }

    #[test]
    fn never_two_surveys_within_14_days_whatever_the_kind() {
        let history = [Sent {
            trigger: "go-live",
            day: day("2026-04-01"),
        }];
        let quarterly = Trigger::Quarterly {
            quarter: Quarter::parse("2026-Q2").unwrap(),
        };
        assert!(allowed(&quarterly, &history, day("2026-04-14"), &policy())
            .unwrap_err()
            .contains("within 14 days"));
        assert_eq!(
            allowed(&quarterly, &history, day("2026-04-15"), &policy()),
            Ok(())
        );
        // The ticket survey is held back by the global gap too.
        let ticket = Trigger::Ticket {
            ticket_id: "t1".into(),
        };
        assert!(allowed(&ticket, &history, day("2026-04-10"), &policy()).is_err());
    }

    #[test]
    fn the_quarterly_nps_once_per_quarter() {
        let history = [Sent {
            trigger: "quarterly",
            day: day("2026-01-05"),
        }];
        let q1 = Trigger::Quarterly {
            quarter: Quarter::parse("2026-Q1").unwrap(),
        };
        let q2 = Trigger::Quarterly {
            quarter: Quarter::parse("2026-Q2").unwrap(),
        };
        assert!(allowed(&q1, &history, day("2026-03-20"), &policy())
            .unwrap_err()
            .contains("already asked in 2026-Q1"));
        assert_eq!(allowed(&q2, &history, day("2026-04-01"), &policy()), Ok(()));
    }

    #[test]
    fn occasions_have_one_key_per_person() {
        let t = Trigger::GoLive {
            subscription_id: "s1".into(),
        };
        assert_eq!(t.key("u1"), "go-live:s1:u1");
        assert_ne!(t.key("u1"), t.key("u2"));
        assert_eq!(
            (t.kind(&policy()), t.name()),
            ("go_live_recommend", "go-live")
        );
        let ces = Policy {
            after_ticket_kind: "ces".into(),
            ..policy()
        };
        assert_eq!(
            Trigger::Ticket {
                ticket_id: "t".into()
            }
            .kind(&ces),
            "ces"
        );
    }
}
