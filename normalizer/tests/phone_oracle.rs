//! Phone numbers checked against libphonenumber itself.
//!
//! `scripts/phone_oracle.py` walks every leading block of the focus regions' numbering
//! plans, writes each number the ways people type it and records what libphonenumber (its
//! Python port, pinned to the metadata compiled into the `phonenumber` crate) makes of it.
//! Every such input must give exactly libphonenumber's E.164 number, or be refused where
//! libphonenumber refuses it. A different number, or a number where libphonenumber finds
//! none, is a wrong number and always a failure; a refusal where libphonenumber finds a
//! number is a failure unless it is one of the deliberate differences listed below.
//!
//! The committed table in `tests/fixtures/phones/` is checked on every run. Where the
//! pinned Python package is importable, the script also runs live on fresh numbers, and
//! the committed table must be exactly what the script generates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use normalizer::{Region, parse_phone};

/// The committed table, relative to the repository root.
const TABLE: &str = "tests/fixtures/phones/oracle.tsv";
/// The generator, relative to the repository root.
const SCRIPT: &str = "scripts/phone_oracle.py";
/// Numbers kept per leading block in a live run, as a multiple of the committed table's.
const LIVE_SCALE: u32 = 2;
/// Set to repeat a live run with the seed it printed.
const SEED_VARIABLE: &str = "LEADPIPE_PHONE_ORACLE_SEED";

/// One typed number and libphonenumber's verdict on it.
struct Case {
    region: String,
    input: String,
    /// The E.164 number libphonenumber gives, if it finds a valid one.
    oracle: Option<String>,
    /// For "00…" that libphonenumber does not read as the region's international
    /// prefix: what it gives for the same digits after a "+" (`Some(None)`: nothing).
    international: Option<Option<String>>,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn number_or_none(field: &str) -> Option<String> {
    (field != "-").then(|| field.to_owned())
}

fn read_table(text: &str, origin: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let (region, input, oracle, international) = match fields[..] {
            [region, input, oracle] => (region, input, oracle, None),
            [region, input, oracle, international] => {
                (region, input, oracle, Some(number_or_none(international)))
            }
            _ => panic!("{origin}:{}: not 3 or 4 tab-separated fields", index + 1),
        };
        cases.push(Case {
            region: region.to_owned(),
            input: input.to_owned(),
            oracle: number_or_none(oracle),
            international,
        });
    }
    assert!(!cases.is_empty(), "{origin} holds no cases");
    cases
}

/// What a disagreement with libphonenumber is.
#[derive(Debug, PartialEq)]
enum Verdict {
    Agrees,
    /// Explained by a deliberate difference (see [`deliberate`]).
    Deliberate(&'static str),
    /// A number libphonenumber does not give: never acceptable.
    WrongNumber,
    /// Refused although libphonenumber finds a valid number.
    Refused,
}

/// The digit counts a `PhoneE164` holds: at most 15 (ITU-T E.164 §6.1), at least 7.
const E164_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// Deliberate differences from libphonenumber, given our answer (`None`: refused).
/// They only ever excuse a refusal, or the number libphonenumber itself gives for the
/// same digits written another way; never a different number.
fn deliberate(case: &Case, ours: Option<&str>) -> Option<&'static str> {
    match ours {
        // "00" is read as the international prefix in every region, also where the local
        // one is different (011 in the US): a form's region says where the company is,
        // not where the prospect dials from, and no national number of such a region
        // starts with 00. The number must be the one libphonenumber gives for "+" and
        // the same digits.
        Some(ours) => (case.international == Some(Some(ours.to_owned())))
            .then_some("00 read as the international prefix"),
        // libphonenumber's German plan has national numbers of up to 15 digits (direct
        // dialling into private exchanges), 16 or 17 with the country code, and paging
        // numbers of 4 digits, 6 with it: more or fewer digits than a `PhoneE164` holds,
        // so they cannot be a lead's phone. The raw value stays in the inquiry's payload.
        None => case
            .oracle
            .as_deref()
            .filter(|oracle| !E164_DIGITS.contains(&(oracle.len() - 1)))
            .map(|_| "more or fewer digits than E.164 form allows"),
    }
}

