//! Which values may be identity keys.
//!
//! A key says "this is the same person" or "the same company", so a value that
//! many unrelated people type must never become one:
//!
//! - **Placeholder addresses** (`test@test.com`, `noreply@…`, an address at a
//!   public throw-away inbox such as `@mailinator.com`) identify nobody: they
//!   give neither a person key nor a company domain key.
//! - **Role mailboxes** (`info@`, `office@`, `biuro@`, `kontakt@`, ...) are read
//!   by a team, and a company's only address is often one: they give no person
//!   key, but their domain still gives the company domain key.
//! - **Social networks, link pages, maps and marketplaces** (`facebook.com`,
//!   `linktr.ee`, `google.*`, `amazon.*`) in a website field are a page on
//!   someone else's site: no company domain key.
//! - **Site builders and hosting platforms** give each customer a host of its
//!   own (`fabbri.wixsite.com`): that host is the customer's, as much as
//!   `fabbri.it` would be, and is a key; the platform's own domain, shared by
//!   all its customers, never is.
//!
//! The address always stays on the lead as its email: only its use as a key
//! changes. The built-in lists below can be extended (never silently replaced)
//! in the `[matching]` section ([`MatchingConfig`]), and single built-in
//! entries switched off with `keep_emails`.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::company::domain_key;
use crate::email::{
    EmailAddress, canonical_domain, canonical_labels, check_local_part, normalize_local_part,
};
use crate::lead::IdentityKey;

/// Whole addresses that people type to get past a form.
const PLACEHOLDER_ADDRESSES: &[&str] = &[
    "a@a.com",
    "a@b.com",
    "abc@abc.com",
    "abc@xyz.com",
    "asd@asd.com",
    "asdf@asdf.com",
    "email@email.com",
    "mail@mail.com",
    "name@domain.com",
    "no@no.com",
    "user@domain.com",
    "xxx@xxx.com",
    "you@domain.com",
    "your@email.com",
    "youremail@domain.com",
    "youremail@email.com",
];

/// Mailbox names that identify nobody at any domain: machine senders
/// (no-reply, bounces) whose domain is a sending system's, not the
/// prospect's company, and words typed to fill a field.
const PLACEHOLDER_MAILBOXES: &[&str] = &[
    "asdf",
    "bounce",
    "bounces",
    "do-not-reply",
    "do.not.reply",
    "do_not_reply",
    "donotreply",
    "dummy",
    "example",
    "fake",
    "mailer-daemon",
    "no-email",
    "no-reply",
    "no.reply",
    "no_reply",
    "nobody",
    "noemail",
    "nomail",
    "none",
    "noreply",
    "null",
    "qwerty",
    "sample",
    "test",
    "testing",
];

/// Public throw-away inboxes: anyone can read any address there.
const PLACEHOLDER_DOMAINS: &[&str] = &[
    "10minutemail.com",
    "dispostable.com",
    "getnada.com",
    "guerrillamail.com",
    "mailinator.com",
    "maildrop.cc",
    "mailnesia.com",
    "sharklasers.com",
    "temp-mail.org",
    "trashmail.com",
    "yopmail.com",
    "yopmail.fr",
    "yopmail.net",
];

/// Mailboxes a team reads: the RFC 2142 names for business roles and
/// services, and their everyday equivalents in our languages (office, contact,
/// sales, support, orders, quotes, secretariat). Kept short on purpose: `hello@` or `mail@` is often
/// the owner's own address at a one-person business, and an address that
/// should have been a key and is not costs a missed merge, while a shared one
/// that is a key merges strangers.
const ROLE_MAILBOXES: &[&str] = &[
    "abuse",
    "admin",
    "amministrazione",
    "assistenza",
    "biuro",
    "commerciale",
    "contact",
    "contacts",
    "contatti",
    "cskh",
    "customerservice",
    "enquiries",
    "enquiry",
    "handlowy",
    "help",
    "helpdesk",
    "hostmaster",
    "hotro",
    "info",
    "inquiries",
    "inquiry",
    "kinhdoanh",
    "kontakt",
    "lienhe",
    "marketing",
    "office",
    "orders",
    "ordini",
    "pomoc",
    "postmaster",
    "preventivi",
    "reception",
    "sales",
    "segreteria",
    "sekretariat",
    "service",
    "sprzedaz",
    "support",
    "team",
    "ufficio",
    "vendite",
    "webmaster",
    "zamowienia",
];

