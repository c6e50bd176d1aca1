//! Health (../shared/METRICS.md, Health): leading-indicator discovery over decided renewals,
//! the power feature and its calibrated usage tiers, the 0-100 scorecard, and the backtest
//! statistics. Pure: `store::health` loads the examples and stores the models.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::HealthConfig;

/// The tiers, lowest renewal rate first.
pub const TIERS: [&str; 4] = ["red", "orange", "yellow", "green"];

/// A decided renewal: one subscription's outcome and the account's feature use in its term.
#[derive(Debug, Clone)]
pub struct Example {
    pub account_id: String,
    pub segment: String,
    /// ARR of the subscription in the report currency.
    pub arr: f64,
    pub renewed: bool,
    /// Feature -> monthly uses in the term (uses x 30 / term days).
    pub monthly: HashMap<String, f64>,
}

/// Area under the ROC curve of `score` as a predictor of `positive`, ties counting half:
/// the probability that a random positive scores above a random negative. `None` without
/// both classes. Optional weights make it the weighted (e.g. ARR-weighted) AUC.
pub fn auc(points: &[(f64, bool, f64)]) -> Option<f64> {
    let mut sorted: Vec<&(f64, bool, f64)> = points.iter().collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut wins, mut negatives_below, mut total_pos, mut total_neg) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        let (mut pos, mut neg) = (0.0, 0.0);
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            if sorted[j].1 {
                pos += sorted[j].2;
            } else {
                neg += sorted[j].2;
            }
            j += 1;
        }
        wins += pos * (negatives_below + neg / 2.0);
        negatives_below += neg;
        total_pos += pos;
        total_neg += neg;
        i = j;
    }
    (total_pos > 0.0 && total_neg > 0.0).then(|| wins / (total_pos * total_neg))
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// How one feature separates renewed from churned accounts in a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Indicator {
    pub segment: String,
    pub feature: String,
    pub rank: usize,
    pub auc: Option<f64>,
    pub arr_weighted_auc: Option<f64>,
    pub renewed_accounts: u64,
    pub churned_accounts: u64,
    pub mean_monthly_uses_renewed: Option<f64>,
    pub mean_monthly_uses_churned: Option<f64>,
    /// Renewal rate of decisions where the feature was used in the term, and where not.
    pub renewal_rate_users: Option<f64>,
    pub renewal_rate_non_users: Option<f64>,
    pub lift: Option<f64>,
    pub power_feature: bool,
    pub warning: Option<String>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Ranks every feature used in any example's term by AUC (then by lift).
pub fn indicators(segment: &str, examples: &[&Example], config: &HealthConfig) -> Vec<Indicator> {
    let mut features: Vec<&str> = examples.iter().flat_map(|e| e.monthly.keys().map(String::as_str)).collect();
    features.sort_unstable();
    features.dedup();
    let renewed = examples.iter().filter(|e| e.renewed).count() as u64;
    let churned = examples.len() as u64 - renewed;
    let warning = (renewed < config.min_outcomes || churned < config.min_outcomes).then(|| {
        format!("only {renewed} renewals and {churned} churns back this (fewer than {} of either)", config.min_outcomes)
    });
    let mut out: Vec<Indicator> = features
        .into_iter()
        .map(|feature| {
            let usage = |e: &Example| e.monthly.get(feature).copied().unwrap_or(0.0);
            let points: Vec<(f64, bool, f64)> = examples.iter().map(|e| (usage(e), e.renewed, 1.0)).collect();
            let weighted: Vec<(f64, bool, f64)> = examples.iter().map(|e| (usage(e), e.renewed, e.arr.max(0.0))).collect();
            let rate = |used: bool| {
                let group: Vec<&&Example> = examples.iter().filter(|e| (usage(e) > 0.0) == used).collect();
                (!group.is_empty()).then(|| group.iter().filter(|e| e.renewed).count() as f64 / group.len() as f64)
            };
            let (users, non_users) = (rate(true), rate(false));
            Indicator {
                segment: segment.to_string(),
                feature: feature.to_string(),
                rank: 0,
                auc: auc(&points),
                arr_weighted_auc: auc(&weighted),
                renewed_accounts: renewed,
                churned_accounts: churned,
                mean_monthly_uses_renewed: mean(examples.iter().filter(|e| e.renewed).map(|e| usage(e))),
                mean_monthly_uses_churned: mean(examples.iter().filter(|e| !e.renewed).map(|e| usage(e))),
                renewal_rate_users: users,
                renewal_rate_non_users: non_users,
                lift: users.zip(non_users).map(|(u, n)| u - n),
                power_feature: false,
                warning: warning.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |i: &Indicator| (i.auc.unwrap_or(0.5), i.lift.unwrap_or(0.0));
        key(b).0.total_cmp(&key(a).0).then(key(b).1.total_cmp(&key(a).1)).then(a.feature.cmp(&b.feature))
    });
    for (index, indicator) in out.iter_mut().enumerate() {
        indicator.rank = index + 1;
    }
    out
}

/// One usage bucket of the power feature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub label: String,
    /// Monthly uses from `min` (inclusive) to `max` (exclusive; `None` = no upper end).
    pub min: f64,
    pub max: Option<f64>,
    pub decided: u64,
    pub renewed: u64,
    pub renewal_rate: Option<f64>,
    pub wilson_low: Option<f64>,
    pub wilson_high: Option<f64>,
    pub tier: String,
}

