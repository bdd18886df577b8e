//! HMAC-SHA256 request signatures for forms that have a shared secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
    /// The signature does not match the body.
    #[error(
        "signature in `{0}` does not match the body: sign the exact bytes sent with the form's secret"
    )]
    Mismatch(String),
}

/// Checks `header_value` (`sha256=<hex>` or bare hex) against the body, in constant time.
pub fn verify(
    secret: &[u8],
    header_name: &str,
    header_value: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let value = header_value.ok_or_else(|| SignatureError::Missing(header_name.to_owned()))?;
    let hex_part = value.trim();
    let hex_part = hex_part
        .strip_prefix("sha256=")
        .or_else(|| hex_part.strip_prefix("SHA256="))
        .unwrap_or(hex_part);
    let expected =
        hex::decode(hex_part).map_err(|_| SignatureError::Malformed(header_name.to_owned()))?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed(header_name.to_owned()));
    }
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret)
        .map_err(|_| SignatureError::Mismatch(header_name.to_owned()))?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch(header_name.to_owned()))
}

/// The header value a client sends for `body` (used by clients, tests and the load generator).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // new_from_slice accepts keys of any length for HMAC, so this cannot fail.
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
