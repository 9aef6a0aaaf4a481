//! Settings: the embedded `config.toml` as base layer, an optional file over it,
//! then `SCANHOP__SECTION__KEY` environment overrides, validated in one place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Table, Value};

/// The committed, commented `config.toml`: every setting with its default.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");
const ENV_PREFIX: &str = "SCANHOP__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown setting `{0}`")]
    UnknownKey(String),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub resolver: ResolverSettings,
    pub recorder: RecorderSettings,
    pub counters: ConsumerSettings,
    pub visitors: ConsumerSettings,
    pub geoip: GeoipSettings,
    pub privacy: PrivacySettings,
    pub webhooks: WebhookSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    pub plans: BTreeMap<String, PlanSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub public_base_url: String,
    pub workers: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub redirect_status: u16,
    pub body_limit_bytes: usize,
    pub shutdown_timeout_secs: u64,
    pub drain_grace_ms: u64,
    pub drain_timeout_secs: u64,
    pub redirect_limit_per_minute: u32,
    pub rate_limit_prune_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Strict,
    Batched,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub path: PathBuf,
    pub durability: Durability,
    pub flush_interval_ms: u64,
    pub cache_capacity_mb: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    pub mailbox_capacity: usize,
    /// Links the redirect keeps in memory (the ones scanned lately); others
    /// are read from the store when scanned.
    pub cache_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    Wait,
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderSettings {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub batch_interval_ms: u64,
    /// The same wait in `strict` mode, where redirects wait for the scan
    /// log and not for the Recorder's commit.
    pub strict_batch_interval_ms: u64,
    pub overflow: Overflow,
    pub ack_timeout_ms: u64,
    pub mailbox_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoipSettings {
    pub city_db: PathBuf,
    pub asn_db: PathBuf,
    pub reload_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FingerprintScope {
    Persistent,
    Daily,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySettings {
    pub fingerprint_scope: FingerprintScope,
    pub salt_rotation_interval_ms: u64,
    /// Devices whose visitor the redirect remembers in memory.
    pub visitor_cache_entries: usize,
}

/// The settings every consumer of committed events takes (`actors::consumer`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Wake-ups (committed batches) waiting in its mailbox; more are dropped
    /// and read back from the store.
    pub mailbox_capacity: usize,
    /// Events read from the store per page when catching up.
    pub read_batch_size: usize,
    /// Milliseconds between checkpoints of position and state (and checks
    /// for events it was not woken for).
    pub checkpoint_interval_ms: u64,
}

/// `[webhooks]`: the Webhooks worker (a consumer of committed events) and
/// the delivery of its messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow targets that are (or resolve to) loopback or private addresses.
    pub allow_private_targets: bool,
    /// Milliseconds a delivery attempt may take in all (connect, send, answer).
    pub timeout_ms: u64,
    /// Milliseconds to resolve and connect (within `timeout_ms`).
    pub connect_timeout_ms: u64,
    /// Attempts per message (per round: a redelivery starts a new round).
    pub max_attempts: u32,
    /// Pause before the third attempt; each later one doubles it (±20%).
    pub retry_base_ms: u64,
    /// The longest pause between attempts.
    pub retry_max_ms: u64,
    /// Messages in a row that fail all their attempts before a hook is
    /// switched to `auto_disabled`.
    pub auto_disable_after: u32,
    /// Requests in flight to one endpoint at most.
    pub max_in_flight_per_endpoint: usize,
    /// Requests in flight in all at most.
    pub max_in_flight: usize,
    /// Pending messages kept at most; beyond it the oldest of the endpoint
    /// with the most are failed (`outbox_full`).
    pub outbox_capacity: usize,
    /// Pending messages built ahead for one hook at most: the scans after
    /// wait in the event log, and their messages are built once the hook's
    /// pending messages fall to half of it.
    pub build_ahead: usize,
    /// Milliseconds between steps of the delivery worker (retries that came due).
    pub poll_interval_ms: u64,
    /// While the rest of the server keeps the machine's cores busy, the
    /// percent of the machine's CPU time building and delivering messages
    /// may take (`actors::pacing`); 100 never holds them back.
    pub busy_cpu_percent: u32,
    /// Hours delivered and failed messages and their delivery records are kept.
    pub keep_messages_hours: u64,
    /// The Webhooks worker's consumer settings (see `[counters]`).
    pub mailbox_capacity: usize,
    pub read_batch_size: usize,
    pub checkpoint_interval_ms: u64,
}

impl WebhookSettings {
    /// The settings of the Webhooks worker as a consumer.
    pub fn consumer(&self) -> ConsumerSettings {
        ConsumerSettings {
            mailbox_capacity: self.mailbox_capacity,
            read_batch_size: self.read_batch_size,
            checkpoint_interval_ms: self.checkpoint_interval_ms,
        }
    }
}

/// The Purger (`actors::purger`): how often it runs and how much one pass does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Milliseconds between passes; 0 turns the background pass off.
    pub purge_interval_ms: u64,
    /// Segments rewritten per step (each in its own transaction).
    pub segments_per_step: usize,
    /// Most segments one pass rewrites.
    pub segments_per_run: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// One access line per API and operations request.
    pub access: bool,
    /// With `access`, a line per scan of a short link as well (the scan is
    /// stored as an event either way).
    pub access_redirects: bool,
}

