//! Scan events: one per answered redirect, written once by the Recorder.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::Timestamp;
use crate::ids::{EventId, LinkId, VisitorId, WorkspaceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ScanMethod {
    Get,
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    Mobile,
    Tablet,
    Desktop,
    Bot,
    Other,
}

impl DeviceType {
    pub const ALL: [DeviceType; 5] = [
        DeviceType::Mobile,
        DeviceType::Tablet,
        DeviceType::Desktop,
        DeviceType::Bot,
        DeviceType::Other,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceType::Mobile => "mobile",
            DeviceType::Tablet => "tablet",
            DeviceType::Desktop => "desktop",
            DeviceType::Bot => "bot",
            DeviceType::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceType> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A recorded scan. The time is the one inside the event's UUIDv7 ID. The raw
/// IP is never part of it; `ip_hash` is SHA-256 of (daily salt, IP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanEvent {
    pub id: EventId,
    pub workspace_id: WorkspaceId,
    pub link_id: LinkId,
    pub visitor_id: Option<VisitorId>,
    pub method: ScanMethod,
    pub device_type: DeviceType,
    pub os: Option<CompactString>,
    pub os_version: Option<CompactString>,
    pub browser: Option<CompactString>,
    pub browser_version: Option<CompactString>,
    pub country: Option<CompactString>,
    pub region: Option<CompactString>,
    pub city: Option<CompactString>,
    pub isp: Option<CompactString>,
    pub asn: Option<u32>,
    pub language: Option<CompactString>,
    pub referer: Option<String>,
    pub destination: String,
    pub ip_hash: [u8; 32],
    pub bot: bool,
}

impl ScanEvent {
    /// Workspace-local "tag" filters need the link; everything else is on the event.
    pub fn timestamp_ms(&self) -> i64 {
        self.id.timestamp_ms()
    }
}

// The event as the API shows it: what `GET /v1/events` lists and the export
// writes, one serializer for both. (The doc comment below is the schema's
// description in the OpenAPI document.)
/// One scan of a link: when and how it was opened, by what device and
/// software, from roughly where, and where the visitor was sent. Location
/// fields are `null` when no configured GeoIP database knows the address; the
/// IP itself is never stored, only `ip_hash`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: EventId,
    pub link_id: LinkId,
    pub visitor_id: Option<VisitorId>,
    pub timestamp: Timestamp,
    pub method: ScanMethod,
    pub device_type: DeviceType,
    // The event's own compact strings, moved rather than copied.
    #[schema(value_type = Option<String>)]
    pub os: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub os_version: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub browser: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub browser_version: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub country: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub region: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub city: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub isp: Option<CompactString>,
    pub asn: Option<u32>,
    #[schema(value_type = Option<String>)]
    pub language: Option<CompactString>,
    pub referer: Option<String>,
    pub destination: String,
    /// Hex SHA-256 of a daily salt and the client IP.
    #[schema(value_type = String)]
    pub ip_hash: HexDigest,
    pub bot: bool,
}

/// A SHA-256 digest, written as 64 lower-case hex digits (built on the
/// stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexDigest(pub [u8; 32]);

impl Serialize for HexDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = [0u8; 64];
        // `encode_to_slice` fails only on a wrong output length.
        hex::encode_to_slice(self.0, &mut out).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(std::str::from_utf8(&out).map_err(serde::ser::Error::custom)?)
    }
}

impl From<ScanEvent> for EventView {
    fn from(e: ScanEvent) -> Self {
        EventView {
            timestamp: Timestamp::from_millis(e.timestamp_ms()),
            id: e.id,
            link_id: e.link_id,
            visitor_id: e.visitor_id,
            method: e.method,
            device_type: e.device_type,
            os: e.os,
            os_version: e.os_version,
            browser: e.browser,
            browser_version: e.browser_version,
            country: e.country,
            region: e.region,
            city: e.city,
            isp: e.isp,
            asn: e.asn,
            language: e.language,
            referer: e.referer,
            destination: e.destination,
            ip_hash: HexDigest(e.ip_hash),
            bot: e.bot,
        }
    }
}

#[cfg(test)]
impl ScanEvent {
    /// A plain human scan from a phone with no enrichment, for tests.
    pub fn sample(id: EventId, workspace_id: WorkspaceId, link_id: LinkId) -> ScanEvent {
        ScanEvent {
            id,
            workspace_id,
            link_id,
            visitor_id: None,
            method: ScanMethod::Get,
            device_type: DeviceType::Mobile,
            os: None,
            os_version: None,
            browser: None,
            browser_version: None,
            country: None,
            region: None,
            city: None,
            isp: None,
            asn: None,
            language: None,
            referer: None,
            destination: "https://e.com/".into(),
            ip_hash: [0; 32],
            bot: false,
        }
    }
}
