//! Listening, pure: what customers say, grouped into themes without a hosted AI service.
//! Comments are tokenized (lowercase words, English stop words out, a light plural
//! folding), weighed by TF-IDF, and each comment joins a theme: the first configured
//! keyword rule it matches, else its most distinctive term shared with other comments.
//! Sentiment is a transparent lexicon count.

pub mod report;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The default churn and downgrade reason codes.
pub const DEFAULT_REASONS: &[&str] = &[
    "price",
    "missing_feature",
    "support",
    "budget",
    "competitor",
    "no_adoption",
    "company_closed",
    "other",
];

/// `[listening]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListeningConfig {
    /// Reason codes a churn or contraction may carry.
    pub reasons: Vec<String>,
    /// Keyword (a word, or several words that must all occur) -> theme; checked in order
    /// of the table, before the automatic themes.
    pub themes: BTreeMap<String, String>,
}

impl Default for ListeningConfig {
    fn default() -> Self {
        ListeningConfig {
            reasons: DEFAULT_REASONS.iter().map(|r| r.to_string()).collect(),
            themes: BTreeMap::new(),
        }
    }
}

impl ListeningConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.reasons.is_empty() || self.reasons.len() > 100 {
            return Err(("reasons".into(), "1 to 100 codes".into()));
        }
        for reason in &self.reasons {
            if reason.is_empty()
                || reason.len() > 64
                || !reason
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err((
                    "reasons".into(),
                    format!("{reason:?}: codes are 1 to 64 of a-z, 0-9 and _"),
                ));
            }
        }
        for (keyword, theme) in &self.themes {
            if tokens(keyword).is_empty() || theme.trim().is_empty() || theme.len() > 64 {
                return Err((format!("themes.{keyword}"), "a keyword with a word that is not a stop word, and a theme name of 1 to 64 characters".into()));
            }
        }
        Ok(())
    }

    /// Checks a reason code against the list.
    pub fn check_reason(&self, code: &str) -> Result<(), String> {
        if self.reasons.iter().any(|r| r == code) {
            Ok(())
        } else {
            Err(format!(
                "{code:?} is not a reason code; one of: {}",
                self.reasons.join(", ")
            ))
        }
    }
}

/// English stop words: function words and words every feedback uses.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "cannot", "could", "did", "do", "does", "doing", "don", "down", "during",
    "each", "even", "ever", "every", "few", "for", "from", "further", "get", "gets", "getting",
    "got", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i",
    "if", "in", "into", "is", "it", "its", "itself", "just", "let", "like", "lot", "lots", "made",
    "make", "many", "me", "more", "most", "much", "must", "my", "no", "nor", "not", "now", "of",
    "off", "on", "once", "one", "only", "or", "other", "our", "ours", "out", "over", "own",
    "please", "really", "same", "she", "should", "so", "some", "still", "such", "than", "that",
    "the", "their", "them", "then", "there", "these", "they", "thing", "things", "this", "those",
    "through", "to", "too", "under", "until", "up", "us", "use", "used", "using", "very", "was",
    "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with",
    "would", "yet", "you", "your", "yours", "it's", "i'm", "we're", "don't", "doesn't", "didn't",
    "can't", "won't", "isn't", "wasn't", "aren't", "need", "needs", "want", "wants", "way", "team",
    "product", "app", "tool", "bit", "well", "good", "great", "bad",
];

/// Lowercase words of two or more letters, stop words out, a plural `s` folded.
pub fn tokens(text: &str) -> Vec<String> {
    let stop: HashSet<&str> = STOP_WORDS.iter().copied().collect();
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| {
            w.chars().count() >= 3 && !w.chars().all(|c| c.is_ascii_digit()) && !stop.contains(w)
        })
        .map(fold)
        .collect()
}

/// "reports" -> "report", "prices" -> "price", "slowness" stays; keeps "ss" and "us" ends.
fn fold(word: &str) -> String {
    if word.len() > 4 && word.ends_with("ies") {
        format!("{}y", &word[..word.len() - 3])
    } else if word.len() > 3
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        word[..word.len() - 1].to_string()
    } else {
        word.to_string()
    }
}

