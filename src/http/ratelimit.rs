//! API rate limits per workspace, by plan (GCRA, `governor`). Callers without
//! a valid token are limited per client address at the default plan's rate.
//! Every `/v1` answer carries the `X-RateLimit-*` headers.

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
            let refill_secs = (u64::from(n - remaining.min(n)) * 60).div_ceil(u64::from(n));
            Decision {
                limit: n,
                remaining,
                reset: now + refill_secs,
                retry_after: None,
            }
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            Decision {
                limit: n,
                remaining: 0,
                reset: now + 60,
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
        let got: Vec<u32> = (0..3)
            .map(|_| limits.check(Some("free"), &ws).remaining)
            .collect();
        assert_eq!(got, [2, 1, 0]);
        let refused = limits.check(Some("free"), &ws);
        assert!(!refused.allowed());
        assert!((1..=20).contains(&refused.retry_after.unwrap()));
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
