//! `leadpipe`: the daemon and its command line, with the shipped connectors.

use std::process::ExitCode;

fn main() -> ExitCode {
    leadpipe::cli::run(leadpipe::connectors::shipped())
}
