//! Matching rules: is this inquiry from someone the company already knows?
//!
//! The rules are pure functions over a [`Directory`] (what is already on file); `store`
//! implements it over what it looked up inside the consumer's transaction.
//!
//! Keys differ in strength. An email address or a messenger account belongs to one person:
//! a **strong** key. A phone number is **weak**: a switchboard, a shop or a family shares
//! one (a typed extension is part of the key, so desk 12 and desk 34 are two keys). A match
//! by a weak key is trusted only while nothing says the two sides are different people.
//! They **evidently differ** when both have a name and the folded names differ, *and* both
//! have a strong key of the same kind (an email each, or an account on the same
//! messenger) without sharing any.
//!
//! In order:
//!
//! 0. an event whose activity is filed already, or whose conversation (a mail thread, a
//!    chat, a call) belongs to a lead, goes onto that lead, and its keys find it from then on;
//! 1. the same inquiry was filed before: nothing to do (the store sees this first);
//! 2. an open or frozen lead shares a strong key, or belongs to the contact a strong key
//!    belongs to: the inquiry is merged into it, and its keys become keys of that lead;
//! 3. the same by a weak key, passing over leads and contacts that evidently differ; on a
//!    number several people share, a lead of the inquiry's name comes first, then the
//!    contact of that name holding the number (its open lead, or rule 4), then the oldest
//!    lead: merged, but the keys the inquiry brings are only recorded with the merge, never
//!    used to find the lead, so one shared number cannot keep pulling more people in;
//! 4. a contact holds a strong key, or a weak key and does not evidently differ: a new lead,
//!    a repeat lead linked to that contact and its company;
//! 5. a company holds one of the inquiry's company keys or its phone number (without the
//!    extension), or a contact passed over in rule 3 or 4 works for one: a new lead, a
//!    repeat lead linked to that company (domain first, then the number, then such a
//!    contact's company, then the name);
//! 6. otherwise a new lead, pointing at the person's last closed lead if there is one (by a
//!    strong key first; by a weak key only if it does not evidently differ).
//!
//! Every decision carries its reason as a [`Match`]: the rule, the key, the target, and the
//! leads and contacts passed over with why.

use serde::{Deserialize, Serialize};

use ingest::ConversationKey;

use crate::lead::{CompanyKey, IdentityKey, Lead};
use crate::text::fold_key;

/// Who is behind a lead or a contact, as far as telling two people apart needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    /// The name as stored (folded before it is compared).
    pub name: Option<String>,
    /// Its strong keys: email addresses and messenger accounts.
    pub strong_keys: Vec<IdentityKey>,
}

impl Person {
    /// The person an inquiry speaks for.
    pub fn of(lead: &Lead) -> Self {
        Self {
            name: lead.name.clone(),
            strong_keys: lead
                .identity_keys
                .iter()
                .filter(|k| k.is_strong())
                .cloned()
                .collect(),
        }
    }

    fn folded_name(&self) -> Option<String> {
        self.name
            .as_deref()
            .map(fold_key)
            .filter(|name| !name.is_empty())
    }

    /// Why `self` and `other` are evidently two people, if they are.
    pub fn differs_from(&self, other: &Person) -> Option<String> {
        let (mine, theirs) = (self.folded_name()?, other.folded_name()?);
        if mine == theirs
            || self
                .strong_keys
                .iter()
                .any(|k| other.strong_keys.contains(k))
        {
            return None;
        }
        let kind = self.strong_keys.iter().find_map(|mine| {
            other
                .strong_keys
                .iter()
                .any(|theirs| strong_kind(theirs) == strong_kind(mine))
                .then(|| strong_kind(mine))
        })?;
        Some(format!("another person (a different {kind} and name)"))
    }

    fn same_name(&self, other: &Person) -> bool {
        self.folded_name()
            .is_some_and(|mine| other.folded_name().as_ref() == Some(&mine))
    }
}

/// What a strong key is an instance of: `email`, or the messenger platform's account.
fn strong_kind(key: &IdentityKey) -> String {
    match key {
        IdentityKey::Email(_) => "email".into(),
        IdentityKey::Messenger(account) => {
            let platform = account.split(':').next().unwrap_or_default();
            format!("{platform} account")
        }
        IdentityKey::Phone(_) => "phone".into(),
    }
}

