//! The labelled lines of a machine notification ("Nome: Francesca Romano",
//! "Telefono: 06 4567 8901", a table row "Email | anna@example.it"), read into the same
//! fields a web form posts, so the forms' field names decide what each one means.

use serde_json::Value;

use crate::forms::fields::{MappedFields, map_fields};

/// Longest label, in characters; longer text before a colon is a sentence.
const MAX_LABEL_CHARS: usize = 40;
/// Most words in a label ("Numero di telefono cellulare").
const MAX_LABEL_WORDS: usize = 5;

/// Labels a shop's notification puts before its customer's name ("Cliente: Mario
/// Rossi", "Khách hàng: Nguyễn Văn An"), compared folded. A form's field of that name is
/// not read so ("Cliente: sì" answers "already a customer?"), and here only a value that
/// reads as a person's name is one.
const CUSTOMER_LABELS: &[&str] = &["cliente", "klient", "khachhang", "customer", "kunde"];

/// Words of a legal form: a customer labelled with one is a company, not a person.
const LEGAL_FORMS: &[&str] = &[
    "srl", "spa", "snc", "sas", "sp", "zoo", "sa", "ltd", "llc", "inc", "plc", "gmbh", "ag", "cty",
    "tnhh", "jsc", "co", "company", "corp",
];

/// Words (in lower case) that say what kind of customer it is, not who: "Non
/// registrato", "Guest checkout", "Osoba prywatna", "Khách lẻ".
const CUSTOMER_KINDS: &[&str] = &[
    "non",
    "nuovo",
    "nuova",
    "registrato",
    "registrata",
    "ospite",
    "privato",
    "privata",
    "azienda",
    "guest",
    "new",
    "returning",
    "registered",
    "customer",
    "cliente",
    "checkout",
    "private",
    "business",
    "osoba",
    "prywatna",
    "prywatny",
    "nowy",
    "nowa",
    "firma",
    "zarejestrowany",
    "niezarejestrowany",
    "gość",
    "khách",
    "lẻ",
    "mới",
];

/// Vietnamese phrases of a customer kind or a company, whose words alone may be a name's.
const CUSTOMER_KIND_PHRASES: &[&str] =
    &["cá nhân", "công ty", "doanh nghiệp", "cổ phần", "vãng lai"];

/// The labelled values of `text` sorted as a form's fields are: contact data, message and
/// the rest as custom fields. A customer label names the person only where no name label
/// does.
pub(crate) fn labelled_fields(text: &str) -> MappedFields {
    let pairs = labelled_pairs(text);
    let as_fields = |pairs: Vec<(String, String)>| {
        map_fields(
            pairs
                .into_iter()
                .map(|(label, value)| (label, Value::String(value)))
                .collect(),
            None,
        )
    };
    let customer = |(label, value): &(String, String)| {
        CUSTOMER_LABELS.contains(&crate::fold::fold_compact(label).as_str())
            && reads_as_a_name(value)
    };
    let mapped = as_fields(pairs.clone());
    let contact = &mapped.contact;
    let named =
        contact.full_name.is_some() || contact.first_name.is_some() || contact.last_name.is_some();
    if named || !pairs.iter().any(customer) {
        return mapped;
    }
    as_fields(
        pairs
            .into_iter()
            .map(|pair| match customer(&pair) {
                true => ("name".to_owned(), pair.1),
                false => pair,
            })
            .collect(),
    )
}

/// Two to six words of letters (hyphens and apostrophes inside), none a legal form or
/// a kind of customer.
fn reads_as_a_name(value: &str) -> bool {
    let lower = value.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    (2..=6).contains(&words.len())
        && !CUSTOMER_KIND_PHRASES.iter().any(|p| lower.contains(p))
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '’'))
                && w.chars().next().is_some_and(char::is_alphabetic)
                && !LEGAL_FORMS.contains(&crate::fold::fold_compact(w).as_str())
                && !CUSTOMER_KINDS.contains(w)
        })
}

/// `(label, value)` for every labelled line; a label alone on its line takes the lines
/// below it up to the next blank or labelled line ("Messaggio:" and the message).
pub(crate) fn labelled_pairs(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some((label, value)) = split_labelled(lines[i]) else {
            i += 1;
            continue;
        };
        i += 1;
        if !value.is_empty() {
            pairs.push((label, value));
            continue;
        }
        let mut block = Vec::new();
        while i < lines.len() {
            let line = lines[i].trim();
            if line.is_empty() || split_labelled(line).is_some() {
                break;
            }
            block.push(line);
            i += 1;
        }
        if !block.is_empty() {
            pairs.push((label, block.join("\n")));
        }
    }
    pairs
}

