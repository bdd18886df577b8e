//! Form field names sorted into what leadpipe understands: contact data, the message,
//! campaign tags, the honeypot, and everything else kept as custom fields.
//!
//! Names are compared loosely (case, separators, punctuation and diacritics ignored) but
//! only against fixed alias lists: a value is contact data because of the field it came
//! in, never because of what it looks like.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::inquiry::ContactHints;

/// A form's fields sorted into what leadpipe understands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappedFields {
    /// Full name, first/last name, email, phone and company as raw strings.
    pub contact: ContactHints,
    /// The free text of the inquiry.
    pub message: Option<String>,
    /// Campaign tags keyed by their names as sent, e.g. `utm_source`.
    pub utm: BTreeMap<String, String>,
    /// Everything else under its name as sent; repeated names become arrays.
    pub fields: Map<String, Value>,
    /// The configured honeypot field came with a non-blank value.
    pub honeypot_filled: bool,
}

/// What a recognised field name means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    FullName,
    FirstName,
    LastName,
    Email,
    Phone,
    Company,
    Message,
}

/// Recognised names, lower-case ASCII with `_` between words; compared with the `_`
/// removed against a name's [`match_key`]. Each entry must only ever mean that role:
/// ambiguous words ("subject", "fax", "website", a bare "ten" or "ho") stay custom.
const ALIASES: &[(Role, &[&str])] = &[
    (
        Role::FullName,
        &[
            // EN
            "name",
            "full_name",
            "your_name",
            "contact_name",
            "contact_person",
            "customer_name",
            // IT
            "nome_completo",
            "nome_e_cognome",
            "nome_cognome",
            "nominativo",
            "referente",
            // PL
            "imie_i_nazwisko",
            "imie_nazwisko",
            // VI
            "ho_ten",
            "ho_va_ten",
            "ten_khach_hang",
            // DE
            "vollstandiger_name",
            "ihr_name",
            "ansprechpartner",
            // FR
            "nom_complet",
            "nom_et_prenom",
            "nom_prenom",
            "prenom_et_nom",
            "prenom_nom",
            "votre_nom",
            // ES
            "nombre_completo",
            "nombre_y_apellido",
            "nombre_y_apellidos",
            "nombre_apellido",
            "nombre_apellidos",
            "tu_nombre",
        ],
    ),
    (
        Role::FirstName,
        &[
            "first_name",
            "fname",
            "given_name",
            "forename",
            "your_first_name",
            "nome",
            "imie",
            "vorname",
            "prenom",
            "votre_prenom",
            "nombre",
        ],
    ),
    (
        Role::LastName,
        &[
            "last_name",
            "lname",
            "surname",
            "family_name",
            "your_last_name",
            "cognome",
            "nazwisko",
            "nachname",
            "familienname",
            "nom",
            "nom_de_famille",
            "votre_nom_de_famille",
            "apellido",
            "apellidos",
        ],
    ),
    (
        Role::Email,
        &[
            // "e_mail", "email_address" and friends match through the ignored `_`.
            "email",
            "mail",
            "email_address",
            "your_email",
            "your_email_address",
            "contact_email",
            "work_email",
            "business_email",
            "indirizzo_email",
            "indirizzo_mail",
            "posta_elettronica",
            "email_aziendale",
            "adres_email",
            "adres_mailowy",
            "dia_chi_email",
            "thu_dien_tu",
            "email_adresse",
            "ihre_email",
            "adresse_email",
            "adresse_mail",
            "adresse_electronique",
            "courriel",
            "votre_email",
            "correo",
            "correo_electronico",
            "tu_email",
        ],
    ),
    (
        Role::Phone,
        &[
            "phone",
            "phone_number",
            "phone_no",
            "your_phone",
            "contact_phone",
            "tel",
            "tel_no",
            "tel_number",
            "telephone",
            "telephone_number",
            "mobile",
            "mobile_number",
            "mobile_phone",
            "cell",
            "cell_phone",
            "whatsapp",
            "telefono",
            "numero_di_telefono",
            "numero_telefono",
            "recapito_telefonico",
            "cellulare",
            "telefon",
            "numer_telefonu",
            "nr_telefonu",
            "numer_tel",
            "telefon_komorkowy",
            "so_dien_thoai",
            "sdt",
            "dien_thoai",
            "so_dt",
            "telefonnummer",
            "handy",
            "handynummer",
            "mobilnummer",
            "numero_de_telephone",
            "telephone_portable",
            "numero_de_telefono",
            "movil",
            "celular",
        ],
    ),
    (
        Role::Company,
        &[
            "company",
            "company_name",
            "your_company",
            "business_name",
            "organization",
            "organisation",
            "organization_name",
            "organisation_name",
            "azienda",
            "nome_azienda",
            "ragione_sociale",
            "societa",
            "firma",
            "nazwa_firmy",
            "cong_ty",
            "ten_cong_ty",
            "unternehmen",
            "firmenname",
            "entreprise",
            "societe",
            "nom_entreprise",
            "nom_de_l_entreprise",
            "empresa",
            "nombre_empresa",
            "nombre_de_la_empresa",
        ],
    ),
    (
        Role::Message,
        &[
            "message",
            "your_message",
            "msg",
            "comments",
            "comment",
            "enquiry",
            "inquiry",
            "your_enquiry",
            "your_inquiry",
            "how_can_we_help",
            "messaggio",
            "il_tuo_messaggio",
            "richiesta",
            "wiadomosc",
            "tresc",
            "tresc_wiadomosci",
            "noi_dung",
            "tin_nhan",
            "loi_nhan",
            "nachricht",
            "ihre_nachricht",
            "mitteilung",
            "anfrage",
            "ihre_anfrage",
            "votre_message",
            "commentaire",
            "commentaires",
            "mensaje",
            "comentario",
            "comentarios",
            "consulta",
        ],
    ),
];

