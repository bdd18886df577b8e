//! The `[[mailboxes]]` section: the IMAP folders the daemon reads mail from.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::MailboxReading;
use super::imap::MailboxTask;
use crate::connector::{Checks, ConfigProblem, Connector, ConnectorKind, Deps, PullConnector};
use crate::inquiry::Channel;

/// How the connection to the IMAP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text: only for a server on the same machine or a trusted network.
    None,
    /// Plain text first, then `STARTTLS` before logging in.
    Starttls,
    /// TLS from the first byte (port 993).
    #[default]
    Tls,
}

/// What is done to a message once the broker confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Nothing: the mailbox is never modified (people read these mailboxes).
    None,
    /// The keyword `$Leadpipe` is added.
    Flag,
    /// The message is moved to this folder.
    Move(String),
}

impl Processed {
    fn read(value: Option<&str>) -> Processed {
        match value.map(str::trim) {
            None | Some("none") | Some("") => Processed::None,
            Some("flag") => Processed::Flag,
            Some(folder) => Processed::Move(folder.to_owned()),
        }
    }
}

/// The keyword `processed = "flag"` adds.
pub const PROCESSED_KEYWORD: &str = "$Leadpipe";

/// One `[[mailboxes]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
pub struct MailboxConfig {
    /// The mailbox's name: commands and the inquiry ids use it; unique.
    pub name: String,
    /// The IMAP server's host name or address.
    pub host: String,
    /// Its port; default 993 with `tls = "tls"`, else 143.
    #[serde(default)]
    pub port: Option<u16>,
    /// `none`, `starttls` or `tls` (default).
    #[serde(default)]
    pub tls: TlsMode,
    /// A PEM file of CA certificates trusted besides the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The login name.
    pub user: String,
    /// The password, written here (see also `password_file` and the environment).
    #[serde(default)]
    pub password: Option<String>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The folder read (default `INBOX`).
    #[serde(default = "inbox")]
    pub folder: String,
    /// The source its leads are filed under.
    pub source: String,
    /// Region for phone numbers written without a country code.
    #[serde(default)]
    pub default_region: Option<String>,
    /// The company's own domains: mail from them is never a lead.
    #[serde(default)]
    pub internal_domains: Vec<String>,
    /// Seconds between polls when the server has no IDLE (default 60).
    #[serde(default = "poll_interval")]
    pub poll_interval_secs: u64,
    /// Seconds an IDLE runs before it is re-issued, well under the 29 minutes servers
    /// allow, so a connection that stopped answering is noticed (default 300).
    #[serde(default = "idle_interval")]
    pub idle_interval_secs: u64,
    /// `none` (default), `flag`, or a folder to move confirmed messages to.
    #[serde(default)]
    pub processed: Option<String>,
    /// Largest message read, in bytes (default 25 MiB); a larger one is kept as unreadable.
    #[serde(default = "max_message")]
    pub max_message_bytes: u32,
}

fn inbox() -> String {
    "INBOX".into()
}
fn poll_interval() -> u64 {
    60
}
fn idle_interval() -> u64 {
    300
}
fn max_message() -> u32 {
    25 * 1024 * 1024
}

impl MailboxConfig {
    /// The port connected to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Tls => 993,
            _ => 143,
        })
    }

    /// What `processed` asks for.
    pub fn processed(&self) -> Processed {
        Processed::read(self.processed.as_deref())
    }

    /// What reading its mail needs.
    pub fn reading(&self) -> MailboxReading {
        MailboxReading {
            mailbox: self.name.clone(),
            source: self.source.clone(),
            default_region: self.default_region.clone(),
            internal_domains: self.internal_domains.clone(),
        }
    }

    /// The environment variable that overrides the password:
    /// `LEADPIPE_MAILBOX_<NAME>_PASSWORD`, the name upper-cased with `_` for anything
    /// that is not a letter or digit.
    pub fn password_env(&self) -> String {
        let name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("LEADPIPE_MAILBOX_{name}_PASSWORD")
    }

    /// The password: the environment override, then `password_file`, then `password`.
    pub fn resolve_password(&self) -> Result<String, String> {
        let env = self.password_env();
        if let Ok(value) = std::env::var(&env)
            && !value.is_empty()
        {
            return Ok(value);
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read the password file {}: {e}; check the path and its permissions",
                    path.display()
                )
            })?;
            let line = text.lines().next().unwrap_or_default().trim_end();
            if line.is_empty() {
                return Err(format!("the password file {} is empty", path.display()));
            }
            return Ok(line.to_owned());
        }
        match &self.password {
            Some(password) if !password.is_empty() => Ok(password.clone()),
            _ => Err(format!(
                "no password: set `password`, `password_file` or the environment variable {env}"
            )),
        }
    }
}

