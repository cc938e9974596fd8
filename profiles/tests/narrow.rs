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
        let req = Overrides { timeout, env: env.clone() };
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
