//! HMAC-SHA256 request signatures for endpoints that have a shared secret (a form's
//! `secret`), optionally over a signed timestamp that bounds how long a captured post can
//! be replayed.

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Header carrying the time a post was signed, in whole Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-leadpipe-timestamp";

/// Whether a form's posts must carry a signed timestamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampPolicy {
    /// A post may sign the body alone, or a timestamp and the body (then checked).
    #[default]
    Optional,
    /// Every post must sign a timestamp inside the tolerance window.
    Required,
}

/// How one form checks signatures.
#[derive(Debug, Clone, Copy)]
pub struct SignatureRule<'a> {
    /// The header carrying the signature.
    pub header: &'a str,
    /// Whether a signed timestamp is required.
    pub timestamp: TimestampPolicy,
    /// How far a signed timestamp may be from the server's clock, either way, in seconds.
    pub tolerance_secs: u64,
}

/// What a request presented: its signature and timestamp headers, if any.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The signature header's value.
    pub signature: Option<&'a str>,
    /// The timestamp header's value.
    pub timestamp: Option<&'a str>,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header at all.
    #[error(
        "this form requires a signature: send header `{0}: sha256=<hex HMAC-SHA256 of the raw body>`"
    )]
    Missing(String),
    /// The header is not `sha256=<64 hex digits>`.
    #[error("signature header `{0}` must be `sha256=` followed by 64 hex digits")]
    Malformed(String),
    /// The signature does not match the body (and timestamp).
    #[error(
        "signature in `{0}` does not match: sign the exact bytes sent with the form's secret, prefixed with `<timestamp>.` when you send {TIMESTAMP_HEADER}"
    )]
    Mismatch(String),
    /// The form requires a signed timestamp and none came.
    #[error(
        "this form requires a signed timestamp: send header `{0}: <unix seconds>` and sign `<unix seconds>.<raw body>`"
    )]
    TimestampMissing(&'static str),
    /// The timestamp is not whole Unix seconds.
    #[error("header `{0}` must be the signing time in whole Unix seconds, like 1767225600")]
    BadTimestamp(&'static str),
    /// The timestamp is signed correctly but too far from now: a late replay, or a clock
    /// that is off.
    #[error(
        "the signed time in `{header}` is more than {tolerance_secs} seconds away from the server's clock: sign each post as it is sent (and keep the sender's clock in sync); old posts cannot be replayed"
    )]
    OutsideWindow {
        /// The timestamp header.
        header: &'static str,
        /// The form's tolerance.
        tolerance_secs: u64,
    },
}

/// Checks a request's signature under a form's rule at `now` (Unix seconds); returns the
/// verified signing time when one was sent.
pub fn verify_request(
    secret: &[u8],
    rule: &SignatureRule<'_>,
    presented: Presented<'_>,
    now: i64,
    body: &[u8],
) -> Result<Option<i64>, SignatureError> {
    let expected = expected_mac(rule.header, presented.signature)?;
    let timestamp = match presented.timestamp {
        Some(text) => Some(parse_timestamp(text)?),
        None if rule.timestamp == TimestampPolicy::Required => {
            return Err(SignatureError::TimestampMissing(TIMESTAMP_HEADER));
        }
        None => None,
    };
    let mut mac = keyed(secret);
    if let Some(ts) = timestamp {
        mac.update(format!("{ts}.").as_bytes());
    }
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch(rule.header.to_owned()))?;
    // Only an authentic time is judged, so a refusal here means a replay or a clock off.
    if let Some(ts) = timestamp
        && now.abs_diff(ts) > rule.tolerance_secs
    {
        return Err(SignatureError::OutsideWindow {
            header: TIMESTAMP_HEADER,
            tolerance_secs: rule.tolerance_secs,
        });
    }
    Ok(timestamp)
}

/// Checks `header_value` (`sha256=<hex>` or bare hex) against the body alone, in constant
/// time.
pub fn verify(
    secret: &[u8],
    header_name: &str,
    header_value: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let rule = SignatureRule {
        header: header_name,
        timestamp: TimestampPolicy::Optional,
        tolerance_secs: 0,
    };
    let presented = Presented {
        signature: header_value,
        timestamp: None,
    };
    verify_request(secret, &rule, presented, 0, body).map(|_| ())
}

