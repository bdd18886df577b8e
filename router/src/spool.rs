//! The local spool: a durable journal on local disk that takes what web intake accepted
//! while the broker could not confirm it, and a drainer that publishes the journal to the
//! broker, in order, once it is back.
//!
//! A browser does not retry a form post, so a broker restart must not turn visitors
//! away. An entry is fsync'd before the client hears 202 (appends that arrive together
//! share one fsync), and it leaves the journal only after the broker confirmed it. A
//! crash at any point loses nothing: an entry that was published but not yet marked
//! drained is published again, and its inquiry id makes the second copy a no-op.
//!
//! # On disk
//! - `NNNNNNNNNNNNNNNNNNNN.journal`: segments, appended in sequence. A record is
//!   `len: u32 LE | crc32: u32 LE | spooled_at_ms: u64 LE | payload (len bytes)`; the CRC
//!   covers the timestamp and the payload. A torn record at the end of a segment (a crash
//!   mid-append, never acknowledged) is cut off when the spool opens.
//! - `drained`: `segment: u64 LE | offset: u64 LE`, the first record not yet confirmed,
//!   replaced atomically (write, fsync, rename, fsync the directory).
//! - `lock`: held with an exclusive file lock while a daemon uses the directory, so two
//!   daemons never share one journal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use normalizer::IdentityKey;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::envelope::{ENVELOPE_VERSION, Envelope};
use crate::publisher::{Publisher, WireEnvelope};

/// `[spool]`: where web intake keeps what the broker could not confirm in time.
#[derive(Debug, Clone, Deserialize)]
pub struct SpoolConfig {
    /// Whether web intake spools at all; without it a broker outage answers 503.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// When a web post goes to the spool: only when the broker does not confirm it in
    /// time (`fallback`), or always (`always`: answered once the journal holds it).
    #[serde(default)]
    pub mode: SpoolMode,
    /// The journal's directory (created if missing); one per daemon. Unset: a directory
    /// named after the HTTP listen address under the state directory (see
    /// [`SpoolConfig::dir_for`]), so daemons on one machine never share one.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// How long a post waits for the broker's confirm before it is spooled instead.
    #[serde(default = "default_after_ms")]
    pub after_ms: u64,
    /// The journal's size cap; beyond it intake answers 503 `spool_full`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Size at which a new segment file is started.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// In `always` mode, the shortest time between two drain passes once the drainer has
    /// caught up, so that a pass gathers the posts of that time into fuller broker
    /// messages (0: a pass as soon as anything is written).
    #[serde(default = "default_drain_linger_ms")]
    pub drain_linger_ms: u64,
}

/// When web intake writes a post to the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolMode {
    /// A post is answered after the broker's confirm, and spooled only when the broker
    /// fails it or does not confirm it within `after_ms`.
    #[default]
    Fallback,
    /// Every post is spooled and answered after the journal's fsync; the drainer
    /// publishes it. The answer no longer waits for the broker, and a post accepted this
    /// way is as durable as the local disk until its confirm (see docs/OPERATIONS.md).
    Always,
}

fn default_enabled() -> bool {
    true
}
fn default_after_ms() -> u64 {
    1_000
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_drain_linger_ms() -> u64 {
    20
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            mode: SpoolMode::default(),
            dir: None,
            after_ms: default_after_ms(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            drain_linger_ms: default_drain_linger_ms(),
        }
    }
}

impl SpoolConfig {
    /// Every problem with the values, by key.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.after_ms == 0 {
            out.push(("after_ms", "must be greater than 0".into()));
        }
        if self.segment_bytes < 4096 {
            out.push(("segment_bytes", "must be at least 4096".into()));
        }
        if self.max_bytes < self.segment_bytes {
            out.push((
                "max_bytes",
                "must be at least segment_bytes (64 MiB by default)".into(),
            ));
        }
        if self.mode == SpoolMode::Always && !self.enabled {
            out.push((
                "mode",
                "`always` needs the spool: set spool.enabled = true or spool.mode = \"fallback\""
                    .into(),
            ));
        }
        if self.drain_linger_ms > 1_000 {
            out.push((
                "drain_linger_ms",
                "must be at most 1000: every lead may wait that long before it is published".into(),
            ));
        }
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            out.push(("dir", "must name a directory".into()));
        }
        out
    }
}

impl SpoolConfig {
    /// The directory to use for a daemon listening on `listen`: `dir` when set, else
    /// `spool/<listen>` under `$STATE_DIRECTORY` (systemd's StateDirectory=), else
    /// under /var/lib/leadpipe when that can be created, else under
    /// `~/.local/state/leadpipe`. Never a temporary directory: the journal must outlive a
    /// reboot.
    pub fn dir_for(&self, listen: &str) -> PathBuf {
        if let Some(dir) = &self.dir {
            return dir.clone();
        }
        let name: String = listen
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = std::env::var_os("STATE_DIRECTORY")
            .map(PathBuf::from)
            .filter(|d| !d.as_os_str().is_empty())
            .or_else(|| {
                let system = PathBuf::from("/var/lib/leadpipe");
                fs::create_dir_all(&system).is_ok().then_some(system)
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".local/state/leadpipe"))
            })
            .unwrap_or_else(|| PathBuf::from("leadpipe-state"));
        base.join("spool").join(name)
    }
}

/// Why an entry could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The journal reached `spool.max_bytes`.
    #[error("the local spool is full ({0} bytes); the broker has been unreachable too long")]
    Full(u64),
    /// Writing or syncing the journal failed.
    #[error("the local spool could not be written: {0}")]
    Io(#[from] io::Error),
    /// The spool is closing.
    #[error("the local spool is closing")]
    Closed,
    /// Another process holds the directory.
    #[error("another leadpipe uses the spool directory {0}: give each daemon its own spool.dir")]
    InUse(PathBuf),
}

const HEADER: usize = 16;

/// Seconds an entry may wait in an always-spooling journal before `/readyz` calls intake
/// degraded: a healthy drainer publishes within milliseconds.
pub const BEHIND_SECS: u64 = 5;
const MAX_RECORD: u32 = 64 << 20;

fn segment_name(seq: u64) -> String {
    format!("{seq:020}.journal")
}

