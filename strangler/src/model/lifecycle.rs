//! The lifecycle of a route as it moves from the monolith to a new service.
//!
//! ```text
//! legacy ──► shadow ──► canary(p%) ──► migrated ──► retired
//!    └──────────────────►┘  ▲   │   ◄──────┘
//!                           └───┘    step down
//!                         change p
//! any state ──rollback──► legacy
//! ```
//!
//! Pure: no I/O. The control plane asks [`Lifecycle::transition`] whether a
//! move is legal before it writes anything. Pattern: strangler fig —
//! docs/patterns/strangler-fig.md.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The share of a route's traffic the new backend takes in canary, 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Percent(u8);

impl Percent {
    pub fn new(value: u8) -> Result<Self, TransitionError> {
        if (1..=100).contains(&value) {
            Ok(Self(value))
        } else {
            Err(TransitionError::PercentOutOfRange(value.into()))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Lifecycle {
    /// The monolith serves the route.
    Legacy,
    /// The monolith serves it; safe requests are also copied to the new
    /// backend and the answers compared (`crate::data::shadow`).
    Shadow,
    /// `percent` of the cohorts go to the new backend, the rest to the
    /// monolith; the route's guard rolls it back when too many calls fail.
    Canary { percent: Percent },
    /// The new backend serves it, behind a breaker; the monolith is still
    /// there to fall back on.
    Migrated,
    /// The new backend serves it and the monolith no longer does.
    Retired,
}

/// Which backend serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Legacy,
    New,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Legacy => "legacy",
            Side::New => "new",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("percent must be between 1 and 100, got {0}")]
    PercentOutOfRange(i64),
    #[error("canary needs a percent")]
    MissingPercent,
    #[error("unknown state {0:?}: use legacy, shadow, canary, migrated or retired")]
    UnknownState(String),
    #[error("the route is already {0}")]
    Unchanged(Lifecycle),
    #[error("cannot go from {from} to {to}: {hint}")]
    Illegal {
        from: Lifecycle,
        to: Lifecycle,
        hint: &'static str,
    },
    #[error("the route has no new backend, so it can only be legacy")]
    NoNewBackend,
}

impl Lifecycle {
    /// Builds a state from its name and, for canary, its percent.
    pub fn from_parts(state: &str, percent: Option<i64>) -> Result<Self, TransitionError> {
        let percent = || -> Result<Percent, TransitionError> {
            let p = percent.ok_or(TransitionError::MissingPercent)?;
            let p = u8::try_from(p).map_err(|_| TransitionError::PercentOutOfRange(p))?;
            Percent::new(p)
        };
        match state {
            "legacy" => Ok(Self::Legacy),
            "shadow" => Ok(Self::Shadow),
            "canary" => Ok(Self::Canary {
                percent: percent()?,
            }),
            "migrated" => Ok(Self::Migrated),
            "retired" => Ok(Self::Retired),
            other => Err(TransitionError::UnknownState(other.to_owned())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Shadow => "shadow",
            Self::Canary { .. } => "canary",
            Self::Migrated => "migrated",
            Self::Retired => "retired",
        }
    }

    /// The share of traffic (0–100) the new backend is meant to take.
    pub fn new_share(self) -> u8 {
        match self {
            Self::Legacy | Self::Shadow => 0,
            Self::Canary { percent } => percent.get(),
            Self::Migrated | Self::Retired => 100,
        }
    }

    pub fn percent(self) -> Option<u8> {
        match self {
            Self::Canary { percent } => Some(percent.get()),
            _ => None,
        }
    }

    /// Checks the move `self → to`. Forward moves go one step at a time
    /// (shadow may be skipped: unsafe routes cannot be shadowed); a canary may
    /// change its percent; a migrated route may step down to a canary (to
    /// give part of the traffic back without a full rollback); any state may
    /// return to legacy (rollback).
    pub fn transition(
        self,
        to: Lifecycle,
        has_new_backend: bool,
    ) -> Result<Lifecycle, TransitionError> {
        use Lifecycle::*;
        if to != Legacy && !has_new_backend {
            return Err(TransitionError::NoNewBackend);
        }
        if self == to {
            return Err(TransitionError::Unchanged(self));
        }
        let allowed = matches!(
            (self, to),
            (_, Legacy)
                | (Legacy, Shadow | Canary { .. })
                | (Shadow | Canary { .. }, Canary { .. })
                | (Canary { .. }, Migrated)
                | (Migrated, Retired | Canary { .. })
        );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError::Illegal {
                from: self,
                to,
                hint: hint(self),
            })
        }
    }
}

