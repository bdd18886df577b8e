//! The morning digest of stale leads and the abandon rule: the `[digest]` settings, the
//! scheduler task the daemon runs, and `leadpipe digest`.
//!
//! Every minute the scheduler asks the store which active users' local time passed
//! `send_at` today (in the user's own `time_zone`; `[digest] time_zone` only for users
//! whose zone is empty or unknown) and who have no digest for that local date yet, renders
//! each one's stale leads and hands mail and log row to the store, which commits them
//! together or not at all: any number of replicas queue one digest per user and day. A
//! daemon started after `send_at` sends that day's digest late, the same local day. The
//! abandon rule runs at start and then hourly (its statement only moves leads that
//! crossed the line since, and an advisory lock keeps replicas from both writing).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Utc};
use serde::Deserialize;
use store::{
    AbandonRule, DigestMail, DigestMoment, DigestRecipient, DigestSchedule, DigestSection, Scope,
    StaleLead, Store, Template,
};
use tokio_util::sync::CancellationToken;

/// The placeholders of `[digest] subject`.
pub const SUBJECT_PLACEHOLDERS: &[&str] = &["count", "name", "date"];
/// The placeholders of `[digest] lead_url`.
pub const URL_PLACEHOLDERS: &[&str] = &["id"];

/// How often the scheduler looks for due digests.
const PASS_INTERVAL: Duration = Duration::from_secs(60);
/// How often the abandon rule runs.
const ABANDON_INTERVAL: Duration = Duration::from_secs(3_600);

/// The `[digest]` section: the morning mail of stale leads, and the abandon rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DigestSettings {
    /// False keeps the section (and the abandon rule) but mails nothing.
    pub enabled: bool,
    /// The local time (`HH:MM`, 24-hour) after which each user's digest goes out.
    pub send_at: String,
    /// The IANA zone (`Europe/Rome`) of users whose own time zone is empty or unknown;
    /// a user's own `time_zone` always wins.
    pub time_zone: String,
    /// The subject line; placeholders `{count}`, `{name}`, `{date}`.
    pub subject: String,
    /// Most leads listed in one mail; the rest are summarised as "and N more".
    pub max_leads: usize,
    /// A link to each lead, `{id}` replaced by its id
    /// (`https://crm.example.com/leads/{id}`); no links when absent.
    pub lead_url: Option<String>,
    /// Leads untouched this many days in an open stage move to the abandoned stage;
    /// 0 turns the rule off.
    pub abandon_after_days: u32,
    /// The code of the stage they move to; by default each pipeline's first stage with
    /// the `abandoned` semantic.
    pub abandon_stage: Option<String>,
}

impl Default for DigestSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            send_at: "08:00".into(),
            time_zone: "UTC".into(),
            subject: "{count} stale leads need you ({date})".into(),
            max_leads: 50,
            lead_url: None,
            abandon_after_days: 0,
            abandon_stage: None,
        }
    }
}

fn parse_send_at(raw: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(raw.trim(), "%H:%M").map_err(|_| {
        format!("`{raw}` is not a time of day: write HH:MM on a 24-hour clock, such as 08:00")
    })
}

/// Every problem of `[digest]`, as (key path, problem).
pub fn problems(digest: Option<&DigestSettings>, smtp_present: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(digest) = digest else {
        return out;
    };
    let mut push = |key: &str, problem: String| out.push((format!("digest.{key}"), problem));
    if digest.enabled && !smtp_present {
        push(
            "enabled",
            "the digest is mailed through [smtp], which is missing: add an [smtp] section or set digest.enabled = false".into(),
        );
    }
    if let Err(problem) = parse_send_at(&digest.send_at) {
        push("send_at", problem);
    }
    if digest.time_zone.parse::<chrono_tz::Tz>().is_err() {
        push(
            "time_zone",
            format!(
                "`{}` is not an IANA time zone: use a name such as Europe/Rome or UTC",
                digest.time_zone
            ),
        );
    }
    if digest.subject.trim().is_empty() {
        push("subject", "is empty".into());
    } else if let Err(problem) = Template::parse_with(&digest.subject, SUBJECT_PLACEHOLDERS) {
        push("subject", problem);
    }
    if digest.max_leads == 0 {
        push("max_leads", "must be at least 1".into());
    }
    if let Some(url) = &digest.lead_url {
        if !url.contains("{id}") {
            push(
                "lead_url",
                format!("`{url}` has no {{id}}: write it where the lead's id goes"),
            );
        } else if let Err(problem) = Template::parse_with(url, URL_PLACEHOLDERS) {
            push("lead_url", problem);
        }
    }
    if digest
        .abandon_stage
        .as_ref()
        .is_some_and(|code| code.trim().is_empty())
    {
        push(
            "abandon_stage",
            "is empty: name a stage code such as `ignored`, or leave the key out".into(),
        );
    }
    out
}

