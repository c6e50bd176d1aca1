//! Health (docs/metrics.md, Health): leading-indicator discovery over decided renewals,
//! the power feature and its usage tiers (partially pooled across segments, monotone in use),
//! the learned 0-100 score (`score`), tier hold, and the backtest statistics. Pure:
//! `history` and `backtest` read the store through its traits; the rest is pure.

pub mod backtest;
pub mod config;
pub mod history;
pub mod model;
pub mod quality;
pub mod score;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use config::HealthConfig;
pub use score::Component;

/// The tiers, lowest renewal rate first.
pub const TIERS: [&str; 4] = ["red", "orange", "yellow", "green"];
/// The tier of an account whose segment's data cannot say anything.
pub const UNKNOWN: &str = "unknown";
/// The score's bands, lowest first: names of their own, so a band never reads as a tier.
pub const BANDS: [&str; 4] = ["poor", "fair", "good", "strong"];

/// A decided renewal: one subscription's outcome and the account's use over the usage
/// window ending on its last day (the same window a live score reads).
#[derive(Debug, Clone)]
pub struct Example {
    pub account_id: String,
    pub segment: String,
    /// ARR of the subscription in the report currency.
    pub arr: f64,
    pub renewed: bool,
    /// The decision day (the term's last day).
    pub day: i32,
    /// Feature -> monthly uses in the window (uses x 30 / days in the window).
    pub monthly: HashMap<String, f64>,
    /// The score's measures on the decision day (see `score::LEARNED_MEASURES`), without
    /// `expected_renewal_rate`, which the model gives.
    pub measures: BTreeMap<String, Option<f64>>,
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
    let mut features: Vec<&str> = examples
        .iter()
        .flat_map(|e| e.monthly.keys().map(String::as_str))
        .collect();
    features.sort_unstable();
    features.dedup();
    let renewed = examples.iter().filter(|e| e.renewed).count() as u64;
    let churned = examples.len() as u64 - renewed;
    let warning = (renewed < config.min_outcomes || churned < config.min_outcomes).then(|| {
        format!(
            "only {renewed} renewals and {churned} churns back this (fewer than {} of either)",
            config.min_outcomes
        )
    });
    let mut out: Vec<Indicator> = features
        .into_iter()
        .map(|feature| {
            let usage = |e: &Example| e.monthly.get(feature).copied().unwrap_or(0.0);
            let points: Vec<(f64, bool, f64)> = examples
                .iter()
                .map(|e| (usage(e), e.renewed, 1.0))
                .collect();
            let weighted: Vec<(f64, bool, f64)> = examples
                .iter()
                .map(|e| (usage(e), e.renewed, e.arr.max(0.0)))
                .collect();
            let rate = |used: bool| {
                let group: Vec<&&Example> = examples
                    .iter()
                    .filter(|e| (usage(e) > 0.0) == used)
                    .collect();
                (!group.is_empty())
                    .then(|| group.iter().filter(|e| e.renewed).count() as f64 / group.len() as f64)
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
                mean_monthly_uses_renewed: mean(
                    examples.iter().filter(|e| e.renewed).map(|e| usage(e)),
                ),
                mean_monthly_uses_churned: mean(
                    examples.iter().filter(|e| !e.renewed).map(|e| usage(e)),
                ),
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
        key(b)
            .0
            .total_cmp(&key(a).0)
            .then(key(b).1.total_cmp(&key(a).1))
            .then(a.feature.cmp(&b.feature))
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
    /// renewed / decided in this segment alone (null when empty).
    pub observed_rate: Option<f64>,
    /// The prior's mean: the pooled model's bucket at the same place in the usage order,
    /// moved to the segment's own level (see `prior_rates`).
    pub prior_rate: f64,
    /// The posterior mean, made monotone in usage: the expected renewal rate of the bucket.
    pub renewal_rate: f64,
    /// 95% interval of the posterior (the beta distribution of the bucket, pooled with its
    /// neighbours where monotonicity merged them).
    pub interval_low: f64,
    pub interval_high: f64,
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

/// Drops cut points until every bucket holds at least `min` of `values` (the smallest
/// bucket is merged into its smaller neighbour first). At least one cut point stays.
pub fn merge_small_buckets(mut cuts: Vec<f64>, values: &[f64], min: u64) -> Vec<f64> {
    while cuts.len() > 1 {
        let counts: Vec<u64> = (0..=cuts.len())
            .map(|i| values.iter().filter(|v| bucket_of(&cuts, **v) == i).count() as u64)
            .collect();
        let Some((smallest, count)) = counts.iter().enumerate().min_by_key(|(i, c)| (**c, *i))
        else {
            break;
        };
        if *count >= min {
            break;
        }
        // Merge bucket `smallest` with the smaller neighbour: remove the cut between them.
        let cut = if smallest == 0 {
            0
        } else if smallest == cuts.len() || counts[smallest - 1] <= counts[smallest + 1] {
            smallest - 1
        } else {
            smallest
        };
        cuts.remove(cut);
    }
    cuts
}

fn label(cuts: &[f64], index: usize) -> String {
    let show = |x: f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x}")
        }
    };
    match (index, cuts.get(index)) {
        (0, Some(first)) => format!("< {}", show(*first)),
        (_, Some(upper)) => format!("{}-{}", show(cuts[index - 1]), show(*upper)),
        (_, None) => format!("{}+", show(cuts[index - 1])),
    }
}

/// (renewed, decided) of each bucket.
fn counts(cuts: &[f64], examples: &[(f64, bool)]) -> Vec<(u64, u64)> {
    let mut out = vec![(0, 0); cuts.len() + 1];
    for (monthly, renewed) in examples {
        let cell = &mut out[bucket_of(cuts, *monthly)];
        cell.0 += u64::from(*renewed);
        cell.1 += 1;
    }
    out
}

/// The 95% equal-tailed interval of a Beta(alpha, beta) distribution.
pub fn beta_interval(alpha: f64, beta: f64) -> (f64, f64) {
    use statrs::distribution::{Beta, ContinuousCDF};
    match Beta::new(alpha.max(1e-6), beta.max(1e-6)) {
        Ok(d) => (d.inverse_cdf(0.025), d.inverse_cdf(0.975)),
        Err(_) => (0.0, 1.0),
    }
}

/// Pool adjacent violators: the non-decreasing sequence closest to `values` in weighted
/// least squares. Returns the fitted value of each input and, for each, the index of the
/// first member of its pooled block.
pub fn pool_adjacent_violators(values: &[f64], weights: &[f64]) -> (Vec<f64>, Vec<usize>) {
    // Blocks as (first index, weighted sum, weight).
    let mut blocks: Vec<(usize, f64, f64)> = Vec::new();
    for (i, (v, w)) in values.iter().zip(weights).enumerate() {
        blocks.push((i, v * w, *w));
        while blocks.len() > 1 {
            let (a, b) = (blocks[blocks.len() - 2], blocks[blocks.len() - 1]);
            if a.1 / a.2 <= b.1 / b.2 {
                break;
            }
            blocks.pop();
            let last = blocks.last_mut().expect("invariant: two blocks were there");
            last.1 += b.1;
            last.2 += b.2;
        }
    }
    let mut fitted = vec![0.0; values.len()];
    let mut first = vec![0; values.len()];
    for (index, block) in blocks.iter().enumerate() {
        let end = blocks.get(index + 1).map_or(values.len(), |b| b.0);
        for i in block.0..end {
            fitted[i] = block.1 / block.2;
            first[i] = block.0;
        }
    }
    (fitted, first)
}

/// The buckets of the power feature: each bucket's (renewed, decided) in the segment,
/// shrunk toward `prior` (the pooled rate of the same bucket) with `strength`
/// pseudo-decisions, made non-decreasing in usage, and mapped to tiers by rank of the
/// distinct rates (lowest red, highest green, spread evenly; a single rate is yellow: usage
/// of the feature does not tell these accounts apart).
pub fn buckets(
    cuts: &[f64],
    examples: &[(f64, bool)],
    prior: &[f64],
    strength: f64,
) -> Vec<Bucket> {
    let cells = counts(cuts, examples);
    let alpha: Vec<f64> = cells
        .iter()
        .zip(prior)
        .map(|((k, _), m)| strength * m + *k as f64)
        .collect();
    let beta: Vec<f64> = cells
        .iter()
        .zip(prior)
        .map(|((k, n), m)| strength * (1.0 - m) + (n - k) as f64)
        .collect();
    let weights: Vec<f64> = alpha.iter().zip(&beta).map(|(a, b)| a + b).collect();
    let means: Vec<f64> = alpha
        .iter()
        .zip(&weights)
        .map(|(a, w)| if *w > 0.0 { a / w } else { 0.0 })
        .collect();
    let (rates, first) = pool_adjacent_violators(&means, &weights);
    let mut levels: Vec<f64> = rates.clone();
    levels.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    (0..cells.len())
        .map(|i| {
            let block: Vec<usize> = (0..cells.len()).filter(|&j| first[j] == first[i]).collect();
            let (a, b) = block
                .iter()
                .fold((0.0, 0.0), |(a, b), &j| (a + alpha[j], b + beta[j]));
            let (low, high) = beta_interval(a, b);
            let level = levels
                .iter()
                .position(|l| (l - rates[i]).abs() < 1e-12)
                .unwrap_or(0);
            let tier = if levels.len() <= 1 {
                "yellow"
            } else {
                TIERS[((level * 3) as f64 / (levels.len() - 1) as f64).round() as usize]
            };
            let (k, n) = cells[i];
            Bucket {
                label: label(cuts, i),
                min: if i == 0 { 0.0 } else { cuts[i - 1] },
                max: cuts.get(i).copied(),
                decided: n,
                renewed: k,
                observed_rate: (n > 0).then(|| k as f64 / n as f64),
                prior_rate: prior[i],
                renewal_rate: rates[i],
                interval_low: low,
                interval_high: high,
                tier: tier.to_string(),
            }
        })
        .collect()
}

/// How far the data let a segment's model go.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// Its own feature ranking, its buckets shrunk toward the pooled rates.
    Own,
    /// Enough decisions but one outcome only: the pooled ranking, its buckets shrunk toward
    /// the pooled rates.
    Pooled,
    /// Too few decisions to say anything: tier `unknown`.
    Unknown,
}

