//! Phone numbers as typed by prospects, turned into E.164 plus an optional
//! extension.
//!
//! Numbers are read the way libphonenumber reads them, on the numbering plans (its
//! metadata) that the `phonenumber` crate ships; the `plan` module applies the rules,
//! because the crate's own parser gives wrong numbers for valid national input.
//! Everything libphonenumber is too lenient about is decided here first: it reads
//! letters as vanity digits ("brak" would become 2725), so the input is reduced to bare
//! digits and an optional leading `+` before anything else looks at it.

mod plan;

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use plan::{NotInternational, Parts};

/// Fewest digits an E.164 number can have: some Pacific islands use a
/// three-digit country code and four-digit subscriber numbers.
const MIN_E164_DIGITS: usize = 7;
/// Most digits an E.164 number can have (ITU-T E.164 §6.1).
const MAX_E164_DIGITS: usize = 15;
/// Room for a trunk or international prefix on top of a full E.164 number;
/// anything longer is not one phone number.
const MAX_TYPED_DIGITS: usize = MAX_E164_DIGITS + 5;
/// Fewer digits than this cannot be a subscriber number anywhere.
const MIN_TYPED_DIGITS: usize = 3;

/// A country or territory whose numbering plan is known (ISO 3166-1 alpha-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(Id);

/// Why a string is not a usable region code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRegion {
    /// The code is not two ASCII letters.
    #[error("{0:?} is not a two-letter ISO 3166-1 country code")]
    NotAlpha2(String),
    /// The code is well-formed but no numbering plan is known for it.
    #[error("no phone numbering plan is known for region {0:?}")]
    Unknown(String),
}

impl Region {
    /// Parses an ISO 3166-1 alpha-2 code such as `"IT"` or `"pl"`.
    pub fn parse(code: &str) -> Result<Region, InvalidRegion> {
        let code = code.trim();
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(InvalidRegion::NotAlpha2(code.to_owned()));
        }
        let upper = code.to_ascii_uppercase();
        match Id::from_str(&upper) {
            Ok(id) if DATABASE.by_id(upper.as_str()).is_some() => Ok(Region(id)),
            _ => Err(InvalidRegion::Unknown(upper)),
        }
    }

    /// The upper-case ISO code, e.g. `"IT"`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The underlying `phonenumber` region identifier.
    pub fn id(&self) -> Id {
        self.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = InvalidRegion;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Region::parse(code)
    }
}

impl TryFrom<String> for Region {
    type Error = InvalidRegion;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Region::parse(&code)
    }
}

impl From<Region> for String {
    fn from(region: Region) -> String {
        region.as_str().to_owned()
    }
}

/// A phone number in E.164 form, e.g. `"+390287361234"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneE164(String);

/// Why a string is not in E.164 form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an E.164 number ('+' then {MIN_E164_DIGITS} to {MAX_E164_DIGITS} digits, the first not 0)"
)]
pub struct InvalidE164(String);

impl PhoneE164 {
    /// The number, `+` and digits only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the E.164 shape only; numbering-plan validity is
    /// [`parse_phone`]'s job, so that stored numbers keep loading after the
    /// plan data changes.
    fn from_e164(text: String) -> Result<PhoneE164, InvalidE164> {
        let well_formed = text.strip_prefix('+').is_some_and(|digits| {
            (MIN_E164_DIGITS..=MAX_E164_DIGITS).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        });
        if well_formed {
            Ok(PhoneE164(text))
        } else {
            Err(InvalidE164(text))
        }
    }
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PhoneE164 {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneE164 {
    type Error = InvalidE164;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        PhoneE164::from_e164(text)
    }
}

impl From<PhoneE164> for String {
    fn from(number: PhoneE164) -> String {
        number.0
    }
}

/// A validated number and the extension typed after it, if any.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParsedPhone {
    /// The number in E.164 form.
    pub number: PhoneE164,
    /// Digits typed after an extension marker such as "ext." or "wew.".
    pub extension: Option<String>,
}

/// Why a string is not a usable phone number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPhone {
    /// Nothing but whitespace was given.
    #[error("not a phone number: empty")]
    Empty,
    /// Letters appear outside an extension marker.
    #[error("not a phone number: contains letters")]
    ContainsLetters,
    /// A character that is neither a digit nor phone punctuation appears.
    #[error("not a phone number: contains the character {0:?}")]
    UnexpectedCharacter(char),
    /// A `+` appears after digits or more than once.
    #[error("not a phone number: '+' may only appear once, before the digits")]
    MisplacedPlus,
    /// Too few digits to be a phone number anywhere.
    #[error("not a phone number: only {0} digit(s)")]
    TooFewDigits(usize),
    /// Too many digits to be a single phone number.
    #[error("not a phone number: {0} digits is too many")]
    TooManyDigits(usize),
    /// The number has no country code and no region was given to assume one.
    #[error("no country code and no default region")]
    NoCountryCode,
    /// An international prefix is not followed by a known country code.
    #[error("no known country code after the international prefix")]
    UnknownCountryCode,
    /// The digits do not form a number that exists in the region's plan.
    #[error("not a valid number for region {0}")]
    InvalidForRegion(Region),
    /// The digits after the country code do not form a number that exists.
    #[error("not a valid number for country code +{0}")]
    InvalidForCountryCode(u16),
    /// The digits could not be read as a phone number at all.
    #[error("not a phone number: {0}")]
    Unreadable(String),
}