/// Bucket index of a monthly usage: 0 below the first cut point, i for [cuts[i-1], cuts[i]).
pub fn bucket_of(cuts: &[f64], monthly: f64) -> usize {
    cuts.iter().take_while(|c| monthly >= **c).count()
}

/// Cut points from the data: 1 use a month, then the quartiles of the positive monthly
/// uses at or above it (rounded to one decimal, duplicates dropped).
pub fn auto_cut_points(values: &[f64]) -> Vec<f64> {
    let mut positive: Vec<f64> = values.iter().copied().filter(|v| *v >= 1.0).collect();
    positive.sort_by(f64::total_cmp);
    let mut cuts = vec![1.0];
    for q in [0.25, 0.5, 0.75] {
        if let Some(x) = crate::metrics::quantile(&positive, q) {
            let x = (x * 10.0).round() / 10.0;
            if x > *cuts.last().expect("non-empty") {
                cuts.push(x);
            }
        }
    }
    cuts
}

fn label(cuts: &[f64], index: usize) -> String {
    let show = |x: f64| if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x}") };
    match (index, cuts.get(index)) {
        (0, Some(first)) => format!("< {}", show(*first)),
        (_, Some(upper)) => format!("{}-{}", show(cuts[index - 1]), show(*upper)),
        (_, None) => format!("{}+", show(cuts[index - 1])),
    }
}

/// The buckets of the power feature with their renewal rates, mapped to tiers: the bucket
/// below the first cut point (no real use) is red; the others take red, orange, yellow,
/// green by rank of their renewal rate, spread so the best is green (four buckets: one
/// each; two: red and green), an empty bucket ranking like the one below it.
pub fn buckets(cuts: &[f64], examples: &[(f64, bool)]) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = (0..=cuts.len())
        .map(|i| {
            let inside: Vec<&(f64, bool)> = examples.iter().filter(|(v, _)| bucket_of(cuts, *v) == i).collect();
            let decided = inside.len() as u64;
            let renewed = inside.iter().filter(|(_, r)| *r).count() as u64;
            let interval = wilson(renewed, decided);
            Bucket {
                label: label(cuts, i),
                min: if i == 0 { 0.0 } else { cuts[i - 1] },
                max: cuts.get(i).copied(),
                decided,
                renewed,
                renewal_rate: (decided > 0).then(|| renewed as f64 / decided as f64),
                wilson_low: interval.map(|i| i.0),
                wilson_high: interval.map(|i| i.1),
                tier: TIERS[0].to_string(),
            }
        })
        .collect();
    let mut previous = 0.0;
    let mut ranked: Vec<(f64, usize)> = Vec::new();
    for (i, b) in out.iter().enumerate().skip(1) {
        previous = b.renewal_rate.unwrap_or(previous);
        ranked.push((previous, i));
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    // Ranks spread over the four tiers: the best bucket is always green.
    let n = ranked.len();
    for (rank, (_, i)) in ranked.into_iter().enumerate() {
        let index = if n <= 1 { 3 } else { ((rank * 3) as f64 / (n - 1) as f64).round() as usize };
        out[i].tier = TIERS[index.min(3)].to_string();
    }
    out
}