/// The calibrated model of one segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentModel {
    pub segment: String,
    pub standing: Standing,
    /// True when the feature ranking is not the segment's own (`pooled` or `unknown`).
    pub fallback: bool,
    pub note: Option<String>,
    pub decided: u64,
    pub renewed: u64,
    pub power_feature: Option<String>,
    /// `data` (top of the segment's ranking), `pooled` (top of the pooled ranking among the
    /// features the segment uses), `config`, or `model` (kept from the model in force, in
    /// the held-out test).
    pub power_feature_source: String,
    pub cut_points: Vec<f64>,
    /// The prior's strength in pseudo-decisions (estimated once per model from how much
    /// segments differ from the pooled rates).
    pub prior_strength: f64,
    pub buckets: Vec<Bucket>,
    pub indicators: Vec<Indicator>,
    /// The learned score (none on a hand-set or unknown segment without pooled data).
    pub score: Option<score::ScoreModel>,
}

/// Bounds of the prior strength, in pseudo-decisions.
pub const PRIOR_STRENGTH_MIN: f64 = 2.0;
pub const PRIOR_STRENGTH_MAX: f64 = 200.0;

/// The beta-binomial prior strength by the method of moments over the cells
/// (renewed k, decided n, prior mean m): E[(k/n - m)^2] = m(1-m)[1/n + rho(1 - 1/n)] with
/// rho = 1 / (strength + 1), so rho is the excess of the observed spread over the binomial
/// one. More spread between segments, a weaker prior.
pub fn prior_strength(cells: &[(u64, u64, f64)]) -> f64 {
    let (mut excess, mut scale) = (0.0, 0.0);
    for &(k, n, m) in cells.iter().filter(|c| c.1 > 0) {
        let (n, y) = (n as f64, k as f64 / n as f64);
        excess += n * ((y - m).powi(2) - m * (1.0 - m) / n);
        scale += n * m * (1.0 - m) * (1.0 - 1.0 / n);
    }
    if scale <= 0.0 {
        return PRIOR_STRENGTH_MAX;
    }
    let rho = (excess / scale).clamp(
        1.0 / (PRIOR_STRENGTH_MAX + 1.0),
        1.0 / (PRIOR_STRENGTH_MIN + 1.0),
    );
    1.0 / rho - 1.0
}

