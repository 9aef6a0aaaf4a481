//! `GET /v1/links/{id}/scans` and `GET /v1/metrics`: answered from the
//! Counters worker's day tallies (`actors::counters`), never by reading
//! events, so they cost the same at a thousand events or ten million.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::links::find_link;
use super::query_value;
use crate::actors::counters::{CounterView, link_days};
use crate::domain::tally::{Counts, Day, Tally};
use crate::domain::{Link, Timestamp};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::error::ApiError;
use crate::ids::LinkId;
use crate::store::{StoreResult, TallyScope};

/// Days a summary covers when `days` is not given.
const DEFAULT_DAYS: u32 = 30;
const MAX_DAYS: u32 = 365;
const TOP_COUNTRIES: usize = 8;
const TOP_OTHERS: usize = 5;

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(link_scans).service(workspace_metrics);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScansQuery {
    /// Days covered, ending today in the workspace's time zone: 1 to 365,
    /// default 30.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 365)]
    days: Option<String>,
}

/// Scans on one day (in the workspace's time zone).
#[derive(Debug, Serialize, ToSchema)]
pub struct DayCount {
    #[schema(format = Date, example = "2026-05-08")]
    pub date: String,
    pub count: u64,
}

/// Scans with one value of a dimension; `value` is `null` for scans where it
/// is unknown.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValueCount {
    pub value: Option<String>,
    pub count: u64,
}

/// A link's scans over the last `period_days` days, bots excluded.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanSummary {
    pub link_id: LinkId,
    pub slug: String,
    /// Lifetime scans (kept when old events are deleted by retention).
    pub total_scans: u64,
    pub period_days: u32,
    pub period_scans: u64,
    /// Distinct visitors in the period: exact up to 512 a day, then a
    /// HyperLogLog estimate (standard error about 1.6%).
    pub period_visitors: u64,
    /// Ascending; days without scans are left out.
    pub scans_by_day: Vec<DayCount>,
    /// At most 8; ties ordered by value, `null` last.
    pub top_countries: Vec<ValueCount>,
    /// At most 5 (and so on for the other lists).
    pub top_devices: Vec<ValueCount>,
    pub top_os: Vec<ValueCount>,
    pub top_browsers: Vec<ValueCount>,
    /// Referer hosts.
    pub top_referers: Vec<ValueCount>,
    /// The link's form step (`null` for a link without a form), lifetime.
    pub form: Option<FormStats>,
}

/// How a link's form step converts, over the link's lifetime.
#[derive(Debug, Serialize, ToSchema)]
pub struct FormStats {
    /// Scans that were shown the form: the link's `total_scans` (bots
    /// excluded; scans from before the form was added count too).
    pub views: u64,
    /// Forms submitted with valid answers (once per scan).
    pub completions: u64,
    /// `completions / views`, 0 to 1 (0 without views).
    pub completion_rate: f64,
}

impl FormStats {
    pub fn new(views: u64, completions: u64) -> FormStats {
        let rate = if views == 0 {
            0.0
        } else {
            (completions as f64 / views as f64).min(1.0)
        };
        FormStats {
            views,
            completions,
            completion_rate: (rate * 10_000.0).round() / 10_000.0,
        }
    }
}

fn top(counts: &Counts, cap: usize) -> Vec<ValueCount> {
    counts
        .top(cap)
        .into_iter()
        .map(|(value, count)| ValueCount { value, count })
        .collect()
}

/// Today in the workspace's time zone.
fn today(state: &AppState, caller: &SecretCaller, now: Timestamp) -> Result<Day, ApiError> {
    let ws = state
        .store
        .workspace(&caller.0.workspace_id)?
        .ok_or_else(|| ApiError::not_found("The token's workspace no longer exists."))?;
    let tz = jiff::tz::TimeZone::get(&ws.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    Ok(Day::of(now.as_millis(), &tz))
}

fn parse_days(raw: &Option<String>) -> Result<u32, ApiError> {
    match query_value("days", raw)? {
        None => Ok(DEFAULT_DAYS),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=MAX_DAYS).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`days` must be a whole number from 1 to {MAX_DAYS}."
                ))
            }),
    }
}

