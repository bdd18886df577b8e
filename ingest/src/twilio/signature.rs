//! `X-Twilio-Signature`, exactly as Twilio documents it: the URL Twilio requested
//! (scheme, host, path and query string), then every decoded POST parameter sorted by
//! name, name and value appended without separators; HMAC-SHA1 with the account's auth
//! token; base64.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The signature Twilio sends for `params` posted to `url` (query string included).
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `presented` is the signature of `params` posted to `url`, compared in
/// constant time. A header that is not base64 is simply wrong.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], presented: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(presented.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&bytes).is_ok()
}

/// The URL Twilio signed for a request to `public_url` that carried `query`: the
/// configured public URL (any query string of its own replaced) with the request's own
/// query string, so a proxy in front that rewrites the host or path changes nothing.
pub fn signed_url(public_url: &str, query: Option<&str>) -> String {
    let base = public_url
        .split_once('?')
        .map_or(public_url, |(base, _)| base);
    match query {
        Some(query) if !query.is_empty() => format!("{base}?{query}"),
        _ => base.to_owned(),
    }
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // By name, then by value for a repeated name, as Twilio's own libraries sort.
    sorted.sort();
    // HMAC takes keys of any length; configuration refuses an empty token.
    let mut mac =
        <Hmac<Sha1>>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented_params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn twilios_documented_worked_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = documented_params("+14158675310");
        assert_eq!(sign("12345", url, &params), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(verify(
            "12345",
            url,
            &params,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
    }

    #[test]
    fn the_vector_of_twilios_own_library() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = documented_params("+14158675309");
        assert!(verify(
            "12345",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn a_tampered_parameter_url_or_token_fails() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = documented_params("+14158675310");
        let good = "GvWf1cFY/Q7PnoempGyD5oXAezc=";
        let mut tampered = params.clone();
        tampered[2].1 = "1235".into();
        assert!(!verify("12345", url, &tampered, good));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1",
            &params,
            good
        ));
        assert!(!verify("54321", url, &params, good));
        assert!(!verify("12345", url, &params, "not base64 at all!"));
        assert!(!verify("12345", url, &params, ""));
    }

    #[test]
    fn the_signed_url_is_the_public_url_with_the_requests_query() {
        let public = "https://leads.example.com/v1/intake/telephony/twilio";
        assert_eq!(signed_url(public, None), public);
        assert_eq!(signed_url(public, Some("")), public);
        assert_eq!(
            signed_url(&format!("{public}?old=1"), Some("a=1&b=2")),
            format!("{public}?a=1&b=2")
        );
    }
}