/// The plan of one segment before rates: standing, power feature, cut points.
struct Plan<'a> {
    segment: String,
    examples: Vec<&'a Example>,
    standing: Standing,
    note: Option<String>,
    power: Option<String>,
    source: &'static str,
    indicators: Vec<Indicator>,
    cuts: Vec<f64>,
}

fn uses_of(examples: &[&Example], feature: Option<&String>) -> Vec<(f64, bool)> {
    examples
        .iter()
        .map(|e| {
            (
                feature
                    .and_then(|f| e.monthly.get(f))
                    .copied()
                    .unwrap_or(0.0),
                e.renewed,
            )
        })
        .collect()
}

/// A segment's structure taken from another model: its power feature and cut points.
pub type Structure = BTreeMap<String, (Option<String>, Vec<f64>)>;

fn plan<'a>(
    segment: &str,
    own: Vec<&'a Example>,
    pooled: &[Indicator],
    config: &HealthConfig,
    fixed: Option<&Structure>,
) -> Plan<'a> {
    let renewed = own.iter().filter(|e| e.renewed).count();
    let churned = own.len() - renewed;
    let configured = config.power_features.get(segment).cloned();
    let (standing, note, mut indicators, ranked) = if (own.len() as u64) < config.min_decided {
        let note = format!(
            "{} decided renewals ({renewed} renewed, {churned} churned): fewer than {} to say anything; tier unknown",
            own.len(),
            config.min_decided
        );
        (Standing::Unknown, Some(note), Vec::new(), None)
    } else if renewed == 0 || churned == 0 {
        // The pooled ranking, among features this segment actually uses.
        let used = |f: &str| {
            own.iter()
                .filter(|e| e.monthly.get(f).is_some_and(|u| *u > 0.0))
                .count()
                * 5
                >= own.len()
        };
        let choice = pooled
            .iter()
            .find(|i| used(&i.feature))
            .map(|i| i.feature.clone());
        let note = format!(
            "{} decided renewals, {churned} churned: no both outcomes to rank its own features; the pooled ranking's best feature that it uses, with bucket rates borrowed from all segments",
            own.len()
        );
        (
            Standing::Pooled,
            Some(note),
            indicators(segment, &own, config),
            choice,
        )
    } else {
        let ranked = indicators(segment, &own, config);
        let top = ranked.first().map(|i| i.feature.clone());
        (Standing::Own, None, ranked, top)
    };
    let kept = fixed.and_then(|f| f.get(segment));
    let (power, source) = match (configured, standing) {
        _ if kept.is_some() => (kept.and_then(|k| k.0.clone()), "model"),
        (Some(p), _) => (Some(p), "config"),
        (None, Standing::Own) => (ranked, "data"),
        (None, _) => (ranked, "pooled"),
    };
    for indicator in &mut indicators {
        indicator.power_feature = Some(&indicator.feature) == power.as_ref();
    }
    let usage: Vec<f64> = uses_of(&own, power.as_ref()).iter().map(|u| u.0).collect();
    let cuts = match (kept, &config.cut_points) {
        (Some(k), _) if !k.1.is_empty() => k.1.clone(),
        (_, Some(given)) => given.clone(),
        _ => merge_small_buckets(auto_cut_points(&usage), &usage, config.min_bucket_decided),
    };
    Plan {
        segment: segment.to_string(),
        examples: own,
        standing,
        note,
        power,
        source,
        indicators,
        cuts,
    }
}

