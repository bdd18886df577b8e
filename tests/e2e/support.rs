//! A daemon per test: fresh database, fresh AMQP prefix, random port, real binary.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection, PgPool};

/// The server the tests create their databases on.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The broker the tests use.
pub fn amqp_url() -> String {
    std::env::var("LEADPIPE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn database_url(name: &str) -> String {
    let admin = admin_database_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The default phone region a form name implies (`it-*` IT, `pl-*` PL, `vn-*` VN, `en-*` US).
pub fn region_of(form: &str) -> &'static str {
    match form.split('-').next() {
        Some("it") => "IT",
        Some("pl") => "PL",
        Some("vn") => "VN",
        _ => "US",
    }
}

/// One `[[forms]]` block with the honeypot the corpora use.
pub fn form_block(name: &str) -> String {
    format!(
        "[[forms]]\nname = \"{name}\"\nsource = \"web-{name}\"\ndefault_region = \"{}\"\nhoneypot = \"website\"\n\n",
        region_of(name)
    )
}

/// The forms every test daemon knows, plus those a corpus file names.
pub fn standard_forms(extra: &BTreeSet<String>) -> String {
    let mut names: BTreeSet<String> = [
        "it-contatti",
        "it-preventivo",
        "it-richiamami",
        "pl-kontakt",
        "pl-oferta",
        "vn-lien-he",
        "vn-bao-gia",
        "en-contact",
        "en-demo-request",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend(extra.iter().cloned());
    names.iter().map(|n| form_block(n)).collect()
}

/// A running daemon and everything it owns.
pub struct TestDaemon {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin token.
    pub admin: String,
    /// The test database's URL.
    pub db_url: String,
    db_name: String,
    /// The AMQP prefix.
    pub prefix: String,
    /// The config file.
    pub config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Environment overrides for the next launch.
    pub env: Vec<(String, String)>,
    /// An HTTP client.
    pub http: reqwest::Client,
}

/// Options for a test daemon.
#[derive(Default)]
pub struct Options {
    /// Extra config appended to the file (more `[[forms]]`, `[intake]`, ...).
    pub extra_config: String,
    /// Form names to declare beyond the standard ones.
    pub forms: BTreeSet<String>,
    /// Replace the AMQP URL (e.g. with an unreachable one).
    pub amqp_url: Option<String>,
    /// Do not wait for /readyz (the broker or database is meant to be down).
    pub no_wait_ready: bool,
    /// Extra `[http]` keys; a `shutdown_grace_secs` here replaces the default of 20.
    pub http: String,
}

impl TestDaemon {
    /// A daemon with the standard forms, started and ready.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A daemon with options, started.
    pub async fn start_with(options: Options) -> Self {
        let wait_ready = !options.no_wait_ready;
        let mut daemon = Self::prepare_with(options).await;
        daemon.launch(wait_ready).await;
        daemon
    }

    /// A daemon's database, prefix and config file, with no process started (a test that
    /// runs the daemon in its own process uses them).
    pub async fn prepare_with(options: Options) -> Self {
        let db_name = format!("lp_e2e_{}", token());
        let mut admin = PgConnection::connect(&admin_database_url())
            .await
            .expect("connect to PostgreSQL (is it running? scripts/services.sh starts it)");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;

        let prefix = format!("lpt{}", token());
        let port = free_port();
        let admin_token = format!("test-admin-{}", token());
        let dir = std::env::temp_dir().join("leadpipe-tests");
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let config_path = dir.join(format!("{prefix}.toml"));
        let log_path = dir.join(format!("{prefix}.log"));
        let db_url = database_url(&db_name);
        let http = if options.http.contains("shutdown_grace_secs") {
            options.http
        } else {
            format!("shutdown_grace_secs = 20\n{}", options.http)
        };
        // Each daemon its own spool, unless the test configures the spool itself.
        let spool = if options.extra_config.contains("[spool]") {
            String::new()
        } else {
            format!("[spool]\ndir = \"{}\"\n\n", spool_dir(&prefix).display())
        };
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n\n[database]\nurl = \"{db_url}\"\nmax_connections = 4\n\n\
             [amqp]\nurl = \"{}\"\nprefix = \"{prefix}\"\nshards = 2\npublisher_channels = 2\n\n\
             [api]\nadmin_token = \"{admin_token}\"\n\n{spool}{}{}",
            options.amqp_url.unwrap_or_else(amqp_url),
            standard_forms(&options.forms),
            options.extra_config,
        );
        std::fs::write(&config_path, config).expect("write the config");
        Self {
            base: format!("http://127.0.0.1:{port}"),
            admin: admin_token,
            db_url,
            db_name,
            prefix,
            config_path,
            log_path,
            child: None,
            env: Vec::new(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Starts the process and waits for `/healthz` (and `/readyz` when asked).
    pub async fn launch(&mut self, wait_ready: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_leadpipe"));
        command
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("start leadpipe"));
        let path = if wait_ready { "/readyz" } else { "/healthz" };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "leadpipe exited at start with {status}; log: {}",
                    self.log()
                );
            }
            if let Ok(r) = self.http.get(format!("{}{path}", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "leadpipe did not answer {path} within 60 s; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Takes the process out of the handle (to signal and reap it elsewhere).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// POSTs a form body as a client would: no header the caller did not give.
    pub async fn post_form(
        &self,
        form: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .http
            .post(format!("{}/v1/intake/forms/{form}", self.base))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("the daemon answers");
        Response::read(response).await
    }

    /// GET with the admin token.
    pub async fn get(&self, path: &str) -> Response {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("the daemon answers");
        Response::read(response).await
    }

    /// POST a JSON body with the admin token.
    pub async fn post_json(&self, path: &str, body: Value) -> Response {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("the daemon answers");
        Response::read(response).await
    }

    /// Every lead matching `query`, following cursors.
    pub async fn leads(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_owned();
            if let Some(c) = &cursor {
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(&format!("cursor={c}"));
            }
            let page = self.get(&format!("/v1/leads?{q}")).await;
            assert_eq!(page.status, 200, "GET /v1/leads?{q}: {}", page.text());
            let json = page.json();
            out.extend(json["items"].as_array().cloned().unwrap_or_default());
            match json["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return out,
            }
        }
    }

    /// Waits until at least `n` leads match `query`, then returns them.
    pub async fn wait_for_leads(&self, query: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let leads = self.leads(query).await;
            if leads.len() >= n || Instant::now() > deadline {
                return leads;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// A pool on the test database, for checking what is really stored.
    pub async fn db(&self) -> PgPool {
        PgPool::connect(&self.db_url)
            .await
            .expect("connect to the test database")
    }

    /// Waits until the consumers have stored `n` inquiries (leads, duplicates and spam).
    pub async fn wait_for_inquiries(&self, n: i64, timeout: Duration) -> i64 {
        let pool = self.db().await;
        let deadline = Instant::now() + timeout;
        loop {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM inquiries")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            if count >= n || Instant::now() > deadline {
                pool.close().await;
                return count;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
        let db_name = self.db_name.clone();
        let prefix = self.prefix.clone();
        let config_path = self.config_path.clone();
        // Drop runs inside the test's runtime; clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(cleanup(&db_name, &prefix, &config_path));
        });
        let _ = cleanup.join();
        let _ = std::fs::remove_dir_all(spool_dir(&self.prefix));
    }
}

/// The spool directory of the test daemon with this AMQP prefix.
pub fn spool_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir()
        .join("leadpipe-tests")
        .join(format!("{prefix}.spool"))
}

async fn cleanup(db_name: &str, prefix: &str, config_path: &Path) {
    if let Ok(mut admin) = PgConnection::connect(&admin_database_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
    if let Ok(conn) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await {
        if let Ok(channel) = conn.create_channel().await {
            // Shard counts in tests never exceed 8.
            let mut queues: Vec<String> = (0..8).map(|n| format!("{prefix}.shard.{n}")).collect();
            queues.push(format!("{prefix}.dead"));
            queues.push(format!("{prefix}.parked"));
            for queue in queues {
                // A missing queue closes the channel; use a fresh one each time.
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for exchange in [format!("{prefix}.intake"), format!("{prefix}.dead")] {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let _ = conn.close(200, "test cleanup".into()).await;
    }
    let _ = std::fs::remove_file(config_path);
}

/// An HTTP answer, read whole.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// Reads a whole answer.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Self {
            status,
            headers,
            body,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts a JSON error body with the given code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let json = self.json();
        assert_eq!(json["error"], code, "body: {}", self.text());
        assert!(
            json["message"].as_str().is_some_and(|m| m.len() > 10),
            "a useful message: {}",
            self.text()
        );
    }
}

/// Writes a file for a test and returns its path.
/// `leadpipe check-config` on a file holding the database, broker and API sections and
/// then `sections`: (passed, what it printed).
pub fn check_config(sections: &str) -> (bool, String) {
    let file = format!(
        "[http]\nlisten = \"127.0.0.1:8080\"\n[database]\n\
         url = \"postgres://postgres@127.0.0.1:5432/leadpipe\"\n[amqp]\n\
         url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nprefix = \"leadpipe\"\n[api]\n\
         admin_token = \"a-long-random-admin-token\"\n\n{sections}"
    );
    check_config_file(&file, &[])
}

/// `leadpipe check-config` on a file holding `file`, with `env` set: (passed, what it
/// printed).
pub fn check_config_file(file: &str, env: &[(&str, &str)]) -> (bool, String) {
    let path = temp_file("check-config.toml", file.as_bytes());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args(["check-config", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("run leadpipe check-config");
    let _ = std::fs::remove_file(path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join("leadpipe-tests");
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(format!("{}-{name}", token()));
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(contents).expect("write");
    path
}

/// A connection to the test broker.
pub async fn amqp_connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ (is it running? scripts/services.sh starts it)")
}

/// Ready messages and consumers of `queue`, or None when it does not exist.
pub async fn queue_counts(queue: &str) -> Option<(u32, u32)> {
    let connection = amqp_connect().await;
    let channel = connection.create_channel().await.ok()?;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
        .ok()
        .map(|q| (q.message_count(), q.consumer_count()));
    let _ = connection.close(200, "counted".into()).await;
    declared
}

/// Publishes `payload` to the intake exchange for shard `shard` and waits for the confirm.
pub async fn publish_raw(prefix: &str, shard: u16, payload: &[u8]) {
    publish_raw_with(
        prefix,
        shard,
        payload,
        lapin::BasicProperties::default().with_delivery_mode(2),
    )
    .await
}

/// Publishes `payload` with `properties` to a shard queue, as intake would, with a confirm.
pub async fn publish_raw_with(
    prefix: &str,
    shard: u16,
    payload: &[u8],
    properties: lapin::BasicProperties,
) {
    let amqp = amqp_connect().await;
    let channel = amqp.create_channel().await.expect("a channel");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let confirmation = channel
        .basic_publish(
            format!("{prefix}.intake").as_str().into(),
            format!("shard.{shard}").as_str().into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..lapin::options::BasicPublishOptions::default()
            },
            payload,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        matches!(confirmation, lapin::Confirmation::Ack(None)),
        "the shard queue took the message: {confirmation:?}"
    );
    let _ = amqp.close(200, "published".into()).await;
}

/// Waits until `queue` holds `n` ready messages.
pub async fn wait_for_ready(queue: &str, n: u32, timeout: Duration) -> Option<(u32, u32)> {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = queue_counts(queue).await;
        if counts.is_some_and(|(ready, _)| ready == n) || Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl TestDaemon {
    /// Any request with `token` as the bearer (none when `None`) and an optional JSON body.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Response::read(request.send().await.expect("the daemon answers")).await
    }
}
