//! From an [`Inquiry`] to a [`Lead`]: the cleaned contact data and its identity keys.

use std::fmt;

use ingest::{FieldProblem, Inquiry};
use serde::{Deserialize, Serialize};

use crate::company::company_key;
use crate::email::EmailAddress;
use crate::keys::KeyRules;
use crate::phone::{PhoneE164, Region, parse_phone};
use crate::text::{fold_key, join_name, verbatim_text};

/// A key that says "this is the same person" when two leads or contacts share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum IdentityKey {
    /// A normalised email address.
    Email(String),
    /// An E.164 phone number, with `;ext=` and the extension when one was typed
    /// (`+390212345678;ext=12`): behind one switchboard number sit many people.
    Phone(String),
    /// A messenger account: the platform and its user id (`telegram:12345`).
    Messenger(String),
}

/// A key that says "this is the same company".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum CompanyKey {
    /// The company's own domain (from its website or a non-free-mail address).
    Domain(String),
    /// The company name folded, legal form removed.
    Name(String),
}

impl CompanyKey {
    /// The key as one string, e.g. `domain:example.it`, `name:fabbri arredamenti`.
    pub fn as_key(&self) -> String {
        match self {
            CompanyKey::Domain(v) => format!("domain:{v}"),
            CompanyKey::Name(v) => format!("name:{v}"),
        }
    }

    /// The key under which a company lists a number as its own (E.164, no extension):
    /// spelled as the person key of that number, `phone:+390212345678`.
    pub fn phone_key(number: &str) -> String {
        IdentityKey::Phone(number.to_owned()).as_key()
    }
}

/// A person key typed by someone that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{key}` is not a person key: {problem}; use email:<address>, phone:<+E.164 number> or messenger:<platform>:<id>"
)]
pub struct InvalidIdentityKey {
    key: String,
    problem: String,
}

impl IdentityKey {
    /// The key as one string, e.g. `email:ana@example.com`, `phone:+393471234567`.
    pub fn as_key(&self) -> String {
        self.to_string()
    }

    /// The kind as stored beside a contact's key: `email`, `phone` or `messenger`.
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityKey::Email(_) => "email",
            IdentityKey::Phone(_) => "phone",
            IdentityKey::Messenger(_) => "messenger",
        }
    }

    /// The value after the kind (`ana@example.com`, `+393471234567;ext=12`,
    /// `telegram:12345`).
    pub fn value(&self) -> &str {
        match self {
            IdentityKey::Email(v) | IdentityKey::Phone(v) | IdentityKey::Messenger(v) => v,
        }
    }

    /// The person key of a checked email address.
    pub fn email(address: &EmailAddress) -> Self {
        IdentityKey::Email(address.as_str().to_owned())
    }

    /// A key as stored by [`IdentityKey::as_key`], read back without checking its value
    /// again (rules change between versions; what was stored stays readable).
    pub fn from_stored(stored: &str) -> Option<Self> {
        let (kind, value) = stored.split_once(':')?;
        let value = value.to_owned();
        match kind {
            "email" => Some(IdentityKey::Email(value)),
            "phone" => Some(IdentityKey::Phone(value)),
            "messenger" => Some(IdentityKey::Messenger(value)),
            _ => None,
        }
    }

    /// A key typed by a person (an API filter), checked and normalised: the address
    /// lower-cased, the number in E.164 with an optional `;ext=`.
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentityKey> {
        let invalid = |problem: String| InvalidIdentityKey {
            key: raw.to_owned(),
            problem,
        };
        let (kind, value) = raw
            .trim()
            .split_once(':')
            .ok_or_else(|| invalid("it has no `kind:` prefix".into()))?;
        match kind {
            "email" => EmailAddress::parse(value)
                .map(|address| IdentityKey::email(&address))
                .map_err(|e| invalid(e.to_string())),
            "phone" => {
                let (number, extension) = match value.split_once(";ext=") {
                    Some((number, ext)) if !ext.trim().is_empty() => (number, Some(ext)),
                    Some(_) => return Err(invalid("the extension after `;ext=` is empty".into())),
                    None => (value, None),
                };
                PhoneE164::try_from(number.to_owned())
                    .map(|number| IdentityKey::phone(&number, extension))
                    .map_err(|e| invalid(format!("{e} (URL-encode the + as %2B)")))
            }
            "messenger" => match value.split_once(':') {
                Some((platform, id))
                    if !platform.is_empty()
                        && !id.is_empty()
                        && !value.chars().any(char::is_whitespace) =>
                {
                    Ok(IdentityKey::Messenger(value.to_owned()))
                }
                _ => Err(invalid(
                    "a messenger key is `messenger:<platform>:<id>`, without spaces".into(),
                )),
            },
            _ => Err(invalid(format!("`{kind}` is not a kind of person key"))),
        }
    }

    /// The person key of a phone number and the extension typed with it, if any.
    pub fn phone(number: &PhoneE164, extension: Option<&str>) -> Self {
        match extension.map(str::trim).filter(|e| !e.is_empty()) {
            Some(ext) => IdentityKey::Phone(format!("{};ext={ext}", number.as_str())),
            None => IdentityKey::Phone(number.as_str().to_owned()),
        }
    }

    /// True for keys that belong to one person only (an email address, a messenger
    /// account). A phone number is weak: a switchboard, a shop or a family shares one.
    pub fn is_strong(&self) -> bool {
        !matches!(self, IdentityKey::Phone(_))
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityKey::Email(v) => write!(f, "email:{v}"),
            IdentityKey::Phone(v) => write!(f, "phone:{v}"),
            IdentityKey::Messenger(v) => write!(f, "messenger:{v}"),
        }
    }
}

