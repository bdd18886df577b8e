//! Calls followed from AMI events, grouped by `Linkedid`: every channel of one call (the
//! trunk leg, each ringing extension, local channels) shares it. A call is inbound when
//! its first channel entered through a configured inbound context; it is answered when
//! any leg was (a `DialEnd` with `ANSWER`, a `Cdr` with `ANSWERED`, a dialled leg that
//! went `Up`), even after another leg's `NO ANSWER`; it ends when its last channel hung
//! up, and is filed once the `Cdr` records that follow had a moment to arrive.
//!
//! No I/O here: the connection hands packets in with the time they arrived, and asks
//! which calls are due to be filed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::protocol::{Packet, is_known};

/// How many filed calls are remembered, so a `Cdr` that comes after its call was filed
/// updates it instead of starting a call of its own.
const FILED_MEMORY: usize = 10_000;

/// How the tracker decides.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Inbound dialplan contexts and the phone region of each.
    pub inbound_contexts: BTreeMap<String, String>,
    /// How long after a call's last hangup its `Cdr` records may still come.
    pub cdr_wait: Duration,
    /// How long a call whose events stopped across a reconnect waits for more before
    /// it is closed by timeout.
    pub orphan_timeout: Duration,
    /// The longest a call may go without an event before it is closed by timeout.
    pub max_silence: Duration,
}

/// Where the call came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The inbound context.
    pub context: String,
    /// Its phone region.
    pub region: String,
    /// The caller's number as the trunk sent it (`CallerIDNum`), if known.
    pub caller_num: Option<String>,
    /// The caller id name, if known (not the person's name: a trunk's label).
    pub caller_name: Option<String>,
    /// The number dialled (`Exten` on the trunk channel).
    pub did: Option<String>,
}

/// How a call was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its last channel hung up.
    Hangup,
    /// Its end was missed (the connection dropped, or it went silent for too long).
    Timeout,
}

/// A call as followed so far.
#[derive(Debug, Clone)]
struct Call {
    origin: Option<Origin>,
    /// Caller data from the first channel, whatever its context (for `Cdr`-only calls).
    open: HashSet<String>,
    hung_up: HashSet<String>,
    answered: bool,
    cdr: CdrTimes,
    first_stamp: Option<f64>,
    last_stamp: Option<f64>,
    first_seen: Instant,
    started_at: DateTime<Utc>,
    last_event: Instant,
    closed: Option<(Closed, Instant)>,
    orphaned_at: Option<Instant>,
}

impl Call {
    /// A call first seen `now`, begun at `started_at`, its events' time `stamp`: not yet
    /// inbound, answered or closed.
    fn new(stamp: Option<f64>, started_at: DateTime<Utc>, now: Instant) -> Self {
        Self {
            origin: None,
            open: HashSet::new(),
            hung_up: HashSet::new(),
            answered: false,
            cdr: CdrTimes::default(),
            first_stamp: stamp,
            last_stamp: stamp,
            first_seen: now,
            started_at,
            last_event: now,
            closed: None,
            orphaned_at: None,
        }
    }
}

/// A call ready to be filed (or filed again with what came later).
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The call's `Linkedid`.
    pub linkedid: String,
    /// Where it came in; `None`: not inbound, never a lead.
    pub origin: Option<Origin>,
    /// Whether any leg answered.
    pub answered: bool,
    /// Whole seconds from start to end: a `Cdr`'s `Duration`, else the events' times.
    pub duration_s: Option<u64>,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// How it was closed.
    pub closed: Closed,
    /// 0 for the first filing; each later `Cdr` that changed it files it again.
    pub revision: u32,
}

