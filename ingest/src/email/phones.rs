//! Phone numbers written in the text of a mail, found as typed: the normalizer reads them
//! with the mailbox's region (this module never decides whether a number is valid).
//!
//! A run of digits is a candidate when it is written like a phone number (digits with
//! spaces, dots, dashes, slashes or brackets between them, an optional `+`, 7 to 17
//! digits, an optional extension) and does not read as something else: a date, an amount,
//! a measure, a part of an address or link, or a number a label names as another kind
//! (an order, a VAT or tax number, a fax).

use crate::fold::fold_key;

/// Fewest and most digits of a written number (a short landline; `00`, a country code
/// and 15 digits).
const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 17;

/// Every phone number written in `text`, as typed (extension included), in order.
pub(crate) fn phone_candidates(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in text.lines() {
        for candidate in line_candidates(line) {
            if !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    }
    found
}

fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '-'
            | '.'
            | '/'
            | '('
            | ')'
            | '\u{a0}'
            | '\u{2009}'
            | '\u{202f}'
            | '\u{2011}'
            | '\u{2013}'
    )
}

fn line_candidates(line: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let next_digit = chars.get(i + 1).is_some_and(|&(_, n)| n.is_ascii_digit());
        let starts = c.is_ascii_digit() || (matches!(c, '+' | '(') && next_digit);
        if !starts {
            i += 1;
            continue;
        }
        let end = run_end(&chars, i);
        let start_byte = chars[i].0;
        let end_byte = chars.get(end).map_or(line.len(), |&(b, _)| b);
        let number =
            line[start_byte..end_byte].trim_end_matches(|c: char| is_separator(c) && c != ')');
        let number = balance_brackets(number);
        let number_end = start_byte + number.len();
        let (extension_end, extension_ok) = extension_end(line, number_end);
        if extension_ok && accepted(line, start_byte, number, extension_end) {
            out.push(line[start_byte..extension_end].trim().to_owned());
        }
        i = chars
            .iter()
            .position(|&(b, _)| b >= extension_end.max(end_byte))
            .unwrap_or(chars.len())
            .max(i + 1);
    }
    out
}

/// Where a number starting at `chars[start]` ends: digits, with runs of at most two
/// separators between them.
fn run_end(chars: &[(usize, char)], start: usize) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i].1;
        if c.is_ascii_digit() {
            i += 1;
            continue;
        }
        if !is_separator(c) {
            break;
        }
        let gap_end = (i..chars.len())
            .find(|&j| !is_separator(chars[j].1))
            .unwrap_or(chars.len());
        let gap: String = chars[i..gap_end].iter().map(|&(_, c)| c).collect();
        let spaces = gap.chars().filter(|c| c.is_whitespace()).count();
        let continues = gap_end < chars.len()
            && chars[gap_end].1.is_ascii_digit()
            && gap.chars().count() <= 2
            && spaces <= 1;
        if !continues {
            // A closing bracket right after the digits belongs to the number: "(024)".
            if c == ')' {
                return i + 1;
            }
            break;
        }
        i = gap_end;
    }
    i
}

/// `number` without an unmatched trailing ')'.
fn balance_brackets(number: &str) -> &str {
    let open = number.matches('(').count();
    let close = number.matches(')').count();
    if close > open {
        number.trim_end_matches(')').trim_end()
    } else {
        number
    }
}

/// The end of the number with its extension, if one follows, and whether what follows
/// the number lets it be one (not a letter or digit run glued to it).
fn extension_end(line: &str, number_end: usize) -> (usize, bool) {
    let after = &line[number_end..];
    let trimmed = after.trim_start_matches([' ', ',', '\u{a0}']);
    let skipped = after.len() - trimmed.len();
    let folded_word = |text: &str, marker: &str| -> Option<usize> {
        // The marker compared folded, one character of text at a time.
        let mut taken = 0;
        for (i, c) in text.char_indices() {
            let so_far = fold_key(&text[..i + c.len_utf8()]);
            if so_far == marker {
                taken = i + c.len_utf8();
                break;
            }
            if !marker.starts_with(so_far.as_str()) {
                return None;
            }
        }
        (taken > 0).then_some(taken)
    };
    for marker in crate::fields::PHONE_EXTENSION_WORDS {
        let Some(len) = folded_word(trimmed, marker) else {
            continue;
        };
        let rest = &trimmed[len..];
        let rest_trimmed = rest.trim_start_matches(['.', ':', ' ', '\u{a0}']);
        let digits = rest_trimmed
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        // "x" is a marker only glued to the number or after one space ("x204", "555 x 12").
        let glued_ok = *marker != "x" || skipped <= 1;
        if (1..=6).contains(&digits) && glued_ok {
            let end = number_end + skipped + len + (rest.len() - rest_trimmed.len()) + digits;
            let next = line[end..].chars().next();
            return (end, next.is_none_or(|c| !c.is_alphanumeric()));
        }
    }
    let next = after.chars().next();
    (
        number_end,
        next.is_none_or(|c| !c.is_alphanumeric() && c != '@'),
    )
}

