//! The console's page frame (navigation, the logout form) and small HTML helpers. maud
//! escapes every value it inserts.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::session::Who;
use crate::outage::notify::format_time;

const CSS: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0; color: #1b1f24; background: #f6f7f9; }
header { background: #1f3a5f; color: #fff; padding: .5em 1em; display: flex; gap: 1em; align-items: center; flex-wrap: wrap; }
header a { color: #fff; text-decoration: none; }
header form { margin-left: auto; }
main { padding: 1em; }
table { border-collapse: collapse; background: #fff; margin: .5em 0; }
th, td { border: 1px solid #d0d4da; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #e9edf2; }
.phase-outage { background: #fbd5d5; font-weight: bold; }
.phase-draining { background: #fdf0c4; }
.phase-normal { background: #dff3e0; }
.flash { background: #e6f0ff; border: 1px solid #9bbcf0; padding: .5em; margin: .5em 0; }
.error { background: #fde2e2; border: 1px solid #e59a9a; padding: .5em; margin: .5em 0; }
pre { background: #fff; border: 1px solid #d0d4da; padding: .5em; overflow-x: auto; }
fieldset { background: #fff; border: 1px solid #d0d4da; margin: .5em 0; }
label { display: block; margin: .25em 0; }
.qr svg { width: 12em; height: 12em; }
"#;

pub async fn stylesheet() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/css")], CSS)
}

/// A full page for a logged-in administrator or user.
pub fn page(title: &str, who: Option<&Who>, csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Understudy" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header {
                    strong { "Understudy" }
                    @match who {
                        Some(Who::Admin { name, role, .. }) => {
                            a href="/" { "Dashboard" }
                            a href="/queue" { "Queue" }
                            a href="/tracking" { "Tracking" }
                            a href="/users" { "Users" }
                            a href="/readiness" { "Readiness" }
                            a href="/audit" { "Audit log" }
                            span { (name) " (" (if role.is_global() { "global admin" } else { "domain admin" }) ")" }
                            (logout(csrf))
                        }
                        Some(Who::User { address }) => {
                            a href="/me" { "My account" }
                            span { (address) }
                            (logout(csrf))
                        }
                        None => {}
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn logout(csrf: &str) -> Markup {
    html! {
        form method="post" action="/logout" {
            (csrf_field(csrf))
            button type="submit" { "Log out" }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A page with only a message (errors, confirmations) and no session-bound parts.
pub fn message_page(title: &str, message: &str) -> Markup {
    page(
        title,
        None,
        "",
        html! { p class="error" { (message) } p { a href="/" { "Back" } } },
    )
}

/// A message shown above a page's content after an action.
pub fn flash(message: Option<&str>) -> Markup {
    html! { @if let Some(m) = message { p class="flash" role="status" { (m) } } }
}

pub fn time(at: i64) -> String {
    if at == 0 {
        "-".into()
    } else {
        format_time(at)
    }
}

pub fn opt_time(at: Option<i64>) -> String {
    at.map(time).unwrap_or_else(|| "-".into())
}

/// An SVG QR code of `text`, or nothing if it does not fit one.
pub fn qr(text: &str) -> Markup {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .build();
            html! { div class="qr" { (PreEscaped(svg)) } }
        }
        Err(_) => html! {},
    }
}
