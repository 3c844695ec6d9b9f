//! Backup and restore. A backup is a directory only its owner can read:
//!
//! ```text
//!   DIR/              0700
//!     backup.json     what it holds: when, from where, schema version, DKIM keys
//!     db/             a consistent RocksDB checkpoint of <data_dir>/db
//!     dkim/           every domain's DKIM private key (0600)
//! ```
//!
//! The server writes only inside its data directory (the systemd unit lets it write
//! nothing else: `ProtectSystem=strict`, `PrivateTmp`): [`checkpoint`] puts the
//! checkpoint into `<data_dir>/backup-staging/` (hard links where RocksDB can, so it is
//! quick) and says where; the admin's own process then moves or copies it to the
//! destination with private modes, adds the DKIM keys and the manifest ([`finish`]), and
//! removes the staging copy. [`restore`] runs in the admin's process with the server
//! stopped: it refuses while a server holds the data directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use understudy_storage::{Store, StoreError, SCHEMA_VERSION};

use super::AdminContext;
use crate::config::Config;

/// The manifest's name in a backup directory.
pub const MANIFEST: &str = "backup.json";
/// Where the server stages checkpoints, inside its data directory.
const STAGING: &str = "backup-staging";

/// A domain's DKIM key as the database names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DkimKeyFile {
    pub domain: String,
    pub selector: String,
    /// Where the server reads it (`domain.dkim_key_path`).
    pub path: PathBuf,
    /// Its name under `dkim/` in the backup.
    pub file: String,
}

/// A checkpoint the server (or the CLI with no server) wrote under the data directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub staging: PathBuf,
    pub created_at: i64,
    pub hostname: String,
    pub data_dir: PathBuf,
    pub schema_version: u32,
    pub domains: usize,
    pub users: usize,
    pub dkim_keys: Vec<DkimKeyFile>,
}

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of the backup directory.
    pub format: u32,
    pub created_at: i64,
    pub hostname: String,
    pub data_dir: PathBuf,
    pub schema_version: u32,
    pub domains: usize,
    pub users: usize,
    pub dkim_keys: Vec<DkimKeyFile>,
}

/// Writes a consistent checkpoint of the database under `<data_dir>/backup-staging/`
/// and lists the DKIM keys the domains use. Safe while the server serves.
pub fn checkpoint(ctx: &AdminContext) -> anyhow::Result<Checkpoint> {
    let store = ctx.store;
    let parent = ctx.config.data_dir.join(STAGING);
    private_dir(&parent)?;
    let now = store.now();
    let staging = parent.join(format!("{now}-{}", std::process::id()));
    let staging = unique(staging);
    store
        .checkpoint(&staging)
        .with_context(|| format!("cannot write a checkpoint into {}", staging.display()))?;
    let mut dkim_keys = Vec::new();
    let mut users = 0;
    let domains = store.domains()?;
    for d in &domains {
        users += store.users(&d.name)?.len();
        if let (Some(selector), Some(path)) = (&d.dkim_selector, &d.dkim_key_path) {
            dkim_keys.push(DkimKeyFile {
                domain: d.name.clone(),
                selector: selector.clone(),
                path: PathBuf::from(path),
                file: format!("{}.{}.pem", d.name, selector),
            });
        }
    }
    Ok(Checkpoint {
        staging,
        created_at: now,
        hostname: ctx.config.hostname.clone(),
        data_dir: ctx.config.data_dir.clone(),
        schema_version: SCHEMA_VERSION,
        domains: domains.len(),
        users,
        dkim_keys,
    })
}

fn unique(path: PathBuf) -> PathBuf {
    let mut candidate = path.clone();
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_extension(n.to_string());
        n += 1;
    }
    candidate
}

/// What a finished backup holds.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// In the admin's process: moves (or copies, across file systems) the staged
/// checkpoint to `target/db`, copies the DKIM keys to `target/dkim/`, writes the
/// manifest, makes everything owner-only (0700 directories, 0600 files) and removes the
/// staging copy. `target` must not exist.
pub fn finish(checkpoint: &Checkpoint, target: &Path) -> anyhow::Result<BackupReport> {
    let result = finish_into(checkpoint, target);
    // Whatever happened, the staging copy must not stay behind in the data directory.
    if checkpoint.staging.exists() {
        let _ = std::fs::remove_dir_all(&checkpoint.staging);
    }
    result
}

