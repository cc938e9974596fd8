//! `extends`: a profile built on another one.
//!
//! Inheritance works on the TOML tables, before any validation: the parent chain is resolved to a
//! list of tables, oldest ancestor first, which are merged into one table; that table is then
//! validated and compiled like any profile. So a child is checked as the complete profile it
//! stands for, and `stockade profiles explain` shows the result.
//!
//! # Merge rules (mirrored in docs/profiles.md)
//!
//! - `extends` itself is never inherited.
//! - tables (`[limits]`, `[env.set]`, `[seccomp]`, ...) merge key by key, recursively;
//! - scalars (numbers, strings, booleans) in the child replace the parent's;
//! - arrays in the child replace the parent's, unless their first item is the string `"..."`,
//!   which stands for the list as it would be without this line: the parent's list, or the key's
//!   documented default where no ancestor sets it (`["...", "/opt/tools"]` adds `/opt/tools` to
//!   the default `read_exec`). `"..."` anywhere else is an error. It works in a profile without
//!   `extends` too (default plus additions);
//! - a value of another type than the parent's (a table for a string, as `seccomp.mode` allows)
//!   replaces it.
//!
//! # Where parents come from
//!
//! A profile's parent is looked up in its own set first (the `--profiles` directory), then among
//! the embedded defaults. So an operator's `ci.toml` can say `extends = "build"` without copying
//! `build.toml` into the directory; the embedded parent does not become runnable by that. A file
//! named like an embedded default that extends that name (`agent.toml` with `extends = "agent"`)
//! is a cycle, not a reference to the default: name it differently.

use std::collections::BTreeMap;
use std::path::PathBuf;

use toml::{Table, Value};

use crate::ProfileError;

/// The item that stands for the inherited list.
pub const ELLIPSIS: &str = "...";

/// One profile file, parsed into a table (or not).
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Where it came from.
    pub path: PathBuf,
    /// The table, or the reason it could not be parsed (reported on its own).
    pub table: Result<Table, ()>,
}

/// Profiles that can be parents: the set being loaded, and the embedded defaults behind it.
#[derive(Debug)]
pub(crate) struct Scope<'a> {
    /// The set being loaded, by name.
    pub local: &'a BTreeMap<String, Source>,
    /// Parents looked up when the local set has no such name (empty when loading the defaults).
    pub fallback: &'a BTreeMap<String, Source>,
}

impl Scope<'_> {
    fn lookup(&self, name: &str, in_fallback: bool) -> Option<(&Source, bool)> {
        if !in_fallback {
            if let Some(s) = self.local.get(name) {
                return Some((s, false));
            }
        }
        self.fallback.get(name).map(|s| (s, true))
    }
}

