//! Webhooks: endpoints a workspace registers, the messages derived for them,
//! and the delivery attempts of those messages. Also the rules that need no
//! I/O: secrets in Standard Webhooks form, signatures, message IDs derived
//! from their event, and which target addresses are refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Timestamp;
use crate::ids::{DeliveryId, EventId, LinkId, MessageId, WebhookId, WorkspaceId};

/// Secrets in the form the Standard Webhooks libraries read.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of a generated secret.
pub const GENERATED_KEY_BYTES: usize = 24;
/// A secret sent in another form is used as its UTF-8 bytes: at least this
/// many characters.
pub const MIN_RAW_SECRET_LEN: usize = 16;
/// Characters of a secret as sent, in either form.
pub const MAX_SECRET_LEN: usize = 100;
/// Bytes a `whsec_` secret may decode to.
pub const MIN_KEY_BYTES: usize = 16;
pub const MAX_KEY_BYTES: usize = 66;
/// How long a rotated-out secret keeps signing.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 60 * 60 * 1000;
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_LINK_IDS: usize = 100;
pub const MAX_EVENTS: usize = 10;
/// Bytes of a response body kept in the delivery log.
pub const RESPONSE_BODY_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Messages are derived and sent.
    Active,
    /// Messages are derived and held; sent once the hook is active again.
    Paused,
    /// Switched off by its owner: no messages are derived.
    Disabled,
    /// Switched off by the server after repeated failures: no messages.
    AutoDisabled,
}

impl WebhookStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            WebhookStatus::Active => "active",
            WebhookStatus::Paused => "paused",
            WebhookStatus::Disabled => "disabled",
            WebhookStatus::AutoDisabled => "auto_disabled",
        }
    }

    /// Whether new messages are derived for a hook in this status.
    pub fn takes_messages(&self) -> bool {
        matches!(self, WebhookStatus::Active | WebhookStatus::Paused)
    }
}

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "qr.scanned")]
    QrScanned,
    #[serde(rename = "step.completed")]
    StepCompleted,
    #[serde(rename = "visitor.identified")]
    VisitorIdentified,
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    /// The types a hook subscribes to (a test message is sent whatever it
    /// subscribed to).
    pub const SUBSCRIBABLE: [EventType; 3] = [
        EventType::QrScanned,
        EventType::StepCompleted,
        EventType::VisitorIdentified,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::QrScanned => "qr.scanned",
            EventType::StepCompleted => "step.completed",
            EventType::VisitorIdentified => "visitor.identified",
            EventType::WebhookTest => "webhook.test",
        }
    }

    pub fn parse_subscribable(s: &str) -> Option<EventType> {
        Self::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == s)
    }
}

