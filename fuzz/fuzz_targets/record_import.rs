//! Customer-record imports (CSV and NDJSON) of every kind into an empty in-memory database:
//! any file is imported whole or refused with a row-numbered report, never a panic.
#![no_main]
use bellwether::import::Checks;
use bellwether::import::{import, Format};
use bellwether::records::KINDS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = &KINDS[selector as usize % KINDS.len()];
    let format = if selector & 0x80 == 0 {
        Format::Csv
    } else {
        Format::Ndjson
    };
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    bellwether::store::sqlite::schema::migrate(&mut conn)
        .unwrap()
        .unwrap();
    let currency = |code: &str| {
        if code == "USD" {
            Ok(())
        } else {
            Err(format!("no rate for {code}"))
        }
    };
    let reason = |code: &str| bellwether::listening::ListeningConfig::default().check_reason(code);
    let _ = import(
        &mut conn,
        kind,
        format,
        body,
        Checks {
            currency: &currency,
            reason: &reason,
        },
        &mut |_| {},
    );
});
