//! The connector contract, proven with a pull connector that exists only here.
//!
//! The daemon under test is this binary started again with [`daemon::DAEMON_ROLE`] set:
//! then `main` runs the daemon's own command line with the shipped connectors plus the
//! test feed (`feed`), so the shipped binary carries no test code. Without it, `main`
//! runs the tests below one after another (they start daemons, so they do not run in
//! parallel), each on its own database and AMQP prefix. Arguments that do not start
//! with `-` filter tests by name, as with the standard harness.

mod contract;
mod daemon;
mod feed;
mod lease;
mod mailbox;
mod source;
mod telegram;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;

type Test = fn() -> Pin<Box<dyn Future<Output = ()>>>;

const TESTS: &[(&str, Test)] = &[
    (
        "contract::a_pull_task_that_fails_twice_is_restarted_with_backoff_and_then_files_its_inquiries",
        || {
            Box::pin(contract::a_pull_task_that_fails_twice_is_restarted_with_backoff_and_then_files_its_inquiries())
        },
    ),
    (
        "contract::sigterm_while_a_pull_task_holds_work_loses_nothing",
        || Box::pin(contract::sigterm_while_a_pull_task_holds_work_loses_nothing()),
    ),
    (
        "lease::the_lease_moves_to_the_survivor_within_10_s_of_sigkill_and_the_cursor_resumes_without_gaps_or_repeats",
        || {
            Box::pin(lease::the_lease_moves_to_the_survivor_within_10_s_of_sigkill_and_the_cursor_resumes_without_gaps_or_repeats())
        },
    ),
    (
        "mailbox::every_fixture_appended_to_a_real_mailbox_gives_its_expectations",
        || Box::pin(mailbox::every_fixture_appended_to_a_real_mailbox_gives_its_expectations()),
    ),
    (
        "mailbox::a_500_message_mailbox_killed_mid_way_then_recreated_files_each_message_exactly_once",
        || {
            Box::pin(mailbox::a_500_message_mailbox_killed_mid_way_then_recreated_files_each_message_exactly_once())
        },
    ),
    (
        "mailbox::mail_is_never_marked_read_flagged_only_when_asked_and_a_backfill_files_nothing_twice",
        || {
            Box::pin(mailbox::mail_is_never_marked_read_flagged_only_when_asked_and_a_backfill_files_nothing_twice())
        },
    ),
    (
        "mailbox::an_oversized_message_is_kept_unread_and_processed_mail_is_moved_after_filing",
        || {
            Box::pin(mailbox::an_oversized_message_is_kept_unread_and_processed_mail_is_moved_after_filing())
        },
    ),
    (
        "mailbox::a_connection_that_stops_answering_is_noticed_and_the_reader_reconnects",
        || {
            Box::pin(
                mailbox::a_connection_that_stops_answering_is_noticed_and_the_reader_reconnects(),
            )
        },
    ),
    (
        "mailbox::mailboxes_over_starttls_and_implicit_tls_file_their_mail_and_an_untrusted_certificate_is_named",
        || {
            Box::pin(mailbox::mailboxes_over_starttls_and_implicit_tls_file_their_mail_and_an_untrusted_certificate_is_named())
        },
    ),
    (
        "mailbox::a_backfill_recovers_mail_the_cursor_passed_over_once_and_reads_nothing_older",
        || {
            Box::pin(mailbox::a_backfill_recovers_mail_the_cursor_passed_over_once_and_reads_nothing_older())
        },
    ),
    (
        "mailbox::a_folder_recreated_under_a_running_reader_is_read_again_at_once_without_duplicates",
        || {
            Box::pin(mailbox::a_folder_recreated_under_a_running_reader_is_read_again_at_once_without_duplicates())
        },
    ),
    (
        "mailbox::two_daemons_on_one_mailbox_never_both_read_it",
        || Box::pin(mailbox::two_daemons_on_one_mailbox_never_both_read_it()),
    ),
    (
        "telegram::every_expectation_holds_by_polling_and_a_restart_files_nothing_again",
        || {
            Box::pin(
                telegram::every_expectation_holds_by_polling_and_a_restart_files_nothing_again(),
            )
        },
    ),
    (
        "telegram::every_expectation_holds_by_webhook_and_a_bad_secret_stores_nothing",
        || Box::pin(telegram::every_expectation_holds_by_webhook_and_a_bad_secret_stores_nothing()),
    ),
    (
        "telegram::a_kill_mid_stream_loses_and_doubles_nothing",
        || Box::pin(telegram::a_kill_mid_stream_loses_and_doubles_nothing()),
    ),
    (
        "telegram::the_telegram_commands_talk_to_the_bot_api",
        || Box::pin(telegram::the_telegram_commands_talk_to_the_bot_api()),
    ),
];

fn main() -> ExitCode {
    if std::env::var_os(daemon::DAEMON_ROLE).is_some() {
        return leadpipe::cli::run(leadpipe::connectors::shipped().with::<feed::TestFeeds>());
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<&(&str, Test)> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen.iter().copied() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(test())));
        drop(runtime);
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