fn finish_into(checkpoint: &Checkpoint, target: &Path) -> anyhow::Result<BackupReport> {
    if target.exists() {
        bail!(
            "{} already exists; a backup goes into a new directory",
            target.display()
        );
    }
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !parent.is_dir() {
            bail!(
                "{} does not exist; create it first (e.g. install -d -m 0700 {})",
                parent.display(),
                parent.display()
            );
        }
    }
    private_dir(target)?;
    let db = target.join("db");
    match std::fs::rename(&checkpoint.staging, &db) {
        Ok(()) => {}
        // Another file system: copy (the staging copy is removed by the caller).
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy_tree(&checkpoint.staging, &db)?,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot move {} to {}", checkpoint.staging.display(), db.display()))
        }
    }
    make_private(&db)?;
    if !checkpoint.dkim_keys.is_empty() {
        let dkim = target.join("dkim");
        private_dir(&dkim)?;
        for key in &checkpoint.dkim_keys {
            let bytes = std::fs::read(&key.path).with_context(|| {
                format!(
                    "cannot read the DKIM key of {} at {}",
                    key.domain,
                    key.path.display()
                )
            })?;
            write_private(&dkim.join(&key.file), &bytes)?;
        }
    }
    let manifest = Manifest {
        format: 1,
        created_at: checkpoint.created_at,
        hostname: checkpoint.hostname.clone(),
        data_dir: checkpoint.data_dir.clone(),
        schema_version: checkpoint.schema_version,
        domains: checkpoint.domains,
        users: checkpoint.users,
        dkim_keys: checkpoint.dkim_keys.clone(),
    };
    write_private(&target.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(BackupReport {
        dir: target.to_path_buf(),
        manifest,
    })
}

pub fn print_backup(report: &BackupReport, out: &mut dyn Write) -> std::io::Result<()> {
    let m = &report.manifest;
    writeln!(
        out,
        "backup written to {} ({} domain(s), {} user(s), {} DKIM key(s)); only its owner can read it",
        report.dir.display(),
        m.domains,
        m.users,
        m.dkim_keys.len()
    )?;
    writeln!(
        out,
        "restore with: understudy restore {} (with the server stopped)",
        report.dir.display()
    )
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub db: PathBuf,
    pub previous: Option<PathBuf>,
    pub dkim_restored: Vec<PathBuf>,
    pub dkim_unchanged: Vec<PathBuf>,
    pub manifest: Manifest,
}