/// Every call in flight on one PBX, and the recently filed ones.
#[derive(Debug)]
pub struct Tracker {
    rules: Rules,
    calls: HashMap<String, Call>,
    channels: HashMap<String, String>,
    /// Filed calls with the `Cdr` times seen for each.
    filed: HashMap<String, (Finished, CdrTimes)>,
    filed_order: VecDeque<String>,
    late: Vec<String>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            calls: HashMap::new(),
            channels: HashMap::new(),
            filed: HashMap::new(),
            filed_order: VecDeque::new(),
            late: Vec::new(),
        }
    }

    /// Calls in flight (not yet filed).
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// The connection was (re)made: calls still open may have ended unseen; each waits
    /// `orphan_timeout` for an event before it is closed by timeout.
    pub fn reconnected(&mut self, now: Instant) {
        for call in self.calls.values_mut() {
            if call.closed.is_none() {
                call.orphaned_at = Some(now);
            }
        }
    }

    /// Takes one packet in.
    pub fn observe(&mut self, packet: &Packet, now: Instant, wall: DateTime<Utc>) {
        let Some(event) = packet.event() else {
            return;
        };
        if event.eq_ignore_ascii_case("Cdr") {
            self.observe_cdr(packet, now, wall);
            return;
        }
        let (Some(linkedid), Some(uniqueid)) = (packet.known("Linkedid"), packet.known("Uniqueid"))
        else {
            return;
        };
        // A call filed at its hangup is over: a replay of its events (a stand-by PBX, a
        // reconnect) must not open it again. One closed by timeout may still end for real.
        if !self.calls.contains_key(linkedid)
            && self
                .filed
                .get(linkedid)
                .is_some_and(|(f, _)| f.closed == Closed::Hangup)
        {
            return;
        }
        let stamp = packet.get("Timestamp").and_then(|t| t.parse::<f64>().ok());
        // A call closed by timeout (its events stopped across a reconnect) that turns out
        // to go on starts from what it was: its origin, its answer, its start.
        let earlier = self
            .filed
            .get(linkedid)
            .filter(|(f, _)| f.closed == Closed::Timeout);
        let call = self
            .calls
            .entry(linkedid.to_owned())
            .or_insert_with(|| match earlier {
                Some((before, cdr)) => Call {
                    origin: before.origin.clone(),
                    answered: before.answered,
                    cdr: *cdr,
                    first_stamp: stamp
                        .map(|_| before.started_at.timestamp_millis() as f64 / 1000.0),
                    ..Call::new(stamp, before.started_at, now)
                },
                None => Call::new(stamp, stamp.and_then(stamp_time).unwrap_or(wall), now),
            });
        self.channels
            .insert(uniqueid.to_owned(), linkedid.to_owned());
        call.last_event = now;
        call.orphaned_at = None;
        if stamp.is_some() {
            call.last_stamp = stamp;
        }
        let originating = uniqueid == linkedid;
        if originating
            && call.origin.is_none()
            && let Some(context) = packet.known("Context")
            && let Some(region) = self.rules.inbound_contexts.get(context)
        {
            call.origin = Some(Origin {
                context: context.to_owned(),
                region: region.clone(),
                caller_num: packet.known("CallerIDNum").map(str::to_owned),
                caller_name: packet.known("CallerIDName").map(str::to_owned),
                did: packet.known("Exten").map(str::to_owned),
            });
        }
        if event.eq_ignore_ascii_case("Hangup") {
            call.open.remove(uniqueid);
            call.hung_up.insert(uniqueid.to_owned());
            if call.open.is_empty() && call.closed.is_none() {
                call.closed = Some((Closed::Hangup, now));
            }
            return;
        }
        if !call.hung_up.contains(uniqueid) {
            call.open.insert(uniqueid.to_owned());
            // A channel of a call that seemed over: the call goes on.
            if matches!(call.closed, Some((Closed::Hangup, _))) {
                call.closed = None;
            }
        }
        let up = packet.get("ChannelState") == Some("6")
            || packet
                .get("ChannelStateDesc")
                .is_some_and(|s| s.eq_ignore_ascii_case("Up"));
        if event.eq_ignore_ascii_case("DialEnd")
            && packet
                .get("DialStatus")
                .is_some_and(|s| s.eq_ignore_ascii_case("ANSWER"))
        {
            call.answered = true;
        }
        // A dialled leg that went up is someone answering; the trunk leg going up is only
        // the PBX answering (an IVR, a queue's music).
        if !originating && event.eq_ignore_ascii_case("Newstate") && up {
            call.answered = true;
        }
    }

    fn observe_cdr(&mut self, packet: &Packet, now: Instant, wall: DateTime<Utc>) {
        let uniqueid = packet.known("UniqueID");
        let linkedid = packet
            .known("Linkedid")
            .map(str::to_owned)
            .or_else(|| uniqueid.and_then(|u| self.channels.get(u).cloned()))
            .or_else(|| uniqueid.map(str::to_owned));
        let Some(linkedid) = linkedid else {
            return;
        };
        let record = CdrTimes::of(packet);
        // A record with no destination channel is the PBX answering the trunk (an IVR,
        // a queue's music, voicemail), which Asterisk also records as ANSWERED: nobody
        // spoke to the caller.
        let answered = packet
            .get("Disposition")
            .is_some_and(|d| d.eq_ignore_ascii_case("ANSWERED"))
            && packet.get("DestinationChannel") != Some("");
        let apply = |answered_now: &mut bool, cdr: &mut CdrTimes| {
            let before = (*answered_now, cdr.duration());
            *answered_now |= answered;
            cdr.add(&record);
            before != (*answered_now, cdr.duration())
        };
        if let Some(call) = self.calls.get_mut(&linkedid) {
            apply(&mut call.answered, &mut call.cdr);
            call.last_event = now;
            call.orphaned_at = None;
            return;
        }
        if let Some((finished, cdr)) = self.filed.get_mut(&linkedid) {
            let mut answered_now = finished.answered;
            if apply(&mut answered_now, cdr) || answered_now != finished.answered {
                let duration_s = cdr.duration().or(finished.duration_s);
                if answered_now != finished.answered || duration_s != finished.duration_s {
                    finished.answered = answered_now;
                    finished.duration_s = duration_s;
                    finished.revision += 1;
                    self.late.push(linkedid);
                }
            }
            return;
        }
        // A call whose channel events were missed (before a reconnect): its record alone.
        let origin = packet
            .known("DestinationContext")
            .and_then(|c| Some((c, self.rules.inbound_contexts.get(c)?)))
            .map(|(context, region)| Origin {
                context: context.to_owned(),
                region: region.clone(),
                caller_num: packet.known("Source").map(str::to_owned),
                caller_name: None,
                did: packet.known("Destination").map(str::to_owned),
            });
        self.calls.insert(
            linkedid,
            Call {
                origin,
                answered,
                cdr: record,
                closed: Some((Closed::Hangup, now)),
                ..Call::new(None, wall, now)
            },
        );
    }

    /// Calls due to be filed at `now` (closed and past the `Cdr` wait, or timed out),
    /// and filed calls a late `Cdr` changed. With `all_closed`, closed calls do not wait
    /// (shutdown). They stay in the tracker until [`filed`](Self::filed) is called.
    pub fn due(&mut self, now: Instant, all_closed: bool) -> Vec<Finished> {
        let rules = &self.rules;
        for call in self.calls.values_mut() {
            if call.closed.is_some() {
                continue;
            }
            let orphan = call
                .orphaned_at
                .is_some_and(|at| now.duration_since(at) >= rules.orphan_timeout);
            let silent = now.duration_since(call.last_event) >= rules.max_silence;
            if orphan || silent {
                call.closed = Some((Closed::Timeout, now));
            }
        }
        let mut out: Vec<Finished> = self
            .calls
            .iter()
            .filter_map(|(linkedid, call)| {
                let (how, at) = call.closed?;
                let waited = now.duration_since(at) >= rules.cdr_wait;
                (waited || all_closed || how == Closed::Timeout).then(|| Finished {
                    linkedid: linkedid.clone(),
                    origin: call.origin.clone(),
                    answered: call.answered,
                    duration_s: call.cdr.duration().or_else(|| duration_of(call, at)),
                    started_at: call.started_at,
                    closed: how,
                    revision: 0,
                })
            })
            .collect();
        for linkedid in std::mem::take(&mut self.late) {
            if let Some((finished, _)) = self.filed.get(&linkedid) {
                out.push(finished.clone());
            }
        }
        out
    }

    /// Records that `finished` was filed (the broker confirmed it).
    pub fn filed(&mut self, finished: &Finished) {
        let mut cdr = CdrTimes::default();
        if let Some(call) = self.calls.remove(&finished.linkedid) {
            for uniqueid in call.open.iter().chain(call.hung_up.iter()) {
                self.channels.remove(uniqueid);
            }
            cdr = call.cdr;
        }
        match self.filed.get_mut(&finished.linkedid) {
            Some(entry) => entry.0 = finished.clone(),
            None => {
                self.filed_order.push_back(finished.linkedid.clone());
                self.filed
                    .insert(finished.linkedid.clone(), (finished.clone(), cdr));
            }
        }
        while self.filed_order.len() > FILED_MEMORY {
            if let Some(old) = self.filed_order.pop_front() {
                self.filed.remove(&old);
            }
        }
    }

    /// Takes a late update back when filing it failed, so it is tried again.
    pub fn retry_late(&mut self, finished: &Finished) {
        if finished.revision > 0 && !self.late.contains(&finished.linkedid) {
            self.late.push(finished.linkedid.clone());
        }
    }
}

