//! The connectors the daemon runs, listed in one place, and how they are run.
//!
//! [`shipped`] is the list: a connector is a folder under `ingest/src/` with a
//! [`ConnectorKind`], and one line there. Each kind reads its own top-level section of
//! the configuration ([`Catalogue::load`]), checks it, and builds its connectors; HTTP
//! connectors are mounted on the server, pull connectors run under the
//! [`supervisor`]. [`status`] keeps what `/readyz` and `leadpipe_connector_up` say
//! about each.

pub mod status;
pub mod supervisor;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use ingest::connector::{Checks, Connector, ConnectorKind, Deps};

use crate::settings::ConfigProblem;

/// Every connector kind the shipped daemon runs; adding a connector is one line here.
pub fn shipped() -> Catalogue {
    Catalogue::default()
        .with::<ingest::forms::Forms>()
        .with::<ingest::email::mailbox::Mailboxes>()
        .with::<ingest::whatsapp::Whatsapp>()
        .with::<ingest::events::EventSources>()
        .with::<ingest::telegram::Telegram>()
        .with::<ingest::twilio::Twilio>()
        .with::<ingest::ami::Ami>()
}

/// The connector kinds a daemon knows.
#[derive(Clone, Default)]
pub struct Catalogue {
    kinds: Vec<Arc<dyn Kind>>,
}

impl Catalogue {
    /// The same catalogue with one more kind.
    pub fn with<K: ConnectorKind>(mut self) -> Self {
        self.kinds.push(Arc::new(Erased::<K>(PhantomData)));
        self
    }

    /// Whether `section` is a connector section of this catalogue.
    pub fn has_section(&self, section: &str) -> bool {
        self.kinds.iter().any(|k| k.section() == section)
    }

    /// Reads every kind's section from the configuration. Keys no kind knows are named
    /// in `unknown` (as `forms[1].colour`); a section that does not read at all is a
    /// problem of its own.
    pub fn load(
        &self,
        raw: &config::Config,
        unknown: &mut Vec<String>,
    ) -> Result<Sections, Vec<ConfigProblem>> {
        let mut sections = Vec::new();
        let mut problems = Vec::new();
        for kind in &self.kinds {
            let value = raw.get::<config::Value>(kind.section()).ok();
            match kind.load(value, unknown) {
                Ok(section) => sections.push(section),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(Sections(sections))
        } else {
            Err(problems)
        }
    }
}

/// A connector kind with its configuration type erased.
trait Kind: Send + Sync {
    fn section(&self) -> &'static str;
    fn load(
        &self,
        value: Option<config::Value>,
        unknown: &mut Vec<String>,
    ) -> Result<Box<dyn Section>, ConfigProblem>;
}

struct Erased<K>(PhantomData<fn() -> K>);

impl<K: ConnectorKind> Kind for Erased<K> {
    fn section(&self) -> &'static str {
        K::SECTION
    }

    fn load(
        &self,
        value: Option<config::Value>,
        unknown: &mut Vec<String>,
    ) -> Result<Box<dyn Section>, ConfigProblem> {
        let config = match value {
            None => K::Config::default(),
            Some(value) => serde_ignored::deserialize(value, |path| {
                unknown.push(crate::settings::key_path(&format!("{}.{path}", K::SECTION)));
            })
            .map_err(|error| match error {
                config::ConfigError::NotFound(path) => ConfigProblem {
                    key: nested_key(K::SECTION, &path),
                    problem: "missing: this key is required (see deploy/leadpipe.example.toml)"
                        .into(),
                },
                other => ConfigProblem {
                    key: K::SECTION.into(),
                    problem: format!("{other}: see deploy/leadpipe.example.toml for its shape"),
                },
            })?,
        };
        Ok(Box::new(Loaded::<K>(config)))
    }
}

/// A path inside a section as the configuration reader names it (`[1]source`) as a key
/// path from the file's root (`forms[1].source`).
fn nested_key(section: &str, path: &str) -> String {
    let mut key = section.to_owned();
    let mut after_index = false;
    for c in path.chars() {
        if after_index && c != '[' && c != '.' {
            key.push('.');
        }
        after_index = c == ']';
        key.push(c);
    }
    if !path.starts_with('[') && !path.is_empty() {
        key.insert(section.len(), '.');
    }
    key
}

/// One kind's section as read.
trait Section: Send + Sync {
    fn name(&self) -> &'static str;
    fn as_any(&self) -> &dyn std::any::Any;
    fn problems(&self, checks: &Checks<'_>) -> Vec<(String, String)>;
    fn summary(&self) -> Option<String>;
    fn build(&self, deps: &Deps) -> Result<Vec<Connector>, (String, String)>;
}

struct Loaded<K: ConnectorKind>(K::Config);

impl<K: ConnectorKind> Section for Loaded<K> {
    fn name(&self) -> &'static str {
        K::SECTION
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn problems(&self, checks: &Checks<'_>) -> Vec<(String, String)> {
        K::validate(&self.0, checks)
    }

    fn summary(&self) -> Option<String> {
        K::summary(&self.0)
    }

    fn build(&self, deps: &Deps) -> Result<Vec<Connector>, (String, String)> {
        K::build(self.0.clone(), deps)
    }
}

/// Every connector section of a configuration, as read.
#[derive(Default)]
pub struct Sections(Vec<Box<dyn Section>>);

impl fmt::Debug for Sections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.name()))
            .finish()
    }
}

impl Sections {
    /// Every problem of every section, with key paths from the file's root.
    pub fn problems(&self, checks: &Checks<'_>) -> Vec<(String, String)> {
        self.0.iter().flat_map(|s| s.problems(checks)).collect()
    }

    /// The section of kind `K` as read, for commands that work on one connector.
    pub fn get<K: ConnectorKind>(&self) -> Option<&K::Config> {
        self.0
            .iter()
            .find_map(|s| s.as_any().downcast_ref::<Loaded<K>>())
            .map(|loaded| &loaded.0)
    }

    /// What the sections declare ("4 forms"), for `check-config`.
    pub fn summaries(&self) -> Vec<String> {
        self.0.iter().filter_map(|s| s.summary()).collect()
    }

    /// Builds every connector.
    pub fn build(&self, deps: &Deps) -> Result<Vec<Connector>, ConfigProblem> {
        let mut out = Vec::new();
        for section in &self.0 {
            let built = section
                .build(deps)
                .map_err(|(key, problem)| ConfigProblem { key, problem })?;
            out.extend(built);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::nested_key;

    #[test]
    fn a_missing_key_is_named_from_the_files_root() {
        assert_eq!(nested_key("forms", "[1]source"), "forms[1].source");
        assert_eq!(nested_key("forms", "[0]"), "forms[0]");
        assert_eq!(nested_key("telegram", "token"), "telegram.token");
    }
}
