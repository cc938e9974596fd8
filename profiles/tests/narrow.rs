//! Property: no request ever yields a plan wider than its profile, and every refusal names the
//! field it refuses.
//!
//! Random profiles (deadline, grace, fixed and allowed environment) meet random requests
//! (deadlines from zero to twice the profile's, variables allowed or not, fixed or not, values
//! with and without NUL). A request is accepted exactly when it only narrows; then the plan's
//! deadline is at most the profile's, the grace period and every fixed variable are the
//! profile's unless the profile allows the name, and nothing else appears. A refusal names the
//! timeout or the variable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use stockade_profiles::{parse_profile, HostAccounts, Overrides, Profile};

const NAMES: [&str; 8] = [
    "PATH",
    "LANG",
    "TERM",
    "TZ",
    "LD_PRELOAD",
    "HOME",
    "CC",
    "X_Y",
];

fn profile(wall: u64, grace: u64, set: &BTreeMap<String, String>, allow: &[String]) -> Profile {
    let set = set
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[identity]\nuid = 61350\ngid = 61350\n[limits]\nwall_timeout_secs = {wall}\ngrace_secs = {grace}\n\
         [env]\nset = {{ {set} }}\nallow = {allow:?}\n"
    );
    parse_profile(Path::new("p.toml"), "p", &text, &HostAccounts::none())
        .unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES.to_vec()).prop_map(str::to_string),
        1 => "[A-Z_]{1,6}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![8 => "[ -~]{0,12}", 1 => "[a-z]{0,3}\0[a-z]{0,3}"]
}

