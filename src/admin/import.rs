//! `understudy user import FILE.csv`: creates or updates users from a CSV file so an
//! administrator can get hundreds of users ready before a disaster.
//!
//! Columns: address, display name, password, aliases (separated by `;`), status
//! (`active` or `inactive`); a header row (first cell `address`) is optional and
//! trailing columns may be left out. An empty cell keeps the current value; an empty
//! password for a new user gets a generated one, shown once. A non-empty alias cell is
//! the user's complete alias list. Each row is checked whole (address, password policy,
//! duplicates in the file, aliases owned by others) and applied in one synced write, so
//! a bad row changes nothing and the good rows are applied; running the same file twice
//! changes nothing the second time (a password that already verifies is left alone).

use std::collections::HashMap;
use std::io::Write;

use anyhow::bail;
use serde::Serialize;
use understudy_protocol::Secret;
use understudy_storage::accounts::normalize_address;
use understudy_storage::provisioning::{UserChange, UserSpec};
use understudy_storage::UserStatus;

use super::AdminContext;
use crate::auth;

/// One CSV record with the line it starts on.
pub struct Row {
    pub line: u64,
    pub fields: Vec<String>,
}

/// The records of an import file, before any store is touched: data rows (blank rows
/// and a header row dropped) and one message per record that is not valid CSV. Public so
/// the fuzz target in `fuzz/` reaches it without opening a store.
pub fn parse_rows(text: &str) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    for record in reader.records() {
        match record {
            Ok(r) => {
                let fields: Vec<String> = r.iter().map(str::to_string).collect();
                if fields.iter().all(String::is_empty) {
                    continue;
                }
                let line = r.position().map(|p| p.line()).unwrap_or(0);
                rows.push(Row { line, fields });
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                errors.push(format!("line {line}: not valid CSV: {e}"));
            }
        }
    }
    if rows.first().is_some_and(|r| {
        r.fields
            .first()
            .is_some_and(|f| f.eq_ignore_ascii_case("address"))
    }) {
        rows.remove(0);
    }
    (rows, errors)
}

/// One reported line of an import, in file order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportLine {
    /// A record that is not valid CSV (the message says on which line).
    NotCsv(String),
    /// A row that created or updated a user (or, in a dry run, would have).
    Changed {
        line: u64,
        address: String,
        change: UserChange,
    },
    /// A row refused whole: nothing of it was applied.
    Failed { line: u64, error: String },
}

/// What an import did: the lines to report and the tally.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub lines: Vec<ImportLine>,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub errors: usize,
}

/// Imports `text` (the CSV file's contents): each good row is applied (unless
/// `dry_run`), each bad one reported; generated passwords go to `ctx.events.secret`.
pub fn run(ctx: &AdminContext, text: &str, dry_run: bool) -> ImportReport {
    let mut report = ImportReport {
        dry_run,
        ..ImportReport::default()
    };
    let (rows, errors) = parse_rows(text);
    for error in errors {
        report.lines.push(ImportLine::NotCsv(error));
        report.errors += 1;
    }

    let total = rows.len() as u64;
    // Addresses and aliases claimed by earlier rows of this file, with their line.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut alias_owner: HashMap<String, (String, u64)> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        match import_row(ctx, row, dry_run, &mut seen, &mut alias_owner) {
            Ok((address, change)) => {
                if change.is_empty() {
                    report.unchanged += 1;
                } else {
                    if change.created {
                        report.created += 1;
                    } else {
                        report.updated += 1;
                    }
                    report.lines.push(ImportLine::Changed {
                        line: row.line,
                        address,
                        change,
                    });
                }
            }
            Err(e) => {
                report.errors += 1;
                report.lines.push(ImportLine::Failed {
                    line: row.line,
                    error: format!("{e:#}"),
                });
            }
        }
        ctx.events.progress(i as u64 + 1, total);
    }
    report
}

