//! The configuration contract: `check-config` lists every problem with its key path.

use std::process::Command;

use crate::support::temp_file;

fn check_config(path: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadpipe"));
    command.args(["check-config", "--config"]).arg(path);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run leadpipe check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const CONTRACT: &str = r#"
[http]
listen = "127.0.0.1:8080"
[database]
url = "postgres://postgres@127.0.0.1:5432/leadpipe"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "leadpipe"
[api]
admin_token = "change-me-please"
[[forms]]
name = "it-contatti"
source = "website-it"
default_region = "IT"
honeypot = "website"
"#;

#[test]
fn the_documented_contract_and_the_example_file_pass() {
    let contract = temp_file("contract.toml", CONTRACT.as_bytes());
    let (ok, text) = check_config(&contract, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("Configuration OK"), "{text}");
    let _ = std::fs::remove_file(contract);

    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/leadpipe.example.toml");
    let (ok, text) = check_config(&example, &[]);
    assert!(ok, "{text}");
}

#[test]
fn every_problem_is_reported_with_its_key_and_the_exit_code_is_non_zero() {
    let bad = format!(
        "{CONTRACT}\n[http_typo]\nlisten = \"x\"\n\n[[forms]]\nname = \"pl kontakt\"\nsource = \"\"\ndefault_region = \"XX\"\ncolour = \"red\"\n"
    )
    .replace("prefix = \"leadpipe\"", "prefix = \"lead pipe\"\nshards = 0");
    let path = temp_file("bad.toml", bad.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    let _ = std::fs::remove_file(path);
    assert!(!ok, "a broken file must fail: {text}");
    for key in [
        "http_typo",
        "forms[1].colour",
        "forms[1].name",
        "forms[1].source",
        "forms[1].default_region",
        "amqp.prefix",
        "amqp.shards",
    ] {
        assert!(text.contains(key), "no problem reported for {key}:\n{text}");
    }
}

#[test]
fn matching_entries_are_checked_with_their_key() {
    let bad = format!(
        "{CONTRACT}\n[matching]\nplaceholder_emails = [\"reception\"]\nrole_mailboxes = [\"ufficio\"]\nkeep_emails = [\"hello@\"]\nsocial_domains = [\"facebook\"]\nhosting_domains = [\"webnode.*\"]\ncolour = \"red\"\n"
    );
    let path = temp_file("matching.toml", bad.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    let _ = std::fs::remove_file(path);
    assert!(!ok, "bad [matching] entries must fail: {text}");
    for key in [
        "matching.placeholder_emails[0]",
        "matching.keep_emails[0]",
        "matching.social_domains[0]",
        "matching.colour",
    ] {
        assert!(text.contains(key), "no problem reported for {key}:\n{text}");
    }
    for key in ["matching.role_mailboxes", "matching.hosting_domains"] {
        assert!(!text.contains(key), "{key} is valid:\n{text}");
    }
}

#[test]
fn environment_variables_override_the_file() {
    let path = temp_file("env.toml", CONTRACT.as_bytes());
    let (ok, text) = check_config(&path, &[("LEADPIPE__AMQP__PREFIX", "from env")]);
    assert!(!ok && text.contains("amqp.prefix"), "{text}");
    let (ok, text) = check_config(&path, &[("LEADPIPE__HTTP__LISTEN", "127.0.0.1:9999")]);
    assert!(ok && text.contains("127.0.0.1:9999"), "{text}");
    let (ok, text) = check_config(&path, &[("LEADPIPE__API__ADMIN_TOKEN", "short")]);
    assert!(!ok && text.contains("api.admin_token"), "{text}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_missing_file_is_named() {
    let (ok, text) = check_config(std::path::Path::new("/nonexistent/leadpipe.toml"), &[]);
    assert!(!ok);
    assert!(text.contains("/nonexistent/leadpipe.toml"), "{text}");
}
