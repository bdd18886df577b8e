//! Every message of the mail corpora read as a mailbox reads it, against its expectations:
//! new leads, replies that join a thread, redeliveries, and non-leads with their reasons,
//! down to the contact data the normalizer makes of each.
//!
//! Our own fixtures (`tests/fixtures/email`) always run; the shared corpus
//! (`../shared/corpus/email`, or each `email/` folder of `LEADPIPE_CORPORA=dir1:dir2`) runs
//! where it exists. Messages are read in file-name order, and threads are followed as the
//! store follows them: an inquiry any of whose conversation keys belongs to a lead joins
//! that lead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ingest::email::{MailVerdict, MailboxReading, read_message};
use ingest::{ActivityKind, Channel, InquiryId};
use serde_json::Value;

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    NewLead,
    Joins(String),
    DuplicateOf(String),
    NotALead(String),
}

fn received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).expect("a fixed instant")
}

fn reading_for(line: &Value) -> MailboxReading {
    let region = line["default_region"]
        .as_str()
        .expect("every expectation names its mailbox's region");
    MailboxReading {
        mailbox: format!("acc-{}", region.to_lowercase()),
        source: format!("mail-{}", region.to_lowercase()),
        default_region: Some(region.to_owned()),
        internal_domains: line["internal_domains"]
            .as_array()
            .map(|domains| {
                domains
                    .iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn expectations(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("expect.jsonl"))
        .unwrap_or_else(|e| panic!("{}: cannot read expect.jsonl: {e}", dir.display()));
    let mut lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("expect.jsonl holds one JSON object a line"))
        .collect();
    lines.sort_by(|a, b| a["file"].as_str().cmp(&b["file"].as_str()));
    lines
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

/// Reads every message of `dir` and returns one sentence per difference from its
/// expectations, and the number of messages read.
fn check_folder(dir: &Path) -> (Vec<String>, usize) {
    let lines = expectations(dir);
    let mut problems = Vec::new();
    let mut ids: HashMap<InquiryId, String> = HashMap::new();
    let mut thread_owner: HashMap<String, String> = HashMap::new();
    for line in &lines {
        let file = line["file"].as_str().expect("a file name");
        let raw = std::fs::read(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: cannot read {file}: {e}", dir.display()));
        let reading = reading_for(line);
        let verdict = read_message(&raw, &reading, received_at());
        let mut bad = |what: String| problems.push(format!("{file}: {what}"));

        let again = read_message(&raw, &reading, received_at());
        if again != verdict {
            bad("reading the same bytes twice gives two different inquiries".into());
        }
        let inquiry = verdict.inquiry();
        let event = inquiry.event.as_ref();

        let outcome = if let Some(first) = ids.get(&inquiry.id) {
            Outcome::DuplicateOf(first.clone())
        } else if let Some(reason) = verdict.reason() {
            Outcome::NotALead(reason.as_str().to_owned())
        } else {
            let keys: Vec<String> = event
                .map(|e| e.conversation.iter().map(|k| k.as_key()).collect())
                .unwrap_or_default();
            let owner = keys.iter().find_map(|k| thread_owner.get(k)).cloned();
            let lead = owner.clone().unwrap_or_else(|| file.to_owned());
            for key in keys {
                thread_owner.entry(key).or_insert_with(|| lead.clone());
            }
            owner.map_or(Outcome::NewLead, Outcome::Joins)
        };
        ids.entry(inquiry.id).or_insert_with(|| file.to_owned());

        let expected = if let Some(original) = text(&line["duplicate_of"]) {
            Outcome::DuplicateOf(original.to_owned())
        } else if line["lead"] == true {
            Outcome::NewLead
        } else if let Some(parent) = text(&line["thread_of"]) {
            Outcome::Joins(parent.to_owned())
        } else {
            let reason = text(&line["reason"]).map(str::to_owned).or_else(|| {
                if line["bounce"] == true {
                    Some("bounce".into())
                } else if line["auto_reply"] == true {
                    Some("auto_reply".into())
                } else {
                    None
                }
            });
            match (reason, &outcome) {
                (Some(reason), _) => Outcome::NotALead(reason),
                // A bulk message is a list's or an auto-responder's; anything else: any
                // reason will do, as long as it is not a lead.
                (None, Outcome::NotALead(got))
                    if line["bulk"] != true || got == "mailing_list" || got == "auto_reply" =>
                {
                    outcome.clone()
                }
                (None, _) => Outcome::NotALead("some reason".into()),
            }
        };
        if outcome != expected {
            bad(format!("became {outcome:?}, want {expected:?}"));
        }

        if inquiry.channel != Channel::Email || inquiry.source != reading.source {
            bad(format!(
                "channel {} and source {}, want email and {}",
                inquiry.channel, inquiry.source, reading.source
            ));
        }
        let Some(event) = event else {
            bad("carries no event".into());
            continue;
        };
        if event.kind != ActivityKind::Email {
            bad(format!("activity kind {}, want email", event.kind));
        }
        let message_id = event.data.get("message_id").and_then(Value::as_str);
        if message_id != text(&line["message_id"]) {
            bad(format!(
                "data.message_id {message_id:?}, want {:?}",
                line["message_id"]
            ));
        }
        if line["message_id_generated"] == true
            && event.data.get("message_id_generated") != Some(&Value::Bool(true))
        {
            bad("its Message-ID was made from its bytes, yet data does not say so".into());
        }
        if let Some(subject) = text(&line["subject"])
            && event.subject.as_deref() != Some(subject)
        {
            bad(format!("subject {:?}, want {subject:?}", event.subject));
        }

        let lead = normalizer::normalize(inquiry.clone());
        let got_email = lead.email.as_ref().map(|e| e.as_str().to_owned());
        let got_phone = lead.phone.as_ref().map(|p| p.as_str().to_owned());
        let want = |key: &str| text(&line[key]).map(str::to_owned);
        match &verdict {
            MailVerdict::NotALead { reason, inquiry } => {
                if inquiry.spam.as_deref() != Some(reason.as_str()) {
                    bad(format!("kept with spam {:?}, want {reason}", inquiry.spam));
                }
                if !event.conversation.is_empty() || event.activity_key.is_some() {
                    bad("a non-lead carries conversation or activity keys".into());
                }
                if got_email.is_some() || lead.name.is_some() || got_phone.is_some() {
                    bad(format!(
                        "a non-lead gives contact data: {got_email:?} {:?} {got_phone:?}",
                        lead.name
                    ));
                }
            }
            MailVerdict::Lead(inquiry) => {
                let bare = message_id
                    .unwrap_or_default()
                    .trim_start_matches('<')
                    .trim_end_matches('>');
                if event.activity_key.as_deref() != Some(&format!("email:{bare}")) {
                    bad(format!("activity key {:?}", event.activity_key));
                }
                if event.conversation.first().map(|k| k.as_key())
                    != Some(format!("email-thread:{bare}"))
                {
                    bad("its own Message-ID is not its first conversation key".into());
                }
                if inquiry.spam.is_some() {
                    bad("a lead is marked as spam".into());
                }
                for (what, got, want) in [
                    ("email", got_email.clone(), want("email")),
                    ("name", lead.name.clone(), want("name")),
                    ("phone", got_phone.clone(), want("phone_e164")),
                ] {
                    if got != want {
                        bad(format!("{what} {got:?}, want {want:?}"));
                    }
                }
                if line.get("phone_extension").is_some()
                    && lead.phone_extension != want("phone_extension")
                {
                    bad(format!(
                        "phone extension {:?}, want {:?}",
                        lead.phone_extension, line["phone_extension"]
                    ));
                }
            }
        }

        let described: Vec<(Option<&str>, Option<u64>)> = event
            .data
            .get("attachments")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|a| (a["name"].as_str(), a["size"].as_u64()))
                    .collect()
            })
            .unwrap_or_default();
        for name in line["attachments"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            match described.iter().find(|(n, _)| *n == Some(name)) {
                None => bad(format!(
                    "attachment {name:?} is not described: {described:?}"
                )),
                Some((_, size)) => {
                    let want = line["attachment_sizes"][name].as_u64();
                    if size.is_none_or(|s| s == 0) || (want.is_some() && *size != want) {
                        bad(format!(
                            "attachment {name:?} has size {size:?}, want {want:?}"
                        ));
                    }
                }
            }
        }
        if !described.is_empty() && matches!(verdict, MailVerdict::Lead(_)) {
            // The kept bytes carry no attachment content, yet read as the same mail.
            let kept = &inquiry.raw.body;
            if kept.len() >= raw.len() {
                bad("the raw payload still carries its attachments".into());
            }
            let reread = read_message(kept, &reading, received_at());
            if reread.inquiry().id != inquiry.id || reread.inquiry().message != inquiry.message {
                bad("the raw payload without attachments does not read as the same mail".into());
            }
        }
    }
    (problems, lines.len())
}

fn report(dir: &Path) {
    let (problems, read) = check_folder(dir);
    assert!(read > 0, "{}: no messages", dir.display());
    assert!(
        problems.is_empty(),
        "{} of {read} messages in {} differ from their expectations:\n{}",
        problems.len(),
        dir.display(),
        problems.join("\n")
    );
    println!("{}: {read} messages read as expected", dir.display());
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the normalizer sits in the workspace")
        .to_path_buf()
}

#[test]
fn every_fixture_message_reads_as_its_expectations_say() {
    let dir = workspace().join("tests/fixtures/email");
    report(&dir);
    let corpus = workspace().join("../shared/corpus/email");
    if corpus.is_dir() {
        let ours = std::fs::read_dir(&dir).unwrap().count();
        let theirs = std::fs::read_dir(&corpus).unwrap().count();
        assert!(
            ours >= theirs,
            "fewer fixtures ({ours}) than the shared corpus ({theirs})"
        );
    }
}

#[test]
fn every_shared_corpus_message_reads_as_its_expectations_say() {
    let corpora: Vec<PathBuf> = match std::env::var("LEADPIPE_CORPORA") {
        Ok(list) if !list.trim().is_empty() => list.split(':').map(PathBuf::from).collect(),
        _ => vec![workspace().join("../shared/corpus")],
    };
    let mut ran = 0;
    for corpus in corpora {
        let dir = corpus.join("email");
        if dir.join("expect.jsonl").is_file() {
            report(&dir);
            ran += 1;
        } else {
            println!(
                "note: {} has no mail corpus; its messages were not checked",
                corpus.display()
            );
        }
    }
    if ran == 0 {
        println!("note: no shared mail corpus here; only the fixtures were checked");
    }
}
