//! Aliases: `alias add|remove|list`. Each operation takes typed arguments and returns a
//! serialisable value; [`execute`] runs a parsed [`AliasCommand`] and writes the CLI's
//! report.

use std::io::Write;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::format::{write_listing, ListFormat, Table};
use super::AdminContext;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AliasCommand {
    /// Deliver mail for ALIAS to USER (who may also send as ALIAS).
    Add {
        /// The alias address, in the user's domain.
        alias: String,
        /// The user it delivers to.
        user: String,
    },
    /// Remove an alias (the user keeps their mail).
    Remove {
        /// The alias address.
        alias: String,
    },
    /// List aliases, of one domain or all.
    List {
        /// Only this domain.
        domain: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: ListFormat,
    },
}

/// An alias and the user it delivers to.
#[derive(Debug, Clone, Serialize)]
pub struct Alias {
    pub alias: String,
    pub target: String,
}

/// Runs an `alias` command and writes its report to `out`.
pub fn execute(ctx: &AdminContext, command: AliasCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        AliasCommand::Add { alias, user } => {
            add(ctx, &alias, &user)?;
            writeln!(out, "{alias} now delivers to {user}")?;
        }
        AliasCommand::Remove { alias } => {
            remove(ctx, &alias)?;
            writeln!(out, "removed alias {alias}")?;
        }
        AliasCommand::List { domain, format } => {
            let aliases = list(ctx, domain.as_deref())?;
            write_listing(
                format,
                &aliases,
                || {
                    let mut t = Table::new(&["ALIAS", "DELIVERS TO"]);
                    for a in &aliases {
                        t.push(vec![a.alias.clone(), a.target.clone()]);
                    }
                    t
                },
                out,
            )?;
        }
    }
    Ok(())
}

pub fn add(ctx: &AdminContext, alias: &str, user: &str) -> anyhow::Result<()> {
    Ok(ctx.store.add_alias(alias, user)?)
}

pub fn remove(ctx: &AdminContext, alias: &str) -> anyhow::Result<()> {
    Ok(ctx.store.remove_alias(alias)?)
}

/// Aliases of one domain, or of every domain.
pub fn list(ctx: &AdminContext, domain: Option<&str>) -> anyhow::Result<Vec<Alias>> {
    let domains = super::domain_names(ctx, domain)?;
    let mut list = Vec::new();
    for d in domains {
        for (alias, target) in ctx.store.aliases(&d)? {
            list.push(Alias { alias, target });
        }
    }
    Ok(list)
}
