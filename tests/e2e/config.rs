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
fn mail_settings_are_checked_with_their_keys() {
    let good = format!(
        "{CONTRACT}\n[smtp]\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nfrom = \"leads@example.com\"\n\n\
         [[acknowledgements]]\nsource = \"website-it\"\nsubject = \"Grazie {{name}}\"\nbody = \"Richiesta {{lead_id}}\"\n"
    );
    let path = temp_file("mail-good.toml", good.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    let _ = std::fs::remove_file(path);
    assert!(ok, "{text}");

    let bad = format!("{CONTRACT}\n[smtp]\nhost = \"\"\ntls = \"ssl\"\nfrom = \"leads\"\n");
    let path = temp_file("mail-bad-tls.toml", bad.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    let _ = std::fs::remove_file(path);
    assert!(!ok && text.contains("ssl"), "{text}");

    let bad = format!(
        "{CONTRACT}\n[smtp]\nhost = \"\"\nfrom = \"leads\"\npassword = \"x\"\ncolour = 1\n\n\
         [[acknowledgements]]\nsource = \"website-it\"\nsubject = \"Grazie {{nome}}\"\nbody = \"\"\n"
    );
    let path = temp_file("mail-bad.toml", bad.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    let _ = std::fs::remove_file(path);
    assert!(!ok, "{text}");
    for key in [
        "smtp.colour",
        "smtp.host",
        "smtp.from",
        "smtp.user",
        "acknowledgements[0].subject",
        "acknowledgements[0].body",
    ] {
        assert!(text.contains(key), "{key} not reported: {text}");
    }
    assert!(text.contains("{nome}"), "{text}");
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

#[test]
fn blank_secrets_are_errors_with_their_keys_and_serve_refuses_to_start() {
    let blank_file = temp_file("blank.secret", b"  \n");
    let empty_token_file = temp_file("empty.token", b"\n");
    let config = format!(
        "{}\n[[forms]]\nname = \"blank-inline\"\nsource = \"s\"\ndefault_region = \"IT\"\nsecret = \"   \"\n\n\
         [[forms]]\nname = \"blank-file\"\nsource = \"s\"\ndefault_region = \"IT\"\nsecret_file = \"{}\"\n",
        CONTRACT.replace(
            "admin_token = \"change-me-please\"",
            &format!("admin_token_file = \"{}\"", empty_token_file.display())
        ),
        blank_file.display()
    );
    let path = temp_file("blank-secrets.toml", config.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    assert!(!ok, "blank secrets must fail: {text}");
    for key in [
        "forms[1].secret",
        "forms[2].secret_file",
        "api.admin_token_file",
    ] {
        assert!(text.contains(key), "no problem reported for {key}:\n{text}");
    }

    let serve_config = config.replace("127.0.0.1:8080", "127.0.0.1:0");
    let serve_path = temp_file("blank-secrets-serve.toml", serve_config.as_bytes());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args(["serve", "--config"])
        .arg(&serve_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run leadpipe serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while serve.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if serve.try_wait().expect("wait").is_none() {
        let _ = serve.kill();
    }
    let serve = serve.wait_with_output().expect("the output");
    let said = String::from_utf8_lossy(&serve.stderr);
    assert!(
        !serve.status.success() && said.contains("forms[2].secret_file"),
        "serve must refuse to start: {said}"
    );
    let _ = std::fs::remove_file(serve_path);
    for file in [blank_file, empty_token_file, path] {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn the_example_admin_token_is_a_loud_warning_and_strict_checking_refuses_it() {
    let path = temp_file("example-token.toml", CONTRACT.as_bytes());
    let (ok, text) = check_config(&path, &[]);
    assert!(ok, "a warning, not an error: {text}");
    assert!(
        text.contains("WARNING") && text.contains("api.admin_token"),
        "a loud warning naming the key: {text}"
    );
    let strict = Command::new(env!("CARGO_BIN_EXE_leadpipe"))
        .args(["check-config", "--strict", "--config"])
        .arg(&path)
        .output()
        .expect("run leadpipe check-config --strict");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&strict.stdout),
        String::from_utf8_lossy(&strict.stderr)
    );
    assert!(
        !strict.status.success() && said.contains("api.admin_token"),
        "--strict refuses the example token: {said}"
    );
    // Any other token passes strict checking.
    let (ok, text) = check_config(
        &path,
        &[("LEADPIPE__API__ADMIN_TOKEN", "a-real-secret-token")],
    );
    assert!(ok && !text.contains("WARNING"), "{text}");
    let _ = std::fs::remove_file(path);
}