/// The calibrated model of one segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentModel {
    pub segment: String,
    /// True when the segment had too few decided renewals and the all-accounts model is used.
    pub fallback: bool,
    pub note: Option<String>,
    pub power_feature: Option<String>,
    /// `data` (top of the ranking) or `config`.
    pub power_feature_source: String,
    pub cut_points: Vec<f64>,
    pub buckets: Vec<Bucket>,
    pub indicators: Vec<Indicator>,
}

/// Builds one segment's model from its decided renewals.
pub fn segment_model(segment: &str, examples: &[&Example], config: &HealthConfig) -> SegmentModel {
    let mut indicators = indicators(segment, examples, config);
    let configured = config.power_features.get(segment).cloned();
    let power = configured.clone().or_else(|| indicators.first().map(|i| i.feature.clone()));
    for indicator in &mut indicators {
        indicator.power_feature = Some(&indicator.feature) == power.as_ref();
    }
    let usage: Vec<(f64, bool)> = match &power {
        Some(p) => examples.iter().map(|e| (e.monthly.get(p).copied().unwrap_or(0.0), e.renewed)).collect(),
        None => Vec::new(),
    };
    let cuts = match &config.cut_points {
        Some(given) => given.clone(),
        None => auto_cut_points(&usage.iter().map(|u| u.0).collect::<Vec<_>>()),
    };
    SegmentModel {
        segment: segment.to_string(),
        fallback: false,
        note: None,
        power_feature: power,
        power_feature_source: if configured.is_some() { "config" } else { "data" }.into(),
        buckets: buckets(&cuts, &usage),
        cut_points: cuts,
        indicators,
    }
}

/// Every segment's model, plus `all` (every segment pooled); a segment with fewer than
/// `min_decided` decided renewals, or without both renewals and churns, uses `all`.
pub fn build_models(examples: &[Example], segments: &[String], config: &HealthConfig) -> BTreeMap<String, SegmentModel> {
    let everyone: Vec<&Example> = examples.iter().collect();
    let pooled = segment_model("all", &everyone, config);
    let mut out = BTreeMap::new();
    for segment in segments {
        let own: Vec<&Example> = examples.iter().filter(|e| &e.segment == segment).collect();
        let renewed = own.iter().filter(|e| e.renewed).count();
        let churned = own.len() - renewed;
        let model = if (own.len() as u64) < config.min_decided || renewed == 0 || churned == 0 {
            let mut m = pooled.clone();
            m.segment = segment.clone();
            m.fallback = true;
            m.note = Some(format!(
                "{} decided renewals ({renewed} renewed, {churned} churned) are too few for a model of its own (minimum {} with both outcomes): the all-accounts model is used",
                own.len(),
                config.min_decided
            ));
            m
        } else {
            segment_model(segment, &own, config)
        };
        out.insert(segment.clone(), model);
    }
    out.insert("all".into(), pooled);
    out
}

/// The tier of a current monthly usage under a segment model: (tier, expected renewal rate).
pub fn tier_of(model: &SegmentModel, monthly: f64) -> (String, Option<f64>) {
    let index = bucket_of(&model.cut_points, monthly);
    let bucket = &model.buckets[index.min(model.buckets.len() - 1)];
    // An empty bucket borrows the rate of the nearest non-empty one below it.
    let rate = model.buckets[..=index.min(model.buckets.len() - 1)].iter().rev().find_map(|b| b.renewal_rate);
    (bucket.tier.clone(), rate)
}

/// Points of a tier on the 0-100 scale.
pub fn tier_points(tier: &str) -> Option<f64> {
    TIERS.iter().position(|t| *t == tier).map(|i| 100.0 * i as f64 / 3.0)
}

/// One component of a health score, for "why is this red".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Component {
    pub measure: String,
    pub value: Value,
    /// The measure on the 0-100 scale (null: no value, left out).
    pub points: Option<f64>,
    pub weight: f64,
    /// Share of the score: points x weight / sum of weights of measures with a value.
    pub contribution: Option<f64>,
}