/// The number a phone key dials, without the extension (`+390212345678` for
/// `phone:+390212345678;ext=12`): what a company lists as its own.
pub fn dialled_number(key: &IdentityKey) -> Option<&str> {
    match key {
        IdentityKey::Phone(value) => value.split(";ext=").next(),
        _ => None,
    }
}

/// What is already on file, as far as matching needs to know.
pub trait Directory {
    /// The open or frozen leads that hold this person key, oldest first.
    fn open_leads(&self, key: &IdentityKey) -> Vec<i64>;
    /// The contact that holds this person key, if any.
    fn contact(&self, key: &IdentityKey) -> Option<i64>;
    /// The open or frozen lead already linked to this contact, if any.
    fn open_lead_of_contact(&self, contact_id: i64) -> Option<i64>;
    /// The company a contact belongs to, if any.
    fn company_of_contact(&self, contact_id: i64) -> Option<i64>;
    /// The company that holds this company key, if any (the oldest if several).
    fn company(&self, key: &CompanyKey) -> Option<i64>;
    /// The company that lists this number (E.164, no extension), if any (the oldest if
    /// several).
    fn company_by_phone(&self, number: &str) -> Option<i64>;
    /// The person's most recent closed lead (success, failure or abandoned), if any.
    fn closed_lead(&self, key: &IdentityKey) -> Option<i64>;
    /// Who is behind a lead (its name and strong keys), if known.
    fn lead_person(&self, lead_id: i64) -> Option<&Person>;
    /// Who a contact is (its name and strong keys), if known.
    fn contact_person(&self, contact_id: i64) -> Option<&Person>;
    /// The lead an activity (by its key) is on, if it is filed already.
    fn activity_lead(&self, _activity_key: &str) -> Option<i64> {
        None
    }
    /// The lead a conversation (by one of its keys) belongs to, if any.
    fn conversation_lead(&self, _key: &ConversationKey) -> Option<i64> {
        None
    }
}

/// Why a lead was filed the way it was: shown on the lead as `match`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    /// `conversation`, `open_lead`, `known_contact`, `known_company`, `previous_lead` or
    /// `new`.
    pub rule: String,
    /// The key that matched (`phone:+390287361234`), if any.
    pub key: Option<String>,
    /// What it matched (`lead 17`, `contact 42`, `company 7`), if anything.
    pub target: Option<String>,
    /// Leads and contacts that shared a weak key but were passed over, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<String>,
}

impl Match {
    fn new(rule: &str, key: Option<String>, target: Option<String>) -> Self {
        Self {
            rule: rule.into(),
            key,
            target,
            set_aside: Vec::new(),
        }
    }

    fn setting_aside(mut self, set_aside: Vec<String>) -> Self {
        self.set_aside = set_aside;
        self
    }

    /// The reason as a sentence, e.g. "known_contact: matched contact 42 by phone:+390287361234".
    pub fn describe(&self) -> String {
        let mut out = match (&self.target, &self.key) {
            (Some(target), Some(key)) => format!("{}: matched {target} by {key}", self.rule),
            _ => format!("{}: no earlier lead, contact or company matched", self.rule),
        };
        if !self.set_aside.is_empty() {
            out.push_str("; set aside: ");
            out.push_str(&self.set_aside.join("; "));
        }
        out
    }
}

/// What to do with a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add the inquiry to this open lead.
    Merge {
        /// The open lead.
        lead_id: i64,
        /// True when the match was by a strong key: the inquiry's keys then find the lead
        /// too. After a match by a weak key they are only recorded with the merge.
        adopt_keys: bool,
        /// Why.
        reason: Match,
    },
    /// File a new lead.
    New {
        /// Linked contact (repeat lead).
        contact_id: Option<i64>,
        /// Linked company (repeat lead).
        company_id: Option<i64>,
        /// True when the person or company is already a client.
        is_repeat: bool,
        /// The person's last closed lead.
        previous_lead_id: Option<i64>,
        /// Why.
        reason: Match,
    },
}

