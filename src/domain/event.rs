//! Scan events: one per answered redirect, written once by the Recorder.

use serde::{Deserialize, Serialize};

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
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub isp: Option<String>,
    pub asn: Option<u32>,
    pub language: Option<String>,
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