prop_compose! {
    fn case()(
        wall in 1u64..=3600,
        grace in 0u64..=300,
        set in proptest::collection::btree_map(name(), "[a-z/:.]{0,10}", 0..4),
        allow in proptest::collection::vec(name(), 0..4),
        timeout_frac in proptest::option::of(0u64..=2000),
        env in proptest::collection::vec((name(), value()), 0..5),
    ) -> (u64, u64, BTreeMap<String, String>, Vec<String>, Option<u64>, Vec<(String, String)>) {
        (wall, grace, set, allow, timeout_frac, env)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn no_request_yields_a_plan_wider_than_its_profile(
        (wall, grace, set, allow, timeout_frac, env) in case()
    ) {
        let p = profile(wall, grace, &set, &allow);
        // Deadlines from 0 to twice the profile's, in milliseconds.
        let timeout = timeout_frac.map(|f| Duration::from_millis(wall * 1000 * f / 1000));
        let req = Overrides { timeout, env: env.clone(), ..Overrides::default() };
        let timeout_ok = timeout.is_none_or(|t| !t.is_zero() && t <= p.wall_timeout);
        let first_bad_env = env.iter().find(|(k, v)| !allow.contains(k) || v.contains('\0'));
        match p.resolve(&req) {
            Ok(r) => {
                prop_assert!(timeout_ok && first_bad_env.is_none(), "accepted a widening request {req:?}");
                prop_assert!(r.wall_timeout <= p.wall_timeout && !r.wall_timeout.is_zero());
                prop_assert_eq!(r.wall_timeout, timeout.unwrap_or(p.wall_timeout));
                prop_assert_eq!(r.grace, p.grace);
                let got: BTreeMap<_, _> = r.env.iter().cloned().collect();
                prop_assert_eq!(got.len(), r.env.len(), "duplicate variables in {:?}", r.env);
                for (k, v) in &r.env {
                    let requested = env.iter().rev().find(|(rk, _)| rk == k);
                    match requested {
                        // Only an allowed name can come from the request, with its value.
                        Some((_, rv)) => {
                            prop_assert!(allow.contains(k));
                            prop_assert_eq!(v, rv);
                        }
                        // Everything else is the profile's fixed environment, unchanged.
                        None => prop_assert_eq!(Some(v), set.get(k)),
                    }
                }
                for k in set.keys() {
                    prop_assert!(got.contains_key(k), "fixed variable {k} dropped");
                }
            }
            Err(e) => {
                prop_assert!(!(timeout_ok && first_bad_env.is_none()), "refused a narrowing request {req:?}: {e}");
                if !timeout_ok {
                    prop_assert!(e.0.starts_with("timeout "), "{e}");
                } else {
                    let (k, _) = first_bad_env.unwrap();
                    prop_assert!(e.0.contains(k.as_str()), "{e} does not name {k}");
                    if !allow.contains(k) {
                        prop_assert_eq!(
                            e.0.clone(),
                            format!("environment variable {k} is not in profile p's env.allow {allow:?}")
                        );
                    }
                }
            }
        }
    }
}

/// One limit as the profile sets it (`None`: not set), as a request asks for it, and as resolved.
fn check_limit(
    key: &str,
    profile: Option<u64>,
    request: Option<u64>,
    resolved: Option<u64>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(resolved, request.or(profile), "{}", key);
    if let (Some(p), Some(r)) = (profile, resolved) {
        prop_assert!(r <= p, "{key}: {r} above the profile's {p}");
    }
    prop_assert!(resolved != Some(0), "{key}: resolved to 0");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// CPU time, idle timeout and output: a request may lower or set them, never raise one above
    /// the profile's or make it zero; a refusal names the key or the zero.
    #[test]
    fn limit_requests_only_narrow(
        cpu in proptest::option::of(1u64..=600),
        idle in proptest::option::of(1u64..=600),
        out in proptest::option::of(1u64..=64),
        req_cpu in proptest::option::of(0u64..=700_000),
        req_idle in proptest::option::of(0u64..=700_000),
        req_out in proptest::option::of(0u64..=(70 << 20)),
    ) {
        let line = |k: &str, v: Option<u64>| v.map(|v| format!("{k} = {v}\n")).unwrap_or_default();
        let text = format!(
            "[identity]\nuid = 61350\ngid = 61350\n[limits]\nwall_timeout_secs = 3600\n{}{}{}",
            line("cpu_secs", cpu),
            line("idle_timeout_secs", idle),
            line("output_mib", out),
        );
        let p = parse_profile(Path::new("p.toml"), "p", &text, &HostAccounts::none())
            .unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let req = Overrides {
            cpu_limit: req_cpu.map(Duration::from_millis),
            idle_timeout: req_idle.map(Duration::from_millis),
            output_limit_bytes: req_out,
            ..Overrides::default()
        };
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        let over = |p: Option<u64>, r: Option<u64>| matches!((p, r), (Some(p), Some(r)) if r > p);
        let cpu_bad = req_cpu == Some(0) || over(cpu.map(|s| s * 1000), req_cpu);
        let idle_bad = req_idle == Some(0) || over(idle.map(|s| s * 1000), req_idle);
        let out_bad = req_out == Some(0) || over(out.map(|m| m << 20), req_out);
        match p.resolve(&req) {
            Ok(r) => {
                prop_assert!(!(cpu_bad || idle_bad || out_bad), "accepted a widening request {req:?}");
                check_limit("cpu", cpu.map(|s| s * 1000), req_cpu, ms(r.cpu_limit))?;
                check_limit("idle", idle.map(|s| s * 1000), req_idle, ms(r.idle_timeout))?;
                check_limit("output", out.map(|m| m << 20), req_out, r.output_limit_bytes)?;
            }
            Err(e) => {
                let (bad, key, zero) = if cpu_bad {
                    (req_cpu, "limits.cpu_secs", "CPU limit must be greater than 0")
                } else if idle_bad {
                    (req_idle, "limits.idle_timeout_secs", "idle timeout must be greater than 0")
                } else {
                    prop_assert!(out_bad, "refused a narrowing request {req:?}: {e}");
                    (req_out, "limits.output_mib", "output limit must be greater than 0")
                };
                if bad == Some(0) {
                    prop_assert_eq!(e.0.as_str(), zero);
                } else {
                    prop_assert!(e.0.contains(key) && e.0.contains("may only lower"), "{e}");
                }
            }
        }
    }
}