/// An inquiry with its contact data cleaned: what the store files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// The inquiry it came from, raw payload included.
    pub inquiry: Inquiry,
    /// The person's name, NFC and trimmed, otherwise as typed.
    pub name: Option<String>,
    /// The checked, lower-cased email address.
    pub email: Option<EmailAddress>,
    /// The phone number in E.164.
    pub phone: Option<PhoneE164>,
    /// The extension split off the phone number.
    pub phone_extension: Option<String>,
    /// The company name, NFC and trimmed.
    pub company: Option<String>,
    /// The message, NFC and trimmed, otherwise byte for byte.
    pub message: Option<String>,
    /// Values that were sent but could not be used (their raw form stays in the inquiry).
    pub problems: Vec<FieldProblem>,
    /// Keys that identify the person, strongest first.
    pub identity_keys: Vec<IdentityKey>,
    /// Keys that identify the person's company, strongest first.
    #[serde(default)]
    pub company_keys: Vec<CompanyKey>,
}

/// [`Lead::primary_key`] from a lead's identity keys and inquiry id alone (what a spooled
/// entry is read for).
pub fn primary_key_of(identity_keys: &[IdentityKey], inquiry_id: &impl fmt::Display) -> String {
    identity_keys
        .first()
        .map(IdentityKey::as_key)
        .unwrap_or_else(|| format!("inquiry:{inquiry_id}"))
}

impl Lead {
    /// True when there is a way to reach the person (a valid email or phone, or a
    /// messenger account to answer on).
    pub fn is_contactable(&self) -> bool {
        self.email.is_some()
            || self.phone.is_some()
            || self
                .identity_keys
                .iter()
                .any(|k| matches!(k, IdentityKey::Messenger(_)))
    }

    /// The key used to keep one person's inquiries together (shard choice): the strongest
    /// identity key, else the inquiry id.
    pub fn primary_key(&self) -> String {
        primary_key_of(&self.identity_keys, &self.inquiry.id)
    }

    /// A short title for lists: the company, else the name, else the channel and source.
    pub fn title(&self) -> String {
        match (&self.company, &self.name) {
            (Some(company), _) => company.clone(),
            (None, Some(name)) => name.clone(),
            (None, None) => format!(
                "{} inquiry from {}",
                self.inquiry.channel, self.inquiry.source
            ),
        }
    }
}