/// What the scheduler and `leadpipe digest` work from (settings already validated).
#[derive(Debug, Clone)]
pub struct DigestPlan {
    /// Whether digests are mailed.
    pub enabled: bool,
    /// When they go out.
    pub schedule: DigestSchedule,
    subject: Template,
    max_leads: usize,
    lead_url: Option<Template>,
    /// The abandon rule, when on.
    pub abandon: Option<AbandonRule>,
    /// The sender address (`[smtp] from`).
    pub from: String,
}

impl DigestPlan {
    /// The plan of `[digest]`, sending as `from`.
    pub fn new(settings: &DigestSettings, from: &str) -> anyhow::Result<Self> {
        let send_at =
            parse_send_at(&settings.send_at).map_err(|p| anyhow::anyhow!("digest.send_at: {p}"))?;
        let subject = Template::parse_with(&settings.subject, SUBJECT_PLACEHOLDERS)
            .map_err(|p| anyhow::anyhow!("digest.subject: {p}"))?;
        let lead_url = settings
            .lead_url
            .as_deref()
            .map(|url| Template::parse_with(url, URL_PLACEHOLDERS))
            .transpose()
            .map_err(|p| anyhow::anyhow!("digest.lead_url: {p}"))?;
        Ok(Self {
            enabled: settings.enabled,
            schedule: DigestSchedule {
                send_at,
                default_zone: settings.time_zone.clone(),
            },
            subject,
            max_leads: settings.max_leads.max(1),
            lead_url,
            abandon: (settings.abandon_after_days > 0).then(|| AbandonRule {
                after_days: settings.abandon_after_days,
                stage_code: settings.abandon_stage.clone(),
            }),
            from: from.to_owned(),
        })
    }

    /// The number of stale leads `leads` (one recipient's rows, as the store returns
    /// them) stand for: every section's full count.
    pub fn count(leads: &[&StaleLead]) -> usize {
        [DigestSection::Own, DigestSection::Team]
            .into_iter()
            .filter_map(|section| leads.iter().find(|l| l.section == section))
            .map(|l| usize::try_from(l.section_total).unwrap_or(0))
            .sum()
    }

    /// The subject and plain-text body of `recipient`'s digest listing `leads` (theirs,
    /// own section first), or `None` when there is nothing stale.
    pub fn render(&self, recipient: &DigestRecipient, leads: &[&StaleLead]) -> Option<DigestMail> {
        if leads.is_empty() {
            return None;
        }
        let values: HashMap<&str, String> = [
            ("count", Self::count(leads).to_string()),
            ("name", recipient.name.clone()),
            ("date", recipient.local_date.to_string()),
        ]
        .into_iter()
        .collect();
        let mut body = format!(
            "Good morning {},\n\nthese leads have been in their stage longer than its deadline \
             (as of {}, {}):\n",
            recipient.name, recipient.local_date, recipient.time_zone
        );
        let mut budget = self.max_leads;
        for (section, heading) in [
            (DigestSection::Own, "Your leads"),
            (DigestSection::Team, "Your team's leads"),
        ] {
            let listed: Vec<&&StaleLead> = leads.iter().filter(|l| l.section == section).collect();
            let Some(first) = listed.first() else {
                continue;
            };
            let total = usize::try_from(first.section_total)
                .unwrap_or(0)
                .max(listed.len());
            body.push_str(&format!("\n{heading} ({total}):\n"));
            let shown = listed.len().min(budget);
            for lead in &listed[..shown] {
                body.push_str(&self.line(lead));
            }
            budget -= shown;
            if total > shown {
                body.push_str(&format!("... and {} more.\n", total - shown));
            }
        }
        body.push_str("\nMove each lead on, or finish it, to take it off this list.\n");
        Some(DigestMail {
            subject: self.subject.render(&values),
            body,
            from: self.from.clone(),
        })
    }

