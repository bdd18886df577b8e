//! Email addresses, normalised so that the same mailbox typed twice compares
//! equal.
//!
//! The whole address is lower-cased, local part included: RFC 5321 allows
//! case-sensitive local parts, but no mailbox provider a prospect is likely
//! to use treats them that way, and matching leads on an address that differs
//! only in case would split one person into two leads. Dots and `+tags` are
//! kept because whether they matter is provider-specific.
//!
//! The domain is put in its canonical internationalised form (UTS 46
//! mapping, Unicode rather than Punycode labels), so `josé@exämple.de` and
//! `josé@xn--exmple-cua.de` are one address; the Unicode form is kept because
//! people read these addresses.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;

/// Longest address that fits in an SMTP forward-path (RFC 5321 §4.5.3.1).
const MAX_ADDRESS_CHARS: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_CHARS: usize = 64;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_CHARS: usize = 63;

/// A syntactically valid, normalised (trimmed, NFC, lower-case, canonical
/// Unicode domain) email address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

/// Why a string is not an acceptable email address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEmail {
    /// Nothing but whitespace was given.
    #[error("the address is empty")]
    Empty,
    /// The address is longer than SMTP allows.
    #[error("the address is longer than {MAX_ADDRESS_CHARS} characters")]
    TooLong,
    /// There is no `@` separating local part and domain.
    #[error("no @ in the address")]
    NoAt,
    /// More than one `@` appears.
    #[error("more than one @ in the address")]
    MultipleAt,
    /// Nothing precedes the `@`.
    #[error("nothing before the @")]
    EmptyLocalPart,
    /// The part before the `@` exceeds 64 characters.
    #[error("the part before the @ is longer than {MAX_LOCAL_CHARS} characters")]
    LocalPartTooLong,
    /// The part before the `@` contains a character not allowed there.
    #[error("the part before the @ contains the character {0:?}, which is not allowed there")]
    LocalPartCharacter(char),
    /// The part before the `@` starts or ends with a dot.
    #[error("the part before the @ starts or ends with a dot")]
    LocalPartEdgeDot,
    /// The part before the `@` contains two dots in a row.
    #[error("the part before the @ contains two dots in a row")]
    LocalPartDoubleDot,
    /// Nothing follows the `@`.
    #[error("nothing after the @")]
    EmptyDomain,
    /// The domain is a single label, such as `localhost`.
    #[error("domain has no dot")]
    DomainWithoutDot,
    /// The domain starts or ends with a dot, or has two dots in a row.
    #[error("domain has an empty label (a leading, trailing or doubled dot)")]
    EmptyDomainLabel,
    /// A domain label exceeds 63 characters.
    #[error("domain label {0:?} is longer than {MAX_LABEL_CHARS} characters")]
    DomainLabelTooLong(String),
    /// The domain contains a character not allowed in host names.
    #[error("domain contains the character {0:?}, which is not allowed in a host name")]
    DomainCharacter(char),
    /// A domain label starts or ends with a hyphen.
    #[error("domain label {0:?} starts or ends with a hyphen")]
    DomainLabelHyphen(String),
    /// The top-level label is numeric, which no real top-level domain is.
    #[error("top-level domain {0:?} is all digits")]
    NumericTopLevelDomain(String),
    /// The domain lies under a name reserved for special use (`.test`,
    /// `.invalid`, `.localhost`, `.local`, `.example`, ...), which receives no mail.
    #[error("the domain ends in .{0}, a name reserved for special use that receives no mail")]
    SpecialUseDomain(String),
    /// The top-level label is a single ASCII letter, which no real top-level domain is.
    #[error("the top-level domain {0:?} has one letter; no such domain exists (a typo?)")]
    OneLetterTopLevelDomain(String),
    /// The top-level label contains a digit or hyphen (after Punycode decoding).
    #[error(
        "the top-level domain {0:?} contains a digit or hyphen; top-level domains are letters only (a typo?)"
    )]
    TopLevelDomainCharacter(String),
    /// The domain is not a valid internationalised domain name (UTS 46), for
    /// example a broken `xn--` label or a disallowed character.
    #[error("domain {0:?} is not a valid internationalised domain name")]
    InvalidInternationalDomain(String),
}