/// What a call's `Cdr` records say of its length: one record per leg or segment, side by
/// side (a ring group's legs share a start) or one after another (a transfer, a queue's
/// retries), so the call lasts from the earliest start to the latest end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CdrTimes {
    longest: Option<u64>,
    start: Option<NaiveDateTime>,
    end: Option<NaiveDateTime>,
}

impl CdrTimes {
    /// The times of one `Cdr` event.
    fn of(packet: &Packet) -> Self {
        let time = |key: &str| {
            packet
                .get(key)
                .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
        };
        Self {
            longest: packet.get("Duration").and_then(|d| d.parse::<u64>().ok()),
            start: time("StartTime"),
            end: time("EndTime"),
        }
    }

    /// Takes another record of the same call in.
    fn add(&mut self, other: &Self) {
        self.longest = self.longest.max(other.longest);
        self.start = match (self.start, other.start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.end = self.end.max(other.end);
    }

    /// Whole seconds from the first record's start to the last one's end, and never less
    /// than the longest record (its `Duration` counts fractions the times round away).
    fn duration(&self) -> Option<u64> {
        let span = match (self.start, self.end) {
            (Some(start), Some(end)) if end >= start => {
                u64::try_from((end - start).num_seconds()).ok()
            }
            _ => None,
        };
        span.max(self.longest)
    }
}

/// Start to end from the events' own times when they carry them, else from when they
/// arrived.
fn duration_of(call: &Call, closed_at: Instant) -> Option<u64> {
    match (call.first_stamp, call.last_stamp) {
        (Some(first), Some(last)) if last >= first => Some((last - first).round() as u64),
        _ => Some(closed_at.duration_since(call.first_seen).as_secs()),
    }
}

/// A `Timestamp:` header (Unix seconds with a fraction) as a time.
fn stamp_time(stamp: f64) -> Option<DateTime<Utc>> {
    let millis = (stamp * 1000.0) as i64;
    Utc.timestamp_millis_opt(millis).single()
}

/// Whether a caller number identifies nobody: absent, withheld or a placeholder.
pub fn is_withheld(number: Option<&str>) -> bool {
    // The same words and carrier sentinels as a Twilio caller, and AMI's `<unknown>`.
    number
        .filter(|n| is_known(n))
        .is_none_or(crate::twilio::callback::is_withheld)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            inbound_contexts: [("from-trunk-it", "IT"), ("from-trunk-pl", "PL")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            cdr_wait: Duration::from_secs(1),
            orphan_timeout: Duration::from_secs(5),
            max_silence: Duration::from_secs(3600),
        }
    }