/// Pseudo-decisions at the overall rate added to each pooled bucket, so that a prior mean
/// is never exactly 0 or 1 (a bucket every account of which renewed would otherwise be
/// certain for every segment that borrows it).
const POOLED_SMOOTHING: f64 = 2.0;

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The prior mean of each of a segment's `buckets` buckets: the pooled model's bucket at
/// the same place in the usage order (first with first, last with last: both cut "no
/// real use" and then quantiles of use), moved by the segment's own level, i.e. in log-odds
/// pooled bucket + (segment base rate - pooled base rate). So a segment borrows the pooled
/// shape of "more use, more renewals", not other segments' level or their use of a
/// feature that is only its own. Rates carry [`POOLED_SMOOTHING`] pseudo-decisions.
fn prior_rates(
    pooled: &[(u64, u64)],
    pooled_base: f64,
    segment: &[&Example],
    buckets: usize,
) -> Vec<f64> {
    let renewed = segment.iter().filter(|e| e.renewed).count() as f64;
    let base =
        (renewed + POOLED_SMOOTHING * pooled_base) / (segment.len() as f64 + POOLED_SMOOTHING);
    let shift = logit(base) - logit(pooled_base);
    (0..buckets)
        .map(|i| {
            let j = if buckets <= 1 || pooled.len() <= 1 {
                pooled.len().saturating_sub(1)
            } else {
                (i * (pooled.len() - 1) + (buckets - 1) / 2) / (buckets - 1)
            };
            let (k, n) = pooled.get(j).copied().unwrap_or((0, 0));
            let rate = (k as f64 + POOLED_SMOOTHING * pooled_base) / (n as f64 + POOLED_SMOOTHING);
            1.0 / (1.0 + (-(logit(rate) + shift)).exp())
        })
        .collect()
}

/// Every segment's model, plus `all` (every segment pooled): see [`Standing`]. Bucket rates
/// are shrunk toward the pooled rates by one prior strength estimated across segments; the
/// score is fitted on every decision (`all`) and, per segment with its own ranking, pulled
/// toward that pooled fit. `examples` carry their score measures (all but the expected
/// renewal rate, which the buckets give).
pub fn build_models(
    examples: &[Example],
    segments: &[String],
    config: &HealthConfig,
) -> BTreeMap<String, SegmentModel> {
    build_models_like(examples, segments, config, None)
}

/// [`build_models`], with each segment named in `fixed` keeping that power feature and those
/// cut points (rates, priors and score learned anew): how a model in force would have
/// learned from other data, for the held-out test.
// Over 100 lines: Plans, priors, rates and scores of every segment in the order they depend on each other.
#[allow(clippy::too_many_lines)]
pub fn build_models_like(
    examples: &[Example],
    segments: &[String],
    config: &HealthConfig,
    fixed: Option<&Structure>,
) -> BTreeMap<String, SegmentModel> {
    let everyone: Vec<&Example> = examples.iter().collect();
    let pooled_plan = plan(
        "all",
        everyone.clone(),
        &[],
        &HealthConfig {
            min_decided: 1,
            ..config.clone()
        },
        fixed,
    );
    // The pooled plan ranked every decision already (its standing is own, or pooled when
    // all decisions share one outcome: both rank `indicators("all", everyone)`).
    let pooled_ranking = &pooled_plan.indicators;
    let plans: Vec<Plan> = segments
        .iter()
        .map(|s| {
            plan(
                s,
                examples.iter().filter(|e| &e.segment == s).collect(),
                pooled_ranking,
                config,
                fixed,
            )
        })
        .collect();
    let pooled_base = (everyone.iter().filter(|e| e.renewed).count() as f64 + 1.0)
        / (everyone.len() as f64 + 2.0);
    let pooled_cells = counts(
        &pooled_plan.cuts,
        &uses_of(&everyone, pooled_plan.power.as_ref()),
    );
    let priors: Vec<Vec<f64>> = plans
        .iter()
        .map(|p| prior_rates(&pooled_cells, pooled_base, &p.examples, p.cuts.len() + 1))
        .collect();
    let cells: Vec<(u64, u64, f64)> = plans
        .iter()
        .zip(&priors)
        .filter(|(p, _)| p.standing != Standing::Unknown)
        .flat_map(|(p, prior)| {
            counts(&p.cuts, &uses_of(&p.examples, p.power.as_ref()))
                .into_iter()
                .zip(prior.clone())
                .map(|((k, n), m)| (k, n, m))
        })
        .collect();
    let strength = prior_strength(&cells);
    let finish = |p: &Plan, prior: &[f64], strength: f64| SegmentModel {
        segment: p.segment.clone(),
        standing: p.standing,
        fallback: p.standing != Standing::Own,
        note: p.note.clone(),
        decided: p.examples.len() as u64,
        renewed: p.examples.iter().filter(|e| e.renewed).count() as u64,
        power_feature: p.power.clone(),
        power_feature_source: p.source.to_string(),
        cut_points: p.cuts.clone(),
        prior_strength: strength,
        buckets: if p.standing == Standing::Unknown {
            Vec::new()
        } else {
            buckets(
                &p.cuts,
                &uses_of(&p.examples, p.power.as_ref()),
                prior,
                strength,
            )
        },
        indicators: p.indicators.clone(),
        score: None,
    };
    let all_prior = prior_rates(&pooled_cells, pooled_base, &everyone, pooled_cells.len());
    let mut pooled = finish(&pooled_plan, &all_prior, strength);
    pooled.standing = Standing::Own;
    pooled.fallback = false;
    let mut out: BTreeMap<String, SegmentModel> = plans
        .iter()
        .zip(&priors)
        .map(|(p, prior)| (p.segment.clone(), finish(p, prior, strength)))
        .collect();

    // The score: each example's expected rate under its segment's model (the pooled one
    // for an unknown segment), then the pooled fit, then each segment's own.
    let rows: Vec<(String, score::Row)> = examples
        .iter()
        .map(|e| {
            let model = out
                .get(&e.segment)
                .filter(|m| m.standing != Standing::Unknown)
                .unwrap_or(&pooled);
            let monthly = model
                .power_feature
                .as_ref()
                .and_then(|f| e.monthly.get(f))
                .copied()
                .unwrap_or(0.0);
            let mut measures = e.measures.clone();
            measures.insert("expected_renewal_rate".into(), tier_of(model, monthly).1);
            (e.segment.clone(), (measures, e.renewed))
        })
        .collect();
    if !rows.is_empty() {
        let all_rows: Vec<score::Row> = rows.iter().map(|r| r.1.clone()).collect();
        pooled.score = Some(score::fit(&all_rows, None, "pooled"));
    }
    for model in out.values_mut() {
        model.score = match model.standing {
            Standing::Own => {
                let own: Vec<score::Row> = rows
                    .iter()
                    .filter(|r| r.0 == model.segment)
                    .map(|r| r.1.clone())
                    .collect();
                Some(score::fit(&own, pooled.score.as_ref(), "learned"))
            }
            _ => pooled.score.clone(),
        };
    }
    out.insert("all".into(), pooled);
    out
}

