//! A list of broker URLs: the daemon connects to the first node that answers, and the
//! configuration takes `url` or `urls`, never both.

use std::time::Duration;

use crate::support::{Options, TestDaemon, amqp_url, check_config_file, free_port};

const URLENCODED: &str = "application/x-www-form-urlencoded";

/// Replaces the single broker URL of the daemon's config file with `urls`.
fn use_urls(daemon: &TestDaemon, urls: &[String]) {
    let config = std::fs::read_to_string(&daemon.config_path).expect("the config file");
    let single = format!("url = \"{}\"\n", amqp_url());
    assert!(config.contains(&single), "the config names the broker once");
    let list = urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = config.replacen(&single, &format!("urls = [{list}]\n"), 1);
    std::fs::write(&daemon.config_path, config).expect("rewrite the config file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_first_node_is_passed_over_and_posts_are_stored() {
    let closed = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let mut daemon = TestDaemon::prepare_with(Options::default()).await;
    use_urls(&daemon, &[closed, amqp_url()]);
    daemon.launch(true).await;

    let ready = daemon.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready", "{}", ready.text());
    assert_eq!(ready.json()["broker"], "up");

    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            "name=Ada+Failover&email=ada.failover%40example.com",
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}\n{}", r.text(), daemon.log());
    let leads = daemon
        .wait_for_leads(
            "email=ada.failover%40example.com",
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(leads.len(), 1, "the lead is stored once: {}", daemon.log());
    let spooled: i64 = {
        let metrics = daemon.get("/metrics").await.text();
        metrics
            .lines()
            .filter(|l| l.starts_with("leadpipe_inquiries_spooled_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
            .sum()
    };
    assert_eq!(spooled, 0, "the post went to the broker, not to the spool");
    assert!(
        daemon.log().contains("trying the next"),
        "the unreachable node was tried first: {}",
        daemon.log()
    );
}

fn check_config(amqp: &str, env: &[(&str, &str)]) -> (bool, String) {
    let file = format!(
        "[http]\nlisten = \"127.0.0.1:8080\"\n[database]\n\
         url = \"postgres://postgres@127.0.0.1:5432/leadpipe\"\n[amqp]\n{amqp}\
         prefix = \"leadpipe\"\n[api]\nadmin_token = \"a-long-random-admin-token\"\n"
    );
    check_config_file(&file, env)
}

#[test]
fn the_broker_is_named_by_url_or_by_urls_and_never_by_both() {
    let (ok, text) = check_config("url = \"amqp://127.0.0.1:5672/%2f\"\n", &[]);
    assert!(ok, "{text}");
    let (ok, text) = check_config(
        "urls = [\"amqp://127.0.0.1:5681/%2f\", \"amqp://127.0.0.1:5682/%2f\"]\n",
        &[],
    );
    assert!(ok, "{text}");

    let (ok, text) = check_config(
        "url = \"amqp://127.0.0.1:5672/%2f\"\nurls = [\"amqp://127.0.0.1:5681/%2f\"]\n",
        &[],
    );
    assert!(!ok && text.contains("amqp.urls"), "{text}");
    let (ok, text) = check_config("", &[]);
    assert!(
        !ok && text.contains("amqp.url") && text.contains("missing"),
        "{text}"
    );
    let (ok, text) = check_config("urls = []\n", &[]);
    assert!(
        !ok && text.contains("amqp.urls") && text.contains("empty"),
        "{text}"
    );
    let (ok, text) = check_config(
        "urls = [\"amqp://127.0.0.1:5681/%2f\", \"http://127.0.0.1:5682/\"]\n",
        &[],
    );
    assert!(!ok && text.contains("entry 2"), "{text}");

    // The environment form: a comma-separated list.
    let (ok, text) = check_config(
        "",
        &[(
            "LEADPIPE__AMQP__URLS",
            "amqp://127.0.0.1:5681/%2f,amqp://127.0.0.1:5682/%2f",
        )],
    );
    assert!(ok, "{text}");
    let (ok, text) = check_config(
        "",
        &[(
            "LEADPIPE__AMQP__URLS",
            "amqp://127.0.0.1:5681/%2f,amqp:/broken",
        )],
    );
    assert!(!ok && text.contains("entry 2"), "{text}");
}

/// A RabbitMQ node of this test's own (its alarms must not reach anyone else's tests),
/// stopped and deleted on drop.
struct PrivateBroker {
    node: String,
    port: u16,
    dir: std::path::PathBuf,
    /// The script that runs the Erlang VM.
    server: Option<std::process::Child>,
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

impl PrivateBroker {
    /// Starts a node and waits until it takes AMQP connections; `None` (with the reason
    /// printed) when RabbitMQ is not installed here.
    async fn start() -> Option<Self> {
        if !std::path::Path::new(RABBIT_BIN)
            .join("rabbitmq-server")
            .exists()
        {
            eprintln!("skipped: rabbitmq-server is not installed ({RABBIT_BIN}/rabbitmq-server)");
            return None;
        }
        let token = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let node = format!("lpblk{token}@localhost");
        let port = free_port();
        let dir = std::env::temp_dir()
            .join("leadpipe-tests")
            .join(format!("rabbit-{token}"));
        std::fs::create_dir_all(dir.join("home")).expect("the node's directory");
        let cookie = dir.join("home/.erlang.cookie");
        std::fs::write(&cookie, &token).expect("a cookie");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .expect("cookie permissions");
        std::fs::write(dir.join("enabled_plugins"), "[].").expect("no plugins");
        std::fs::write(dir.join("rabbitmq-env.conf"), "").expect("an empty env file");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )
        .expect("a config file");
        let mut broker = Self {
            node,
            port,
            dir,
            server: None,
        };
        let console = std::fs::File::create(broker.dir.join("console.log")).expect("a log");
        let server = broker
            .command("rabbitmq-server")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .stdout(console.try_clone().expect("log handle"))
            .stderr(console)
            .spawn()
            .expect("start rabbitmq-server");
        broker.server = Some(server);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private RabbitMQ node did not listen within 120 s; see {}",
                broker.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some(broker)
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut command =
            std::process::Command::new(std::path::Path::new(RABBIT_BIN).join(program));
        command
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("rabbitmq.pid"));
        command
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n NODE args...`, which must succeed.
    fn ctl(&self, args: &[&str]) {
        let out = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .arg("stop")
            .output();
        // The Erlang VM writes its own PID; the script that started it may be gone.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("rabbitmq.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .output();
        }
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn metric(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Posts one more form (the `posted`th, with an email of its own) and expects its 202.
async fn post_one(daemon: &TestDaemon, posted: &mut usize) {
    *posted += 1;
    let r = daemon
        .post_form(
            "en-contact",
            Some(URLENCODED),
            format!("name=Blocked+{posted}&email=blocked{posted}%40example.com"),
            &[],
        )
        .await;
    assert_eq!(r.status, 202, "{}\n{}", r.text(), daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_spools_at_once_while_the_broker_blocks_publishing() {
    let Some(broker) = PrivateBroker::start().await else {
        return;
    };
    let mut daemon = TestDaemon::prepare_with(Options {
        amqp_url: Some(broker.url()),
        ..Options::default()
    })
    .await;
    daemon
        .env
        .push(("LEADPIPE__SPOOL__AFTER_MS".into(), "3000".into()));
    daemon.launch(true).await;

    let mut posted = 0;
    post_one(&daemon, &mut posted).await;

    // RabbitMQ blocks a connection when it next publishes during the alarm: that post
    // waits for its confirm until spool.after_ms and is spooled.
    broker.ctl(&["set_vm_memory_high_watermark", "0.00001"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ready = loop {
        post_one(&daemon, &mut posted).await;
        let ready = daemon.get("/readyz").await;
        if ready.json()["broker"] == "blocked" {
            break ready;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz reports the blocked broker: {}\n{}",
            ready.text(),
            daemon.log()
        );
    };
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["status"], "degraded", "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("blocked publishing") && reason.contains("spool"),
        "{body}"
    );

    // New posts queue behind the spooled one, and every publish (the drainer's) fails as
    // blocked at once instead of waiting for a confirm that cannot come.
    for _ in 0..5 {
        post_one(&daemon, &mut posted).await;
    }
    let metrics = daemon.get("/metrics").await.text();
    assert_eq!(
        metric(&metrics, "leadpipe_broker_blocked "),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "leadpipe_inquiries_spooled_total") >= 5.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "leadpipe_publish_failures_total{reason=\"blocked\"}"
        ) >= 1.0,
        "{metrics}"
    );

    broker.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let leads = daemon
        .wait_for_leads("", posted, Duration::from_secs(60))
        .await;
    let mut emails: Vec<String> = leads
        .iter()
        .map(|l| l["email"].as_str().unwrap_or_default().to_owned())
        .collect();
    emails.sort();
    let mut expected: Vec<String> = (1..=posted)
        .map(|i| format!("blocked{i}@example.com"))
        .collect();
    expected.sort();
    assert_eq!(emails, expected, "every post is stored once");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = daemon.get("/readyz").await;
        if ready.json()["status"] == "ready" {
            assert_eq!(ready.json()["broker"], "up");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz is ready again once the alarm cleared and the spool drained: {}",
            ready.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