/// Sites where a page belongs to someone else's domain: social networks,
/// messengers, link-in-bio pages, maps, marketplaces, directories and link
/// shorteners. Sub-domains included; `name.*` stands for the name under any
/// country's top-level domain (`google.it`, `amazon.co.uk`).
const SOCIAL_DOMAINS: &[&str] = &[
    "airbnb.*",
    "aliexpress.com",
    "allegro.pl",
    "amazon.*",
    "beacons.ai",
    "bio.link",
    "bit.ly",
    "booking.com",
    "ebay.*",
    "etsy.com",
    "facebook.com",
    "fb.com",
    "fb.me",
    "g.co",
    "g.page",
    "goo.gl",
    "google.*",
    "instagr.am",
    "instagram.com",
    "lazada.vn",
    "linkedin.com",
    "linktr.ee",
    "lnk.bio",
    "lnkd.in",
    "m.me",
    "maps.apple.com",
    "messenger.com",
    "olx.pl",
    "paginegialle.it",
    "panoramafirm.pl",
    "pinterest.*",
    "pkt.pl",
    "shopee.vn",
    "snapchat.com",
    "subito.it",
    "t.co",
    "t.me",
    "taplink.cc",
    "telegram.me",
    "threads.com",
    "threads.net",
    "tiki.vn",
    "tiktok.com",
    "tinyurl.com",
    "tripadvisor.*",
    "twitter.com",
    "vk.com",
    "wa.me",
    "whatsapp.com",
    "x.com",
    "yelp.*",
    "youtu.be",
    "youtube.com",
    "zalo.me",
];

/// Platforms that give each customer its own sub-domain.
const HOSTING_DOMAINS: &[&str] = &[
    "altervista.org",
    "blogger.com",
    "blogspot.*",
    "business.site",
    "carrd.co",
    "github.io",
    "gitlab.io",
    "godaddysites.com",
    "jimdo.com",
    "jimdofree.com",
    "jimdosite.com",
    "medium.com",
    "myshopify.com",
    "netlify.app",
    "notion.site",
    "pages.dev",
    "site123.me",
    "squarespace.com",
    "strikingly.com",
    "mystrikingly.com",
    "substack.com",
    "tumblr.com",
    "vercel.app",
    "webflow.io",
    "webnode.*",
    "weebly.com",
    "wix.com",
    "wixsite.com",
    "wordpress.com",
];

/// What an email address may be used for as a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    /// A person's own address: a person key, and its domain a company key.
    Personal,
    /// A mailbox a team reads: its domain is a company key, it is no person key.
    Role,
    /// An address that identifies nobody: no key at all.
    Placeholder,
}

/// A domain, or a name under any country's top-level domain (`google.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainPattern {
    /// Canonical labels (`facebook.com`, or `google` for `google.*`).
    base: String,
    /// True for `name.*`.
    any_country: bool,
}

impl DomainPattern {
    /// Parses `example.com`, `*.example.com` (the same) or `example.*`.
    fn parse(raw: &str) -> Result<DomainPattern, String> {
        let raw = raw.trim();
        let raw = raw.strip_prefix("*.").unwrap_or(raw);
        let (base, any_country) = match raw.strip_suffix(".*") {
            Some(base) => (canonical_labels(base), true),
            None => (canonical_domain(raw), false),
        };
        match base {
            Ok(base) => Ok(DomainPattern { base, any_country }),
            Err(error) => Err(format!(
                "`{raw}` is not a domain such as `example.com`, or `example.*` for that name \
                 under every country's top-level domain: {error}"
            )),
        }
    }

