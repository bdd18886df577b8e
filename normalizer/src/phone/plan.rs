//! libphonenumber's reading of dialled digits, applied to the numbering plans the
//! `phonenumber` crate ships.
//!
//! The crate's own parser and validator differ from libphonenumber where it matters for a
//! lead's identity: they read a region's country code into national numbers that are
//! valid as typed (IT `390 234 5678` became +39 02345678, a different line), strip trunk
//! prefixes that belong to the number, and call a number valid when only its first
//! digits fit a pattern. So only the crate's metadata is used; the rules here follow
//! libphonenumber's `PhoneNumberUtil` function by function (named in each doc), and
//! `tests/phone_oracle.rs` compares the results with libphonenumber itself.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Captures, Regex, RegexBuilder};

/// Shortest national significant number libphonenumber reads (`MIN_LENGTH_FOR_NSN`).
const MIN_NSN_DIGITS: usize = 2;
/// Longest national significant number libphonenumber reads (`MAX_LENGTH_FOR_NSN`).
const MAX_NSN_DIGITS: usize = 17;
/// Longest country calling code (`MAX_LENGTH_COUNTRY_CODE`).
const MAX_CODE_DIGITS: usize = 3;

/// A number split into its country calling code and national significant number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Parts {
    /// The country calling code, e.g. 39.
    pub code: u16,
    /// The national significant number, leading zeros kept (Italy's `02…`).
    pub national: String,
}

impl Parts {
    /// The number in E.164 form: `+`, the country code, the national number.
    pub fn e164(&self) -> String {
        format!("+{}{}", self.code, self.national)
    }

    /// Whether the number exists in its country's plan (`isValidNumber`).
    pub fn is_valid(&self) -> bool {
        // `getRegionCodeForNumber`: with several regions behind one code, the first whose
        // leading digits or number patterns claim the number decides.
        let region = match regions_of(self.code).as_slice() {
            [only] => Some(plan(only)),
            several => several
                .iter()
                .map(|meta| plan(meta))
                .find(|plan| plan.claims(&self.national)),
        };
        region.is_some_and(|plan| plan.has_type(&self.national))
    }
}

/// Why digits typed after an international prefix are not a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NotInternational {
    /// No known country code starts the digits.
    UnknownCountryCode,
    /// The country code is followed by too few or too many digits.
    Length(u16),
}

/// Reads digits typed after `+` or an international prefix (`maybeExtractCountryCode`,
/// then `parse`'s national-prefix stripping).
pub(super) fn split_international(digits: &str) -> Result<Parts, NotInternational> {
    if digits.len() <= MIN_NSN_DIGITS {
        return Err(NotInternational::UnknownCountryCode);
    }
    let (code, rest) = extract_country_code(digits).ok_or(NotInternational::UnknownCountryCode)?;
    let plan = main_plan(code).ok_or(NotInternational::UnknownCountryCode)?;
    finish(&plan, rest.to_owned()).ok_or(NotInternational::Length(code))
}

/// Reads digits typed without an international prefix, in `region`'s plan
/// (`maybeExtractCountryCode` from the default region, then `parse`'s stripping).
///
/// Digits starting with the region's own country code are national unless they do not
/// fit the plan as typed but do without the code, or are too long for it: in Italy
/// `390 234 5678` stays +39 390 234 5678, while in Poland `48 601 234 567` is
/// +48 601 234 567.
pub(super) fn split_national(digits: &str, region: &str) -> Option<Parts> {
    let home = DATABASE.by_id(region).map(plan)?;
    let code = home.meta.country_code();
    if let Some(rest) = digits.strip_prefix(&code.to_string()) {
        let rest = home
            .strip_national_prefix(rest)
            .unwrap_or_else(|| rest.to_owned());
        let better_without_code = !home.matches_general(digits) && home.matches_general(&rest);
        if better_without_code || home.length(digits) == Length::TooLong {
            return main_plan(code).and_then(|main| finish(&main, rest));
        }
    }
    finish(&home, digits.to_owned())
}

/// `parse`'s last steps: strips a national prefix when what remains is long enough to
/// be a number of the plan, and checks the length.
fn finish(plan: &Plan, national: String) -> Option<Parts> {
    if national.len() < MIN_NSN_DIGITS {
        return None;
    }
    let national = match plan.strip_national_prefix(&national) {
        Some(stripped) if plan.length(&stripped).keeps_stripping() => stripped,
        _ => national,
    };
    (MIN_NSN_DIGITS..=MAX_NSN_DIGITS)
        .contains(&national.len())
        .then(|| Parts {
            code: plan.meta.country_code(),
            national,
        })
}