/// Wrappers of `wrapper[field]` names (Elementor's `form_fields[email]`, PHP-style
/// `contact[phone]`) whose inner name is what the field means.
const WRAPPERS: &[&str] = &[
    "form_fields",
    "fields",
    "field",
    "contact",
    "lead",
    "form",
    "data",
];

/// Sorts a form's fields into contact data, message, campaign tags and custom fields.
pub fn map_fields(fields: Vec<(String, Value)>, honeypot: Option<&str>) -> MappedFields {
    let honeypot = honeypot.filter(|h| !h.trim().is_empty()).map(|h| {
        let key = match_key(h);
        (h.trim(), key)
    });
    let mut mapped = MappedFields::default();
    let mut custom = CustomFields::default();
    for (name, value) in unwrap_objects(fields) {
        let key = match_key(&name);
        if let Some((honeypot_name, honeypot_key)) = &honeypot {
            let same = if honeypot_key.is_empty() {
                name.trim() == *honeypot_name
            } else {
                key == *honeypot_key
            };
            if same {
                mapped.honeypot_filled |= is_filled(&value);
                continue;
            }
        }
        if is_utm(&name) {
            match into_text(value) {
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => match mapped.utm.get(&name) {
                    None => {
                        mapped.utm.insert(name, text);
                    }
                    Some(first) if *first == text => {}
                    // A second, different tag is kept rather than silently dropped.
                    Some(_) => custom.push(name, Value::String(text)),
                },
                Err(value) => custom.push(name, value),
            }
            continue;
        }
        let Some(role) = role_of(&key) else {
            custom.push(name, value);
            continue;
        };
        match into_text(value) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => {
                let slot = mapped.slot(role);
                match slot {
                    None => *slot = Some(text),
                    Some(first) if *first == text => {}
                    // The first value wins; a different later one is kept rather than lost.
                    Some(_) => custom.push(name, Value::String(text)),
                }
            }
            Err(value) => custom.push(name, value),
        }
    }
    mapped.fields = custom.into_map();
    mapped
}

/// A JSON body's known wrapper object (`{"contact": {"email": ...}}`), read as the
/// bracketed names an urlencoded body of the same builder sends (`contact[email]`).
fn unwrap_objects(fields: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match value {
            Value::Object(inner) if is_wrapper(&canonical(&name)) => {
                out.extend(inner.into_iter().map(|(k, v)| (format!("{name}[{k}]"), v)));
            }
            value => out.push((name, value)),
        }
    }
    out
}