    /// If `host` is this domain or under it: the labels in front of it (empty
    /// for the domain itself, `fabbri` for `fabbri.wixsite.com`).
    fn tenant<'h>(&self, host: &'h str) -> Option<&'h str> {
        if !self.any_country {
            return tenant_of(host, &self.base);
        }
        // `name.*`: the name followed by a country's top-level domain, either
        // one label (`it`) or a short second level and one (`co.uk`, `com.vn`);
        // without the public-suffix list, a longer second level is taken for
        // a customer's own name (`amazon.fabbri.it` is not Amazon's).
        let mut search = host;
        let mut offset = 0;
        while let Some(at) = search.find(&self.base) {
            let start = offset + at;
            let end = start + self.base.len();
            let starts_label = start == 0 || host.as_bytes()[start - 1] == b'.';
            if starts_label && let Some(rest) = host[end..].strip_prefix('.') {
                let labels: Vec<&str> = rest.split('.').collect();
                let country = match labels.as_slice() {
                    [_] => true,
                    [second, _] => {
                        second.len() <= 3 && second.chars().all(|c| c.is_ascii_alphabetic())
                    }
                    _ => false,
                };
                if country {
                    return Some(host[..start].strip_suffix('.').unwrap_or(""));
                }
            }
            offset = end;
            search = &host[end..];
        }
        None
    }
}

/// The labels of `host` in front of `domain` if `host` is `domain` or under it.
fn tenant_of<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    if host == domain {
        return Some("");
    }
    host.strip_suffix(domain)?.strip_suffix('.')
}

/// The rules deciding which values may be identity keys. `Default` gives the
/// built-in lists; [`MatchingConfig::rules`] extends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRules {
    placeholder_addresses: HashSet<String>,
    placeholder_mailboxes: HashSet<String>,
    placeholder_domains: HashSet<String>,
    role_mailboxes: HashSet<String>,
    social: Vec<DomainPattern>,
    hosting: Vec<DomainPattern>,
}

static BUILTIN: LazyLock<KeyRules> = LazyLock::new(|| {
    let config = MatchingConfig::default();
    // The built-in lists are checked by a test to parse; an entry that did not
    // would only be missing from the rules.
    config.build().0
});

impl KeyRules {
    /// The built-in rules, parsed once.
    pub fn builtin() -> &'static KeyRules {
        &BUILTIN
    }

    /// What `email` may be used for as a key.
    pub fn email_kind(&self, email: &EmailAddress) -> EmailKind {
        let local = email.local_part();
        // `info+web@` is the same mailbox as `info@`.
        let mailbox = local.split_once('+').map_or(local, |(mailbox, _)| mailbox);
        let domain = email.domain();
        if self.placeholder_mailboxes.contains(mailbox)
            || self
                .placeholder_addresses
                .contains(&format!("{mailbox}@{domain}"))
            || parents(domain).any(|d| self.placeholder_domains.contains(d))
        {
            EmailKind::Placeholder
        } else if self.role_mailboxes.contains(mailbox) {
            EmailKind::Role
        } else {
            EmailKind::Personal
        }
    }

    /// The person key of `email`, unless it is a placeholder or a role mailbox.
    pub fn person_key(&self, email: &EmailAddress) -> Option<IdentityKey> {
        (self.email_kind(email) == EmailKind::Personal)
            .then(|| IdentityKey::Email(email.as_str().to_owned()))
    }

    /// The company domain key of `email`'s domain, unless the address is a
    /// placeholder or the domain a free-mail provider's.
    pub fn email_domain_key(&self, email: &EmailAddress) -> Option<String> {
        match self.email_kind(email) {
            EmailKind::Placeholder => None,
            EmailKind::Personal | EmailKind::Role => domain_key(email.domain()),
        }
    }

    /// The company domain key of a website field's value: none for a social
    /// network, link page, map or marketplace, nor for a hosting platform's own
    /// domain; a platform customer's own host is one.
    pub fn website_key(&self, raw: &str) -> Option<String> {
        let domain = domain_key(raw)?;
        if self.social.iter().any(|p| p.tenant(&domain).is_some()) {
            return None;
        }
        match self.hosting.iter().find_map(|p| p.tenant(&domain)) {
            Some("") => None,
            _ => Some(domain),
        }
    }
}

