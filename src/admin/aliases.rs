//! Aliases: `alias add|remove|list`. Each operation takes typed arguments and returns a
//! serialisable value; [`execute`] runs a parsed [`AliasCommand`] and writes the CLI's
//! report.

use std::io::Write;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::AdminContext;

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum AliasCommand {
    /// Deliver mail for ALIAS to USER.
    Add {
        alias: String,
        user: String,
    },
    Remove {
        alias: String,
    },
    List {
        domain: Option<String>,
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
        AliasCommand::List { domain } => {
            for a in list(ctx, domain.as_deref())? {
                writeln!(out, "{}\t-> {}", a.alias, a.target)?;
            }
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
