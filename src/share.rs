//! Signed, expiring tokens: links that show one account's quarterly review without
//! signing in, and survey answer links. A token is `base64url(payload \n expires_unix) .
//! base64url(HMAC-SHA256)` under a server secret; changing any byte breaks the signature.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Datelike, Months, NaiveDate};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the secret that signs share links (see `users::secret`).
pub const SECRET_NAME: &str = "share-links";
/// Longest validity a link may be given.
pub const VALID_DAYS_MAX: i64 = 365;
/// Longest payload signed: a 256-byte account id with its quarter fits.
pub const PAYLOAD_BYTES_MAX: usize = 300;
/// Longest token accepted before any decoding: base64 of the longest payload with its
/// expiry, the dot and the signature fit (a fuzz run found signed tokens longer than the
/// old bound when payloads were unbounded).
pub const TOKEN_CHARS_MAX: usize = 512;

/// A calendar quarter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarter {
    pub year: i32,
    /// 1 to 4.
    pub number: u32,
}

impl Quarter {
    /// `2026-Q3`.
    pub fn parse(text: &str) -> Result<Quarter, String> {
        let bad = || format!("{text:?} is not a quarter like 2026-Q3");
        let (year, number) = text.split_once("-Q").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let number: u32 = number.parse().map_err(|_| bad())?;
        if !(1..=4).contains(&number) || !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Quarter { year, number })
    }

    /// The quarter holding `day`.
    pub fn of(day: NaiveDate) -> Quarter {
        Quarter {
            year: day.year(),
            number: (day.month() - 1) / 3 + 1,
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, (self.number - 1) * 3 + 1, 1)
            .expect("invariant: a valid quarter start")
    }

    pub fn last_day(self) -> NaiveDate {
        self.first_day() + Months::new(3) - chrono::Duration::days(1)
    }

    pub fn previous(self) -> Quarter {
        Quarter::of(self.first_day() - chrono::Duration::days(1))
    }
}

impl std::fmt::Display for Quarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-Q{}", self.year, self.number)
    }
}

/// Why a link is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid (it was altered or cut short)")]
    Invalid,
    #[error("this link expired")]
    Expired,
    #[error("this link was revoked")]
    Revoked,
}

fn mac(secret: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("invariant: HMAC takes keys of any length");
    mac.update(payload);
    mac
}

/// A token for `payload` (which must not hold the token's own separators' meaning: any
/// text is fine), valid until `expires_unix`.
pub fn sign_payload(secret: &[u8], payload: &str, expires_unix: i64) -> String {
    assert!(
        payload.len() <= PAYLOAD_BYTES_MAX,
        "invariant: signed payloads are at most {PAYLOAD_BYTES_MAX} bytes (ids are at most 256)"
    );
    let payload = format!("{payload}\n{expires_unix}");
    let tag = mac(secret, payload.as_bytes()).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The payload of a token, if its signature holds and it has not expired at `now_unix`.
/// The signature is checked (in constant time) before anything is read.
pub fn verify_payload(secret: &[u8], token: &str, now_unix: i64) -> Result<String, LinkError> {
    if token.len() > TOKEN_CHARS_MAX {
        return Err(LinkError::Invalid);
    }
    let (payload, tag) = token.split_once('.').ok_or(LinkError::Invalid)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| LinkError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| LinkError::Invalid)?;
    mac(secret, &payload)
        .verify_slice(&tag)
        .map_err(|_| LinkError::Invalid)?;
    let text = String::from_utf8(payload).map_err(|_| LinkError::Invalid)?;
    let (payload, expires) = text.rsplit_once('\n').ok_or(LinkError::Invalid)?;
    let expires: i64 = expires.parse().map_err(|_| LinkError::Invalid)?;
    if now_unix >= expires {
        return Err(LinkError::Expired);
    }
    Ok(payload.to_string())
}

/// A review link token for `account`'s review of `quarter`, the stored link `link`.
pub fn sign(
    secret: &[u8],
    account: &str,
    quarter: Quarter,
    link: i64,
    expires_unix: i64,
) -> String {
    sign_payload(
        secret,
        &format!("{account}\n{quarter}\n{link}"),
        expires_unix,
    )
}

/// What a review link token opens: the account, the quarter and the stored link (`None`
/// for links made before links were stored, which cannot be revoked).
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub account: String,
    pub quarter: Quarter,
    pub link: Option<i64>,
}

/// The account, quarter and link of a review link token.
pub fn verify(secret: &[u8], token: &str, now_unix: i64) -> Result<Opened, LinkError> {
    let payload = verify_payload(secret, token, now_unix)?;
    let (account, rest) = payload.split_once('\n').ok_or(LinkError::Invalid)?;
    let (quarter, link) = match rest.split_once('\n') {
        Some((quarter, link)) => (quarter, Some(link.parse().map_err(|_| LinkError::Invalid)?)),
        None => (rest, None),
    };
    let quarter = Quarter::parse(quarter).map_err(|_| LinkError::Invalid)?;
    Ok(Opened {
        account: account.to_string(),
        quarter,
        link,
    })
}

