//! The failover drill: the test of docs/operations.md ("Test failover", step 7 of the
//! first-time setup) run by the console against a primary that is up. It starts a
//! manual outage (`outage start`), sends a message from outside to a user through the
//! server's own MX listener (a real SMTP transaction), sees it spooled here, logs in
//! over IMAP as that user with the password the administrator typed on the form
//! (`drill_imap`; the password is used for that login only, never stored or logged) and
//! finds the message in the INBOX, stops the outage (`outage stop`) once the notice
//! that mail is being spooled is queued, sees the message released to the primary with
//! the primary's reply, and sees the alert recipients' four notices delivered. Each
//! step is shown as it happens (the page reloads itself) with what it found; a step
//! that fails says why and the drill stops there, ending the outage it started.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, PreEscaped};
use parking_lot::Mutex;
use serde::Deserialize;
use understudy_protocol::Secret;
use understudy_storage::outage::OutagePhase;
use understudy_storage::{QueueKind, RecipientStatus, TrackingId};

use super::domain::{change_text, run_outage};
use super::drill_imap::UserImap;
use super::filled;
use crate::admin::audit::{domain_of, Action};
use crate::admin::outage::OutageCommand;
use crate::admin::tracking::{self, TrackArgs, TrackedMessage};
use crate::admin::{domains, Command};
use crate::config_types::Service;
use crate::delivery::client::{SmtpClient, Timeouts, TlsContext};
use crate::delivery::config::TlsPolicy;
use crate::outage::notify::phase_name;
use crate::web::console::layout::{csrf_field, page, time};
use crate::web::console::{AdminSession, AppError, Console};

/// How long the drill waits for each thing it expects (the message spooled, released,
/// the notices delivered) before it reports the step as failed.
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
/// The four notices a drill's outage sends (`outage::notify`'s slugs).
const NOTICES: [&str; 4] = ["lost", "spooling", "restored", "released"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepState {
    Running,
    Passed,
    Failed,
}

#[derive(Debug, Clone)]
struct Step {
    name: String,
    state: StepState,
    detail: String,
}

/// A drill in progress or done, by job id in [`Console::drills`].
pub struct DrillJob {
    owner: String,
    domain: String,
    address: String,
    started: i64,
    /// The test message's tracking id once seen: the notices the drill's message and
    /// its release cause come after it (an earlier outage's come before).
    tracking: Mutex<u64>,
    steps: Mutex<Vec<Step>>,
    /// `Some(passed)` once finished.
    finished: Mutex<Option<bool>>,
}

impl DrillJob {
    fn begin(&self, name: impl Into<String>) {
        self.steps.lock().push(Step {
            name: name.into(),
            state: StepState::Running,
            detail: String::new(),
        });
    }

    fn end(&self, result: Result<String, String>) -> bool {
        let mut steps = self.steps.lock();
        if let Some(step) = steps.last_mut() {
            let passed = result.is_ok();
            step.state = if passed {
                StepState::Passed
            } else {
                StepState::Failed
            };
            step.detail = result.unwrap_or_else(|e| e);
            return passed;
        }
        false
    }

    fn running(&self) -> bool {
        self.finished.lock().is_none()
    }
}

#[derive(Deserialize)]
pub struct DrillForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    address: String,
    /// The user's password, for the drill's IMAP login only.
    #[serde(default)]
    password: String,
}