fn judge(case: &Case, ours: Option<&str>) -> Verdict {
    match (ours, case.oracle.as_deref()) {
        (None, None) => Verdict::Agrees,
        (Some(ours), Some(oracle)) if ours == oracle => Verdict::Agrees,
        (Some(_), _) => deliberate(case, ours).map_or(Verdict::WrongNumber, Verdict::Deliberate),
        (None, Some(_)) => deliberate(case, ours).map_or(Verdict::Refused, Verdict::Deliberate),
    }
}

/// Checks every case; panics listing every disagreement.
fn check(cases: &[Case], origin: &str) {
    let mut wrong = Vec::new();
    let mut refused = Vec::new();
    let mut deliberate = std::collections::BTreeMap::<&str, usize>::new();
    for case in cases {
        let region = Region::parse(&case.region)
            .unwrap_or_else(|e| panic!("{origin}: region of {:?}: {e}", case.input));
        let ours = parse_phone(&case.input, Some(region))
            .ok()
            .map(|parsed| parsed.number.as_str().to_owned());
        let line = format!(
            "{}\t{:?}\tours {}\tlibphonenumber {}",
            case.region,
            case.input,
            ours.as_deref().unwrap_or("-"),
            case.oracle.as_deref().unwrap_or("-"),
        );
        match judge(case, ours.as_deref()) {
            Verdict::Agrees => {}
            Verdict::Deliberate(why) => *deliberate.entry(why).or_default() += 1,
            Verdict::WrongNumber => wrong.push(line),
            Verdict::Refused => refused.push(line),
        }
    }
    let mut summary = format!(
        "{origin}: {} cases, {} wrong numbers, {} refused where libphonenumber accepts",
        cases.len(),
        wrong.len(),
        refused.len()
    );
    for (why, count) in &deliberate {
        let _ = write!(summary, ", {count} deliberate ({why})");
    }
    eprintln!("{summary}");
    if wrong.is_empty() && refused.is_empty() {
        return;
    }
    let mut report = summary;
    for (title, lines) in [("wrong numbers", &wrong), ("refused", &refused)] {
        if !lines.is_empty() {
            let _ = write!(report, "\n{title} (region, input, ours, libphonenumber):\n");
            report.push_str(&lines.join("\n"));
        }
    }
    panic!("{report}");
}

fn run_script(args: &[&str]) -> std::io::Result<Output> {
    Command::new("python3")
        .arg(repository().join(SCRIPT))
        .args(args)
        .output()
}

/// Whether the pinned oracle can run here; says why not when it cannot.
fn oracle_available() -> bool {
    match run_script(&["--check"]) {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "libphonenumber oracle not available ({}); compared against the committed table {TABLE} only",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            false
        }
        Err(error) => {
            eprintln!(
                "python3 not runnable ({error}); compared against the committed table {TABLE} only"
            );
            false
        }
    }
}

fn generate(args: &[&str]) -> String {
    let output = run_script(args).expect("python3 runs");
    assert!(
        output.status.success(),
        "{SCRIPT} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the script writes UTF-8")
}

fn committed_table() -> String {
    let path = repository().join(TABLE);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn typed_numbers_in_the_committed_table_give_libphonenumbers_result() {
    let cases = read_table(&committed_table(), TABLE);
    assert!(
        cases.len() > 8 * 2_000,
        "the table covers every focus region"
    );
    check(&cases, TABLE);
}

#[test]
fn freshly_generated_numbers_give_libphonenumbers_result() {
    if !oracle_available() {
        return;
    }
    let seed = std::env::var(SEED_VARIABLE).unwrap_or_else(|_| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970");
        now.as_nanos().to_string()
    });
    eprintln!("live oracle run with seed {seed} (set {SEED_VARIABLE}={seed} to repeat it)");
    let scale = LIVE_SCALE.to_string();
    let table = generate(&["--seed", &seed, "--scale", &scale]);
    check(
        &read_table(&table, &format!("live run, seed {seed}")),
        "live run",
    );
}

