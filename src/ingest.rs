//! Ingest: turns Segment tracking-API bodies into validated [`Message`]s and hands them to
//! the store's single writer through a bounded queue.
//!
//! Parsing is pure (no I/O): the web layer passes bytes in and gets messages or a
//! [`Rejection`] naming the field and the reason. The raw text of every message is kept
//! exactly as received, because raw events are the source of truth, less a `writeKey` in
//! it (a secret: it would be readable by every read-only token and in every backup).

pub mod queue;

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::limits;

pub use queue::{Ingestor, Job, JobOutcome, SubmitError};

/// The six Segment call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Track,
    Identify,
    Group,
    Page,
    Screen,
    Alias,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Identify => "identify",
            Kind::Group => "group",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Alias => "alias",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "track" => Kind::Track,
            "identify" => Kind::Identify,
            "group" => Kind::Group,
            "page" => Kind::Page,
            "screen" => Kind::Screen,
            "alias" => Kind::Alias,
            _ => return None,
        })
    }
}

/// Why a body or a message was refused: the JSON field and a lowercase reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

impl Rejection {
    fn new(field: &str, reason: impl Into<String>) -> Rejection {
        Rejection {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// A short stable label for the `/metrics` counter of rejections.
    pub fn metric_label(&self) -> &'static str {
        match self.field.as_str() {
            "body" => "invalid_json",
            "userId" | "anonymousId" if self.reason.contains("required") => "missing_identity",
            "timestamp" | "sentAt" | "originalTimestamp" => "bad_timestamp",
            _ if self.reason.starts_with("expected") => "wrong_type",
            _ if self.reason.contains("longer than") || self.reason.contains("more than") => {
                "too_large"
            }
            _ => "invalid_field",
        }
    }
}

/// One validated message, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    /// The client's `messageId`, or one generated here when the client sent none.
    pub message_id: String,
    pub message_id_generated: bool,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `groupId` of a group call, else `context.groupId`.
    pub group_id: Option<String>,
    /// `event` of a track call; `name` of a page or screen call.
    pub event: Option<String>,
    /// `previousId` of an alias call.
    pub previous_id: Option<String>,
    /// `traits` of identify and group calls, as JSON object text.
    pub traits: Option<String>,
    /// When it happened, after Segment's clock-skew correction, in ms since the epoch.
    pub timestamp_ms: i64,
    /// When bellwether received it, in ms since the epoch.
    pub received_ms: i64,
    /// The message exactly as received (less a `writeKey`).
    pub raw: String,
}

/// The event times accepted (after clock-skew correction): from `earliest_ms` to
/// `future_ms` after the message was received. `[ingest] earliest_event` and
/// `future_event_days` set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub earliest_ms: i64,
    pub future_ms: i64,
}

impl Default for TimeRange {
    /// 2000-01-01 to one day after receipt.
    fn default() -> Self {
        TimeRange {
            earliest_ms: 946_684_800_000,
            future_ms: 86_400_000,
        }
    }
}

impl TimeRange {
    /// Every time (the demo's own generated data).
    pub const ANY: TimeRange = TimeRange {
        earliest_ms: i64::MIN,
        future_ms: i64::MAX,
    };

    fn check(&self, timestamp_ms: i64, received_ms: i64) -> Result<(), Rejection> {
        let latest = received_ms.saturating_add(self.future_ms);
        if timestamp_ms < self.earliest_ms || timestamp_ms > latest {
            return Err(Rejection::new(
                "timestamp",
                format!(
                    "{} (after clock-skew correction) is outside the accepted range {} to {}",
                    format_timestamp(timestamp_ms),
                    format_timestamp(self.earliest_ms),
                    format_timestamp(latest)
                ),
            ));
        }
        Ok(())
    }
}

