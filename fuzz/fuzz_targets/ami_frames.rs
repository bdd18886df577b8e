//! Asterisk Manager Interface byte streams: the banner and packets through
//! `read_line`/`read_packet` (read in chunks as small as one byte), each packet through
//! `Packet::parse`, and the call tracker that turns events into finished calls.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ingest::ami::calls::{Rules, Tracker};
use ingest::ami::protocol::{FrameError, Packet, action, read_line, read_packet};
use leadpipe_fuzz::received_at;
use libfuzzer_sys::fuzz_target;
use tokio::io::BufReader;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    // The first byte picks the read buffer's size, so lines and packets arrive split at
    // every possible place.
    let mut reader = BufReader::with_capacity(usize::from(chunk % 64) + 1, wire);
    if ready(read_line(&mut reader)).is_err() {
        return;
    }
    let mut tracker = Tracker::new(Rules {
        inbound_contexts: [("from-trunk-it", "IT"), ("from-trunk-pl", "PL")]
            .into_iter()
            .map(|(c, r)| (c.to_owned(), r.to_owned()))
            .collect(),
        cdr_wait: Duration::from_secs(2),
        orphan_timeout: Duration::from_secs(5),
        max_silence: Duration::from_secs(3600),
    });
    let start = Instant::now();
    let mut now = start;
    loop {
        let packet = match ready(read_packet(&mut reader)) {
            Ok(packet) => packet,
            Err(FrameError::Closed | FrameError::NotAmi(_)) => break,
            Err(FrameError::Io(e)) => panic!("reading from memory failed: {e}"),
        };
        assert!(!packet.fields.is_empty(), "an empty packet");
        round_trip(&packet);
        now += Duration::from_secs(1);
        tracker.observe(&packet, now, received_at());
        for finished in tracker.due(now, false) {
            assert!(!finished.linkedid.is_empty());
            tracker.filed(&finished);
        }
    }
    tracker.reconnected(now);
    let later = now + Duration::from_secs(7200);
    for finished in tracker.due(later, true) {
        assert!(!finished.linkedid.is_empty());
        tracker.filed(&finished);
    }
    assert_eq!(
        tracker.in_flight(),
        0,
        "a call stayed open after every timeout"
    );
});

/// A packet written as an action and read back is the same packet, when no value holds a
/// carriage return (an action drops them: a value cannot break into the next field).
fn round_trip(packet: &Packet) {
    if packet
        .fields
        .iter()
        .any(|(k, v)| k.contains('\r') || v.contains('\r'))
    {
        return;
    }
    let fields: Vec<(&str, &str)> = packet
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let wire = action(&fields);
    let mut reader = BufReader::new(&wire[..]);
    let again = ready(read_packet(&mut reader)).expect("an action reads back as a packet");
    assert_eq!(&again, packet);
}

/// Polls a read over bytes in memory, which never waits.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a read from memory is always ready"),
    }
}