/// The tier of a current monthly usage under a segment model: (tier, expected renewal
/// rate); `unknown` and no rate where the segment's data says nothing.
pub fn tier_of(model: &SegmentModel, monthly: f64) -> (String, Option<f64>) {
    if model.standing == Standing::Unknown || model.buckets.is_empty() {
        return (UNKNOWN.to_string(), None);
    }
    let bucket = &model.buckets[bucket_of(&model.cut_points, monthly).min(model.buckets.len() - 1)];
    (bucket.tier.clone(), Some(bucket.renewal_rate))
}

/// Why an account's tier changed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The account's use moved (and the new tier held for `tier_hold_days`).
    Usage,
    /// A new model moved the power feature, cut points or rates.
    Model,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Usage => "usage",
            Cause::Model => "model",
        }
    }
}

/// The tier an account shows and what its raw (day's) tier has been doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The tier shown: changes only once a new raw tier has held `tier_hold_days` days.
    pub tier: String,
    /// The tier of the day's usage alone.
    pub raw_tier: String,
    /// The first day of the current run of equal raw tiers.
    pub raw_since: i32,
}

/// The held tier of `day` from the day before's (`None`: no history, the raw tier shows at
/// once) and the day's raw tier; `model_changed`: a new model is in force since the day
/// before, so the tiers are re-set under it at once and a change is the model's.
pub fn hold(
    previous: Option<&Held>,
    raw_tier: &str,
    day: i32,
    hold_days: u32,
    model_changed: bool,
) -> (Held, Option<Cause>) {
    let Some(previous) = previous else {
        return (
            Held {
                tier: raw_tier.to_string(),
                raw_tier: raw_tier.to_string(),
                raw_since: day,
            },
            None,
        );
    };
    let raw_since = if previous.raw_tier == raw_tier && !model_changed {
        previous.raw_since
    } else {
        day
    };
    let held = Held {
        tier: previous.tier.clone(),
        raw_tier: raw_tier.to_string(),
        raw_since,
    };
    if raw_tier == previous.tier {
        return (held, None);
    }
    if model_changed {
        return (
            Held {
                tier: raw_tier.to_string(),
                ..held
            },
            Some(Cause::Model),
        );
    }
    if day - raw_since + 1 >= hold_days as i32 {
        return (
            Held {
                tier: raw_tier.to_string(),
                ..held
            },
            Some(Cause::Usage),
        );
    }
    (held, None)
}

/// Points of a tier on the 0-100 scale (hand-set scores weigh the tier this way).
pub fn tier_points(tier: &str) -> Option<f64> {
    TIERS
        .iter()
        .position(|t| *t == tier)
        .map(|i| 100.0 * i as f64 / 3.0)
}

/// Turns one measure's value into 0-100 points (hand-set scores).
fn points(measure: &str, value: &Value) -> Option<f64> {
    match measure {
        "tier" => value.as_str().and_then(tier_points),
        "nps" => value.as_f64().map(|x| (x + 100.0) / 2.0),
        "escalations_open" => value.as_f64().map(|x| (100.0 - 50.0 * x).max(0.0)),
        "license_utilization" | "rate_of_adoption" | "feature_breadth" | "csat" => {
            value.as_f64().map(|x| 100.0 * x.clamp(0.0, 1.0))
        }
        "ces" => value.as_f64().map(|x| 100.0 * (x - 1.0) / 6.0),
        "expected_renewal_rate" => value.as_f64().map(|x| 100.0 * x),
        // engagement_score and any other 0-100 measure.
        _ => value.as_f64().map(|x| x.clamp(0.0, 100.0)),
    }
}

/// A score and where its weights came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: Option<f64>,
    pub band: Option<String>,
    pub components: Vec<Component>,
    /// `learned` (the segment's fit), `pooled` (all segments' fit) or `config` (hand-set).
    pub weights_source: Option<String>,
}

