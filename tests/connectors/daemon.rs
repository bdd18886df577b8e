//! Daemons for the connector tests: this test binary started again in the daemon role
//! (with the test connector in its list), on a database and AMQP prefix that several
//! daemons can share.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection, PgPool};

/// Set in a child's environment: run the daemon instead of the tests.
pub const DAEMON_ROLE: &str = "LEADPIPE_TEST_CONNECTOR_DAEMON";

fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn amqp_url() -> String {
    std::env::var("LEADPIPE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A database and an AMQP prefix, dropped afterwards.
pub struct World {
    db_name: String,
    /// The database's URL.
    pub db_url: String,
    /// The AMQP prefix.
    pub prefix: String,
    /// The admin token.
    pub admin: String,
}

impl World {
    /// A fresh database and prefix.
    pub async fn new() -> Self {
        let db_name = format!("lp_conn_{}", token());
        let mut admin = PgConnection::connect(&admin_database_url())
            .await
            .expect("connect to PostgreSQL (is it running? scripts/services.sh starts it)");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let admin_url = admin_database_url();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Self {
            db_url: format!("{base}/{db_name}"),
            db_name,
            prefix: format!("lpc{}", token()),
            admin: format!("test-admin-{}", token()),
        }
    }

    /// A pool on the database.
    pub async fn db(&self) -> PgPool {
        PgPool::connect(&self.db_url)
            .await
            .expect("connect to the test database")
    }

    /// The committed cursor of a test feed's source.
    pub async fn cursor(&self, source: &str) -> Option<u64> {
        let pool = self.db().await;
        let cursor: Option<Value> =
            sqlx::query_scalar("SELECT cursor FROM connector_checkpoints WHERE source_key = $1")
                .bind(format!("chat:{source}"))
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
        pool.close().await;
        cursor.and_then(|c| c.as_u64())
    }

    /// The stored inquiries of a source, by external id, with how often each is stored.
    pub async fn stored(&self, source: &str) -> Vec<(u64, i64)> {
        let pool = self.db().await;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT external_id, count(*) FROM inquiries WHERE source = $1 GROUP BY external_id",
        )
        .bind(source)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        pool.close().await;
        let mut out: Vec<(u64, i64)> = rows
            .into_iter()
            .filter_map(|(id, n)| Some((id.parse().ok()?, n)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Waits until `n` inquiries of `source` are stored.
    pub async fn wait_stored(&self, source: &str, n: usize, bound: Duration) -> Vec<(u64, i64)> {
        let deadline = Instant::now() + bound;
        loop {
            let stored = self.stored(source).await;
            if stored.len() >= n || Instant::now() > deadline {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let (db_name, prefix) = (self.db_name.clone(), self.prefix.clone());
        // Drop runs inside the test's runtime; clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
                if let Ok(conn) =
                    Connection::connect(&amqp_url(), ConnectionProperties::default()).await
                {
                    if let Ok(channel) = conn.create_channel().await {
                        for queue in [
                            format!("{prefix}.shard.0"),
                            format!("{prefix}.shard.1"),
                            format!("{prefix}.dead"),
                            format!("{prefix}.parked"),
                        ] {
                            let _ = channel
                                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                        for exchange in [format!("{prefix}.intake"), format!("{prefix}.dead")] {
                            let _ = channel
                                .exchange_delete(
                                    exchange.as_str().into(),
                                    ExchangeDeleteOptions::default(),
                                )
                                .await;
                        }
                    }
                    let _ = conn.close(200, "test cleanup".into()).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// One `[[test_feeds]]` entry.
pub struct FeedEntry<'a> {
    /// Its source.
    pub source: &'a str,
    /// The feed's URL.
    pub url: &'a str,
    /// Items per request.
    pub batch: u32,
    /// Pause after each confirmed item, in milliseconds.
    pub publish_delay_ms: u64,
}

/// A running daemon.
pub struct Daemon {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    admin: String,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Daemon {
    /// Starts a daemon on `world` with one form and `feed`, and waits until it is ready.
    pub async fn start(world: &World, feed: &FeedEntry<'_>) -> Self {
        let entry = format!(
            "[[test_feeds]]\nsource = \"{}\"\nurl = \"{}\"\nbatch = {}\npublish_delay_ms = {}\n",
            feed.source, feed.url, feed.batch, feed.publish_delay_ms,
        );
        Self::start_with(world, &entry).await
    }

    /// Starts a daemon on `world` with one form and the configuration text `extra`
    /// (connector sections), and waits until it is ready.
    pub async fn start_with(world: &World, extra: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join("leadpipe-tests");
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let name = format!("{}-{port}", world.prefix);
        let config_path = dir.join(format!("{name}.toml"));
        let log_path = dir.join(format!("{name}.log"));
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = 20\n\n\
             [database]\nurl = \"{}\"\nmax_connections = 4\n\n\
             [amqp]\nurl = \"{}\"\nprefix = \"{}\"\nshards = 2\npublisher_channels = 2\n\n\
             [api]\nadmin_token = \"{}\"\n\n\
             [[forms]]\nname = \"en-contact\"\nsource = \"web-en-contact\"\ndefault_region = \"US\"\n\n{}",
            world.db_url,
            amqp_url(),
            world.prefix,
            world.admin,
            extra,
        );
        std::fs::write(&config_path, config).expect("write the config");
        let mut daemon = Self {
            base: format!("http://127.0.0.1:{port}"),
            admin: world.admin.clone(),
            config_path,
            log_path,
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        daemon.launch().await;
        daemon
    }

    /// Starts the process (again) and waits for `/readyz`.
    pub async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("a log file");
        let child = Command::new(std::env::current_exe().expect("this test binary"))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env(DAEMON_ROLE, "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "the daemon exited at start with {status}; log: {}",
                    self.log()
                );
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon was not ready within 60 s; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a one-off command of the daemon's binary (`mailbox test NAME`) on its
    /// configuration and returns its exit success and its output.
    pub fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(std::env::current_exe().expect("this test binary"))
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .env(DAEMON_ROLE, "1")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run a command");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The process id.
    pub fn pid(&self) -> String {
        self.child
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_default()
    }

    /// The last lines of the daemon's log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Whether the daemon's whole log (every run of it) contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log_path).is_ok_and(|text| text.contains(needle))
    }

    /// `/readyz` as JSON.
    pub async fn readyz(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .expect("the daemon answers");
        r.json().await.expect("JSON")
    }

    /// The `/readyz` entry of the pull connector named `name`.
    pub async fn connector(&self, name: &str) -> Value {
        let ready = self.readyz().await;
        ready["connectors"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["connector"] == name).cloned())
            .unwrap_or_else(|| panic!("/readyz lists no connector {name}: {ready}"))
    }

    /// Waits until the connector named `name` is in `state`; false at the bound.
    pub async fn wait_state(&self, name: &str, state: &str, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.connector(name).await["state"] == state {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("the daemon answers")
            .text()
            .await
            .expect("text")
    }

    /// SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit; `None` at the bound (then it is killed).
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// The value of a metric line with all of `labels`, summed over matching lines.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter(|line| line[name.len()..].starts_with('{'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