const POSITIVE: &[&str] = &[
    "love",
    "loved",
    "excellent",
    "amazing",
    "awesome",
    "helpful",
    "easy",
    "fast",
    "quick",
    "quickly",
    "happy",
    "thank",
    "thanks",
    "perfect",
    "useful",
    "nice",
    "intuitive",
    "reliable",
    "smooth",
    "friendly",
    "recommend",
    "impressed",
    "solved",
    "fantastic",
    "enjoy",
    "valuable",
    "responsive",
    "clear",
    "simple",
];
const NEGATIVE: &[&str] = &[
    "slow",
    "bug",
    "buggy",
    "broken",
    "crash",
    "crashes",
    "error",
    "errors",
    "confusing",
    "hard",
    "difficult",
    "expensive",
    "missing",
    "frustrating",
    "frustrated",
    "annoying",
    "poor",
    "terrible",
    "awful",
    "hate",
    "unusable",
    "fail",
    "fails",
    "failed",
    "failing",
    "lacking",
    "cancel",
    "churn",
    "worse",
    "worst",
    "unhappy",
    "disappointed",
    "problem",
    "problems",
    "issue",
    "issues",
    "waiting",
    "outage",
    "down",
    "timeout",
    "complicated",
    "pricey",
];

/// Lexicon sentiment from -1 (only negative words) to 1 (only positive), 0 when neutral.
/// "not" or "never" just before a word turns it around.
pub fn sentiment(text: &str) -> f64 {
    let words: Vec<String> = text
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let (mut positive, mut negative) = (0.0, 0.0);
    for (i, word) in words.iter().enumerate() {
        let negated = i > 0
            && matches!(
                words[i - 1].as_str(),
                "not" | "never" | "no" | "isn't" | "wasn't" | "don't" | "doesn't"
            );
        let (pos, neg) = (
            POSITIVE.contains(&word.as_str()),
            NEGATIVE.contains(&word.as_str()),
        );
        match (pos, neg, negated) {
            (true, _, false) | (_, true, true) => positive += 1.0,
            (true, _, true) | (_, true, false) => negative += 1.0,
            _ => {}
        }
    }
    if positive + negative == 0.0 {
        0.0
    } else {
        (positive - negative) / (positive + negative)
    }
}

/// One comment, from any stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comment {
    /// survey, ticket, suggestion, churn, note.
    pub source: String,
    pub account_id: String,
    pub person: Option<String>,
    /// YYYY-MM-DD.
    pub date: String,
    pub text: String,
}

/// A comment's theme and what decided it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Themed {
    pub theme: String,
    /// `rule` (a configured keyword) or `auto` (its most distinctive shared term).
    pub by: String,
    pub sentiment: f64,
}

/// Name of the theme of comments with no shared distinctive term.
pub const UNTHEMED: &str = "other";