/// The country code the digits start with, and the rest (`extractCountryCode`).
fn extract_country_code(digits: &str) -> Option<(u16, &str)> {
    if digits.starts_with('0') {
        return None;
    }
    (1..=MAX_CODE_DIGITS.min(digits.len())).find_map(|len| {
        let code = digits[..len].parse().ok()?;
        DATABASE
            .by_code(&code)
            .is_some()
            .then(|| (code, &digits[len..]))
    })
}

/// Every plan behind a country code, the main country first and the others in order of
/// their region codes, as libphonenumber lists them.
fn regions_of(code: u16) -> Vec<&'static Metadata> {
    let Some(mut metas) = DATABASE.by_code(&code) else {
        return Vec::new();
    };
    metas.sort_by(|a, b| {
        (!a.is_main_country_for_code(), a.id()).cmp(&(!b.is_main_country_for_code(), b.id()))
    });
    metas
}

/// The plan libphonenumber reads a country code's numbers with: its main country's.
fn main_plan(code: u16) -> Option<Arc<Plan>> {
    regions_of(code).first().map(|meta| plan(meta))
}

/// How a number's length compares with the plan's (`ValidationResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Length {
    Possible,
    LocalOnly,
    TooShort,
    /// Between the shortest and the longest, but not a length the plan has.
    Impossible,
    TooLong,
}

impl Length {
    /// Whether `parse` keeps a national number with this length after stripping a
    /// prefix from it: a shorter remainder may have been a short number typed whole.
    fn keeps_stripping(self) -> bool {
        matches!(self, Length::Possible | Length::TooLong)
    }
}

/// A number pattern with the lengths numbers of its kind have.
struct Kind {
    /// Matches whole numbers only; `None` if the pattern does not compile.
    pattern: Option<Regex>,
    lengths: Vec<u16>,
}

impl Kind {
    /// `isNumberMatchingDesc`: the length is one of the kind's, the pattern matches.
    fn matches(&self, number: &str) -> bool {
        let length_fits = self.lengths.is_empty() || self.lengths.contains(&length_of(number));
        length_fits && self.pattern.as_ref().is_some_and(|re| re.is_match(number))
    }
}

/// One region's plan, compiled for libphonenumber's kinds of matching.
struct Plan {
    meta: &'static Metadata,
    /// The general pattern; its lengths are the union of the kinds' lengths, which
    /// libphonenumber computes when it builds its metadata and the crate leaves empty.
    general: Kind,
    /// Lengths of numbers that can only be dialled locally.
    local_lengths: Vec<u16>,
    /// The kinds that make a number valid (`getNumberTypeHelper`).
    kinds: Vec<Kind>,
    /// National prefix and carrier code, matched at the start.
    national_prefix: Option<Regex>,
    /// Leading digits that claim a number for this region, matched at the start.
    leading_digits: Option<Regex>,
}