fn hint(from: Lifecycle) -> &'static str {
    match from {
        Lifecycle::Legacy => "from legacy go to shadow or canary",
        Lifecycle::Shadow => "from shadow go to canary, or roll back",
        Lifecycle::Canary { .. } => "from canary change the percent, go to migrated, or roll back",
        Lifecycle::Migrated => "from migrated go to retired, step down to canary, or roll back",
        Lifecycle::Retired => "retired is the last state; only a rollback leaves it",
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Canary { percent } => write!(f, "canary({}%)", percent.get()),
            other => f.write_str(other.name()),
        }
    }
}

/// The plan file writes `state = "canary"` with `percent = 10`.
#[derive(Debug, Clone, Deserialize)]
pub struct LifecycleSpec {
    #[serde(default = "legacy_name")]
    pub state: String,
    pub percent: Option<i64>,
}

fn legacy_name() -> String {
    "legacy".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(p: u8) -> Lifecycle {
        Lifecycle::Canary {
            percent: Percent::new(p).unwrap(),
        }
    }

    #[test]
    fn the_forward_path_is_legal_step_by_step() {
        let mut state = Lifecycle::Legacy;
        for next in [
            Lifecycle::Shadow,
            canary(10),
            canary(50),
            Lifecycle::Migrated,
            Lifecycle::Retired,
        ] {
            state = state.transition(next, true).unwrap();
        }
        assert_eq!(state, Lifecycle::Retired);
    }

    #[test]
    fn a_migrated_route_may_step_down_to_a_canary() {
        assert_eq!(
            Lifecycle::Migrated.transition(canary(50), true),
            Ok(canary(50))
        );
        let error = Lifecycle::Retired.transition(canary(50), true).unwrap_err();
        assert!(error.to_string().contains("only a rollback"), "{error}");
    }

    #[test]
    fn shadow_may_be_skipped() {
        assert_eq!(Lifecycle::Legacy.transition(canary(5), true), Ok(canary(5)));
    }

    #[test]
    fn every_state_rolls_back_to_legacy() {
        for from in [
            Lifecycle::Shadow,
            canary(30),
            Lifecycle::Migrated,
            Lifecycle::Retired,
        ] {
            assert_eq!(
                from.transition(Lifecycle::Legacy, true),
                Ok(Lifecycle::Legacy)
            );
        }
    }

    #[test]
    fn skipping_ahead_is_refused_with_a_hint() {
        for (from, to) in [
            (Lifecycle::Legacy, Lifecycle::Migrated),
            (Lifecycle::Legacy, Lifecycle::Retired),
            (Lifecycle::Shadow, Lifecycle::Migrated),
            (canary(10), Lifecycle::Retired),
            (Lifecycle::Migrated, Lifecycle::Shadow),
            (Lifecycle::Retired, Lifecycle::Migrated),
        ] {
            let error = from.transition(to, true).unwrap_err();
            assert!(
                matches!(error, TransitionError::Illegal { .. }),
                "{from} → {to}: {error}"
            );
            assert!(error.to_string().contains("from "), "{error}");
        }
    }

    #[test]
    fn staying_put_is_refused() {
        assert_eq!(
            canary(10).transition(canary(10), true),
            Err(TransitionError::Unchanged(canary(10)))
        );
    }

    #[test]
    fn a_route_without_a_new_backend_stays_legacy() {
        assert_eq!(
            Lifecycle::Legacy.transition(Lifecycle::Shadow, false),
            Err(TransitionError::NoNewBackend)
        );
    }

    #[test]
    fn states_parse_from_their_names() {
        assert_eq!(Lifecycle::from_parts("canary", Some(25)), Ok(canary(25)));
        assert_eq!(
            Lifecycle::from_parts("canary", None),
            Err(TransitionError::MissingPercent)
        );
        assert_eq!(
            Lifecycle::from_parts("canary", Some(0)),
            Err(TransitionError::PercentOutOfRange(0))
        );
        assert_eq!(
            Lifecycle::from_parts("canary", Some(300)),
            Err(TransitionError::PercentOutOfRange(300))
        );
        assert!(matches!(
            Lifecycle::from_parts("live", None),
            Err(TransitionError::UnknownState(_))
        ));
        assert_eq!(
            Lifecycle::from_parts("migrated", Some(5)),
            Ok(Lifecycle::Migrated)
        );
    }
}
