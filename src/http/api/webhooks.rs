//! `/v1/webhooks`: endpoints that receive signed messages about a
//! workspace's scans (docs/API.md, "Webhooks"), their secrets, test
//! messages, the delivery log, and sending failed messages again.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::webhook_bodies::{CreateWebhookBody, HookFields, RecoverBody, UpdateWebhookBody};
use super::{parse_id, query_value};
use crate::actors::webhooks::{WebhookHub, new_message, store_messages, test_body};
use crate::domain::Timestamp;
use crate::domain::webhook::{
    Delivery, DeliveryStatus, EventType, MessageState, Trigger, Webhook, WebhookStatus,
    generate_key, secret_string,
};
use crate::http::AppState;
use crate::http::auth::SecretCaller;
use crate::http::body::JsonObject;
use crate::http::error::{ApiError, Problem};
use crate::http::pagination::{ListResponse, PageParams, QueryScope};
use crate::ids::{DeliveryId, LinkId, MessageId, MessageKind, WebhookId, WebhookKind, WorkspaceId};
use crate::store::{PendingMessage, Store, StoreResult};

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(update_webhook)
        .service(delete_webhook)
        .service(rotate_webhook_secret)
        .service(test_webhook)
        .service(list_webhook_deliveries)
        .service(redeliver_webhook_message)
        .service(recover_webhook_messages);
}

/// An endpoint that receives signed `POST`s about the workspace's events.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: WebhookId,
    pub name: Option<String>,
    pub url: String,
    pub events: Vec<EventType>,
    /// `null`: every link of the workspace.
    pub link_ids: Option<Vec<LinkId>>,
    pub status: WebhookStatus,
    /// Messages in a row that failed all their attempts (reset by a
    /// delivered one, and by setting `status` to `active`).
    pub consecutive_failures: u32,
    /// Attempts answered with a 2xx.
    pub success_count: u64,
    /// Attempts that failed (any other answer, or none).
    pub failure_count: u64,
    pub last_sent_at: Option<Timestamp>,
    pub last_delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<Webhook> for WebhookView {
    fn from(h: Webhook) -> Self {
        WebhookView {
            id: h.id,
            name: h.name,
            url: h.url,
            events: h.events,
            link_ids: h.link_ids,
            status: h.status,
            consecutive_failures: h.consecutive_failures,
            success_count: h.success_count,
            failure_count: h.failure_count,
            last_sent_at: h.last_sent_at,
            last_delivered_at: h.last_delivered_at,
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

/// A webhook with its signing secret: only when created and rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` + standard base64 of the key; configure your receiver with it.
    pub secret: String,
}

/// One delivery attempt of a message (the delivery log).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: DeliveryId,
    /// The `webhook-id` header of the attempt.
    pub message_id: MessageId,
    pub event_type: EventType,
    /// The message's attempt number, counting every round.
    pub attempt: u32,
    /// `auto`, or `manual` for `redeliver` and `recover`.
    pub trigger: Trigger,
    /// `pending` until the attempt is made.
    pub status: DeliveryStatus,
    pub url: String,
    /// `null` when no answer arrived.
    pub response_status: Option<u16>,
    /// The first 1 KiB of the answer.
    pub response_body: Option<String>,
    /// `timeout`, `connect`, `dns`, `tls`, `blocked_ip` or `http_status`; or,
    /// for an attempt never made, `webhook_disabled`,
    /// `webhook_auto_disabled` or `outbox_full`.
    pub error: Option<String>,
    pub duration_ms: Option<u64>,
    /// When the attempt was scheduled.
    pub created_at: Timestamp,
    /// When it is (or was) due.
    pub scheduled_for: Timestamp,
    pub attempted_at: Option<Timestamp>,
    /// When a failed attempt is retried (`null` when it is not).
    pub next_attempt_at: Option<Timestamp>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            message_id: d.message_id,
            event_type: d.event_type,
            attempt: d.attempt,
            trigger: d.trigger,
            status: d.status,
            url: d.url,
            response_status: d.response_status,
            response_body: d.response_body,
            error: d.error,
            duration_ms: d.duration_ms,
            created_at: d.created_at,
            scheduled_for: d.scheduled_for,
            attempted_at: d.attempted_at,
            next_attempt_at: d.next_attempt_at,
        }
    }
}