/// A line as `(label, value)`: "Label: value", "Label\tvalue" (a table row), or
/// "Label | value".
fn split_labelled(line: &str) -> Option<(String, String)> {
    let line = line
        .trim()
        .trim_start_matches(['*', '-', '•', '|'])
        .trim_end_matches('|')
        .trim();
    let (label, value) = [':', '：', '\t', '|']
        .iter()
        .filter_map(|&sep| line.split_once(sep))
        .min_by_key(|(label, _)| label.len())?;
    let label = label.trim().trim_matches('*').trim_end_matches(':').trim();
    let value = value
        .trim()
        .trim_start_matches([':', '\t', '|', '*'])
        .trim()
        .replace('\t', " ");
    is_label(label).then(|| (label.to_owned(), value))
}

fn is_label(label: &str) -> bool {
    let mut chars = label.chars();
    chars.next().is_some_and(char::is_alphabetic)
        && label.chars().count() <= MAX_LABEL_CHARS
        && label.split_whitespace().count() <= MAX_LABEL_WORDS
        && label.chars().all(|c| {
            c.is_alphabetic()
                || c.is_whitespace()
                || matches!(c, '-' | '_' | '.' | '/' | '\'' | '’' | '(' | ')')
                || c.is_ascii_digit()
        })
        && !label.to_ascii_lowercase().starts_with("http")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_lines_and_a_message_block_are_read_into_form_fields() {
        let text = "Nuovo messaggio dal modulo contatti.\n\nNome: Francesca Romano\nEmail: francesca.romano@libero.it\nTelefono: 0039 06 4567 8901\nProdotto: Libreria (cod. LB-220)\nMessaggio:\nBuongiorno, vorrei sapere\ne se montate a Roma. Grazie!\n\n--\nGenerato automaticamente.";
        let mapped = labelled_fields(text);
        assert_eq!(
            mapped.contact.first_name.as_deref(),
            Some("Francesca Romano")
        );
        assert_eq!(
            mapped.contact.email.as_deref(),
            Some("francesca.romano@libero.it")
        );
        assert_eq!(mapped.contact.phone.as_deref(), Some("0039 06 4567 8901"));
        assert_eq!(
            mapped.message.as_deref(),
            Some("Buongiorno, vorrei sapere\ne se montate a Roma. Grazie!")
        );
        assert_eq!(mapped.fields["Prodotto"], "Libreria (cod. LB-220)");
    }

    #[test]
    fn a_customer_label_names_the_customer_only_when_it_holds_a_persons_name() {
        for (text, name) in [
            (
                "Cliente: Mario Rossi\nTelefono: 347 123 4567",
                Some("Mario Rossi"),
            ),
            ("Klient: Anna Nowak-Kowalska", Some("Anna Nowak-Kowalska")),
            ("Khách hàng: Nguyễn Văn An", Some("Nguyễn Văn An")),
            ("Customer | Sarah O'Connor", Some("Sarah O'Connor")),
            ("Cliente: nuovo", None),
            ("Cliente: sì", None),
            ("Klient: Meble Nowak Sp. z o.o.", None),
            ("Customer: Acme Ltd", None),
            ("Cliente: 10234", None),
            ("Khách hàng: Công ty TNHH Minh An", None),
            ("Khách hàng: Công ty Cổ phần Minh An", None),
            ("Khách hàng: Khách lẻ", None),
            ("Khách hàng: Nguyễn Thành Công", Some("Nguyễn Thành Công")),
            ("Khách hàng: Lê Văn Nhân", Some("Lê Văn Nhân")),
            ("Cliente: Non registrato", None),
            ("Customer: Guest checkout", None),
            ("Klient: Osoba prywatna", None),
            // A name label says who it is; the customer line is then only a field.
            ("Nome: Giulia Neri\nCliente: Mario Rossi", None),
        ] {
            let mapped = labelled_fields(text);
            assert_eq!(mapped.contact.full_name.as_deref(), name, "{text}");
        }
    }

    #[test]
    fn table_rows_and_bold_labels_count_and_sentences_do_not() {
        let text = "Imię i nazwisko\tAnna Nowak\n**E-mail:** anna@example.pl\n| Telefon | 601 234 567 |\nProszę o kontakt, bo: pilne sprawy są ważne\nGodzina: 10:30";
        let pairs = labelled_pairs(text);
        assert_eq!(
            pairs,
            [
                ("Imię i nazwisko".to_owned(), "Anna Nowak".to_owned()),
                ("E-mail".to_owned(), "anna@example.pl".to_owned()),
                ("Telefon".to_owned(), "601 234 567".to_owned()),
                ("Godzina".to_owned(), "10:30".to_owned()),
            ]
        );
    }
}