/// In the admin's process, with the server stopped: puts the backup's database in
/// place of `<data_dir>/db` (the current one is kept beside it), and its DKIM keys back
/// where the database names them. Refuses while any process holds the database.
pub fn restore(config: &Config, dir: &Path) -> anyhow::Result<RestoreReport> {
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read(&manifest_path).with_context(|| {
        format!(
            "{} is not an Understudy backup (no readable {MANIFEST})",
            dir.display()
        )
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&text).with_context(|| format!("{} is damaged", manifest_path.display()))?;
    let source = dir.join("db");
    if !source.join("CURRENT").is_file() {
        bail!("{} holds no database", source.display());
    }
    if manifest.schema_version > SCHEMA_VERSION {
        bail!(
            "the backup has schema version {}, newer than this binary supports ({SCHEMA_VERSION}); restore it with the release that wrote it",
            manifest.schema_version
        );
    }
    let db = config.db_dir();
    // The lock decides: whoever holds it (the server, an admin command) is running.
    let previous = if db.join("CURRENT").exists() {
        match Store::open(&db) {
            Ok(store) => drop(store),
            Err(StoreError::Locked { pid, .. }) => bail!(
                "the server is running on {}{}: stop it first (systemctl stop understudy), then restore",
                config.data_dir.display(),
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            // A damaged database is what one restores over: keep it aside all the same.
            Err(_) => {}
        }
        let aside = unique(config.data_dir.join(format!(
            "db.before-restore-{}",
            time::OffsetDateTime::now_utc().unix_timestamp()
        )));
        std::fs::rename(&db, &aside).with_context(|| format!("cannot move {} aside", db.display()))?;
        Some(aside)
    } else {
        private_dir(&config.data_dir)?;
        if db.exists() {
            std::fs::remove_dir_all(&db).with_context(|| format!("cannot clear {}", db.display()))?;
        }
        None
    };
    let owner = owner_of(&config.data_dir);
    let copied = copy_tree(&source, &db).and_then(|()| make_private(&db));
    let opened = copied.and_then(|()| {
        // Our own lock file from the backup's source is not in the checkpoint; opening
        // checks the schema and that RocksDB reads it.
        Store::open(&db)
            .map(drop)
            .with_context(|| format!("the restored database in {} does not open", db.display()))
    });
    if let Err(e) = opened {
        let _ = std::fs::remove_dir_all(&db);
        if let Some(aside) = &previous {
            let _ = std::fs::rename(aside, &db);
        }
        return Err(e.context("restore failed; the previous database is back in place"));
    }
    chown_tree(&db, owner)?;
    let mut dkim_restored = Vec::new();
    let mut dkim_unchanged = Vec::new();
    for key in &manifest.dkim_keys {
        let bytes = std::fs::read(dir.join("dkim").join(&key.file))
            .with_context(|| format!("the backup lacks the DKIM key {}", key.file))?;
        if std::fs::read(&key.path).ok().as_deref() == Some(&bytes[..]) {
            dkim_unchanged.push(key.path.clone());
            continue;
        }
        if let Some(parent) = key.path.parent() {
            if !parent.exists() {
                private_dir(parent)?;
                chown_tree(parent, owner)?;
            }
        }
        write_private(&key.path, &bytes)?;
        chown_tree(&key.path, owner)?;
        dkim_restored.push(key.path.clone());
    }
    Ok(RestoreReport {
        db,
        previous,
        dkim_restored,
        dkim_unchanged,
        manifest,
    })
}

pub fn print_restore(r: &RestoreReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "restored the database of {} ({} domain(s), {} user(s)) into {}",
        crate::outage::notify::format_time(r.manifest.created_at),
        r.manifest.domains,
        r.manifest.users,
        r.db.display()
    )?;
    if let Some(previous) = &r.previous {
        writeln!(
            out,
            "the database it replaced is kept in {} (remove it once the restore is checked)",
            previous.display()
        )?;
    }
    for p in &r.dkim_restored {
        writeln!(out, "DKIM key restored: {}", p.display())?;
    }
    for p in &r.dkim_unchanged {
        writeln!(out, "DKIM key already in place: {}", p.display())?;
    }
    writeln!(out, "start the server now (systemctl start understudy)")
}

/// Creates `dir` (and parents) owner-only, or makes an existing one so.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Directories 0700, files 0600, all the way down. RocksDB writes its files with the
/// process umask (0644 outside the unit), and a checkpoint's hard links share the
/// database's inodes, so the live database becomes owner-only too.
fn make_private(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(root)? {
            make_private(&entry?.path())?;
        }
    } else if meta.is_file() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    private_dir(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

/// The owner of `path`, when this process runs as root and it is someone else: files
/// root restores into the data directory must stay readable by the service's user.
fn owner_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let meta = std::fs::metadata(path).ok()?;
    (euid == 0 && meta.uid() != 0).then(|| (meta.uid(), meta.gid()))
}

/// Run as root on a data directory owned by someone else (the service user): makes
/// everything under it that user's again.
pub fn give_back_to_owner(data_dir: &Path) -> anyhow::Result<()> {
    chown_tree(data_dir, owner_of(data_dir))
}

fn chown_tree(root: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    std::os::unix::fs::lchown(root, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", root.display()))?;
    if std::fs::symlink_metadata(root)?.is_dir() {
        for entry in std::fs::read_dir(root)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    Ok(())
}