/// A parsed batch: the messages that passed, and the ones that did not by index.
#[derive(Debug)]
pub struct Batch {
    pub write_key: Option<String>,
    pub messages: Vec<Message>,
    pub rejected: Vec<ItemRejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ItemRejection {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// Every field bellwether reads. Values stay raw until checked one by one so each error
/// can name its field; unknown fields are kept in the raw text and otherwise ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    original_timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    group_id: Option<&'a RawValue>,
    #[serde(borrow)]
    previous_id: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    traits: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    write_key: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContext<'a> {
    #[serde(borrow)]
    group_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBatch<'a> {
    #[serde(borrow)]
    batch: Option<&'a RawValue>,
    #[serde(borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow)]
    write_key: Option<&'a RawValue>,
}

/// Parses a single call (`/v1/track` ...) whose type comes from the path. Returns the
/// `writeKey` found in the body, if any, and the message.
pub fn parse_call(
    kind: Kind,
    body: &[u8],
    received_ms: i64,
    range: &TimeRange,
) -> Result<(Option<String>, Message), Rejection> {
    if body.len() > limits::CALL_BYTES_MAX {
        return Err(Rejection::new(
            "body",
            format!("longer than {} bytes", limits::CALL_BYTES_MAX),
        ));
    }
    let text = body_text(body)?;
    let wire: Wire = serde_json::from_str(text).map_err(json_rejection)?;
    let write_key = optional_string(&wire.write_key, "writeKey", limits::WRITE_KEY_BYTES_MAX)?;
    if let Some(kind_raw) = wire.kind {
        let named = required_string(Some(kind_raw), "type", 16)?;
        if Kind::parse(&named) != Some(kind) {
            return Err(Rejection::new(
                "type",
                format!(
                    "{named:?} does not match the endpoint /v1/{}",
                    kind.as_str()
                ),
            ));
        }
    }
    let message = message_from_wire(kind, &wire, text, None, received_ms, range)?;
    Ok((write_key, message))
}

/// Parses `/v1/batch` and `/v1/import`. A body that is not a batch at all is a
/// [`Rejection`]; a bad item is listed in [`Batch::rejected`] and the others still pass.
pub fn parse_batch(body: &[u8], received_ms: i64, range: &TimeRange) -> Result<Batch, Rejection> {
    if body.len() > limits::BATCH_BYTES_MAX {
        return Err(Rejection::new(
            "body",
            format!("longer than {} bytes", limits::BATCH_BYTES_MAX),
        ));
    }
    let text = body_text(body)?;
    let wire: WireBatch = serde_json::from_str(text).map_err(json_rejection)?;
    let write_key = optional_string(&wire.write_key, "writeKey", limits::WRITE_KEY_BYTES_MAX)?;
    let batch_sent_at = match wire.sent_at {
        Some(raw) => Some(parse_timestamp_field(raw, "sentAt")?),
        None => None,
    };
    let Some(items_raw) = wire.batch else {
        return Err(Rejection::new("batch", "required: an array of messages"));
    };
    let items: Vec<&RawValue> = serde_json::from_str(items_raw.get())
        .map_err(|_| Rejection::new("batch", "expected an array of messages"))?;
    if items.len() > limits::BATCH_MESSAGES_MAX {
        return Err(Rejection::new(
            "batch",
            format!(
                "more than {} messages ({})",
                limits::BATCH_MESSAGES_MAX,
                items.len()
            ),
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_item(item, batch_sent_at, received_ms, range) {
            Ok(message) => messages.push(message),
            Err(r) => rejected.push(ItemRejection {
                index,
                field: r.field,
                reason: r.reason,
            }),
        }
    }
    Ok(Batch {
        write_key,
        messages,
        rejected,
    })
}

fn parse_item(
    item: &RawValue,
    batch_sent_at: Option<i64>,
    received_ms: i64,
    range: &TimeRange,
) -> Result<Message, Rejection> {
    let text = item.get();
    if text.len() > limits::CALL_BYTES_MAX {
        return Err(Rejection::new(
            "message",
            format!("longer than {} bytes", limits::CALL_BYTES_MAX),
        ));
    }
    if !text.starts_with('{') {
        return Err(Rejection::new("message", "expected an object"));
    }
    let wire: Wire =
        serde_json::from_str(text).map_err(|e| Rejection::new("message", e.to_string()))?;
    let kind_name = required_string(wire.kind, "type", 16)?;
    let kind = Kind::parse(&kind_name).ok_or_else(|| {
        Rejection::new(
            "type",
            format!("{kind_name:?} is not one of track, identify, group, page, screen, alias"),
        )
    })?;
    message_from_wire(kind, &wire, text, batch_sent_at, received_ms, range)
}

fn message_from_wire(
    kind: Kind,
    wire: &Wire,
    raw: &str,
    batch_sent_at: Option<i64>,
    received_ms: i64,
    range: &TimeRange,
) -> Result<Message, Rejection> {
    if json_depth(raw) > limits::JSON_DEPTH_MAX {
        return Err(Rejection::new(
            "message",
            format!("nested more than {} levels deep", limits::JSON_DEPTH_MAX),
        ));
    }
    let user_id = optional_id(&wire.user_id, "userId")?;
    let anonymous_id = optional_id(&wire.anonymous_id, "anonymousId")?;
    let previous_id = optional_id(&wire.previous_id, "previousId")?;
    match kind {
        Kind::Alias => {
            if user_id.is_none() {
                return Err(Rejection::new("userId", "required for alias"));
            }
            if previous_id.is_none() {
                return Err(Rejection::new("previousId", "required for alias"));
            }
        }
        _ if user_id.is_none() && anonymous_id.is_none() => {
            return Err(Rejection::new(
                "userId",
                "either userId or anonymousId is required",
            ));
        }
        _ => {}
    }
    let event = match kind {
        Kind::Track => {
            let event = required_string(wire.event, "event", limits::EVENT_NAME_BYTES_MAX)?;
            if event.trim().is_empty() {
                return Err(Rejection::new("event", "must not be empty"));
            }
            Some(event)
        }
        Kind::Page | Kind::Screen => {
            optional_string(&wire.name, "name", limits::EVENT_NAME_BYTES_MAX)?
        }
        _ => None,
    };
    check_object(&wire.properties, "properties")?;
    check_object(&wire.traits, "traits")?;
    check_object(&wire.context, "context")?;
    let group_id = match kind {
        Kind::Group => Some(
            optional_id(&wire.group_id, "groupId")?
                .ok_or_else(|| Rejection::new("groupId", "required for group"))?,
        ),
        _ => context_group_id(&wire.context)?,
    };
    let traits = match kind {
        Kind::Identify | Kind::Group => wire.traits.map(|t| t.get().to_string()),
        _ => None,
    };
    let (message_id, message_id_generated) = match optional_id(&wire.message_id, "messageId")? {
        Some(id) => (id, false),
        None => (uuid::Uuid::new_v4().to_string(), true),
    };
    let timestamp_ms = corrected_timestamp(wire, batch_sent_at, received_ms)?;
    range.check(timestamp_ms, received_ms)?;
    // Read by nothing, but a client's own record: refused like the other times if it is
    // not one.
    if let Some(raw) = wire.original_timestamp {
        parse_timestamp_field(raw, "originalTimestamp")?;
    }
    Ok(Message {
        kind,
        message_id,
        message_id_generated,
        user_id,
        anonymous_id,
        group_id,
        event,
        previous_id,
        traits,
        timestamp_ms,
        received_ms,
        raw: if wire.write_key.is_some() {
            without_write_key(raw)?
        } else {
            raw.to_string()
        },
    })
}

/// A message's text without its top-level `writeKey`; every other member is kept byte for
/// byte, in order.
fn without_write_key(raw: &str) -> Result<String, Rejection> {
    struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visit<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
                type Value = Members<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(
                    self,
                    mut map: M,
                ) -> Result<Members<'a>, M::Error> {
                    let mut members = Vec::new();
                    while let Some((key, value)) = map.next_entry::<Cow<'a, str>, &'a RawValue>()? {
                        members.push((key, value));
                    }
                    Ok(Members(members))
                }
            }
            deserializer.deserialize_map(Visit(std::marker::PhantomData))
        }
    }
    let members: Members =
        serde_json::from_str(raw).map_err(|e| Rejection::new("message", e.to_string()))?;
    let mut out = String::with_capacity(raw.len());
    out.push('{');
    for (key, value) in members.0.iter().filter(|(key, _)| key != "writeKey") {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(
            &serde_json::to_string(key).map_err(|e| Rejection::new("message", e.to_string()))?,
        );
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

/// Segment's rule: with `sentAt`, the client clock's offset is removed:
/// `timestamp = receivedAt - (sentAt - timestamp)`. Without a `timestamp`, it is `receivedAt`.
fn corrected_timestamp(
    wire: &Wire,
    batch_sent_at: Option<i64>,
    received_ms: i64,
) -> Result<i64, Rejection> {
    let sent_at = match wire.sent_at {
        Some(raw) => Some(parse_timestamp_field(raw, "sentAt")?),
        None => batch_sent_at,
    };
    let Some(timestamp_raw) = wire.timestamp else {
        return Ok(received_ms);
    };
    let timestamp = parse_timestamp_field(timestamp_raw, "timestamp")?;
    Ok(match sent_at {
        Some(sent) => received_ms - (sent - timestamp),
        None => timestamp,
    })
}

/// The deepest nesting of objects and arrays in a JSON text (strings are skipped).
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0_usize, 0_usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn body_text(body: &[u8]) -> Result<&str, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Rejection::new("body", format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => Ok(text),
        None => Err(Rejection::new("body", "empty; expected a JSON object")),
        Some(_) => Err(Rejection::new("body", "expected a JSON object")),
    }
}