impl Plan {
    fn compile(meta: &'static Metadata) -> Plan {
        let descriptors = meta.descriptors();
        let typed: Vec<&Descriptor> = [
            descriptors.premium_rate(),
            descriptors.toll_free(),
            descriptors.shared_cost(),
            descriptors.voip(),
            descriptors.personal_number(),
            descriptors.pager(),
            descriptors.uan(),
            descriptors.voicemail(),
            descriptors.fixed_line(),
            descriptors.mobile(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut lengths: Vec<u16> = typed
            .iter()
            .flat_map(|d| d.possible_length().iter().copied())
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        let mut local_lengths: Vec<u16> = typed
            .iter()
            .flat_map(|d| d.possible_local_length().iter().copied())
            .filter(|length| !lengths.contains(length))
            .collect();
        local_lengths.sort_unstable();
        local_lengths.dedup();
        let kind = |d: &Descriptor| Kind {
            pattern: whole(d.national_number().as_str()),
            lengths: d.possible_length().to_vec(),
        };
        // Without its own parsing pattern, the national prefix itself is stripped.
        let national_prefix = match (meta.national_prefix_for_parsing(), meta.national_prefix()) {
            (Some(parsing), _) => at_start(parsing.as_str()),
            (None, Some(prefix)) => at_start(&regex::escape(prefix)),
            (None, None) => None,
        };
        Plan {
            meta,
            general: Kind {
                pattern: whole(descriptors.general().national_number().as_str()),
                lengths,
            },
            local_lengths,
            kinds: typed.into_iter().map(kind).collect(),
            national_prefix,
            leading_digits: meta.leading_digits().and_then(|re| at_start(re.as_str())),
        }
    }

    /// `matchNationalNumber` with the general pattern: the pattern alone, any length.
    fn matches_general(&self, number: &str) -> bool {
        self.general
            .pattern
            .as_ref()
            .is_some_and(|re| re.is_match(number))
    }

    /// `getNumberTypeHelper(…) != UNKNOWN`.
    fn has_type(&self, number: &str) -> bool {
        self.general.matches(number) && self.kinds.iter().any(|kind| kind.matches(number))
    }

    /// Whether this region's leading digits, or else its patterns, claim the number.
    fn claims(&self, number: &str) -> bool {
        match &self.leading_digits {
            Some(leading) => leading.is_match(number),
            None => self.has_type(number),
        }
    }

    /// `testNumberLength` for numbers of any type.
    fn length(&self, number: &str) -> Length {
        let length = length_of(number);
        let possible = &self.general.lengths;
        let (Some(&shortest), Some(&longest)) = (possible.first(), possible.last()) else {
            return Length::Impossible;
        };
        if self.local_lengths.contains(&length) {
            Length::LocalOnly
        } else if length < shortest {
            Length::TooShort
        } else if length > longest {
            Length::TooLong
        } else if possible.contains(&length) {
            Length::Possible
        } else {
            Length::Impossible
        }
    }

    /// `maybeStripNationalPrefixAndCarrierCode`: the number without its national prefix
    /// (and carrier code), or `None` when there is none to strip or stripping would turn
    /// a number that fits the plan into one that does not.
    fn strip_national_prefix(&self, number: &str) -> Option<String> {
        if number.is_empty() {
            return None;
        }
        let captures = self.national_prefix.as_ref()?.captures(number)?;
        let whole_match = captures.get(0)?;
        let fits_as_typed = self.matches_general(number);
        let transformed = match self.meta.national_prefix_transform_rule() {
            // The rule applies only when the prefix pattern's last group took part.
            Some(rule) if !rule.is_empty() && last_group_matched(&captures) => {
                let mut transformed = expand(rule, &captures);
                transformed.push_str(&number[whole_match.end()..]);
                transformed
            }
            _ => number[whole_match.end()..].to_owned(),
        };
        (!fits_as_typed || self.matches_general(&transformed)).then_some(transformed)
    }
}

fn last_group_matched(captures: &Captures<'_>) -> bool {
    captures.len() > 1 && captures.get(captures.len() - 1).is_some()
}

/// A transform rule such as `9$1` with its group references replaced.
fn expand(rule: &str, captures: &Captures<'_>) -> String {
    let mut out = String::new();
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        // Rules refer to single-digit groups; "$15" is group 1, then a 5.
        match chars.next() {
            Some(digit @ '0'..='9') => {
                let group = digit.to_digit(10).map_or(0, |g| g as usize);
                out.push_str(captures.get(group).map_or("", |m| m.as_str()));
            }
            Some(other) => {
                out.push('$');
                out.push(other);
            }
            None => out.push('$'),
        }
    }
    out
}

fn length_of(number: &str) -> u16 {
    u16::try_from(number.len()).unwrap_or(u16::MAX)
}

/// Compiled plans, by the address of their metadata (which lives as long as the
/// program): compiling a region's patterns costs milliseconds, so it happens once, on
/// the region's first number.
static PLANS: LazyLock<RwLock<HashMap<usize, Arc<Plan>>>> = LazyLock::new(Default::default);

fn plan(meta: &'static Metadata) -> Arc<Plan> {
    let key = std::ptr::from_ref(meta) as usize;
    if let Some(plan) = PLANS.read().ok().and_then(|plans| plans.get(&key).cloned()) {
        return plan;
    }
    let compiled = Arc::new(Plan::compile(meta));
    match PLANS.write() {
        Ok(mut plans) => plans.entry(key).or_insert(compiled).clone(),
        // A panic elsewhere while holding the lock leaves the cache unusable, not the plan.
        Err(_) => compiled,
    }
}

/// The metadata's patterns allow whitespace for layout, as the crate reads them.
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .ok()
}

/// Matches only the whole text (libphonenumber's `matches()`).
fn whole(pattern: &str) -> Option<Regex> {
    compile(&format!("^(?:{pattern})$"))
}

/// Matches at the start of the text (libphonenumber's `lookingAt()`).
fn at_start(pattern: &str) -> Option<Regex> {
    compile(&format!("^(?:{pattern})"))
}
