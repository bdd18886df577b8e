//! The event a source posts, read into [`Event`] with every field problem named.
//!
//! ```json
//! {"event_id": "chat-7781-3", "type": "message", "conversation_id": "7781",
//!  "occurred_at": "2026-05-14T09:30:00+02:00",
//!  "person": {"name": "Giulia Conti", "email": "giulia@example.it", "phone": "+39 347 555 0101",
//!             "messenger_id": "visitor-4411", "company": "Conti Srl"},
//!  "text": "Avete sedie ergonomiche?", "data": {"page": "/sedie"}}
//! ```
//! A call adds `direction` (`inbound`/`outbound`), `status`, `duration_s`, `missed` and
//! `recording_url`, and every event of one call shares its `conversation_id`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::sink::FieldProblem;

/// Longest id (event, conversation, messenger) accepted.
const MAX_ID: usize = 255;

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A chat message.
    Message,
    /// A phone call's event (ringing, answered, ended, missed...).
    Call,
}

/// Which way a message or call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the person to the business.
    Inbound,
    /// From the business to the person.
    Outbound,
}

impl Direction {
    /// As stored in `data.direction`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Who the event is about, as the source knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    /// Full name.
    pub name: Option<String>,
    /// Email address as typed.
    pub email: Option<String>,
    /// Phone number as typed.
    pub phone: Option<String>,
    /// The person's stable id on the source (`messenger:<source>:<id>`).
    pub messenger_id: Option<String>,
    /// Company name.
    pub company: Option<String>,
}

/// One posted event, every field checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The sender's id of this event: the same id again is the same event.
    pub event_id: String,
    /// Message or call.
    pub kind: EventType,
    /// The chat or call it belongs to.
    pub conversation_id: String,
    /// When it happened.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Who.
    pub person: Person,
    /// What was said (a message's text, a call's note).
    pub text: Option<String>,
    /// Which way, when the source said (a message without one is inbound).
    pub direction: Option<Direction>,
    /// A call's status as the source names it.
    pub status: Option<String>,
    /// A call's length in whole seconds.
    pub duration_s: Option<u64>,
    /// Whether a call was missed.
    pub missed: Option<bool>,
    /// Where a call's recording is.
    pub recording_url: Option<String>,
    /// Anything else the source wants kept.
    pub data: Option<Map<String, Value>>,
}

const CALL_ONLY: [&str; 4] = ["status", "duration_s", "missed", "recording_url"];
const KNOWN: [&str; 12] = [
    "event_id",
    "type",
    "conversation_id",
    "occurred_at",
    "person",
    "text",
    "direction",
    "status",
    "duration_s",
    "missed",
    "recording_url",
    "data",
];
const PERSON: [&str; 5] = ["name", "email", "phone", "messenger_id", "company"];

