//! Free-text fields (names, companies, messages) and the folded keys used to
//! match them.
//!
//! Cleaning is deliberately conservative: what the prospect typed is what the
//! sales team reads, so only Unicode composition and surrounding whitespace
//! change. Folding is the opposite: it throws away everything that differs
//! between two spellings of the same name, and its output is never shown.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// NFC-normalises and trims `raw`; `None` when nothing is left.
pub fn clean_text(raw: &str) -> Option<String> {
    let composed: String = raw.nfc().collect();
    let trimmed = composed.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == composed.len() {
        Some(composed)
    } else {
        Some(trimmed.to_owned())
    }
}

/// Builds a display name: a non-empty full name wins, else "first last".
pub fn join_name(full: Option<&str>, first: Option<&str>, last: Option<&str>) -> Option<String> {
    if let Some(full) = full.and_then(clean_text) {
        return Some(full);
    }
    match (first.and_then(clean_text), last.and_then(clean_text)) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(only), None) | (None, Some(only)) => Some(only),
        (None, None) => None,
    }
}

/// Folds `raw` to a lower-case, accent-free key for comparing names.
pub fn fold_key(raw: &str) -> String {
    // Lower-casing first turns letters such as 'İ' into their decomposable
    // lower-case forms; lower-casing again afterwards catches compatibility
    // decompositions that produce capitals (e.g. '㎒' -> "MHz").
    let lowered = raw.to_lowercase();
    let mut folded = String::with_capacity(lowered.len());
    for c in lowered.nfkd().filter(|&c| !is_combining_mark(c)) {
        match fold_letter(c) {
            Some(replacement) => folded.push_str(replacement),
            None => folded.extend(c.to_lowercase()),
        }
    }
    let mut key = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(word);
    }
    key
}

/// Latin letters that carry their "accent" in the base glyph, so no Unicode
/// decomposition strips it; people still type them without it.
fn fold_letter(c: char) -> Option<&'static str> {
    Some(match c {
        'ł' | 'Ł' => "l",
        'đ' | 'Đ' | 'ð' | 'Ð' => "d",
        'ø' | 'Ø' => "o",
        'æ' | 'Æ' => "ae",
        'œ' | 'Œ' => "oe",
        'ß' | 'ẞ' => "ss",
        'ı' => "i",
        'þ' | 'Þ' => "th",
        'ħ' | 'Ħ' => "h",
        'ŧ' | 'Ŧ' => "t",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clean_text_trims_and_composes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("  Anna Kowalska  ", Some("Anna Kowalska")),
            ("\u{3000}Nguyễn\u{a0}", Some("Nguyễn")),
            // "e" + combining acute composes to a single "é".
            ("Jose\u{301}", Some("José")),
            ("", None),
            ("   \t\r\n ", None),
            ("\u{2003}\u{a0}", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(clean_text(raw).as_deref(), *expected, "input {raw:?}");
        }
    }

    #[test]
    fn clean_text_keeps_inner_content_as_typed() {
        let message = "Hello,\r\n\r\nplease call <b>me</b>  back.\tThanks";
        assert_eq!(clean_text(message).as_deref(), Some(message));
        assert_eq!(clean_text("mcDONALD").as_deref(), Some("mcDONALD"));
        let long = "x".repeat(100_000);
        assert_eq!(clean_text(&long).map(|s| s.len()), Some(100_000));
    }

    #[test]
    fn join_name_prefers_full_name_then_first_and_last() {
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (
                Some("Anna Kowalska"),
                Some("X"),
                Some("Y"),
                Some("Anna Kowalska"),
            ),
            (
                Some("  "),
                Some("Anna"),
                Some("Kowalska"),
                Some("Anna Kowalska"),
            ),
            (
                None,
                Some(" Anna "),
                Some(" Kowalska "),
                Some("Anna Kowalska"),
            ),
            (None, Some("Anna"), None, Some("Anna")),
            (None, None, Some("Kowalska"), Some("Kowalska")),
            (None, Some(""), Some("Kowalska"), Some("Kowalska")),
            (Some(""), Some(" "), Some("\t"), None),
            (None, None, None, None),
        ];
        for (full, first, last, expected) in cases {
            assert_eq!(
                join_name(*full, *first, *last).as_deref(),
                *expected,
                "input {full:?} {first:?} {last:?}"
            );
        }
    }

    #[test]
    fn fold_key_strips_accents_case_and_extra_spaces() {
        let cases: &[(&str, &str)] = &[
            ("ŁUKASZ", "lukasz"),
            ("Łukasz", "lukasz"),
            ("Lukasz", "lukasz"),
            ("Nguyễn Thị Thu Hà", "nguyen thi thu ha"),
            ("Đỗ", "do"),
            ("  Hanna   Dąbrowska \t", "hanna dabrowska"),
            ("Niccolò", "niccolo"),
            ("Søren Kjærgaard", "soren kjaergaard"),
            ("Œuvre", "oeuvre"),
            ("Straße", "strasse"),
            ("Þór", "thor"),
            ("Iİı", "iii"),
            ("Ｆｕｌｌ", "full"),
            ("Jose\u{301}", "jose"),
            ("", ""),
            (" \u{a0} ", ""),
        ];
        for (raw, expected) in cases {
            assert_eq!(fold_key(raw), *expected, "input {raw:?}");
        }
    }

    proptest! {
        #[test]
        fn clean_text_never_panics_and_is_idempotent(raw in any::<String>()) {
            if let Some(once) = clean_text(&raw) {
                prop_assert_eq!(clean_text(&once), Some(once.clone()));
            }
        }

        #[test]
        fn clean_text_is_idempotent_on_accented_text(raw in "[ \\u{a0}a-zA-Z\u{300}-\u{36f}\u{1ea0}-\u{1ef9}łŁ\r\n]{0,24}") {
            if let Some(once) = clean_text(&raw) {
                prop_assert_eq!(clean_text(&once), Some(once.clone()));
            }
        }

        #[test]
        fn fold_key_never_panics_and_is_idempotent(raw in any::<String>()) {
            let once = fold_key(&raw);
            prop_assert_eq!(fold_key(&once), once);
        }

        #[test]
        fn fold_key_is_idempotent_on_accented_text(raw in "[ \\u{a0}a-zA-Z\u{300}-\u{36f}\u{c0}-\u{17f}\u{1ea0}-\u{1ef9}]{0,24}") {
            let once = fold_key(&raw);
            prop_assert_eq!(fold_key(&once), once);
        }
    }
}
