//! Charts drawn as SVG on the server: nothing to load, print-ready, readable without script.
//! Each chart carries a text summary for screen readers.

use maud::{html, Markup};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// One line of a line chart.
pub struct Series {
    pub label: String,
    /// CSS class giving the colour (`s1` .. `s4`).
    pub class: &'static str,
    pub values: Vec<Option<f64>>,
}

/// An axis value as every page writes numbers (`crate::format`).
fn axis_label(value: f64, percent: bool) -> String {
    if percent {
        crate::format::percent(Some(value))
    } else {
        crate::format::number(Some(value), 1)
    }
}

/// The top of a readable axis at or above `max`: 1, 2, 2.5 or 5 times a power of ten
/// (a share's axis stops at 100% when the values fit).
pub fn nice_max(max: f64, percent: bool) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    if percent && max <= 1.0 {
        return if max <= 0.5 {
            nice_max(max, false)
        } else {
            1.0
        };
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|top| *top >= max - 1e-12)
        .unwrap_or(10.0 * power)
}

/// A line chart over `labels` (x axis, e.g. dates); `None` values break the line. Drawn at
/// its own aspect ratio, with ticks at quarters of a round top.
pub fn line(title: &str, labels: &[String], series: &[Series], percent: bool) -> Markup {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v));
    let max = nice_max(max, percent);
    let n = labels.len().max(2);
    let x = |i: usize| LEFT + (WIDTH - LEFT - RIGHT) * i as f64 / (n - 1) as f64;
    let y = |v: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v / max);
    let summary = series
        .iter()
        .map(|s| {
            let last = s.values.iter().rev().flatten().next();
            format!(
                "{}: latest {}",
                s.label,
                last.map_or("none".into(), |v| axis_label(*v, percent))
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let paths: Vec<(String, &Series)> = series
        .iter()
        .map(|s| {
            let mut d = String::new();
            let mut pen_down = false;
            for (i, v) in s.values.iter().enumerate() {
                match v {
                    Some(v) => {
                        d.push_str(&format!(
                            "{}{:.1},{:.1} ",
                            if pen_down { "L" } else { "M" },
                            x(i),
                            y(*v)
                        ));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            (d, s)
        })
        .collect();
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(format!("{title}. {summary}")) {
                @let steps = divisions(max, percent);
                @for k in 0..=steps {
                    @let v = max * k as f64 / steps as f64;
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(v)) y2=(y(v)) {}
                    text.axis x=(LEFT - 4.0) y=(y(v) + 4.0) text-anchor="end" { (axis_label(v, percent)) }
                }
                @for (i, label) in labels.iter().enumerate().filter(|(i, _)| shown_label(*i, labels.len())) {
                    text.axis x=(x(i)) y=(HEIGHT - 6.0) text-anchor=(anchor(i, labels.len())) { (label) }
                }
                @for (d, s) in &paths {
                    path class=(format!("line {}", s.class)) d=(d) {}
                }
            }
            ul.legend {
                @for s in series { li { span class=(format!("swatch {}", s.class)) {} (s.label) } }
            }
        }
    }
}

/// Labels under a line chart: every one when they fit, else about five spread evenly.
fn shown_label(i: usize, n: usize) -> bool {
    const FIT: usize = 8;
    let step = n.div_ceil(4).max(1);
    n <= FIT || i == 0 || i + 1 == n || i.is_multiple_of(step) && n - 1 - i >= step.div_ceil(2)
}

/// How many equal steps divide `top` into round ticks: quarters, fifths or halves, each
/// step a whole percent (shares) or a number with at most one decimal.
pub fn divisions(top: f64, percent: bool) -> usize {
    let scale = if percent { 100.0 } else { 10.0 };
    [4, 5, 2]
        .into_iter()
        .find(|d| {
            let step = top / *d as f64 * scale;
            (step - step.round()).abs() < 1e-9
        })
        .unwrap_or(2)
}

fn anchor(i: usize, n: usize) -> &'static str {
    match i {
        0 => "start",
        _ if i + 1 == n => "end",
        _ => "middle",
    }
}

/// One bar of a total chart.
pub struct Total {
    pub label: String,
    pub value: f64,
    /// What the bar's end says ("12 accounts · 48,000 USD").
    pub text: String,
}

/// Horizontal bars, longest first as given, each with its label and total.
pub fn totals(title: &str, bars: &[Total]) -> Markup {
    const ROW: f64 = 26.0;
    const LABEL: f64 = 170.0;
    let height = ROW * bars.len().max(1) as f64 + 8.0;
    let max = bars.iter().fold(0.0_f64, |m, b| m.max(b.value)).max(1e-9);
    let width = |v: f64| (WIDTH - LABEL - 170.0) * v / max;
    let summary = bars
        .iter()
        .map(|b| format!("{}: {}", b.label, b.text))
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        figure.chart.totals {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label=(format!("{title}. {summary}")) {
                @for (i, b) in bars.iter().enumerate() {
                    @let top = 4.0 + ROW * i as f64;
                    text.axis.label x=(LABEL - 6.0) y=(top + 16.0) text-anchor="end" { (b.label) }
                    rect.bar.total x=(LABEL) y=(top + 4.0) width=(width(b.value).max(1.0)) height=(ROW - 8.0) {}
                    text.axis x=(LABEL + width(b.value) + 6.0) y=(top + 16.0) { (b.text) }
                }
            }
        }
    }
}