/// The plan whose retention is set per workspace (`scanhop workspace set-plan
/// --retention-days`) rather than by the plan's `retention_days`.
pub const ENTERPRISE_PLAN: &str = "enterprise";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    pub retention_days: u32,
    pub requests_per_minute: u32,
    /// Webhook endpoints a workspace may have; 0 (also when left out of a
    /// plan an operator defines) means no limit.
    #[serde(default)]
    pub webhook_endpoints: u32,
}

impl Settings {
    /// Base layer, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let base: Table =
            DEFAULT_CONFIG
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: PathBuf::from("<embedded config.toml>"),
                    message: e.to_string(),
                })?;
        let mut merged = base.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.message().to_owned(),
                    })?;
            merge_tables(&mut merged, overlay, "")?;
        }
        for (name, raw) in env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                apply_env_override(&mut merged, &base, rest, &raw)?;
            }
        }
        Self::from_table(merged)
    }

    /// Deserializes and validates a fully merged table.
    pub fn from_table(table: Table) -> Result<Settings, ConfigError> {
        let settings: Settings =
            serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().message().to_owned();
                match message.strip_prefix("unknown field `") {
                    Some(rest) => {
                        let field = rest.split('`').next().unwrap_or_default();
                        let full = if key == "." {
                            field.to_owned()
                        } else {
                            format!("{key}.{field}")
                        };
                        ConfigError::UnknownKey(full.trim_start_matches('.').to_owned())
                    }
                    None => ConfigError::Invalid { key, message },
                }
            })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let base = url::Url::parse(&self.server.public_base_url)
            .map_err(|e| invalid("server.public_base_url", &e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(invalid(
                "server.public_base_url",
                "must be an absolute http(s) URL",
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(
                "server.public_base_url",
                "must not have a query or fragment",
            ));
        }
        if !matches!(self.server.redirect_status, 301 | 302 | 307 | 308) {
            return Err(invalid(
                "server.redirect_status",
                "must be 301, 302, 307 or 308",
            ));
        }
        if self.server.body_limit_bytes < 1024 {
            return Err(invalid("server.body_limit_bytes", "must be at least 1024"));
        }
        let positive = [
            ("storage.flush_interval_ms", self.storage.flush_interval_ms),
            ("server.drain_timeout_secs", self.server.drain_timeout_secs),
            (
                "server.rate_limit_prune_interval_ms",
                self.server.rate_limit_prune_interval_ms,
            ),
            (
                "privacy.salt_rotation_interval_ms",
                self.privacy.salt_rotation_interval_ms,
            ),
            (
                "privacy.visitor_cache_entries",
                self.privacy.visitor_cache_entries as u64,
            ),
            ("storage.cache_capacity_mb", self.storage.cache_capacity_mb),
            (
                "resolver.mailbox_capacity",
                self.resolver.mailbox_capacity as u64,
            ),
            ("resolver.cache_entries", self.resolver.cache_entries as u64),
            (
                "recorder.queue_capacity",
                self.recorder.queue_capacity as u64,
            ),
            ("recorder.batch_size", self.recorder.batch_size as u64),
            (
                "recorder.batch_interval_ms",
                self.recorder.batch_interval_ms,
            ),
            (
                "recorder.strict_batch_interval_ms",
                self.recorder.strict_batch_interval_ms,
            ),
            ("recorder.ack_timeout_ms", self.recorder.ack_timeout_ms),
            (
                "recorder.mailbox_capacity",
                self.recorder.mailbox_capacity as u64,
            ),
            (
                "counters.mailbox_capacity",
                self.counters.mailbox_capacity as u64,
            ),
            (
                "counters.read_batch_size",
                self.counters.read_batch_size as u64,
            ),
            (
                "counters.checkpoint_interval_ms",
                self.counters.checkpoint_interval_ms,
            ),
            (
                "visitors.mailbox_capacity",
                self.visitors.mailbox_capacity as u64,
            ),
            (
                "visitors.read_batch_size",
                self.visitors.read_batch_size as u64,
            ),
            (
                "visitors.checkpoint_interval_ms",
                self.visitors.checkpoint_interval_ms,
            ),
            (
                "retention.segments_per_step",
                self.retention.segments_per_step as u64,
            ),
            (
                "retention.segments_per_run",
                self.retention.segments_per_run as u64,
            ),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms),
            (
                "webhooks.connect_timeout_ms",
                self.webhooks.connect_timeout_ms,
            ),
            (
                "webhooks.max_attempts",
                u64::from(self.webhooks.max_attempts),
            ),
            ("webhooks.retry_max_ms", self.webhooks.retry_max_ms),
            (
                "webhooks.auto_disable_after",
                u64::from(self.webhooks.auto_disable_after),
            ),
            (
                "webhooks.max_in_flight_per_endpoint",
                self.webhooks.max_in_flight_per_endpoint as u64,
            ),
            ("webhooks.max_in_flight", self.webhooks.max_in_flight as u64),
            (
                "webhooks.outbox_capacity",
                self.webhooks.outbox_capacity as u64,
            ),
            ("webhooks.build_ahead", self.webhooks.build_ahead as u64),
            ("webhooks.poll_interval_ms", self.webhooks.poll_interval_ms),
            (
                "webhooks.busy_cpu_percent",
                u64::from(self.webhooks.busy_cpu_percent),
            ),
            (
                "webhooks.keep_messages_hours",
                self.webhooks.keep_messages_hours,
            ),
            (
                "webhooks.mailbox_capacity",
                self.webhooks.mailbox_capacity as u64,
            ),
            (
                "webhooks.read_batch_size",
                self.webhooks.read_batch_size as u64,
            ),
            (
                "webhooks.checkpoint_interval_ms",
                self.webhooks.checkpoint_interval_ms,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(key, "must be greater than 0"));
        }
        if self.webhooks.busy_cpu_percent > 100 {
            return Err(invalid("webhooks.busy_cpu_percent", "must be at most 100"));
        }
        if self.recorder.batch_size > usize::from(u16::MAX) {
            return Err(invalid("recorder.batch_size", "must be at most 65535"));
        }
        if self.storage.path.as_os_str().is_empty() {
            return Err(invalid("storage.path", "must not be empty"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "is not a valid tracing filter"));
        }
        if self.plans.is_empty() {
            return Err(invalid("plans", "at least one plan is required"));
        }
        for (name, plan) in &self.plans {
            if plan.retention_days == 0 || plan.requests_per_minute == 0 {
                return Err(invalid(
                    &format!("plans.{name}"),
                    "values must be greater than 0",
                ));
            }
        }
        Ok(())
    }

    /// `public_base_url` without a trailing slash, ready to append `/{slug}`.
    pub fn short_url_base(&self) -> &str {
        self.server.public_base_url.trim_end_matches('/')
    }

    /// The `short_url` of a slug: what its QR code encodes.
    pub fn short_url(&self, slug: &str) -> String {
        format!("{}/{slug}", self.short_url_base())
    }

    /// Days a workspace on `plan` keeps its scan events: the plan's
    /// `retention_days` from the current config, so changing the config
    /// changes every workspace on that plan. An `enterprise` workspace keeps
    /// its own value (`stored`, set with `scanhop workspace set-plan`), and so
    /// does one whose plan the config no longer defines.
    pub fn retention_days(&self, plan: &str, stored: u32) -> u32 {
        if plan == ENTERPRISE_PLAN {
            return stored;
        }
        self.plans.get(plan).map_or(stored, |p| p.retention_days)
    }

    /// The plan new workspaces get when none is named.
    pub fn default_plan(&self) -> &str {
        if self.plans.contains_key("free") {
            "free"
        } else {
            // `validate` guarantees at least one plan.
            self.plans
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("free")
        }
    }
}