/// Writes one line per created or updated user and per error, then a summary; fails
/// (after writing) if any row failed.
pub fn print(report: &ImportReport, out: &mut dyn Write) -> anyhow::Result<()> {
    let dry_run = report.dry_run;
    for line in &report.lines {
        match line {
            ImportLine::NotCsv(error) => writeln!(out, "{error}")?,
            ImportLine::Changed {
                line,
                address,
                change,
            } => writeln!(out, "line {line}: {}", describe(address, change, dry_run))?,
            ImportLine::Failed { line, error } => writeln!(out, "line {line}: {error}")?,
        }
    }
    let verb = if dry_run {
        "dry run, nothing changed: would have"
    } else {
        "import:"
    };
    writeln!(
        out,
        "{verb} {} created, {} updated, {} unchanged, {} with errors",
        report.created, report.updated, report.unchanged, report.errors
    )?;
    if report.errors > 0 {
        bail!(
            "{} row(s) had errors (see above); the other rows were {}",
            report.errors,
            if dry_run { "checked" } else { "applied" }
        );
    }
    Ok(())
}

fn import_row(
    ctx: &AdminContext,
    row: &Row,
    dry_run: bool,
    seen: &mut HashMap<String, u64>,
    alias_owner: &mut HashMap<String, (String, u64)>,
) -> anyhow::Result<(String, UserChange)> {
    let f = &row.fields;
    if f.len() > 5 {
        bail!(
            "expected at most 5 columns (address, name, password, aliases, status), found {}",
            f.len()
        );
    }
    let cell = |i: usize| f.get(i).map(String::as_str).unwrap_or("");
    let address = normalize_address(cell(0))?;
    if let Some(first) = seen.get(&address) {
        bail!("{address} appears again (first on line {first}); row skipped");
    }
    seen.insert(address.clone(), row.line);
    if let Some((owner, line)) = alias_owner.get(&address) {
        bail!("{address} is an alias of {owner} on line {line}");
    }
    let status = match cell(4).to_ascii_lowercase().as_str() {
        "" => None,
        "active" => Some(UserStatus::Active),
        "inactive" => Some(UserStatus::Inactive),
        other => bail!("status must be active or inactive, not '{other}'"),
    };
    let aliases = match cell(3) {
        "" => None,
        list => {
            let mut out = Vec::new();
            for alias in list.split(';').map(str::trim).filter(|a| !a.is_empty()) {
                let alias = normalize_address(alias)?;
                if let Some(line) = seen.get(&alias) {
                    bail!("alias {alias} is a user on line {line}");
                }
                if let Some((owner, line)) = alias_owner.get(&alias) {
                    if *owner != address {
                        bail!("alias {alias} is already given to {owner} on line {line}");
                    }
                }
                out.push(alias);
            }
            Some(out)
        }
    };
    let existing = ctx.store.user_by_address(&address)?;
    let password = cell(2);
    let mut generated = None;
    let password_hash = if !password.is_empty() {
        crate::password_policy::check_policy(&ctx.config.password_policy, password)
            .map_err(|rule| anyhow::anyhow!("password for {address} refused: {rule}"))?;
        let password = Secret::new(password);
        match existing.as_ref().and_then(|u| u.password_hash.as_deref()) {
            Some(phc) if auth::verify_password(&password, phc) => None,
            _ if dry_run => Some(String::from("(new hash)")),
            _ => Some(auth::hash_password(&password)?),
        }
    } else if existing.is_none() {
        if dry_run {
            Some(String::from("(generated)"))
        } else {
            let password = Secret::new(auth::random_password());
            let hash = auth::hash_password(&password)?;
            generated = Some(password);
            Some(hash)
        }
    } else {
        None
    };
    let spec = UserSpec {
        address: address.clone(),
        display_name: Some(cell(1).to_string()).filter(|n| !n.is_empty()),
        password_hash,
        aliases,
        status,
    };
    let change = ctx.store.upsert_user(&spec, dry_run)?;
    for alias in spec.aliases.iter().flatten() {
        alias_owner.insert(alias.clone(), (address.clone(), row.line));
    }
    if let Some(password) = generated {
        ctx.events.secret(&format!("{address},{}", password.expose()));
    }
    // As `user deactivate` and `user passwd` do: sessions opened before end now.
    if !dry_run && !change.created && (change.status == Some(UserStatus::Inactive) || change.password) {
        ctx.events.revoked(change.user_id);
    }
    Ok((address, change))
}

