//! The form step of a link (`Link::form`): a scan answers the form page
//! (`show`) instead of the redirect, carrying the scan's ID and a token made
//! for that scan (HMAC-SHA256 with a server secret: the form's CSRF token).
//! `POST /{slug}/form` (`submit`) checks the scan and the token, validates
//! each answer, stores the completion once per scan with the answers on the
//! visitor, sends `step.completed` with the answers to the webhooks, and
//! answers `303` to the destination. A refusal stores nothing.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::AppState;
use super::error::ErrorCode;
use super::form_page::{self, check, parse_number};
use super::redirect::{page, redirect};
use crate::actors::webhooks;
use crate::domain::visitor::{MAX_ATTRIBUTES, MAX_STRING_BYTES};
use crate::domain::webhook::{EventType, message_id};
use crate::domain::{Form, FormFieldType, Link, Timestamp};
use crate::ids::EventId;
use crate::store::{FormCompletion, FormWrite, StoredAttributes};

/// The name of the form tokens' key in the store.
pub const TOKEN_KEY_NAME: &str = "form-token";
/// Largest form submission, in bytes (20 fields of 1,000 characters fit).
pub const MAX_BODY_BYTES: usize = 32 * 1024;

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
/// The page may not be framed, and loads nothing from anywhere.
const CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
);

/// The MAC behind the token of scan `scan_id`.
fn token_mac(key: &[u8; 32], scan_id: &EventId) -> hmac::Hmac<Sha256> {
    let mut mac =
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"form-step\0");
    mac.update(scan_id.as_bytes());
    mac
}

/// The token of scan `scan_id`: the MAC's first 128 bits.
pub fn token(key: &[u8; 32], scan_id: &EventId) -> String {
    URL_SAFE_NO_PAD.encode(&token_mac(key, scan_id).finalize().into_bytes()[..16])
}

/// Whether `sent` is the token of scan `scan_id`, compared in constant time.
fn token_matches(key: &[u8; 32], scan_id: &EventId, sent: &str) -> bool {
    let Ok(sent) = URL_SAFE_NO_PAD.decode(sent) else {
        return false;
    };
    sent.len() == 16 && token_mac(key, scan_id).verify_truncated_left(&sent).is_ok()
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn action(link: &Link) -> String {
    format!("/{}/form", link.slug.as_str())
}

/// The form page of a scan just recorded.
pub fn show(state: &AppState, link: &Link, form: &Form, scan_id: EventId) -> HttpResponse {
    state.metrics.form_views.inc();
    let body = form_page::render(
        form,
        &action(link),
        &scan_id.to_string(),
        &token(&state.form_key, &scan_id),
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    html(StatusCode::OK, body)
}

/// `HEAD` of a link with a form: what `GET` answers, without a body (and
/// without recording a scan, like every `HEAD`).
pub fn head() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, NO_STORE))
        .content_type("text/html; charset=utf-8")
        .finish()
}

/// Why a submission was refused, for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    Invalid,
    UnknownScan,
    BadToken,
    Replay,
    TooLarge,
    Malformed,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Invalid,
        Refusal::UnknownScan,
        Refusal::BadToken,
        Refusal::Replay,
        Refusal::TooLarge,
        Refusal::Malformed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid",
            Refusal::UnknownScan => "unknown_scan",
            Refusal::BadToken => "bad_token",
            Refusal::Replay => "replay",
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
        }
    }
}

fn refuse(
    state: &AppState,
    req: &HttpRequest,
    why: Refusal,
    code: ErrorCode,
    message: &str,
) -> HttpResponse {
    state.metrics.form_refusals.add(why.as_str());
    let mut resp = page(req, code, message);
    resp.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    resp
}

/// An answer as a visitor attribute: numbers as numbers, text cut to the
/// attribute limit on a character boundary.
fn attribute(t: FormFieldType, answer: &str) -> Value {
    if t == FormFieldType::Number
        && let Some(n) = parse_number(answer).and_then(serde_json::Number::from_f64)
    {
        return Value::Number(n);
    }
    let mut end = answer.len().min(MAX_STRING_BYTES);
    while !answer.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(answer[..end].to_owned())
}