/// Starts a drill on a domain in normal operation; to its page.
pub async fn start(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path(name): Path<String>,
    Form(mut f): Form<DrillForm>,
) -> Result<Response, AppError> {
    admin.may_change(&name, &f.csrf)?;
    let address = filled(&f.address)
        .ok_or_else(|| AppError::Failed("name a user of the domain to send the test message to".into()))?;
    if f.password.is_empty() {
        return Err(AppError::Failed(
            "type the user's password: the drill logs in over IMAP as the user (the password is not kept)"
                .into(),
        ));
    }
    let password = Secret::new(std::mem::take(&mut f.password));
    let wanted = name.clone();
    let to = address.clone();
    let (domain, _) = console
        .run(None, move |ctx| {
            let d = domains::show(ctx, &wanted)?;
            if domain_of(&to).as_deref() != Some(d.name.as_str()) {
                anyhow::bail!("{to} is not an address of {}", d.name);
            }
            if ctx.store.user_by_address(&to)?.is_none() {
                anyhow::bail!("{to} is not a user here");
            }
            let state = ctx.store.outage_state(&d.name)?;
            if state.phase != OutagePhase::Normal {
                anyhow::bail!(
                    "{} is in phase {}: a drill runs only in normal operation",
                    d.name,
                    phase_name(state.phase)
                );
            }
            Ok(d.name)
        })
        .await?;
    let job = Arc::new(DrillJob {
        owner: admin.name.clone(),
        domain: domain.clone(),
        address: address.to_ascii_lowercase(),
        started: console.shared.store.now(),
        tracking: Mutex::new(0),
        steps: Mutex::new(Vec::new()),
        finished: Mutex::new(None),
    });
    let id = crate::web::console::session::random_token();
    {
        let mut drills = console.drills.lock();
        if drills.values().any(|j| j.domain == domain && j.running()) {
            return Err(AppError::Failed(format!(
                "a drill of {domain} is running already"
            )));
        }
        // A job lives for its report; finished ones of long ago are forgotten.
        if drills.len() > 64 {
            drills.retain(|_, j| j.running());
        }
        drills.insert(id.clone(), job.clone());
    }
    let audit = admin.audit(Action::new("failover drill", &domain));
    tokio::spawn(run(console, job, audit, password));
    Ok(Redirect::to(&format!("/domains/{domain}/drill/{id}")).into_response())
}