/// A validity like `30d`, `12h`, `45m` or `10s` in seconds (at most [`VALID_DAYS_MAX`] days).
pub fn parse_validity(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a duration like 30d, 12h, 45m or 10s");
    let unit = text.chars().last().ok_or_else(bad)?;
    let amount: i64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let seconds = match unit {
        'd' => amount.checked_mul(86_400),
        'h' => amount.checked_mul(3_600),
        'm' => amount.checked_mul(60),
        's' => Some(amount),
        _ => None,
    }
    .ok_or_else(bad)?;
    if seconds <= 0 || seconds > VALID_DAYS_MAX * 86_400 {
        return Err(format!(
            "must be more than 0 and at most {VALID_DAYS_MAX} days"
        ));
    }
    Ok(seconds)
}

/// The dashboard path of an account, its id percent-encoded as one path segment: ids come
/// from customers' systems and may hold `/`, `?`, `#` or `..` (`a/b` must not link to
/// another page).
pub fn account_path(id: &str) -> String {
    let mut path = String::from("/accounts/");
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~') && !(id == "." || id == "..")
        {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_one_path_segment() {
        assert_eq!(account_path("acct-0067_x.y~z"), "/accounts/acct-0067_x.y~z");
        assert_eq!(account_path("a/b"), "/accounts/a%2Fb");
        assert_eq!(
            account_path("../../etc/passwd"),
            "/accounts/..%2F..%2Fetc%2Fpasswd"
        );
        assert_eq!(account_path(".."), "/accounts/%2E%2E");
        assert_eq!(account_path("x?y#z é"), "/accounts/x%3Fy%23z%20%C3%A9");
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let q = Quarter::parse("2026-Q3").unwrap();
        let token = sign(KEY, "acct-1", q, 7, 1_000);
        assert_eq!(
            verify(KEY, &token, 999),
            Ok(Opened {
                account: "acct-1".into(),
                quarter: q,
                link: Some(7)
            })
        );
        assert_eq!(verify(KEY, &token, 1_000), Err(LinkError::Expired));
        // A link made before links were stored still opens, with no link to revoke.
        let old = sign_payload(KEY, "acct-1\n2026-Q3", 1_000);
        assert_eq!(verify(KEY, &old, 999).map(|o| o.link), Ok(None));
    }

    #[test]
    fn any_changed_byte_or_key_is_refused() {
        let token = sign(KEY, "acct-1", Quarter::parse("2026-Q3").unwrap(), 7, 1_000);
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            if altered != token {
                assert_eq!(
                    verify(KEY, &altered, 0),
                    Err(LinkError::Invalid),
                    "byte {i}"
                );
            }
        }
        assert_eq!(verify(b"another key", &token, 0), Err(LinkError::Invalid));
        // A longer expiry cannot be spliced in from another link.
        let later = sign(KEY, "acct-1", Quarter::parse("2026-Q3").unwrap(), 7, 9_999);
        let spliced = format!(
            "{}.{}",
            later.split('.').next().unwrap(),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(verify(KEY, &spliced, 0), Err(LinkError::Invalid));
    }

    #[test]
    fn the_longest_payload_signed_still_verifies() {
        // Found by fuzzing: a signed token must never be longer than verify accepts.
        let account = "a".repeat(crate::limits::ID_BYTES_MAX);
        let token = sign(
            KEY,
            &account,
            Quarter::parse("2026-Q3").unwrap(),
            i64::MIN,
            i64::MAX,
        );
        assert!(token.len() <= TOKEN_CHARS_MAX, "{}", token.len());
        assert_eq!(verify(KEY, &token, 0).map(|o| o.account), Ok(account));
        let longest = "x".repeat(PAYLOAD_BYTES_MAX);
        assert_eq!(
            verify_payload(KEY, &sign_payload(KEY, &longest, i64::MAX), 0),
            Ok(longest)
        );
    }

    #[test]
    fn quarters_have_their_days() {
        let q = Quarter::parse("2026-Q4").unwrap();
        assert_eq!(
            (q.first_day().to_string(), q.last_day().to_string()),
            ("2026-10-01".into(), "2026-12-31".into())
        );
        assert_eq!(q.previous().to_string(), "2026-Q3");
        assert_eq!(
            Quarter::parse("2027-Q1").unwrap().previous().to_string(),
            "2026-Q4"
        );
        assert!(Quarter::parse("2026-Q5").is_err());
        assert!(Quarter::parse("2026Q1").is_err());
    }

    #[test]
    fn validity_is_bounded() {
        assert_eq!(parse_validity("30d"), Ok(30 * 86_400));
        assert_eq!(parse_validity("2s"), Ok(2));
        assert!(parse_validity("0d").is_err());
        assert!(parse_validity("366d").is_err());
        assert!(parse_validity("5w").is_err());
        assert!(parse_validity("").is_err());
    }
}
