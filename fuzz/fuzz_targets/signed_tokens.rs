//! Review share links and survey links: any token is refused or, only when its signature
//! holds, read; a token signed under another key never verifies.
#![no_main]
use bellwether::share::{sign_payload, verify, verify_payload};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzzing key, 32 bytes long......";

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = verify(KEY, token, 1_790_000_000);
    // Nothing the fuzzer makes up carries a valid signature.
    if let Ok(payload) = verify_payload(KEY, token, 1_790_000_000) {
        panic!("a token not signed with the key verified: {token:?} -> {payload:?}");
    }
    // Round trip: whatever is signed verifies to itself (payloads are bounded).
    if token.len() > bellwether::share::PAYLOAD_BYTES_MAX {
        return;
    }
    let signed = sign_payload(KEY, token, 1_790_000_001);
    assert_eq!(
        verify_payload(KEY, &signed, 1_790_000_000).as_deref(),
        Ok(token)
    );
});