/// The score of one account's measures: hand-set weights of its segment if the config has
/// any (weighted mean of 0-100 points, missing measures left out and the other weights
/// rescaled), else the segment's learned score.
pub fn score(
    row: &serde_json::Map<String, Value>,
    model: Option<&SegmentModel>,
    config: &HealthConfig,
) -> Scored {
    let segment = row
        .get("segment")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(weights) = config.weights_for(segment) {
        let (score, components) = hand_set(row, weights);
        let band = score.map(|s| band(s, config).to_string());
        return Scored {
            score,
            band,
            components,
            weights_source: Some("config".into()),
        };
    }
    match model.and_then(|m| m.score.as_ref()) {
        Some(learned) => {
            let (score, components) = score::apply(learned, row);
            Scored {
                score: Some(score),
                band: Some(band(score, config).to_string()),
                components,
                weights_source: Some(learned.source.clone()),
            }
        }
        None => Scored {
            score: None,
            band: None,
            components: Vec::new(),
            weights_source: None,
        },
    }
}

fn hand_set(
    row: &serde_json::Map<String, Value>,
    weights: &BTreeMap<String, f64>,
) -> (Option<f64>, Vec<Component>) {
    let mut components: Vec<Component> = weights
        .iter()
        .map(|(measure, weight)| {
            let value = row.get(measure).cloned().unwrap_or(Value::Null);
            Component {
                measure: measure.clone(),
                points: points(measure, &value),
                value,
                weight: *weight,
                contribution: None,
            }
        })
        .collect();
    let total: f64 = components
        .iter()
        .filter(|c| c.points.is_some())
        .map(|c| c.weight)
        .sum();
    if total <= 0.0 {
        return (None, components);
    }
    for c in &mut components {
        c.contribution = c.points.map(|p| p * c.weight / total);
    }
    (
        Some(
            components
                .iter()
                .filter_map(|c| c.contribution)
                .sum::<f64>(),
        ),
        components,
    )
}