impl EmailAddress {
    /// Normalises and validates `raw`.
    pub fn parse(raw: &str) -> Result<EmailAddress, InvalidEmail> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidEmail::Empty);
        }
        let composed = crate::text::compose(trimmed);
        let mut parts = composed.split('@');
        let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) => (local, domain),
            (_, None, _) => return Err(InvalidEmail::NoAt),
            _ => return Err(InvalidEmail::MultipleAt),
        };
        let local = normalize_local_part(local);
        // The domain gets UTS 46 instead of plain lower-casing: it also maps
        // Punycode, full-width and compatibility spellings to one form.
        let domain = map_domain(domain)?;
        let address = format!("{local}@{domain}");

        // Measured on the canonical form, so that every spelling of one
        // address (Punycode is longer) is accepted or rejected alike.
        if address.chars().count() > MAX_ADDRESS_CHARS {
            return Err(InvalidEmail::TooLong);
        }
        check_local_part(&local)?;
        check_domain(&domain)?;
        Ok(EmailAddress(address))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

/// The part before the `@` composed and lower-cased (not yet checked).
pub(crate) fn normalize_local_part(raw: &str) -> String {
    // Lower-casing can leave a string that is no longer NFC (e.g. 'İ'
    // becomes "i" + combining dot), so compose once more afterwards; this
    // also keeps parsing idempotent.
    let lowered = crate::text::compose(raw).to_lowercase();
    match crate::text::compose(&lowered) {
        Cow::Borrowed(_) => lowered,
        Cow::Owned(recomposed) => recomposed,
    }
}

/// Checks the part before the `@`, already lower-cased and composed.
pub(crate) fn check_local_part(local: &str) -> Result<(), InvalidEmail> {
    if local.is_empty() {
        return Err(InvalidEmail::EmptyLocalPart);
    }
    if local.chars().count() > MAX_LOCAL_CHARS {
        return Err(InvalidEmail::LocalPartTooLong);
    }
    if let Some(bad) = local.chars().find(|&c| !is_local_char(c)) {
        return Err(InvalidEmail::LocalPartCharacter(bad));
    }
    // A combining mark modifies the letter before it; with none there it is
    // debris from a broken copy and paste, not part of a name.
    if let Some(first) = local.chars().next().filter(|&c| is_combining_mark(c)) {
        return Err(InvalidEmail::LocalPartCharacter(first));
    }
    if local.starts_with('.') || local.ends_with('.') {
        return Err(InvalidEmail::LocalPartEdgeDot);
    }
    if local.contains("..") {
        return Err(InvalidEmail::LocalPartDoubleDot);
    }
    Ok(())
}