/// The signature header value a client sends for `body` alone.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The signature header value a client sends for `body` signed at `timestamp` (Unix
/// seconds, sent in [`TIMESTAMP_HEADER`]): HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign_at(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed(secret);
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail; configuration refuses empty ones.
    <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn expected_mac(header: &str, value: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let value = value.ok_or_else(|| SignatureError::Missing(header.to_owned()))?;
    let hex_part = value.trim();
    let hex_part = hex_part
        .strip_prefix("sha256=")
        .or_else(|| hex_part.strip_prefix("SHA256="))
        .unwrap_or(hex_part);
    let expected =
        hex::decode(hex_part).map_err(|_| SignatureError::Malformed(header.to_owned()))?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed(header.to_owned()));
    }
    Ok(expected)
}

fn parse_timestamp(text: &str) -> Result<i64, SignatureError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp(TIMESTAMP_HEADER));
    }
    text.parse()
        .map_err(|_| SignatureError::BadTimestamp(TIMESTAMP_HEADER))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn check(
        policy: TimestampPolicy,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
    ) -> Result<Option<i64>, SignatureError> {
        verify_request(
            b"s3cret",
            &SignatureRule {
                header: "x-sig",
                timestamp: policy,
                tolerance_secs: 300,
            },
            Presented {
                signature,
                timestamp,
            },
            NOW,
            body,
        )
    }

    #[test]
    fn the_documented_openssl_recipe_signs_the_same() {
        // printf '%s.%s' 1767225600 "$body" | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            sign_at(
                b"s3cret",
                1_767_225_600,
                b"email=ada%40example.com&name=Ada"
            ),
            "sha256=11177543e31e6557adf26bf813cbf720ec798bd5a9e81fdae24dcd18034bfa3b"
        );
    }

    #[test]
    fn a_timestamped_signature_inside_the_window_verifies_and_names_its_time() {
        for ts in [NOW, NOW - 300, NOW + 300] {
            let sig = sign_at(b"s3cret", ts, b"a=1");
            for policy in [TimestampPolicy::Optional, TimestampPolicy::Required] {
                assert_eq!(
                    check(policy, Some(&sig), Some(&ts.to_string()), b"a=1"),
                    Ok(Some(ts))
                );
            }
        }
    }

    #[test]
    fn a_timestamp_outside_the_window_is_refused_however_well_signed() {
        for ts in [NOW - 301, NOW + 301, 0] {
            let sig = sign_at(b"s3cret", ts, b"a=1");
            assert_eq!(
                check(
                    TimestampPolicy::Optional,
                    Some(&sig),
                    Some(&ts.to_string()),
                    b"a=1"
                ),
                Err(SignatureError::OutsideWindow {
                    header: TIMESTAMP_HEADER,
                    tolerance_secs: 300
                })
            );
        }
    }

    #[test]
    fn the_timestamp_is_part_of_what_is_signed() {
        let body_only = sign(b"s3cret", b"a=1");
        let at_other_time = sign_at(b"s3cret", NOW - 1, b"a=1");
        for sig in [body_only, at_other_time] {
            assert!(matches!(
                check(
                    TimestampPolicy::Optional,
                    Some(&sig),
                    Some(&NOW.to_string()),
                    b"a=1"
                ),
                Err(SignatureError::Mismatch(_))
            ));
        }
    }

    #[test]
    fn a_required_timestamp_must_be_sent_and_be_whole_seconds() {
        let body_only = sign(b"s3cret", b"a=1");
        assert_eq!(
            check(TimestampPolicy::Required, Some(&body_only), None, b"a=1"),
            Err(SignatureError::TimestampMissing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(TimestampPolicy::Optional, Some(&body_only), None, b"a=1"),
            Ok(None)
        );
        for bad in ["", "soon", "1.5", "-5", "+5", "99999999999999999999999"] {
            let sig = sign_at(b"s3cret", NOW, b"a=1");
            assert_eq!(
                check(TimestampPolicy::Optional, Some(&sig), Some(bad), b"a=1"),
                Err(SignatureError::BadTimestamp(TIMESTAMP_HEADER)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let sig = sign(b"s3cret", b"a=1");
        assert_eq!(verify(b"s3cret", "x-sig", Some(&sig), b"a=1"), Ok(()));
    }

    #[test]
    fn a_signature_over_other_bytes_is_a_mismatch() {
        let sig = sign(b"s3cret", b"a=1");
        assert!(matches!(
            verify(b"s3cret", "x-sig", Some(&sig), b"a=2"),
            Err(SignatureError::Mismatch(_))
        ));
    }

    #[test]
    fn a_missing_or_garbled_header_is_refused() {
        assert!(matches!(
            verify(b"k", "x-sig", None, b""),
            Err(SignatureError::Missing(_))
        ));
        assert!(matches!(
            verify(b"k", "x-sig", Some("sha256=zz"), b""),
            Err(SignatureError::Malformed(_))
        ));
    }
}
