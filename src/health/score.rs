//! The learned health score (docs/metrics.md, Health score): per segment, an
//! L2-regularized logistic regression of renewal on a few standardized components, each held
//! to its expected direction (more use, more satisfaction, fewer escalations never lower the
//! score). The 0-100 score is 100 x the fitted renewal probability, so it reads as a
//! calibrated renewal estimate; a segment's weights are shrunk toward the pooled weights.
//!
//! Why hand-written: five coefficients, Newton's method on a 6 x 6 system. A crate for it
//! (linfa-logistic) brings ndarray and argmin for what is forty lines here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The components a learned score weighs, each with the sign its weight must have. The
/// usage ones are read over the health window (`usage_days` before the decision or
/// `as_of`), from the same feature uses as the expected renewal rate: all features' uses a
/// month, and how many distinct features were used; the others are the metrics of the day.
pub const LEARNED_MEASURES: &[(&str, f64)] = &[
    ("expected_renewal_rate", 1.0),
    ("window_monthly_uses", 1.0),
    ("window_features_used", 1.0),
    ("nps", 1.0),
    ("escalations_open", -1.0),
];

/// Ridge penalty on the standardized weights (toward 0 for the pooled fit, toward the pooled
/// weights for a segment's): the weight of this many pseudo-observations' worth of belief.
pub const L2: f64 = 2.0;
/// A much weaker pull on the intercept, which only keeps it finite.
const L2_INTERCEPT: f64 = 0.01;
const NEWTON_STEPS_MAX: usize = 50;

/// One term of a learned score: `weight` log-odds per standard deviation of the measure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Term {
    pub measure: String,
    pub weight: f64,
    /// Mean and standard deviation of the (transformed) measure in the training rows; a
    /// missing value counts as the mean.
    pub mean: f64,
    pub sd: f64,
}

/// A segment's fitted score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreModel {
    /// `learned` (the segment's own decided renewals), `pooled` (all segments' fit).
    pub source: String,
    pub intercept: f64,
    pub terms: Vec<Term>,
    /// Decided renewals it was fitted on.
    pub decided: usize,
}