fn is_wrapper(key: &str) -> bool {
    WRAPPERS
        .iter()
        .any(|w| w.bytes().filter(|b| *b != b'_').eq(key.bytes()))
}

impl MappedFields {
    fn slot(&mut self, role: Role) -> &mut Option<String> {
        match role {
            Role::FullName => &mut self.contact.full_name,
            Role::FirstName => &mut self.contact.first_name,
            Role::LastName => &mut self.contact.last_name,
            Role::Email => &mut self.contact.email,
            Role::Phone => &mut self.contact.phone,
            Role::Company => &mut self.contact.company,
            Role::Message => &mut self.message,
        }
    }
}

/// Custom fields in arrival order, repeated names collected.
#[derive(Default)]
struct CustomFields {
    entries: Vec<(String, Vec<Value>)>,
    index: HashMap<String, usize>,
}

impl CustomFields {
    fn push(&mut self, name: String, value: Value) {
        match self.index.get(&name).and_then(|&i| self.entries.get_mut(i)) {
            Some((_, values)) => values.push(value),
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, vec![value]));
            }
        }
    }

    fn into_map(self) -> Map<String, Value> {
        self.entries
            .into_iter()
            .map(|(name, values)| {
                // Only a repeated name becomes an array, so a single array value keeps
                // its shape and is not wrapped a second time.
                let value = match <[Value; 1]>::try_from(values) {
                    Ok([single]) => single,
                    Err(values) => Value::Array(values),
                };
                (name, value)
            })
            .collect()
    }
}

/// A scalar as text (a phone typed into a number field arrives as a JSON number);
/// anything else is handed back untouched.
fn into_text(value: Value) -> Result<String, Value> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(other),
    }
}

/// Whether a honeypot value shows that something (a bot) filled it in.
fn is_filled(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(_) => true,
        Value::String(text) => !text.trim().is_empty(),
        Value::Array(items) => items.iter().any(is_filled),
        Value::Object(map) => !map.is_empty(),
    }
}

fn is_utm(name: &str) -> bool {
    let name = name.trim();
    name.len() > 4
        && name
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("utm_"))
}

/// Words that introduce a phone extension after a number ("ext. 204", "int. 12",
/// "wew. 112", "máy lẻ 15", "x204"), without accents; accents and case are ignored when
/// matching, and a space stands for any run of whitespace. Shared by the normaliser
/// (typed numbers) and the mail reader (numbers in running text).
pub const PHONE_EXTENSION_WORDS: &[&str] = &[
    "extension",
    "ext",
    "interno",
    "int",
    "wewn",
    "wew",
    "may le",
    "x",
];

/// Names of a field that holds the sender's company website (compared like the other
/// aliases). A form keeps such a field among its custom fields (the word alone is too
/// ambiguous to be contact data); the normaliser reads a company domain key from it, and
/// the companies import reads its domain column by the same names.
const WEBSITE_ALIASES: &[&str] = &[
    // EN
    "website",
    "web_site",
    "company_website",
    "company_url",
    "homepage",
    "web",
    "www",
    "domain",
    // IT
    "sito",
    "sito_web",
    "sito_internet",
    "dominio",
    // PL
    "strona",
    "strona_www",
    "strona_internetowa",
    "domena",
    // VI
    "trang_web",
    "ten_mien",
    // DE
    "webseite",
    // FR
    "site_web",
    "site_internet",
    // ES
    "sitio_web",
    "pagina_web",
];

/// Whether a field of this name holds the sender's company website.
pub fn is_website_field(name: &str) -> bool {
    let key = match_key(name);
    !key.is_empty()
        && WEBSITE_ALIASES
            .iter()
            .any(|alias| alias.bytes().filter(|b| *b != b'_').eq(key.bytes()))
}