/// One signing key of a hook. Never printed: `Debug` shows only its expiry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookKey {
    pub key: Vec<u8>,
    /// Set when the key was rotated out: it signs until then.
    pub expires_at: Option<Timestamp>,
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookKey")
            .field("key", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub workspace_id: WorkspaceId,
    pub name: Option<String>,
    pub url: String,
    /// Subscribed types, without duplicates, in the order first sent.
    pub events: Vec<EventType>,
    /// `None`: every link of the workspace.
    pub link_ids: Option<Vec<LinkId>>,
    pub status: WebhookStatus,
    /// The current key last; older ones until their `expires_at`.
    pub keys: Vec<WebhookKey>,
    pub consecutive_failures: u32,
    pub success_count: u64,
    pub failure_count: u64,
    pub last_sent_at: Option<Timestamp>,
    pub last_delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Webhook {
    /// A new active hook of workspace `ws`, signing with `key`, with no
    /// delivery yet, made at `now`.
    pub fn new(
        ws: WorkspaceId,
        url: String,
        events: Vec<EventType>,
        link_ids: Option<Vec<LinkId>>,
        key: Vec<u8>,
        now: Timestamp,
    ) -> Webhook {
        Webhook {
            id: WebhookId::generate(),
            workspace_id: ws,
            name: None,
            url,
            events,
            link_ids,
            status: WebhookStatus::Active,
            keys: vec![WebhookKey {
                key,
                expires_at: None,
            }],
            consecutive_failures: 0,
            success_count: 0,
            failure_count: 0,
            last_sent_at: None,
            last_delivered_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The keys that sign at `now`.
    pub fn signing_keys(&self, now: Timestamp) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .filter(|k| k.expires_at.is_none_or(|at| now < at))
            .map(|k| k.key.clone())
            .collect()
    }

    /// Whether an event of `link` of type `ty` at `at` makes a message for
    /// this hook.
    pub fn wants(&self, ty: EventType, link: &LinkId, at: Timestamp) -> bool {
        self.status.takes_messages()
            && at >= self.created_at
            && self.events.contains(&ty)
            && self.link_ids.as_ref().is_none_or(|ids| ids.contains(link))
    }

    /// Makes `key` the current key; the others sign until `now` + 24 h
    /// (those already expiring keep their time), expired ones are dropped.
    pub fn rotate(&mut self, key: Vec<u8>, now: Timestamp) {
        let until = Timestamp::from_millis(now.as_millis() + ROTATION_OVERLAP_MS);
        self.keys.retain(|k| k.expires_at.is_none_or(|at| now < at));
        for k in &mut self.keys {
            k.expires_at.get_or_insert(until);
        }
        self.keys.push(WebhookKey {
            key,
            expires_at: None,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for an attempt (or in one).
    Pending,
    Succeeded,
    Failed,
}

/// What started a round of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Derived from an event (or a test), sent on its own.
    Auto,
    /// Sent again on request (`redeliver`, `recover`).
    Manual,
}

/// One message for one hook: its body is serialized once and sent, byte for
/// byte, on every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub hook_id: WebhookId,
    pub workspace_id: WorkspaceId,
    pub event_type: EventType,
    /// Written and read as one run of bytes (the same encoding as a
    /// sequence of `u8`, without a call per byte).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub created_at: Timestamp,
    pub state: MessageState,
    /// Attempts made, in all rounds.
    pub attempts: u32,
    /// Attempts made in the current round.
    pub round_attempts: u32,
    pub trigger: Trigger,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: Timestamp,
    /// The delivery record of the next attempt (while pending).
    pub next_delivery: Option<DeliveryId>,
    /// Why it failed, when it did (`http_status`, `webhook_auto_disabled`, ...).
    pub failure_reason: Option<String>,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Scheduled, not made yet.
    Pending,
    Succeeded,
    Failed,
}

/// One delivery attempt of a message (the delivery log). Holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub message_id: MessageId,
    pub hook_id: WebhookId,
    pub event_type: EventType,
    /// 1 for the first attempt of the message, counting across rounds.
    pub attempt: u32,
    pub trigger: Trigger,
    pub status: DeliveryStatus,
    pub url: String,
    pub created_at: Timestamp,
    pub scheduled_for: Timestamp,
    pub attempted_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub next_attempt_at: Option<Timestamp>,
    /// How many signatures the request carried (two during a rotation).
    pub signatures: u8,
}

impl Delivery {
    /// The record of attempt `attempt` of `message` to `url`, not made yet:
    /// written when it is scheduled, for `scheduled_for`.
    pub fn pending(
        id: DeliveryId,
        message: &Message,
        attempt: u32,
        url: String,
        created_at: Timestamp,
        scheduled_for: Timestamp,
    ) -> Delivery {
        Delivery {
            id,
            message_id: message.id,
            hook_id: message.hook_id,
            event_type: message.event_type,
            attempt,
            trigger: message.trigger,
            status: DeliveryStatus::Pending,
            url,
            created_at,
            scheduled_for,
            attempted_at: None,
            duration_ms: None,
            response_status: None,
            response_body: None,
            error: None,
            next_attempt_at: None,
            signatures: 0,
        }
    }
}

/// `whsec_` + standard base64 of `key`: what verifiers are configured with.
pub fn secret_string(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// A new random key.
pub fn generate_key() -> Vec<u8> {
    crate::random::bytes::<GENERATED_KEY_BYTES>().to_vec()
}

/// The key of a secret as sent: a `whsec_` secret is its base64 part
/// decoded (canonical standard base64, 16 to 66 bytes); any other string of
/// 16 to 100 characters without control characters is its UTF-8 bytes.
pub fn parse_secret(raw: &str) -> Result<Vec<u8>, String> {
    let len = raw.chars().count();
    if !(MIN_RAW_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
        return Err(format!(
            "must be {MIN_RAW_SECRET_LEN} to {MAX_SECRET_LEN} characters long"
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    match raw.strip_prefix(SECRET_PREFIX) {
        Some(b64) => {
            let key = STANDARD.decode(b64).map_err(|_| {
                "a `whsec_` secret must be followed by standard base64 (with padding)".to_owned()
            })?;
            if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
                return Err(format!(
                    "a `whsec_` secret must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"
                ));
            }
            Ok(key)
        }
        None => Ok(raw.as_bytes().to_vec()),
    }
}

/// One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` with `key`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; this never fails.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one entry per key, space-separated.
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ID of the message of type `ty` about `event` for `hook`: the event's
/// time, then bits of a SHA-256 of the three. Deriving it twice gives the
/// same ID, so a message derived again after a crash is the same message.
pub fn message_id(event: &EventId, hook: &WebhookId, ty: EventType) -> MessageId {
    let digest = Sha256::new()
        .chain_update(event.as_bytes())
        .chain_update(hook.as_bytes())
        .chain_update(ty.as_str().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&event.as_bytes()[..6]);
    bytes[6..].copy_from_slice(&digest[..10]);
    // A UUIDv7 like every other ID: version 7, RFC 4122 variant.
    bytes[6] = 0x70 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    MessageId::from_bytes(bytes)
}

/// Whether a webhook may not connect to `ip` (unless the operator allows
/// private targets): loopback, private (RFC 1918, unique-local), link-local
/// (with the cloud metadata addresses), carrier-grade NAT, multicast,
/// unspecified, reserved and documentation ranges, also when written as
/// IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || (a == 169 && b == 254) // link-local, 169.254.169.254
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF, TEST-NET-1
        || (a == 198 && (b & 0xfe) == 18) // benchmarking
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224 // multicast, reserved, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..6] == [0; 6] {
        // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
        return true;
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return forbidden_v4(embedded(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return forbidden_v4(embedded(s[1], s[2])); // 6to4
    }
    (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] & 0xfe00) == 0xfc00 // unique-local, fd00:ec2::254
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only
}

/// A webhook URL as stored: an absolute http(s) URL without credentials (the
/// rules of a link's destination, normalised the same way), whose host, when
/// it is an IP address, is not a forbidden one (unless `allow_private`).
/// Names are checked when they are resolved, at every connection.
pub fn webhook_url(raw: &str, allow_private: bool) -> Result<String, String> {
    let url = super::Destination::parse(raw)?.as_str().to_owned();
    let parsed = url::Url::parse(&url).map_err(|e| e.to_string())?;
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    if !allow_private && ip.is_some_and(is_forbidden_ip) {
        return Err(
            "points to a loopback, private, link-local or otherwise non-public address, \
             which webhooks may not target on this server"
                .into(),
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_stored_as_before_as_bytes() {
        // Messages stored before the body was written as bytes (a sequence
        // of u8) read the same, and are written the same.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Former {
            body: Vec<u8>,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Now {
            #[serde(with = "serde_bytes")]
            body: Vec<u8>,
        }
        let config = bincode::config::standard();
        for body in [
            Vec::new(),
            b"{}".to_vec(),
            (0..=255u8).cycle().take(1000).collect(),
        ] {
            let former =
                bincode::serde::encode_to_vec(Former { body: body.clone() }, config).unwrap();
            let now = bincode::serde::encode_to_vec(Now { body: body.clone() }, config).unwrap();
            assert_eq!(former, now);
            let (read, _): (Now, usize) =
                bincode::serde::decode_from_slice(&former, config).unwrap();
            assert_eq!(read.body, body);
        }
    }

    #[test]
    fn webhook_signature_matches_the_standard_webhooks_test_vector() {
        let key = parse_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        let two = signature_header(&[key.clone(), key], "msg_x", 1, b"{}");
        assert_eq!(two.split(' ').count(), 2);
    }

    #[test]
    fn webhook_secrets_parse_strictly_and_answer_canonically() {
        let generated = generate_key();
        let s = secret_string(&generated);
        assert!(s.starts_with("whsec_") && s.len() == 6 + 32);
        assert_eq!(parse_secret(&s).unwrap(), generated);
        // A raw secret is its UTF-8 bytes.
        let raw = "correct horse battery";
        assert_eq!(parse_secret(raw).unwrap(), raw.as_bytes());
        assert_eq!(
            secret_string(raw.as_bytes()),
            format!("whsec_{}", STANDARD.encode(raw))
        );
        for bad in [
            "short",
            "whsec_not base64 at all!!",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o", // no padding
            "whsec_QUFBQUFBQUFBQUFBQUFB",            // 12 bytes
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD=", // bad padding
            "sixteen chars\u{7}..",
        ] {
            assert!(parse_secret(bad).is_err(), "{bad}");
        }
        assert!(parse_secret(&"x".repeat(101)).is_err());
    }

    #[test]
    fn webhook_message_ids_are_derived_from_event_hook_and_type() {
        let (e, h) = (EventId::generate(), WebhookId::generate());
        let a = message_id(&e, &h, EventType::QrScanned);
        assert_eq!(a, message_id(&e, &h, EventType::QrScanned));
        assert_ne!(a, message_id(&e, &h, EventType::StepCompleted));
        assert_ne!(
            a,
            message_id(&e, &WebhookId::generate(), EventType::QrScanned)
        );
        assert_eq!(a.timestamp_ms(), e.timestamp_ms());
        assert!(a.to_string().starts_with("msg_"));
        let back: MessageId = a.to_string().parse().unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn webhook_targets_refuse_private_addresses_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
        ] {
            assert!(is_forbidden_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden_ip(ip.parse().unwrap()), "{ip}");
        }
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://[::ffff:10.0.0.1]/",
            "https://[fd00:ec2::254]/",
        ] {
            assert!(webhook_url(url, false).is_err(), "{url}");
            assert!(webhook_url(url, true).is_ok(), "{url}");
        }
        for bad in [
            "ftp://example.com/",
            "https://u:p@example.com/",
            "/relative",
        ] {
            assert!(webhook_url(bad, true).is_err(), "{bad}");
        }
        assert_eq!(
            webhook_url("https://Hooks.Example.COM", false).unwrap(),
            "https://hooks.example.com/"
        );
        assert!(webhook_url("http://localhost:8080/hook", false).is_ok());
    }

    #[test]
    fn webhook_rotation_keeps_the_old_key_for_a_day() {
        let now = Timestamp::from_millis(1_000_000);
        let mut hook = Webhook::new(
            WorkspaceId::generate(),
            "https://e.com/".into(),
            vec![EventType::QrScanned],
            None,
            vec![1; 24],
            now,
        );
        hook.rotate(vec![2; 24], now);
        assert_eq!(hook.signing_keys(now), vec![vec![1; 24], vec![2; 24]]);
        let later = Timestamp::from_millis(now.as_millis() + ROTATION_OVERLAP_MS);
        assert_eq!(hook.signing_keys(later), vec![vec![2; 24]]);
        hook.rotate(vec![3; 24], later);
        assert_eq!(hook.keys.len(), 2, "the expired key is dropped");
        assert!(!format!("{hook:?}").contains("[2, 2"), "keys never print");
    }
}