/// What the score reads of a measure: rates as log-odds (so a rate's effect is
/// multiplicative in odds), use counts on a log scale (twice the use is one step, whatever
/// the size of the account), the rest as they are.
pub fn transform(measure: &str, value: f64) -> f64 {
    match measure {
        "expected_renewal_rate" => {
            let p = value.clamp(0.01, 0.99);
            (p / (1.0 - p)).ln()
        }
        "window_monthly_uses" => value.max(0.0).ln_1p(),
        _ => value,
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One training row: each measure's raw value (None: missing) and the outcome.
pub type Row = (BTreeMap<String, Option<f64>>, bool);

/// Fits a score on `rows`, with weights pulled toward `prior` (the pooled fit's), or toward
/// zero without one. Weights whose sign would contradict the measure's direction are fixed
/// at zero (and the rest refitted).
pub fn fit(rows: &[Row], prior: Option<&ScoreModel>, source: &str) -> ScoreModel {
    let measures: Vec<(&str, f64)> = LEARNED_MEASURES.to_vec();
    let values = |m: &str| -> Vec<Option<f64>> {
        rows.iter()
            .map(|(r, _)| r.get(m).copied().flatten().map(|v| transform(m, v)))
            .collect()
    };
    let mut terms: Vec<Term> = measures
        .iter()
        .map(|(m, _)| {
            let present: Vec<f64> = values(m).into_iter().flatten().collect();
            let mean = if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            };
            let var = if present.len() < 2 {
                0.0
            } else {
                present.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (present.len() - 1) as f64
            };
            Term {
                measure: m.to_string(),
                weight: 0.0,
                mean,
                sd: var.sqrt(),
            }
        })
        .collect();
    // Standardized design matrix; a constant or missing measure is all zeros.
    let x: Vec<Vec<f64>> = {
        let columns: Vec<Vec<f64>> = terms
            .iter()
            .map(|t| {
                values(&t.measure)
                    .into_iter()
                    .map(|v| v.map_or(0.0, |v| if t.sd > 0.0 { (v - t.mean) / t.sd } else { 0.0 }))
                    .collect()
            })
            .collect();
        (0..rows.len())
            .map(|i| columns.iter().map(|c| c[i]).collect())
            .collect()
    };
    let y: Vec<f64> = rows
        .iter()
        .map(|(_, renewed)| if *renewed { 1.0 } else { 0.0 })
        .collect();
    let prior_weight = |m: &str| {
        prior
            .and_then(|p| p.terms.iter().find(|t| t.measure == m))
            .map_or(0.0, |t| t.weight)
    };
    let centre: Vec<f64> = terms.iter().map(|t| prior_weight(&t.measure)).collect();
    let intercept_centre = prior.map_or(0.0, |p| p.intercept);
    let mut active: Vec<bool> = terms.iter().map(|t| t.sd > 0.0).collect();
    loop {
        let (intercept, weights) = newton(&x, &y, &active, &centre, intercept_centre);
        let wrong: Vec<usize> = (0..terms.len())
            .filter(|&j| active[j] && weights[j] * measures[j].1 < 0.0)
            .collect();
        if wrong.is_empty() {
            for (term, w) in terms.iter_mut().zip(&weights) {
                term.weight = *w;
            }
            return ScoreModel {
                source: source.to_string(),
                intercept,
                terms,
                decided: rows.len(),
            };
        }
        for j in wrong {
            active[j] = false;
        }
    }
}

/// Maximizes the penalized log-likelihood over the active weights (Newton's method).
fn newton(
    x: &[Vec<f64>],
    y: &[f64],
    active: &[bool],
    centre: &[f64],
    intercept_centre: f64,
) -> (f64, Vec<f64>) {
    let p = active.len();
    // Parameters: [intercept, w_0 .. w_{p-1}]; inactive weights stay 0.
    let mut beta = vec![0.0; p + 1];
    beta[0] = intercept_centre;
    for j in 0..p {
        beta[j + 1] = if active[j] { centre[j] } else { 0.0 };
    }
    let free: Vec<usize> = std::iter::once(0)
        .chain((0..p).filter(|&j| active[j]).map(|j| j + 1))
        .collect();
    for _ in 0..NEWTON_STEPS_MAX {
        let k = free.len();
        let mut gradient = vec![0.0; k];
        let mut hessian = vec![vec![0.0; k]; k];
        for (row, target) in x.iter().zip(y) {
            let eta = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
            let prob = sigmoid(eta);
            let feature = |index: usize| if index == 0 { 1.0 } else { row[index - 1] };
            for (a, &fa) in free.iter().enumerate() {
                gradient[a] += (target - prob) * feature(fa);
                for (b, &fb) in free.iter().enumerate() {
                    hessian[a][b] += prob * (1.0 - prob) * feature(fa) * feature(fb);
                }
            }
        }
        for (a, &fa) in free.iter().enumerate() {
            let (penalty, target) = if fa == 0 {
                (L2_INTERCEPT, intercept_centre)
            } else {
                (L2, centre[fa - 1])
            };
            gradient[a] -= penalty * (beta[fa] - target);
            hessian[a][a] += penalty;
        }
        let Some(step) = solve(hessian, gradient) else {
            break;
        };
        // Damped: halve the step until the penalized likelihood does not fall (a plain
        // Newton step can overshoot far on nearly separable data).
        let before = objective(x, y, &beta, centre, intercept_centre);
        let mut scale = 1.0;
        let mut next = beta.clone();
        for _ in 0..STEP_HALVINGS_MAX {
            for (a, &fa) in free.iter().enumerate() {
                next[fa] = beta[fa] + scale * step[a];
            }
            if objective(x, y, &next, centre, intercept_centre) >= before - 1e-12 {
                break;
            }
            scale /= 2.0;
        }
        let largest = free
            .iter()
            .map(|&f| (next[f] - beta[f]).abs())
            .fold(0.0, f64::max);
        beta = next;
        if largest < 1e-9 {
            break;
        }
    }
    (beta[0], beta[1..].to_vec())
}

const STEP_HALVINGS_MAX: usize = 30;

/// The penalized log-likelihood Newton's method maximizes.
fn objective(
    x: &[Vec<f64>],
    y: &[f64],
    beta: &[f64],
    centre: &[f64],
    intercept_centre: f64,
) -> f64 {
    let mut total = 0.0;
    for (row, target) in x.iter().zip(y) {
        let eta = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
        // log sigmoid(eta) and log(1 - sigmoid(eta)), stable for large |eta|.
        let log_p = if eta > -30.0 {
            -(-eta).exp().ln_1p()
        } else {
            eta
        };
        let log_q = if eta < 30.0 { -eta.exp().ln_1p() } else { -eta };
        total += target * log_p + (1.0 - target) * log_q;
    }
    let penalty: f64 = beta[1..]
        .iter()
        .zip(centre)
        .map(|(b, c)| L2 * (b - c).powi(2))
        .sum::<f64>()
        + L2_INTERCEPT * (beta[0] - intercept_centre).powi(2);
    total - penalty / 2.0
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting (a is positive definite
/// here: penalized Hessian). None when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            let pivot_row = a[col].clone();
            for (cell, above) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                *cell -= factor * above;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let sum: f64 = (row + 1..n).map(|c| a[row][c] * x[c]).sum();
        x[row] = (b[row] - sum) / a[row][row];
    }
    Some(x)
}

/// One component of a score, for "why is this account at this score".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Component {
    pub measure: String,
    pub value: serde_json::Value,
    /// Hand-set scores: the measure on the 0-100 scale (null: no value, left out). Learned
    /// scores: null.
    pub points: Option<f64>,
    /// Hand-set: the configured weight. Learned: log-odds of renewal per standard deviation
    /// of the measure in the segment's decided renewals.
    pub weight: f64,
    /// Hand-set: points x weight / sum of the weights of measures with a value. Learned:
    /// score points this measure adds (or takes) against an account whose value is the
    /// segment's average, the other measures as they are.
    pub contribution: Option<f64>,
}

