//! One Twilio voice callback (the voice URL webhook, a status callback, a `<Dial>` action,
//! a recording callback) read into an inquiry: an event of its call's one activity.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::event::{ActivityKind, ConversationKey, EventRef};
use crate::inquiry::{Channel, ContactHints, Inquiry, InquiryId, RawPayload};

/// The numbers Twilio puts in `From` when the caller withheld theirs (keypad spellings of
/// ANONYMOUS, RESTRICTED, UNKNOWN and BLOCKED): nobody to call back.
const SENTINELS: &[&str] = &["+266696687", "+7378742833", "+86282452253", "+2562533"];

/// Words carriers and Twilio use in place of a withheld number.
const WITHHELD_WORDS: &[&str] = &[
    "anonymous",
    "restricted",
    "unknown",
    "unavailable",
    "private",
    "blocked",
    "withheld",
];

/// `CallStatus` values of a call that ended without being answered.
const MISSED_STATUSES: &[&str] = &["no-answer", "busy", "failed", "canceled"];

/// `DialCallStatus` values that make the call a missed one: nobody the `<Dial>` rang
/// spoke to the caller, whether they did not pick up, were busy, could not be reached
/// (`failed`) or the dial was called off before an answer (`canceled`).
const MISSED_DIALS: &[&str] = &["no-answer", "busy", "failed", "canceled"];

/// The provider part of a call's conversation key.
const PROVIDER: &str = "twilio";

/// Orders are `rank << 32 | SequenceNumber`, so a later status always wins and, within
/// one status, the higher sequence number.
const RANK_SHIFT: u32 = 32;

/// The order of a `<Dial>` outcome's `missed`: above every status callback, because a
/// call whose dial went unanswered is missed however it ended (`completed` only says the
/// call itself hung up). An unanswered dial outranks an answered one.
const DIAL_ORDER: i64 = 16 << RANK_SHIFT;

/// The order of a value the event does not know (`null`): any known value replaces it.
const UNKNOWN_ORDER: i64 = i64::MIN;

/// The line a callback arrived on, as the reading needs it.
pub struct Line<'a> {
    /// The `[[twilio]]` entry's name (in ids and keys).
    pub name: &'a str,
    /// Its lead source.
    pub source: &'a str,
    /// Its region for numbers without a country code.
    pub default_region: Option<&'a str>,
}

/// What a callback is.
#[derive(Debug)]
pub enum Reading {
    /// An event of an inbound call: a lead or an activity on one.
    Call(Box<Inquiry>),
    /// Kept as an inquiry with its reason, never a lead (withheld caller, outbound call,
    /// a dialled leg).
    NotALead {
        /// `withheld_caller`, `outbound_call`, `call_leg`.
        reason: &'static str,
        /// The inquiry to keep.
        inquiry: Box<Inquiry>,
    },
}

/// Why a callback cannot be read at all (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallbackError {
    /// No `CallSid`.
    #[error("the callback has no CallSid: Twilio sends one with every voice callback")]
    NoCallSid,
    /// A `CallSid` that cannot name a conversation.
    #[error("the CallSid `{0}` is not a call id (it has spaces or control characters)")]
    BadCallSid(String),
}

