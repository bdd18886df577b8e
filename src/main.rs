//! `leadpipe`: the daemon and its command line, with the shipped connectors.

use std::process::ExitCode;

fn main() -> ExitCode {
    leadpipe::memory::tune_allocator();
    leadpipe::cli::run(leadpipe::connectors::shipped())
}