fn json_rejection(e: serde_json::Error) -> Rejection {
    // Every field is read as raw JSON and the body is known to start as an object, so
    // serde can only fail on syntax or on a field given twice.
    let reason = match e.classify() {
        serde_json::error::Category::Data => e.to_string(),
        _ => format!("invalid JSON: {e}"),
    };
    Rejection::new("body", reason)
}

fn check_object(raw: &Option<&RawValue>, field: &str) -> Result<(), Rejection> {
    match raw {
        Some(value) if !value.get().starts_with('{') => {
            Err(Rejection::new(field, "expected an object"))
        }
        _ => Ok(()),
    }
}

fn context_group_id(context: &Option<&RawValue>) -> Result<Option<String>, Rejection> {
    let Some(context) = context else {
        return Ok(None);
    };
    let parsed: WireContext = serde_json::from_str(context.get())
        .map_err(|e| Rejection::new("context", e.to_string()))?;
    optional_id(&parsed.group_id, "context.groupId")
}

/// A JSON string (or, for ids, a number, which Segment libraries also accept) as text.
fn string_value(
    raw: &RawValue,
    field: &str,
    allow_number: bool,
    max: usize,
) -> Result<Option<String>, Rejection> {
    let text = raw.get();
    let value: Cow<str> = match text.as_bytes().first() {
        Some(b'"') => Cow::Owned(
            serde_json::from_str::<String>(text)
                .map_err(|e| Rejection::new(field, e.to_string()))?,
        ),
        Some(b'-' | b'0'..=b'9') if allow_number => Cow::Borrowed(text),
        Some(b'n') if text == "null" => return Ok(None),
        _ if allow_number => return Err(Rejection::new(field, "expected a string or a number")),
        _ => return Err(Rejection::new(field, "expected a string")),
    };
    if value.len() > max {
        return Err(Rejection::new(field, format!("longer than {max} bytes")));
    }
    if value.is_empty() {
        return Ok(None);
    }
    Ok(Some(value.into_owned()))
}