    fn packet(lines: &str) -> Packet {
        let lines: Vec<Vec<u8>> = lines.split('|').map(|l| l.as_bytes().to_vec()).collect();
        Packet::parse(&lines)
    }

    fn feed(tracker: &mut Tracker, now: Instant, packets: &[&str]) {
        for p in packets {
            tracker.observe(&packet(p), now, Utc::now());
        }
    }

    #[test]
    fn a_ring_group_with_one_answer_is_answered_and_waits_for_its_cdrs() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Channel: PJSIP/trunk-1|Context: from-trunk-pl|Exten: 223971054|CallerIDNum: 603445566|CallerIDName: <unknown>|Uniqueid: 1.1|Linkedid: 1.1",
                "Event: Newchannel|Context: from-internal|Uniqueid: 1.2|Linkedid: 1.1",
                "Event: Newchannel|Context: from-internal|Uniqueid: 1.3|Linkedid: 1.1",
                "Event: DialEnd|Uniqueid: 1.1|Linkedid: 1.1|DialStatus: NO ANSWER",
                "Event: DialEnd|Uniqueid: 1.1|Linkedid: 1.1|DialStatus: ANSWER",
                "Event: Hangup|Uniqueid: 1.2|Linkedid: 1.1",
                "Event: Hangup|Uniqueid: 1.3|Linkedid: 1.1",
                "Event: Hangup|Uniqueid: 1.1|Linkedid: 1.1",
                "Event: Cdr|UniqueID: 1.1|Duration: 40|Disposition: NO ANSWER",
                "Event: Cdr|UniqueID: 1.1|Duration: 41|Disposition: ANSWERED",
            ],
        );
        assert!(t.due(t0, false).is_empty(), "the Cdr wait is not over");
        let due = t.due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.len(), 1);
        let call = &due[0];
        assert!(call.answered);
        assert_eq!(call.duration_s, Some(41));
        let origin = call.origin.as_ref().unwrap();
        assert_eq!(origin.region, "PL");
        assert_eq!(origin.caller_num.as_deref(), Some("603445566"));
        assert_eq!(origin.caller_name, None);
        assert_eq!(origin.did.as_deref(), Some("223971054"));
        t.filed(call);
        assert!(t.due(t0 + Duration::from_secs(3), false).is_empty());
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_call_from_an_internal_context_is_not_inbound() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Context: from-internal|CallerIDNum: 201|Uniqueid: 2.1|Linkedid: 2.1",
                "Event: Hangup|Uniqueid: 2.1|Linkedid: 2.1",
            ],
        );
        let due = t.due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].origin, None);
    }

    #[test]
    fn a_call_whose_end_was_missed_is_closed_by_timeout_after_a_reconnect() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Context: from-trunk-it|CallerIDNum: 3397654321|Uniqueid: 3.1|Linkedid: 3.1",
            ],
        );
        t.reconnected(t0);
        assert!(t.due(t0 + Duration::from_secs(4), false).is_empty());
        let due = t.due(t0 + Duration::from_secs(6), false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].closed, Closed::Timeout);
        assert!(!due[0].answered);
    }

    #[test]
    fn a_cdr_after_filing_files_the_call_again() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Context: from-trunk-it|CallerIDNum: 3397654321|Uniqueid: 4.1|Linkedid: 4.1",
                "Event: Hangup|Uniqueid: 4.1|Linkedid: 4.1",
            ],
        );
        let due = t.due(t0 + Duration::from_secs(2), false);
        t.filed(&due[0]);
        feed(
            &mut t,
            t0,
            &["Event: Cdr|UniqueID: 4.1|Duration: 77|Disposition: ANSWERED"],
        );
        let again = t.due(t0 + Duration::from_secs(3), false);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].revision, 1);
        assert_eq!(again[0].duration_s, Some(77));
        assert!(again[0].answered);
    }

    #[test]
    fn a_call_only_the_pbx_answered_is_missed() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Context: from-trunk-it|CallerIDNum: 3397654321|Uniqueid: 6.1|Linkedid: 6.1",
                "Event: Newstate|ChannelState: 6|ChannelStateDesc: Up|Uniqueid: 6.1|Linkedid: 6.1",
                "Event: Hangup|Uniqueid: 6.1|Linkedid: 6.1",
                "Event: Cdr|UniqueID: 6.1|DestinationChannel: |LastApplication: Queue|Duration: 48|Disposition: ANSWERED",
            ],
        );
        let due = t.due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.len(), 1);
        assert!(
            !due[0].answered,
            "an IVR or a queue's music is nobody answering"
        );
        assert_eq!(due[0].duration_s, Some(48));
    }

    #[test]
    fn a_call_closed_by_timeout_keeps_what_it_was_when_its_hangup_comes_after_all() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Context: from-trunk-it|CallerIDNum: 3397654321|Uniqueid: 7.1|Linkedid: 7.1|Timestamp: 1747297800.0",
                "Event: Newchannel|Context: from-internal|Uniqueid: 7.2|Linkedid: 7.1|Timestamp: 1747297801.0",
                "Event: DialEnd|Uniqueid: 7.1|Linkedid: 7.1|DialStatus: ANSWER|Timestamp: 1747297805.0",
            ],
        );
        // The connection drops mid-conversation; the call is closed by timeout.
        t.reconnected(t0);
        let due = t.due(t0 + Duration::from_secs(6), false);
        assert_eq!(due.len(), 1);
        assert!(due[0].answered);
        t.filed(&due[0]);
        // Its real end comes later.
        feed(
            &mut t,
            t0 + Duration::from_secs(300),
            &[
                "Event: Hangup|Uniqueid: 7.2|Linkedid: 7.1|Timestamp: 1747298100.0",
                "Event: Hangup|Uniqueid: 7.1|Linkedid: 7.1|Timestamp: 1747298100.0",
            ],
        );
        let again = t.due(t0 + Duration::from_secs(302), false);
        assert_eq!(again.len(), 1);
        let call = &again[0];
        assert_eq!(call.closed, Closed::Hangup);
        assert!(
            call.answered,
            "the conversation before the drop still counts"
        );
        assert_eq!(call.origin.as_ref().map(|o| o.region.as_str()), Some("IT"));
        assert_eq!(call.duration_s, Some(300));
    }

    #[test]
    fn a_transferred_call_lasts_from_its_first_record_to_its_last() {
        let mut t = Tracker::new(rules());
        let t0 = Instant::now();
        feed(
            &mut t,
            t0,
            &[
                "Event: Newchannel|Context: from-trunk-it|CallerIDNum: 3397654321|Uniqueid: 8.1|Linkedid: 8.1",
                "Event: Hangup|Uniqueid: 8.1|Linkedid: 8.1",
                "Event: Cdr|UniqueID: 8.1|DestinationChannel: PJSIP/201-1|StartTime: 2025-05-15 10:30:00|EndTime: 2025-05-15 10:31:00|Duration: 60|Disposition: ANSWERED",
                "Event: Cdr|UniqueID: 8.1|DestinationChannel: PJSIP/202-2|StartTime: 2025-05-15 10:31:00|EndTime: 2025-05-15 10:31:30|Duration: 30|Disposition: ANSWERED",
            ],
        );
        let due = t.due(t0 + Duration::from_secs(2), false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].duration_s, Some(90), "both segments are the call");
    }

    #[test]
    fn placeholders_and_withheld_numbers_identify_nobody() {
        for n in [
            None,
            Some("<unknown>"),
            Some(""),
            Some("anonymous"),
            Some("Restricted"),
        ] {
            assert!(is_withheld(n), "{n:?}");
        }
        assert!(!is_withheld(Some("3397654321")));
    }
}
