//! Matching rules: is this inquiry from someone the company already knows?
//!
//! The rules are pure functions over a [`Directory`] (what is already on file); `store`
//! implements it over what it looked up inside the consumer's transaction. In order:
//!
//! 1. the same inquiry was filed before: nothing to do (the store sees this first);
//! 2. an open or frozen lead shares a person key (email, phone, messenger id), or is
//!    linked to the contact a person key belongs to (the lead came by phone, the new
//!    inquiry by email, and the contact has both): the inquiry is merged into it;
//! 3. a contact shares a person key, or a company shares a company key: a new lead,
//!    flagged as a repeat lead and linked to that client;
//! 4. otherwise a new lead, pointing at the person's last closed lead if there is one.
//!
//! Every decision carries its reason as a [`Match`]: the rule, the key and the target.

use serde::{Deserialize, Serialize};

use crate::lead::{CompanyKey, IdentityKey, Lead};

/// What is already on file, as far as matching needs to know.
pub trait Directory {
    /// The open or frozen lead that holds this person key, if any (the oldest if several).
    fn open_lead(&self, key: &IdentityKey) -> Option<i64>;
    /// The contact that holds this person key, if any.
    fn contact(&self, key: &IdentityKey) -> Option<i64>;
    /// The open or frozen lead already linked to this contact, if any.
    fn open_lead_of_contact(&self, contact_id: i64) -> Option<i64>;
    /// The company a contact belongs to, if any.
    fn company_of_contact(&self, contact_id: i64) -> Option<i64>;
    /// The company that holds this company key, if any (the oldest if several).
    fn company(&self, key: &CompanyKey) -> Option<i64>;
    /// The person's most recent closed lead (success, failure or abandoned), if any.
    fn closed_lead(&self, key: &IdentityKey) -> Option<i64>;
}

/// Why a lead was filed the way it was: shown on the lead as `match`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    /// `open_lead`, `known_contact`, `known_company`, `previous_lead` or `new`.
    pub rule: String,
    /// The key that matched (`phone:+390287361234`), if any.
    pub key: Option<String>,
    /// What it matched (`lead 17`, `contact 42`, `company 7`), if anything.
    pub target: Option<String>,
}

impl Match {
    fn new(rule: &str, key: Option<String>, target: Option<String>) -> Self {
        Self {
            rule: rule.into(),
            key,
            target,
        }
    }

    /// The reason as a sentence, e.g. "matched contact 42 by phone:+390287361234".
    pub fn describe(&self) -> String {
        match (&self.target, &self.key) {
            (Some(target), Some(key)) => format!("{}: matched {target} by {key}", self.rule),
            _ => format!("{}: no earlier lead, contact or company matched", self.rule),
        }
    }
}

/// What to do with a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add the inquiry to this open lead.
    Merge {
        /// The open lead.
        lead_id: i64,
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

/// Applies the matching rules to a lead (rules 2 to 4; the store handles rule 1).
pub fn decide(lead: &Lead, directory: &impl Directory) -> Decision {
    for key in &lead.identity_keys {
        if let Some(lead_id) = directory.open_lead(key) {
            return Decision::Merge {
                lead_id,
                reason: Match::new(
                    "open_lead",
                    Some(key.as_key()),
                    Some(format!("lead {lead_id}")),
                ),
            };
        }
    }
    for key in &lead.identity_keys {
        if let Some(contact_id) = directory.contact(key)
            && let Some(lead_id) = directory.open_lead_of_contact(contact_id)
        {
            return Decision::Merge {
                lead_id,
                reason: Match::new(
                    "open_lead",
                    Some(key.as_key()),
                    Some(format!("lead {lead_id} of contact {contact_id}")),
                ),
            };
        }
    }
    let previous_lead_id = lead
        .identity_keys
        .iter()
        .find_map(|key| directory.closed_lead(key));
    for key in &lead.identity_keys {
        if let Some(contact_id) = directory.contact(key) {
            return Decision::New {
                contact_id: Some(contact_id),
                company_id: directory
                    .company_of_contact(contact_id)
                    .or_else(|| lead.company_keys.iter().find_map(|k| directory.company(k))),
                is_repeat: true,
                previous_lead_id,
                reason: Match::new(
                    "known_contact",
                    Some(key.as_key()),
                    Some(format!("contact {contact_id}")),
                ),
            };
        }
    }
    for key in &lead.company_keys {
        if let Some(company_id) = directory.company(key) {
            return Decision::New {
                contact_id: None,
                company_id: Some(company_id),
                is_repeat: true,
                previous_lead_id,
                reason: Match::new(
                    "known_company",
                    Some(key.as_key()),
                    Some(format!("company {company_id}")),
                ),
            };
        }
    }
    let reason = match previous_lead_id {
        Some(id) => Match::new(
            "previous_lead",
            lead.identity_keys
                .iter()
                .find(|k| directory.closed_lead(k) == Some(id))
                .map(IdentityKey::as_key),
            Some(format!("lead {id}")),
        ),
        None => Match::new("new", None, None),
    };
    Decision::New {
        contact_id: None,
        company_id: None,
        is_repeat: false,
        previous_lead_id,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Files {
        open: HashMap<IdentityKey, i64>,
        contacts: HashMap<IdentityKey, i64>,
        contact_company: HashMap<i64, i64>,
        contact_leads: HashMap<i64, i64>,
        companies: HashMap<CompanyKey, i64>,
        closed: HashMap<IdentityKey, i64>,
    }

    impl Directory for Files {
        fn open_lead(&self, key: &IdentityKey) -> Option<i64> {
            self.open.get(key).copied()
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
        fn closed_lead(&self, key: &IdentityKey) -> Option<i64> {
            self.closed.get(key).copied()
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

    #[test]
    fn an_open_lead_sharing_any_person_key_takes_the_inquiry() {
        let mut files = Files::default();
        files
            .open
            .insert(IdentityKey::Phone("+390287361234".into()), 17);
        files
            .contacts
            .insert(IdentityKey::Email("a@example.it".into()), 42);
        let d = decide(&lead("a@example.it", "+390287361234", "x"), &files);
        assert_eq!(
            d,
            Decision::Merge {
                lead_id: 17,
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
        files
            .contacts
            .insert(IdentityKey::Email("a@example.it".into()), 42);
        files.contact_leads.insert(42, 17);
        match decide(&lead("a@example.it", "+390287361234", "x"), &files) {
            Decision::Merge {
                lead_id: 17,
                reason,
            } => {
                assert_eq!(reason.target.as_deref(), Some("lead 17 of contact 42"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_known_contact_makes_a_repeat_lead_linked_to_the_contact_and_its_company() {
        let mut files = Files::default();
        files
            .contacts
            .insert(IdentityKey::Phone("+390287361234".into()), 42);
        files.contact_company.insert(42, 7);
        files
            .closed
            .insert(IdentityKey::Email("a@example.it".into()), 3);
        match decide(&lead("a@example.it", "+390287361234", "x"), &files) {
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
        files
            .closed
            .insert(IdentityKey::Phone("+390200000001".into()), 5);
        assert!(matches!(
            decide(&lead("c@example.it", "+390200000001", "y"), &files),
            Decision::New { is_repeat: false, previous_lead_id: Some(5), ref reason, .. } if reason.rule == "previous_lead"
        ));
    }
}