/// The complete table of local profile `name`: its ancestors merged, oldest first, and the names
/// of the chain (`[name, parent, grandparent, ...]`). Errors are reported against `name`'s file.
pub(crate) fn resolve(
    scope: &Scope<'_>,
    name: &str,
) -> Result<(Table, Vec<String>), Vec<ProfileError>> {
    let own = &scope.local[name];
    let err = |value: String, reason: String, hint: Option<String>| {
        vec![ProfileError {
            file: own.path.clone(),
            key: Some("extends".into()),
            value: Some(value),
            reason,
            hint,
        }]
    };
    // Walk up the chain, collecting tables youngest first.
    let mut chain = vec![name.to_string()];
    let mut tables: Vec<&Table> = Vec::new();
    let mut current = own;
    let mut in_fallback = false;
    loop {
        let Ok(table) = &current.table else {
            // The file itself could not be parsed: that error is reported on its own. A child of
            // a broken parent says so.
            if tables.is_empty() {
                return Err(Vec::new());
            }
            let parent = chain.last().cloned().unwrap_or_default();
            return Err(err(
                format!("{parent:?}"),
                format!(
                    "parent profile {parent} has errors (listed for {}); chain: {}",
                    current.path.display(),
                    chain.join(" -> ")
                ),
                None,
            ));
        };
        tables.push(table);
        let Some(parent) = table.get("extends") else {
            break;
        };
        let Value::String(parent) = parent else {
            return Err(err(
                parent.to_string(),
                "must be the name of a profile (a string)".into(),
                Some("write extends = \"agent\" at the top of the file, before any [table]".into()),
            ));
        };
        if let Some(pos) = chain.iter().position(|n| n == parent) {
            let mut cycle = chain[pos..].to_vec();
            cycle.push(parent.clone());
            let hint =
                (pos == 0 && chain.len() == 1 && scope.fallback.contains_key(parent)).then(|| {
                    format!(
                        "to build on the embedded default {parent:?}, give this file another name"
                    )
                });
            return Err(err(
                format!("{:?}", own_extends(scope, name)),
                format!("inheritance cycle: {}", cycle.join(" -> ")),
                hint,
            ));
        }
        chain.push(parent.clone());
        match scope.lookup(parent, in_fallback) {
            Some((src, fb)) => {
                current = src;
                in_fallback = fb;
            }
            None => {
                let mut known: Vec<&str> = scope.local.keys().map(String::as_str).collect();
                known.extend(scope.fallback.keys().map(String::as_str));
                known.sort_unstable();
                known.dedup();
                return Err(err(
                    format!("{:?}", own_extends(scope, name)),
                    format!(
                        "unknown parent profile {parent:?} (chain: {})",
                        chain.join(" -> ")
                    ),
                    Some(format!("known profiles: {}", known.join(", "))),
                ));
            }
        }
    }
    // Merge oldest first.
    let mut merged = Table::new();
    let mut errors = Vec::new();
    // Errors (a misplaced "...") are reported against this profile's file, even when an ancestor
    // wrote it: the ancestor's own load reports it against its file as well.
    for table in tables.iter().rev() {
        let mut child = (*table).clone();
        child.remove("extends");
        merge_table(&mut merged, child, "", &own.path, &mut errors);
    }
    if errors.is_empty() {
        Ok((merged, chain))
    } else {
        Err(errors)
    }
}

fn own_extends(scope: &Scope<'_>, name: &str) -> String {
    match &scope.local[name].table {
        Ok(t) => t
            .get("extends")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        Err(()) => String::new(),
    }
}

/// Merge `child` into `base` by the rules in the module docs. `prefix` is the dotted key of
/// `base` (empty at the top).
pub(crate) fn merge_table(
    base: &mut Table,
    child: Table,
    prefix: &str,
    file: &std::path::Path,
    errors: &mut Vec<ProfileError>,
) {
    for (key, value) in child {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let merged = match (base.remove(&key), value) {
            (Some(Value::Table(mut old)), Value::Table(new)) => {
                merge_table(&mut old, new, &dotted, file, errors);
                Value::Table(old)
            }
            (old, Value::Array(new)) => Value::Array(merge_array(old, new, &dotted, file, errors)),
            (_, new) => new,
        };
        base.insert(key, merged);
    }
}

fn merge_array(
    old: Option<Value>,
    new: Vec<Value>,
    dotted: &str,
    file: &std::path::Path,
    errors: &mut Vec<ProfileError>,
) -> Vec<Value> {
    let is_ellipsis = |v: &Value| v.as_str() == Some(ELLIPSIS);
    if let Some(pos) = new.iter().skip(1).position(is_ellipsis) {
        errors.push(ProfileError {
            file: file.to_path_buf(),
            key: Some(dotted.to_string()),
            value: Some(Value::Array(new.clone()).to_string()),
            reason: format!(
                "\"...\" may only be the first item (item {} is \"...\"); it stands for the inherited list",
                pos + 2
            ),
            hint: Some("write [\"...\", \"new item\"] to append to the parent's list".into()),
        });
        return new;
    }
    if !new.first().is_some_and(is_ellipsis) {
        return new;
    }
    let mut list = match old {
        Some(Value::Array(a)) => a,
        Some(other) => {
            errors.push(ProfileError {
                file: file.to_path_buf(),
                key: Some(dotted.to_string()),
                value: Some(Value::Array(new.clone()).to_string()),
                reason: format!(
                    "\"...\" appends to an inherited list, but the parent's value is {other}"
                ),
                hint: None,
            });
            return new;
        }
        None => crate::default_list(dotted)
            .into_iter()
            .map(Value::String)
            .collect(),
    };
    for v in new.into_iter().skip(1) {
        if !list.contains(&v) {
            list.push(v);
        }
    }
    list
}