/// The rules applied to one inquiry, collecting what was passed over on the way.
struct Matcher<'a, D> {
    lead: &'a Lead,
    me: Person,
    directory: &'a D,
    set_aside: Vec<String>,
}

impl<'a, D: Directory> Matcher<'a, D> {
    fn keys(&self, strong: bool) -> impl Iterator<Item = &'a IdentityKey> + use<'a, D> {
        self.lead
            .identity_keys
            .iter()
            .filter(move |k| k.is_strong() == strong)
    }

    fn set_aside(&mut self, what: String, key: &IdentityKey, why: String) {
        let note = format!("{what} by {key}: {why}");
        if !self.set_aside.contains(&note) {
            self.set_aside.push(note);
        }
    }

    /// The contact holding a weak key, unless it evidently is someone else.
    fn weak_contact(&mut self, key: &IdentityKey) -> Option<i64> {
        let contact_id = self.directory.contact(key)?;
        let differs = self
            .directory
            .contact_person(contact_id)
            .and_then(|p| self.me.differs_from(p));
        match differs {
            Some(why) => {
                self.set_aside(format!("contact {contact_id}"), key, why);
                None
            }
            None => Some(contact_id),
        }
    }

    fn merge(&self, lead_id: i64, key: &IdentityKey, target: String, strong: bool) -> Decision {
        Decision::Merge {
            lead_id,
            adopt_keys: strong,
            reason: Match::new("open_lead", Some(key.as_key()), Some(target))
                .setting_aside(self.set_aside.clone()),
        }
    }

    /// Rules 2 and 3: the open lead to merge into.
    fn open_lead(&mut self) -> Option<Decision> {
        for key in self.keys(true) {
            if let Some(&lead_id) = self.directory.open_leads(key).first() {
                return Some(self.merge(lead_id, key, format!("lead {lead_id}"), true));
            }
        }
        for key in self.keys(true) {
            if let Some(contact_id) = self.directory.contact(key)
                && let Some(lead_id) = self.directory.open_lead_of_contact(contact_id)
            {
                let target = format!("lead {lead_id} of contact {contact_id}");
                return Some(self.merge(lead_id, key, target, true));
            }
        }
        for key in self.keys(false) {
            let mut fitting = Vec::new();
            for lead_id in self.directory.open_leads(key) {
                let differs = self
                    .directory
                    .lead_person(lead_id)
                    .and_then(|p| self.me.differs_from(p));
                match differs {
                    Some(why) => self.set_aside(format!("lead {lead_id}"), key, why),
                    None => fitting.push(lead_id),
                }
            }
            let named = fitting.iter().copied().find(|&id| {
                self.directory
                    .lead_person(id)
                    .is_some_and(|p| self.me.same_name(p))
            });
            if let Some(lead_id) = named {
                return Some(self.merge(lead_id, key, format!("lead {lead_id}"), false));
            }
            // The contact of the inquiry's name who holds the number is a better match than
            // leads of other names on it (rule 4 links it when it has no open lead).
            let named_contact = self.directory.contact(key).filter(|&id| {
                self.directory
                    .contact_person(id)
                    .is_some_and(|p| self.me.same_name(p))
            });
            if let Some(contact_id) = named_contact {
                for lead_id in fitting {
                    let why = format!("contact {contact_id} of the same name holds the number");
                    self.set_aside(format!("lead {lead_id}"), key, why);
                }
                match self.directory.open_lead_of_contact(contact_id) {
                    Some(lead_id) => {
                        let target = format!("lead {lead_id} of contact {contact_id}");
                        return Some(self.merge(lead_id, key, target, false));
                    }
                    None => continue,
                }
            }
            if let Some(&lead_id) = fitting.first() {
                return Some(self.merge(lead_id, key, format!("lead {lead_id}"), false));
            }
        }
        for key in self.keys(false) {
            if let Some(contact_id) = self.directory.contact(key)
                && let Some(lead_id) = self.directory.open_lead_of_contact(contact_id)
                && self.weak_contact(key).is_some()
            {
                let target = format!("lead {lead_id} of contact {contact_id}");
                return Some(self.merge(lead_id, key, target, false));
            }
        }
        None
    }