/// Turns one measure's value into 0-100 points.
fn points(measure: &str, value: &Value) -> Option<f64> {
    match measure {
        "tier" => value.as_str().and_then(tier_points),
        "nps" => value.as_f64().map(|x| (x + 100.0) / 2.0),
        "escalations_open" => value.as_f64().map(|x| (100.0 - 50.0 * x).max(0.0)),
        "license_utilization" | "rate_of_adoption" | "feature_breadth" | "csat" => value.as_f64().map(|x| 100.0 * x.clamp(0.0, 1.0)),
        "ces" => value.as_f64().map(|x| 100.0 * (x - 1.0) / 6.0),
        "expected_renewal_rate" => value.as_f64().map(|x| 100.0 * x),
        // engagement_score and any other 0-100 measure.
        _ => value.as_f64().map(|x| x.clamp(0.0, 100.0)),
    }
}

/// The scorecard: weighted mean of the measures' points (missing ones left out, the other
/// weights rescaled) with the weights of the row's segment, its colour band, and the breakdown.
pub fn score(row: &serde_json::Map<String, Value>, config: &HealthConfig) -> (Option<f64>, Option<String>, Vec<Component>) {
    let segment = row.get("segment").and_then(Value::as_str).unwrap_or_default();
    let mut components: Vec<Component> = config
        .weights_for(segment)
        .iter()
        .map(|(measure, weight)| {
            let value = row.get(measure).cloned().unwrap_or(Value::Null);
            Component { measure: measure.clone(), points: points(measure, &value), value, weight: *weight, contribution: None }
        })
        .collect();
    let total: f64 = components.iter().filter(|c| c.points.is_some()).map(|c| c.weight).sum();
    if total <= 0.0 {
        return (None, None, components);
    }
    for c in &mut components {
        c.contribution = c.points.map(|p| p * c.weight / total);
    }
    let score = components.iter().filter_map(|c| c.contribution).sum::<f64>();
    (Some(score), Some(band(score, config).to_string()), components)
}

