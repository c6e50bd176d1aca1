//! Segment tracking API bodies: a single call of each kind, and a batch. Any input must
//! give a message or a rejection naming its field, never a panic.
#![no_main]
use bellwether::ingest::{parse_batch, parse_call, Kind, TimeRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = 1_790_000_000_000;
    let _ = parse_batch(data, now, &TimeRange::default());
    for kind in [
        Kind::Track,
        Kind::Identify,
        Kind::Group,
        Kind::Page,
        Kind::Screen,
        Kind::Alias,
    ] {
        let _ = parse_call(kind, data, now, &TimeRange::default());
    }
});
