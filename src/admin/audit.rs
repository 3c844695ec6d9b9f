//! The audit log of admin actions: who did what to what, when, from where, and whether
//! it worked, kept in the store (`Store::append_audit`) and shown in the console. The
//! console and the JSON API record each action they run; the admin socket records the
//! CLI's commands that change something (reads are not logged).

use understudy_storage::admins::AuditEntry;
use understudy_storage::Store;

use super::Command;

/// An action about to be recorded.
#[derive(Debug, Clone, Default)]
pub struct Action {
    /// e.g. "outage start", "user passwd".
    pub action: String,
    pub target: String,
    pub domain: Option<String>,
}

impl Action {
    pub fn new(action: impl Into<String>, target: impl Into<String>) -> Action {
        let target = target.into();
        Action {
            domain: domain_of(&target),
            action: action.into(),
            target,
        }
    }
}

impl Action {
    /// What the CLI's audit entry says for `command` (its name and
    /// [`Command::target`]): the console and the API record a change they run as the
    /// CLI would, from one description.
    pub fn of(command: &Command) -> Action {
        describe(command).unwrap_or_else(|| {
            let action = describe_names(command)
                .iter()
                .map(|n| kebab(n))
                .collect::<Vec<_>>()
                .join(" ");
            Action::new(action, command.target().unwrap_or_default())
        })
    }
}

/// The domain an action's target belongs to: the part after `@`, or the target itself
/// when it looks like a domain.
pub fn domain_of(target: &str) -> Option<String> {
    let t = target.trim();
    let d = t.rsplit_once('@').map(|(_, d)| d).unwrap_or(t);
    (d.contains('.') && !d.contains(char::is_whitespace)).then(|| d.to_ascii_lowercase())
}

/// Appends one entry; a store that cannot take it is logged (the action itself has
/// already happened and is not undone).
pub fn record(store: &Store, actor: &str, source: &str, action: &Action, result: Result<(), &str>) {
    let entry = AuditEntry {
        at: store.now(),
        actor: actor.to_string(),
        action: action.action.clone(),
        target: action.target.clone(),
        domain: action.domain.clone(),
        source: source.to_string(),
        ok: result.is_ok(),
        detail: result.err().unwrap_or_default().chars().take(500).collect(),
    };
    tracing::info!(
        actor,
        source,
        action = %entry.action,
        target = %entry.target,
        ok = entry.ok,
        "admin action"
    );
    if let Err(e) = store.append_audit(&entry) {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

/// "user deactivate" and its target for a command that changes something; `None` for a
/// read (list, show, status, track, client-setup). The target is [`Command::target`],
/// the one description of what a command acts on (the log line says the same), never
/// the command's arguments wholesale: they may hold a password hash or an import file.
pub fn describe(command: &Command) -> Option<Action> {
    let names = describe_names(command);
    let last = names.last().map(String::as_str).unwrap_or("");
    if matches!(last, "List" | "Show" | "Status")
        || matches!(names.first().map(String::as_str), Some("Track" | "ClientSetup"))
    {
        return None;
    }
    let action = names.iter().map(|n| kebab(n)).collect::<Vec<_>>().join(" ");
    Some(Action::new(action, command.target().unwrap_or_default()))
}

/// The variant names for the log ("User Deactivate").
pub fn command_name(command: &Command) -> String {
    describe_names(command).join(" ")
}

/// The command's variant names, outermost first: the single upper-case keys of its
/// serialised form (a unit variant is a string; a struct variant's fields end it).
fn describe_names(command: &Command) -> Vec<String> {
    let mut names = Vec::new();
    let mut value = serde_json::to_value(command).unwrap_or_default();
    loop {
        match value {
            serde_json::Value::String(s) => {
                names.push(s);
                break;
            }
            serde_json::Value::Object(map)
                if map.len() == 1 && map.keys().all(|k| k.starts_with(char::is_uppercase)) =>
            {
                let Some((k, v)) = map.into_iter().next() else {
                    break;
                };
                names.push(k);
                value = v;
            }
            _ => break,
        }
    }
    names
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::admin::outage::OutageCommand;
    use crate::admin::users::UserCommand;

    #[test]
    fn changes_are_described_and_reads_are_not() {
        let a = describe(&Command::User(UserCommand::Passwd {
            address: "anna@Example.com".into(),
            stdin: true,
            force_reset: false,
            password_hash: Some("$argon2id$secret".into()),
            password_traits: None,
        }))
        .unwrap();
        assert_eq!(a.action, "user passwd");
        assert_eq!(a.target, "anna@Example.com");
        assert_eq!(a.domain.as_deref(), Some("example.com"));
        let a = describe(&Command::Outage(OutageCommand::Start {
            domain: "example.com".into(),
            reason: "maintenance".into(),
        }))
        .unwrap();
        assert_eq!(
            (a.action.as_str(), a.target.as_str()),
            ("outage start", "example.com")
        );
        // One description of the target: the log line's.
        let alias = Command::Alias(crate::admin::aliases::AliasCommand::Add {
            alias: "info@example.com".into(),
            user: "anna@example.com".into(),
        });
        let a = describe(&alias).unwrap();
        assert_eq!(
            (a.action.as_str(), Some(a.target.clone())),
            ("alias add", alias.target())
        );
        let deactivate = Command::User(UserCommand::Deactivate {
            address: "anna@example.com".into(),
        });
        assert_eq!(command_name(&deactivate), "User Deactivate");
        assert!(describe(&Command::User(UserCommand::List {
            domain: None,
            format: Default::default(),
        }))
        .is_none());
        assert!(describe(&Command::Outage(OutageCommand::Status {
            domain: None,
            history: false,
            format: Default::default(),
        }))
        .is_none());
    }
}