/// The colour of a score: red below `bands[0]`, orange below `bands[1]`, yellow below `bands[2]`.
pub fn band(score: f64, config: &HealthConfig) -> &'static str {
    let index = config.score_bands.iter().take_while(|b| score >= **b).count();
    TIERS[index.min(3)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_and_half_ties() {
        // Positives 3, 2; negatives 1, 2: pairs (3>1) (3>2) (2>1) (2=2 half) = 3.5 of 4.
        let points = [(3.0, true, 1.0), (2.0, true, 1.0), (1.0, false, 1.0), (2.0, false, 1.0)];
        assert_eq!(auc(&points), Some(0.875));
        assert_eq!(auc(&[(1.0, true, 1.0)]), None, "one class only");
        // Weighted: the positive 2 weighs 3: wins 1x(1+1) + 3x(1 + 0.5) = 6.5 of 4 x 2 = 8.
        let weighted = [(3.0, true, 1.0), (2.0, true, 3.0), (1.0, false, 1.0), (2.0, false, 1.0)];
        assert_eq!(auc(&weighted), Some(6.5 / 8.0));
    }

    #[test]
    fn scores_read_back_from_json_are_the_scores_written() {
        // 1375/27 is a score the demo produced: without serde_json's float_roundtrip its
        // text "50.925925925925924" parsed one ulp off, and the API disagreed with the page.
        for score in [1375.0 / 27.0, 0.1 + 0.2, 100.0 / 3.0, 2.0f64.sqrt() * 50.0] {
            let text = serde_json::to_string(&score).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), score, "{text}");
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap().as_f64(), Some(score), "{text}");
        }
    }

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 8 of 10: centre (0.8 + 1.9208/10) / 1.38415 = 0.71672, half 0.19856...
        let (low, high) = wilson(8, 10).unwrap();
        assert!((low - 0.490_162).abs() < 1e-5, "{low}");
        assert!((high - 0.943_318).abs() < 1e-5, "{high}");
        let (low, high) = wilson(0, 5).unwrap();
        assert_eq!(low, 0.0);
        assert!((high - 0.434_482).abs() < 1e-5, "{high}");
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn buckets_follow_the_cut_points_and_rank_rates_into_tiers() {
        let cuts = [1.0, 6.0, 11.0, 16.0];
        assert_eq!(bucket_of(&cuts, 0.0), 0);
        assert_eq!(bucket_of(&cuts, 0.9), 0);
        assert_eq!(bucket_of(&cuts, 5.99), 1);
        assert_eq!(bucket_of(&cuts, 6.0), 2);
        assert_eq!(bucket_of(&cuts, 40.0), 4);
        // 0: 1 of 4 renewed; 1-6: 1 of 2; 6-11: 2 of 2; 11-16: none; 16+: 1 of 2.
        let examples = [(0.0, true), (0.0, false), (0.5, false), (0.2, false), (3.0, true), (5.0, false), (7.0, true), (9.0, true), (20.0, true), (30.0, false)];
        let b = buckets(&cuts, &examples);
        let summary: Vec<(&str, u64, u64, &str)> = b.iter().map(|b| (b.label.as_str(), b.decided, b.renewed, b.tier.as_str())).collect();
        // Non-zero buckets by rate: 1-6 0.5 (rank 0), 11-16 empty borrows 1.0 from 6-11, 16+ 0.5 (rank 1),
        // 6-11 1.0 (rank 2), 11-16 1.0 (rank 3).
        assert_eq!(summary, vec![("< 1", 4, 1, "red"), ("1-6", 2, 1, "red"), ("6-11", 2, 2, "yellow"), ("11-16", 0, 0, "green"), ("16+", 2, 1, "orange")]);
        assert_eq!(b[1].renewal_rate, Some(0.5));
        assert_eq!(b[3].renewal_rate, None);
    }

    #[test]
    fn one_bucket_of_real_use_is_green_and_zero_use_red() {
        let b = buckets(&[1.0], &[(0.0, false), (2.0, true)]);
        assert_eq!(b.iter().map(|b| b.tier.as_str()).collect::<Vec<_>>(), vec!["red", "green"]);
    }

    #[test]
    fn the_scorecard_rescales_weights_over_measures_with_a_value() {
        let config = HealthConfig::default();
        // engagement 70 x 40, tier yellow (66.67) x 30, nps 20 -> 60 x 10, escalations 1 -> 50 x 10,
        // utilization null (left out): (2800 + 2000 + 600 + 500) / 90 = 65.56 -> yellow.
        let row: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
            "engagement_score": 70.0, "tier": "yellow", "nps": 20.0, "escalations_open": 1, "license_utilization": null
        }))
        .unwrap();
        let (score, band, components) = score(&row, &config);
        assert!((score.unwrap() - 5900.0 / 90.0).abs() < 1e-9, "{score:?}");
        assert_eq!(band.as_deref(), Some("yellow"));
        let utilization = components.iter().find(|c| c.measure == "license_utilization").unwrap();
        assert_eq!((utilization.points, utilization.contribution), (None, None));
        let tier = components.iter().find(|c| c.measure == "tier").unwrap();
        assert!((tier.contribution.unwrap() - 2000.0 / 90.0).abs() < 1e-9);
        // A segment with its own weights: tier alone.
        let mut per_segment = config.clone();
        per_segment.segment_score_weights.insert("pro".into(), [("tier".to_string(), 1.0)].into_iter().collect());
        let mut pro = row.clone();
        pro.insert("segment".into(), "pro".into());
        let (pro_score, pro_band, pro_components) = super::score(&pro, &per_segment);
        assert!((pro_score.unwrap() - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!((pro_band.as_deref(), pro_components.len()), (Some("yellow"), 1));
        assert!((score_of(&row, &per_segment) - 5900.0 / 90.0).abs() < 1e-9, "other segments keep the defaults");
    }

    fn score_of(row: &serde_json::Map<String, Value>, config: &HealthConfig) -> f64 {
        super::score(row, config).0.unwrap()
    }

    #[test]
    fn auto_cut_points_use_quartiles_of_real_use() {
        let values = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0];
        // Values >= 1: 1..5, quartiles 2, 3, 4.
        assert_eq!(auto_cut_points(&values), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(auto_cut_points(&[0.0, 0.0]), vec![1.0]);
    }
}
