//! `stockade profiles check|explain`: validate a profile set, show what a profile gives a job.
//!
//! Neither needs root nor touches anything: both only load profiles (the same validation
//! `serve` and `exec` do at start).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use stockade_profiles::explain::Explain;
use stockade_profiles::{HostAccounts, ProfileSet};

use crate::cli::{CheckArgs, ExplainArgs, ProfilesCommand};

pub fn main(cmd: ProfilesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfilesCommand::Check(a) => check(a),
        ProfilesCommand::Explain(a) => explain(a),
    }
}

fn accounts() -> HostAccounts {
    HostAccounts::read(Path::new("/etc/passwd"), Path::new("/etc/group"))
}

fn load(dir: Option<&Path>) -> Result<ProfileSet, stockade_profiles::ProfileErrors> {
    match dir {
        Some(d) => ProfileSet::load_dir(d, &accounts()),
        None => ProfileSet::embedded(&accounts()),
    }
}

/// Every error of every file on stderr, exit 1; or one line per profile on stdout, exit 0.
fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    match load(a.dir.as_deref()) {
        Ok(set) => {
            for name in set.names() {
                let p = set.get(name).context("listed profile")?;
                let extends = if p.extends.is_empty() {
                    String::new()
                } else {
                    format!(" (extends {})", p.extends.join(" -> "))
                };
                println!("ok {name} sha256:{}{extends}", p.hash);
            }
            println!(
                "{}: {} profiles, no errors",
                set.source(),
                set.names().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errs) => {
            eprintln!("{errs}");
            let files: std::collections::BTreeSet<_> = errs.0.iter().map(|e| &e.file).collect();
            eprintln!(
                "{} error{} in {} file{}",
                errs.0.len(),
                if errs.0.len() == 1 { "" } else { "s" },
                files.len(),
                if files.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn explain(a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let set = load(a.profiles.as_deref()).map_err(|e| anyhow::anyhow!("invalid profiles:\n{e}"))?;
    let profile = set.get(&a.name).ok_or_else(|| set.unknown(&a.name))?;
    let explained = Explain::of(profile);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&explained)?);
    } else {
        print!("{}", explained.text());
    }
    Ok(ExitCode::SUCCESS)
}