/// The summary of `link` over the `days` days ending with `today`.
pub fn summarize(
    view: &CounterView,
    link: &Link,
    total_scans: u64,
    today: Day,
    days: u32,
) -> StoreResult<ScanSummary> {
    let from = today.minus_days(days as i32 - 1);
    let tallies = link_days(view, &link.id, from, today)?;
    let mut period = Tally::default();
    let mut scans_by_day = Vec::new();
    for (day, tally) in &tallies {
        if tally.scans > 0 {
            scans_by_day.push(DayCount {
                date: day.to_string(),
                count: tally.scans,
            });
        }
        period.merge(tally);
    }
    Ok(ScanSummary {
        link_id: link.id,
        slug: link.slug.as_str().to_owned(),
        total_scans,
        period_days: days,
        period_scans: period.scans,
        period_visitors: period.visitors.count(),
        scans_by_day,
        top_countries: top(&period.countries, TOP_COUNTRIES),
        top_devices: top(&period.devices, TOP_OTHERS),
        top_os: top(&period.os, TOP_OTHERS),
        top_browsers: top(&period.browsers, TOP_OTHERS),
        top_referers: top(&period.referers, TOP_OTHERS),
        form: None,
    })
}

#[utoipa::path(tag = "links",
    params(("id" = LinkId, Path, description = "Link ID (lnk_...)"), ScansQuery),
    responses((status = 200, description = "The link's scans per day and by country, device, \
        OS, browser and referer host", body = ScanSummary)))]
#[get("/links/{id}/scans")]
async fn link_scans(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    q: web::Query<ScansQuery>,
) -> Result<HttpResponse, ApiError> {
    let link = find_link(&state, &caller, &id)?;
    let days = parse_days(&q.days)?;
    let today = today(&state, &caller, Timestamp::now())?;
    let total = state.store.link_total_scans(&link.id)?;
    let mut summary = summarize(&state.counters, &link, total, today, days)?;
    if link.form.is_some() {
        summary.form = Some(FormStats::new(
            total,
            state.store.form_completions(&link.id)?,
        ));
    }
    Ok(HttpResponse::Ok().json(summary))
}

/// Totals of the workspace, bots excluded.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceMetrics {
    /// Lifetime scans (kept when old events are deleted by retention).
    pub total_scans: u64,
    /// Distinct visitors over the workspace's lifetime.
    pub total_visitors: u64,
    pub total_links: u64,
    /// Today and this calendar month in the workspace's time zone.
    pub scans_today: u64,
    pub scans_this_month: u64,
    /// Webhook endpoints whose status is `active`.
    pub active_webhooks: u64,
}

#[utoipa::path(tag = "workspace",
    responses((status = 200, description = "Totals of the caller's workspace", body = WorkspaceMetrics)))]
#[get("/metrics")]
async fn workspace_metrics(
    state: web::Data<AppState>,
    caller: SecretCaller,
) -> Result<HttpResponse, ApiError> {
    let ws = caller.0.workspace_id;
    let today = today(&state, &caller, Timestamp::now())?;
    let month = state.counters.days(
        TallyScope::Workspace,
        ws.as_bytes(),
        today.month_start(),
        today,
    )?;
    let lifetime = state.counters.workspace_lifetime(&ws)?;
    Ok(HttpResponse::Ok().json(WorkspaceMetrics {
        total_scans: lifetime.scans,
        total_visitors: lifetime.visitors.count(),
        total_links: state.store.count_links(&ws)?,
        scans_today: month.get(&today).map_or(0, |t| t.scans),
        scans_this_month: month.values().map(|t| t.scans).sum(),
        active_webhooks: state.webhooks.active_count(&ws)?,
    }))
}
