//! Pure normalisation of the contact data found in sales inquiries.
//!
//! Nothing here performs I/O; every function is deterministic and total, so
//! the same inquiry always yields the same lead fields and keys.
//!
//! # Layout
//!
//! - [`company`]: company keys from names ([`company_key`]) and domains ([`domain_key`], [`is_free_mail`]).
//! - [`email`]: validates email addresses and normalises them (trim, NFC,
//!   lower case) into [`EmailAddress`].
//! - [`phone`]: turns typed phone numbers into E.164 ([`PhoneE164`]) plus an
//!   optional extension, using a default [`Region`] for national numbers.
//! - [`text`]: cleans free-text fields and builds display names
//!   ([`clean_text`], [`join_name`]) and folds text into matching keys
//!   ([`fold_key`]).
//! - [`matching`]: the matching rules (same person? known client?) over a [`matching::Directory`].
//! - [`keys`]: which values may be identity keys ([`KeyRules`]): placeholder
//!   addresses, role mailboxes and social or hosting sites never are, or only
//!   for the company; [`MatchingConfig`] extends the built-in lists.
//! - [`lead`]: from an inquiry to a [`Lead`]: cleaned contact data and identity keys
//!   ([`normalize`], or [`normalize_with`] given rules).

pub mod company;
pub mod email;
pub mod keys;
pub mod lead;
pub mod matching;
pub mod phone;
pub mod text;

pub use company::{company_key, domain_key, is_free_mail};
pub use email::{EmailAddress, InvalidEmail};
pub use keys::{EmailKind, KeyRules, MatchingConfig};
pub use lead::{
    CompanyKey, IdentityKey, InvalidIdentityKey, Lead, normalize, normalize_with, primary_key_of,
};
pub use phone::{
    InvalidE164, InvalidPhone, InvalidRegion, ParsedPhone, PhoneE164, Region, parse_phone,
    split_extension, warm_up,
};
pub use text::{clean_text, fold_key, join_name, verbatim_text};