    fn line(&self, lead: &StaleLead) -> String {
        let overdue = match lead.days_overdue {
            0 => "overdue by less than a day".to_owned(),
            1 => "1 day overdue".to_owned(),
            n => format!("{n} days overdue"),
        };
        let person = lead
            .person
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        let who = match lead.section {
            DigestSection::Own => String::new(),
            DigestSection::Team => format!("{}, ", lead.responsible),
        };
        let mut line = format!(
            "- #{} {}{person}: {who}stage {}, {overdue}\n",
            lead.lead_id,
            one_line(&lead.title),
            lead.stage
        );
        if let Some(url) = &self.lead_url {
            let values: HashMap<&str, String> =
                [("id", lead.lead_id.to_string())].into_iter().collect();
            line.push_str(&format!("  {}\n", url.render(&values)));
        }
        line
    }
}

/// A title as one line of the body.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One recipient's rendered digest.
pub struct Decided {
    /// Who.
    pub recipient: DigestRecipient,
    /// How many stale leads they have.
    pub lead_count: usize,
    /// The mail, when any lead is stale.
    pub mail: Option<DigestMail>,
}

/// Renders the digest of each recipient (one statement for all their stale leads).
pub async fn compose(
    store: &Store,
    plan: &DigestPlan,
    recipients: Vec<DigestRecipient>,
) -> Result<Vec<Decided>, store::StoreError> {
    let stale = store.stale_leads(&recipients, plan.max_leads).await?;
    let mut by_user: HashMap<i64, Vec<&StaleLead>> = HashMap::new();
    for lead in &stale {
        by_user.entry(lead.user_id).or_default().push(lead);
    }
    Ok(recipients
        .into_iter()
        .map(|recipient| {
            let leads = by_user.remove(&recipient.user_id).unwrap_or_default();
            let mail = plan.render(&recipient, &leads);
            Decided {
                recipient,
                lead_count: DigestPlan::count(&leads),
                mail,
            }
        })
        .collect())
}

/// Queues the digests due now (optionally only `email`'s); answers how many mails were
/// queued by this call.
pub async fn send_due(
    store: &Store,
    plan: &DigestPlan,
    email: Option<&str>,
) -> Result<usize, store::StoreError> {
    let due = store
        .digest_recipients(&plan.schedule, DigestMoment::Due(Utc::now()), email)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut queued = 0;
    for decided in compose(store, plan, due).await? {
        let recorded = store
            .record_digest(
                &decided.recipient,
                decided.lead_count,
                decided.mail.as_ref(),
            )
            .await?;
        if recorded && decided.mail.is_some() {
            queued += 1;
            metrics::counter!("leadpipe_digests_queued_total").increment(1);
            tracing::info!(
                user_id = decided.recipient.user_id,
                local_date = %decided.recipient.local_date,
                leads = decided.lead_count,
                "Queued a stale-lead digest."
            );
        }
    }
    Ok(queued)
}

/// The scheduler task: due digests every minute, the abandon rule hourly, until stopped.
pub struct Scheduler {
    store: Store,
    plan: DigestPlan,
}

impl Scheduler {
    /// A scheduler over `store` following `plan`.
    pub fn new(store: Store, plan: DigestPlan) -> Self {
        Self { store, plan }
    }

