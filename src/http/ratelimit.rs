//! API rate limits per workspace, by plan (GCRA, `governor`). Callers without
//! a valid token are limited per client address at the default plan's rate.
//! Every `/v1` answer carries the `X-RateLimit-*` headers and the IETF
//! `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers:
//! Structured Field lists of one item, the policy named by a String).

use std::collections::HashMap;
use std::num::NonZeroU32;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::Settings;
use crate::enrich::client_ip::Client;
use crate::ids::WorkspaceId;

type Limiter = RateLimiter<
    LimitKey,
    DefaultKeyedStateStore<LimitKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The one policy's identifier in `RateLimit-Policy` and `RateLimit`.
pub const POLICY_NAME: &str = "default";
/// The window of every plan's quota: requests per minute.
const WINDOW_SECS: u32 = 60;

/// Who a limit is counted for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Workspace(WorkspaceId),
    /// A caller without a valid token, or a scanner: by address, and hidden
    /// clients per proxy.
    Address(Client),
}

/// The outcome of one check, with what the headers say.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds when the allowance is full again.
    pub reset: u64,
    /// Seconds until the allowance is full again; when refused, until the
    /// next request is allowed (`t` of the IETF `RateLimit` field).
    pub reset_after: u64,
    /// Seconds to wait, when refused.
    pub retry_after: Option<u64>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(LIMIT, HeaderValue::from(self.limit));
        headers.insert(REMAINING, HeaderValue::from(self.remaining));
        headers.insert(RESET, HeaderValue::from(self.reset));
        let (policy, current) = self.ietf_fields();
        // Both are plain ASCII built here, so they are always valid values.
        if let (Ok(policy), Ok(current)) = (
            HeaderValue::try_from(policy),
            HeaderValue::try_from(current),
        ) {
            headers.insert(POLICY, policy);
            headers.insert(RATELIMIT, current);
        }
    }

    /// `RateLimit-Policy` (quota `q` per window `w` seconds) and `RateLimit`
    /// (`r` requests left, `t` seconds of `reset_after`).
    pub fn ietf_fields(&self) -> (String, String) {
        (
            format!("\"{POLICY_NAME}\";q={};w={WINDOW_SECS}", self.limit),
            format!(
                "\"{POLICY_NAME}\";r={};t={}",
                self.remaining, self.reset_after
            ),
        )
    }
}

struct PlanLimiter {
    per_minute: u32,
    limiter: Limiter,
}

pub struct RateLimits {
    plans: HashMap<String, PlanLimiter>,
    default_plan: String,
    /// The optional per-client-IP limit of redirects.
    redirects: Option<PlanLimiter>,
}

fn limiter(per_minute: NonZeroU32) -> PlanLimiter {
    let limiter = RateLimiter::keyed(Quota::per_minute(per_minute))
        .with_middleware::<StateInformationMiddleware>();
    PlanLimiter {
        per_minute: per_minute.get(),
        limiter,
    }
}

impl RateLimits {
    pub fn new(settings: &Settings) -> RateLimits {
        let plans = settings
            .plans
            .iter()
            // `Settings::validate` guarantees requests_per_minute > 0.
            .map(|(name, plan)| {
                (
                    name.clone(),
                    limiter(NonZeroU32::new(plan.requests_per_minute).unwrap_or(NonZeroU32::MIN)),
                )
            })
            .collect();
        let redirects = NonZeroU32::new(settings.server.redirect_limit_per_minute).map(limiter);
        RateLimits {
            plans,
            default_plan: settings.default_plan().to_owned(),
            redirects,
        }
    }

    /// Counts one redirect from `client`; `None` when the limit is off.
    pub fn check_redirect(&self, client: Client) -> Option<Decision> {
        self.redirects
            .as_ref()
            .map(|l| decide(l, &LimitKey::Address(client)))
    }

    /// Counts one request for `key` under `plan` (the default plan when unknown).
    pub fn check(&self, plan: Option<&str>, key: &LimitKey) -> Decision {
        let chosen = plan
            .and_then(|p| self.plans.get(p))
            .or_else(|| self.plans.get(&self.default_plan));
        match chosen {
            Some(plan) => decide(plan, key),
            None => Decision {
                limit: 0,
                remaining: 0,
                reset: now_unix(),
                reset_after: 0,
                retry_after: None,
            },
        }
    }
}

/// Run by the rate-limit pruner worker.
impl crate::actors::limit_pruner::Prune for RateLimits {
    /// Forgets keys that are back at full allowance (bounded memory).
    fn prune(&self) {
        for plan in self.plans.values().chain(self.redirects.as_ref()) {
            plan.limiter.retain_recent();
        }
    }
}

fn decide(plan: &PlanLimiter, key: &LimitKey) -> Decision {
    let n = plan.per_minute;
    let now = now_unix();
    match plan.limiter.check_key(key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let refill_secs =
                (u64::from(n - remaining.min(n)) * u64::from(WINDOW_SECS)).div_ceil(u64::from(n));
            Decision {
                limit: n,
                remaining,
                reset: now + refill_secs,
                reset_after: refill_secs,
                retry_after: None,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            Decision {
                limit: n,
                remaining: 0,
                reset: now + u64::from(WINDOW_SECS),
                // Retry-After must not point before the end of this window.
                reset_after: secs,
                retry_after: Some(secs),
            }
        }
    }
}

fn now_unix() -> u64 {
    jiff::Timestamp::now().as_second().max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_allowance_counts_down_then_refuses() {
        let settings = Settings::load_with_env(
            None,
            vec![(
                "SCANHOP__PLANS__FREE__REQUESTS_PER_MINUTE".into(),
                "3".into(),
            )],
        )
        .unwrap();
        let limits = RateLimits::new(&settings);
        let ws = LimitKey::Workspace(WorkspaceId::generate());
        let got: Vec<Decision> = (0..3).map(|_| limits.check(Some("free"), &ws)).collect();
        let remaining: Vec<u32> = got.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        // One request of 3 per minute takes 20 s to refill; all three, 60 s.
        let windows: Vec<u64> = got.iter().map(|d| d.reset_after).collect();
        assert_eq!(windows, [20, 40, 60]);
        assert_eq!(got[0].ietf_fields().1, "\"default\";r=2;t=20");
        let refused = limits.check(Some("free"), &ws);
        assert!(!refused.allowed());
        let retry = refused.retry_after.unwrap();
        assert!((1..=20).contains(&retry));
        assert_eq!(
            refused.ietf_fields(),
            (
                "\"default\";q=3;w=60".to_owned(),
                format!("\"default\";r=0;t={retry}")
            ),
            "a refusal's window ends when Retry-After does"
        );
        let other = LimitKey::Workspace(WorkspaceId::generate());
        assert!(
            limits.check(Some("free"), &other).allowed(),
            "limits are per workspace"
        );
        assert_eq!(
            limits.check(Some("pro"), &ws).limit,
            6000,
            "each plan has its own allowance"
        );
    }
}
