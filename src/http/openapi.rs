//! The OpenAPI 3.1 document, generated from the handlers that the router
//! itself registers (`http::documented`), plus the conventions every `/v1`
//! operation shares: bearer auth and problem+json error responses.

use actix_web::App;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
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
    // Reached only through a `schema_with` field, which utoipa cannot follow.
    components(schemas(crate::domain::FormField, crate::domain::link::FormFieldType)),
    tags(
        (name = "links", description = "Links (a QR code is a link)"),
        (name = "events", description = "Scan events"),
        (name = "workspace", description = "The caller's workspace"),
        (name = "tokens", description = "API tokens"),
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
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ];
            for op in ops.into_iter().flatten() {
                add_error_responses(op);
            }
        }
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

/// The whole document, built from the same route table the server uses.
pub fn document() -> Document {
    let (_, mut doc) = super::documented(App::new().into_utoipa_app().openapi(ApiDoc::openapi()))
        .split_for_parts();
    Conventions.modify(&mut doc);
    doc
}
