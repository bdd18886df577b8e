//! Free-text fields (names, companies, messages) and the folded keys used to
//! match them.
//!
//! Cleaning is deliberately conservative: what the prospect typed is what the
//! sales team reads, so only Unicode composition changes, and for names the
//! surrounding whitespace; messages and companies keep theirs. Folding is the opposite: it throws away everything that differs
//! between two spellings of the same name, and its output is never shown.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// `raw` in Unicode normalisation form C, borrowed when it already is.
pub fn compose(raw: &str) -> Cow<'_, str> {
    // Almost everything typed into a form is NFC already (all ASCII is); the quick check
    // proves it without building a copy char by char.
    if is_nfc_quick(raw.chars()) == IsNormalized::Yes {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(raw.nfc().collect())
    }
}

/// NFC-normalises and trims `raw`; `None` when nothing is left.
pub fn clean_text(raw: &str) -> Option<String> {
    let composed = compose(raw);
    let trimmed = composed.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == composed.len() {
        Some(composed.into_owned())
    } else {
        Some(trimmed.to_owned())
    }
}

/// `raw` in NFC and otherwise as sent, for text the prospect wrote (a message, a
/// company); `None` when it is empty or only whitespace.
pub fn verbatim_text(raw: &str) -> Option<String> {
    if raw.trim().is_empty() {
        None
    } else {
        Some(compose(raw).into_owned())
    }
}

/// Builds a display name: a non-empty full name wins, else "first last".
///
/// A form that asks for "name" and "surname" (or, in German, "Vorname" and "Name")
/// sends half a name under the full name's field: the other half is joined to it
/// unless the full name already holds it.
pub fn join_name(full: Option<&str>, first: Option<&str>, last: Option<&str>) -> Option<String> {
    let (first, last) = (first.and_then(clean_text), last.and_then(clean_text));
    if let Some(full) = full.and_then(clean_text) {
        return Some(match (first, last) {
            (None, Some(last)) if !holds_words(&full, &last) => format!("{full} {last}"),
            (Some(first), None) if !holds_words(&full, &first) => format!("{first} {full}"),
            _ => full,
        });
    }
    match (first, last) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(only), None) | (None, Some(only)) => Some(only),
        (None, None) => None,
    }
}

/// Whether every word of `part` is a word of `name`, compared folded.
fn holds_words(name: &str, part: &str) -> bool {
    let name = fold_key(name);
    let words: Vec<&str> = name.split_whitespace().collect();
    fold_key(part)
        .split_whitespace()
        .all(|word| words.contains(&word))
}

/// Folds `raw` to a lower-case, accent-free key for comparing names (one routine for
/// every crate: it lives in `ingest`, the first of them).
pub use ingest::fold::fold_key;

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
            // "name" and "surname": the full name's field holds the given name.
            (Some("John"), None, Some("Smith"), Some("John Smith")),
            (Some("John Smith"), None, Some("SMITH"), Some("John Smith")),
            (
                Some("Maria dei Conti"),
                None,
                Some("dei Conti"),
                Some("Maria dei Conti"),
            ),
            // "Vorname" and "Name": it holds the family name.
            (Some("Müller"), Some("Hans"), None, Some("Hans Müller")),
            (Some("Hans Müller"), Some("hans"), None, Some("Hans Müller")),
        ];
        for (full, first, last, expected) in cases {
            assert_eq!(
                join_name(*full, *first, *last).as_deref(),
                *expected,
                "input {full:?} {first:?} {last:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn compose_is_nfc_whether_or_not_it_copies(
            // Letters with combining marks and Hangul jamo, which compose, beside the
            // plain text that is already NFC.
            raw in prop_oneof![
                any::<String>(),
                "[a-zA-Z0-9 .@]{0,40}",
                "[aeiouAEIOUnc\u{300}-\u{36F}\u{1100}-\u{1112}\u{1161}-\u{1175}]{0,20}",
            ],
        ) {
            let nfc: String = raw.nfc().collect();
            prop_assert_eq!(compose(&raw), nfc);
        }

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
    }
}