/// The learned score of one account's measures, with its breakdown.
pub fn apply(
    model: &ScoreModel,
    measures: &serde_json::Map<String, serde_json::Value>,
) -> (f64, Vec<Component>) {
    let z: Vec<f64> = model
        .terms
        .iter()
        .map(|t| {
            let value = measures.get(&t.measure).and_then(serde_json::Value::as_f64);
            value.map_or(0.0, |v| {
                if t.sd > 0.0 {
                    (transform(&t.measure, v) - t.mean) / t.sd
                } else {
                    0.0
                }
            })
        })
        .collect();
    let eta = model.intercept
        + model
            .terms
            .iter()
            .zip(&z)
            .map(|(t, z)| t.weight * z)
            .sum::<f64>();
    let score = 100.0 * sigmoid(eta);
    let components = model
        .terms
        .iter()
        .zip(&z)
        .map(|(t, z)| Component {
            measure: t.measure.clone(),
            value: measures
                .get(&t.measure)
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            points: None,
            weight: t.weight,
            contribution: Some(score - 100.0 * sigmoid(eta - t.weight * z)),
        })
        .collect();
    (score, components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rate: f64, noise: f64, renewed: bool) -> Row {
        let mut m = BTreeMap::new();
        m.insert("expected_renewal_rate".to_string(), Some(rate));
        m.insert("window_features_used".to_string(), Some(noise));
        m.insert("nps".to_string(), None);
        (m, renewed)
    }

    #[test]
    fn a_component_without_signal_gets_a_weight_near_zero() {
        // 40 accounts: expected rate 0.9 renews 9 times in 10, 0.5 renews half the time;
        // features used alternates 20/80 with the same renewal rate either way (no signal).
        let mut rows = Vec::new();
        for i in 0..20 {
            let noise = if i % 2 == 0 { 20.0 } else { 80.0 };
            rows.push(row(0.9, noise, i != 0 && i != 5));
            rows.push(row(0.5, noise, i % 4 < 2));
        }
        let model = fit(&rows, None, "learned");
        let weight = |m: &str| model.terms.iter().find(|t| t.measure == m).unwrap().weight;
        assert!(weight("expected_renewal_rate") > 0.5, "{model:?}");
        assert!(weight("window_features_used").abs() < 0.1, "{model:?}");
        assert_eq!(weight("nps"), 0.0, "never present");
        // Calibrated: mean fitted probability of each group near its observed rate.
        let score = |rate: f64| {
            apply(
                &model,
                &serde_json::json!({"expected_renewal_rate": rate, "window_features_used": 50.0})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .0
        };
        assert!((score(0.9) - 90.0).abs() < 6.0, "{}", score(0.9));
        assert!((score(0.5) - 50.0).abs() < 8.0, "{}", score(0.5));
    }

    #[test]
    fn a_weight_against_its_direction_is_held_at_zero() {
        // More escalations renew more often here (a fluke): the weight stays 0, not negative of the rule.
        let rows: Vec<Row> = (0..30)
            .map(|i| {
                let escalations = f64::from(i % 3);
                let renewed = escalations > 0.0 || i % 2 == 0;
                (
                    [("escalations_open".to_string(), Some(escalations))]
                        .into_iter()
                        .collect(),
                    renewed,
                )
            })
            .collect();
        let model = fit(&rows, None, "learned");
        let w = model
            .terms
            .iter()
            .find(|t| t.measure == "escalations_open")
            .unwrap()
            .weight;
        assert_eq!(w, 0.0);
        // With no term left, the score is the base rate: 25 of 30 renewed.
        let (score, _) = apply(&model, &serde_json::Map::new());
        assert!((score - 100.0 * 25.0 / 30.0).abs() < 0.5, "{score}");
    }

    #[test]
    fn separable_outcomes_keep_finite_weights() {
        // Every renewal has expected rate 0.9, every churn 0.1, and nps is missing for all
        // but one: plain Newton steps overshoot here (the demo's trial segment once fitted an
        // intercept of 2,500); the damped, penalized fit stays small and ranks them apart.
        let mut rows: Vec<Row> = (0..30)
            .map(|i| row(if i < 20 { 0.9 } else { 0.1 }, 50.0, i < 20))
            .collect();
        rows[0].0.insert("nps".into(), Some(100.0));
        let model = fit(&rows, None, "learned");
        assert!(
            model.intercept.abs() < 10.0 && model.terms.iter().all(|t| t.weight.abs() < 10.0),
            "{model:?}"
        );
        let score = |rate: f64| {
            apply(
                &model,
                serde_json::json!({"expected_renewal_rate": rate})
                    .as_object()
                    .unwrap(),
            )
            .0
        };
        // The penalty keeps it from certainty: 91 and 18 here.
        assert!(
            score(0.9) > 85.0 && score(0.1) < 25.0,
            "{} {}",
            score(0.9),
            score(0.1)
        );
    }

    #[test]
    fn contributions_are_score_points_against_the_average() {
        let model = ScoreModel {
            source: "learned".into(),
            intercept: 0.0,
            terms: vec![Term {
                measure: "nps".into(),
                weight: 1.0,
                mean: 0.0,
                sd: 50.0,
            }],
            decided: 10,
        };
        // nps 50 is one sd up: eta 1, score 100 x sigmoid(1) = 73.11; against eta 0 (50): +23.11.
        let (score, components) =
            apply(&model, serde_json::json!({"nps": 50}).as_object().unwrap());
        assert!((score - 73.105_857_863).abs() < 1e-6, "{score}");
        assert!((components[0].contribution.unwrap() - 23.105_857_863).abs() < 1e-6);
    }
}
