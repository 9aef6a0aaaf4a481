//! The OpenAPI 3.1 document, generated from the handlers that the router
//! itself registers (`http::documented`), plus the conventions every `/v1`
//! operation shares: bearer auth, problem+json error responses, and the
//! rate-limit headers on every answer.

use actix_web::App;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, Object, OpenApi as Document, Ref, RefOr, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use utoipa_actix_web::AppExt;

use crate::domain::FieldError;
use crate::http::error::{PROBLEM_JSON, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scanhop API",
        version = "1",
        description = "Dynamic QR codes and short links with privacy-preserving scan analytics. \
            Authenticate with `Authorization: Bearer <token>`. Errors are RFC 9457 problem+json."
    ),
    security(("bearer" = [])),
    // Reached only through a `schema_with` field or a query parameter's
    // `value_type`, which utoipa does not collect.
    components(schemas(
        crate::domain::FormField,
        crate::domain::link::FormFieldType,
        crate::http::api::qr::QrFormat,
        crate::http::api::qr::QrEcc,
        crate::export::ExportFormat
    )),
    tags(
        (name = "links", description = "Links (a QR code is a link)"),
        (name = "events", description = "Scan events"),
        (name = "workspace", description = "The caller's workspace"),
        (name = "tokens", description = "API tokens"),
        (name = "webhooks", description = "Signed deliveries of scan events to your endpoints"),
    )
)]
struct ApiDoc;

/// The error answers any `/v1` operation may give.
const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "Malformed request: bad JSON, bad ID, bad query parameter or page token",
    ),
    ("401", "Missing, invalid or revoked token"),
    (
        "403",
        "A publishable token outside `POST /v1/visitors/identify`",
    ),
    ("404", "No such resource in the caller's workspace"),
    ("413", "Request body too large"),
    ("422", "Validation failed; `errors` names each field"),
    ("429", "Rate limited; see `Retry-After`"),
    ("500", "Internal error"),
    ("503", "Unavailable (shutting down or overloaded)"),
];

/// The headers every `/v1` answer carries: name, type, description, example.
const RATE_LIMIT_HEADERS: &[(&str, Type, &str, &str)] = &[
    (
        "X-RateLimit-Limit",
        Type::Integer,
        "Requests per minute of the plan.",
        "600",
    ),
    (
        "X-RateLimit-Remaining",
        Type::Integer,
        "Requests left right now.",
        "599",
    ),
    (
        "X-RateLimit-Reset",
        Type::Integer,
        "Unix time (seconds) when the allowance is full again.",
        "1780000000",
    ),
    (
        "RateLimit-Policy",
        Type::String,
        "The quota policy (draft-ietf-httpapi-ratelimit-headers): `q` requests per \
         `w` seconds, a Structured Field list of one item named `\"default\"`.",
        "\"default\";q=600;w=60",
    ),
    (
        "RateLimit",
        Type::String,
        "The current service limit (draft-ietf-httpapi-ratelimit-headers): `r` requests \
         left, and `t` seconds until the allowance is full again (on a 429, until \
         `Retry-After`).",
        "\"default\";r=599;t=1",
    ),
];

/// Only on 429 answers.
const RETRY_AFTER: (&str, Type, &str, &str) = (
    "Retry-After",
    Type::Integer,
    "Seconds to wait before the next request is allowed.",
    "7",
);