/// The drill's page: its steps so far, reloading itself until it is finished.
pub async fn status(
    State(console): State<Arc<Console>>,
    admin: AdminSession,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    admin.require(&name)?;
    let job = console
        .drills
        .lock()
        .get(&id)
        .cloned()
        .ok_or(AppError::NotFound)?;
    if job.owner != admin.name || job.domain != name {
        return Err(AppError::NotFound);
    }
    let steps = job.steps.lock().clone();
    let finished = *job.finished.lock();
    let body = html! {
        @if finished.is_none() { (PreEscaped(r#"<meta http-equiv="refresh" content="1">"#)) }
        p { "Failover drill of " strong { (job.domain) } " started " (time(job.started)) ", test message to " (job.address) "." }
        @match finished {
            Some(true) => p class="flash" role="status" id="drill-summary" { "Drill passed: mail was spooled during the outage, the user read it here over IMAP, it was released to the primary, and the alert recipients were told." },
            Some(false) => p class="error" role="alert" id="drill-summary" { "Drill failed: see the step marked failed." },
            None => p id="drill-progress" { "Running…" },
        }
        table id="drill-steps" {
            tr { th { "Step" } th { "Result" } th { "What it found" } }
            @for s in &steps {
                tr class={"step-" (match s.state { StepState::Running => "running", StepState::Passed => "passed", StepState::Failed => "failed" })} {
                    td { (s.name) }
                    td class="result" { (match s.state { StepState::Running => "running", StepState::Passed => "passed", StepState::Failed => "failed" }) }
                    td class="detail" { (s.detail) }
                }
            }
        }
        p { a href={"/domains/" (job.domain)} { "Back to " (job.domain) } }
    };
    Ok(page(
        &format!("Failover drill of {}", job.domain),
        Some(&admin.who()),
        &admin.session.csrf,
        body,
    )
    .into_response())
}

type Audit = Option<(Action, String, IpAddr)>;

/// Runs the steps in order; the first that fails ends the drill (and the outage).
async fn run(console: Arc<Console>, job: Arc<DrillJob>, audit: Audit, password: Secret) {
    let passed = steps(&console, &job, &audit, password).await;
    if let Some((action, actor, ip)) = &audit {
        let store = console.shared.store.clone();
        let (action, actor, ip) = (action.clone(), actor.clone(), ip.to_string());
        let result = if passed { Ok(()) } else { Err("failed") };
        let _ = tokio::task::spawn_blocking(move || {
            crate::admin::audit::record(&store, &actor, &ip, &action, result)
        })
        .await;
    }
    *job.finished.lock() = Some(passed);
}

async fn steps(console: &Arc<Console>, job: &DrillJob, audit: &Audit, password: Secret) -> bool {
    let domain = job.domain.clone();
    let who = audit.as_ref().map(|(_, a, _)| a.clone()).unwrap_or_default();
    // Audited as the CLI's `outage start|stop` would be, as the administrator.
    let as_admin = |command: &OutageCommand| {
        audit
            .as_ref()
            .map(|(_, actor, ip)| (Action::of(&Command::Outage(command.clone())), actor.clone(), *ip))
    };

    let d = domain.clone();
    let recipients = match console
        .run(None, move |ctx| Ok(domains::show(ctx, &d)?.alert_recipients))
        .await
    {
        Ok((r, _)) => r,
        Err(e) => {
            job.begin("Read the domain's settings");
            return job.end(Err(error_text(e)));
        }
    };

    job.begin("Start a manual outage");
    let start = OutageCommand::Start {
        domain: domain.clone(),
        reason: format!("failover drill by {who}"),
    };
    let started = console
        .run(as_admin(&start), move |ctx| run_outage(ctx, start))
        .await;
    let ok = job.end(match started {
        Ok((c, _)) if c.already => Err(change_text(&c)),
        Ok((c, _)) => Ok(change_text(&c)),
        Err(e) => Err(error_text(e)),
    });
    if !ok {
        return false;
    }

    let passed = during_outage(console, job, recipients.first().map(String::as_str), password).await;

    job.begin("Stop the outage");
    let stop = OutageCommand::Stop {
        domain: domain.clone(),
        reason: format!("failover drill by {who} done"),
    };
    let stopped = console
        .run(as_admin(&stop), move |ctx| run_outage(ctx, stop))
        .await;
    let ok = job.end(match stopped {
        Ok((c, _)) => Ok(change_text(&c)),
        Err(e) => Err(error_text(e)),
    });
    let Some(message_id) = passed.filter(|_| ok) else {
        return false;
    };

    job.begin("The message goes to the primary");
    let address = job.address.clone();
    let released = wait_for(console, &message_id, |m| {
        let mut done = None;
        for ev in &m.events {
            if !ev.detail.to_ascii_lowercase().contains(&address) {
                continue;
            }
            match ev.kind.as_str() {
                "delivered" => done = Some(Ok(format!("the primary said: {}", ev.detail))),
                "failed" | "expired" | "cancelled" => done = Some(Err(format!("{}: {}", ev.kind, ev.detail))),
                _ => {}
            }
        }
        done
    })
    .await;
    if !job.end(released) {
        return false;
    }

    job.begin("The alert recipients get the four notices");
    let Some(first) = recipients.first() else {
        return job.end(Err(
            "the domain has no alert recipients: nobody would hear of a real outage (set them under Settings)"
                .into(),
        ));
    };
    job.end(
        wait_for_notices(console, job, first, |states| {
            states.iter().all(|(_, s)| *s == Some(true))
        })
        .await,
    )
}

/// Sends the test message, sees it spooled, reads it over IMAP as the user, and (with an
/// alert recipient) sees the notice that mail is being spooled; the Message-ID when all
/// worked.
async fn during_outage(
    console: &Arc<Console>,
    job: &DrillJob,
    alert: Option<&str>,
    password: Secret,
) -> Option<String> {
    job.begin(format!("Send a message from outside to {}", job.address));
    let sent = send(console, job).await;
    let message_id = match sent {
        Ok((message_id, reply)) => {
            job.end(Ok(format!("{message_id}: {reply}")));
            message_id
        }
        Err(e) => {
            job.end(Err(e));
            return None;
        }
    };

    job.begin("The message is spooled here");
    let address = job.address.clone();
    let spooled = wait_for(console, &message_id, |m| {
        let queued = m.queued.iter().find(|e| {
            e.kind == QueueKind::Relay
                && e.recipients
                    .iter()
                    .any(|r| r.status == RecipientStatus::Pending && r.address.eq_ignore_ascii_case(&address))
        })?;
        let stored = m.events.iter().any(|ev| ev.kind == "stored");
        if let Ok(t) = m.tracking_id.parse::<TrackingId>() {
            *job.tracking.lock() = t.0;
        }
        Some(Ok(format!(
            "tracking id {}, queue entry {} waiting for the outage to end{}",
            m.tracking_id,
            queued.id,
            if stored {
                format!("; a copy is in {address}'s mailbox here")
            } else {
                String::new()
            }
        )))
    })
    .await;
    if !job.end(spooled) {
        return None;
    }
    if !read_as_user(console, job, &message_id, password).await {
        return None;
    }
    if let Some(recipient) = alert {
        job.begin("The alert recipients hear that mail is being spooled");
        let heard = wait_for_notices(console, job, recipient, |states| {
            states.iter().take(2).all(|(_, s)| s.is_some())
        })
        .await;
        if !job.end(heard) {
            return None;
        }
    }
    Some(message_id)
}

/// Logs in over IMAP as the drill's user and waits for the test message in the INBOX:
/// two steps, the login and the message found. The password ends here.
async fn read_as_user(console: &Arc<Console>, job: &DrillJob, message_id: &str, password: Secret) -> bool {
    job.begin(format!("Log in over IMAP as {}", job.address));
    let login = UserImap::login(&console.shared, &job.address, &password).await;
    drop(password);
    let mut imap = match login {
        Ok((imap, said)) => {
            job.end(Ok(said));
            imap
        }
        Err(e) => return job.end(Err(e)),
    };
    job.begin(format!("The test message is in {}'s INBOX", job.address));
    let bare = message_id.trim_start_matches('<').trim_end_matches('>');
    let deadline = tokio::time::Instant::now() + WAIT;
    let found = loop {
        match imap.find(bare).await {
            Ok(Some(found)) => break Ok(found),
            Ok(None) if tokio::time::Instant::now() >= deadline => {
                break Err(format!(
                    "no message {message_id} in the INBOX within {} s",
                    WAIT.as_secs()
                ))
            }
            Ok(None) => tokio::time::sleep(POLL).await,
            Err(e) => break Err(e),
        }
    };
    imap.logout().await;
    job.end(found)
}

/// One SMTP transaction to the server's own MX listener, as a sender on the internet
/// would make it. Returns the Message-ID and the final reply.
async fn send(console: &Arc<Console>, job: &DrillJob) -> Result<(String, String), String> {
    let shared = &console.shared;
    let listener = shared
        .bound
        .lock()
        .iter()
        .find(|(s, _)| *s == Service::Smtp)
        .map(|(_, a)| *a)
        .ok_or("no MX listener ([smtp] listen) to send to")?;
    let ip = match listener.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let hostname = &shared.config.hostname;
    let sender = format!("drill@{hostname}");
    let message_id = format!("drill.{}.{}@{hostname}", job.started, job.domain);
    let message = mail_builder::MessageBuilder::new()
        .from(("Understudy failover drill", sender.as_str()))
        .to(job.address.as_str())
        .subject(format!("Failover drill of {}", job.domain))
        .date(job.started)
        .message_id(message_id.as_str())
        .text_body(format!(
            "This message was sent by a failover drill started by {} in the Understudy console.\n\
             It was spooled while {} was in a drill outage and then released to the primary.\n",
            job.owner, job.domain
        ))
        .write_to_vec()
        .map_err(|e| format!("cannot build the message: {e}"))?;
    let tls = TlsContext::new(&shared.config.delivery.tls_ca_file);
    let timeouts = Timeouts {
        connect: Duration::from_secs(10),
        command: Duration::from_secs(60),
        data: Duration::from_secs(120),
    };
    let host = ip.to_string();
    let mut client = SmtpClient::connect(
        &host,
        listener.port(),
        hostname,
        TlsPolicy::Disabled,
        &tls,
        timeouts,
    )
    .await
    .map_err(|e| format!("cannot connect to the MX listener {listener}: {e}"))?;
    let replies = client
        .transaction(&sender, std::slice::from_ref(&job.address), &message)
        .await
        .map_err(|e| format!("the MX listener {listener}: {e}"))?;
    client.quit().await;
    let reply = replies
        .per_recipient()
        .into_iter()
        .next()
        .ok_or("no reply to the recipient")?;
    let text = format!("{} {}", reply.code, reply.text);
    if reply.is_positive() {
        Ok((format!("<{message_id}>"), text))
    } else {
        Err(format!("the MX listener refused the message: {text}"))
    }
}

/// Waits until `check` says something about the message tracked by `message_id`.
async fn wait_for(
    console: &Arc<Console>,
    message_id: &str,
    check: impl Fn(&TrackedMessage) -> Option<Result<String, String>>,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = "the message is not tracked yet".to_string();
    loop {
        let args = TrackArgs {
            id: None,
            message_id: Some(message_id.to_string()),
            address: None,
            since: None,
        };
        match console.run(None, move |ctx| tracking::track(ctx, &args)).await {
            Ok((found, _)) => {
                for m in &found {
                    if let Some(result) = check(m) {
                        return result;
                    }
                }
                if let Some(m) = found.last() {
                    last = m
                        .events
                        .last()
                        .map(|ev| format!("last event: {} {}", ev.kind, ev.detail))
                        .unwrap_or_default();
                }
            }
            Err(e) => last = error_text(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("not within {} s ({last})", WAIT.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Each of the four notices of the drill's outage to `recipient`: `None` not sent,
/// `Some(false)` queued, `Some(true)` delivered.
async fn notice_states(
    console: &Arc<Console>,
    job: &DrillJob,
    recipient: &str,
) -> Result<Vec<(&'static str, Option<bool>)>, String> {
    let args = TrackArgs {
        id: None,
        message_id: None,
        address: Some(recipient.to_string()),
        since: Some(job.started.to_string()),
    };
    let found = console
        .run(None, move |ctx| tracking::track(ctx, &args))
        .await
        .map(|(f, _)| f)
        .map_err(error_text)?;
    let after = *job.tracking.lock();
    Ok(NOTICES
        .iter()
        .map(|slug| {
            let wanted = format!("notice '{slug}' for {} to ", job.domain);
            let of_kind: Vec<&TrackedMessage> = found
                .iter()
                .filter(|m| {
                    // All but the first notice follow the test message.
                    *slug == "lost"
                        || m.tracking_id
                            .parse::<TrackingId>()
                            .is_ok_and(|t| after != 0 && t.0 > after)
                })
                .filter(|m| {
                    m.events
                        .iter()
                        .any(|ev| ev.kind == "received" && ev.detail.starts_with(&wanted))
                })
                .collect();
            let state = (!of_kind.is_empty()).then(|| {
                of_kind
                    .iter()
                    .any(|m| m.events.iter().any(|ev| ev.kind == "delivered"))
            });
            (*slug, state)
        })
        .collect())
}

fn notice_report(states: &[(&str, Option<bool>)]) -> String {
    states
        .iter()
        .map(|(slug, state)| match state {
            Some(true) => format!("{slug}: delivered"),
            Some(false) => format!("{slug}: queued"),
            None => format!("{slug}: not sent"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until `done` holds of the notices to `recipient`; the outage monitor is woken
/// at each look (it notices spooled mail at its next look at the queue).
async fn wait_for_notices(
    console: &Arc<Console>,
    job: &DrillJob,
    recipient: &str,
    done: impl Fn(&[(&str, Option<bool>)]) -> bool,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        console.monitor.wake();
        let states = notice_states(console, job, recipient).await?;
        let report = notice_report(&states);
        if done(&states) {
            return Ok(format!("to {recipient}: {report}"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not within {} s: to {recipient}: {report}",
                WAIT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn error_text(e: AppError) -> String {
    match e {
        AppError::Failed(m) | AppError::Internal(m) => m,
        other => format!("{other:?}"),
    }
}

/// The drill's form on the domain page.
pub fn form(domain: &str, csrf: &str) -> maud::Markup {
    html! {
        fieldset {
            legend { "Failover drill" }
            p { "Runs the failover test of the first-time setup against a primary that is up: a manual outage, a message from outside to the user named here through this server's MX listener, the message spooled, a login over IMAP as that user and the message found in their INBOX, the outage stopped, the message released to the primary, and the alert recipients' four notices. It takes a minute; the page shows each step." }
            p { "The user's password is used for the drill's IMAP login only: it is not kept, logged or shown. The login counts as the user's own (readiness shows them as having logged in)." }
            form method="post" action={"/domains/" (domain) "/drill"} {
                (csrf_field(csrf))
                label { "Test message to " input name="address" type="email" placeholder={"user@" (domain)} required; }
                label { "That user's password " input name="password" type="password" autocomplete="off" required; }
                button id="drill" { "Run the failover drill" }
            }
        }
    }
}