/// Deep-merges `overlay` into `target`; keys must already exist in the base
/// (except under `plans`, where operators may define their own plans).
fn merge_tables(target: &mut Table, overlay: Table, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let open_section = prefix == "plans";
        match (target.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(inner)) => {
                merge_tables(existing, inner, &path)?
            }
            (Some(slot), value) => *slot = value,
            (None, value) if open_section => {
                target.insert(key, value);
            }
            (None, _) => return Err(ConfigError::UnknownKey(path)),
        }
    }
    Ok(())
}

/// Sets `SECTION__KEY` in `merged`, typed after the default in `base`.
fn apply_env_override(
    merged: &mut Table,
    base: &Table,
    rest: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let env_name = format!("{ENV_PREFIX}{rest}");
    let dotted = parts.join(".");
    let unknown = || ConfigError::UnknownKey(format!("{dotted} (from {env_name})"));
    let (last, sections) = parts.split_last().ok_or_else(unknown)?;
    let mut base_slot = base;
    let mut slot = &mut *merged;
    for section in sections {
        base_slot = base_slot
            .get(section)
            .and_then(Value::as_table)
            .ok_or_else(unknown)?;
        slot = slot
            .get_mut(section)
            .and_then(Value::as_table_mut)
            .ok_or_else(unknown)?;
    }
    let default = base_slot.get(last).ok_or_else(unknown)?;
    let invalid = |message: String| ConfigError::Invalid {
        key: format!("{dotted} (from {env_name})"),
        message,
    };
    let value = match default {
        Value::String(_) => Value::String(raw.to_owned()),
        Value::Integer(_) => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| invalid(format!("`{raw}` is not an integer")))?,
        ),
        Value::Boolean(_) => Value::Boolean(
            raw.trim()
                .parse()
                .map_err(|_| invalid(format!("`{raw}` is not true or false")))?,
        ),
        Value::Array(_) => parse_env_list(raw),
        _ => return Err(unknown()),
    };
    slot.insert(last.clone(), value);
    Ok(())
}