fn crc(spooled_at_ms: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&spooled_at_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode(spooled_at_ms: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(spooled_at_ms, payload).to_le_bytes());
    out.extend_from_slice(&spooled_at_ms.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record read back: where the next one starts, when it was spooled, its bytes.
struct Record {
    next: u64,
    spooled_at_ms: u64,
    payload: Vec<u8>,
}

/// Reads the record at the reader's position; `None` at the end or at a torn or
/// corrupt record (which ends the segment).
fn read_record(reader: &mut impl Read, at: u64) -> io::Result<Option<Record>> {
    let mut header = [0u8; HEADER];
    if let Err(e) = reader.read_exact(&mut header) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let spooled_at_ms = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    if let Err(e) = reader.read_exact(&mut payload) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if crc(spooled_at_ms, &payload) != sum {
        return Ok(None);
    }
    Ok(Some(Record {
        next: at + HEADER as u64 + u64::from(len),
        spooled_at_ms,
        payload,
    }))
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The drained position: the first record not yet confirmed by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    segment: u64,
    offset: u64,
}

/// What the writer and the drainer share, behind one lock that is never held across
/// an `.await`.
struct Journal {
    dir: PathBuf,
    /// Segments holding undrained records, oldest first (the last one is being written).
    segments: VecDeque<u64>,
    write: File,
    write_seq: u64,
    write_len: u64,
    drained: Position,
    segment_bytes: u64,
}

/// What a journal held when it was opened.
#[derive(Default)]
struct Recovered {
    entries: u64,
    bytes: u64,
    /// When the oldest entry was spooled.
    oldest: Option<u64>,
    /// The people with entries waiting, as [`Waiting`] counts them.
    waiting: Waiting,
}

impl Journal {
    fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Journal, Recovered)> {
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".journal")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        let drained = read_position(dir)?.unwrap_or(Position {
            segment: seqs.first().copied().unwrap_or(0),
            offset: 0,
        });
        // Segments before the drained one are fully confirmed (a crash came between
        // moving past them and deleting them).
        for &seq in seqs.iter().filter(|&&s| s < drained.segment) {
            fs::remove_file(dir.join(segment_name(seq)))?;
        }
        seqs.retain(|&s| s >= drained.segment);
        let mut recovered = Recovered::default();
        for &seq in &seqs {
            let path = dir.join(segment_name(seq));
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let start = if seq == drained.segment {
                drained.offset
            } else {
                0
            };
            file.seek(SeekFrom::Start(start))?;
            let mut reader = BufReader::new(&file);
            let mut at = start;
            while let Some(record) = read_record(&mut reader, at)? {
                recovered.entries += 1;
                recovered.bytes += record.next - at;
                recovered.oldest.get_or_insert(record.spooled_at_ms);
                if let Some(keys) = SpooledPerson::keys(&record.payload) {
                    recovered.waiting.add_keys(&keys);
                }
                at = record.next;
            }
            drop(reader);
            // Cut a torn tail: nothing after it was ever acknowledged.
            if file.metadata()?.len() > at {
                tracing::warn!(
                    segment = %path.display(),
                    at,
                    "The spool ends in a torn record (a crash while writing it); cut it off."
                );
                file.set_len(at)?;
                file.sync_all()?;
            }
        }
        let write_seq = seqs.last().map_or(drained.segment, |s| s + 1);
        let write = new_segment(dir, write_seq)?;
        let mut drained = drained;
        if recovered.entries == 0 {
            // Nothing waits: start clean in the new segment, so empty files never pile up.
            drained = Position {
                segment: write_seq,
                offset: 0,
            };
            write_position(dir, drained)?;
            for &seq in &seqs {
                fs::remove_file(dir.join(segment_name(seq)))?;
            }
            seqs.clear();
        }
        let mut segments: VecDeque<u64> = seqs.into();
        segments.push_back(write_seq);
        let journal = Journal {
            dir: dir.to_owned(),
            segments,
            write,
            write_seq,
            write_len: 0,
            drained,
            segment_bytes,
        };
        Ok((journal, recovered))
    }

    /// Appends encoded records and syncs them once.
    fn append(&mut self, records: &[u8]) -> io::Result<()> {
        if self.write_len > 0 && self.write_len + records.len() as u64 > self.segment_bytes {
            let seq = self.write_seq + 1;
            self.write = new_segment(&self.dir, seq)?;
            self.write_seq = seq;
            self.write_len = 0;
            self.segments.push_back(seq);
        }
        if let Err(e) = self
            .write
            .write_all(records)
            .and_then(|()| self.write.sync_data())
        {
            // Leave no partial batch behind for the next append to follow: the records
            // were not acknowledged.
            let _ = self.write.set_len(self.write_len);
            return Err(e);
        }
        self.write_len += records.len() as u64;
        Ok(())
    }
}

fn new_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(segment_name(seq)))?;
    sync_dir(dir)?;
    Ok(file)
}

fn read_position(dir: &Path) -> io::Result<Option<Position>> {
    match fs::read(dir.join("drained")) {
        Ok(bytes) if bytes.len() == 16 => Ok(Some(Position {
            segment: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            offset: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        })),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the spool's `drained` file is damaged: move the spool directory aside and start again; its entries can be replayed from the moved copy",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_position(dir: &Path, at: Position) -> io::Result<()> {
    let tmp = dir.join("drained.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&at.segment.to_le_bytes())?;
    file.write_all(&at.offset.to_le_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("drained"))?;
    sync_dir(dir)
}

/// The people with entries in the spool: a count per identity key, kept as a 32-bit
/// hash so an entry costs the same few bytes whatever its keys hold (a collision only
/// sends a post to the spool that could have gone straight to the broker). A long
/// outage fills it with millions of keys, so it shrinks again as the spool drains
/// instead of keeping its largest size for the life of the process.
#[derive(Default)]
struct Waiting(HashMap<u32, u32>);

/// Slots a drained [`Waiting`] keeps without shrinking: a few KiB.
const WAITING_KEPT: usize = 1024;

impl Waiting {
    /// The hashed identity keys of an envelope's person (none for a lead known only by
    /// its inquiry: no later post can be the same person's).
    fn keys(envelope: &Envelope) -> impl Iterator<Item = u32> + '_ {
        Self::hashed(&envelope.lead.identity_keys)
    }

    fn hashed(keys: &[IdentityKey]) -> impl Iterator<Item = u32> + '_ {
        keys.iter().map(|key| {
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            // Half the hash halves the table; collisions stay rare and harmless.
            hasher.finish() as u32
        })
    }

    fn add(&mut self, envelope: &Envelope) {
        self.add_keys(&envelope.lead.identity_keys);
    }

    fn add_keys(&mut self, keys: &[IdentityKey]) {
        for key in Self::hashed(keys) {
            *self.0.entry(key).or_default() += 1;
        }
    }

    fn remove(&mut self, envelope: &Envelope) {
        self.remove_keys(&envelope.lead.identity_keys);
    }

    fn remove_keys(&mut self, keys: &[IdentityKey]) {
        for key in Self::hashed(keys) {
            if let std::collections::hash_map::Entry::Occupied(mut count) = self.0.entry(key) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        // Shrinking to twice what is left each time it falls below a quarter keeps the
        // rehashing's cost proportional to the keys removed.
        let capacity = self.0.capacity();
        if capacity > WAITING_KEPT && self.0.len() < capacity / 4 {
            self.0.shrink_to(self.0.len() * 2);
        }
    }

    fn holds(&self, envelope: &Envelope) -> bool {
        Self::keys(envelope).any(|key| self.0.contains_key(&key))
    }
}

/// What opening the spool reads of each entry: the envelope's version and its person's
/// keys. serde skips the rest without building it, so a full spool opens several times
/// faster than when every envelope was decoded.
#[derive(Deserialize)]
struct SpooledPerson {
    version: u16,
    lead: SpooledKeys,
}

#[derive(Deserialize)]
struct SpooledKeys {
    identity_keys: Vec<IdentityKey>,
}

impl SpooledPerson {
    /// The person's keys of a spooled entry of this build's envelope version.
    fn keys(payload: &[u8]) -> Option<Vec<IdentityKey>> {
        serde_json::from_slice::<SpooledPerson>(payload)
            .ok()
            .filter(|person| person.version == ENVELOPE_VERSION)
            .map(|person| person.lead.identity_keys)
    }
}

struct Append {
    record: Vec<u8>,
    done: oneshot::Sender<Result<(), SpoolError>>,
}

/// What `/metrics` and `/readyz` say about the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolDepth {
    /// Entries not yet confirmed by the broker.
    pub entries: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Seconds since the oldest of them was spooled (0 when empty).
    pub oldest_age_secs: u64,
}

