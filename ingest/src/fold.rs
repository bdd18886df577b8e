//! Folding text into a key for comparison: the one accent-folding routine, used for
//! names when matching people and companies and for field names when mapping forms.
//!
//! Folding throws away everything that differs between two spellings of the same word
//! (case, accents, compatibility forms, runs of spaces); its output is never shown.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Folds `raw` to a lower-case, accent-free key with single spaces between words.
pub fn fold_key(raw: &str) -> String {
    if raw.is_ascii() {
        // Decomposition, combining marks and the special letters leave ASCII as it is:
        // only case and spaces fold, without the Unicode pipeline's copies.
        let mut key = String::with_capacity(raw.len());
        for word in raw.split_whitespace() {
            if !key.is_empty() {
                key.push(' ');
            }
            key.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        }
        return key;
    }
    fold_unicode(raw)
}

/// [`fold_key`] for text beyond ASCII.
fn fold_unicode(raw: &str) -> String {
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

/// [`fold_key`] with everything but letters and digits dropped, so "E-Mail", "e_mail"
/// and "email" compare equal, as do "Wiadomość" and "wiadomosc".
pub fn fold_compact(raw: &str) -> String {
    fold_key(raw)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
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

    #[test]
    fn fold_compact_keeps_only_letters_and_digits() {
        let cases: &[(&str, &str)] = &[
            ("E-Mail", "email"),
            ("e_mail", "email"),
            ("Wiadomość", "wiadomosc"),
            ("Số điện thoại", "sodienthoai"),
            ("Telefon 2", "telefon2"),
            ("ŀ", "l"),
            ("Æble", "aeble"),
        ];
        for (raw, expected) in cases {
            assert_eq!(fold_compact(raw), *expected, "input {raw:?}");
        }
    }

    proptest! {
        #[test]
        fn ascii_folds_as_the_unicode_path_folds_it(raw in "[ -~\t\n\u{b}\u{c}\r]{0,40}") {
            prop_assert_eq!(fold_key(&raw), fold_unicode(&raw));
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
