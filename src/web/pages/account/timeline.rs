//! The account's activity timeline: logged notes, calls, meetings and emails with its
//! tickets, survey answers, tier changes and alerts, newest first.

use maud::{html, Markup};
use serde_json::Value;

use super::View;
use crate::format;

/// Entries listed.
const ENTRIES_LISTED: usize = 40;

/// One entry: when (RFC 3339 or a day, both sort as text), what kind, what it says.
struct Entry {
    at: String,
    kind: &'static str,
    text: Markup,
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "call" => "Call",
        "meeting" => "Meeting",
        "email" => "Email",
        _ => "Note",
    }
}

fn records<'a>(v: &'a View, kind: &str) -> &'a [Value] {
    v.records
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, rows)| rows.as_slice())
}

fn text<'a>(row: &'a Value, field: &str) -> &'a str {
    row.get(field).and_then(Value::as_str).unwrap_or("")
}

fn entries(v: &View) -> Vec<Entry> {
    let mut out = Vec::new();
    for n in &v.notes {
        out.push(Entry {
            at: crate::ingest::format_timestamp(n.created_ms),
            kind: kind_name(&n.kind),
            text: html! { strong { (n.author) } ": " (n.text) },
        });
    }
    for t in records(v, "tickets") {
        let subject = text(t, "subject");
        out.push(Entry {
            at: text(t, "opened_at").to_string(),
            kind: "Ticket",
            text: html! {
                @if subject.is_empty() { "Ticket " (text(t, "ticket_id")) } @else { (subject) }
                @if t.get("escalated").and_then(Value::as_bool) == Some(true) { " (escalated)" }
                @if t.get("resolved_at").is_some_and(|c| !c.is_null()) { ", resolved" } @else { ", open" }
            },
        });
    }
    for s in records(v, "survey_responses") {
        let comment = text(s, "comment");
        out.push(Entry {
            at: text(s, "answered_at").to_string(),
            kind: "Survey",
            text: html! {
                (format::survey_kind(text(s, "kind"))) " answer " (format::value_text(s.get("score")))
                @if !comment.is_empty() { ": “" (comment) "”" }
            },
        });
    }
    for c in &v.changes {
        out.push(Entry {
            at: c.date.to_string(),
            kind: "Tier",
            text: html! { "Tier " (super::tier_badge(Some(&c.from))) " → " (super::tier_badge(Some(&c.to))) },
        });
    }
    for a in &v.alerts {
        out.push(Entry {
            at: crate::ingest::format_timestamp(a.fired_ms),
            kind: "Alert",
            text: html! { (format::humanize(&a.rule)) ": " (a.reason) },
        });
    }
    // Newest first; a day sorts before the times of that day.
    out.sort_by(|a, b| b.at.cmp(&a.at));
    out.truncate(ENTRIES_LISTED);
    out
}

/// The timeline as a list.
pub fn list(v: &View) -> Markup {
    let entries = entries(v);
    html! {
        @if entries.is_empty() { p.empty { "Nothing logged, no tickets, answers, tier changes or alerts yet." } }
        ol.timeline id="timeline" {
            @for e in &entries {
                li data-kind=(e.kind.to_lowercase()) {
                    span.when { (format::day_text(&e.at)) } " "
                    span.kind { (e.kind) } " "
                    span.what { (e.text) }
                }
            }
        }
    }
}