/// The band of a score (its own names, not tier colours): `BANDS[0]` below `bands[0]`, ...
pub fn band(score: f64, config: &HealthConfig) -> &'static str {
    let index = config
        .score_bands
        .iter()
        .take_while(|b| score >= **b)
        .count();
    BANDS[index.min(3)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_and_half_ties() {
        // Positives 3, 2; negatives 1, 2: pairs (3>1) (3>2) (2>1) (2=2 half) = 3.5 of 4.
        let points = [
            (3.0, true, 1.0),
            (2.0, true, 1.0),
            (1.0, false, 1.0),
            (2.0, false, 1.0),
        ];
        assert_eq!(auc(&points), Some(0.875));
        assert_eq!(auc(&[(1.0, true, 1.0)]), None, "one class only");
        // Weighted: the positive 2 weighs 3: wins 1x(1+1) + 3x(1 + 0.5) = 6.5 of 4 x 2 = 8.
        let weighted = [
            (3.0, true, 1.0),
            (2.0, true, 3.0),
            (1.0, false, 1.0),
            (2.0, false, 1.0),
        ];
        assert_eq!(auc(&weighted), Some(6.5 / 8.0));
    }

    #[test]
    fn scores_read_back_from_json_are_the_scores_written() {
        // 1375/27 is a score the demo produced: without serde_json's float_roundtrip its
        // text "50.925925925925924" parsed one ulp off, and the API disagreed with the page.
        for score in [1375.0 / 27.0, 0.1 + 0.2, 100.0 / 3.0, 2.0f64.sqrt() * 50.0] {
            let text = serde_json::to_string(&score).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), score, "{text}");
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap().as_f64(),
                Some(score),
                "{text}"
            );
        }
    }

    #[test]
    fn pool_adjacent_violators_repairs_a_non_monotone_pattern() {
        // The demo's enterprise pattern: 1-3.9 uses at 0.62, 3.9-7 at 0.38, 7+ at 0.9, with
        // 10, 13, 12 decisions: the middle two pool to (6.2 + 4.94) / 23 = 0.4843.
        let (fitted, first) =
            pool_adjacent_violators(&[0.2, 0.62, 0.38, 0.9], &[8.0, 10.0, 13.0, 12.0]);
        assert_eq!(first, vec![0, 1, 1, 3]);
        assert!(
            (fitted[1] - 11.14 / 23.0).abs() < 1e-12 && fitted[1] == fitted[2],
            "{fitted:?}"
        );
        assert_eq!((fitted[0], fitted[3]), (0.2, 0.9));
        let (fitted, _) = pool_adjacent_violators(&[0.9, 0.5, 0.1], &[1.0, 1.0, 1.0]);
        assert_eq!(fitted, vec![0.5, 0.5, 0.5], "all decreasing: one block");
    }

    #[test]
    fn buckets_shrink_toward_the_prior_stay_monotone_and_map_to_tiers() {
        let cuts = [1.0, 6.0];
        assert_eq!(
            (
                bucket_of(&cuts, 0.9),
                bucket_of(&cuts, 1.0),
                bucket_of(&cuts, 6.0)
            ),
            (0, 1, 2)
        );
        // < 1: 1 of 4 renewed; 1-6: 3 of 3; 6+: 1 of 2. Prior 0.5 each, strength 2:
        // posteriors (1+1)/(4+2) = 0.3333, (3+1)/(3+2) = 0.8, (1+1)/(2+2) = 0.5; the last
        // two violate and pool to (4 + 2) / (5 + 4) = 0.6667.
        let examples = [
            (0.0, true),
            (0.0, false),
            (0.5, false),
            (0.2, false),
            (3.0, true),
            (2.0, true),
            (5.0, true),
            (7.0, true),
            (30.0, false),
        ];
        let b = buckets(&cuts, &examples, &[0.5, 0.5, 0.5], 2.0);
        let rates: Vec<f64> = b.iter().map(|b| b.renewal_rate).collect();
        assert!(
            (rates[0] - 1.0 / 3.0).abs() < 1e-12
                && (rates[1] - 2.0 / 3.0).abs() < 1e-12
                && rates[1] == rates[2],
            "{rates:?}"
        );
        assert_eq!(
            b.iter().map(|b| b.tier.as_str()).collect::<Vec<_>>(),
            vec!["red", "green", "green"]
        );
        assert_eq!(
            (b[1].observed_rate, b[1].decided, b[1].renewed),
            (Some(1.0), 3, 3)
        );
        // The pooled block's interval is Beta(6, 3)'s: I_x(6, 3) = P(Binomial(8, x) >= 6) is 0.025 at 0.34914, 0.975 at 0.91477.
        assert!(
            (b[1].interval_low - 0.349_14).abs() < 1e-4
                && (b[1].interval_high - 0.914_77).abs() < 1e-4,
            "{:?}",
            b[1]
        );
        // One rate level only: usage does not separate, so no colour claims it does.
        let flat = buckets(&[1.0], &[(0.0, true), (2.0, true)], &[0.5, 0.5], 2.0);
        assert_eq!(
            flat.iter().map(|b| b.tier.as_str()).collect::<Vec<_>>(),
            vec!["yellow", "yellow"]
        );
    }

    #[test]
    fn prior_strength_follows_the_spread_between_segments() {
        // Two cells far from the prior mean 0.5 (0 of 20 and 20 of 20): spread beyond the
        // binomial: excess 20 x (0.25 - 0.0125) x 2 = 9.5, scale 20 x 0.25 x 0.95 x 2 = 9.5,
        // rho = 1 (clamped to 1/3): the weakest prior, 2 pseudo-decisions.
        assert_eq!(
            prior_strength(&[(0, 20, 0.5), (20, 20, 0.5)]),
            PRIOR_STRENGTH_MIN
        );
        // Cells exactly at the prior: no spread, the strongest prior.
        assert_eq!(
            prior_strength(&[(10, 20, 0.5), (10, 20, 0.5)]),
            PRIOR_STRENGTH_MAX
        );
        // 6 of 20 and 14 of 20 around 0.5: excess 2 x 20 x (0.04 - 0.0125) = 1.1, scale 9.5,
        // rho = 0.11579, strength 1 / rho - 1 = 7.636.
        let s = prior_strength(&[(6, 20, 0.5), (14, 20, 0.5)]);
        assert!((s - (9.5 / 1.1 - 1.0)).abs() < 1e-9, "{s}");
    }

    #[test]
    fn small_auto_buckets_are_merged() {
        // 12 values: 6 below 1, 1 in [1, 2), 5 at 2+: the lone bucket joins its smaller
        // neighbour (the 5 above), leaving one cut at 1.
        let values = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(merge_small_buckets(vec![1.0, 2.0], &values, 5), vec![1.0]);
        assert_eq!(
            merge_small_buckets(vec![1.0, 2.0], &values, 1),
            vec![1.0, 2.0]
        );
    }

    fn example(id: &str, segment: &str, renewed: bool, uses: &[(&str, f64)]) -> Example {
        Example {
            account_id: id.into(),
            segment: segment.into(),
            arr: 1000.0,
            renewed,
            day: 0,
            monthly: uses.iter().map(|(f, u)| (f.to_string(), *u)).collect(),
            measures: BTreeMap::new(),
        }
    }

    /// Segment `big`: 40 decisions where Reports separates (renewed use it 10 a month,
    /// churned 10 or 0.5); `small`: 12 where only Exports does (Reports unused); `calm`: 10, all
    /// renewed, using Reports; `tiny`: 8.
    fn fixture() -> Vec<Example> {
        let mut out = Vec::new();
        for i in 0..40 {
            let renewed = i % 4 != 0;
            // Half the churned used Reports as much as the renewed.
            let reports = if renewed || i % 8 == 0 { 10.0 } else { 0.5 };
            out.push(example(
                &format!("b{i}"),
                "big",
                renewed,
                &[("Reports", reports), ("Exports", 2.0)],
            ));
        }
        for i in 0..12 {
            let renewed = i % 3 != 0;
            out.push(example(
                &format!("s{i}"),
                "small",
                renewed,
                &[
                    ("Exports", if renewed { 8.0 } else { 0.2 }),
                    ("Common", 3.0),
                ],
            ));
        }
        for i in 0..10 {
            out.push(example(
                &format!("c{i}"),
                "calm",
                true,
                &[("Reports", 10.0)],
            ));
        }
        for i in 0..8 {
            out.push(example(
                &format!("t{i}"),
                "tiny",
                i % 2 == 0,
                &[("Reports", 5.0)],
            ));
        }
        out
    }

    fn fixture_models() -> BTreeMap<String, SegmentModel> {
        let segments: Vec<String> = ["big", "small", "calm", "tiny"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        build_models(&fixture(), &segments, &HealthConfig::default())
    }

    #[test]
    fn a_small_segment_keeps_its_own_planted_feature() {
        let models = fixture_models();
        assert_eq!(
            models["all"].power_feature.as_deref(),
            Some("Reports"),
            "pooled, big dominates"
        );
        let small = &models["small"];
        assert_eq!(
            (
                small.standing,
                small.power_feature.as_deref(),
                small.power_feature_source.as_str()
            ),
            (Standing::Own, Some("Exports"), "data")
        );
        assert_eq!((small.decided, small.renewed), (12, 8));
        // Its users renew far more than its non-users, after shrinkage too.
        let (low, high) = (tier_of(small, 0.0), tier_of(small, 8.0));
        assert!(high.1.unwrap() > low.1.unwrap() + 0.2, "{low:?} {high:?}");
        assert_eq!((low.0.as_str(), high.0.as_str()), ("red", "green"));
    }

    #[test]
    fn a_segment_without_churns_borrows_the_pooled_ranking_and_says_so() {
        let models = fixture_models();
        let calm = &models["calm"];
        assert_eq!(
            (
                calm.standing,
                calm.power_feature.as_deref(),
                calm.power_feature_source.as_str()
            ),
            (Standing::Pooled, Some("Reports"), "pooled")
        );
        assert!(
            calm.note
                .as_deref()
                .unwrap()
                .contains("10 decided renewals, 0 churned"),
            "{:?}",
            calm.note
        );
        // Its buckets start from the pooled rates of Reports users (renewed big accounts,
        // calm and tiny ones), pulled up by its own 10 renewals, but not to certainty.
        let (tier, rate) = tier_of(calm, 10.0);
        assert!(rate.unwrap() > 0.8 && rate.unwrap() < 1.0, "{rate:?}");
        assert_ne!(tier, UNKNOWN);
    }

    #[test]
    fn a_segment_with_eight_decisions_is_unknown_with_the_reason() {
        let models = fixture_models();
        let tiny = &models["tiny"];
        assert_eq!(tiny.standing, Standing::Unknown);
        assert_eq!(tiny.note.as_deref(), Some("8 decided renewals (4 renewed, 4 churned): fewer than 10 to say anything; tier unknown"));
        assert_eq!(tier_of(tiny, 50.0), (UNKNOWN.to_string(), None));
        assert!(tiny.buckets.is_empty());
        // It is still scored, by the pooled score.
        assert_eq!(
            tiny.score.as_ref().map(|s| s.source.as_str()),
            Some("pooled")
        );
    }

    #[test]
    fn a_one_day_dip_does_not_change_the_tier() {
        let green = Held {
            tier: "green".into(),
            raw_tier: "green".into(),
            raw_since: 0,
        };
        let (day1, cause) = hold(Some(&green), "red", 10, 14, false);
        assert_eq!(
            (day1.tier.as_str(), day1.raw_since, cause),
            ("green", 10, None)
        );
        let (day2, cause) = hold(Some(&day1), "green", 11, 14, false);
        assert_eq!(
            (day2.tier.as_str(), day2.raw_since, cause),
            ("green", 11, None)
        );
        // Red for 14 days in a row: the tier follows, caused by usage.
        let mut held = day2;
        let mut changes = Vec::new();
        for day in 12..=25 {
            let (next, cause) = hold(Some(&held), "red", day, 14, false);
            changes.extend(cause.map(|c| (day, c)));
            held = next;
        }
        assert_eq!(changes, vec![(25, Cause::Usage)]);
        assert_eq!(held.tier, "red");
        // A new model moves it at once, and says so.
        let (moved, cause) = hold(Some(&held), "yellow", 26, 14, true);
        assert_eq!((moved.tier.as_str(), cause), ("yellow", Some(Cause::Model)));
        // No history yet: the day's tier shows.
        assert_eq!(hold(None, "orange", 3, 14, false).0.tier, "orange");
    }

    #[test]
    fn hand_set_weights_rescale_over_measures_with_a_value() {
        let score_weights = [
            ("engagement_score", 40.0),
            ("tier", 30.0),
            ("nps", 10.0),
            ("escalations_open", 10.0),
            ("license_utilization", 10.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = HealthConfig {
            score_weights,
            ..HealthConfig::default()
        };
        // engagement 70 x 40, tier yellow (66.67) x 30, nps 20 -> 60 x 10, escalations 1 -> 50 x 10,
        // utilization null (left out): (2800 + 2000 + 600 + 500) / 90 = 65.56 -> band fair.
        let row: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
            "engagement_score": 70.0, "tier": "yellow", "nps": 20.0, "escalations_open": 1, "license_utilization": null
        }))
        .unwrap();
        let scored = score(&row, None, &config);
        assert!(
            (scored.score.unwrap() - 5900.0 / 90.0).abs() < 1e-9,
            "{scored:?}"
        );
        assert_eq!(
            (scored.band.as_deref(), scored.weights_source.as_deref()),
            (Some("fair"), Some("config"))
        );
        let utilization = scored
            .components
            .iter()
            .find(|c| c.measure == "license_utilization")
            .unwrap();
        assert_eq!((utilization.points, utilization.contribution), (None, None));
        // Without hand-set weights and without a model there is no score.
        assert_eq!(score(&row, None, &HealthConfig::default()).score, None);
    }

    #[test]
    fn auto_cut_points_use_quartiles_of_real_use() {
        let values = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0];
        // Values >= 1: 1..5, quartiles 2, 3, 4.
        assert_eq!(auto_cut_points(&values), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(auto_cut_points(&[0.0, 0.0]), vec![1.0]);
    }
}