/// RFC 5322 `atext` plus dots, extended with non-ASCII letters and the
/// combining marks that scripts such as Devanagari, Tamil or Thai write
/// letters with (a virama, a tone mark), as RFC 6531 allows for
/// internationalised mailboxes.
fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+/=?^_`{|}~-.".contains(c)
        || (!c.is_ascii() && (c.is_alphabetic() || is_combining_mark(c)))
}

/// Canonical form of a host name: UTS 46 mapped, Unicode labels, checked.
///
/// Shared with [`crate::company::domain_key`] so that a company's website and
/// its people's addresses give the same domain.
pub(crate) fn canonical_domain(raw: &str) -> Result<String, InvalidEmail> {
    let domain = map_domain(raw)?;
    check_domain(&domain)?;
    Ok(domain)
}

/// UTS 46 ToUnicode (lower-casing, NFC, Punycode decoding); ASCII is left to
/// [`check_domain`], so that a stray `_` or `>` is reported as that character.
fn map_domain(raw: &str) -> Result<String, InvalidEmail> {
    let (mapped, result) = idna::domain_to_unicode(raw);
    match result {
        Ok(()) => Ok(mapped),
        Err(_) => Err(InvalidEmail::InvalidInternationalDomain(raw.to_owned())),
    }
}

/// Canonical form of one or more host-name labels that need not make a whole
/// domain (`google`, `blogspot`): UTS 46 mapped and checked like a domain's
/// labels, without the rules for its top-level name.
pub(crate) fn canonical_labels(raw: &str) -> Result<String, InvalidEmail> {
    let labels = map_domain(raw)?;
    if labels.is_empty() {
        return Err(InvalidEmail::EmptyDomain);
    }
    if let Some(bad) = labels.chars().find(|&c| !is_domain_char(c)) {
        return Err(InvalidEmail::DomainCharacter(bad));
    }
    check_labels(&labels)?;
    Ok(labels)
}

fn check_domain(domain: &str) -> Result<(), InvalidEmail> {
    if domain.is_empty() {
        return Err(InvalidEmail::EmptyDomain);
    }
    if let Some(bad) = domain.chars().find(|&c| !is_domain_char(c)) {
        return Err(InvalidEmail::DomainCharacter(bad));
    }
    if !domain.contains('.') {
        return Err(InvalidEmail::DomainWithoutDot);
    }
    check_labels(domain)?;
    check_top_level(domain)
}

fn check_labels(domain: &str) -> Result<(), InvalidEmail> {
    for label in domain.split('.') {
        if label.is_empty() {
            return Err(InvalidEmail::EmptyDomainLabel);
        }
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(InvalidEmail::DomainLabelTooLong(label.to_owned()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidEmail::DomainLabelHyphen(label.to_owned()));
        }
    }
    Ok(())
}

fn check_top_level(domain: &str) -> Result<(), InvalidEmail> {
    let top = domain.rsplit('.').next().unwrap_or_default();
    if top.chars().all(|c| c.is_ascii_digit()) {
        return Err(InvalidEmail::NumericTopLevelDomain(top.to_owned()));
    }
    if let Some(reserved) = special_use_suffix(domain) {
        return Err(InvalidEmail::SpecialUseDomain(reserved.to_owned()));
    }
    if top.len() == 1 {
        return Err(InvalidEmail::OneLetterTopLevelDomain(top.to_owned()));
    }
    // Punycode top-level labels were decoded by UTS 46 above, so an `xn--`
    // name such as `xn--p1ai` arrives here as `рф`: letters only.
    if !top
        .chars()
        .all(|c| c.is_alphabetic() || is_combining_mark(c))
    {
        return Err(InvalidEmail::TopLevelDomainCharacter(top.to_owned()));
    }
    Ok(())
}

/// Names under which no mailbox on the public Internet can exist:
/// - `test`, `example`, `invalid`, `localhost` (RFC 2606, RFC 6761): for
///   testing, documentation, certain failure and the local host; only the
///   top-level names: `example.com`, `.net`, `.org` (also RFC 2606) and
///   `example.it` are ordinary registered domains that people and test
///   fixtures use;
/// - `local` (RFC 6762): multicast DNS on the sender's own network;
/// - `onion` (RFC 7686): Tor services, which our mail server cannot reach;
/// - `home.arpa` (RFC 8375): home networks;
/// - `alt` (RFC 9476): names outside the DNS;
/// - `internal` (reserved by ICANN in 2024 for private networks).
///
/// All of them are typos or placeholders on a sales form, and a lead filed
/// with one could never be answered.
const SPECIAL_USE_SUFFIXES: &[&str] = &[
    "alt",
    "example",
    "home.arpa",
    "internal",
    "invalid",
    "local",
    "localhost",
    "onion",
    "test",
];

/// The special-use name `domain` lies under, if any.
fn special_use_suffix(domain: &str) -> Option<&'static str> {
    SPECIAL_USE_SUFFIXES.iter().copied().find(|suffix| {
        domain
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    })
}

/// Host-name characters (RFC 1123), plus non-ASCII letters and combining
/// marks for IDNs kept in their Unicode form: UTS 46 has already vetted
/// those, but lets symbols such as emoji through, which no business uses.
fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c == '-'
        || c == '.'
        || (!c.is_ascii() && (c.is_alphabetic() || is_combining_mark(c)))
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for EmailAddress {
    type Err = InvalidEmail;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        EmailAddress::parse(raw)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = InvalidEmail;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        EmailAddress::parse(&raw)
    }
}

impl From<EmailAddress> for String {
    fn from(address: EmailAddress) -> String {
        address.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_addresses_are_trimmed_composed_and_lower_cased() {
        let cases: &[(&str, &str)] = &[
            ("Niccolo.Fabbri@Example.IT", "niccolo.fabbri@example.it"),
            (" Hanna.Dabrowska@Example.PL ", "hanna.dabrowska@example.pl"),
            ("josé@exämple.de", "josé@exämple.de"),
            // Decomposed input ends up in the same composed form.
            ("jose\u{301}@exa\u{308}mple.de", "josé@exämple.de"),
            (
                "NGUYEN.VAN.AN+Leads@Gmail.COM",
                "nguyen.van.an+leads@gmail.com",
            ),
            (
                "first.last@sub.example.co.uk",
                "first.last@sub.example.co.uk",
            ),
            ("o'brien@example.ie", "o'brien@example.ie"),
            (
                "a!#$%&'*+/=?^_`{|}~-z@example.com",
                "a!#$%&'*+/=?^_`{|}~-z@example.com",
            ),
            ("x@a-b.co", "x@a-b.co"),
            ("\tTRAN.THI.MAI@FPT.COM.VN\n", "tran.thi.mai@fpt.com.vn"),
            ("ŁUKASZ@WP.PL", "łukasz@wp.pl"),
            ("用户@例子.中国", "用户@例子.中国"),
            // Internationalised domains: Punycode and upper case are mapped to
            // the lower-case Unicode form (UTS 46).
            ("josé@xn--exmple-cua.de", "josé@exämple.de"),
            ("JOSÉ@XN--EXMPLE-CUA.DE", "josé@exämple.de"),
            ("JOSÉ@EXÄMPLE.DE", "josé@exämple.de"),
            ("biuro@ŻÓŁW.PL", "biuro@żółw.pl"),
            ("lien.he@xn--vit-nam-zv4c.vn", "lien.he@việt-nam.vn"),
            ("a@ｅｘａｍｐｌｅ。ｃｏｍ", "a@example.com"),
            ("info@ΣΑΣ.gr", "info@σασ.gr"),
            // Scripts whose letters carry combining marks (Thai tone marks,
            // Devanagari virama) are valid host names.
            ("a@ตัวอย่าง.ไทย", "a@ตัวอย่าง.ไทย"),
            ("a@हिन्दी.भारत", "a@हिन्दी.भारत"),
        ];
        for (raw, expected) in cases {
            let parsed = EmailAddress::parse(raw);
            assert_eq!(
                parsed.as_ref().map(EmailAddress::as_str),
                Ok(*expected),
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn invalid_addresses_are_rejected_with_the_reason() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let long_total = format!("a@{}.com", vec!["c".repeat(60); 5].join("."));
        let cases: Vec<(&str, InvalidEmail)> = vec![
            ("roberta.gallo(at)libero.it", InvalidEmail::NoAt),
            ("a@b", InvalidEmail::DomainWithoutDot),
            ("a@@b.com", InvalidEmail::MultipleAt),
            ("a@b@c.com", InvalidEmail::MultipleAt),
            ("", InvalidEmail::Empty),
            ("   ", InvalidEmail::Empty),
            ("x@localhost", InvalidEmail::DomainWithoutDot),
            ("@example.com", InvalidEmail::EmptyLocalPart),
            ("a@", InvalidEmail::EmptyDomain),
            (".a@example.com", InvalidEmail::LocalPartEdgeDot),
            ("a.@example.com", InvalidEmail::LocalPartEdgeDot),
            ("a..b@example.com", InvalidEmail::LocalPartDoubleDot),
            ("a b@example.com", InvalidEmail::LocalPartCharacter(' ')),
            ("\"a\"@example.com", InvalidEmail::LocalPartCharacter('"')),
            ("a(b)@example.com", InvalidEmail::LocalPartCharacter('(')),
            ("a@example..com", InvalidEmail::EmptyDomainLabel),
            ("a@.example.com", InvalidEmail::EmptyDomainLabel),
            ("a@example.com.", InvalidEmail::EmptyDomainLabel),
            (
                "a@-example.com",
                InvalidEmail::DomainLabelHyphen("-example".into()),
            ),
            (
                "a@example-.com",
                InvalidEmail::DomainLabelHyphen("example-".into()),
            ),
            ("a@exa_mple.com", InvalidEmail::DomainCharacter('_')),
            ("a@[192.168.0.1]", InvalidEmail::DomainCharacter('[')),
            (
                "a@192.168.0.1",
                InvalidEmail::NumericTopLevelDomain("1".into()),
            ),
            ("a@example.com>", InvalidEmail::DomainCharacter('>')),
            (&long_local, InvalidEmail::LocalPartTooLong),
            (
                &long_label,
                InvalidEmail::DomainLabelTooLong("b".repeat(64)),
            ),
            (&long_total, InvalidEmail::TooLong),
            (
                "a@xn--abc.com",
                InvalidEmail::InvalidInternationalDomain("xn--abc.com".into()),
            ),
            (
                "a@XN--ABC.com",
                InvalidEmail::InvalidInternationalDomain("XN--ABC.com".into()),
            ),
            (
                "a@\u{301}x.com",
                InvalidEmail::InvalidInternationalDomain("\u{301}x.com".into()),
            ),
            ("a@😀.com", InvalidEmail::DomainCharacter('😀')),
            ("a@ex\u{a0}ample.com", InvalidEmail::DomainCharacter(' ')),
        ];
        for (raw, expected) in cases {
            assert_eq!(EmailAddress::parse(raw), Err(expected), "input {raw:?}");
        }
    }

    #[test]
    fn domains_that_cannot_receive_mail_are_rejected_with_the_reason() {
        let special = |tld: &str| InvalidEmail::SpecialUseDomain(tld.into());
        let cases: Vec<(&str, InvalidEmail)> = vec![
            // Special-use names (RFC 2606, 6761, 6762, 7686, 8375, 9476) and the
            // top-level name ICANN reserved for private use.
            ("anna@example.test", special("test")),
            ("anna@shop.example.invalid", special("invalid")),
            ("anna@printer.local", special("local")),
            ("anna@app.localhost", special("localhost")),
            ("anna@fabbri.example", special("example")),
            ("anna@FABBRI.EXAMPLE", special("example")),
            (
                "anna@duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion",
                special("onion"),
            ),
            ("anna@nas.home.arpa", special("home.arpa")),
            ("anna@intranet.corp.internal", special("internal")),
            ("anna@name.alt", special("alt")),
            // One-letter top-level names do not exist.
            (
                "marco@gmail.c",
                InvalidEmail::OneLetterTopLevelDomain("c".into()),
            ),
            (
                "marco@libero.I",
                InvalidEmail::OneLetterTopLevelDomain("i".into()),
            ),
            // Top-level names are letters only: digits or hyphens are typos.
            (
                "x@a-b.c0",
                InvalidEmail::TopLevelDomainCharacter("c0".into()),
            ),
            (
                "anna@gmail.co1",
                InvalidEmail::TopLevelDomainCharacter("co1".into()),
            ),
            (
                "anna@gmail.c-om",
                InvalidEmail::TopLevelDomainCharacter("c-om".into()),
            ),
            (
                "anna@gmail.c0m",
                InvalidEmail::TopLevelDomainCharacter("c0m".into()),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(EmailAddress::parse(raw), Err(expected), "input {raw:?}");
        }
        assert_eq!(
            EmailAddress::parse("anna@fabbri.test")
                .unwrap_err()
                .to_string(),
            "the domain ends in .test, a name reserved for special use that receives no mail"
        );
        assert_eq!(
            EmailAddress::parse("marco@gmail.c")
                .unwrap_err()
                .to_string(),
            "the top-level domain \"c\" has one letter; no such domain exists (a typo?)"
        );
        assert_eq!(
            EmailAddress::parse("anna@gmail.c0m")
                .unwrap_err()
                .to_string(),
            "the top-level domain \"c0m\" contains a digit or hyphen; top-level domains are letters only (a typo?)"
        );
    }

    #[test]
    fn ordinary_names_that_look_reserved_stay_valid() {
        for raw in [
            "anna@example.com",
            "anna@example.net",
            "anna@example.org",
            "anna@example.it",
            "anna@test.com",
            "anna@test.it",
            "anna@local.pl",
            "anna@localhost.it",
            "anna@shop.example.co.uk",
            "anna@test.example.com",
            "anna@onion.vn",
            "anna@arpa.it",
            // Internationalised top-level names, typed in Unicode or Punycode.
            "anna@пример.рф",
            "anna@xn--e1afmkfd.xn--p1ai",
            "anna@例子.中国",
            "a@ตัวอย่าง.ไทย",
            "a@हिन्दी.भारत",
        ] {
            assert!(EmailAddress::parse(raw).is_ok(), "{raw:?} must stay valid");
        }
    }

    #[test]
    fn local_parts_in_scripts_with_combining_marks_are_valid() {
        let cases: &[(&str, &str)] = &[
            // Devanagari vowel signs and virama are combining marks.
            ("उदाहरण@उदाहरण.भारत", "उदाहरण@उदाहरण.भारत"),
            ("हिन्दी@example.in", "हिन्दी@example.in"),
            // Thai tone marks.
            ("ทดสอบ@example.co.th", "ทดสอบ@example.co.th"),
            ("ผู้ใช้@ตัวอย่าง.ไทย", "ผู้ใช้@ตัวอย่าง.ไทย"),
            // Tamil.
            ("பயனர்@example.com", "பயனர்@example.com"),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                EmailAddress::parse(raw).as_ref().map(EmailAddress::as_str),
                Ok(*expected),
                "input {raw:?}"
            );
        }
        // A mark with nothing to sit on is not a letter.
        assert_eq!(
            EmailAddress::parse("\u{94d}a@example.com"),
            Err(InvalidEmail::LocalPartCharacter('\u{94d}'))
        );
    }

    #[test]
    fn unicode_and_punycode_spellings_of_a_domain_are_the_same_address() {
        let unicode = EmailAddress::parse("josé@exämple.de").unwrap();
        let punycode = EmailAddress::parse("josé@xn--exmple-cua.de").unwrap();
        let shouted = EmailAddress::parse("José@EXÄMPLE.DE").unwrap();
        assert_eq!(unicode, punycode);
        assert_eq!(unicode, shouted);
        assert_eq!(punycode.domain(), "exämple.de");
        assert_eq!(
            canonical_domain("XN--EXMPLE-CUA.DE").as_deref(),
            Ok("exämple.de")
        );
    }

    #[test]
    fn the_length_limit_applies_to_the_canonical_form() {
        // Punycode is longer than the Unicode it encodes: both spellings of
        // one address must get the same answer.
        let unicode = format!("a@{}.de", vec!["ä".repeat(60); 4].join("."));
        let ascii = format!("a@{}", idna::domain_to_ascii(&unicode[2..]).unwrap());
        assert!(ascii.chars().count() > MAX_ADDRESS_CHARS, "{ascii}");
        let parsed = EmailAddress::parse(&unicode).unwrap();
        assert_eq!(EmailAddress::parse(&ascii), Ok(parsed));
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let message = |raw: &str| EmailAddress::parse(raw).unwrap_err().to_string();
        assert_eq!(message("roberta.gallo(at)libero.it"), "no @ in the address");
        assert_eq!(message("x@localhost"), "domain has no dot");
        assert_eq!(
            message("a@xn--abc.com"),
            "domain \"xn--abc.com\" is not a valid internationalised domain name"
        );
        assert_eq!(
            message("a b@example.com"),
            "the part before the @ contains the character ' ', which is not allowed there"
        );
    }

    #[test]
    fn accessors_split_the_address_at_the_at_sign() {
        let address = EmailAddress::parse("Anna.Nowak+CRM@Firma.PL").unwrap();
        assert_eq!(address.local_part(), "anna.nowak+crm");
        assert_eq!(address.domain(), "firma.pl");
        assert_eq!(address.to_string(), "anna.nowak+crm@firma.pl");
        assert_eq!(
            "Anna.Nowak+CRM@Firma.PL".parse::<EmailAddress>(),
            Ok(address)
        );
    }

    #[test]
    fn serde_uses_a_plain_string_and_validates_on_the_way_in() {
        let address = EmailAddress::parse("Paolo.Rossi@Example.IT").unwrap();
        let json = serde_json::to_string(&address).unwrap();
        assert_eq!(json, "\"paolo.rossi@example.it\"");
        let back: EmailAddress = serde_json::from_str(&json).unwrap();
        assert_eq!(back, address);
        let relaxed: EmailAddress = serde_json::from_str("\" Paolo.Rossi@EXAMPLE.it\"").unwrap();
        assert_eq!(relaxed, address);
        let error = serde_json::from_str::<EmailAddress>("\"x@localhost\"").unwrap_err();
        assert!(error.to_string().contains("domain has no dot"), "{error}");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(raw in any::<String>()) {
            let _ = EmailAddress::parse(&raw);
        }

        #[test]
        fn parsing_a_normalised_address_returns_it_unchanged(
            raw in "[ ]?[a-zA-Z0-9.+_\u{e0}-\u{ff}\u{300}\u{301}İ]{1,12}@[a-zA-Z0-9\u{c0}-\u{ff}.-]{1,12}\\.[a-zA-Z]{2,4}[ ]?"
        ) {
            if let Ok(once) = EmailAddress::parse(&raw) {
                prop_assert_eq!(EmailAddress::parse(once.as_str()), Ok(once.clone()));
            }
        }

        #[test]
        fn accepted_addresses_end_in_a_top_level_name_of_letters(
            raw in "[a-z\u{900}-\u{97f}]{1,6}@[a-z0-9-]{1,6}\\.[a-z0-9\u{e00}-\u{e7f}-]{0,4}"
        ) {
            if let Ok(address) = EmailAddress::parse(&raw) {
                let top = address.domain().rsplit('.').next().unwrap_or_default();
                prop_assert!(top.chars().count() > 1 || !top.is_ascii(), "{address}");
                prop_assert!(top.chars().all(|c| c.is_alphabetic() || is_combining_mark(c)), "{address}");
                prop_assert_eq!(EmailAddress::parse(address.as_str()), Ok(address.clone()));
            }
        }

        #[test]
        fn parsing_any_accepted_string_twice_is_stable(raw in any::<String>()) {
            if let Ok(once) = EmailAddress::parse(&raw) {
                prop_assert_eq!(EmailAddress::parse(once.as_str()), Ok(once.clone()));
            }
        }
    }
}