/// Parses a typed phone number into E.164 and an optional extension.
///
/// `default_region` is the region assumed for numbers written without a
/// country code; an explicit one (`+44`, `0044`) always wins over it. Digits
/// typed without one are a national number of the region first, as in
/// libphonenumber: they are read as starting with the region's own country code
/// only when they fit its plan that way and not as typed (in Italy
/// `390 234 5678` is +39 390 234 5678; in Poland `48 601 234 567` is
/// +48 601 234 567).
pub fn parse_phone(raw: &str, default_region: Option<Region>) -> Result<ParsedPhone, InvalidPhone> {
    let (number_part, extension) = split_extension(raw);
    let dialled = dialled_digits(number_part)?;
    let (parts, rejection) = read_dialled(&dialled, default_region)?;
    let e164 = parts.e164();
    // A lead's number is looked up again by its E.164 form: only a number that reads
    // back as itself is stable enough to be its identity.
    let reread = e164
        .strip_prefix('+')
        .and_then(|digits| plan::split_international(digits).ok());
    if reread.as_ref() != Some(&parts) {
        return Err(rejection);
    }
    let number = PhoneE164::from_e164(e164)
        .map_err(|bad| InvalidPhone::Unreadable(format!("cannot be written as E.164: {bad}")))?;
    Ok(ParsedPhone { number, extension })
}

/// The valid number the digits dial, and how to refuse it should it not read back as
/// itself.
fn read_dialled(
    dialled: &Dialled,
    region: Option<Region>,
) -> Result<(Parts, InvalidPhone), InvalidPhone> {
    let digits = dialled.digits.as_str();
    if dialled.plus {
        return read_international(digits);
    }
    let Some(region) = region else {
        return after_zero_zero(digits)
            .map_or(Err(InvalidPhone::NoCountryCode), read_international);
    };
    if let Some(rest) = after_region_prefix(digits, region) {
        return read_international(rest);
    }
    let national = plan::split_national(digits, region.as_str()).filter(Parts::is_valid);
    match (national, after_zero_zero(digits)) {
        (Some(parts), _) => Ok((parts, InvalidPhone::InvalidForRegion(region))),
        // Where the region's own prefix is another (011 in the US), "00" is still read
        // as international when the digits are no national number.
        (None, Some(rest)) => read_international(rest),
        (None, None) => Err(InvalidPhone::InvalidForRegion(region)),
    }
}

fn read_international(digits: &str) -> Result<(Parts, InvalidPhone), InvalidPhone> {
    let parts = plan::split_international(digits).map_err(|error| match error {
        NotInternational::UnknownCountryCode => InvalidPhone::UnknownCountryCode,
        NotInternational::Length(code) => InvalidPhone::InvalidForCountryCode(code),
    })?;
    let rejection = InvalidPhone::InvalidForCountryCode(parts.code);
    if parts.is_valid() {
        Ok((parts, rejection))
    } else {
        Err(rejection)
    }
}

/// Loads the numbering-plan data and compiles a first plan now, so the first
/// real request does not pay for it; every other region's plan is compiled on
/// its first number (milliseconds, once).
pub fn warm_up() {
    let _ = parse_phone("+39 02 8736 1234", None);
}

/// The digits as dialled, and whether they were written after a `+`.
struct Dialled {
    plus: bool,
    digits: String,
}

fn dialled_digits(number_part: &str) -> Result<Dialled, InvalidPhone> {
    if number_part
        .chars()
        .all(|c| c.is_whitespace() || is_invisible(c))
    {
        return Err(InvalidPhone::Empty);
    }
    // A label typed before the number ("Tel.", "tel:", "kom.", "SĐT:") is no part of it:
    // as in libphonenumber, the number starts at its first digit or plus sign.
    let number_part = number_part
        .find(|c: char| ascii_digit(c).is_some() || c == '+' || c == FULL_WIDTH_PLUS)
        .map_or(number_part, |start| &number_part[start..])
        .trim_end_matches(|c: char| c.is_whitespace() || is_closing(c));
    if number_part.chars().any(char::is_alphabetic) {
        return Err(InvalidPhone::ContainsLetters);
    }
    let mut dialled = Dialled {
        plus: false,
        digits: String::new(),
    };
    for c in number_part.chars() {
        if let Some(digit) = ascii_digit(c) {
            dialled.digits.push(digit);
        } else if c == '+' || c == FULL_WIDTH_PLUS {
            if dialled.plus || !dialled.digits.is_empty() {
                return Err(InvalidPhone::MisplacedPlus);
            }
            dialled.plus = true;
        } else if !is_phone_punctuation(c) && !is_invisible(c) {
            return Err(InvalidPhone::UnexpectedCharacter(c));
        }
    }
    let count = dialled.digits.len();
    if count < MIN_TYPED_DIGITS {
        return Err(InvalidPhone::TooFewDigits(count));
    }
    if count > MAX_TYPED_DIGITS {
        return Err(InvalidPhone::TooManyDigits(count));
    }
    Ok(dialled)
}