#[test]
fn the_committed_table_is_what_the_script_generates() {
    if !oracle_available() {
        return;
    }
    let committed = committed_table();
    // The header records the arguments that made the table.
    let header = committed.lines().next().unwrap_or_default();
    let arguments = header
        .split_once(", seed ")
        .and_then(|(_, rest)| rest.split_once(", scale "))
        .unwrap_or_else(|| panic!("{TABLE} starts with an unexpected header {header:?}"));
    let fresh = generate(&["--seed", arguments.0, "--scale", arguments.1]);
    assert!(
        fresh == committed,
        "{TABLE} is stale: regenerate it with `python3 {SCRIPT} > {TABLE}`"
    );
}

#[test]
fn the_examples_that_read_the_country_code_into_national_numbers_are_in_the_table() {
    // The inputs that once gave a wrong number or none: the table must keep covering them.
    let cases = read_table(&committed_table(), TABLE);
    let covered = |region: &str, digits_prefix: &str, length: usize| {
        cases.iter().any(|case| {
            let digits: String = case.input.chars().filter(char::is_ascii_digit).collect();
            case.region == region
                && !case.input.starts_with('+')
                && digits.starts_with(digits_prefix)
                && digits.len() == length
                && case.oracle.is_some()
        })
    };
    assert!(covered("IT", "390", 10), "IT 390 … national numbers");
    assert!(covered("IT", "393", 10), "IT 393 … mobiles");
    assert!(covered("PL", "48", 9), "PL area code 48");
}

#[test]
fn only_documented_differences_are_excused_and_never_a_different_number() {
    let case = |oracle: Option<&str>, international: Option<Option<&str>>| Case {
        region: "US".into(),
        input: "0044 20 7946 0958".into(),
        oracle: oracle.map(str::to_owned),
        international: international.map(|i| i.map(str::to_owned)),
    };
    let ours = Some("+442079460958");
    assert_eq!(
        judge(&case(Some("+442079460958"), None), ours),
        Verdict::Agrees
    );
    assert_eq!(
        judge(&case(Some("+442079460959"), None), ours),
        Verdict::WrongNumber
    );
    assert_eq!(judge(&case(None, None), ours), Verdict::WrongNumber);
    assert_eq!(
        judge(&case(None, Some(Some("+442079460958"))), ours),
        Verdict::Deliberate("00 read as the international prefix")
    );
    assert_eq!(
        judge(&case(None, Some(Some("+44207946095"))), ours),
        Verdict::WrongNumber
    );
    assert_eq!(judge(&case(None, Some(None)), ours), Verdict::WrongNumber);
    assert_eq!(
        judge(&case(Some("+442079460958"), None), None),
        Verdict::Refused
    );
    assert_eq!(
        judge(&case(None, Some(Some("+442079460958"))), None),
        Verdict::Agrees
    );
    // Only numbers E.164 cannot hold may be refused.
    let long = |oracle: &str| Case {
        region: "DE".into(),
        input: "02165 00981831828".into(),
        oracle: Some(oracle.into()),
        international: None,
    };
    assert_eq!(
        judge(&long("+49216500981831828"), None),
        Verdict::Deliberate("more or fewer digits than E.164 form allows")
    );
    assert_eq!(judge(&long("+492165009818318"), None), Verdict::Refused);
    assert_eq!(
        judge(&long("+491641"), None),
        Verdict::Deliberate("more or fewer digits than E.164 form allows")
    );
    assert_eq!(judge(&long("+4916412"), None), Verdict::Refused);
    assert_eq!(
        judge(&long("+49216500981831828"), Some("+4921650098183182")),
        Verdict::WrongNumber
    );
}