impl Default for KeyRules {
    fn default() -> Self {
        KeyRules::builtin().clone()
    }
}

/// `a.b.c`, `b.c`, `c`: a domain and every domain it lies under.
fn parents(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |d| d.split_once('.').map(|(_, rest)| rest))
}

/// The `[matching]` section: additions to the built-in lists of values that
/// never become identity keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MatchingConfig {
    /// Addresses that identify nobody, added to the built-in list: `name@` (that
    /// mailbox at any domain), `@example.com` (any address at that domain or its
    /// sub-domains) or a whole address.
    pub placeholder_emails: Vec<String>,
    /// Mailbox names a team reads (`reception`), added to the built-in list:
    /// no person key, the domain still a company key.
    pub role_mailboxes: Vec<String>,
    /// Built-in entries to switch off, written as listed (`info@`,
    /// `@yopmail.com`, `test@test.com`), where they do identify a person.
    pub keep_emails: Vec<String>,
    /// Website hosts that are never a company's own domain, added to the
    /// built-in list (sub-domains included; `name.*` for every country).
    pub social_domains: Vec<String>,
    /// Platforms giving each customer its own sub-domain, added to the built-in
    /// list: the platform's domain is never a key, a customer's host is.
    pub hosting_domains: Vec<String>,
}

/// One parsed `placeholder_emails` or `keep_emails` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EmailPattern {
    Mailbox(String),
    Domain(String),
    Address(String),
}

impl EmailPattern {
    fn parse(raw: &str) -> Result<EmailPattern, String> {
        let raw = raw.trim();
        let shape = "write `name@` for that mailbox at any domain, `@example.com` for any \
                     address at that domain, or a whole address";
        match raw.split_once('@') {
            Some((local, "")) if !local.is_empty() && !local.contains('@') => {
                parse_mailbox(local).map(EmailPattern::Mailbox)
            }
            Some(("", domain)) if !domain.is_empty() && !domain.contains('@') => {
                canonical_domain(domain)
                    .map(EmailPattern::Domain)
                    .map_err(|e| format!("`{raw}`: {e}"))
            }
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                EmailAddress::parse(raw)
                    .map(|a| EmailPattern::Address(a.as_str().to_owned()))
                    .map_err(|e| format!("`{raw}`: {e}"))
            }
            _ => Err(format!("`{raw}` is not an address pattern: {shape}")),
        }
    }
}

/// A mailbox name as it is matched: the normalised part before the `@`.
fn parse_mailbox(raw: &str) -> Result<String, String> {
    let local = normalize_local_part(raw.trim());
    check_local_part(&local).map_err(|e| format!("`{raw}`: {e}"))?;
    Ok(local)
}

impl MatchingConfig {
    /// Every problem with the section, as (key path inside `[matching]`, what to do).
    pub fn problems(&self) -> Vec<(String, String)> {
        self.build().1
    }

    /// The key rules: the built-in lists with these additions and exceptions.
    pub fn rules(&self) -> Result<KeyRules, Vec<(String, String)>> {
        match self.build() {
            (rules, problems) if problems.is_empty() => Ok(rules),
            (_, problems) => Err(problems),
        }
    }