/// The company domain from a website field, if the inquiry has one that parses and
/// may be a key.
fn website_domain(
    fields: &serde_json::Map<String, serde_json::Value>,
    rules: &KeyRules,
) -> Option<String> {
    fields.iter().find_map(|(name, value)| {
        if !ingest::fields::is_website_field(name) {
            return None;
        }
        value.as_str().and_then(|raw| rules.website_key(raw))
    })
}

/// Cleans an inquiry's contact data with the built-in [`KeyRules`]. Never fails: what
/// cannot be used is listed in [`Lead::problems`] and its raw value stays in the inquiry.
pub fn normalize(inquiry: Inquiry) -> Lead {
    normalize_with(inquiry, KeyRules::builtin())
}

/// Cleans an inquiry's contact data; `rules` decide which values may be keys
/// (placeholder addresses, role mailboxes and platform websites are kept on the lead
/// but identify nobody).
pub fn normalize_with(inquiry: Inquiry, rules: &KeyRules) -> Lead {
    let hints = &inquiry.contact;
    let mut problems = Vec::new();

    let name = join_name(
        hints.full_name.as_deref(),
        hints.first_name.as_deref(),
        hints.last_name.as_deref(),
    );

    let email = hints
        .email
        .as_deref()
        .filter(|raw| !raw.trim().is_empty())
        .and_then(|raw| match EmailAddress::parse(raw) {
            Ok(email) => Some(email),
            Err(error) => {
                problems.push(FieldProblem {
                    field: "email".into(),
                    problem: error.to_string(),
                });
                None
            }
        });

    let region = inquiry
        .default_region
        .as_deref()
        .and_then(|r| Region::parse(r).ok());
    let (phone, phone_extension) = match hints.phone.as_deref().filter(|raw| !raw.trim().is_empty())
    {
        None => (None, None),
        Some(raw) => match parse_phone(raw, region) {
            Ok(parsed) => (Some(parsed.number), parsed.extension),
            Err(error) => {
                problems.push(FieldProblem {
                    field: "phone".into(),
                    problem: error.to_string(),
                });
                (None, None)
            }
        },
    };

    let mut identity_keys = Vec::new();
    if let Some(key) = email.as_ref().and_then(|e| rules.person_key(e)) {
        identity_keys.push(key);
    }
    if let Some(phone) = &phone {
        identity_keys.push(IdentityKey::phone(phone, phone_extension.as_deref()));
    }
    if let Some(handle) = &hints.messenger {
        let platform = fold_key(&handle.platform);
        let user_id = handle.user_id.trim();
        if !platform.is_empty() && !user_id.is_empty() {
            identity_keys.push(IdentityKey::Messenger(format!("{platform}:{user_id}")));
        }
    }

    let company = hints.company.as_deref().and_then(verbatim_text);
    let mut company_keys = Vec::new();
    if let Some(domain) = website_domain(&inquiry.fields, rules) {
        company_keys.push(CompanyKey::Domain(domain));
    }
    if let Some(domain) = email.as_ref().and_then(|e| rules.email_domain_key(e))
        && !company_keys.contains(&CompanyKey::Domain(domain.clone()))
    {
        company_keys.push(CompanyKey::Domain(domain));
    }
    if let Some(key) = company.as_deref().and_then(company_key) {
        company_keys.push(CompanyKey::Name(key));
    }

    Lead {
        name,
        email,
        phone,
        phone_extension,
        company,
        message: inquiry.message.as_deref().and_then(verbatim_text),
        problems,
        identity_keys,
        company_keys,
        inquiry,
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A lead with an empty inquiry, for rule tests.
    pub(crate) fn lead() -> Lead {
        let inquiry = Inquiry {
            id: ingest::InquiryId::new_unique(),
            channel: ingest::Channel::Form,
            source: "test".into(),
            external_id: None,
            received_at: chrono::Utc::now(),
            default_region: None,
            contact: ingest::ContactHints::default(),
            message: None,
            utm: Default::default(),
            fields: Default::default(),
            attachments: Vec::new(),
            spam: None,
            dedup: None,
            raw: ingest::RawPayload {
                content_type: None,
                body: Default::default(),
            },
            event: None,
        };
        normalize(inquiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_person_key_is_checked_and_normalised() {
        let cases = [
            ("email:Ana@Example.COM", "email:ana@example.com"),
            ("phone:+390287361234", "phone:+390287361234"),
            ("phone:+390287361234;ext=12", "phone:+390287361234;ext=12"),
            ("messenger:telegram:4242", "messenger:telegram:4242"),
        ];
        for (raw, stored) in cases {
            let key = IdentityKey::parse(raw).unwrap();
            assert_eq!(key.as_key(), stored, "{raw}");
            assert_eq!(IdentityKey::from_stored(stored), Some(key));
        }
        for bad in [
            "ana@example.com",
            "email:not-an-address",
            "phone:0287361234",
            "phone: 390287361234",
            "phone:+390287361234;ext=",
            "messenger:telegram",
            "messenger::1",
            "fax:+390287361234",
        ] {
            let error = IdentityKey::parse(bad).unwrap_err().to_string();
            assert!(error.contains("is not a person key"), "{bad}: {error}");
        }
    }

    fn hints(contact: ingest::ContactHints, region: &str) -> Lead {
        let mut lead = tests_support::lead();
        lead.inquiry.contact = contact;
        lead.inquiry.default_region = Some(region.into());
        normalize(lead.inquiry)
    }

    #[test]
    fn identity_keys_come_strongest_first_and_company_keys_skip_free_mail() {
        let lead = hints(
            ingest::ContactHints {
                email: Some("Anna@Fabbri.Example.IT".into()),
                phone: Some("02 8736 1234".into()),
                company: Some("Fabbri Arredamenti S.r.l.".into()),
                messenger: Some(ingest::MessengerHandle {
                    platform: "Telegram".into(),
                    user_id: " 123456 ".into(),
                    username: None,
                }),
                ..Default::default()
            },
            "IT",
        );
        let keys: Vec<String> = lead.identity_keys.iter().map(IdentityKey::as_key).collect();
        assert_eq!(
            keys,
            [
                "email:anna@fabbri.example.it",
                "phone:+390287361234",
                "messenger:telegram:123456"
            ]
        );
        let company: Vec<String> = lead.company_keys.iter().map(CompanyKey::as_key).collect();
        assert_eq!(
            company,
            ["domain:fabbri.example.it", "name:fabbri arredamenti"]
        );

        let free = hints(
            ingest::ContactHints {
                email: Some("anna@gmail.com".into()),
                ..Default::default()
            },
            "IT",
        );
        assert!(free.company_keys.is_empty());
    }

    #[test]
    fn a_phone_extension_is_part_of_the_person_key() {
        let at = |phone: &str| {
            hints(
                ingest::ContactHints {
                    phone: Some(phone.into()),
                    ..Default::default()
                },
                "IT",
            )
            .identity_keys
        };
        let twelve = at("02 8736 1234 int. 12");
        let thirty_four = at("02 8736 1234 int. 34");
        assert_eq!(twelve, [IdentityKey::Phone("+390287361234;ext=12".into())]);
        assert_ne!(twelve, thirty_four, "two people behind one switchboard");
        assert_eq!(
            at("02 8736 1234"),
            [IdentityKey::Phone("+390287361234".into())]
        );
        assert!(!twelve[0].is_strong());
        assert!(IdentityKey::Email("a@example.it".into()).is_strong());
        assert!(IdentityKey::Messenger("telegram:1".into()).is_strong());
    }

    #[test]
    fn a_website_field_gives_the_strongest_company_key() {
        let mut lead = tests_support::lead();
        lead.inquiry.contact.email = Some("anna@gmail.com".into());
        lead.inquiry.fields.insert(
            "Sito web".into(),
            serde_json::json!("https://www.Fabbri.example.it/chi-siamo"),
        );
        let lead = normalize(lead.inquiry);
        let keys: Vec<String> = lead.company_keys.iter().map(CompanyKey::as_key).collect();
        assert_eq!(keys, ["domain:fabbri.example.it"]);
    }

    fn keys_of(lead: &Lead) -> (Vec<String>, Vec<String>) {
        (
            lead.identity_keys.iter().map(IdentityKey::as_key).collect(),
            lead.company_keys.iter().map(CompanyKey::as_key).collect(),
        )
    }

    fn with_email(email: &str) -> Lead {
        hints(
            ingest::ContactHints {
                email: Some(email.into()),
                phone: Some("02 8736 1234".into()),
                ..Default::default()
            },
            "IT",
        )
    }

    #[test]
    fn a_placeholder_address_stays_on_the_lead_and_identifies_nobody() {
        for raw in [
            "test@test.com",
            "TEST@Test.com",
            "asdf@asdf.com",
            "email@email.com",
            "a@a.com",
            "noreply@shop.example.it",
            "no-reply+orders@shop.example.it",
            "test@fabbri.example.it",
            "anna@mailinator.com",
        ] {
            let lead = with_email(raw);
            assert_eq!(
                lead.email.as_ref().map(|e| e.as_str()),
                Some(raw.to_lowercase().as_str()),
                "{raw}: the address stays on the lead"
            );
            let (person, company) = keys_of(&lead);
            assert_eq!(person, ["phone:+390287361234"], "{raw}");
            assert!(company.is_empty(), "{raw}: {company:?}");
            assert!(lead.is_contactable());
        }
    }

    #[test]
    fn a_role_mailbox_gives_the_company_domain_but_no_person_key() {
        for raw in [
            "info@fabbri.example.it",
            "Info+Web@Fabbri.Example.IT",
            "office@fabbri.example.it",
            "biuro@fabbri.example.it",
            "kontakt@fabbri.example.it",
            "contact@fabbri.example.it",
            "sales@fabbri.example.it",
        ] {
            let (person, company) = keys_of(&with_email(raw));
            assert_eq!(person, ["phone:+390287361234"], "{raw}");
            assert_eq!(company, ["domain:fabbri.example.it"], "{raw}");
        }
        // A person's own address that merely starts like a role mailbox.
        let (person, _) = keys_of(&with_email("info.anna@fabbri.example.it"));
        assert_eq!(
            person,
            ["email:info.anna@fabbri.example.it", "phone:+390287361234"]
        );
    }

    fn with_website(website: &str) -> Lead {
        let mut lead = tests_support::lead();
        lead.inquiry.contact.email = Some("anna@gmail.com".into());
        lead.inquiry
            .fields
            .insert("website".into(), serde_json::json!(website));
        normalize(lead.inquiry)
    }

    #[test]
    fn social_network_and_marketplace_pages_give_no_company_key() {
        for website in [
            "https://www.facebook.com/FabbriArredamenti",
            "m.facebook.com/fabbri",
            "fb.com/fabbri",
            "https://www.instagram.com/fabbri_arredamenti/",
            "https://www.linkedin.com/company/fabbri",
            "https://x.com/fabbri",
            "twitter.com/fabbri",
            "https://www.tiktok.com/@fabbri",
            "https://youtube.com/@fabbri",
            "https://t.me/fabbri",
            "https://wa.me/390287361234",
            "https://linktr.ee/fabbri",
            "https://maps.app.goo.gl/AbCdEf",
            "https://www.google.com/maps/place/Fabbri",
            "https://www.google.it/maps/place/Fabbri",
            "https://g.page/fabbri",
            "https://www.amazon.it/shops/fabbri",
            "https://allegro.pl/uzytkownik/fabbri",
            "https://zalo.me/0912345678",
            "https://sites.google.com/view/fabbri",
        ] {
            let (_, company) = keys_of(&with_website(website));
            assert!(company.is_empty(), "{website}: {company:?}");
        }
    }

    #[test]
    fn a_site_builder_gives_a_key_for_the_customers_own_host_only() {
        for (website, expected) in [
            (
                "https://fabbri.wixsite.com/home",
                Some("fabbri.wixsite.com"),
            ),
            ("https://www.wixsite.com/", None),
            ("fabbri.blogspot.com", Some("fabbri.blogspot.com")),
            ("fabbri.blogspot.it", Some("fabbri.blogspot.it")),
            ("blogspot.com", None),
            (
                "https://sao-mai.business.site/",
                Some("sao-mai.business.site"),
            ),
            ("business.site", None),
            ("https://firma.webnode.pl/kontakt", Some("firma.webnode.pl")),
            ("webnode.pl", None),
            ("fabbri.github.io", Some("fabbri.github.io")),
            ("fabbri.wordpress.com", Some("fabbri.wordpress.com")),
            ("wordpress.com", None),
        ] {
            let (_, company) = keys_of(&with_website(website));
            let want: Vec<String> = expected.iter().map(|d| format!("domain:{d}")).collect();
            assert_eq!(company, want, "{website}");
        }
    }

    #[test]
    fn ordinary_sites_that_resemble_platforms_keep_their_key() {
        for website in [
            "fabbri.example.it",
            "facebookfans.it",
            "notfacebook.com",
            "x.com.vn",
            "amazonia.it",
            "amazon.fabbri.it",
            "googleads.it",
        ] {
            let (_, company) = keys_of(&with_website(website));
            assert_eq!(company.len(), 1, "{website}: {company:?}");
        }
    }

    #[test]
    fn unusable_values_are_listed_as_problems_and_never_become_keys() {
        let lead = hints(
            ingest::ContactHints {
                email: Some("roberta.gallo(at)libero.it".into()),
                phone: Some("brak".into()),
                ..Default::default()
            },
            "PL",
        );
        assert!(lead.identity_keys.is_empty());
        assert!(!lead.is_contactable());
        let fields: Vec<&str> = lead.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["email", "phone"]);
    }

    #[test]
    fn names_join_first_and_last_and_keep_what_was_typed() {
        let lead = hints(
            ingest::ContactHints {
                first_name: Some(" NGUYỄN ".into()),
                last_name: Some("Văn An".into()),
                email: Some("an@example.vn".into()),
                ..Default::default()
            },
            "VN",
        );
        assert_eq!(lead.name.as_deref(), Some("NGUYỄN Văn An"));
    }

    #[test]
    fn a_message_and_a_company_are_kept_verbatim_and_blank_ones_are_absent() {
        let mut lead = hints(
            ingest::ContactHints {
                email: Some("an@example.vn".into()),
                company: Some("  Công ty Ánh Dương\t".into()),
                ..Default::default()
            },
            "VN",
        );
        assert_eq!(lead.company.as_deref(), Some("  Công ty Ánh Dương\t"));
        // Composed to NFC, every other byte as sent: indentation, trailing line breaks.
        lead.inquiry.message = Some("\r\n  - 12 ghe\u{302}\r\n\r\n".into());
        let lead = normalize(lead.inquiry);
        assert_eq!(lead.message.as_deref(), Some("\r\n  - 12 ghê\r\n\r\n"));
        for blank in ["", " \r\n\t", "\u{a0}\u{3000}"] {
            let mut inquiry = lead.inquiry.clone();
            inquiry.message = Some(blank.into());
            inquiry.contact.company = Some(blank.into());
            let blank_lead = normalize(inquiry);
            assert_eq!(blank_lead.message, None, "{blank:?}");
            assert_eq!(blank_lead.company, None, "{blank:?}");
        }
    }
}
