//! The Asterisk Manager Interface connector against a scripted AMI server that replays
//! transcripts byte for byte (Debian offers no `asterisk` package here): logins, one
//! lead per inbound `Linkedid` whatever its legs and `Cdr` records, nothing for internal
//! or withheld calls, a connection dropped mid-call, a slow sender, keepalive pings.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Options, TestDaemon};
use crate::telephony::{calls_by_id, settle};

const SECRET: &str = "ami-test-secret";
const CONTEXTS: &str =
    r#"{ "from-trunk-it" = "IT", "from-trunk-pl" = "PL", "from-trunk-vn" = "VN" }"#;

/// What the stand-in does on one connection.
#[derive(Clone)]
struct Session {
    /// The transcript: banner line, then the rest sent after the login.
    transcript: Vec<u8>,
    /// Closes the connection after this many bytes of the rest.
    cut_after: Option<usize>,
    /// Sends the rest in pieces of this size with this pause between them.
    trickle: Option<(usize, Duration)>,
}

impl Session {
    fn whole(transcript: Vec<u8>) -> Self {
        Self {
            transcript,
            cut_after: None,
            trickle: None,
        }
    }
}

/// A scripted AMI server: the n-th connection plays the n-th session (the last one
/// again for later connections), as Asterisk frames it.
struct StandIn {
    port: u16,
    logins: Arc<Mutex<Vec<String>>>,
    pings: Arc<Mutex<u32>>,
}

impl StandIn {
    async fn start(sessions: Vec<Session>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let port = listener.local_addr().expect("an address").port();
        let logins = Arc::new(Mutex::new(Vec::new()));
        let pings = Arc::new(Mutex::new(0));
        let (l, p) = (logins.clone(), pings.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((conn, _)) = listener.accept().await {
                let session = sessions[n.min(sessions.len() - 1)].clone();
                n += 1;
                tokio::spawn(serve(conn, session, l.clone(), p.clone()));
            }
        });
        Self {
            port,
            logins,
            pings,
        }
    }

    fn logins(&self) -> Vec<String> {
        self.logins.lock().expect("logins").clone()
    }
}

async fn serve(
    mut conn: TcpStream,
    session: Session,
    logins: Arc<Mutex<Vec<String>>>,
    pings: Arc<Mutex<u32>>,
) {
    let transcript = session.transcript;
    let split = transcript
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a banner line")
        + 2;
    let (banner, rest) = transcript.split_at(split);
    if conn.write_all(banner).await.is_err() {
        return;
    }
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let packet: Vec<u8> = buf.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&packet).to_string();
            let action_id = text
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("actionid:"))
                .map(|l| l.split_once(':').map_or("", |(_, v)| v.trim()).to_owned());
            if first {
                first = false;
                logins
                    .lock()
                    .expect("logins")
                    .push(text.to_ascii_lowercase());
                let rest = with_action_id(rest, action_id.as_deref());
                let rest = match session.cut_after {
                    Some(n) => rest[..n.min(rest.len())].to_vec(),
                    None => rest,
                };
                let sent = match session.trickle {
                    Some((size, pause)) => {
                        let mut ok = true;
                        for piece in rest.chunks(size) {
                            ok = conn.write_all(piece).await.is_ok();
                            if !ok {
                                break;
                            }
                            tokio::time::sleep(pause).await;
                        }
                        ok
                    }
                    None => conn.write_all(&rest).await.is_ok(),
                };
                if !sent || session.cut_after.is_some() {
                    // A dropped connection: gone mid-call, no goodbye.
                    return;
                }
            } else if text.to_ascii_lowercase().contains("action: ping") {
                *pings.lock().expect("pings") += 1;
                let id = action_id
                    .map(|i| format!("ActionID: {i}\r\n"))
                    .unwrap_or_default();
                let answer =
                    format!("Response: Success\r\n{id}Ping: Pong\r\nTimestamp: 1.0\r\n\r\n");
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The transcript's Login response carries the ActionID it was recorded with; answer
/// with the one this client sent, as Asterisk does.
fn with_action_id(rest: &[u8], action_id: Option<&str>) -> Vec<u8> {
    let end = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a login response");
    let head = String::from_utf8_lossy(&rest[..end]);
    let mut lines: Vec<String> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("actionid:"))
        .map(str::to_owned)
        .collect();
    if let Some(id) = action_id {
        lines.insert(1, format!("ActionID: {id}"));
    }
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(&rest[end..]);
    out
}