    /// The rules from the built-in lists and this section, and what is wrong
    /// with the section's entries (those are left out).
    fn build(&self) -> (KeyRules, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut placeholders = builtin_placeholders();
        let mut roles: Vec<String> = ROLE_MAILBOXES
            .iter()
            .filter_map(|m| parse_mailbox(m).ok())
            .collect();

        for (index, raw) in self.keep_emails.iter().enumerate() {
            let key = format!("keep_emails[{index}]");
            let kept = match EmailPattern::parse(raw) {
                Ok(pattern) => {
                    let before = placeholders.len() + roles.len();
                    placeholders.retain(|p| *p != pattern);
                    if let EmailPattern::Mailbox(name) = &pattern {
                        roles.retain(|r| r != name);
                    }
                    placeholders.len() + roles.len() < before
                }
                Err(problem) => {
                    problems.push((key, problem));
                    continue;
                }
            };
            if !kept {
                problems.push((
                    key,
                    format!(
                        "`{}` is not a built-in entry, so there is nothing to keep \
                         (the built-in lists are in README.md, Matching)",
                        raw.trim()
                    ),
                ));
            }
        }
        for (index, raw) in self.placeholder_emails.iter().enumerate() {
            match EmailPattern::parse(raw) {
                Ok(pattern) => placeholders.push(pattern),
                Err(problem) => problems.push((format!("placeholder_emails[{index}]"), problem)),
            }
        }
        for (index, raw) in self.role_mailboxes.iter().enumerate() {
            let name = raw.trim();
            let name = name.strip_suffix('@').unwrap_or(name);
            match parse_mailbox(name) {
                Ok(name) => roles.push(name),
                Err(_) => problems.push((
                    format!("role_mailboxes[{index}]"),
                    format!(
                        "`{}` is not a mailbox name: write the part before the @, e.g. `reception`",
                        raw.trim()
                    ),
                )),
            }
        }

        let mut rules = KeyRules {
            placeholder_addresses: HashSet::new(),
            placeholder_mailboxes: HashSet::new(),
            placeholder_domains: HashSet::new(),
            role_mailboxes: roles.into_iter().collect(),
            social: domain_patterns(
                SOCIAL_DOMAINS,
                &self.social_domains,
                "social_domains",
                &mut problems,
            ),
            hosting: domain_patterns(
                HOSTING_DOMAINS,
                &self.hosting_domains,
                "hosting_domains",
                &mut problems,
            ),
        };
        for pattern in placeholders {
            match pattern {
                EmailPattern::Mailbox(m) => rules.placeholder_mailboxes.insert(m),
                EmailPattern::Domain(d) => rules.placeholder_domains.insert(d),
                EmailPattern::Address(a) => rules.placeholder_addresses.insert(a),
            };
        }
        (rules, problems)
    }
}

/// The built-in placeholder entries as patterns.
fn builtin_placeholders() -> Vec<EmailPattern> {
    let addresses = PLACEHOLDER_ADDRESSES
        .iter()
        .filter_map(|a| EmailAddress::parse(a).ok())
        .map(|a| EmailPattern::Address(a.as_str().to_owned()));
    let mailboxes = PLACEHOLDER_MAILBOXES
        .iter()
        .filter_map(|m| parse_mailbox(m).ok())
        .map(EmailPattern::Mailbox);
    let domains = PLACEHOLDER_DOMAINS
        .iter()
        .filter_map(|d| canonical_domain(d).ok())
        .map(EmailPattern::Domain);
    addresses.chain(mailboxes).chain(domains).collect()
}