fn optional_id(raw: &Option<&RawValue>, field: &str) -> Result<Option<String>, Rejection> {
    match raw {
        Some(raw) => string_value(raw, field, true, limits::ID_BYTES_MAX),
        None => Ok(None),
    }
}

fn optional_string(
    raw: &Option<&RawValue>,
    field: &str,
    max: usize,
) -> Result<Option<String>, Rejection> {
    match raw {
        Some(raw) => string_value(raw, field, false, max),
        None => Ok(None),
    }
}

fn required_string(raw: Option<&RawValue>, field: &str, max: usize) -> Result<String, Rejection> {
    match raw {
        Some(raw) => {
            string_value(raw, field, false, max)?.ok_or_else(|| Rejection::new(field, "required"))
        }
        None => Err(Rejection::new(field, "required")),
    }
}

fn parse_timestamp_field(raw: &RawValue, field: &str) -> Result<i64, Rejection> {
    let text = string_value(raw, field, false, 64)?
        .ok_or_else(|| Rejection::new(field, "expected an ISO-8601 date-time, got null"))?;
    parse_timestamp(&text)
        .ok_or_else(|| Rejection::new(field, format!("not an ISO-8601 date-time: {text:?}")))
}

/// ISO-8601 / RFC 3339 date-times as Segment libraries send them (`Z` or an offset, any
/// fraction); one without an offset is taken as UTC. Returns ms since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// A `YYYY-MM-DD` date (midnight UTC) or an ISO-8601 date-time, as ms since the epoch.
pub fn parse_date_or_time(text: &str) -> Result<i64, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("invariant: midnight exists")
            .and_utc()
            .timestamp_millis());
    }
    parse_timestamp(text)
        .ok_or_else(|| format!("not a date (YYYY-MM-DD) or ISO-8601 date-time: {text:?}"))
}