fn ami_block(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[ami]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"leadpipe\"\n\
         secret = \"{SECRET}\"\ninbound_contexts = {CONTEXTS}\nsource = \"phone-pbx\"\n\
         cdr_wait_ms = 300\n{extra}\n"
    )
}

async fn daemon(config: String) -> TestDaemon {
    TestDaemon::start_with(Options {
        extra_config: config,
        ..Options::default()
    })
    .await
}

async fn wait_logins(servers: &[&StandIn], n: usize, bound: Duration) {
    let deadline = Instant::now() + bound;
    while servers.iter().any(|s| s.logins().len() < n) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not log in {n} times"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expectations(folder: &Path) -> Vec<Value> {
    std::fs::read_to_string(folder.join("expect.jsonl"))
        .expect("expect.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn has_tag(lead: &Value, tag: &str) -> bool {
    lead["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == tag))
}

/// Every transcript of a folder on a stand-in of its own, one `[[ami]]` each; every
/// expectation checked.
async fn run_ami_folder(folder: &Path) {
    let lines = expectations(folder);
    let mut files: Vec<String> = lines
        .iter()
        .map(|e| e["file"].as_str().expect("file").to_owned())
        .collect();
    files.dedup();
    let mut servers = Vec::new();
    let mut config = String::new();
    for (i, file) in files.iter().enumerate() {
        let bytes = std::fs::read(folder.join(file)).expect("a transcript");
        let server = StandIn::start(vec![Session::whole(bytes)]).await;
        config.push_str(&ami_block(&format!("pbx{}", i + 1), server.port, ""));
        servers.push(server);
    }
    let d = daemon(config).await;
    let refs: Vec<&StandIn> = servers.iter().collect();
    wait_logins(&refs, 1, Duration::from_secs(30)).await;
    for server in &servers {
        let login = &server.logins()[0];
        assert!(login.starts_with("action: login\r\n"), "{login}");
        assert!(login.contains("username: leadpipe\r\n"), "{login}");
        assert!(login.contains(&format!("secret: {SECRET}\r\n")), "{login}");
        assert!(login.contains("actionid: "), "{login}");
    }
    let want = lines.iter().filter(|e| e["creates_lead"] == true).count();
    let leads = settle(&d, want, Duration::from_secs(60)).await;
    let calls = calls_by_id(&leads);
    for e in &lines {
        let linkedid = e["linkedid"].as_str().expect("linkedid");
        let here = calls.get(linkedid).cloned().unwrap_or_default();
        if e["creates_lead"] != true {
            assert!(here.is_empty(), "{linkedid}: never a lead, yet filed");
            continue;
        }
        assert_eq!(here.len(), 1, "{linkedid}: one call activity");
        let (lead, activity) = &here[0];
        let data = &activity["data"];
        assert_eq!(lead["channel"], "call");
        assert_eq!(lead["source"], "phone-pbx");
        assert_eq!(lead["phone"], e["phone_e164"], "{linkedid}");
        assert_eq!(activity["kind"], "call");
        assert_eq!(data["missed"], e["missed"], "{linkedid}: {data}");
        assert_eq!(data["duration_s"], e["duration_s"], "{linkedid}: {data}");
        assert_eq!(
            data["caller_name"], e["caller_id_name"],
            "{linkedid}: {data}"
        );
        assert_eq!(data["did"], e["did"], "{linkedid}: {data}");
        assert_eq!(data["direction"], "inbound");
        assert_eq!(
            has_tag(lead, "missed_call"),
            e["missed"] == true,
            "{linkedid}"
        );
        assert_eq!(
            lead["name"],
            Value::Null,
            "{linkedid}: a caller id name is no name"
        );
    }
    assert_eq!(leads.len(), want, "{folder:?}");
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/telephony/ami")
}

#[tokio::test]
async fn every_ami_transcript_of_ours_gives_its_expectations() {
    run_ami_folder(&fixtures()).await;
}

#[tokio::test]
async fn every_ami_transcript_of_the_shared_corpus_gives_its_expectations() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/telephony/ami");
    if !folder.join("expect.jsonl").exists() {
        eprintln!(
            "skipped: {} not found (the shared corpus sits beside the repository in CI)",
            folder.display()
        );
        return;
    }
    run_ami_folder(&folder).await;
}

#[tokio::test]
async fn a_connection_dropped_mid_call_then_a_slow_sender_lose_no_call() {
    let first = std::fs::read(fixtures().join("01_ring_group_second_leg_answers.txt"))
        .expect("transcript 01");
    let second =
        std::fs::read(fixtures().join("02_missed_pl_caller_name.txt")).expect("transcript 02");
    // Cut the first call just before anyone answered it.
    let answer = String::from_utf8_lossy(&first)
        .find("Event: DialEnd")
        .expect("the first DialEnd");
    let banner = first.windows(2).position(|w| w == b"\r\n").expect("banner") + 2;
    let server = StandIn::start(vec![
        Session {
            transcript: first.clone(),
            cut_after: Some(answer - banner),
            trickle: None,
        },
        Session {
            transcript: second,
            cut_after: None,
            trickle: Some((7, Duration::from_millis(2))),
        },
    ])
    .await;
    let d = daemon(ami_block(
        "pbx1",
        server.port,
        "orphan_timeout_secs = 2\nping_interval_secs = 1",
    ))
    .await;
    wait_logins(&[&server], 2, Duration::from_secs(30)).await;
    let leads = settle(&d, 2, Duration::from_secs(60)).await;
    let calls = calls_by_id(&leads);
    assert_eq!(leads.len(), 2, "{leads:?}");

    // The call whose end was lost is closed by timeout and still filed.
    let cut = calls.get("1747400000.100").cloned().unwrap_or_default();
    assert_eq!(cut.len(), 1, "the cut call is filed once");
    let (lead, activity) = &cut[0];
    assert_eq!(lead["phone"], "+842839102299");
    assert_eq!(activity["data"]["closed_by"], "timeout");
    assert_eq!(
        activity["data"]["missed"], true,
        "nobody had answered when it was cut"
    );

    // The call sent a few bytes at a time reads whole.
    let slow = calls.get("1747500000.500").cloned().unwrap_or_default();
    assert_eq!(slow.len(), 1);
    assert_eq!(slow[0].0["phone"], "+48601234567");
    assert_eq!(slow[0].1["data"]["duration_s"], 17);
    assert_eq!(slow[0].1["data"]["caller_name"], "KOWALSKI JAN");

    // The connection is kept alive with pings, answered by the PBX.
    let deadline = Instant::now() + Duration::from_secs(10);
    while *server.pings.lock().expect("pings") == 0 {
        assert!(Instant::now() < deadline, "no Action: Ping within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refused_login_is_retried_with_backoff_and_files_nothing() {
    let refused = b"Asterisk Call Manager/9.0.0\r\nResponse: Error\r\nActionID: x\r\nMessage: Authentication failed\r\n\r\n".to_vec();
    let server = StandIn::start(vec![Session {
        transcript: refused,
        cut_after: None,
        trickle: None,
    }])
    .await;
    let d = daemon(ami_block("pbx1", server.port, "")).await;
    wait_logins(&[&server], 2, Duration::from_secs(30)).await;
    let started = Instant::now();
    wait_logins(&[&server], 3, Duration::from_secs(30)).await;
    // The supervisor waits 1 s, 2 s, ... between runs: never a busy loop.
    assert!(started.elapsed() >= Duration::from_millis(900));
    let status = d.get("/readyz").await.json();
    let text = status.to_string();
    assert!(text.contains("asterisk-pbx1"), "{text}");
    assert!(d.leads("").await.is_empty());
}