fn describe(address: &str, change: &UserChange, dry_run: bool) -> String {
    let mut parts = Vec::new();
    if change.name {
        parts.push("name".to_string());
    }
    if change.password {
        parts.push("password".to_string());
    }
    if let Some(status) = change.status {
        parts.push(format!("status {}", format!("{status:?}").to_lowercase()));
    }
    for a in &change.aliases_added {
        parts.push(format!("+alias {a}"));
    }
    for a in &change.aliases_removed {
        parts.push(format!("-alias {a}"));
    }
    let what = match (change.created, dry_run) {
        (true, true) => "would create",
        (true, false) => "created",
        (false, true) => "would update",
        (false, false) => "updated",
    };
    if parts.is_empty() {
        format!("{what} {address}")
    } else {
        format!("{what} {address}: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminEvents;
    use crate::config::Config;
    use std::cell::RefCell;
    use understudy_storage::{Domain, Store};

    #[derive(Default)]
    struct Recorder {
        secrets: RefCell<Vec<String>>,
        revoked: RefCell<Vec<u64>>,
    }

    impl AdminEvents for Recorder {
        fn revoked(&self, user_id: u64) {
            self.revoked.borrow_mut().push(user_id);
        }
        fn progress(&self, _done: u64, _total: u64) {}
        fn secret(&self, line: &str) {
            self.secrets.borrow_mut().push(line.to_string());
        }
        fn outage_changed(&self) {}
        fn queue_changed(&self) {}
    }

    fn import(store: &Store, events: &Recorder, text: &str, dry_run: bool) -> (String, bool) {
        let config = Config::dev().unwrap();
        let ctx = AdminContext {
            store,
            config: &config,
            events,
        };
        let mut out = Vec::new();
        let ok = print(&run(&ctx, text, dry_run), &mut out).is_ok();
        (String::from_utf8(out).unwrap(), ok)
    }

    #[test]
    fn bad_rows_are_reported_by_line_and_good_rows_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.add_domain(&Domain::new("example.com")).unwrap();
        let csv = "address,name,password,aliases,status\n\
                   anna@example.com,Anna,Correct1horse,a@example.com;anna.b@example.com,active\n\
                   bob@example.com,Bob,,,\n\
                   not-an-address,X,,,\n\
                   anna@example.com,Dup,,,\n\
                   carl@example.com,Carl,short,,\n\
                   dora@example.com,Dora,,a@example.com,\n\
                   eve@example.com,Eve,,,sleeping\n\
                   fred@other.org,Fred,,,\n";
        let events = Recorder::default();
        let (dry, ok) = import(&store, &events, csv, true);
        assert!(!ok);
        assert!(dry.contains("line 2: would create anna@example.com"), "{dry}");
        assert!(store.user_by_address("anna@example.com").unwrap().is_none());
        let (out, ok) = import(&store, &events, csv, false);
        assert!(!ok, "{out}");
        for expected in [
            "line 4: 'not-an-address' is not a valid mail address",
            "line 5: anna@example.com appears again (first on line 2)",
            "line 6: password for carl@example.com refused: the password needs at least 8 characters",
            "line 7: alias a@example.com is already given to anna@example.com on line 2",
            "line 8: status must be active or inactive, not 'sleeping'",
            "line 9: other.org is not a protected domain; add it first",
            "import: 2 created, 0 updated, 0 unchanged, 6 with errors",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
        }
        assert_eq!(events.secrets.borrow().len(), 1);
        assert!(events.secrets.borrow()[0].starts_with("bob@example.com,"));
        let anna = store.user_by_address("anna@example.com").unwrap().unwrap();
        assert_eq!(store.aliases_of(anna.id).unwrap().len(), 2);
        assert!(store.user_by_address("carl@example.com").unwrap().is_none());
        // Again: nothing changes, no new password is generated.
        let (again, _) = import(&store, &events, csv, false);
        assert!(
            again.contains("import: 0 created, 0 updated, 2 unchanged, 6 with errors"),
            "{again}"
        );
        assert_eq!(events.secrets.borrow().len(), 1);
        // Deactivating through the file ends the user's sessions.
        let (_, ok) = import(&store, &events, "bob@example.com,,,,inactive\n", false);
        assert!(ok);
        let bob = store.user_by_address("bob@example.com").unwrap().unwrap();
        assert_eq!(*events.revoked.borrow(), [bob.id]);
    }
}