    /// Runs passes until `stop` fires; a pass in progress finishes first (each digest
    /// commits on its own, so stopping between two leaves nothing half done).
    pub async fn run(self, stop: CancellationToken) {
        let mut abandon_due = tokio::time::Instant::now();
        tracing::info!(
            digest = self.plan.enabled,
            send_at = %self.plan.schedule.send_at,
            abandon_after_days = self.plan.abandon.as_ref().map_or(0, |r| r.after_days),
            "Stale-lead scheduler started."
        );
        while !stop.is_cancelled() {
            if self.plan.enabled
                && let Err(error) = send_due(&self.store, &self.plan, None).await
            {
                tracing::warn!(%error, "Could not queue the stale-lead digests; trying again in a minute.");
            }
            if let Some(rule) = &self.plan.abandon
                && tokio::time::Instant::now() >= abandon_due
            {
                match self
                    .store
                    .abandon_untouched(rule, &Scope::All, Utc::now())
                    .await
                {
                    Ok(Some(moved)) => {
                        abandon_due = tokio::time::Instant::now() + ABANDON_INTERVAL;
                        if moved > 0 {
                            tracing::info!(
                                moved,
                                days = rule.after_days,
                                "Moved untouched leads to the abandoned stage."
                            );
                        }
                    }
                    // Another replica is applying the rule now.
                    Ok(None) => abandon_due = tokio::time::Instant::now() + ABANDON_INTERVAL,
                    Err(error) => {
                        tracing::warn!(%error, "Could not apply the abandon rule; trying again in a minute.")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PASS_INTERVAL) => {}
                _ = stop.cancelled() => {}
            }
        }
        tracing::info!("Stale-lead scheduler stopped.");
    }
}

/// What `leadpipe digest` was asked.
pub struct DigestCommand {
    /// Print, touch nothing.
    pub dry_run: bool,
    /// Queue what is due now.
    pub send_now: bool,
    /// The local date to compute for (dry run only).
    pub date: Option<NaiveDate>,
    /// Only this user.
    pub user: Option<String>,
}

/// Runs `leadpipe digest`.
pub async fn run(
    settings: crate::settings::Settings,
    command: DigestCommand,
) -> anyhow::Result<()> {
    let section = settings.digest.as_ref().ok_or_else(|| {
        anyhow::anyhow!("There is no [digest] section in the configuration: add one (see deploy/leadpipe.example.toml)")
    })?;
    let from = settings
        .smtp
        .as_ref()
        .map(|s| s.from.clone())
        .unwrap_or_default();
    let plan = DigestPlan::new(section, &from)?;
    let store = Store::connect_lazy(&settings.database)?;
    let result = if command.send_now {
        if settings.smtp.is_none() {
            anyhow::bail!("--send-now needs an [smtp] section to send through");
        }
        let queued = send_due(&store, &plan, command.user.as_deref()).await?;
        println!(
            "Queued {queued} digest(s); the daemon's mail sender delivers them. Users whose \
             send_at has not come yet, or whose digest for today is decided, are left alone."
        );
        Ok(())
    } else if command.dry_run {
        dry_run(&store, &plan, &command).await
    } else {
        Err(anyhow::anyhow!(
            "Say what to do: --dry-run prints what would be sent, --send-now queues what is due"
        ))
    };
    store.close().await;
    result
}

async fn dry_run(store: &Store, plan: &DigestPlan, command: &DigestCommand) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    // Written in one go at the end: a reader that stops early (`| head`) is no error.
    let mut out = String::new();
    let moment = match command.date {
        Some(date) => DigestMoment::On(date),
        None => DigestMoment::Any(Utc::now()),
    };
    let recipients = store
        .digest_recipients(&plan.schedule, moment, command.user.as_deref())
        .await?;
    if recipients.is_empty() {
        match &command.user {
            Some(user) => {
                let _ = writeln!(out, "No active user has the address {user}.");
            }
            None => {
                let _ = writeln!(out, "No active users.");
            }
        }
    }
    for decided in compose(store, plan, recipients).await? {
        let r = &decided.recipient;
        let _ = writeln!(out, "To: {} <{}>", r.name, r.email);
        let _ = writeln!(
            out,
            "Local date: {} ({}), counted at {}",
            r.local_date, r.time_zone, r.at
        );
        if r.already_logged {
            let _ = writeln!(
                out,
                "(A digest for this date was decided already: nothing more would be sent.)"
            );
        }
        match &decided.mail {
            Some(mail) => {
                let _ = writeln!(out, "Subject: {}", mail.subject);
                let _ = writeln!(out);
                let _ = writeln!(out, "{}", mail.body);
            }
            None => {
                let _ = writeln!(
                    out,
                    "No stale leads: no mail (the day would be logged as decided).\n"
                );
            }
        }
        let _ = writeln!(out, "----");
    }
    if let Some(rule) = &plan.abandon {
        let at = match command.date {
            Some(date) => {
                let at = date.and_time(plan.schedule.send_at);
                let zone: chrono_tz::Tz =
                    plan.schedule.default_zone.parse().unwrap_or(chrono_tz::UTC);
                at.and_local_timezone(zone)
                    .earliest()
                    .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
            }
            None => Utc::now(),
        };
        let moved = store.untouched_leads(rule, &Scope::All, at).await?;
        let _ = writeln!(
            out,
            "Abandon rule (untouched {} days): {} lead(s) would move.",
            rule.after_days,
            moved.len()
        );
        for lead in moved {
            let _ = writeln!(
                out,
                "- #{} {}: {} -> {}, last touched {}",
                lead.lead_id,
                one_line(&lead.title),
                lead.from_stage,
                lead.to_stage,
                lead.touched_at
            );
        }
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient() -> DigestRecipient {
        DigestRecipient {
            user_id: 7,
            name: "Anna".into(),
            email: "anna@example.com".into(),
            time_zone: "Europe/Rome".into(),
            local_date: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
            at: Utc::now(),
            supervisor: true,
            already_logged: false,
        }
    }

    fn stale(id: i64, section: DigestSection, days: i32) -> StaleLead {
        StaleLead {
            user_id: 7,
            section,
            lead_id: id,
            title: format!("Lead\n{id}"),
            person: Some("Marco".into()),
            stage: "Working".into(),
            responsible: "Luca".into(),
            days_overdue: days,
            section_total: 0,
        }
    }

    #[test]
    fn a_digest_lists_up_to_max_leads_and_summarises_the_rest() {
        let settings = DigestSettings {
            max_leads: 2,
            lead_url: Some("https://crm.example.com/leads/{id}".into()),
            ..DigestSettings::default()
        };
        let plan = DigestPlan::new(&settings, "leads@example.com").unwrap();
        let mut leads = [
            stale(1, DigestSection::Own, 3),
            stale(2, DigestSection::Own, 0),
            stale(3, DigestSection::Team, 1),
        ];
        // The store counted more team leads than it returned.
        leads[0].section_total = 2;
        leads[1].section_total = 2;
        leads[2].section_total = 4;
        let refs: Vec<&StaleLead> = leads.iter().collect();
        let mail = plan.render(&recipient(), &refs).unwrap();
        assert_eq!(mail.subject, "6 stale leads need you (2026-03-10)");
        assert!(mail.body.contains("- #1 Lead 1 (Marco): stage Working, 3 days overdue\n  https://crm.example.com/leads/1\n"), "{}", mail.body);
        assert!(
            mail.body.contains("overdue by less than a day"),
            "{}",
            mail.body
        );
        assert!(
            mail.body
                .contains("Your team's leads (4):\n... and 4 more."),
            "{}",
            mail.body
        );
        assert!(!mail.body.contains("#3"), "{}", mail.body);
        assert!(plan.render(&recipient(), &[]).is_none());
    }

    #[test]
    fn digest_settings_name_a_bad_time_an_unknown_zone_and_a_missing_smtp_section() {
        let settings = DigestSettings {
            send_at: "25:00".into(),
            time_zone: "Europe/Atlantis".into(),
            subject: "{count} {nope}".into(),
            lead_url: Some("https://crm.example.com/leads".into()),
            ..DigestSettings::default()
        };
        let found = problems(Some(&settings), false);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "digest.enabled",
                "digest.send_at",
                "digest.time_zone",
                "digest.subject",
                "digest.lead_url"
            ]
        );
        assert!(found[0].1.contains("[smtp]"), "{}", found[0].1);
        assert!(problems(Some(&DigestSettings::default()), true).is_empty());
        assert!(problems(None, false).is_empty());
    }
}