/// Reads the decoded parameters of one callback.
pub fn read(
    line: &Line<'_>,
    params: &[(String, String)],
    raw: Bytes,
    content_type: Option<String>,
    received_at: DateTime<Utc>,
) -> Result<Reading, CallbackError> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let call_sid = get("CallSid").ok_or(CallbackError::NoCallSid)?;
    let parent = get("ParentCallSid");
    let call_id = parent.unwrap_or(call_sid);
    // A CallSid is unique across Twilio, so the key leaves the line out: a call whose voice
    // URL and status callback are two lines (two URLs) is still one conversation.
    let conversation = ConversationKey::call(PROVIDER, call_id)
        .map_err(|_| CallbackError::BadCallSid(call_id.to_owned()))?;

    let status = get("CallStatus");
    let dial_status = get("DialCallStatus");
    let sequence = get("SequenceNumber").and_then(|s| s.parse::<u32>().ok());
    let mut kind = if let Some(recording) = get("RecordingSid").filter(|_| status.is_none()) {
        format!(
            "recording:{recording}:{}",
            get("RecordingStatus").unwrap_or_default()
        )
    } else if let Some(dial) = dial_status {
        format!("dial:{}:{dial}", get("DialCallSid").unwrap_or_default())
    } else if let Some(seq) = sequence {
        format!("status:{}:{seq}", get("CallbackSource").unwrap_or_default())
    } else {
        format!("voice:{}", status.unwrap_or_default())
    };
    // A `<Record>` or `<Gather>` action carries the call's status like the voice webhook
    // did: what it adds (a recording, a transcription) tells it apart, so it is not taken
    // for a retry of an earlier callback.
    for name in ["RecordingSid", "TranscriptionSid"] {
        if let Some(id) = get(name).filter(|_| !kind.starts_with("recording:")) {
            kind.push(':');
            kind.push_str(id);
        }
    }
    // The line's name, the call and the callback's own place in it: a retried callback
    // is the same inquiry.
    let external_id = format!("{}:{call_sid}:{kind}", line.name);

    let mut fields = Map::new();
    for name in [
        "To",
        "Called",
        "ForwardedFrom",
        "CallerName",
        "CallbackSource",
    ] {
        if let Some(value) = get(name) {
            fields.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    let mut inquiry = Inquiry {
        id: InquiryId::from_external(Channel::Call, line.source, &external_id),
        channel: Channel::Call,
        source: line.source.to_owned(),
        external_id: Some(external_id),
        received_at,
        default_region: line.default_region.map(str::to_owned),
        contact: ContactHints::default(),
        message: None,
        utm: BTreeMap::new(),
        fields,
        attachments: Vec::new(),
        spam: None,
        dedup: None,
        raw: RawPayload {
            content_type,
            body: raw,
        },
        event: None,
    };

    let not_a_lead = |reason: &'static str, mut inquiry: Inquiry| {
        inquiry.spam = Some(reason.to_owned());
        Ok(Reading::NotALead {
            reason,
            inquiry: Box::new(inquiry),
        })
    };
    let direction = get("Direction").unwrap_or("inbound");
    if parent.is_some() {
        // A leg our <Dial> placed: its caller id and status are the leg's, not the
        // customer's call; the <Dial> action tells the call's outcome.
        return not_a_lead("call_leg", inquiry);
    }
    if direction != "inbound" {
        return not_a_lead("outbound_call", inquiry);
    }
    // A recording callback names no caller; it only adds the recording to its call.
    let update_only = status.is_none() && get("From").is_none() && get("Caller").is_none();
    let caller = get("From").or(get("Caller"));
    if !update_only && caller.is_none_or(is_withheld) {
        return not_a_lead("withheld_caller", inquiry);
    }
    // `ForwardedFrom` is our own forwarding line and `CallerName` a CNAM label: neither
    // is the person, so only `From` becomes contact data.
    inquiry.contact.phone = caller.map(str::to_owned);

    let rank = status.map(status_rank);
    let order = (rank.unwrap_or(0) << RANK_SHIFT) | i64::from(sequence.unwrap_or(0));
    let mut event = EventRef::new(ActivityKind::Call);
    // A recording callback adds to a call already filed; alone it is nobody's lead (the
    // call may be a withheld caller's).
    event.follow_up = update_only;
    event.conversation = vec![conversation.clone()];
    event.activity_key = Some(conversation.as_key());
    event.order = Some(order);
    event.occurred_at = get("Timestamp")
        .and_then(|t| DateTime::parse_from_rfc2822(t).ok())
        .map(|t| t.with_timezone(&Utc));
    event.subject = Some(match caller {
        Some(caller) => format!("Call from {caller}"),
        None => "Call".to_owned(),
    });
    let mut put = |name: &str, value: Option<Value>, own_order: Option<i64>| match value {
        Some(value) => {
            if let Some(o) = own_order {
                event.field_orders.insert(name.to_owned(), o);
            }
            event.data.insert(name.to_owned(), value);
        }
        None => {
            event.field_orders.insert(name.to_owned(), UNKNOWN_ORDER);
            event.data.insert(name.to_owned(), Value::Null);
        }
    };
    let text = |v: Option<&str>| v.map(|v| Value::String(v.to_owned()));
    put("call_id", text(Some(call_id)), None);
    put("direction", text(Some(direction)), None);
    // A callback without a CallStatus (a recording) says nothing about the status.
    if !update_only {
        put("status", text(status), None);
    }
    let (missed, missed_order) = match dial_status {
        Some(dial) if MISSED_DIALS.contains(&dial) => (Some(true), Some(DIAL_ORDER + 1)),
        Some(_) => (Some(false), Some(DIAL_ORDER)),
        None => match status {
            Some(s) if MISSED_STATUSES.contains(&s) => (Some(true), None),
            Some("completed") => (Some(false), None),
            _ => (None, None),
        },
    };
    if !update_only || missed.is_some() {
        put("missed", missed.map(Value::Bool), missed_order);
    }
    let seconds = |name: &str| get(name).and_then(|d| d.trim().parse::<u64>().ok());
    // A `<Dial>` action tells how long the caller spoke with whoever it rang; the call's
    // own `CallDuration` (IVR time included), whenever it comes, replaces that.
    match (seconds("CallDuration"), seconds("DialCallDuration")) {
        (Some(call), _) => put("duration_s", Some(call.into()), None),
        (None, Some(talk)) => put("duration_s", Some(talk.into()), Some(UNKNOWN_ORDER + 1)),
        (None, None) if !update_only => put("duration_s", None, None),
        (None, None) => {}
    }
    put("recording_url", text(get("RecordingUrl")), None);
    if !update_only {
        put("caller_name", text(get("CallerName")), None);
    }
    if let Some(dial) = dial_status {
        put("dial_status", text(Some(dial)), Some(DIAL_ORDER));
    }
    if let Some(forwarded) = get("ForwardedFrom") {
        put("forwarded_from", text(Some(forwarded)), None);
    }
    if missed == Some(true) {
        event.tags.push("missed_call".to_owned());
    }
    inquiry.event = Some(event);
    Ok(Reading::Call(Box::new(inquiry)))
}