/// The plus sign East Asian input methods type in full-width mode.
const FULL_WIDTH_PLUS: char = '\u{ff0b}';

/// The ASCII digit for a digit typed in ASCII, by the same input methods in full width,
/// or in the Arabic-Indic and Devanagari scripts a form in those languages may send.
fn ascii_digit(c: char) -> Option<char> {
    let zero = match c {
        '0'..='9' => return Some(c),
        '\u{ff10}'..='\u{ff19}' => 0xff10,
        '\u{0660}'..='\u{0669}' => 0x0660,
        '\u{06f0}'..='\u{06f9}' => 0x06f0,
        '\u{0966}'..='\u{096f}' => 0x0966,
        _ => return None,
    };
    char::from_u32(u32::from(c) - zero + u32::from(b'0'))
}

/// What may close a typed number or the note after it ("567.", "(int. 12)", "567;"):
/// not part of the number, as in libphonenumber.
fn is_closing(c: char) -> bool {
    matches!(c, '.' | ',' | ';' | ':' | ')' | ']')
}

/// Grouping characters people put between digits.
fn is_phone_punctuation(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t'
            | '-'
            | '('
            | ')'
            | '['
            | ']'
            | '.'
            | '/'
            // No-break and other fixed-width spaces pasted from documents.
            | '\u{a0}'
            | '\u{2000}'..='\u{200a}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
            // Hyphens and dashes that word processors substitute for '-'.
            | '\u{2010}'..='\u{2015}'
            | '\u{2212}'
            | '\u{fe58}'
            | '\u{fe63}'
            | '\u{ff0d}'
    )
}

/// Characters that take no room but come along when a number is copied from a web
/// page, a chat or a word processor.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        // Soft hyphen: a hidden line-break hint.
        '\u{ad}'
            // Zero-width space, non-joiner and joiner; left-to-right and right-to-left marks.
            | '\u{200b}'..='\u{200f}'
            // Bidirectional embeddings, overrides and isolates wrapped around numbers in
            // right-to-left text.
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            // Word joiner and the byte-order mark, used as a zero-width no-break space.
            | '\u{2060}'
            | '\u{feff}'
    )
}

/// The digits after the region's own international prefix (`00`, `011`, `00` and a
/// carrier code…), when they start with it.
fn after_region_prefix(digits: &str, region: Region) -> Option<&str> {
    let idd = DATABASE.by_id(region.as_str())?.international_prefix()?;
    let found = idd.find(digits).filter(|found| found.start() == 0)?;
    after_prefix(digits, found.end())
}

/// The digits after a leading "00": the international prefix almost everywhere, and a
/// form's region says where the company is, not where the prospect dials from.
fn after_zero_zero(digits: &str) -> Option<&str> {
    digits
        .starts_with("00")
        .then(|| after_prefix(digits, "00".len()))
        .flatten()
}

/// The digits after an international prefix `prefix_len` digits long. Like
/// libphonenumber, a prefix followed by 0 is not one: no country code starts with 0,
/// and national numbers may.
fn after_prefix(digits: &str, prefix_len: usize) -> Option<&str> {
    let rest = digits.get(prefix_len..)?;
    (!rest.is_empty() && !rest.starts_with('0')).then_some(rest)
}

/// What may introduce an extension in a typed number: the shared words, and `#`
/// (which in running text means too many other things).
fn extension_markers() -> impl Iterator<Item = &'static str> {
    ingest::fields::PHONE_EXTENSION_WORDS
        .iter()
        .copied()
        .chain(["#"])
}

/// Splits a trailing extension ("ext. 204", "wew. 112", "x204", "#12") off a
/// typed number; returns the number part and the extension digits.
///
/// Without a recognised marker before the trailing digits, `raw` is returned
/// whole.
pub fn split_extension(raw: &str) -> (&str, Option<String>) {
    let trimmed = raw.trim_end_matches(|c: char| c.is_whitespace() || is_closing(c));
    let head = trimmed.trim_end_matches(|c: char| c.is_ascii_digit());
    let extension = &trimmed[head.len()..];
    if extension.is_empty() {
        return (raw, None);
    }
    let mut head = head.trim_end();
    for separator in [':', '.'] {
        if let Some(stripped) = head.strip_suffix(separator) {
            head = stripped.trim_end();
        }
    }
    for marker in extension_markers() {
        let Some(before) = strip_marker(head, marker) else {
            continue;
        };
        let Some(previous) = before.chars().next_back() else {
            continue;
        };
        let separated = if marker == "x" {
            // A bare "x" is only an extension marker right after the number,
            // not at the end of a word such as "Box".
            previous.is_ascii_digit() || previous.is_whitespace()
        } else {
            !previous.is_alphabetic() && !is_combining_mark(previous)
        };
        if separated {
            let number = before.trim_end_matches(|c: char| {
                c.is_whitespace() || matches!(c, ',' | ';' | '(' | '[')
            });
            return (number, Some(extension.to_owned()));
        }
    }
    (raw, None)
}