fn role_of(key: &str) -> Option<Role> {
    if key.is_empty() {
        return None;
    }
    ALIASES
        .iter()
        .find(|(_, aliases)| {
            aliases
                .iter()
                .any(|alias| alias.bytes().filter(|b| *b != b'_').eq(key.bytes()))
        })
        .map(|(role, _)| *role)
}

/// The comparable form of a field name: a known `wrapper[inner]` unwrapped, then
/// [`canonical`].
fn match_key(name: &str) -> String {
    let name = name.trim();
    if let Some((wrapper, inner)) = name.strip_suffix(']').and_then(|rest| rest.split_once('['))
        && !inner.contains(['[', ']'])
        && is_wrapper(&canonical(wrapper))
    {
        return canonical(inner);
    }
    canonical(name)
}

/// The comparable form of a name: folded, letters and digits only.
fn canonical(name: &str) -> String {
    crate::fold::fold_compact(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn website_fields_are_known_by_their_names_in_every_focus_language() {
        for name in [
            "website",
            "Website",
            "company-website",
            "Sito web",
            "sitoWeb",
            "strona_www",
            "Trang web",
            "tên miền",
            "Webseite",
            "site_web",
            "sitio-web",
            "fields[website]",
        ] {
            assert!(is_website_field(name), "{name}");
        }
        for name in ["", "web_form_id", "email", "sito_preferito", "company"] {
            assert!(!is_website_field(name), "{name}");
        }
    }
    use crate::http::body::parse_body;
    use proptest::prelude::*;
    use serde_json::json;

    fn pairs(list: &[(&str, Value)]) -> Vec<(String, Value)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect()
    }

    fn urlencoded(body: &[u8]) -> Vec<(String, Value)> {
        parse_body(Some("application/x-www-form-urlencoded"), body)
            .expect("parses")
            .fields
    }

    #[test]
    fn an_italian_contact_form_maps_onto_contact_message_and_tags() {
        let fields = urlencoded(
            b"nome=Niccol%C3%B2&cognome=Fabbri&email=Niccolo.Fabbri%40Example.IT&telefono=%2B39+02+8736+1234&azienda=Fabbri+Arredamenti+S.r.l.&messaggio=Buongiorno%2C%0D%0Astiamo&privacy=on&website=&utm_source=google&utm_medium=cpc",
        );
        let mapped = map_fields(fields, Some("website"));
        assert_eq!(
            mapped.contact,
            ContactHints {
                full_name: None,
                first_name: Some("Niccolò".into()),
                last_name: Some("Fabbri".into()),
                email: Some("Niccolo.Fabbri@Example.IT".into()),
                phone: Some("+39 02 8736 1234".into()),
                company: Some("Fabbri Arredamenti S.r.l.".into()),
                messenger: None,
            }
        );
        assert_eq!(mapped.message.as_deref(), Some("Buongiorno,\r\nstiamo"));
        assert_eq!(
            mapped.utm,
            BTreeMap::from([
                ("utm_source".to_owned(), "google".to_owned()),
                ("utm_medium".to_owned(), "cpc".to_owned()),
            ])
        );
        assert_eq!(Value::Object(mapped.fields), json!({"privacy": "on"}));
        assert!(!mapped.honeypot_filled);
    }

    #[test]
    fn a_multipart_form_maps_its_text_fields_and_leaves_files_out() {
        let body = "------WebKitFormBoundaryq7Vd3Xk2Lm9PzR4e\r\n\
Content-Disposition: form-data; name=\"nome\"\r\n\r\nAlessandro\r\n\
------WebKitFormBoundaryq7Vd3Xk2Lm9PzR4e\r\n\
Content-Disposition: form-data; name=\"messaggio\"\r\n\r\nBuonasera,\r\nallego la planimetria.\r\n\
------WebKitFormBoundaryq7Vd3Xk2Lm9PzR4e\r\n\
Content-Disposition: form-data; name=\"allegato\"; filename=\"planimetria.txt\"\r\n\
Content-Type: text/plain\r\n\r\nPiano terra: 180 m2, open space\r\nPrimo piano: 140 m2, 3 uffici\r\n\r\n\
------WebKitFormBoundaryq7Vd3Xk2Lm9PzR4e\r\n\
Content-Disposition: form-data; name=\"utm_source\"\r\n\r\nnewsletter\r\n\
------WebKitFormBoundaryq7Vd3Xk2Lm9PzR4e--\r\n";
        let parsed = parse_body(
            Some("multipart/form-data; boundary=----WebKitFormBoundaryq7Vd3Xk2Lm9PzR4e"),
            body.as_bytes(),
        )
        .expect("parses");
        let mapped = map_fields(parsed.fields, None);
        assert_eq!(mapped.contact.first_name.as_deref(), Some("Alessandro"));
        assert_eq!(
            mapped.message.as_deref(),
            Some("Buonasera,\r\nallego la planimetria.")
        );
        assert_eq!(
            mapped.utm.get("utm_source").map(String::as_str),
            Some("newsletter")
        );
        assert!(mapped.fields.is_empty());
    }

    #[test]
    fn a_json_phone_sent_as_a_number_becomes_text_and_custom_fields_keep_their_types() {
        let parsed = parse_body(
            Some("application/json"),
            br#"{"full_name":"Daniel Whitaker","phone":3471234567,"budget_usd":45000,"interests":["a","b"],"consenso_privacy":true}"#,
        )
        .expect("parses");
        let mapped = map_fields(parsed.fields, None);
        assert_eq!(mapped.contact.full_name.as_deref(), Some("Daniel Whitaker"));
        assert_eq!(mapped.contact.phone.as_deref(), Some("3471234567"));
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"budget_usd": 45000, "interests": ["a", "b"], "consenso_privacy": true})
        );
    }

    #[test]
    fn names_match_across_case_separators_and_diacritics() {
        let mapped = map_fields(
            pairs(&[
                (" E-Mail ", json!("a@b.it")),
                ("Wiadomość", json!("Dzień dobry")),
                ("Số điện thoại", json!("0912 345 678")),
                ("Họ và tên", json!("Nguyễn Văn An")),
                ("Tên công ty", json!("Công ty TNHH An Phát")),
            ]),
            None,
        );
        assert_eq!(mapped.contact.email.as_deref(), Some("a@b.it"));
        assert_eq!(mapped.message.as_deref(), Some("Dzień dobry"));
        assert_eq!(mapped.contact.phone.as_deref(), Some("0912 345 678"));
        assert_eq!(mapped.contact.full_name.as_deref(), Some("Nguyễn Văn An"));
        assert_eq!(
            mapped.contact.company.as_deref(),
            Some("Công ty TNHH An Phát")
        );
        assert!(mapped.fields.is_empty());
    }

    #[test]
    fn common_spellings_in_each_language_are_recognised() {
        let cases: &[(&str, Role)] = &[
            ("E_Mail", Role::Email),
            ("email", Role::Email),
            ("Email Address", Role::Email),
            ("your-email", Role::Email),
            ("Indirizzo e-mail", Role::Email),
            ("Adres e-mail", Role::Email),
            ("E-Mail-Adresse", Role::Email),
            ("Adresse e-mail", Role::Email),
            ("Correo electrónico", Role::Email),
            ("your-name", Role::FullName),
            ("Nome e cognome", Role::FullName),
            ("Imię i nazwisko", Role::FullName),
            ("ho_ten", Role::FullName),
            ("Nom et prénom", Role::FullName),
            ("Vollständiger Name", Role::FullName),
            ("firstName", Role::FirstName),
            ("Vorname", Role::FirstName),
            ("Prénom", Role::FirstName),
            ("Nachname", Role::LastName),
            ("Apellidos", Role::LastName),
            ("Phone Number", Role::Phone),
            ("Numer telefonu", Role::Phone),
            ("Telefonnummer", Role::Phone),
            ("Téléphone", Role::Phone),
            ("Teléfono", Role::Phone),
            ("cellulare", Role::Phone),
            ("SĐT", Role::Phone),
            ("Ragione sociale", Role::Company),
            ("Società", Role::Company),
            ("Nazwa firmy", Role::Company),
            ("Société", Role::Company),
            ("Unternehmen", Role::Company),
            ("Treść wiadomości", Role::Message),
            ("Nội dung", Role::Message),
            ("Ihre Nachricht", Role::Message),
            ("your-message", Role::Message),
            ("Mensaje", Role::Message),
            ("form_fields[email]", Role::Email),
            ("contact[phone]", Role::Phone),
        ];
        for (name, role) in cases {
            assert_eq!(role_of(&match_key(name)), Some(*role), "{name}");
        }
    }

    #[test]
    fn unrelated_fields_are_never_taken_for_contact_data() {
        for name in [
            "subject",
            "oggetto",
            "website",
            "fax",
            "email2",
            "confirm_email",
            "newsletter_email_optin",
            "product_name",
            "file_name",
            "username",
            "privacy",
            "billing[email][0]",
            "friend[email]",
            "",
            "---",
        ] {
            assert_eq!(role_of(&match_key(name)), None, "{name}");
        }
    }

    #[test]
    fn every_alias_is_lower_case_ascii_and_belongs_to_one_role() {
        let mut seen = HashMap::new();
        for (role, aliases) in ALIASES {
            for alias in *aliases {
                assert!(
                    alias.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{alias}"
                );
                let key: String = alias.chars().filter(|c| *c != '_').collect();
                if let Some(other) = seen.insert(key, *role) {
                    panic!("`{alias}` is listed for both {other:?} and {role:?}");
                }
            }
        }
    }

    #[test]
    fn the_first_non_empty_contact_value_wins_and_a_different_later_one_is_kept() {
        let mapped = map_fields(
            pairs(&[
                ("email", json!("  ")),
                ("email", json!("first@example.com")),
                ("E-mail", json!("first@example.com")),
                ("mail", json!("second@example.com")),
            ]),
            None,
        );
        assert_eq!(mapped.contact.email.as_deref(), Some("first@example.com"));
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"mail": "second@example.com"})
        );
    }

    #[test]
    fn blank_contact_values_are_absent() {
        let mapped = map_fields(
            pairs(&[
                ("phone", json!("")),
                ("company", json!(" \t\r\n")),
                ("message", json!("")),
            ]),
            None,
        );
        assert_eq!(mapped, MappedFields::default());
    }

    #[test]
    fn contact_values_pass_through_verbatim() {
        let mapped = map_fields(pairs(&[("name", json!("  Ada  Lovelace \n"))]), None);
        assert_eq!(
            mapped.contact.full_name.as_deref(),
            Some("  Ada  Lovelace \n")
        );
    }

    #[test]
    fn structured_or_null_contact_values_are_kept_as_custom_fields() {
        let mapped = map_fields(
            pairs(&[
                ("phone", json!(["+39 02 1", "+39 02 2"])),
                ("company", Value::Null),
                ("name", json!({"first": "Ada"})),
                ("consenso", json!(false)),
                ("message", json!(true)),
            ]),
            None,
        );
        assert_eq!(mapped.contact, ContactHints::default());
        assert_eq!(mapped.message.as_deref(), Some("true"));
        assert_eq!(
            Value::Object(mapped.fields),
            json!({
                "phone": ["+39 02 1", "+39 02 2"],
                "company": null,
                "name": {"first": "Ada"},
                "consenso": false,
            })
        );
    }

    #[test]
    fn a_wrapper_object_holds_contact_fields_as_its_bracketed_names_do() {
        let mapped = map_fields(
            pairs(&[
                (
                    "contact",
                    json!({"email": "ada@example.com", "telefono": "347 123 4567", "note": "x"}),
                ),
                ("message", json!("Preventivo")),
                ("address", json!({"city": "Milano"})),
            ]),
            None,
        );
        assert_eq!(mapped.contact.email.as_deref(), Some("ada@example.com"));
        assert_eq!(mapped.contact.phone.as_deref(), Some("347 123 4567"));
        assert_eq!(mapped.message.as_deref(), Some("Preventivo"));
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"contact[note]": "x", "address": {"city": "Milano"}})
        );
    }

    #[test]
    fn repeated_custom_names_become_an_array_in_order() {
        let fields = urlencoded(b"prodotti=scrivanie&prodotti=sedute&note=&prodotti=armadi");
        let mapped = map_fields(fields, None);
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"prodotti": ["scrivanie", "sedute", "armadi"], "note": ""})
        );
    }

    #[test]
    fn a_single_array_value_is_not_wrapped_again() {
        let mapped = map_fields(
            pairs(&[("tags", json!(["a"])), ("x", json!([1])), ("x", json!(2))]),
            None,
        );
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"tags": ["a"], "x": [[1], 2]})
        );
    }

    #[test]
    fn utm_tags_keep_the_name_as_sent_and_skip_empty_values() {
        let mapped = map_fields(
            pairs(&[
                ("UTM_Source", json!("")),
                ("UTM_Source", json!("google")),
                ("utm_campaign", json!(2024)),
                ("utm_term", json!(null)),
                ("utm_", json!("x")),
            ]),
            None,
        );
        assert_eq!(
            mapped.utm,
            BTreeMap::from([
                ("UTM_Source".to_owned(), "google".to_owned()),
                ("utm_campaign".to_owned(), "2024".to_owned()),
            ])
        );
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"utm_term": null, "utm_": "x"})
        );
    }

    #[test]
    fn a_filled_honeypot_marks_the_form_and_is_never_kept() {
        let mapped = map_fields(
            pairs(&[
                ("email", json!("bot@spam.example")),
                ("Web-Site", json!("http://spam.example")),
            ]),
            Some("website"),
        );
        assert!(mapped.honeypot_filled);
        assert!(mapped.fields.is_empty());
        assert_eq!(mapped.contact.email.as_deref(), Some("bot@spam.example"));
    }

    #[test]
    fn a_blank_honeypot_is_a_human() {
        for value in [json!(""), json!("   "), Value::Null, json!(false)] {
            let mapped = map_fields(pairs(&[("website", value.clone())]), Some("website"));
            assert!(!mapped.honeypot_filled, "{value}");
            assert!(mapped.fields.is_empty());
        }
    }

    #[test]
    fn a_honeypot_named_like_a_contact_field_never_becomes_contact_data() {
        let mapped = map_fields(
            pairs(&[("email", json!("")), ("e-mail", json!("real@example.com"))]),
            Some("email"),
        );
        assert!(mapped.honeypot_filled);
        assert_eq!(mapped.contact.email, None);
    }

    #[test]
    fn without_a_configured_honeypot_the_field_is_an_ordinary_custom_field() {
        let mapped = map_fields(pairs(&[("website", json!("https://ex.it"))]), None);
        assert!(!mapped.honeypot_filled);
        assert_eq!(
            Value::Object(mapped.fields),
            json!({"website": "https://ex.it"})
        );
        let blank = map_fields(pairs(&[("website", json!("x"))]), Some("  "));
        assert!(!blank.honeypot_filled);
    }

    #[test]
    fn emails_and_phones_inside_the_message_or_custom_fields_are_not_scraped() {
        let mapped = map_fields(
            pairs(&[
                (
                    "messaggio",
                    json!("scrivetemi a mario@rossi.it o al 333 1234567"),
                ),
                ("note", json!("mario@rossi.it")),
            ]),
            None,
        );
        assert_eq!(mapped.contact, ContactHints::default());
    }

    proptest! {
        #[test]
        fn arbitrary_fields_never_panic(
            fields in proptest::collection::vec((any::<String>(), any::<String>()), 0..12),
            honeypot in proptest::option::of(any::<String>()),
        ) {
            let fields = fields.into_iter().map(|(n, v)| (n, Value::String(v))).collect();
            let _ = map_fields(fields, honeypot.as_deref());
        }

        #[test]
        fn every_non_blank_custom_value_is_kept(values in proptest::collection::vec("[a-z ]{0,8}", 1..6)) {
            let fields = values.iter().map(|v| ("prodotto".to_owned(), json!(v))).collect();
            let mapped = map_fields(fields, None);
            let expected = if values.len() == 1 { json!(values[0]) } else { json!(values) };
            prop_assert_eq!(mapped.fields.get("prodotto"), Some(&expected));
        }
    }
}