/// A message queued for delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedMessage {
    /// Its `webhook-id`.
    pub message_id: MessageId,
}

/// What `recover` queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// Failed messages queued for another round of attempts.
    pub queued: u64,
}

/// How many hooks `ws`'s plan allows (0: no limit).
fn plan_limit(state: &AppState, ws: &WorkspaceId) -> Result<(String, u32), ApiError> {
    let workspace = state
        .store
        .workspace(ws)?
        .ok_or_else(|| ApiError::not_found("The token's workspace no longer exists."))?;
    let plans = &state.settings.plans;
    let plan = plans
        .get(&workspace.plan)
        .or_else(|| plans.get(state.settings.default_plan()));
    Ok((workspace.plan, plan.map_or(0, |p| p.webhook_endpoints)))
}

/// Refuses link IDs that are not links of the workspace (422).
fn check_links(state: &AppState, ws: &WorkspaceId, fields: &HookFields) -> Result<(), ApiError> {
    if let Some(Some(ids)) = &fields.link_ids {
        for id in ids {
            if state.store.owned_link(ws, id)?.is_none() {
                return Err(ApiError::field(
                    "link_ids",
                    format!("`{id}` is not a link of this workspace"),
                ));
            }
        }
    }
    Ok(())
}

#[utoipa::path(tag = "webhooks", request_body = CreateWebhookBody,
    responses((status = 201, description = "The webhook and its secret (shown only now and when rotated)", body = WebhookWithSecret),
        (status = 403, description = "The workspace has as many webhooks as its plan allows (or a publishable token)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed, including a URL whose host is a non-public IP address", body = Problem, content_type = "application/problem+json")))]
#[post("/webhooks")]
async fn create_webhook(
    state: web::Data<AppState>,
    caller: SecretCaller,
    body: JsonObject<CreateWebhookBody>,
) -> Result<HttpResponse, ApiError> {
    let ws = caller.0.workspace_id;
    let allow_private = state.settings.webhooks.allow_private_targets;
    let (fields, key) = body
        .into_inner()
        .parse(allow_private)
        .map_err(ApiError::validation)?;
    check_links(&state, &ws, &fields)?;
    let key = key.unwrap_or_else(generate_key);
    let (plan, limit) = plan_limit(&state, &ws)?;
    let hook = {
        let _one_at_a_time = state
            .webhooks
            .create_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The creation time is taken under the lock: the Webhooks worker
        // relies on it to skip scans no new hook can want (`Webhooks::apply`).
        let now = Timestamp::now();
        let hook = Webhook {
            name: fields.name.flatten(),
            ..Webhook::new(
                ws,
                fields.url.unwrap_or_default(),
                fields.events.unwrap_or_default(),
                fields.link_ids.flatten(),
                key.clone(),
                now,
            )
        };
        let existing = state.store.webhooks_of(&ws)?.len();
        if limit > 0 && existing >= limit as usize {
            let s = if limit == 1 { "" } else { "s" };
            return Err(ApiError::forbidden(format!(
                "The `{plan}` plan allows {limit} webhook endpoint{s} per workspace; delete one \
                 or move the workspace to a larger plan."
            )));
        }
        state.store.insert_webhook(&hook)?;
        hook
    };
    tracing::info!(webhook = %hook.id, workspace = %ws, "webhook created");
    Ok(HttpResponse::Created().json(WebhookWithSecret {
        webhook: hook.into(),
        secret: secret_string(&key),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWebhooksQuery {
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
    /// `next_page_token` of the previous page; empty means the first page.
    page_token: Option<String>,
}

#[utoipa::path(tag = "webhooks", params(ListWebhooksQuery),
    responses((status = 200, description = "The workspace's webhooks, newest first", body = ListResponse<WebhookView>)))]
#[get("/webhooks")]
async fn list_webhooks(
    state: web::Data<AppState>,
    caller: SecretCaller,
    q: web::Query<ListWebhooksQuery>,
) -> Result<HttpResponse, ApiError> {
    let ws = caller.0.workspace_id;
    let scope = QueryScope::new(&state.page_tokens, &ws, "webhooks", "");
    let page = PageParams::parse(q.page_size.as_deref(), q.page_token.as_deref(), &scope)?;
    let found = state
        .store
        .list_webhooks(&ws, page.cursor.as_deref(), page.size)?;
    Ok(HttpResponse::Ok().json(ListResponse {
        data: found
            .items
            .into_iter()
            .map(WebhookView::from)
            .collect::<Vec<_>>(),
        next_page_token: scope.token(found.next_cursor),
    }))
}

fn find(state: &AppState, caller: &SecretCaller, raw_id: &str) -> Result<Webhook, ApiError> {
    let id = parse_id::<WebhookKind>("id", raw_id)?;
    state
        .store
        .owned_webhook(&caller.0.workspace_id, &id)?
        .ok_or_else(|| ApiError::not_found("No webhook with this ID."))
}

#[utoipa::path(tag = "webhooks", params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)")),
    responses((status = 200, description = "The webhook", body = WebhookView)))]