/// The value of a store call run on the blocking pool; `None` (logged as
/// `what`) when it failed, and the person is asked to retry (`retry`).
fn stored<T>(
    what: &str,
    r: Result<crate::store::StoreResult<T>, actix_web::error::BlockingError>,
) -> Option<T> {
    let error = match r {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(error = %error, "{what}");
    None
}

fn retry(req: &HttpRequest) -> HttpResponse {
    page(req, ErrorCode::Unavailable, "Please try again in a moment.")
}

/// `POST /{slug}/form`.
pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    if body.len() > MAX_BODY_BYTES {
        return refuse(
            &state,
            &req,
            Refusal::TooLarge,
            ErrorCode::PayloadTooLarge,
            "The answers are too long.",
        );
    }
    let form_encoded = super::header_str(&req, header::CONTENT_TYPE).is_some_and(|c| {
        c.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form_encoded {
        return refuse(
            &state,
            &req,
            Refusal::Malformed,
            ErrorCode::BadRequest,
            "Send the form as application/x-www-form-urlencoded.",
        );
    }
    let slug = req.match_info().get("slug").unwrap_or_default();
    let now = state.clock.now();
    let found = match state.links.get(slug) {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a form's link");
            return retry(&req);
        }
    };
    let Some(link) = found.filter(|l| l.is_live_at(now)) else {
        return refuse(
            &state,
            &req,
            Refusal::UnknownScan,
            ErrorCode::NotFound,
            "No form at this address.",
        );
    };
    let Some(form) = link.form.clone() else {
        return refuse(
            &state,
            &req,
            Refusal::UnknownScan,
            ErrorCode::NotFound,
            "No form at this address.",
        );
    };
    // The first value of each name counts.
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        sent.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    let scan_id = sent.get("scan_id").and_then(|s| s.parse::<EventId>().ok());
    let Some(scan_id) = scan_id else {
        return refuse(
            &state,
            &req,
            Refusal::Malformed,
            ErrorCode::BadRequest,
            "This form was not sent from its page; scan the code again.",
        );
    };
    // A scan still on its way to the store is waited for.
    let event = match state.scan_event(scan_id).await {
        Ok(Some(e)) if e.link_id == link.id => e,
        Ok(_) => {
            return refuse(
                &state,
                &req,
                Refusal::UnknownScan,
                ErrorCode::NotFound,
                "This scan is unknown; scan the code again.",
            );
        }
        Err(_) => return retry(&req),
    };
    let token_ok = sent
        .get("token")
        .is_some_and(|t| token_matches(&state.form_key, &scan_id, t));
    if !token_ok {
        return refuse(
            &state,
            &req,
            Refusal::BadToken,
            ErrorCode::Forbidden,
            "This form has expired or was not sent from its page; scan the code again.",
        );
    }
    if matches!(state.store.form_completion(&scan_id), Ok(Some(_))) {
        return refuse(
            &state,
            &req,
            Refusal::Replay,
            ErrorCode::Conflict,
            "This form was already sent. Thank you!",
        );
    }
    // Each answer, trimmed, by the form's fields (other names are ignored).
    let mut values = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for f in &form.fields {
        let answer = sent.get(&f.name).map(|v| v.trim()).unwrap_or_default();
        if let Some(message) = check(f.field_type, f.required, answer) {
            errors.insert(f.name.clone(), message);
        }
        values.insert(f.name.clone(), answer.to_owned());
    }
    if !errors.is_empty() {
        state.metrics.form_refusals.add(Refusal::Invalid.as_str());
        let body = form_page::render(
            &form,
            &action(&link),
            &scan_id.to_string(),
            &token(&state.form_key, &scan_id),
            &values,
            &errors,
        );
        return html(StatusCode::UNPROCESSABLE_ENTITY, body);
    }
    let mut answers = Map::new();
    for f in &form.fields {
        let answer = &values[&f.name];
        if !answer.is_empty() {
            answers.insert(f.name.clone(), attribute(f.field_type, answer));
        }
    }
    let completion = FormCompletion {
        scan_id,
        link_id: link.id,
        workspace_id: link.workspace_id,
        visitor_id: event.visitor_id,
        answers: answers
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        completed_at: now,
    };
    let merged = answers.clone();
    let store = state.store.clone();
    let written = web::block(move || {
        store.complete_form(&completion, |stored| {
            let mut all: Map<String, Value> = stored
                .and_then(|s| serde_json::from_str(&s.json).ok())
                .unwrap_or_default();
            for (k, v) in &merged {
                // A visitor holds at most 50 attributes: answers to new keys
                // beyond that are kept with the completion (and the webhook)
                // only.
                if all.contains_key(k) || all.len() < MAX_ATTRIBUTES {
                    all.insert(k.clone(), v.clone());
                }
            }
            Some(StoredAttributes {
                json: Value::Object(all).to_string(),
            })
        })
    })
    .await;
    match stored("cannot store a form's answers", written) {
        Some(FormWrite::Completed) => {}
        Some(FormWrite::AlreadyCompleted) => {
            return refuse(
                &state,
                &req,
                Refusal::Replay,
                ErrorCode::Conflict,
                "This form was already sent. Thank you!",
            );
        }
        None => return retry(&req),
    }
    state.metrics.form_completions.inc();
    announce(&state, &link, &event, &answers, now);
    let location = if link.conversion_tracking {
        link.destination.with_scan_id(&scan_id.to_string())
    } else {
        link.destination.as_str().to_owned()
    };
    let mut resp = redirect(StatusCode::SEE_OTHER, &location);
    resp.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
    resp
}

/// `step.completed` with the answers, to every hook that wants it. Its ID
/// comes from the scan, the hook and the type, like the scan's own
/// messages: one completion per scan, one message per hook.
fn announce(
    state: &AppState,
    link: &Link,
    event: &crate::domain::ScanEvent,
    answers: &Map<String, Value>,
    now: Timestamp,
) {
    let attributes = match event.visitor_id {
        Some(v) => webhooks::stored_attributes(&state.store, &v).unwrap_or_default(),
        None => Map::new(),
    };
    let sent = webhooks::scan_body(
        EventType::StepCompleted,
        event,
        Some(link),
        &attributes,
        Some(answers),
        &state.settings,
    )
    .and_then(|body| {
        webhooks::emit(
            &state.webhooks,
            &link.workspace_id,
            EventType::StepCompleted,
            &link.id,
            &body,
            |hook| message_id(&event.id, &hook.id, EventType::StepCompleted),
            now,
        )
    });
    if let Err(e) = sent {
        // The completion is stored; the message can be recovered
        // (`POST /v1/webhooks/{id}/recover` re-sends failed ones only, so
        // this is logged for the operator).
        tracing::error!(error = %e, scan = %event.id, "could not queue step.completed for a form");
    }
}
