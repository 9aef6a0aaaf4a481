//! Plain domain types and the rules that make a value valid. Request bodies are
//! parsed into these at the edge, so the rest of the code never sees an
//! unchecked string.

pub mod event;
pub mod link;
pub mod schemas;
pub mod tally;
pub mod time;
pub mod token;
pub mod visitor;
pub mod webhook;
pub mod workspace;

pub use event::{DeviceType, EventView, ScanEvent, ScanMethod};
pub use link::{
    Destination, Form, FormField, FormFieldType, Link, LinkPatch, LinkStatus, NewLink, Slug,
};
pub use time::Timestamp;
pub use token::{Token, TokenSecret, TokenType};
pub use workspace::{Workspace, WorkspacePatch};

/// One rejected field of a request, reported under `errors` in a 422.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