#[get("/webhooks/{id}")]
async fn get_webhook(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(WebhookView::from(find(&state, &caller, &id)?)))
}

/// Applies `change` to the stored hook in a transaction (the delivery
/// worker updates its counters concurrently); `None` when it is gone.
fn modify(
    store: &Store,
    id: &WebhookId,
    change: impl Fn(&mut Webhook),
) -> StoreResult<Option<Webhook>> {
    store.webhook_tx(|tx| {
        let Some(mut hook) = tx.hook(id)? else {
            return Ok(None);
        };
        change(&mut hook);
        tx.put_hook(&hook)?;
        Ok(Some(hook))
    })
}

#[utoipa::path(tag = "webhooks", params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)")), request_body = UpdateWebhookBody,
    responses((status = 200, description = "The updated webhook", body = WebhookView)))]
#[patch("/webhooks/{id}")]
async fn update_webhook(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    body: JsonObject<UpdateWebhookBody>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &caller, &id)?;
    let allow_private = state.settings.webhooks.allow_private_targets;
    let fields = body
        .into_inner()
        .parse(allow_private)
        .map_err(ApiError::validation)?;
    check_links(&state, &caller.0.workspace_id, &fields)?;
    let now = Timestamp::now();
    let updated = modify(&state.store, &hook.id, |h| {
        if let Some(url) = &fields.url {
            h.url = url.clone();
        }
        if let Some(events) = &fields.events {
            h.events = events.clone();
        }
        if let Some(name) = &fields.name {
            h.name = name.clone();
        }
        if let Some(link_ids) = &fields.link_ids {
            h.link_ids = link_ids.clone();
        }
        if let Some(status) = fields.status {
            if status == WebhookStatus::Active {
                h.consecutive_failures = 0;
            }
            h.status = status;
        }
        h.updated_at = now;
    })?
    .ok_or_else(|| ApiError::not_found("No webhook with this ID."))?;
    // Held messages of a hook active again go now; a disabled hook's fail.
    state.webhooks.wake();
    Ok(HttpResponse::Ok().json(WebhookView::from(updated)))
}

#[utoipa::path(tag = "webhooks", params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)")),
    responses((status = 204, description = "Deleted, with its messages and delivery log")))]
#[delete("/webhooks/{id}")]
async fn delete_webhook(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &caller, &id)?;
    state.store.delete_webhook(&hook)?;
    state.webhooks.outbox().take_queued(hook.id);
    let store = state.store.clone();
    web::block(move || -> StoreResult<()> {
        while store.purge_webhook_records(&hook.id, 1_000)? > 0 {}
        Ok(())
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    tracing::info!(webhook = %hook.id, "webhook deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(tag = "webhooks", params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)")),
    responses((status = 200, description = "The webhook with its new secret; the previous secret keeps signing alongside for 24 hours", body = WebhookWithSecret)))]