/// Where a `CallStatus` stands in a call's life; unknown values rank with the start.
fn status_rank(status: &str) -> i64 {
    match status {
        "queued" | "initiated" => 1,
        "ringing" => 2,
        "in-progress" | "answered" => 3,
        "completed" | "busy" | "no-answer" | "failed" | "canceled" => 4,
        _ => 0,
    }
}

/// Whether a caller number is withheld: empty, a word for "withheld", or one of
/// Twilio's sentinel numbers.
pub fn is_withheld(number: &str) -> bool {
    let number = number.trim();
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    number.is_empty()
        || digits.is_empty()
        || WITHHELD_WORDS
            .iter()
            .any(|w| number.eq_ignore_ascii_case(w))
        || SENTINELS.iter().any(|s| s[1..] == digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(body: &str) -> Vec<(String, String)> {
        crate::http::body::parse_urlencoded(body.as_bytes())
            .unwrap()
            .fields
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
            .collect()
    }

    fn line() -> Line<'static> {
        Line {
            name: "main",
            source: "phone-twilio",
            default_region: Some("IT"),
        }
    }

    fn call(body: &str) -> Inquiry {
        match read(&line(), &params(body), Bytes::new(), None, Utc::now()).unwrap() {
            Reading::Call(inquiry) => *inquiry,
            other => panic!("not a call: {other:?}"),
        }
    }

    #[test]
    fn withheld_and_sentinel_numbers_are_recognised() {
        for n in [
            "",
            "+266696687",
            "266696687",
            "+7378742833",
            "+86282452253",
            "anonymous",
            "Restricted",
            "+2562533",
        ] {
            assert!(is_withheld(n), "{n}");
        }
        for n in ["+393389012345", "+48503118822"] {
            assert!(!is_withheld(n), "{n}");
        }
    }

    #[test]
    fn a_dial_action_without_an_answer_is_missed_whatever_the_call_status() {
        for (dial, missed) in [
            ("no-answer", true),
            ("busy", true),
            ("failed", true),
            ("canceled", true),
            ("completed", false),
            ("answered", false),
        ] {
            let inquiry = call(&format!(
                "CallSid=CA1&From=%2B393389012345&To=%2B390294759811&CallStatus=in-progress\
                 &Direction=inbound&DialCallStatus={dial}&DialCallSid=CA2"
            ));
            let event = inquiry.event.unwrap();
            assert_eq!(event.data["missed"], Value::Bool(missed), "{dial}");
            assert_eq!(event.data["status"], "in-progress");
            assert_eq!(event.tags.is_empty(), !missed, "{dial}");
            assert!(event.field_order("missed") > event.field_order("status"));
        }
    }

    #[test]
    fn a_dial_action_gives_the_talk_time_until_the_call_tells_its_own() {
        let dial = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=in-progress&Direction=inbound\
             &DialCallStatus=completed&DialCallSid=CA2&DialCallDuration=95",
        );
        let dial = dial.event.unwrap();
        assert_eq!(dial.data["duration_s"], 95);
        let done = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=completed&SequenceNumber=3\
             &CallDuration=120",
        );
        let done = done.event.unwrap();
        assert_eq!(done.data["duration_s"], 120);
        assert!(done.field_order("duration_s") > dial.field_order("duration_s"));
        let ringing = call("CallSid=CA1&From=%2B393389012345&CallStatus=ringing");
        let ringing = ringing.event.unwrap();
        assert!(ringing.data["duration_s"].is_null());
        assert!(ringing.field_order("duration_s") < dial.field_order("duration_s"));
    }

    #[test]
    fn forwarded_from_and_cnam_are_never_the_person() {
        let inquiry = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=ringing&Direction=inbound\
             &ForwardedFrom=%2B390294759800&CallerName=WIRELESS%20CALLER",
        );
        assert_eq!(inquiry.contact.phone.as_deref(), Some("+393389012345"));
        assert_eq!(inquiry.contact.full_name, None);
        let event = inquiry.event.unwrap();
        assert_eq!(event.data["caller_name"], "WIRELESS CALLER");
        assert_eq!(event.data["missed"], Value::Null);
    }

    #[test]
    fn a_later_status_or_sequence_is_a_higher_order_and_a_retry_the_same_id() {
        let ringing = call("CallSid=CA1&From=%2B393389012345&CallStatus=ringing");
        let progress = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=in-progress&SequenceNumber=1\
             &CallbackSource=call-progress-events",
        );
        let done = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=completed&SequenceNumber=2\
             &CallbackSource=call-progress-events&CallDuration=5",
        );
        let order = |i: &Inquiry| i.event.as_ref().unwrap().order;
        assert!(order(&ringing) < order(&progress) && order(&progress) < order(&done));
        let again = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=completed&SequenceNumber=2\
             &CallbackSource=call-progress-events&CallDuration=5",
        );
        assert_eq!(done.id, again.id);
        assert_ne!(done.id, progress.id);
    }

    #[test]
    fn a_recording_callback_only_follows_up_and_every_action_is_its_own_inquiry() {
        let recording = call(
            "CallSid=CA1&RecordingSid=RE1&RecordingStatus=completed\
             &RecordingUrl=https%3A%2F%2Fapi.twilio.com%2FRE1&RecordingDuration=12",
        );
        let event = recording.event.as_ref().unwrap();
        assert!(event.follow_up, "a recording alone never opens a lead");
        assert_eq!(recording.contact.phone, None);
        let ringing = call("CallSid=CA1&From=%2B393389012345&CallStatus=ringing");
        assert!(!ringing.event.as_ref().unwrap().follow_up);

        let gather = call("CallSid=CA1&From=%2B393389012345&CallStatus=in-progress&Digits=1");
        let record = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=in-progress&RecordingSid=RE2\
             &RecordingUrl=https%3A%2F%2Fapi.twilio.com%2FRE2",
        );
        assert_ne!(
            gather.id, record.id,
            "a <Record> action is no retry of a <Gather>"
        );
        let in_progress = call("CallSid=CA1&RecordingSid=RE1&RecordingStatus=in-progress");
        assert_ne!(in_progress.id, recording.id);
        let first_dial = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=in-progress&DialCallStatus=no-answer",
        );
        let second_dial = call(
            "CallSid=CA1&From=%2B393389012345&CallStatus=in-progress&DialCallStatus=completed",
        );
        assert_ne!(first_dial.id, second_dial.id);
    }

    #[test]
    fn one_call_is_one_conversation_whatever_line_its_callbacks_reach() {
        let body = "CallSid=CA1&From=%2B393389012345&CallStatus=ringing";
        let other = Line {
            name: "status",
            ..line()
        };
        let a = call(body);
        let b = match read(&other, &params(body), Bytes::new(), None, Utc::now()).unwrap() {
            Reading::Call(inquiry) => *inquiry,
            other => panic!("not a call: {other:?}"),
        };
        let (ea, eb) = (a.event.unwrap(), b.event.unwrap());
        assert_eq!(ea.conversation, eb.conversation);
        assert_eq!(ea.activity_key, eb.activity_key);
        assert_eq!(ea.activity_key.as_deref(), Some("call:twilio:CA1"));
    }

    #[test]
    fn legs_outbound_calls_and_withheld_callers_are_not_leads() {
        let reason = |body: &str| match read(&line(), &params(body), Bytes::new(), None, Utc::now())
        {
            Ok(Reading::NotALead { reason, inquiry }) => {
                assert_eq!(inquiry.spam.as_deref(), Some(reason));
                reason
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason("CallSid=CA2&ParentCallSid=CA1&From=%2B1&CallStatus=ringing"),
            "call_leg"
        );
        assert_eq!(
            reason("CallSid=CA2&From=%2B1&Direction=outbound-api&CallStatus=ringing"),
            "outbound_call"
        );
        assert_eq!(
            reason("CallSid=CA3&From=%2B7378742833&CallStatus=ringing"),
            "withheld_caller"
        );
        assert_eq!(
            reason("CallSid=CA3&From=&CallStatus=ringing"),
            "withheld_caller"
        );
        assert!(matches!(
            read(
                &line(),
                &params("From=%2B1"),
                Bytes::new(),
                None,
                Utc::now()
            ),
            Err(CallbackError::NoCallSid)
        ));
    }
}