/// `text` without `marker` at its end, comparing letters without case or
/// accents; `None` if `text` does not end with the marker.
fn strip_marker<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let mut rest = text;
    for expected in marker.chars().rev() {
        if expected == ' ' {
            let shorter = rest.trim_end();
            if shorter.len() == rest.len() {
                return None;
            }
            rest = shorter;
            continue;
        }
        // Decomposed input ("ma\u{301}y") carries accents as separate marks.
        rest = rest.trim_end_matches(is_combining_mark);
        let found = rest.chars().next_back()?;
        let base = found.nfd().next().unwrap_or(found);
        if !base.to_lowercase().eq([expected]) {
            return None;
        }
        rest = &rest[..rest.len() - found.len_utf8()];
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn region(code: &str) -> Region {
        Region::parse(code).expect("test region is known")
    }

    fn e164(raw: &str, code: &str) -> Result<String, InvalidPhone> {
        parse_phone(raw, Some(region(code))).map(|parsed| parsed.number.as_str().to_owned())
    }

    #[test]
    fn documented_examples_give_the_expected_e164() {
        let cases: &[(&str, &str, &str)] = &[
            ("+39 02 8736 1234", "IT", "+390287361234"),
            ("347 123 4567", "IT", "+393471234567"),
            ("0039 06 123456", "IT", "+3906123456"),
            ("+48 601 234 567", "PL", "+48601234567"),
            ("(22) 628 12 34", "PL", "+48226281234"),
            ("090 123 4567", "VN", "+84901234567"),
            ("+84 28 3823 4567", "VN", "+842838234567"),
            ("(028) 3910 2233", "VN", "+842839102233"),
            ("+1 212 555 0147", "US", "+12125550147"),
            ("(212) 555-0183", "US", "+12125550183"),
            ("+44 20 7946 0958", "US", "+442079460958"),
            ("0048 22 123 45 67", "PL", "+48221234567"),
            ("0977 654 321", "VN", "+84977654321"),
            ("333 12 34 567", "IT", "+393331234567"),
        ];
        assert_cases(cases);
    }

    #[test]
    fn extension_marker_ext_is_split_before_parsing() {
        let parsed = parse_phone("(415) 555-0132 ext. 204", Some(region("US"))).unwrap();
        assert_eq!(parsed.number.as_str(), "+14155550132");
        assert_eq!(parsed.extension.as_deref(), Some("204"));
    }

    #[test]
    fn extension_marker_wew_is_split_before_parsing() {
        let parsed = parse_phone("+48 22 583 40 17 wew. 112", Some(region("PL"))).unwrap();
        assert_eq!(parsed.number.as_str(), "+48225834017");
        assert_eq!(parsed.extension.as_deref(), Some("112"));
    }

    #[test]
    fn extension_markers_in_every_supported_spelling_are_split() {
        let cases: &[(&str, &str, &str)] = &[
            ("(415) 555-0132 ext. 204", "(415) 555-0132", "204"),
            ("(415) 555-0132 EXT 204", "(415) 555-0132", "204"),
            ("(415) 555-0132 Ext: 204", "(415) 555-0132", "204"),
            ("(415) 555-0132 extension 204", "(415) 555-0132", "204"),
            ("(415) 555-0132, ext. 204", "(415) 555-0132", "204"),
            ("555-0132x204", "555-0132", "204"),
            ("555-0132 x 204", "555-0132", "204"),
            ("555-0132 X204", "555-0132", "204"),
            ("555-0132ext204", "555-0132", "204"),
            ("02 1234567 interno 12", "02 1234567", "12"),
            ("02 1234567 int. 12", "02 1234567", "12"),
            ("02 1234567 int 12", "02 1234567", "12"),
            ("+48 22 583 40 17 wew. 112", "+48 22 583 40 17", "112"),
            ("+48 22 583 40 17 wew 112", "+48 22 583 40 17", "112"),
            ("+48 22 583 40 17 wewn. 112", "+48 22 583 40 17", "112"),
            ("+48 22 583 40 17 WEWN 112", "+48 22 583 40 17", "112"),
            ("028 3823 4567 máy lẻ 15", "028 3823 4567", "15"),
            (
                "028 3823 4567 ma\u{301}y le\u{309} 15",
                "028 3823 4567",
                "15",
            ),
            ("028 3823 4567 MÁY LẺ 15", "028 3823 4567", "15"),
            ("028 3823 4567 may le 15", "028 3823 4567", "15"),
            ("028 3823 4567 máy lẻ: 15 ", "028 3823 4567", "15"),
            ("020 7946 0958 #12", "020 7946 0958", "12"),
            ("020 7946 0958#12", "020 7946 0958", "12"),
            // Closing punctuation after the extension, or around it.
            ("02 8736 1234 (int. 12)", "02 8736 1234", "12"),
            ("02 8736 1234 int. 12.", "02 8736 1234", "12"),
            ("+48 22 583 40 17 [wew. 112];", "+48 22 583 40 17", "112"),
        ];
        for (raw, number, extension) in cases {
            assert_eq!(
                split_extension(raw),
                (*number, Some((*extension).to_owned())),
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn text_without_a_marker_is_not_split() {
        let cases = [
            "(415) 555-0132",
            "555 0132 204",
            "Box 12",
            "next 12",
            "ext 12",
            "x204",
            "020 7946 0958 #",
            "020 7946 0958 ext.",
            "",
        ];
        for raw in cases {
            assert_eq!(split_extension(raw), (raw, None), "input {raw:?}");
        }
    }

    #[test]
    fn extensions_are_kept_next_to_the_parsed_number() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("415-555-0132x204", "US", "+14155550132", "204"),
            ("02 1234567 interno 12", "IT", "+39021234567", "12"),
            ("028 3823 4567 máy lẻ 15", "VN", "+842838234567", "15"),
            ("020 7946 0958 ext 7", "GB", "+442079460958", "7"),
        ];
        for (raw, code, number, extension) in cases {
            let parsed = parse_phone(raw, Some(region(code)));
            assert_eq!(
                parsed,
                Ok(ParsedPhone {
                    number: PhoneE164((*number).to_owned()),
                    extension: Some((*extension).to_owned()),
                }),
                "input {raw:?} in {code}"
            );
        }
    }

    /// Every raw number parses, with its region as default, to its expected E.164 form.
    fn assert_cases(cases: &[(&str, &str, &str)]) {
        for (raw, code, expected) in cases {
            assert_eq!(
                e164(raw, code).as_deref(),
                Ok(*expected),
                "input {raw:?} in {code}"
            );
        }
    }

    /// Every raw number parses, with `region` as default, to its expected E.164 form.
    fn assert_table(region: &str, cases: &[(&str, &str)]) {
        for (raw, expected) in cases {
            assert_eq!(e164(raw, region).as_deref(), Ok(*expected), "input {raw:?}");
        }
    }

    #[test]
    fn italian_numbers_keep_their_leading_zero_and_accept_both_prefixes() {
        let cases: &[(&str, &str)] = &[
            ("02 8736 1234", "+390287361234"),
            ("+39 347 123 4567", "+393471234567"),
            ("0039 347 1234567", "+393471234567"),
            ("+39 (0)2 8736 1234", "+390287361234"),
            ("06/123456", "+3906123456"),
            ("347.123.4567", "+393471234567"),
        ];
        assert_table("IT", cases);
    }

    #[test]
    fn polish_numbers_parse_in_every_common_layout() {
        let cases: &[(&str, &str)] = &[
            ("601 234 567", "+48601234567"),
            ("601-234-567", "+48601234567"),
            ("+48 (22) 628 12 34", "+48226281234"),
            ("(+48) 601 234 567", "+48601234567"),
            ("22 628 12 34", "+48226281234"),
            ("48 601 234 567", "+48601234567"),
        ];
        assert_table("PL", cases);
    }

    #[test]
    fn vietnamese_numbers_drop_the_trunk_zero() {
        let cases: &[(&str, &str)] = &[
            ("0901234567", "+84901234567"),
            ("+84 90 123 4567", "+84901234567"),
            ("0084 90 123 4567", "+84901234567"),
            ("024 3825 1234", "+842438251234"),
            ("+84 (0) 90 123 4567", "+84901234567"),
        ];
        assert_table("VN", cases);
    }

    #[test]
    fn us_numbers_accept_the_trunk_one_and_the_011_prefix() {
        let cases: &[(&str, &str)] = &[
            ("1 (212) 555-0183", "+12125550183"),
            ("1-212-555-0183", "+12125550183"),
            ("212.555.0183", "+12125550183"),
            ("212\u{2011}555\u{2011}0183", "+12125550183"),
            ("212\u{a0}555\u{a0}0183", "+12125550183"),
            ("011 44 20 7946 0958", "+442079460958"),
            ("011 48 22 628 12 34", "+48226281234"),
        ];
        assert_table("US", cases);
    }

    #[test]
    fn british_numbers_drop_the_trunk_zero_even_when_written_in_brackets() {
        let cases: &[(&str, &str)] = &[
            ("020 7946 0958", "+442079460958"),
            ("07911 123456", "+447911123456"),
            ("+44 (0)20 7946 0958", "+442079460958"),
            ("0044 113 496 0000", "+441134960000"),
            ("(0113) 496 0000", "+441134960000"),
        ];
        assert_table("GB", cases);
    }

    #[test]
    fn an_explicit_country_code_wins_over_the_default_region() {
        let cases: &[(&str, &str, &str)] = &[
            ("+44 20 7946 0958", "US", "+442079460958"),
            // Starts with the US trunk digit 1; must not be stripped as such.
            ("+44 113 496 0000", "US", "+441134960000"),
            ("0044 113 496 0000", "US", "+441134960000"),
            ("0048 22 123 45 67", "US", "+48221234567"),
            ("0039 06 123456", "US", "+3906123456"),
            ("+1 212 555 0147", "PL", "+12125550147"),
            ("+84 90 123 4567", "IT", "+84901234567"),
        ];
        assert_cases(cases);
    }

    #[test]
    fn numbers_with_a_country_code_need_no_default_region() {
        let parsed = parse_phone("+48 601 234 567", None).unwrap();
        assert_eq!(parsed.number.as_str(), "+48601234567");
        let parsed = parse_phone("0039 347 123 4567", None).unwrap();
        assert_eq!(parsed.number.as_str(), "+393471234567");
        assert_eq!(
            parse_phone("601 234 567", None),
            Err(InvalidPhone::NoCountryCode)
        );
    }

    #[test]
    fn invalid_numbers_are_rejected_with_the_reason() {
        let cases: &[(&str, &str, InvalidPhone)] = &[
            ("brak", "PL", InvalidPhone::ContainsLetters),
            ("none", "US", InvalidPhone::ContainsLetters),
            ("n/a", "IT", InvalidPhone::ContainsLetters),
            ("1-800-FLOWERS", "US", InvalidPhone::ContainsLetters),
            ("601 234 567 (praca)", "PL", InvalidPhone::ContainsLetters),
            (
                "brak 601",
                "PL",
                InvalidPhone::InvalidForRegion(region("PL")),
            ),
            ("", "IT", InvalidPhone::Empty),
            ("   ", "IT", InvalidPhone::Empty),
            ("12", "IT", InvalidPhone::TooFewDigits(2)),
            ("- / -", "IT", InvalidPhone::TooFewDigits(0)),
            (
                "601 234 567",
                "IT",
                InvalidPhone::InvalidForRegion(region("IT")),
            ),
            (
                "100 456 789",
                "PL",
                InvalidPhone::InvalidForRegion(region("PL")),
            ),
            (
                "555 0132",
                "US",
                InvalidPhone::InvalidForRegion(region("US")),
            ),
            (
                "+48 100 456 789",
                "US",
                InvalidPhone::InvalidForCountryCode(48),
            ),
            ("+999 123 456 789", "US", InvalidPhone::UnknownCountryCode),
            (
                "601 234 567, 602 345 678",
                "PL",
                InvalidPhone::UnexpectedCharacter(','),
            ),
            ("601 234 567 +1", "PL", InvalidPhone::MisplacedPlus),
            ("++48 601 234 567", "PL", InvalidPhone::MisplacedPlus),
            ("601_234_567", "PL", InvalidPhone::UnexpectedCharacter('_')),
            (
                "1234567890123456789012",
                "PL",
                InvalidPhone::TooManyDigits(22),
            ),
        ];
        for (raw, code, expected) in cases {
            assert_eq!(
                parse_phone(raw, Some(region(code))),
                Err(expected.clone()),
                "input {raw:?} in {code}"
            );
        }
    }

    #[test]
    fn a_number_invalid_for_its_region_is_not_guessed_elsewhere() {
        // Valid in Poland, but the form is Italian and no country code was typed.
        assert_eq!(
            parse_phone("601 234 567", Some(region("IT"))),
            Err(InvalidPhone::InvalidForRegion(region("IT")))
        );
        // Valid in the US, but typed with Poland's code.
        assert_eq!(
            parse_phone("+48 212 555 0147", Some(region("US"))),
            Err(InvalidPhone::InvalidForCountryCode(48))
        );
    }

    #[test]
    fn a_doubled_trunk_prefix_is_stripped_once_and_what_remains_must_be_a_number() {
        // One Russian trunk 8 is dropped; "88569292109" is no Russian number.
        assert_eq!(
            parse_phone("+7 888 569 29 21 09", None),
            Err(InvalidPhone::InvalidForCountryCode(7))
        );
        // "(0)" then the German trunk 0 again: only one is a trunk prefix, and
        // 0170… is no German number.
        assert_eq!(
            e164("+49 (0)0170-309-55429", "DE"),
            Err(InvalidPhone::InvalidForCountryCode(49))
        );
    }

    #[test]
    fn national_numbers_that_begin_with_the_country_code_stay_national() {
        let cases: &[(&str, &str, &str)] = &[
            // Valid as typed: the leading 39 or 48 belongs to the number.
            ("390 234 5678", "IT", "+393902345678"),
            ("393 123 4567", "IT", "+393931234567"),
            ("399 876 5432", "IT", "+393998765432"),
            ("48 362 12 34", "PL", "+48483621234"),
            ("(48) 362-12-34", "PL", "+48483621234"),
            // Not valid as typed but valid without it: the country code was typed
            // without its "+".
            ("39 02 8736 1234", "IT", "+390287361234"),
            ("48 601 234 567", "PL", "+48601234567"),
            ("84 90 123 4567", "VN", "+84901234567"),
            ("44 20 7946 0958", "GB", "+442079460958"),
            ("33 6 12 34 56 78", "FR", "+33612345678"),
            ("34 612 345 678", "ES", "+34612345678"),
            ("1 212 555 0183", "US", "+12125550183"),
        ];
        assert_cases(cases);
    }

    #[test]
    fn a_number_whose_first_digits_fit_a_pattern_but_the_rest_does_not_is_rejected() {
        // Milan landlines (02…) have 6 to 11 digits; these 12 begin like one.
        assert_eq!(
            e164("0244 4071 6184", "IT"),
            Err(InvalidPhone::InvalidForRegion(region("IT")))
        );
        assert_eq!(
            e164("+39 0244 4071 6184", "PL"),
            Err(InvalidPhone::InvalidForCountryCode(39))
        );
    }

    #[test]
    fn zero_zero_is_international_only_where_the_digits_are_no_national_number() {
        let cases: &[(&str, &str, &str)] = &[
            // The US prefix is 011; 00 is understood as well.
            ("0044 20 7946 0958", "US", "+442079460958"),
            ("011 44 20 7946 0958", "US", "+442079460958"),
            // Japanese numbers may start with 00: read nationally first.
            ("0066 3396 0707", "JP", "+81006633960707"),
            // A region's prefix with a carrier code is its international prefix.
            ("001 44 20 7946 0958", "KR", "+442079460958"),
            ("00700 44 20 7946 0958", "KR", "+442079460958"),
            ("0011 44 20 7946 0958", "AU", "+442079460958"),
        ];
        assert_cases(cases);
        // No country code starts with 0: "000…" is not international.
        assert_eq!(
            e164("000 39 06 123456", "IT"),
            Err(InvalidPhone::InvalidForRegion(region("IT")))
        );
        assert_eq!(
            parse_phone("000 39 06 123456", None),
            Err(InvalidPhone::NoCountryCode)
        );
    }

    #[test]
    fn a_label_before_the_number_is_no_part_of_it() {
        let cases: &[(&str, &str, &str)] = &[
            ("tel. 601 234 567", "PL", "+48601234567"),
            ("Tel: 347 123 4567", "IT", "+393471234567"),
            ("tel:+39-347-123-4567", "US", "+393471234567"),
            ("kom. 601 234 567", "PL", "+48601234567"),
            ("SĐT: 0903 123 456", "VN", "+84903123456"),
            ("cell +1 (415) 555-0132", "IT", "+14155550132"),
        ];
        assert_cases(cases);
        let parsed = parse_phone("Tel. +48 22 583 40 17 wew. 112", None).unwrap();
        assert_eq!(
            (parsed.number.as_str(), parsed.extension.as_deref()),
            ("+48225834017", Some("112"))
        );
    }

    #[test]
    fn punctuation_closing_the_number_is_no_part_of_it() {
        let cases: &[(&str, &str, &str)] = &[
            ("+48 601 234 567,", "PL", "+48601234567"),
            ("347 123 4567.", "IT", "+393471234567"),
            ("+48 601 234 567;", "PL", "+48601234567"),
            ("[+48] 601 234 567", "IT", "+48601234567"),
            ("+39 (02) 8736-1234 )", "IT", "+390287361234"),
        ];
        assert_cases(cases);
        let parsed = parse_phone("+39 02 8736 1234 (int. 12)", None).unwrap();
        assert_eq!(
            (parsed.number.as_str(), parsed.extension.as_deref()),
            ("+390287361234", Some("12"))
        );
    }

    #[test]
    fn a_full_width_plus_and_full_width_digits_work_like_ascii_ones() {
        let cases: &[(&str, &str, &str)] = &[
            ("\u{ff0b}39 02 8736 1234", "PL", "+390287361234"),
            ("\u{ff0b}84 90 123 4567", "US", "+84901234567"),
            (
                "\u{ff0b}\u{ff14}\u{ff18} \u{ff16}\u{ff10}\u{ff11} \u{ff12}\u{ff13}\u{ff14} \u{ff15}\u{ff16}\u{ff17}",
                "IT",
                "+48601234567",
            ),
            ("\u{ff10}\u{ff12} 8736 1234", "IT", "+390287361234"),
            (
                "\u{0663}\u{0664}\u{0667} \u{0661}\u{0662}\u{0663} \u{0664}\u{0665}\u{0666}\u{0667}",
                "IT",
                "+393471234567",
            ),
            (
                "+\u{06f1} \u{06f2}\u{06f1}\u{06f2} 555 0199",
                "PL",
                "+12125550199",
            ),
        ];
        assert_cases(cases);
        for raw in ["\u{ff0b}+39 02 8736 1234", "02 8736 \u{ff0b}1234"] {
            assert_eq!(e164(raw, "IT"), Err(InvalidPhone::MisplacedPlus), "{raw:?}");
        }
    }

    #[test]
    fn invisible_characters_pasted_with_a_number_are_ignored() {
        let invisible = [
            ('\u{ad}', "soft hyphen"),
            ('\u{200b}', "zero-width space"),
            ('\u{200c}', "zero-width non-joiner"),
            ('\u{200d}', "zero-width joiner"),
            ('\u{200e}', "left-to-right mark"),
            ('\u{200f}', "right-to-left mark"),
            ('\u{202a}', "left-to-right embedding"),
            ('\u{202c}', "pop directional formatting"),
            ('\u{2066}', "left-to-right isolate"),
            ('\u{2069}', "pop directional isolate"),
            ('\u{2060}', "word joiner"),
            ('\u{feff}', "zero-width no-break space"),
            ('\u{a0}', "no-break space"),
            ('\u{202f}', "narrow no-break space"),
        ];
        for (c, name) in invisible {
            let raw = format!("{c}+39{c}02{c}8736{c}1234{c}");
            assert_eq!(
                e164(&raw, "PL").as_deref(),
                Ok("+390287361234"),
                "{name} in {raw:?}"
            );
            let raw = format!("06{c}{c}123{c}456");
            assert_eq!(e164(&raw, "IT").as_deref(), Ok("+3906123456"), "{name}");
        }
        assert_eq!(
            parse_phone("\u{200b}\u{ad} \u{feff}", Some(region("IT"))),
            Err(InvalidPhone::Empty)
        );
    }

    #[test]
    fn error_messages_say_why() {
        let message = |raw: &str, code: Option<&str>| {
            parse_phone(raw, code.map(region)).unwrap_err().to_string()
        };
        assert_eq!(
            message("brak", Some("PL")),
            "not a phone number: contains letters"
        );
        assert_eq!(
            message("100 456 789", Some("PL")),
            "not a valid number for region PL"
        );
        assert_eq!(
            message("601 234 567", None),
            "no country code and no default region"
        );
        assert_eq!(
            message("+48 123", None),
            "not a valid number for country code +48"
        );
    }

    #[test]
    fn regions_parse_case_insensitively_and_print_upper_case() {
        for (code, expected) in [
            ("IT", "IT"),
            ("pl", "PL"),
            ("Vn", "VN"),
            ("US", "US"),
            ("gb", "GB"),
        ] {
            let parsed = Region::parse(code).unwrap();
            assert_eq!(parsed.as_str(), expected);
            assert_eq!(parsed.to_string(), expected);
            assert_eq!(code.parse::<Region>(), Ok(parsed));
        }
        assert_eq!(
            Region::parse("ITA"),
            Err(InvalidRegion::NotAlpha2("ITA".into()))
        );
        assert_eq!(
            Region::parse("I1"),
            Err(InvalidRegion::NotAlpha2("I1".into()))
        );
        assert_eq!(
            Region::parse(""),
            Err(InvalidRegion::NotAlpha2(String::new()))
        );
        assert_eq!(
            Region::parse("ÍT"),
            Err(InvalidRegion::NotAlpha2("ÍT".into()))
        );
        assert_eq!(
            Region::parse("QQ"),
            Err(InvalidRegion::Unknown("QQ".into()))
        );
        assert_eq!(
            Region::parse("uk"),
            Err(InvalidRegion::Unknown("UK".into()))
        );
    }

    #[test]
    fn phone_types_serialise_as_plain_strings() {
        let parsed = parse_phone("(415) 555-0132 ext. 204", Some(region("US"))).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed.number).unwrap(),
            "\"+14155550132\""
        );
        let back: PhoneE164 = serde_json::from_str("\"+14155550132\"").unwrap();
        assert_eq!(back, parsed.number);
        assert_eq!(serde_json::to_string(&region("pl")).unwrap(), "\"PL\"");
        let back: Region = serde_json::from_str("\"vn\"").unwrap();
        assert_eq!(back, region("VN"));
        let json = serde_json::to_value(&parsed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"number": "+14155550132", "extension": "204"})
        );
    }

    #[test]
    fn e164_deserialisation_rejects_anything_but_plus_and_digits() {
        for bad in [
            "14155550132",
            "+1 415 555 0132",
            "+123456",
            "+1234567890123456",
            "+0123456789",
            "",
            "+",
        ] {
            let json = serde_json::to_string(bad).unwrap();
            assert!(
                serde_json::from_str::<PhoneE164>(&json).is_err(),
                "input {bad:?}"
            );
        }
        for good in ["+6834002", "+12345678", "+123456789012345"] {
            let json = serde_json::to_string(good).unwrap();
            assert!(
                serde_json::from_str::<PhoneE164>(&json).is_ok(),
                "input {good:?}"
            );
        }
    }

    #[test]
    fn warm_up_can_be_called_repeatedly() {
        warm_up();
        warm_up();
        assert_eq!(e164("347 123 4567", "IT").as_deref(), Ok("+393471234567"));
    }

    const REGIONS: [&str; 8] = ["IT", "PL", "VN", "US", "GB", "DE", "FR", "ES"];

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(raw in any::<String>(), index in 0..REGIONS.len() + 1) {
            let default = REGIONS.get(index).map(|code| region(code));
            let _ = parse_phone(&raw, default);
            let _ = split_extension(&raw);
        }

        #[test]
        fn phone_shaped_strings_never_panic(
            raw in "[+]?[0-9 ()./\u{2013}-]{0,24}( ?(ext|x|wew|#|máy lẻ)[.:]? ?[0-9]{1,4})?",
            index in 0..REGIONS.len() + 1,
        ) {
            let default = REGIONS.get(index).map(|code| region(code));
            let _ = parse_phone(&raw, default);
        }

        #[test]
        fn parsing_an_e164_result_again_gives_the_same_number(
            prefix in "(\\+|00|0|1|)",
            digits in "[1-9][0-9]{5,11}",
            index in 0..REGIONS.len(),
            again in 0..REGIONS.len() + 1,
        ) {
            let raw = format!("{prefix}{digits}");
            if let Ok(once) = parse_phone(&raw, Some(region(REGIONS[index]))) {
                let default = REGIONS.get(again).map(|code| region(code));
                let twice = parse_phone(once.number.as_str(), default);
                prop_assert_eq!(twice.map(|p| p.number), Ok(once.number));
            }
        }
    }
}