/// Themes every comment: configured keyword rules first (all words of the keyword in the
/// comment, rules in name order), else the comment's highest TF-IDF term that at least
/// two comments share. Also returns each theme's top keywords by summed TF-IDF.
pub fn themes(
    comments: &[Comment],
    rules: &BTreeMap<String, String>,
) -> (Vec<Themed>, BTreeMap<String, Vec<String>>) {
    let docs: Vec<Vec<String>> = comments.iter().map(|c| tokens(&c.text)).collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for doc in &docs {
        for term in doc.iter().map(String::as_str).collect::<HashSet<_>>() {
            *df.entry(term).or_default() += 1;
        }
    }
    let n = docs.len().max(1) as f64;
    let weights = |doc: &[String]| -> Vec<(String, f64)> {
        let mut tf: BTreeMap<&str, f64> = BTreeMap::new();
        for term in doc {
            *tf.entry(term).or_default() += 1.0;
        }
        let len = doc.len().max(1) as f64;
        tf.into_iter()
            .map(|(t, f)| {
                (
                    t.to_string(),
                    f / len * ((n + 1.0) / (df[t] as f64 + 1.0)).ln() + f / len * 1e-9,
                )
            })
            .collect()
    };
    let rule_tokens: Vec<(Vec<String>, &String)> = rules
        .iter()
        .map(|(keyword, theme)| (tokens(keyword), theme))
        .collect();
    let mut out = Vec::with_capacity(comments.len());
    let mut keywords: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (comment, doc) in comments.iter().zip(&docs) {
        let w = weights(doc);
        let ruled = rule_tokens
            .iter()
            .find(|(words, _)| !words.is_empty() && words.iter().all(|k| doc.contains(k)))
            .map(|(_, theme)| theme.to_string());
        let (theme, by) = match ruled {
            Some(theme) => (theme, "rule"),
            None => {
                // Shared by two comments or more; highest weight, then alphabetical.
                let best = w
                    .iter()
                    .filter(|(t, _)| df[t.as_str()] >= 2)
                    .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
                match best {
                    Some((term, _)) => (term.clone(), "auto"),
                    None => (UNTHEMED.to_string(), "auto"),
                }
            }
        };
        let entry = keywords.entry(theme.clone()).or_default();
        for (term, weight) in w {
            *entry.entry(term).or_default() += weight;
        }
        out.push(Themed {
            theme,
            by: by.into(),
            sentiment: sentiment(&comment.text),
        });
    }
    let top = keywords
        .into_iter()
        .map(|(theme, terms)| {
            let mut terms: Vec<(String, f64)> = terms.into_iter().collect();
            terms.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            (theme, terms.into_iter().take(5).map(|(t, _)| t).collect())
        })
        .collect();
    (out, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(text: &str) -> Comment {
        Comment {
            source: "survey".into(),
            account_id: "a".into(),
            person: None,
            date: "2026-01-01".into(),
            text: text.into(),
        }
    }

    #[test]
    fn tokens_drop_stop_words_and_fold_plurals() {
        assert_eq!(
            tokens("The reports are SLOW, and the exports fail!"),
            vec!["report", "slow", "export", "fail"]
        );
        assert_eq!(
            tokens("Prices went up 20%; the companies complain"),
            vec!["price", "went", "company", "complain"]
        );
    }

    #[test]
    fn sentiment_counts_lexicon_words_and_negation() {
        assert_eq!(sentiment("Support was fast and helpful"), 1.0);
        assert_eq!(sentiment("Reports are slow and buggy"), -1.0);
        assert_eq!(
            sentiment("Not easy to set up, but support was helpful"),
            0.0
        );
        assert_eq!(sentiment("We ordered pizza"), 0.0);
    }

    #[test]
    fn comments_group_by_their_shared_distinctive_term_and_rules_win() {
        let comments: Vec<Comment> = [
            "Reports are slow to load",
            "Exporting reports takes forever, slow",
            "The price is too high for us",
            "Price went up again, too expensive",
            "Support answered quickly",
            "Love the calendar sync",
        ]
        .iter()
        .map(|t| comment(t))
        .collect();
        let (themed, keywords) = themes(&comments, &BTreeMap::new());
        let names: Vec<&str> = themed.iter().map(|t| t.theme.as_str()).collect();
        // "report" and "slow" tie in both report comments; the alphabetically first wins.
        assert_eq!(
            names,
            vec!["report", "report", "price", "price", UNTHEMED, UNTHEMED]
        );
        assert!(keywords["price"].contains(&"price".to_string()));
        // A configured rule overrides the automatic theme.
        let rules = BTreeMap::from([
            ("price".to_string(), "Pricing".to_string()),
            ("support".to_string(), "Support".to_string()),
        ]);
        let (themed, _) = themes(&comments, &rules);
        let names: Vec<(&str, &str)> = themed
            .iter()
            .map(|t| (t.theme.as_str(), t.by.as_str()))
            .collect();
        assert_eq!(names[2], ("Pricing", "rule"));
        assert_eq!(names[3], ("Pricing", "rule"));
        assert_eq!(names[4], ("Support", "rule"));
        assert_eq!(names[0], ("report", "auto"));
    }

    #[test]
    fn reason_codes_are_checked_against_the_list() {
        let config = ListeningConfig::default();
        assert!(config.check_reason("price").is_ok());
        assert!(config
            .check_reason("weather")
            .unwrap_err()
            .contains("not a reason code; one of: price"));
        assert!(ListeningConfig {
            reasons: vec!["Bad Code".into()],
            ..config
        }
        .check()
        .is_err());
    }
}