/// Formats ms since the epoch as RFC 3339 UTC with milliseconds, as Segment does.
pub fn format_timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_768_471_200_000; // 2026-01-15T10:00:00Z

    #[test]
    fn skew_correction_follows_segment() {
        // Client clock 1 h fast: event at 10:00 client time, sent at 10:05 client time,
        // received at 09:05 server time -> happened at 09:00.
        let body = br#"{"userId":"u","event":"E","timestamp":"2026-01-15T10:00:00Z","sentAt":"2026-01-15T10:05:00Z"}"#;
        let received = NOW - 55 * 60_000;
        let (_, m) = parse_call(Kind::Track, body, received, &TimeRange::default()).unwrap();
        assert_eq!(format_timestamp(m.timestamp_ms), "2026-01-15T09:00:00.000Z");
        let (_, m) = parse_call(
            Kind::Track,
            br#"{"userId":"u","event":"E"}"#,
            NOW,
            &TimeRange::default(),
        )
        .unwrap();
        assert_eq!(m.timestamp_ms, NOW);
        let (_, m) = parse_call(
            Kind::Track,
            br#"{"userId":"u","event":"E","timestamp":"2026-01-15T11:00:00+01:00"}"#,
            0,
            &TimeRange::ANY,
        )
        .unwrap();
        assert_eq!(m.timestamp_ms, NOW);
    }

    #[test]
    fn nesting_is_limited_and_strings_do_not_count() {
        assert_eq!(json_depth(r#"{"a":[{"b":"[[[{{{\"]"}]}"#), 3);
        let deep = format!(
            r#"{{"userId":"u","event":"E","properties":{{"a":{}1{}}}}}"#,
            "[".repeat(30),
            "]".repeat(30)
        );
        assert!(
            parse_call(Kind::Track, deep.as_bytes(), NOW, &TimeRange::default()).is_ok(),
            "32 levels (message, properties, 30 arrays) pass"
        );
        let deeper = format!(
            r#"{{"userId":"u","event":"E","properties":{{"a":{}1{}}}}}"#,
            "[".repeat(31),
            "]".repeat(31)
        );
        assert_eq!(
            parse_call(Kind::Track, deeper.as_bytes(), NOW, &TimeRange::default())
                .unwrap_err()
                .field,
            "message"
        );
    }

    #[test]
    fn batch_keeps_good_items_and_lists_bad_ones() {
        let body = br#"{"batch":[{"type":"track","userId":"u","event":"A"},{"type":"track","event":"B"},{"type":"nope","userId":"u"}],"sentAt":"2026-01-15T10:00:00Z"}"#;
        let batch = parse_batch(body, NOW, &TimeRange::default()).unwrap();
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(
            batch
                .rejected
                .iter()
                .map(|r| (r.index, r.field.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "userId"), (2, "type")]
        );
    }

    #[test]
    fn implausible_times_are_refused_with_their_field() {
        let range = TimeRange::default();
        let body = br#"{"batch":[{"type":"track","userId":"u","event":"A","timestamp":"0000-01-01T00:00:00Z"},{"type":"track","userId":"u","event":"B","timestamp":"2999-01-01T00:00:00Z"},{"type":"track","userId":"u","event":"C","originalTimestamp":"garbage"},{"type":"track","userId":"u","event":"D","timestamp":"2026-01-16T09:00:00Z","originalTimestamp":"2026-01-16T09:00:00Z"}]}"#;
        let batch = parse_batch(body, NOW, &range).unwrap();
        let rejected: Vec<(usize, &str)> = batch
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(
            rejected,
            vec![(0, "timestamp"), (1, "timestamp"), (2, "originalTimestamp")]
        );
        assert!(
            batch.rejected[1].reason.contains(
                "outside the accepted range 2000-01-01T00:00:00.000Z to 2026-01-16T10:00:00.000Z"
            ),
            "{}",
            batch.rejected[1].reason
        );
        assert_eq!(
            batch.messages.len(),
            1,
            "23 hours ahead is within the day allowed"
        );
    }

    #[test]
    fn a_write_key_in_the_body_is_not_kept_in_the_raw_message() {
        let body = br#"{"writeKey":"secret-key","userId":"u","event":"E","properties":{"writeKey":"not the key","n":1.50}}"#;
        let (key, m) = parse_call(Kind::Track, body, NOW, &TimeRange::default()).unwrap();
        assert_eq!(key.as_deref(), Some("secret-key"));
        assert_eq!(
            m.raw, r#"{"userId":"u","event":"E","properties":{"writeKey":"not the key","n":1.50}}"#,
            "the rest byte for byte"
        );
        let (_, m) = parse_call(
            Kind::Track,
            br#"{"userId":"u", "event":"E"}"#,
            NOW,
            &TimeRange::default(),
        )
        .unwrap();
        assert_eq!(
            m.raw, r#"{"userId":"u", "event":"E"}"#,
            "without a key the text is untouched"
        );
    }
}