/// The mailbox connector kind: one pull task per `[[mailboxes]]` entry.
pub struct Mailboxes;

impl ConnectorKind for Mailboxes {
    const SECTION: &'static str = "mailboxes";
    type Config = Vec<MailboxConfig>;

    fn validate(mailboxes: &Self::Config, checks: &Checks<'_>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (index, mailbox) in mailboxes.iter().enumerate() {
            let key = |field: &str| format!("mailboxes[{index}].{field}");
            let name = mailbox.name.trim();
            if name.is_empty() {
                problems.push((key("name"), "must not be empty".into()));
            } else if !names.insert(name.to_owned()) {
                problems.push((
                    key("name"),
                    format!("`{name}` names another mailbox too: give each its own name"),
                ));
            }
            if mailbox.host.trim().is_empty() {
                problems.push((key("host"), "must not be empty".into()));
            }
            if mailbox.port == Some(0) {
                problems.push((key("port"), "must be a port number from 1 to 65535".into()));
            }
            if let Some(path) = &mailbox.ca_file {
                if mailbox.tls == TlsMode::None {
                    problems.push((
                        key("ca_file"),
                        "is used only with tls = \"starttls\" or \"tls\"".into(),
                    ));
                } else if let Err(problem) = super::tls::read_ca_file(path) {
                    problems.push((key("ca_file"), problem));
                }
            }
            if mailbox.user.trim().is_empty() {
                problems.push((key("user"), "must not be empty".into()));
            }
            if mailbox.password.is_some() && mailbox.password_file.is_some() {
                problems.push((
                    key("password_file"),
                    "set either `password` or `password_file`, not both".into(),
                ));
            }
            if let Err(problem) = mailbox.resolve_password() {
                let field = if mailbox.password_file.is_some() {
                    "password_file"
                } else {
                    "password"
                };
                problems.push((key(field), problem));
            }
            if mailbox.folder.trim().is_empty() {
                problems.push((key("folder"), "must not be empty (e.g. INBOX)".into()));
            }
            if mailbox.source.trim().is_empty() {
                problems.push((key("source"), "must not be empty (e.g. mail-it)".into()));
            }
            if let Some(region) = &mailbox.default_region
                && let Err(problem) = (checks.region)(region)
            {
                problems.push((key("default_region"), problem));
            }
            for (i, domain) in mailbox.internal_domains.iter().enumerate() {
                let domain = domain.trim();
                if domain.is_empty() || domain.contains('@') || !domain.contains('.') {
                    problems.push((
                        format!("mailboxes[{index}].internal_domains[{i}]"),
                        format!("`{domain}` is not a domain name (write `example.com`)"),
                    ));
                }
            }
            if mailbox.poll_interval_secs == 0 {
                problems.push((key("poll_interval_secs"), "must be at least 1".into()));
            }
            if !(10..=1740).contains(&mailbox.idle_interval_secs) {
                problems.push((
                    key("idle_interval_secs"),
                    "must be from 10 to 1740 (servers end an IDLE after 30 minutes)".into(),
                ));
            }
            if mailbox.max_message_bytes < 1024 {
                problems.push((key("max_message_bytes"), "must be at least 1024".into()));
            }
            if let Processed::Move(folder) = mailbox.processed()
                && folder == mailbox.folder
            {
                problems.push((
                    key("processed"),
                    "moving messages to the folder they are read from would read them again: \
                     name another folder, or use \"flag\" or \"none\""
                        .into(),
                ));
            }
        }
        problems
    }

    fn summary(mailboxes: &Self::Config) -> Option<String> {
        if mailboxes.is_empty() {
            return None;
        }
        Some(format!(
            "{} mailbox{}",
            mailboxes.len(),
            if mailboxes.len() == 1 { "" } else { "es" }
        ))
    }

    fn build(mailboxes: Self::Config, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        let mut built = Vec::new();
        for (index, mailbox) in mailboxes.into_iter().enumerate() {
            let password = mailbox
                .resolve_password()
                .map_err(|problem| (format!("mailboxes[{index}].password"), problem))?;
            built.push(Connector::Pull(PullConnector {
                channel: Channel::Email,
                // The lease and cursor belong to the mailbox, not to its source: two
                // mailboxes may file under one source.
                name: mailbox.name.clone(),
                source: mailbox.source.clone(),
                task: Arc::new(MailboxTask::new(mailbox, password)),
            }));
        }
        let _ = deps;
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> MailboxConfig {
        let text = format!(
            "name = \"vendite-it\"\nhost = \"127.0.0.1\"\nport = 1143\ntls = \"none\"\n\
             user = \"leadpipe\"\nsource = \"mail-it\"\n{extra}"
        );
        serde_json::from_value(toml_like(&text)).expect("a mailbox entry")
    }

    /// Enough of TOML for these tests: `key = value` lines with JSON values.
    fn toml_like(text: &str) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=').expect("key = value");
            map.insert(
                key.trim().into(),
                serde_json::from_str(value.trim()).expect("a JSON value"),
            );
        }
        serde_json::Value::Object(map)
    }

    fn problems(mailboxes: &[MailboxConfig]) -> Vec<ConfigProblem> {
        let intake = crate::connector::IntakeSettings::default();
        let region = |r: &str| {
            if r.len() == 2 {
                Ok(())
            } else {
                Err(format!("`{r}` is not a region"))
            }
        };
        let checks = Checks {
            intake: &intake,
            region: &region,
        };
        Mailboxes::validate(&mailboxes.to_vec(), &checks)
    }

    #[test]
    fn the_contracts_entry_reads_with_its_defaults() {
        let m = entry("password = \"leadpipe\"\ndefault_region = \"IT\"");
        assert_eq!(m.port(), 1143);
        assert_eq!(m.folder, "INBOX");
        assert_eq!(m.processed(), Processed::None);
        assert!(problems(&[m]).is_empty());
    }

    #[test]
    fn every_problem_is_named_by_its_key_path() {
        let mut a = entry("default_region = \"Italy\"\nprocessed = \"INBOX\"");
        a.internal_domains = vec!["@x".into()];
        let b = entry("password = \"x\"\nidle_interval_secs = 5");
        let found = problems(&[a, b]);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "mailboxes[0].password",
                "mailboxes[0].default_region",
                "mailboxes[0].internal_domains[0]",
                "mailboxes[0].processed",
                "mailboxes[1].name",
                "mailboxes[1].idle_interval_secs",
            ],
            "{found:?}"
        );
    }

    #[test]
    fn a_ca_file_that_is_missing_or_not_pem_is_named_by_its_key_path() {
        let mut m = entry("password = \"x\"\ntls = \"tls\"");
        m.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let found = problems(&[m]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "mailboxes[0].ca_file");
        assert!(found[0].1.contains("/nonexistent/ca.pem"), "{found:?}");
        let mut plain = entry("password = \"x\"");
        plain.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let found = problems(&[plain]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].1.contains("only with tls"), "{found:?}");
    }

    #[test]
    fn processed_reads_none_flag_or_a_folder() {
        assert_eq!(Processed::read(None), Processed::None);
        assert_eq!(Processed::read(Some("none")), Processed::None);
        assert_eq!(Processed::read(Some("flag")), Processed::Flag);
        assert_eq!(
            Processed::read(Some("Archive/Leads")),
            Processed::Move("Archive/Leads".into())
        );
    }

    #[test]
    fn the_environment_names_the_mailbox() {
        assert_eq!(
            entry("").password_env(),
            "LEADPIPE_MAILBOX_VENDITE_IT_PASSWORD"
        );
    }
}