/// Words after a number that make it a quantity, a measure or an amount.
const UNITS: &[&str] = &[
    "€", "$", "£", "%", "eur", "euro", "usd", "pln", "zl", "zł", "vnd", "d", "đ", "dong", "đồng",
    "k", "mq", "m2", "m²", "m", "mm", "cm", "km", "kg", "g", "sq", "pz", "pezzi", "szt", "sztuk",
    "chiec", "cai", "units", "pcs", "pieces",
];

/// Words before a number that name it as something other than a phone number.
/// A bare "nr", "no." or "n." is not among them: "Mój nr: 601 234 567" is a phone,
/// "zamówienie nr 601234567" is named by the word before it.
const NOT_PHONE_LABELS: &[&str] = &[
    "fax",
    "n°",
    "nº",
    "#",
    "num",
    "ordine",
    "order",
    "zamowienie",
    "zamowienia",
    "zamowieniu",
    "offerta",
    "oferta",
    "oferty",
    "offer",
    "quote",
    "preventivo",
    "don",
    "don hang",
    "ma",
    "ma don",
    "ma so",
    "ma so thue",
    "thue",
    "mst",
    "iva",
    "p.iva",
    "piva",
    "vat",
    "nip",
    "regon",
    "krs",
    "pesel",
    "cf",
    "c.f",
    "codice",
    "cod",
    "code",
    "rif",
    "ref",
    "riferimento",
    "reference",
    "id",
    "sku",
    "art",
    "articolo",
    "invoice",
    "fattura",
    "faktura",
    "hoa don",
    "iban",
    "cap",
    "zip",
    "kod",
    "ticket",
    "pratica",
    "protocollo",
    "prot",
    "tracking",
    "conto",
    "account",
    "konto",
    "tai khoan",
    "stk",
];

/// Words before a number that name it as a phone number; they win over a
/// [`NOT_PHONE_LABELS`] word further back ("nr tel. 601 234 567").
const PHONE_LABELS: &[&str] = &[
    "tel",
    "tel.",
    "telefono",
    "telefon",
    "telefonu",
    "telefonem",
    "telephone",
    "ph",
    "phone no",
    "phone number",
    "kontakt",
    "kontaktowy",
    "contatto",
    "recapito",
    "contact",
    "lien he",
    "phone",
    "mobile",
    "mob",
    "cell",
    "cellulare",
    "cellphone",
    "whatsapp",
    "kom",
    "komorka",
    "komorkowy",
    "dt",
    "sdt",
    "dien thoai",
    "di dong",
    "hotline",
    "call",
    "chiamare",
    "chiamate",
    "numero",
    "numer",
    "moj nr",
    "moj numer",
    "my no",
    "my nr",
    "my number",
    "il mio n",
    "so cua toi",
];

fn accepted(line: &str, start: usize, number: &str, end: usize) -> bool {
    let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
        return false;
    }
    if glued_to_something_else(&line[..start]) {
        return false;
    }
    // After the whole space: a no-break space is two bytes, an ideographic one three.
    let token_start = line[..start]
        .char_indices()
        .rfind(|&(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let token = &line[token_start..end];
    if token.contains("://") || token.to_ascii_lowercase().contains("www.") {
        return false;
    }
    let label = label_before(&line[..start]);
    if label == Some(Label::Other) || looks_like_date_or_time(number) {
        return false;
    }
    // "1.250.000" is an amount, "Tel. 601.234.567" a phone written with dots.
    if label != Some(Label::Phone) && looks_like_amount(number) {
        return false;
    }
    let next_word = line[end..]
        .trim_start()
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ')' | '!' | '?'))
        .next()
        .unwrap_or("")
        .trim_end_matches('.');
    let next_folded = fold_key(next_word);
    if !next_word.is_empty()
        && (UNITS.contains(&next_word) || UNITS.contains(&next_folded.as_str()))
    {
        return false;
    }
    if let Some(c) = line[end..].trim_start().chars().next()
        && matches!(c, '€' | '$' | '£' | '%' | '₫')
    {
        return false;
    }
    true
}