/// One bar of a rate chart: a renewal rate with its interval.
pub struct RateBar {
    pub label: String,
    pub rate: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub count: u64,
    /// The tier the bucket maps to (colours the bar).
    pub tier: Option<String>,
}

/// Bars of rates 0-100% with interval whiskers, one per bucket.
pub fn rates(title: &str, bars: &[RateBar]) -> Markup {
    let n = bars.len().max(1) as f64;
    let slot = (WIDTH - LEFT - RIGHT) / n;
    let y = |v: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v);
    let summary = bars
        .iter()
        .map(|b| {
            format!(
                "{}: {} of {}",
                b.label,
                b.rate
                    .map_or("no data".into(), |r| format!("{:.0}%", r * 100.0)),
                b.count
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(format!("{title}. {summary}")) {
                @for v in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(v)) y2=(y(v)) {}
                    text.axis x=(LEFT - 4.0) y=(y(v) + 4.0) text-anchor="end" { (format!("{:.0}%", v * 100.0)) }
                }
                @for (i, bar) in bars.iter().enumerate() {
                    @let cx = LEFT + slot * (i as f64 + 0.5);
                    @if let Some(rate) = bar.rate {
                        rect class=(format!("bar tier-{}", bar.tier.as_deref().unwrap_or("none"))) x=(cx - slot * 0.3) y=(y(rate)) width=(slot * 0.6) height=(y(0.0) - y(rate)) {}
                        @if let (Some(low), Some(high)) = (bar.low, bar.high) {
                            line.whisker x1=(cx) x2=(cx) y1=(y(low)) y2=(y(high)) {}
                            line.whisker x1=(cx - 6.0) x2=(cx + 6.0) y1=(y(low)) y2=(y(low)) {}
                            line.whisker x1=(cx - 6.0) x2=(cx + 6.0) y1=(y(high)) y2=(y(high)) {}
                        }
                    }
                    text.axis x=(cx) y=(HEIGHT - 6.0) text-anchor="middle" { (bar.label) " (n=" (bar.count) ")" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_top_out_at_round_numbers() {
        assert_eq!(nice_max(0.93, true), 1.0);
        assert_eq!(nice_max(0.47, true), 0.5);
        assert_eq!(nice_max(0.3, true), 0.5);
        assert_eq!(nice_max(1.12, true), 2.0);
        assert_eq!(nice_max(93.0, false), 100.0);
        assert_eq!(nice_max(21.0, false), 25.0);
        assert_eq!(nice_max(7.0, false), 10.0);
        assert_eq!(nice_max(0.0, false), 1.0);
        assert_eq!(divisions(1.0, true), 4);
        assert_eq!(divisions(25.0, false), 5);
        assert_eq!(divisions(100.0, false), 4);
        assert_eq!(divisions(2.0, false), 4);
        // 14 weekly labels: the first, every fourth, the last, none crowding it.
        let shown: Vec<usize> = (0..14).filter(|i| shown_label(*i, 14)).collect();
        assert_eq!(shown, [0, 4, 8, 13]);
        // The ticks of a share are whole percentages.
        let chart = line(
            "t",
            &["a".into(), "b".into()],
            &[Series {
                label: "x".into(),
                class: "s1",
                values: vec![Some(0.93), Some(0.4)],
            }],
            true,
        )
        .into_string();
        for tick in ["0%", "25%", "50%", "75%", "100%"] {
            assert!(chart.contains(&format!(">{tick}<")), "{tick}: {chart}");
        }
        assert!(!chart.contains("preserveAspectRatio"));
    }

    #[test]
    fn a_missing_value_breaks_the_line() {
        let chart = line(
            "t",
            &["a".into(), "b".into(), "c".into()],
            &[Series {
                label: "x".into(),
                class: "s1",
                values: vec![Some(1.0), None, Some(2.0)],
            }],
            false,
        )
        .into_string();
        let d = chart
            .split("d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(!d.contains('L'), "{d}");
    }
}