    /// Rule 5: a company that is a client, and the key that says so.
    fn company(&mut self) -> Option<(i64, String, String)> {
        let found = |id: i64, key: String| (id, key, format!("company {id}"));
        for key in &self.lead.company_keys {
            if let CompanyKey::Domain(_) = key
                && let Some(id) = self.directory.company(key)
            {
                return Some(found(id, key.as_key()));
            }
        }
        for key in self.keys(false) {
            if let Some(number) = dialled_number(key)
                && let Some(id) = self.directory.company_by_phone(number)
            {
                return Some(found(id, format!("phone:{number}")));
            }
        }
        for key in self.keys(false) {
            if let Some(contact_id) = self.directory.contact(key)
                && self.weak_contact(key).is_none()
                && let Some(id) = self.directory.company_of_contact(contact_id)
            {
                return Some((
                    id,
                    key.as_key(),
                    format!("company {id} of contact {contact_id}"),
                ));
            }
        }
        for key in &self.lead.company_keys {
            if let CompanyKey::Name(_) = key
                && let Some(id) = self.directory.company(key)
            {
                return Some(found(id, key.as_key()));
            }
        }
        None
    }

    /// Rule 6: the person's last closed lead, and the key that found it.
    fn previous_lead(&self) -> Option<(i64, &'a IdentityKey)> {
        let strong = self
            .keys(true)
            .find_map(|k| self.directory.closed_lead(k).map(|id| (id, k)));
        strong.or_else(|| {
            self.keys(false).find_map(|k| {
                let id = self.directory.closed_lead(k)?;
                let differs = self
                    .directory
                    .lead_person(id)
                    .and_then(|p| self.me.differs_from(p));
                differs.is_none().then_some((id, k))
            })
        })
    }

    /// Rule 0: an event whose activity is filed, or whose conversation belongs to a lead,
    /// goes onto that lead whatever its person keys say (in whatever stage the lead is),
    /// and its keys find the lead from then on: the conversation already tells it is the
    /// same exchange.
    fn conversation(&self) -> Option<Decision> {
        let event = self.lead.inquiry.event.as_ref()?;
        let by_activity = event.activity_key.as_deref().and_then(|key| {
            self.directory
                .activity_lead(key)
                .map(|id| (id, format!("activity:{key}")))
        });
        let (lead_id, key) = by_activity.or_else(|| {
            event.conversation.iter().find_map(|key| {
                self.directory
                    .conversation_lead(key)
                    .map(|id| (id, key.as_key()))
            })
        })?;
        Some(Decision::Merge {
            lead_id,
            adopt_keys: true,
            reason: Match::new("conversation", Some(key), Some(format!("lead {lead_id}"))),
        })
    }

    fn decide(mut self) -> Decision {
        if let Some(merge) = self.conversation() {
            return merge;
        }
        if let Some(merge) = self.open_lead() {
            return merge;
        }
        let previous = self.previous_lead();
        let previous_lead_id = previous.map(|(id, _)| id);
        let contact = match self
            .keys(true)
            .find_map(|k| self.directory.contact(k).map(|id| (id, k)))
        {
            Some(found) => Some(found),
            None => self
                .keys(false)
                .find_map(|k| self.weak_contact(k).map(|id| (id, k))),
        };
        if let Some((contact_id, key)) = contact {
            let company_id = self
                .directory
                .company_of_contact(contact_id)
                .or_else(|| self.company().map(|(id, _, _)| id));
            return Decision::New {
                contact_id: Some(contact_id),
                company_id,
                is_repeat: true,
                previous_lead_id,
                reason: Match::new(
                    "known_contact",
                    Some(key.as_key()),
                    Some(format!("contact {contact_id}")),
                )
                .setting_aside(self.set_aside),
            };
        }
        if let Some((company_id, key, target)) = self.company() {
            return Decision::New {
                contact_id: None,
                company_id: Some(company_id),
                is_repeat: true,
                previous_lead_id,
                reason: Match::new("known_company", Some(key), Some(target))
                    .setting_aside(self.set_aside),
            };
        }
        let reason = match previous {
            Some((id, key)) => Match::new(
                "previous_lead",
                Some(key.as_key()),
                Some(format!("lead {id}")),
            ),
            None => Match::new("new", None, None),
        };
        Decision::New {
            contact_id: None,
            company_id: None,
            is_repeat: false,
            previous_lead_id,
            reason: reason.setting_aside(self.set_aside),
        }
    }
}