/// The spool: appends with group commit, and a drainer that empties it into the broker.
pub struct Spool {
    journal: Arc<Mutex<Journal>>,
    appends: mpsc::Sender<Append>,
    entries: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Milliseconds since the epoch when the oldest undrained entry was spooled; 0 when
    /// empty.
    oldest_ms: Arc<AtomicU64>,
    max_bytes: u64,
    /// Set when an append was refused for the cap, cleared when draining makes room.
    refused_full: AtomicBool,
    /// The people with entries waiting; std Mutex, never held across `.await`.
    waiting: Mutex<Waiting>,
    /// Set when the broker failed or was slow to confirm a post, cleared when it confirms
    /// a spooled entry: while set and entries wait, every post joins the spool without
    /// trying the broker.
    broker_failing: AtomicBool,
    after: Duration,
    mode: SpoolMode,
    /// Shortest time between two drain passes once caught up (only in `always` mode).
    linger: Duration,
    wake: Arc<Notify>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    _lock: File,
}

impl Spool {
    /// Opens (or creates) the journal in `config.dir`, recovering what a previous run left,
    /// and starts the group-commit writer.
    pub fn open(config: &SpoolConfig, dir: &Path) -> Result<Arc<Spool>, SpoolError> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::InUse(dir.to_owned()));
        }
        let (journal, recovered) = Journal::open(dir, config.segment_bytes)?;
        let Recovered {
            entries,
            bytes,
            oldest,
            waiting,
        } = recovered;
        if entries > 0 {
            tracing::warn!(
                entries,
                bytes,
                "The spool holds entries from an earlier run; they are published once the broker confirms."
            );
        }
        let journal = Arc::new(Mutex::new(journal));
        let (tx, rx) = mpsc::channel(8192);
        let spool = Arc::new(Spool {
            journal: journal.clone(),
            appends: tx,
            entries: Arc::new(AtomicU64::new(entries)),
            bytes: Arc::new(AtomicU64::new(bytes)),
            oldest_ms: Arc::new(AtomicU64::new(oldest.unwrap_or(0))),
            max_bytes: config.max_bytes,
            refused_full: AtomicBool::new(false),
            waiting: Mutex::new(waiting),
            broker_failing: AtomicBool::new(false),
            after: Duration::from_millis(config.after_ms),
            mode: config.mode,
            linger: match config.mode {
                SpoolMode::Always => Duration::from_millis(config.drain_linger_ms),
                // Entries spooled because the broker failed should leave as soon as it
                // is back, so that intake returns to publishing directly.
                SpoolMode::Fallback => Duration::ZERO,
            },
            wake: Arc::new(Notify::new()),
            writer: Mutex::new(None),
            _lock: lock,
        });
        let handle = tokio::spawn(write_batches(
            rx,
            journal,
            spool.entries.clone(),
            spool.bytes.clone(),
            spool.oldest_ms.clone(),
            spool.wake.clone(),
        ));
        *spool.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        spool.publish_gauges();
        Ok(spool)
    }

    /// How long a post waits for the broker before it is spooled.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Whether every web post goes to the spool ([`SpoolMode::Always`]).
    pub fn takes_every_post(&self) -> bool {
        self.mode == SpoolMode::Always
    }

    /// Whether the drainer is behind: entries wait after the broker failed them, or (when
    /// every post is spooled, so a few always wait) the oldest has waited longer than
    /// [`BEHIND_SECS`].
    pub fn is_behind(&self) -> bool {
        !self.is_empty()
            && (!self.takes_every_post() || self.depth().oldest_age_secs >= BEHIND_SECS)
    }

    /// Whether no entry waits to be published.
    pub fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Acquire) == 0
    }

    /// Whether a new post must join the spool without trying the broker: an entry of the
    /// same person waits there (so one person's inquiries reach the broker in the order
    /// they came), or entries wait after the broker failed a post and it has confirmed
    /// nothing since (so each post does not wait `after_ms` for a broker that is away).
    /// Everyone else's posts go straight to the broker while the drainer catches up, and
    /// with nothing waiting every post tries the broker first (a spool that could not
    /// take the failed post must not keep the next ones from a broker that is back).
    pub fn must_follow(&self, envelope: &Envelope) -> bool {
        self.lock_waiting().holds(envelope)
            || (self.broker_failing.load(Ordering::Acquire) && !self.is_empty())
    }

    /// Notes that the broker failed a post or did not confirm it in time.
    pub fn broker_failed(&self) {
        self.broker_failing.store(true, Ordering::Release);
    }

    /// Entries, bytes and the oldest entry's age.
    pub fn depth(&self) -> SpoolDepth {
        let oldest = self.oldest_ms.load(Ordering::Acquire);
        SpoolDepth {
            entries: self.entries.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Acquire),
            oldest_age_secs: if oldest == 0 {
                0
            } else {
                now_ms().saturating_sub(oldest) / 1000
            },
        }
    }

    /// Whether the cap was reached: the last append that did not fit was refused and
    /// nothing has drained since.
    pub fn is_full(&self) -> bool {
        self.refused_full.load(Ordering::Acquire)
            || self.bytes.load(Ordering::Acquire) >= self.max_bytes
    }

    fn publish_gauges(&self) {
        let depth = self.depth();
        metrics::gauge!("leadpipe_spool_entries").set(depth.entries as f64);
        metrics::gauge!("leadpipe_spool_bytes").set(depth.bytes as f64);
        metrics::gauge!("leadpipe_spool_oldest_seconds").set(depth.oldest_age_secs as f64);
    }

    /// Appends an envelope durably: returns once it is on disk (fsync'd).
    pub async fn append(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let payload = envelope.to_bytes();
        let size = (HEADER + payload.len()) as u64;
        if self.bytes.load(Ordering::Acquire) + size > self.max_bytes {
            metrics::counter!("leadpipe_spool_full_total").increment(1);
            self.refused_full.store(true, Ordering::Release);
            return Err(SpoolError::Full(self.max_bytes));
        }
        let mut record = Vec::with_capacity(size as usize);
        encode(now_ms(), &payload, &mut record);
        // Counted before it is written: a post of the same person arriving meanwhile
        // must queue behind this one.
        self.lock_waiting().add(envelope);
        let (done, answer) = oneshot::channel();
        let written = match self.appends.send(Append { record, done }).await {
            Ok(()) => answer.await.unwrap_or(Err(SpoolError::Closed)),
            Err(_) => Err(SpoolError::Closed),
        };
        if written.is_err() {
            self.lock_waiting().remove(envelope);
        }
        written
    }

    /// Publishes the journal to the broker in order until `stop`, removing entries only
    /// after their confirm.
    pub async fn drain(self: Arc<Self>, publisher: Arc<Publisher>, stop: CancellationToken) {
        let mut saved = SavedPosition {
            at: tokio::time::Instant::now(),
            behind: false,
        };
        self.drain_until(&publisher, &stop, &mut saved).await;
        if saved.behind {
            self.save_position(&mut saved);
        }
    }

    /// Writes the drained position to disk (what [`Spool::drain`] defers).
    fn save_position(&self, saved: &mut SavedPosition) {
        let (dir, at) = {
            let journal = self.lock();
            (journal.dir.clone(), journal.drained)
        };
        match write_position(&dir, at) {
            Ok(()) => {
                saved.at = tokio::time::Instant::now();
                saved.behind = false;
            }
            // Only costs a republish of what was confirmed since the last save.
            Err(error) => {
                tracing::warn!(%error, "Saving the spool's drained position failed; trying again shortly.")
            }
        }
    }

    async fn drain_until(
        &self,
        publisher: &Arc<Publisher>,
        stop: &CancellationToken,
        saved: &mut SavedPosition,
    ) {
        let mut reader: Option<(u64, BufReader<File>, u64)> = None;
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        // When every post is spooled, a pass right after each group commit would publish
        // a few posts a broker message: RabbitMQ's work is per message (and per wake-up),
        // not per byte, so a caught-up drainer lets the posts of `linger` gather first.
        // A post after a quiet spell is published at once; a backlog is drained flat out.
        let mut next_pass = tokio::time::Instant::now();
        loop {
            if saved.behind && saved.at.elapsed() >= SAVE_POSITION_EVERY {
                self.save_position(saved);
            }
            if self.is_empty() {
                reader = None;
                // A position not yet saved is saved when its time comes, even if nothing
                // else happens by then.
                let save_due = saved.at + SAVE_POSITION_EVERY;
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = tokio::time::sleep_until(save_due), if saved.behind => continue,
                    _ = gauges.tick() => { self.publish_gauges(); continue; }
                    _ = stop.cancelled() => return,
                }
            }
            if !publisher.is_ready().await {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.cancelled() => return,
                }
                self.publish_gauges();
                continue;
            }
            if tokio::time::Instant::now() < next_pass {
                tokio::select! {
                    _ = tokio::time::sleep_until(next_pass) => {}
                    _ = stop.cancelled() => return,
                }
            }
            let pass = tokio::time::Instant::now();
            let outcome = self.drain_some(publisher, &mut reader, stop, saved).await;
            if self.entries.load(Ordering::Acquire) < DRAIN_BATCH {
                next_pass = pass + self.linger;
            }
            match outcome {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%error, "Draining the spool failed; trying again shortly.");
                    reader = None;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
            self.publish_gauges();
        }
    }

    /// Publishes up to a batch of entries (one person's in order), then records
    /// the new drained position, also when a publish failed part-way (what was confirmed
    /// stays confirmed).
    async fn drain_some(
        &self,
        publisher: &Arc<Publisher>,
        reader: &mut Option<(u64, BufReader<File>, u64)>,
        stop: &CancellationToken,
        saved: &mut SavedPosition,
    ) -> Result<(), DrainError> {
        let mut progress = Progress {
            position: self.lock().drained,
            published: 0,
            bytes: 0,
            last_spooled_at_ms: 0,
        };
        let outcome = self
            .publish_batch(publisher, reader, stop, &mut progress)
            .await;
        if outcome.is_err() {
            // The reader may stand in the middle of a record; open it again next time.
            *reader = None;
        }
        if progress.published > 0 {
            // Saved to disk at most every SAVE_POSITION_EVERY: a crash before that
            // publishes the entries since again, and their inquiry ids make the copies
            // no-ops.
            self.lock().drained = progress.position;
            saved.behind = true;
            self.bytes.fetch_sub(progress.bytes, Ordering::AcqRel);
            self.refused_full.store(false, Ordering::Release);
            self.broker_failing.store(false, Ordering::Release);
            let left =
                self.entries.fetch_sub(progress.published, Ordering::AcqRel) - progress.published;
            metrics::counter!("leadpipe_spool_drained_total").increment(progress.published);
            if left == 0 {
                self.oldest_ms.store(0, Ordering::Release);
                tracing::info!(
                    "The spool is empty again: every spooled inquiry reached the broker."
                );
            } else {
                // The next entry is at most this old: close enough for a gauge.
                self.oldest_ms
                    .store(progress.last_spooled_at_ms, Ordering::Release);
            }
        }
        outcome
    }

    async fn publish_batch(
        &self,
        publisher: &Arc<Publisher>,
        reader: &mut Option<(u64, BufReader<File>, u64)>,
        stop: &CancellationToken,
        progress: &mut Progress,
    ) -> Result<(), DrainError> {
        // Entries of different people are published together (each waits for its own
        // confirm, so the drain runs at the broker's pace, not one round trip per entry);
        // a person's next entry waits until their previous one is confirmed.
        let mut run: Vec<Pending> = Vec::new();
        let mut people: HashSet<u32> = HashSet::new();
        while progress.published + (run.len() as u64) < DRAIN_BATCH && !stop.is_cancelled() {
            let at = run.last().map_or(progress.position.offset, |p| p.next);
            let position = Position {
                segment: progress.position.segment,
                offset: at,
            };
            // In the segment being written, only what the writer synced and counted.
            let limit = {
                let journal = self.lock();
                (position.segment == journal.write_seq).then_some(journal.write_len)
            };
            let record = if limit.is_some_and(|l| position.offset >= l) {
                None
            } else {
                if reader
                    .as_ref()
                    .is_none_or(|(seq, _, at)| *seq != position.segment || *at != position.offset)
                {
                    let file = File::open(self.lock().dir.join(segment_name(position.segment)))?;
                    let mut buffered = BufReader::new(file);
                    buffered.seek(SeekFrom::Start(position.offset))?;
                    *reader = Some((position.segment, buffered, position.offset));
                }
                let (_, buffered, _) = reader.as_mut().expect("opened above");
                read_record(buffered, position.offset)?
            };
            let Some(record) = record else {
                *reader = None;
                // Everything read from this segment is published before leaving it.
                self.publish_run(publisher, &mut run, progress).await?;
                people.clear();
                // The end of a segment: move to the next one unless it is the one being
                // written (then this is simply the end for now).
                let mut journal = self.lock();
                if position.segment == journal.write_seq {
                    return Ok(());
                }
                if limit.is_some() {
                    // The segment was still being written when it was read, and the writer
                    // has since appended to it and moved on (while the run above waited
                    // for its confirms): read on from here, it is not finished.
                    continue;
                }
                let finished = position.segment;
                journal.segments.retain(|&s| s != finished);
                let next = Position {
                    segment: journal
                        .segments
                        .front()
                        .copied()
                        .unwrap_or(journal.write_seq),
                    offset: 0,
                };
                journal.drained = next;
                let dir = journal.dir.clone();
                drop(journal);
                write_position(&dir, next)?;
                fs::remove_file(dir.join(segment_name(finished)))?;
                progress.position = next;
                continue;
            };
            if let Some((_, _, at)) = reader.as_mut() {
                *at = record.next;
            }
            let entry = match Spooled::read(record.payload) {
                Ok(entry) => Some(entry),
                Err((payload, error)) => {
                    // A record whose CRC holds but that does not decode was written by
                    // another version: keep a copy and go on, never block the rest.
                    metrics::counter!("leadpipe_spool_undecodable_total").increment(1);
                    let keep = self.lock().dir.join("undecodable");
                    fs::create_dir_all(&keep)?;
                    fs::write(
                        keep.join(format!("{}-{}", position.segment, position.offset)),
                        &payload,
                    )?;
                    tracing::error!(%error, "A spooled entry does not decode; kept under undecodable/ and skipped.");
                    // Opening the spool counted it by its keys alone, if it has them.
                    if let Some(keys) = SpooledPerson::keys(&payload) {
                        self.lock_waiting().remove_keys(&keys);
                    }
                    None
                }
            };
            if let Some(entry) = &entry
                && Waiting::hashed(&entry.keys).any(|key| people.contains(&key))
            {
                self.publish_run(publisher, &mut run, progress).await?;
                people.clear();
            }
            if let Some(entry) = &entry {
                people.extend(Waiting::hashed(&entry.keys));
            }
            run.push(Pending {
                entry,
                start: position.offset,
                next: record.next,
                spooled_at_ms: record.spooled_at_ms,
            });
        }
        self.publish_run(publisher, &mut run, progress).await
    }

    /// Publishes `run` (consecutive entries of one segment, no person twice) at once and
    /// moves `progress` past the confirmed prefix; the first failure stops it there, and
    /// the entries after it are published again later (their inquiry ids make any copy
    /// that did arrive a no-op).
    async fn publish_run(
        &self,
        publisher: &Arc<Publisher>,
        run: &mut Vec<Pending>,
        progress: &mut Progress,
    ) -> Result<(), DrainError> {
        let outcomes = join_all(run.iter().map(|pending| async move {
            match &pending.entry {
                // A copy: a failed run is read from the journal again.
                Some(entry) => publisher.publish_wire(entry.wire.clone()).await,
                None => Ok(()),
            }
        }))
        .await;
        // One lock for the whole run: the loop does not await.
        let mut waiting = self.lock_waiting();
        for (pending, outcome) in run.drain(..).zip(outcomes) {
            outcome.map_err(|e| DrainError::Publish(e.to_string()))?;
            if let Some(entry) = &pending.entry {
                waiting.remove_keys(&entry.keys);
            }
            progress.bytes += pending.next - pending.start;
            progress.position.offset = pending.next;
            progress.published += 1;
            progress.last_spooled_at_ms = pending.spooled_at_ms;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking appends and waits for the writer to finish what it holds.
    pub async fn close(&self) {
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            handle.abort();
            let _ = handle.await;
        }
        if self.is_empty() {
            // Nothing waits: leave no files behind (the next start begins afresh).
            let dir = self.lock().dir.clone();
            if let Ok(listing) = fs::read_dir(&dir) {
                for entry in listing.flatten() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.ends_with(".journal") || name == "drained" || name == "lock" {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// When the drained position was last written to disk, and whether it moved since.
struct SavedPosition {
    at: tokio::time::Instant,
    behind: bool,
}

/// How often the drainer writes its position while entries keep coming. Writing it after
/// every pass (a write, two fsyncs and a rename) cost the journal's own appends their
/// fsync latency when every post is spooled.
const SAVE_POSITION_EVERY: Duration = Duration::from_millis(100);

/// Most entries a drain pass publishes.
const DRAIN_BATCH: u64 = 256;

/// How far a drain pass got.
struct Progress {
    position: Position,
    published: u64,
    bytes: u64,
    last_spooled_at_ms: u64,
}

/// A journal entry read for publishing: its place in the segment and what it holds
/// (`None`: undecodable, kept aside, nothing to publish).
struct Pending {
    entry: Option<Spooled>,
    start: u64,
    next: u64,
    spooled_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error("reading the spool failed: {0}")]
    Io(#[from] io::Error),
    #[error("publishing a spooled entry failed: {0}")]
    Publish(String),
}

/// A spooled entry ready to publish: its bytes as written, and what the drainer reads
/// of them (the person's keys, the shard key, the inquiry id), so an entry is not
/// decoded and encoded again on its way to the broker.
struct Spooled {
    wire: WireEnvelope,
    keys: Vec<IdentityKey>,
}

#[derive(Deserialize)]
struct SpooledHead {
    version: u16,
    lead: SpooledLead,
    published_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
struct SpooledLead {
    identity_keys: Vec<IdentityKey>,
    inquiry: SpooledInquiry,
}

#[derive(Deserialize)]
struct SpooledInquiry {
    id: uuid::Uuid,
}

impl Spooled {
    /// Reads an entry of this build's envelope version; otherwise gives the payload back
    /// with what is wrong.
    fn read(payload: Vec<u8>) -> Result<Spooled, (Vec<u8>, String)> {
        let head = match serde_json::from_slice::<SpooledHead>(&payload) {
            Ok(head) => head,
            Err(error) => return Err((payload, format!("undecodable envelope: {error}"))),
        };
        if head.version != ENVELOPE_VERSION {
            let error = format!(
                "envelope version {} is not {ENVELOPE_VERSION}: a newer or older leadpipe spooled it",
                head.version
            );
            return Err((payload, error));
        }
        let SpooledLead {
            identity_keys,
            inquiry,
        } = head.lead;
        Ok(Spooled {
            wire: WireEnvelope {
                shard_key: normalizer::primary_key_of(&identity_keys, &inquiry.id),
                inquiry_id: inquiry.id.to_string(),
                published_at: head.published_at,
                payload,
            },
            keys: identity_keys,
        })
    }
}

/// The group-commit writer: takes every append waiting, writes them, syncs once, answers
/// them all.
async fn write_batches(
    mut rx: mpsc::Receiver<Append>,
    journal: Arc<Mutex<Journal>>,
    entries: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    oldest_ms: Arc<AtomicU64>,
    wake: Arc<Notify>,
) {
    const MAX_BATCH: usize = 1024;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(batch.iter().map(|a| a.record.len()).sum());
        for append in &batch {
            records.extend_from_slice(&append.record);
        }
        let first_ts = u64::from_le_bytes(batch[0].record[8..16].try_into().expect("8 bytes"));
        let journal = journal.clone();
        let (entries, bytes, oldest_ms) = (entries.clone(), bytes.clone(), oldest_ms.clone());
        let count = batch.len() as u64;
        // The counts move under the journal's lock together with its synced length, so the
        // drainer never sees a record that is not counted yet.
        let written = tokio::task::spawn_blocking(move || {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            journal.append(&records)?;
            let _ = oldest_ms.compare_exchange(0, first_ts, Ordering::AcqRel, Ordering::Acquire);
            bytes.fetch_add(records.len() as u64, Ordering::AcqRel);
            entries.fetch_add(count, Ordering::AcqRel);
            Ok::<(), io::Error>(())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match written {
            Ok(()) => {
                metrics::counter!("leadpipe_spool_appended_total").increment(batch.len() as u64);
                wake.notify_one();
                for append in batch {
                    let _ = append.done.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, "Writing the spool failed; those posts are answered 503.");
                for append in batch {
                    let _ = append.done.send(Err(SpoolError::Io(io::Error::new(
                        error.kind(),
                        error.to_string(),
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "leadpipe-spool-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn records(dir: &Path) -> Vec<Vec<u8>> {
        let (journal, _) = Journal::open(dir, 1 << 20).unwrap();
        let mut out = Vec::new();
        for seq in journal.segments.iter().copied() {
            let mut file = File::open(dir.join(segment_name(seq))).unwrap();
            let start = if seq == journal.drained.segment {
                journal.drained.offset
            } else {
                0
            };
            file.seek(SeekFrom::Start(start)).unwrap();
            let mut reader = BufReader::new(file);
            let mut at = start;
            while let Some(r) = read_record(&mut reader, at).unwrap() {
                at = r.next;
                out.push(r.payload);
            }
        }
        out
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = temp_dir("torn");
        {
            let (mut journal, recovered) = Journal::open(&dir, 1 << 20).unwrap();
            assert_eq!(recovered.entries, 0);
            let mut buf = Vec::new();
            encode(1, b"first", &mut buf);
            encode(2, b"second", &mut buf);
            journal.append(&buf).unwrap();
            // A crash in the middle of the third record: half its bytes reached disk.
            let mut third = Vec::new();
            encode(3, b"third, never acknowledged", &mut third);
            journal.write.write_all(&third[..10]).unwrap();
        }
        let (journal, recovered) = Journal::open(&dir, 1 << 20).unwrap();
        assert_eq!((recovered.entries, recovered.oldest), (2, Some(1)));
        assert_eq!(recovered.bytes, (2 * HEADER + 5 + 6) as u64);
        drop(journal);
        assert_eq!(records(&dir), vec![b"first".to_vec(), b"second".to_vec()]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_flipped_byte_ends_the_segment_there() {
        let dir = temp_dir("flip");
        {
            let (mut journal, _) = Journal::open(&dir, 1 << 20).unwrap();
            let mut buf = Vec::new();
            encode(1, b"good", &mut buf);
            encode(2, b"damaged", &mut buf);
            journal.append(&buf).unwrap();
        }
        let path = dir.join(segment_name(0));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert_eq!(records(&dir), vec![b"good".to_vec()]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_drained_position_skips_confirmed_records_and_removes_finished_segments() {
        let dir = temp_dir("drained");
        {
            // Tiny segments: every append after the first starts a new one.
            let (mut journal, _) = Journal::open(&dir, 32).unwrap();
            for (i, p) in [
                b"aaaaaaaaaaaaaaaa",
                b"bbbbbbbbbbbbbbbb",
                b"cccccccccccccccc",
            ]
            .iter()
            .enumerate()
            {
                let mut buf = Vec::new();
                encode(i as u64, *p, &mut buf);
                journal.append(&buf).unwrap();
            }
            assert_eq!(journal.segments.len(), 3);
        }
        // The first segment was confirmed and the position moved past it, but the crash
        // came before its file was deleted.
        write_position(
            &dir,
            Position {
                segment: 1,
                offset: 0,
            },
        )
        .unwrap();
        let (_, recovered) = Journal::open(&dir, 32).unwrap();
        assert_eq!((recovered.entries, recovered.oldest), (2, Some(1)));
        assert!(!dir.join(segment_name(0)).exists());
        assert_eq!(
            records(&dir),
            vec![b"bbbbbbbbbbbbbbbb".to_vec(), b"cccccccccccccccc".to_vec()]
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_second_daemon_cannot_open_the_same_directory() {
        let dir = temp_dir("lock");
        let config = SpoolConfig::default();
        let first = Spool::open(&config, &dir).unwrap();
        let second = Spool::open(&config, &dir)
            .err()
            .expect("the directory is taken");
        assert!(second.to_string().contains("its own spool.dir"), "{second}");
        first.close().await;
        drop(first);
        assert!(!dir.exists(), "an empty spool leaves nothing behind");
    }

    /// Waits up to 20 s for the drainer to empty `spool`.
    async fn wait_until_drained(spool: &Spool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !spool.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the spool drained: {:?}",
                spool.depth()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A publisher on the test broker with queues of its own, its connection task and the
    /// token that stops both.
    fn connected_publisher() -> (
        crate::AmqpConfig,
        Arc<Publisher>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let amqp = crate::testing::config();
        let publisher = Publisher::new(amqp.clone());
        let stop = CancellationToken::new();
        let connection = tokio::spawn(publisher.clone().run(stop.clone()));
        (amqp, publisher, stop, connection)
    }

    /// Closes `spool`, removes the test's queues and its directory.
    async fn tear_down(spool: &Spool, amqp: &crate::AmqpConfig, dir: &Path) {
        spool.close().await;
        crate::testing::clean_up(amqp).await;
        let _ = fs::remove_dir_all(dir);
    }

    /// An envelope from a person known by `email` and, when given, `phone`.
    fn envelope_of(email: Option<&str>, phone: Option<&str>) -> Envelope {
        let mut envelope = crate::testing::envelope(0);
        let mut inquiry = envelope.lead.inquiry.clone();
        inquiry.contact.email = email.map(str::to_owned);
        inquiry.contact.phone = phone.map(str::to_owned);
        envelope.lead = normalizer::normalize(inquiry);
        envelope
    }

    #[tokio::test]
    async fn an_entry_that_does_not_decode_is_set_aside_without_leaving_its_person_waiting() {
        let dir = temp_dir("undecodable");
        let lia = || envelope_of(Some("lia@example.it"), Some("+39 02 1234 5678"));
        // This build's version and the person's keys, but a field no build would write.
        let mut written: serde_json::Value = serde_json::from_slice(&lia().to_bytes()).unwrap();
        written["published_at"] = serde_json::json!("not a time");
        {
            let (mut journal, _) = Journal::open(&dir, 1 << 20).unwrap();
            let mut record = Vec::new();
            encode(
                now_ms(),
                &serde_json::to_vec(&written).unwrap(),
                &mut record,
            );
            journal.append(&record).unwrap();
        }
        let (amqp, publisher, stop, connection) = connected_publisher();
        let spool = Spool::open(&SpoolConfig::default(), &dir).unwrap();
        assert_eq!(spool.depth().entries, 1);
        assert!(
            spool.must_follow(&lia()),
            "counted by its keys when the spool opened"
        );
        let drainer = tokio::spawn(spool.clone().drain(publisher.clone(), stop.clone()));
        wait_until_drained(&spool).await;
        assert_eq!(
            fs::read_dir(dir.join("undecodable")).unwrap().count(),
            1,
            "the entry is kept aside"
        );
        assert!(
            !spool.must_follow(&lia()),
            "her next post goes to the broker, not behind an entry that is gone"
        );
        stop.cancel();
        let _ = drainer.await;
        let _ = connection.await;
        tear_down(&spool, &amqp, &dir).await;
    }

    #[test]
    fn the_people_waiting_give_their_table_back_as_the_spool_drains() {
        let people: Vec<Envelope> = (0..20_000)
            .map(|i| envelope_of(Some(&format!("person{i}@example.it")), None))
            .collect();
        let mut waiting = Waiting::default();
        for envelope in &people {
            waiting.add(envelope);
        }
        let grown = waiting.0.capacity();
        assert!(grown >= 20_000, "{grown}");
        let (gone, left) = people.split_at(19_900);
        for envelope in gone {
            waiting.remove(envelope);
        }
        assert!(
            waiting.0.capacity() <= WAITING_KEPT,
            "a table of {grown} slots kept {} for {} keys",
            waiting.0.capacity(),
            waiting.0.len()
        );
        assert!(
            left.iter().all(|envelope| waiting.holds(envelope)),
            "shrinking keeps every person still waiting"
        );
        assert!(!waiting.holds(&gone[0]));
        for envelope in left {
            waiting.remove(envelope);
        }
        assert!(waiting.0.is_empty());
    }

    #[tokio::test]
    async fn a_post_follows_the_spool_only_behind_its_own_person_or_a_failing_broker() {
        let dir = temp_dir("follow");
        let config = SpoolConfig::default();
        let lia = || envelope_of(Some("lia@example.it"), None);
        let lia_by_phone = || envelope_of(None, Some("+39 02 1234 5678"));
        let lia_by_both = || envelope_of(Some("lia@example.it"), Some("+39 02 1234 5678"));
        let ugo = || envelope_of(Some("ugo@example.it"), None);
        {
            let spool = Spool::open(&config, &dir).unwrap();
            spool.broker_failed();
            assert!(
                !spool.must_follow(&ugo()),
                "nothing waits: the post tries the broker, which may be back"
            );
            spool.broker_failing.store(false, Ordering::Release);
            spool.append(&lia_by_phone()).await.unwrap();
            assert!(spool.must_follow(&lia_by_phone()));
            assert!(
                spool.must_follow(&lia_by_both()),
                "the same person by another of her keys"
            );
            assert!(!spool.must_follow(&lia()), "no key in common");
            assert!(
                !spool.must_follow(&ugo()),
                "someone else goes to the broker"
            );
            spool.broker_failed();
            assert!(
                spool.must_follow(&ugo()),
                "everyone, while the broker fails"
            );
            spool.close().await;
        }
        // Reopened with the entry still there: its person still waits, nobody else does.
        let spool = Spool::open(&config, &dir).unwrap();
        assert_eq!(spool.depth().entries, 1);
        assert!(spool.must_follow(&lia_by_both()));
        assert!(!spool.must_follow(&ugo()));
        spool.close().await;
        drop(spool);
        fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn once_the_drainer_publishes_a_persons_entries_their_next_post_goes_to_the_broker() {
        let dir = temp_dir("drained-person");
        let (amqp, publisher, stop, connection) = connected_publisher();
        let spool = Spool::open(&SpoolConfig::default(), &dir).unwrap();
        let lia = || envelope_of(Some("lia@example.it"), Some("+39 02 1234 5678"));
        for _ in 0..3 {
            spool.append(&lia()).await.unwrap();
        }
        spool.broker_failed();
        assert!(spool.must_follow(&envelope_of(Some("ugo@example.it"), None)));
        let drainer = tokio::spawn(spool.clone().drain(publisher.clone(), stop.clone()));
        wait_until_drained(&spool).await;
        assert!(!spool.must_follow(&lia()), "nothing of hers waits any more");
        assert!(
            !spool.must_follow(&envelope_of(Some("ugo@example.it"), None)),
            "a confirm shows the broker is back"
        );
        stop.cancel();
        let _ = drainer.await;
        let _ = connection.await;
        tear_down(&spool, &amqp, &dir).await;
    }

    #[tokio::test]
    async fn a_drained_entry_reaches_its_persons_shard_as_it_was_spooled() {
        let dir = temp_dir("wire");
        let (amqp, publisher, stop, connection) = connected_publisher();
        let always = SpoolConfig {
            mode: SpoolMode::Always,
            ..SpoolConfig::default()
        };
        let spool = Spool::open(&always, &dir).unwrap();
        assert!(spool.takes_every_post());
        let lia = || envelope_of(Some("lia@example.it"), Some("+39 02 1234 5678"));
        // Lia three times between others; one lead is known by its inquiry alone.
        let mut sent = vec![lia(), envelope_of(Some("ugo@example.it"), None), lia()];
        sent.push(envelope_of(None, None));
        sent.push(lia());
        sent.extend((1..8).map(crate::testing::envelope));
        for envelope in &sent {
            spool.append(envelope).await.unwrap();
        }
        let drainer = tokio::spawn(spool.clone().drain(publisher.clone(), stop.clone()));
        wait_until_drained(&spool).await;

        let topology = publisher.topology().clone();
        let broker = crate::testing::connect().await;
        let mut arrived = Vec::new();
        for shard in 0..topology.shards() {
            for delivery in
                crate::testing::drain_deliveries(&broker, &topology.shard_queue(shard)).await
            {
                let content_type = delivery.properties.content_type().clone();
                let carried = crate::envelope::decode_message(
                    content_type.as_ref().map(|t| t.as_str()),
                    &delivery.data,
                )
                .unwrap();
                for one in carried {
                    let crate::envelope::Carried::Envelope(envelope) = one else {
                        panic!("every drained entry decodes");
                    };
                    arrived.push((shard, *envelope));
                }
            }
        }
        assert_eq!(arrived.len(), sent.len(), "each entry published once");
        for envelope in &sent {
            let (shard, got) = arrived
                .iter()
                .find(|(_, got)| got.lead.inquiry.id == envelope.lead.inquiry.id)
                .expect("every entry arrived");
            assert_eq!(got, envelope, "published as it was spooled");
            assert_eq!(
                *shard,
                crate::routing::shard_for(&envelope.lead.primary_key(), topology.shards()),
                "on its person's shard"
            );
        }
        let lias: Vec<_> = arrived
            .iter()
            .filter(|(_, got)| {
                got.lead.email.as_ref().map(|e| e.as_str()) == Some("lia@example.it")
            })
            .map(|(_, got)| got.lead.inquiry.id)
            .collect();
        let posted: Vec<_> = sent
            .iter()
            .filter(|e| e.lead.email.as_ref().map(|e| e.as_str()) == Some("lia@example.it"))
            .map(|e| e.lead.inquiry.id)
            .collect();
        assert_eq!(lias, posted, "one person's entries in the order spooled");
        let _ = broker.close(200, "done".into()).await;
        stop.cancel();
        let _ = drainer.await;
        let _ = connection.await;
        tear_down(&spool, &amqp, &dir).await;
    }

    #[tokio::test]
    async fn the_drained_position_reaches_the_disk_soon_after_the_spool_empties() {
        let dir = temp_dir("saved-position");
        let (amqp, publisher, stop, connection) = connected_publisher();
        let spool = Spool::open(&SpoolConfig::default(), &dir).unwrap();
        for i in 0..5 {
            spool.append(&crate::testing::envelope(i)).await.unwrap();
        }
        let before = read_position(&dir).unwrap();
        let drainer = tokio::spawn(spool.clone().drain(publisher.clone(), stop.clone()));
        wait_until_drained(&spool).await;
        let drained = spool.lock().drained;
        assert_ne!(before, Some(drained), "the drainer moved on");
        // Saving is deferred while entries keep coming, never skipped once they stop: a
        // restart must not publish everything again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while read_position(&dir).unwrap() != Some(drained) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the position on disk caught up with {drained:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        let _ = drainer.await;
        let _ = connection.await;
        tear_down(&spool, &amqp, &dir).await;
    }

    #[tokio::test]
    async fn a_caught_up_drainer_lets_posts_gather_but_publishes_a_lone_post_at_once() {
        let dir = temp_dir("linger");
        let (amqp, publisher, stop, connection) = connected_publisher();
        while !publisher.is_ready().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let linger = Duration::from_millis(1_000);
        let always = SpoolConfig {
            mode: SpoolMode::Always,
            drain_linger_ms: linger.as_millis() as u64,
            ..SpoolConfig::default()
        };
        let spool = Spool::open(&always, &dir).unwrap();
        let drainer = tokio::spawn(spool.clone().drain(publisher.clone(), stop.clone()));

        // The journal's first write creates its segment (slow on some disks): done
        // before the timed part, then a quiet spell longer than the linger.
        spool.append(&crate::testing::envelope(0)).await.unwrap();
        wait_until_drained(&spool).await;
        tokio::time::sleep(linger + Duration::from_millis(100)).await;

        // The first post after a quiet spell does not wait for the linger.
        let lone_sent = tokio::time::Instant::now();
        spool.append(&crate::testing::envelope(1)).await.unwrap();
        let lone_written = tokio::time::Instant::now();
        while !spool.is_empty() {
            assert!(
                lone_written.elapsed() < linger / 2,
                "a lone post was published at once"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Posts right behind it wait for the next pass, which comes no sooner than the
        // linger after the pass that published it (that pass began after it was sent).
        let spool_ref = &spool;
        join_all((2..10).map(|i| async move {
            spool_ref
                .append(&crate::testing::envelope(i))
                .await
                .unwrap();
        }))
        .await;
        let mut looked = 0;
        while lone_sent.elapsed() < linger * 9 / 10 {
            assert_eq!(
                spool.depth().entries,
                8,
                "the posts gather until the next pass"
            );
            looked += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(looked > 0, "the posts were written within the linger");
        wait_until_drained(&spool).await;
        stop.cancel();
        let _ = drainer.await;
        let _ = connection.await;
        tear_down(&spool, &amqp, &dir).await;

        // Entries spooled because the broker failed leave as soon as it is back.
        let fallback_dir = temp_dir("linger-fallback");
        let fallback = Spool::open(
            &SpoolConfig {
                drain_linger_ms: 1_000,
                ..SpoolConfig::default()
            },
            &fallback_dir,
        )
        .unwrap();
        assert_eq!(fallback.linger, Duration::ZERO);
        fallback.close().await;
        let _ = fs::remove_dir_all(&fallback_dir);
    }

    #[test]
    fn the_config_names_its_problems() {
        let bad = SpoolConfig {
            after_ms: 0,
            segment_bytes: 10,
            max_bytes: 5,
            drain_linger_ms: 5_000,
            ..SpoolConfig::default()
        };
        let keys: Vec<_> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["after_ms", "segment_bytes", "max_bytes", "drain_linger_ms"]
        );
        let always_without_spool = SpoolConfig {
            enabled: false,
            mode: SpoolMode::Always,
            ..SpoolConfig::default()
        };
        let keys: Vec<_> = always_without_spool
            .problems()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["mode"]);
        assert!(SpoolConfig::default().problems().is_empty());
        let named = SpoolConfig {
            dir: Some(PathBuf::from("/srv/spool")),
            ..SpoolConfig::default()
        };
        assert_eq!(named.dir_for("0.0.0.0:8080"), PathBuf::from("/srv/spool"));
        let derived = SpoolConfig::default().dir_for("[::1]:8080");
        assert!(
            derived.ends_with("spool/---1--8080"),
            "{}",
            derived.display()
        );
    }
}