#[post("/webhooks/{id}/rotate-secret")]
async fn rotate_webhook_secret(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &caller, &id)?;
    let key = generate_key();
    let now = Timestamp::now();
    let rotated = modify(&state.store, &hook.id, |h| {
        h.rotate(key.clone(), now);
        h.updated_at = now;
    })?
    .ok_or_else(|| ApiError::not_found("No webhook with this ID."))?;
    tracing::info!(webhook = %hook.id, "webhook secret rotated");
    Ok(HttpResponse::Ok().json(WebhookWithSecret {
        webhook: rotated.into(),
        secret: secret_string(&key),
    }))
}

/// A hook that sends nothing cannot take a test or a redelivery.
fn must_send(hook: &Webhook) -> Result<(), ApiError> {
    match hook.status {
        WebhookStatus::Active | WebhookStatus::Paused => Ok(()),
        WebhookStatus::Disabled | WebhookStatus::AutoDisabled => Err(ApiError::conflict(format!(
            "The webhook is {}; set its status to `active` first.",
            hook.status.as_str()
        ))),
    }
}

#[utoipa::path(tag = "webhooks", params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)")),
    responses((status = 202, description = "A `webhook.test` message is queued (held while the webhook is paused)", body = QueuedMessage),
        (status = 409, description = "The webhook is disabled or auto_disabled", body = Problem, content_type = "application/problem+json")))]
#[post("/webhooks/{id}/test")]
async fn test_webhook(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &caller, &id)?;
    must_send(&hook)?;
    let now = Timestamp::now();
    let message = new_message(
        MessageId::generate(),
        &hook,
        EventType::WebhookTest,
        test_body(&hook, now)?,
        now,
    );
    let message_id = message.0.id;
    let written = store_messages(&state.store, &[message], None)?;
    state.webhooks.queue(&written);
    Ok(HttpResponse::Accepted().json(QueuedMessage { message_id }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveriesQuery {
    /// Only attempts with this status.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// 1 to 500, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    page_size: Option<String>,
    /// `next_page_token` of the previous page; empty means the first page.
    page_token: Option<String>,
}

#[utoipa::path(tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)"), ListDeliveriesQuery),
    responses((status = 200, description = "The webhook's delivery attempts (scheduled ones as `pending`), newest first", body = ListResponse<DeliveryView>)))]
#[get("/webhooks/{id}/deliveries")]
async fn list_webhook_deliveries(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    q: web::Query<ListDeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &caller, &id)?;
    let status = match query_value("status", &q.status)? {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(_) => {
            return Err(ApiError::bad_request(
                "status must be `pending`, `succeeded` or `failed`.",
            ));
        }
    };
    let filters = format!("hook={}&status={status:?}", hook.id);
    let scope = QueryScope::new(
        &state.page_tokens,
        &caller.0.workspace_id,
        "webhook_deliveries",
        &filters,
    );
    let page = PageParams::parse(q.page_size.as_deref(), q.page_token.as_deref(), &scope)?;
    let found =
        state
            .store
            .list_webhook_deliveries(&hook.id, status, page.cursor.as_deref(), page.size)?;
    Ok(HttpResponse::Ok().json(ListResponse {
        data: found
            .items
            .into_iter()
            .map(DeliveryView::from)
            .collect::<Vec<_>>(),
        next_page_token: scope.token(found.next_cursor),
    }))
}

/// Whether a requeue found the message pending already.
enum Requeue {
    Queued(PendingMessage),
    AlreadyPending,
    Missing,
}