/// Applies the matching rules to a lead (rules 2 to 6; the store handles rule 1).
pub fn decide(lead: &Lead, directory: &impl Directory) -> Decision {
    Matcher {
        lead,
        me: Person::of(lead),
        directory,
        set_aside: Vec::new(),
    }
    .decide()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Files {
        open: HashMap<IdentityKey, Vec<i64>>,
        contacts: HashMap<IdentityKey, i64>,
        contact_company: HashMap<i64, i64>,
        contact_leads: HashMap<i64, i64>,
        companies: HashMap<CompanyKey, i64>,
        phone_companies: HashMap<String, i64>,
        closed: HashMap<IdentityKey, i64>,
        lead_people: HashMap<i64, Person>,
        contact_people: HashMap<i64, Person>,
        activities: HashMap<String, i64>,
        conversations: HashMap<ConversationKey, i64>,
    }

    impl Directory for Files {
        fn activity_lead(&self, activity_key: &str) -> Option<i64> {
            self.activities.get(activity_key).copied()
        }
        fn conversation_lead(&self, key: &ConversationKey) -> Option<i64> {
            self.conversations.get(key).copied()
        }
        fn open_leads(&self, key: &IdentityKey) -> Vec<i64> {
            self.open.get(key).cloned().unwrap_or_default()
        }
        fn contact(&self, key: &IdentityKey) -> Option<i64> {
            self.contacts.get(key).copied()
        }
        fn open_lead_of_contact(&self, contact_id: i64) -> Option<i64> {
            self.contact_leads.get(&contact_id).copied()
        }
        fn company_of_contact(&self, contact_id: i64) -> Option<i64> {
            self.contact_company.get(&contact_id).copied()
        }
        fn company(&self, key: &CompanyKey) -> Option<i64> {
            self.companies.get(key).copied()
        }
        fn company_by_phone(&self, number: &str) -> Option<i64> {
            self.phone_companies.get(number).copied()
        }
        fn closed_lead(&self, key: &IdentityKey) -> Option<i64> {
            self.closed.get(key).copied()
        }
        fn lead_person(&self, lead_id: i64) -> Option<&Person> {
            self.lead_people.get(&lead_id)
        }
        fn contact_person(&self, contact_id: i64) -> Option<&Person> {
            self.contact_people.get(&contact_id)
        }
    }

    const SWITCHBOARD: &str = "+390287361234";

    fn email(v: &str) -> IdentityKey {
        IdentityKey::Email(v.into())
    }

    fn phone(v: &str) -> IdentityKey {
        IdentityKey::Phone(v.into())
    }

    fn person(name: Option<&str>, keys: &[IdentityKey]) -> Person {
        Person {
            name: name.map(str::to_owned),
            strong_keys: keys.to_vec(),
        }
    }

    fn lead(email: &str, phone: &str, company: &str) -> Lead {
        let mut l = crate::lead::tests_support::lead();
        l.identity_keys = vec![
            IdentityKey::Email(email.into()),
            IdentityKey::Phone(phone.into()),
        ];
        l.company_keys = vec![CompanyKey::Name(company.into())];
        l
    }

    /// An inquiry with a name and any of an email and a phone.
    fn inquiry(name: Option<&str>, address: Option<&str>, number: Option<&str>) -> Lead {
        let mut l = crate::lead::tests_support::lead();
        l.name = name.map(str::to_owned);
        l.identity_keys = address
            .map(email)
            .into_iter()
            .chain(number.map(phone))
            .collect();
        l
    }

    /// Anna's open lead 17 on the switchboard number.
    fn annas_lead() -> Files {
        let mut files = Files::default();
        files.open.insert(phone(SWITCHBOARD), vec![17]);
        files.lead_people.insert(
            17,
            person(Some("Anna Conti"), &[email("anna@studio.example.it")]),
        );
        files
    }

    #[test]
    fn an_event_goes_to_the_lead_of_its_activity_then_of_its_conversation_before_any_key() {
        let thread = ConversationKey::email_thread("<root@mail.example.it>").unwrap();
        let reply = ConversationKey::email_thread("<reply@mail.example.it>").unwrap();
        let mut files = annas_lead();
        files.conversations.insert(thread.clone(), 5);
        files.activities.insert("call:twilio:CA1".into(), 8);
        // By the phone alone it would join Anna's lead 17; its thread says lead 5.
        let mut event = inquiry(None, None, Some(SWITCHBOARD));
        let mut refs = ingest::EventRef::new(ingest::ActivityKind::Email);
        refs.conversation = vec![reply, thread.clone()];
        event.inquiry.event = Some(refs.clone());
        let Decision::Merge {
            lead_id: 5,
            adopt_keys: true,
            reason,
        } = decide(&event, &files)
        else {
            panic!("not filed on its thread's lead");
        };
        assert_eq!(reason.rule, "conversation");
        assert_eq!(reason.key, Some(thread.as_key()));
        // A filed activity wins over the conversation.
        refs.activity_key = Some("call:twilio:CA1".into());
        event.inquiry.event = Some(refs.clone());
        assert!(matches!(
            decide(&event, &files),
            Decision::Merge { lead_id: 8, .. }
        ));
        // An unknown conversation falls through to the person keys.
        refs.activity_key = None;
        refs.conversation = vec![ConversationKey::chat("telegram", "1").unwrap()];
        event.inquiry.event = Some(refs);
        assert!(matches!(
            decide(&event, &files),
            Decision::Merge { lead_id: 17, .. }
        ));
    }

    #[test]
    fn an_open_lead_sharing_any_person_key_takes_the_inquiry() {
        let mut files = Files::default();
        files.open.insert(phone(SWITCHBOARD), vec![17]);
        files.contacts.insert(email("a@example.it"), 42);
        let d = decide(&lead("a@example.it", SWITCHBOARD, "x"), &files);
        assert_eq!(
            d,
            Decision::Merge {
                lead_id: 17,
                adopt_keys: false,
                reason: Match::new(
                    "open_lead",
                    Some("phone:+390287361234".into()),
                    Some("lead 17".into())
                ),
            }
        );
    }

    #[test]
    fn an_open_lead_of_the_contact_a_key_belongs_to_takes_the_inquiry() {
        let mut files = Files::default();
        files.contacts.insert(email("a@example.it"), 42);
        files.contact_leads.insert(42, 17);
        match decide(&lead("a@example.it", SWITCHBOARD, "x"), &files) {
            Decision::Merge {
                lead_id: 17,
                adopt_keys: true,
                reason,
            } => {
                assert_eq!(reason.target.as_deref(), Some("lead 17 of contact 42"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_match_by_a_strong_key_wins_over_one_by_a_weak_key_and_adopts_the_keys() {
        let mut files = annas_lead();
        files.contacts.insert(email("bruno@studio.example.it"), 42);
        files.contact_leads.insert(42, 23);
        match decide(
            &inquiry(None, Some("bruno@studio.example.it"), Some(SWITCHBOARD)),
            &files,
        ) {
            Decision::Merge {
                lead_id: 23,
                adopt_keys: true,
                reason,
            } => assert_eq!(reason.key.as_deref(), Some("email:bruno@studio.example.it")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_shared_number_does_not_merge_a_named_person_with_another_email() {
        let files = annas_lead();
        let bruno = inquiry(
            Some("Bruno Sala"),
            Some("bruno@studio.example.it"),
            Some(SWITCHBOARD),
        );
        match decide(&bruno, &files) {
            Decision::New {
                is_repeat: false,
                reason,
                ..
            } => {
                assert_eq!(reason.rule, "new");
                assert_eq!(
                    reason.set_aside,
                    ["lead 17 by phone:+390287361234: another person (a different email and name)"]
                );
                assert!(reason.describe().contains("set aside: lead 17"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_weak_match_merges_while_nothing_tells_the_people_apart_and_keeps_its_keys_aside() {
        let files = annas_lead();
        let same_name = inquiry(
            Some("ANNA  CONTI"),
            Some("anna.c@gmail.com"),
            Some(SWITCHBOARD),
        );
        let no_name = inquiry(None, Some("bruno@studio.example.it"), Some(SWITCHBOARD));
        let no_email = inquiry(Some("Bruno Sala"), None, Some(SWITCHBOARD));
        for lead in [same_name, no_name, no_email] {
            assert!(
                matches!(
                    decide(&lead, &files),
                    Decision::Merge {
                        lead_id: 17,
                        adopt_keys: false,
                        ..
                    }
                ),
                "{:?}",
                lead.name
            );
        }
    }

    #[test]
    fn among_open_leads_on_one_number_the_one_with_the_same_name_is_chosen() {
        let mut files = annas_lead();
        files.open.insert(phone(SWITCHBOARD), vec![17, 23]);
        files.lead_people.insert(
            23,
            person(Some("Bruno Sala"), &[email("bruno@studio.example.it")]),
        );
        assert!(matches!(
            decide(
                &inquiry(Some("Bruno Sala"), None, Some(SWITCHBOARD)),
                &files
            ),
            Decision::Merge { lead_id: 23, .. }
        ));
        assert!(matches!(
            decide(&inquiry(None, None, Some(SWITCHBOARD)), &files),
            Decision::Merge { lead_id: 17, .. }
        ));
    }

    #[test]
    fn the_contact_of_the_inquirys_name_on_a_number_wins_over_leads_of_other_names() {
        let mut files = Files::default();
        files.open.insert(phone(SWITCHBOARD), vec![23]);
        files.lead_people.insert(
            23,
            person(Some("Elena Fabbri"), &[email("elena@fabbri.example.it")]),
        );
        files.contacts.insert(phone(SWITCHBOARD), 42);
        files.contact_people.insert(
            42,
            person(Some("Anna Conti"), &[email("anna@conti.example.it")]),
        );
        let anna = inquiry(Some("Anna Conti"), None, Some(SWITCHBOARD));
        match decide(&anna, &files) {
            Decision::New {
                contact_id: Some(42),
                reason,
                ..
            } => assert_eq!(
                reason.set_aside,
                ["lead 23 by phone:+390287361234: contact 42 of the same name holds the number"]
            ),
            other => panic!("{other:?}"),
        }
        files.contact_leads.insert(42, 17);
        assert!(matches!(
            decide(&anna, &files),
            Decision::Merge {
                lead_id: 17,
                adopt_keys: false,
                ..
            }
        ));
        // Without a name, the oldest lead on the number.
        assert!(matches!(
            decide(&inquiry(None, None, Some(SWITCHBOARD)), &files),
            Decision::Merge { lead_id: 23, .. }
        ));
    }

    #[test]
    fn accounts_on_one_messenger_tell_people_apart_accounts_on_two_do_not() {
        let telegram = |id: &str| IdentityKey::Messenger(format!("telegram:{id}"));
        let anna = person(Some("Anna"), &[telegram("1")]);
        assert_eq!(
            person(Some("Bruno"), &[telegram("2")]).differs_from(&anna),
            Some("another person (a different telegram account and name)".into())
        );
        let whatsapp = IdentityKey::Messenger("whatsapp:2".into());
        assert_eq!(person(Some("Bruno"), &[whatsapp]).differs_from(&anna), None);
        assert_eq!(
            person(Some("Bruno"), &[telegram("2"), telegram("1")]).differs_from(&anna),
            None,
            "a shared account is the same person"
        );
    }

    #[test]
    fn a_contact_on_a_weak_key_that_is_someone_else_gives_only_its_company() {
        let mut files = Files::default();
        files.contacts.insert(phone(SWITCHBOARD), 42);
        files.contact_people.insert(
            42,
            person(Some("Anna Conti"), &[email("anna@conti.example.it")]),
        );
        files.contact_company.insert(42, 7);
        files.contact_leads.insert(42, 17);
        let elena = inquiry(
            Some("Elena Fabbri"),
            Some("elena@fabbri.example.it"),
            Some(SWITCHBOARD),
        );
        match decide(&elena, &files) {
            Decision::New {
                contact_id: None,
                company_id: Some(7),
                is_repeat: true,
                reason,
                ..
            } => {
                assert_eq!(reason.rule, "known_company");
                assert_eq!(reason.target.as_deref(), Some("company 7 of contact 42"));
                assert_eq!(reason.set_aside.len(), 1, "{:?}", reason.set_aside);
                assert!(reason.set_aside[0].starts_with("contact 42 by phone:"));
            }
            other => panic!("{other:?}"),
        }
        // Anna herself is still recognised by the number: her open lead takes it.
        assert!(matches!(
            decide(
                &inquiry(Some("Anna Conti"), None, Some(SWITCHBOARD)),
                &files
            ),
            Decision::Merge {
                lead_id: 17,
                adopt_keys: false,
                ..
            }
        ));
    }

    #[test]
    fn a_known_contact_makes_a_repeat_lead_linked_to_the_contact_and_its_company() {
        let mut files = Files::default();
        files.contacts.insert(phone(SWITCHBOARD), 42);
        files.contact_company.insert(42, 7);
        files.closed.insert(email("a@example.it"), 3);
        match decide(&lead("a@example.it", SWITCHBOARD, "x"), &files) {
            Decision::New {
                contact_id,
                company_id,
                is_repeat,
                previous_lead_id,
                reason,
            } => {
                assert_eq!(
                    (contact_id, company_id, is_repeat),
                    (Some(42), Some(7), true)
                );
                assert_eq!(previous_lead_id, Some(3));
                assert_eq!(reason.rule, "known_contact");
                assert_eq!(
                    reason.describe(),
                    "known_contact: matched contact 42 by phone:+390287361234"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_company_listing_the_number_dialled_is_a_known_company() {
        let mut files = Files::default();
        files.phone_companies.insert(SWITCHBOARD.into(), 9);
        let desk = inquiry(Some("Dario"), None, Some("+390287361234;ext=12"));
        match decide(&desk, &files) {
            Decision::New {
                contact_id: None,
                company_id: Some(9),
                is_repeat: true,
                reason,
                ..
            } => assert_eq!(reason.key.as_deref(), Some("phone:+390287361234")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            dialled_number(&phone("+390287361234;ext=12")),
            Some(SWITCHBOARD)
        );
        assert_eq!(dialled_number(&email("a@example.it")), None);
    }

    #[test]
    fn a_known_company_makes_a_repeat_lead_without_a_contact() {
        let mut files = Files::default();
        files.companies.insert(CompanyKey::Name("fabbri".into()), 9);
        match decide(&lead("b@example.it", "+390200000000", "fabbri"), &files) {
            Decision::New {
                contact_id: None,
                company_id: Some(9),
                is_repeat: true,
                reason,
                ..
            } => assert_eq!(reason.key.as_deref(), Some("name:fabbri")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stranger_gets_a_new_lead_pointing_at_their_last_closed_one() {
        let mut files = Files::default();
        assert!(matches!(
            decide(&lead("c@example.it", "+390200000001", "y"), &files),
            Decision::New { is_repeat: false, previous_lead_id: None, ref reason, .. } if reason.rule == "new"
        ));
        files.closed.insert(phone("+390200000001"), 5);
        assert!(matches!(
            decide(&lead("c@example.it", "+390200000001", "y"), &files),
            Decision::New { is_repeat: false, previous_lead_id: Some(5), ref reason, .. } if reason.rule == "previous_lead"
        ));
    }

    #[test]
    fn a_closed_lead_of_someone_else_on_a_shared_number_is_not_the_previous_lead() {
        let mut files = Files::default();
        files.closed.insert(phone(SWITCHBOARD), 5);
        files.lead_people.insert(
            5,
            person(Some("Anna Conti"), &[email("anna@studio.example.it")]),
        );
        let bruno = inquiry(
            Some("Bruno Sala"),
            Some("bruno@studio.example.it"),
            Some(SWITCHBOARD),
        );
        assert!(matches!(
            decide(&bruno, &files),
            Decision::New {
                previous_lead_id: None,
                ..
            }
        ));
        let anna = inquiry(Some("Anna Conti"), None, Some(SWITCHBOARD));
        assert!(matches!(
            decide(&anna, &files),
            Decision::New {
                previous_lead_id: Some(5),
                ..
            }
        ));
    }
}