/// Reads the top-level fields of a posted JSON object; every problem is named.
pub fn read(fields: Vec<(String, Value)>) -> Result<Event, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, problem: &str| {
        problems.push(FieldProblem {
            field: field.into(),
            problem: problem.into(),
        })
    };
    let mut map = Map::new();
    for (name, value) in fields {
        if !KNOWN.contains(&name.as_str()) {
            bad(&name, "unknown field: see the event schema in the README");
        } else if map.insert(name.clone(), value).is_some() {
            bad(&name, "sent twice");
        }
    }
    let id = |field: &str, bad: &mut dyn FnMut(&str, &str)| -> Option<String> {
        match map.get(field) {
            None | Some(Value::Null) => {
                bad(field, "missing");
                None
            }
            Some(Value::String(s)) if is_id(s) => Some(s.clone()),
            Some(_) => {
                bad(
                    field,
                    "must be a string of 1 to 255 characters without spaces or control characters",
                );
                None
            }
        }
    };
    let event_id = id("event_id", &mut bad);
    let conversation_id = id("conversation_id", &mut bad);
    let kind = match map.get("type") {
        Some(Value::String(t)) if t == "message" => Some(EventType::Message),
        Some(Value::String(t)) if t == "call" => Some(EventType::Call),
        None | Some(Value::Null) => {
            bad("type", "missing: `message` or `call`");
            None
        }
        Some(_) => {
            bad("type", "must be `message` or `call`");
            None
        }
    };
    let text_at = |value: Option<&Value>, field: &str, bad: &mut dyn FnMut(&str, &str)| match value
    {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            bad(field, "must be a string");
            None
        }
    };
    let occurred_at = match text_at(map.get("occurred_at"), "occurred_at", &mut bad) {
        None => None,
        Some(text) => match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                bad(
                    "occurred_at",
                    "must be an RFC 3339 time with its offset, like 2026-05-14T09:30:00+02:00",
                );
                None
            }
        },
    };
    let mut person = Person::default();
    match map.get("person") {
        None | Some(Value::Null) => {}
        Some(Value::Object(p)) => {
            for key in p.keys().filter(|k| !PERSON.contains(&k.as_str())) {
                bad(
                    &format!("person.{key}"),
                    "unknown field: a person has name, email, phone, messenger_id, company",
                );
            }
            let mut get = |key: &str| text_at(p.get(key), &format!("person.{key}"), &mut bad);
            person = Person {
                name: get("name"),
                email: get("email"),
                phone: get("phone"),
                messenger_id: get("messenger_id"),
                company: get("company"),
            };
            if person.messenger_id.as_deref().is_some_and(|m| !is_id(m)) {
                bad(
                    "person.messenger_id",
                    "must be 1 to 255 characters without spaces or control characters",
                );
            }
        }
        Some(_) => bad("person", "must be an object"),
    }
    let text = text_at(map.get("text"), "text", &mut bad);
    let direction = match text_at(map.get("direction"), "direction", &mut bad).as_deref() {
        None => None,
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        Some(_) => {
            bad("direction", "must be `inbound` or `outbound`");
            None
        }
    };
    if kind == Some(EventType::Message) {
        for field in CALL_ONLY.iter().filter(|f| map.contains_key(**f)) {
            bad(field, "only a `call` event has it");
        }
    }
    let status = text_at(map.get("status"), "status", &mut bad);
    let duration_s = match map.get("duration_s") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            bad("duration_s", "must be a whole number of seconds, 0 or more");
            None
        }
    };
    let missed = match map.get("missed") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            bad("missed", "must be true or false");
            None
        }
    };
    let recording_url = text_at(map.get("recording_url"), "recording_url", &mut bad);
    if recording_url
        .as_deref()
        .is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://")))
    {
        bad("recording_url", "must be an http(s) URL");
    }
    let data = match map.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => Some(d.clone()),
        Some(_) => {
            bad("data", "must be an object");
            None
        }
    };
    match (event_id, kind, conversation_id) {
        (Some(event_id), Some(kind), Some(conversation_id)) if problems.is_empty() => Ok(Event {
            event_id,
            kind,
            conversation_id,
            occurred_at,
            person,
            text,
            direction,
            status,
            duration_s,
            missed,
            recording_url,
            data,
        }),
        _ => Err(problems),
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Vec<(String, Value)> {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    #[test]
    fn a_message_reads_with_its_person() {
        let e = read(fields(
            json!({"event_id": "e1", "type": "message", "conversation_id": "c1",
            "occurred_at": "2026-05-14T09:30:00+02:00", "text": "Ciao",
            "person": {"name": "Giulia", "messenger_id": "v-1"}, "data": {"page": "/"}}),
        ))
        .unwrap();
        assert_eq!(e.kind, EventType::Message);
        assert_eq!(
            e.occurred_at.unwrap().to_rfc3339(),
            "2026-05-14T07:30:00+00:00"
        );
        assert_eq!(e.person.messenger_id.as_deref(), Some("v-1"));
        assert_eq!(e.direction, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let problems = read(fields(
            json!({"type": "message", "conversation_id": "has space",
            "occurred_at": "yesterday", "person": {"nick": "x"}, "missed": true,
            "duration_s": -1, "colour": "red", "data": []}),
        ))
        .unwrap_err();
        let named: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for field in [
            "event_id",
            "conversation_id",
            "occurred_at",
            "person.nick",
            "missed",
            "duration_s",
            "colour",
            "data",
        ] {
            assert!(named.contains(&field), "{field}: {named:?}");
        }
    }

    #[test]
    fn a_call_takes_its_call_fields() {
        let e = read(fields(
            json!({"event_id": "e2", "type": "call", "conversation_id": "call-9",
            "direction": "inbound", "status": "completed", "duration_s": 61, "missed": false,
            "recording_url": "https://rec.example.com/9.mp3"}),
        ))
        .unwrap();
        assert_eq!(
            (e.kind, e.duration_s, e.missed),
            (EventType::Call, Some(61), Some(false))
        );
        let wrong = read(fields(
            json!({"event_id": "e", "type": "fax", "conversation_id": "c"}),
        ))
        .unwrap_err();
        assert_eq!(wrong[0].field, "type");
    }
}