/// Queues a finished message of `hook` for a new round of attempts
/// (trigger `manual`), in one transaction.
fn requeue(store: &Store, hook: &Webhook, msg: &MessageId, now: Timestamp) -> StoreResult<Requeue> {
    store.webhook_tx(|tx| {
        let Some(mut m) = tx.message(&hook.id, msg)? else {
            return Ok(Requeue::Missing);
        };
        if m.hook_id != hook.id {
            return Ok(Requeue::Missing);
        }
        if m.state == MessageState::Pending {
            return Ok(Requeue::AlreadyPending);
        }
        m.trigger = Trigger::Manual;
        let d = Delivery::pending(
            DeliveryId::generate(),
            &m,
            m.attempts + 1,
            hook.url.clone(),
            now,
            now,
        );
        m.state = MessageState::Pending;
        m.round_attempts = 0;
        m.next_attempt_at = now;
        m.next_delivery = Some(d.id);
        m.failure_reason = None;
        m.finished_at = None;
        tx.put_delivery(&d)?;
        tx.put_message(&m)?;
        Ok(Requeue::Queued(PendingMessage {
            hook: hook.id,
            message: m.id,
            due: now,
        }))
    })
}

#[utoipa::path(tag = "webhooks",
    params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)"),
        ("msg_id" = MessageId, Path, description = "Message ID (msg_...): a `webhook-id`")),
    responses((status = 202, description = "The message is queued again, with the same `webhook-id` and body", body = QueuedMessage),
        (status = 409, description = "The message is still pending, or the webhook is disabled or auto_disabled", body = Problem, content_type = "application/problem+json")))]
#[post("/webhooks/{id}/messages/{msg_id}/redeliver")]
async fn redeliver_webhook_message(
    state: web::Data<AppState>,
    caller: SecretCaller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, msg_id) = path.into_inner();
    let hook = find(&state, &caller, &id)?;
    let msg = parse_id::<MessageKind>("msg_id", &msg_id)?;
    must_send(&hook)?;
    match requeue(&state.store, &hook, &msg, Timestamp::now())? {
        Requeue::Queued(p) => {
            state.webhooks.queue(&[p]);
            Ok(HttpResponse::Accepted().json(QueuedMessage { message_id: msg }))
        }
        Requeue::AlreadyPending => Err(ApiError::conflict(
            "The message is still pending: it is being delivered or will be retried.",
        )),
        Requeue::Missing => Err(ApiError::not_found(
            "No message with this ID for this webhook.",
        )),
    }
}

#[utoipa::path(tag = "webhooks", params(("id" = WebhookId, Path, description = "Webhook ID (wh_...)")), request_body = RecoverBody,
    responses((status = 202, description = "Every failed message of the webhook made since `since` is queued again", body = Recovered),
        (status = 409, description = "The webhook is disabled or auto_disabled", body = Problem, content_type = "application/problem+json")))]
#[post("/webhooks/{id}/recover")]
async fn recover_webhook_messages(
    state: web::Data<AppState>,
    caller: SecretCaller,
    id: web::Path<String>,
    body: JsonObject<RecoverBody>,
) -> Result<HttpResponse, ApiError> {
    let hook = find(&state, &caller, &id)?;
    let since = body.into_inner().parse().map_err(ApiError::validation)?;
    must_send(&hook)?;
    let (store, hub) = (state.store.clone(), state.webhooks.clone());
    let queued = web::block(move || recover(&store, &hub, &hook, since))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    Ok(HttpResponse::Accepted().json(Recovered { queued }))
}

fn recover(store: &Store, hub: &WebhookHub, hook: &Webhook, since: Timestamp) -> StoreResult<u64> {
    let now = Timestamp::now();
    let mut queued = 0;
    for msg in store.webhook_messages_since(&hook.id, since)? {
        let failed = store
            .webhook_message(&hook.id, &msg)?
            .is_some_and(|m| m.state == MessageState::Failed);
        if !failed {
            continue;
        }
        if let Requeue::Queued(p) = requeue(store, hook, &msg, now)? {
            hub.queue(&[p]);
            queued += 1;
        }
    }
    Ok(queued)
}
