//! `stockade`: a sandboxed process supervisor for agent workloads.

use std::process::ExitCode;

use stockade_sandbox::helper;

mod cli;
mod client_cmd;
mod config;
mod daemon;
mod doctor;
mod exec_cmd;
mod fs_cmd;
mod fs_service;
mod helper_proc;
mod job;
mod limits;
mod profiles_cmd;
mod reaper;
mod recovery;
mod redact;
mod reload;
mod secrets;

/// Exit status when stockade itself refuses or fails (the same as a job it could not set up).
pub const EXIT_STOCKADE: u8 = 125;

fn main() -> ExitCode {
    // The exec helper must stay a small single-threaded process: decide before clap, tracing or a
    // runtime exist.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == helper::HELPER_ARG)
    {
        helper::helper_main();
    }
    cli::main()
}