/// A built-in domain list with the configured additions; a problem for each
/// addition that does not parse (keyed `{name}[{index}]`).
fn domain_patterns(
    builtin: &[&str],
    configured: &[String],
    name: &str,
    problems: &mut Vec<(String, String)>,
) -> Vec<DomainPattern> {
    let mut patterns: Vec<DomainPattern> = builtin
        .iter()
        .filter_map(|raw| DomainPattern::parse(raw).ok())
        .collect();
    for (index, raw) in configured.iter().enumerate() {
        match DomainPattern::parse(raw) {
            Ok(pattern) => patterns.push(pattern),
            Err(problem) => problems.push((format!("{name}[{index}]"), problem)),
        }
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(rules: &KeyRules, raw: &str) -> EmailKind {
        rules.email_kind(&EmailAddress::parse(raw).unwrap())
    }

    #[test]
    fn built_in_entries_are_well_formed_and_can_each_be_kept() {
        for list in [
            PLACEHOLDER_ADDRESSES,
            PLACEHOLDER_MAILBOXES,
            PLACEHOLDER_DOMAINS,
            ROLE_MAILBOXES,
            SOCIAL_DOMAINS,
            HOSTING_DOMAINS,
        ] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len(), "duplicates in {list:?}");
        }
        assert!(MatchingConfig::default().problems().is_empty());
        // Every built-in email entry, written as the README lists it, can be
        // switched off with keep_emails.
        let written = PLACEHOLDER_ADDRESSES
            .iter()
            .map(|a| a.to_string())
            .chain(PLACEHOLDER_MAILBOXES.iter().map(|m| format!("{m}@")))
            .chain(ROLE_MAILBOXES.iter().map(|m| format!("{m}@")))
            .chain(PLACEHOLDER_DOMAINS.iter().map(|d| format!("@{d}")));
        for entry in written {
            let config = MatchingConfig {
                keep_emails: vec![entry.clone()],
                ..MatchingConfig::default()
            };
            assert_eq!(config.problems(), [], "{entry}");
        }
        for raw in SOCIAL_DOMAINS.iter().chain(HOSTING_DOMAINS) {
            assert!(DomainPattern::parse(raw).is_ok(), "{raw}");
        }
    }

    #[test]
    fn addresses_are_personal_role_or_placeholder() {
        let cases: [(EmailKind, &[&str]); 3] = [
            (
                EmailKind::Personal,
                &[
                    "anna.rossi@fabbri.example.it",
                    "hello@studio.example.it",
                    "tester@fabbri.example.it",
                    "informatica@fabbri.example.it",
                    "teamleader@fabbri.example.it",
                    "anna@example.com",
                ],
            ),
            (
                EmailKind::Role,
                &[
                    "info@fabbri.example.it",
                    "INFO+sito@fabbri.example.it",
                    "biuro@firma.example.pl",
                    "lienhe@saomai.example.vn",
                    "postmaster@fabbri.example.it",
                    "ufficio@fabbri.example.it",
                    "commerciale@fabbri.example.it",
                    "zamowienia@firma.example.pl",
                    "handlowy@firma.example.pl",
                    "cskh@saomai.example.vn",
                    "hotro@saomai.example.vn",
                    "enquiry@studio.example.co.uk",
                ],
            ),
            (
                EmailKind::Placeholder,
                &[
                    "test@test.com",
                    "test+1@test.com",
                    "youremail@email.com",
                    "noreply@shop.example.it",
                    "do-not-reply@shop.example.it",
                    "anna@mailinator.com",
                    "anna@eu.mailinator.com",
                    "test@fabbri.example.it",
                ],
            ),
        ];
        for (expected, addresses) in cases {
            for raw in addresses {
                assert_eq!(kind(KeyRules::builtin(), raw), expected, "{raw}");
            }
        }
    }

    #[test]
    fn the_matching_section_extends_the_built_in_lists() {
        let config = MatchingConfig {
            placeholder_emails: vec![
                "Reception@".into(),
                "@tempmail.example.org".into(),
                "ufficio.tecnico@fabbri.example.it".into(),
            ],
            role_mailboxes: vec!["direzione".into(), "magazzino@".into()],
            keep_emails: vec!["info@".into(), "@yopmail.com".into()],
            social_domains: vec!["paginebianche.example.it".into(), "elenco.*".into()],
            hosting_domains: vec!["*.sitibelli.example.it".into()],
        };
        let rules = config.rules().unwrap();
        let cases = [
            ("reception@fabbri.example.it", EmailKind::Placeholder),
            ("anna@mx.tempmail.example.org", EmailKind::Placeholder),
            ("ufficio.tecnico@fabbri.example.it", EmailKind::Placeholder),
            ("ufficio.tecnico@rossi.example.it", EmailKind::Personal),
            ("direzione@fabbri.example.it", EmailKind::Role),
            ("magazzino@fabbri.example.it", EmailKind::Role),
            // Kept: these identify a person here.
            ("info@fabbri.example.it", EmailKind::Personal),
            ("anna@yopmail.com", EmailKind::Personal),
            // The rest of the built-in lists still applies.
            ("noreply@fabbri.example.it", EmailKind::Placeholder),
            ("office@fabbri.example.it", EmailKind::Role),
            ("anna@yopmail.fr", EmailKind::Placeholder),
        ];
        for (raw, expected) in cases {
            assert_eq!(kind(&rules, raw), expected, "{raw}");
        }
        assert_eq!(rules.website_key("paginebianche.example.it/fabbri"), None);
        assert_eq!(rules.website_key("www.elenco.it/fabbri"), None);
        assert_eq!(rules.website_key("https://facebook.com/fabbri"), None);
        assert_eq!(rules.website_key("sitibelli.example.it"), None);
        assert_eq!(
            rules.website_key("fabbri.sitibelli.example.it").as_deref(),
            Some("fabbri.sitibelli.example.it")
        );
        assert_eq!(
            KeyRules::builtin()
                .website_key("paginebianche.example.it/fabbri")
                .as_deref(),
            Some("paginebianche.example.it")
        );
    }

    #[test]
    fn bad_entries_are_reported_with_their_key_and_what_to_write() {
        let config = MatchingConfig {
            placeholder_emails: vec![
                "reception".into(),
                "@".into(),
                "a b@".into(),
                "@exa_mple.com".into(),
                "anna@fabbri.c".into(),
                "ok@".into(),
            ],
            role_mailboxes: vec!["reception@fabbri.example.it".into(), "a b".into()],
            keep_emails: vec!["hello@".into(), "info".into()],
            social_domains: vec!["facebook".into(), "exa mple.com".into()],
            hosting_domains: vec!["*.wix".into(), "webnode.*".into()],
        };
        let problems = config.problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "keep_emails[0]",
                "keep_emails[1]",
                "placeholder_emails[0]",
                "placeholder_emails[1]",
                "placeholder_emails[2]",
                "placeholder_emails[3]",
                "placeholder_emails[4]",
                "role_mailboxes[0]",
                "role_mailboxes[1]",
                "social_domains[0]",
                "social_domains[1]",
                "hosting_domains[0]",
            ],
            "{problems:#?}"
        );
        let text = |key: &str| {
            problems
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, p)| p.clone())
                .unwrap()
        };
        assert!(text("keep_emails[0]").contains("not a built-in entry"));
        assert!(text("placeholder_emails[0]").contains("write `name@`"));
        assert!(text("placeholder_emails[4]").contains("one letter"));
        assert!(text("role_mailboxes[0]").contains("the part before the @"));
        assert!(text("social_domains[0]").contains("`example.*`"));
        assert!(config.rules().is_err());
    }

    #[test]
    fn a_platform_name_matches_only_whole_labels_and_country_suffixes() {
        let google = DomainPattern::parse("google.*").unwrap();
        let cases = [
            ("google.com", Some("")),
            ("google.it", Some("")),
            ("google.com.vn", Some("")),
            ("google.co.uk", Some("")),
            ("maps.google.com", Some("maps")),
            ("googleads.it", None),
            ("notgoogle.it", None),
            ("google.fabbri.it", None),
            ("google", None),
        ];
        for (host, expected) in cases {
            assert_eq!(google.tenant(host), expected, "{host}");
        }
        let x = DomainPattern::parse("x.com").unwrap();
        assert_eq!(x.tenant("x.com"), Some(""));
        assert_eq!(x.tenant("api.x.com"), Some("api"));
        assert_eq!(x.tenant("x.com.vn"), None);
        assert_eq!(x.tenant("fax.com"), None);
    }

    #[test]
    fn a_lead_is_normalised_with_the_rules_it_is_given() {
        let mut lead = crate::lead::tests_support::lead();
        lead.inquiry.contact.email = Some("direzione@fabbri.example.it".into());
        let config = MatchingConfig {
            role_mailboxes: vec!["direzione".into()],
            ..MatchingConfig::default()
        };
        let configured = crate::normalize_with(lead.inquiry.clone(), &config.rules().unwrap());
        assert!(configured.identity_keys.is_empty());
        assert_eq!(
            configured.company_keys,
            [crate::CompanyKey::Domain("fabbri.example.it".into())]
        );
        let builtin = crate::normalize(lead.inquiry);
        assert_eq!(
            builtin.identity_keys,
            [IdentityKey::Email("direzione@fabbri.example.it".into())]
        );
    }
}