/// A list from the environment: TOML array syntax or comma-separated values.
fn parse_env_list(raw: &str) -> Value {
    if let Ok(table) = format!("v = {raw}").parse::<Table>()
        && let Some(v @ Value::Array(_)) = table.get("v")
    {
        return v.clone();
    }
    Value::Array(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_load_and_match_documented_values() {
        let s = Settings::load_with_env(None, Vec::new()).unwrap();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.storage.durability, Durability::Batched);
        assert_eq!(s.storage.flush_interval_ms, 100);
        assert_eq!(s.storage.path, PathBuf::from("./data"));
        assert_eq!(s.recorder.overflow, Overflow::Wait);
        assert_eq!(s.server.redirect_status, 302);
        assert_eq!(s.privacy.fingerprint_scope, FingerprintScope::Persistent);
        assert!(!s.webhooks.allow_private_targets);
        assert_eq!(s.webhooks.timeout_ms, 30_000);
        assert_eq!(s.webhooks.max_attempts, 3);
        assert_eq!(s.webhooks.auto_disable_after, 10);
        assert_eq!(
            (
                s.plans["free"].webhook_endpoints,
                s.plans["pro"].webhook_endpoints,
                s.plans["business"].webhook_endpoints
            ),
            (1, 10, 0)
        );
        assert_eq!(s.default_plan(), "free");
        assert_eq!(s.retention.purge_interval_ms, 600_000);
        assert_eq!(s.resolver.cache_entries, 100_000);
        assert!(s.plans.contains_key(ENTERPRISE_PLAN));
    }

    #[test]
    fn retention_comes_from_the_plan_except_on_enterprise() {
        let s =
            Settings::load_with_env(None, env(&[("SCANHOP__PLANS__PRO__RETENTION_DAYS", "400")]))
                .unwrap();
        assert_eq!(s.retention_days("free", 9), 30, "the config wins");
        assert_eq!(s.retention_days("pro", 365), 400, "a changed config too");
        assert_eq!(s.retention_days(ENTERPRISE_PLAN, 9), 9, "per workspace");
        assert_eq!(s.retention_days("gone", 12), 12, "a plan no longer defined");
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../README.md");
        let base: Table = DEFAULT_CONFIG.parse().unwrap();
        for (section, table) in base.iter().filter(|(name, _)| *name != "plans") {
            for key in table.as_table().unwrap().keys() {
                let name = format!("`{section}.{key}`");
                assert!(
                    readme.contains(&name),
                    "{name} is missing from the README's configuration table"
                );
            }
        }
        assert!(
            readme.contains("`plans.<name>.retention_days`")
                && readme.contains("`plans.<name>.requests_per_minute`")
                && readme.contains("`plans.<name>.webhook_endpoints`")
        );
    }

    #[test]
    fn env_overrides_are_typed_after_the_default() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("SCANHOP__STORAGE__DURABILITY", "strict"),
                ("SCANHOP__STORAGE__FLUSH_INTERVAL_MS", "7"),
                (
                    "SCANHOP__SERVER__TRUSTED_PROXIES",
                    "10.0.0.0/8, 127.0.0.1/32",
                ),
                ("SCANHOP__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
                ("SCANHOP__PLANS__FREE__RETENTION_DAYS", "9"),
            ]),
        )
        .unwrap();
        assert_eq!(s.storage.durability, Durability::Strict);
        assert_eq!(s.storage.flush_interval_ms, 7);
        assert_eq!(s.server.trusted_proxies.len(), 2);
        assert!(s.webhooks.allow_private_targets);
        assert_eq!(s.plans["free"].retention_days, 9);
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err =
            Settings::load_with_env(None, env(&[("SCANHOP__SERVER__BINDD", "x")])).unwrap_err();
        assert!(err.to_string().contains("server.bindd"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (
                "SCANHOP__STORAGE__DURABILITY",
                "sometimes",
                "storage.durability",
            ),
            (
                "SCANHOP__SERVER__REDIRECT_STATUS",
                "303",
                "server.redirect_status",
            ),
            ("SCANHOP__SERVER__BIND", "nowhere", "server.bind"),
            (
                "SCANHOP__STORAGE__FLUSH_INTERVAL_MS",
                "soon",
                "storage.flush_interval_ms",
            ),
            (
                "SCANHOP__SERVER__TRUSTED_PROXIES",
                "not-a-cidr",
                "server.trusted_proxies",
            ),
            ("SCANHOP__RECORDER__BATCH_SIZE", "0", "recorder.batch_size"),
            (
                "SCANHOP__RECORDER__STRICT_BATCH_INTERVAL_MS",
                "0",
                "recorder.strict_batch_interval_ms",
            ),
            (
                "SCANHOP__RESOLVER__CACHE_ENTRIES",
                "0",
                "resolver.cache_entries",
            ),
            (
                "SCANHOP__WEBHOOKS__BUSY_CPU_PERCENT",
                "0",
                "webhooks.busy_cpu_percent",
            ),
            (
                "SCANHOP__WEBHOOKS__BUSY_CPU_PERCENT",
                "101",
                "webhooks.busy_cpu_percent",
            ),
        ];
        for (k, v, key) in cases {
            let err = Settings::load_with_env(None, env(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains(key), "{k}={v}: {err}");
        }
    }

    #[test]
    fn file_layer_rejects_unknown_keys_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[storage]\npath = \"/tmp/x\"\ncolour = 3\n").unwrap();
        let err = Settings::load_with_env(Some(&path), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("storage.colour"), "{err}");
        std::fs::write(&path, "[storage]\npath = \"/tmp/x\"\n[plans.team]\nretention_days = 3\nrequests_per_minute = 5\n").unwrap();
        let s = Settings::load_with_env(Some(&path), Vec::new()).unwrap();
        assert_eq!(s.storage.path, PathBuf::from("/tmp/x"));
        assert_eq!(s.plans["team"].retention_days, 3);
        assert_eq!(
            s.plans["team"].webhook_endpoints, 0,
            "no limit when left out"
        );
    }
}