/// True when the text right before a number makes it part of a word, a code, an
/// address, a link or an amount ("LB-22012345", "n°/12345678", "€1234567", "1,2345678").
fn glued_to_something_else(before: &str) -> bool {
    let mut back = before.chars().rev();
    let Some(last) = back.next() else {
        return false;
    };
    let previous = back.next();
    match last {
        c if c.is_alphanumeric() => true,
        '@' | '/' | '\\' | '_' | '&' | '=' | '%' | '#' | '€' | '$' | '£' | '₫' => true,
        '-' | '+' => previous.is_some_and(char::is_alphanumeric),
        '.' | ',' => previous.is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// What the words before a number name it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// A phone label ("tel.", "cell", "Mój nr").
    Phone,
    /// Another kind of number ("fax", "NIP", "zamówienie").
    Other,
}

/// The nearest label among the last words before a number, if any.
fn label_before(before: &str) -> Option<Label> {
    let words: Vec<String> = before
        .split_whitespace()
        .rev()
        .take(4)
        .map(|w| {
            let w = w.trim_matches(|c: char| matches!(c, ':' | ',' | ';' | '(' | ')' | '*' | '"'));
            // An elided article is not part of the word: "all'ordine" names an order.
            let w = w.rsplit(['\'', '’']).next().unwrap_or(w);
            fold_key(w)
        })
        .collect();
    for n in 0..words.len() {
        // One word, then two ("don hang", "dien thoai"), then three ("ma so thue").
        for len in 1..=3.min(words.len() - n) {
            let phrase: Vec<&str> = words[n..n + len].iter().rev().map(String::as_str).collect();
            let phrase = phrase.join(" ");
            let bare = phrase.trim_end_matches('.');
            if PHONE_LABELS.contains(&phrase.as_str()) || PHONE_LABELS.contains(&bare) {
                return Some(Label::Phone);
            }
            if NOT_PHONE_LABELS.contains(&phrase.as_str()) || NOT_PHONE_LABELS.contains(&bare) {
                return Some(Label::Other);
            }
        }
    }
    None
}

/// Groups of digits and the separators between them.
fn groups(number: &str) -> (Vec<&str>, Vec<char>) {
    let groups: Vec<&str> = number
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let mut seps = Vec::new();
    let mut in_gap = false;
    for c in number.trim_start_matches(['+', '(']).chars() {
        if c.is_ascii_digit() {
            in_gap = false;
        } else if !in_gap {
            seps.push(c);
            in_gap = true;
        }
    }
    (groups, seps)
}

/// "13/05/2025", "2025-05-13", "13.05.2025 09", a reference such as "2025/0412".
fn looks_like_date_or_time(number: &str) -> bool {
    let (groups, seps) = groups(number);
    let len = |i: usize| groups.get(i).map_or(0, |g| g.len());
    let year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    let same_sep = seps.len() >= 2 && seps[0] == seps[1] && matches!(seps[0], '/' | '.' | '-');
    if same_sep && len(0) <= 2 && len(1) <= 2 && (len(2) == 4 || len(2) == 2) {
        return true;
    }
    if same_sep && groups.first().is_some_and(|g| year(g)) && len(1) <= 2 && len(2) <= 2 {
        return true;
    }
    // A year and a number behind a slash is a reference ("offerta 2025/0412").
    groups.first().is_some_and(|g| year(g)) && seps.first() == Some(&'/')
}

/// "1.250.000", "15,000,000": thousands grouped by dots or commas, not a phone number
/// (which would start with 0 or + when written with dots: "0901.234.567").
fn looks_like_amount(number: &str) -> bool {
    let (groups, seps) = groups(number);
    !number.starts_with(['0', '+'])
        && !seps.is_empty()
        && seps.iter().all(|&c| c == seps[0] && matches!(c, '.' | ','))
        && groups[0].len() <= 3
        && groups[1..].iter().all(|g| g.len() == 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<String> {
        phone_candidates(text)
    }

    #[test]
    fn a_number_after_a_wide_space_is_found_without_a_panic() {
        // U+00A0 and U+3000 are whitespace of more than one byte: the word before the
        // number starts after the whole character.
        assert_eq!(
            found("I'm on\u{a0}+44 20 7946 0958 most mornings."),
            vec!["+44 20 7946 0958"]
        );
        assert_eq!(found("電話\u{3000}03-1234-5678"), vec!["03-1234-5678"]);
    }

    #[test]
    fn numbers_are_found_as_typed_with_their_extension() {
        let cases = [
            (
                "Per qualsiasi chiarimento mi trovate al 348 221 7790.",
                "348 221 7790",
            ),
            ("Proszę o kontakt: +48 601 234 567.", "+48 601 234 567"),
            ("Điện thoại: 090 123 4567", "090 123 4567"),
            (
                "You can reach me at (415) 555-0132 ext. 204.",
                "(415) 555-0132 ext. 204",
            ),
            ("ĐT: (024) 3826 4567", "(024) 3826 4567"),
            ("Telefono: 0039 06 4567 8901", "0039 06 4567 8901"),
            ("tel. 698 765 432.", "698 765 432"),
            ("+39 338 765 4321", "+39 338 765 4321"),
            (
                "centralino 02/8736 1234 int. 12, grazie",
                "02/8736 1234 int. 12",
            ),
            ("call 555-0100 x12 after 5", "555-0100 x12"),
            ("SĐT 0901.234.567", "0901.234.567"),
            ("+48 22 583 40 17 wew. 112", "+48 22 583 40 17 wew. 112"),
            ("máy lẻ: 028 3823 4567 máy lẻ 15", "028 3823 4567 máy lẻ 15"),
            ("nr tel. 601-234-567", "601-234-567"),
            // Dotted like an amount, but named a phone by its label.
            ("Tel. 601.234.567", "601.234.567"),
            ("telefon: 601.234.567", "601.234.567"),
            ("kom. 698.765.432", "698.765.432"),
            // A bare "nr" / "no." is "my number" unless an order or an invoice is named.
            ("Mój nr: 601 234 567", "601 234 567"),
            ("Mój nr to 601 234 567, proszę dzwonić po 16", "601 234 567"),
            ("my no. is 415 555 0132", "415 555 0132"),
            ("nr 601 234 567", "601 234 567"),
            ("nr telefonu 601.234.567", "601.234.567"),
            ("Recapito: 601.234.567", "601.234.567"),
        ];
        for (text, want) in cases {
            assert_eq!(found(text), [want], "{text}");
        }
    }

    #[test]
    fn numbers_that_are_something_else_are_not_phones() {
        for text in [
            "24 scrivanie operative 160x80",
            "Il 13/05/2025 09:14, Niccolò ha scritto",
            "consegna entro il 2025-06-15",
            "la vostra offerta n. 2025/0412",
            "Ordine 100234567 del 12.05.2025",
            "P.IVA 01234567890",
            "Mã số thuế: 0101234567",
            "NIP 123-456-78-90",
            "Fax: 02 8736 9999",
            "budget 15.000.000 VND",
            "circa 1.250.000 €",
            "about 6,500 sq ft",
            "IBAN IT60X0542811101000000123456",
            "https://example.it/prodotti/123456789",
            "mario12345678@example.it",
            "cod. LB-22012345",
            "dzwonić po 15:00",
            "budżet 2500000 zł",
            "ordine #12345678",
            "zamówienie nr 601234567",
            "Zamówienie nr: 123 456 789",
            "faktura VAT nr 601 234 567",
            "Order No. 601234567",
            "offerta n. 348 221 7790",
            "riguardo all'ordine n. 100234567",
            "dell’offerta nr 601 234 567",
            "oferta nr 601 234 567",
            "budżet 250.000.000",
            "w kwocie 601.234.567",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }

    #[test]
    fn several_numbers_come_in_order_and_lines_are_not_joined() {
        assert_eq!(
            found("cell 347 123 4567 / ufficio 02 8736 1234\n02\n8736 12"),
            ["347 123 4567", "02 8736 1234"]
        );
        assert_eq!(found("347 1234567, 347 1234567"), ["347 1234567"]);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_scanned_without_panicking(text in "[0-9 ()+./xX\\-:#€a-zđ\u{a0}\u{300}\n]{0,80}|\\PC{0,80}") {
            for found in phone_candidates(&text) {
                proptest::prop_assert!(text.contains(found.as_str()));
            }
        }
    }
}