/// OpenAPI links: an answer's value that another operation takes, so
/// clients (and stateful fuzzers) can chain calls: (from operation, status,
/// link name, to operation, its parameter, the value's runtime expression).
/// Rows with the same link name give one link several parameters.
// One row per link reads as a table; rustfmt would spread each over 8 lines.
#[rustfmt::skip]
const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
    ("create_link", "201", "GetLink", "get_link", "id", ID),
    ("create_link", "201", "UpdateLink", "update_link", "id", ID),
    ("create_link", "201", "DeleteLink", "delete_link", "id", ID),
    ("create_link", "201", "ListEventsOfLink", "list_events", "link_id", ID),
    ("update_link", "200", "GetUpdatedLink", "get_link", "id", ID),
    ("list_links", "200", "GetFirstLink", "get_link", "id", FIRST_ID),
    ("list_events", "200", "GetFirstEvent", "get_event", "id", FIRST_ID),
    ("create_token", "201", "RevokeToken", "revoke_token", "id", ID),
    ("create_webhook", "201", "GetWebhook", "get_webhook", "id", ID),
    ("create_webhook", "201", "UpdateWebhook", "update_webhook", "id", ID),
    ("create_webhook", "201", "DeleteWebhook", "delete_webhook", "id", ID),
    ("create_webhook", "201", "RotateWebhookSecret", "rotate_webhook_secret", "id", ID),
    ("create_webhook", "201", "TestWebhook", "test_webhook", "id", ID),
    ("create_webhook", "201", "ListWebhookDeliveries", "list_webhook_deliveries", "id", ID),
    ("create_webhook", "201", "RecoverWebhookMessages", "recover_webhook_messages", "id", ID),
    ("update_webhook", "200", "GetUpdatedWebhook", "get_webhook", "id", ID),
    ("list_webhooks", "200", "GetFirstWebhook", "get_webhook", "id", FIRST_ID),
    ("test_webhook", "202", "RedeliverTestMessage", "redeliver_webhook_message", "id", "$request.path.id"),
    ("test_webhook", "202", "RedeliverTestMessage", "redeliver_webhook_message", "msg_id", "$response.body#/message_id"),
];
const ID: &str = "$response.body#/id";
const FIRST_ID: &str = "$response.body#/data/0/id";

struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sk_... or pk_...")
                    .build(),
            ),
        );
        components
            .schemas
            .insert(Problem::name().into_owned(), Problem::schema());
        components
            .schemas
            .insert(FieldError::name().into_owned(), FieldError::schema());
        add_header_components(components);
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
                &mut item.options,
            ];
            for op in ops.into_iter().flatten() {
                add_error_responses(op);
                add_response_headers(op);
                add_links(op);
            }
        }
    }
}

fn add_links(op: &mut Operation) {
    let Some(from) = op.operation_id.clone() else {
        return;
    };
    let rows: Vec<_> = LINKS.iter().filter(|l| l.0 == from).collect();
    for (i, (_, status, name, to, ..)) in rows.iter().enumerate() {
        if rows[..i].iter().any(|r| r.2 == *name && r.1 == *status) {
            continue;
        }
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
            continue;
        };
        let mut link = LinkBuilder::new().operation_id(*to);
        for (.., param, value) in rows.iter().filter(|r| r.2 == *name && r.1 == *status) {
            link = link.parameter(*param, *value);
        }
        response
            .links
            .insert((*name).to_owned(), link.build().into());
    }
}

fn add_error_responses(op: &mut Operation) {
    for (status, description) in ERRORS {
        if op.responses.responses.contains_key(*status) {
            continue;
        }
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .build();
        let response = ResponseBuilder::new()
            .description(*description)
            .content(PROBLEM_JSON, content)
            .build();
        op.responses
            .responses
            .insert((*status).to_owned(), response.into());
    }
}

fn add_header_components(components: &mut Components) {
    for (name, kind, description, example) in RATE_LIMIT_HEADERS.iter().chain([&RETRY_AFTER]) {
        let header = HeaderBuilder::new()
            .schema(Some(Object::with_type(kind.clone())))
            .description(Some(*description))
            .example(Some(example_value(kind, example)))
            .build();
        components.headers.insert((*name).to_owned(), header.into());
    }
}

/// An example as a JSON value of the header's type.
fn example_value(kind: &Type, example: &str) -> serde_json::Value {
    match (kind, example.parse::<u64>()) {
        (Type::Integer, Ok(n)) => n.into(),
        _ => example.into(),
    }
}

/// Every answer of `op`, successful or not, refers to the rate-limit headers;
/// a 429 also to `Retry-After`.
fn add_response_headers(op: &mut Operation) {
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let extra = (status == "429").then_some(&RETRY_AFTER);
        for (name, ..) in RATE_LIMIT_HEADERS.iter().chain(extra) {
            let target = Ref::new(format!("#/components/headers/{name}"));
            response
                .headers
                .insert((*name).to_owned(), RefOr::Ref(target));
        }
    }
}

/// The whole document, built from the same route table the server uses.
pub fn document() -> Document {
    let (_, mut doc) = super::documented(App::new().into_utoipa_app().openapi(ApiDoc::openapi()))
        .split_for_parts();
    Conventions.modify(&mut doc);
    doc
}
