//! Which token roles may become Postgres roles.
//!
//! The `role` claim is used as a Postgres role for Postgres Changes (privileges, row-level
//! security). Whoever can mint a token must therefore not be able to name any role at all: only
//! the roles in `ALLOWED_ROLES` (default `anon`, `authenticated`, `service_role`) are accepted,
//! and never one that is a superuser or has `BYPASSRLS` (those would see every row), except
//! `service_role`, which exists to bypass row-level security. The attributes come from
//! `pg_roles` and are cached for [`ATTRIBUTE_TTL`], so an `ALTER ROLE` takes effect within it.

use crate::locks::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use sqlx::PgPool;

use super::BYPASS_ROLE;
use crate::telemetry::chain;

/// How long a role's attributes are trusted before `pg_roles` is asked again.
pub const ATTRIBUTE_TTL: Duration = Duration::from_secs(10);
/// Cached roles at most; past it the cache starts over (role names come from tokens).
const MAX_CACHED: usize = 1024;

/// Why a role was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefusal {
    #[error("Role {0:?} is not allowed (ALLOWED_ROLES)")]
    NotAllowed(String),
    #[error("Role {0:?} bypasses row level security and is not allowed")]
    BypassesRls(String),
    /// The attributes could not be read and the role is about to be used in Postgres.
    #[error("Role {0:?} could not be checked: Realtime was unable to connect to the project database")]
    Unchecked(String),
}

impl RoleRefusal {
    /// `Unauthorized: <message>`, the `reason` of a refused join.
    pub fn join_reason(&self) -> String {
        format!("Unauthorized: {self}")
    }
}

#[derive(Clone, Copy, Debug)]
struct Attributes {
    /// Superuser or `BYPASSRLS`.
    bypasses_rls: bool,
    read_at: Instant,
}

#[derive(Debug)]
pub struct RoleGuard {
    allowed: Vec<String>,
    pool: Option<PgPool>,
    cache: Mutex<HashMap<String, Attributes>>,
}

impl RoleGuard {
    /// `pool` is the database the roles live in (`None`: no database, only the list applies).
    pub fn new(allowed: Vec<String>, pool: Option<PgPool>) -> RoleGuard {
        RoleGuard {
            allowed,
            pool,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `role`. With `strict`, a role whose attributes cannot be read is refused (the
    /// caller is about to use it in Postgres); otherwise it passes on the list alone, as
    /// nothing reaches Postgres until a check that is strict.
    pub async fn check(&self, role: &str, strict: bool) -> Result<(), RoleRefusal> {
        if !self.allowed.iter().any(|r| r == role) {
            return Err(RoleRefusal::NotAllowed(shorten(role)));
        }
        if role == BYPASS_ROLE {
            return Ok(());
        }
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let cached = self.lock().get(role).copied();
        let attributes = match cached.filter(|a| a.read_at.elapsed() < ATTRIBUTE_TTL) {
            Some(a) => a,
            None => match read(pool, role).await {
                Ok(bypasses_rls) => {
                    let a = Attributes {
                        bypasses_rls,
                        read_at: Instant::now(),
                    };
                    let mut cache = self.lock();
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                    cache.insert(role.to_owned(), a);
                    a
                }
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "cannot read role attributes from pg_roles");
                    return if strict {
                        Err(RoleRefusal::Unchecked(shorten(role)))
                    } else {
                        Ok(())
                    };
                }
            },
        };
        if attributes.bypasses_rls {
            return Err(RoleRefusal::BypassesRls(shorten(role)));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attributes>> {
        lock(&self.cache)
    }
}

/// Whether `role` is a superuser or has `BYPASSRLS` (a role that does not exist has neither).
async fn read(pool: &PgPool, role: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(bool,)> =
        sqlx::query_as("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(pool)
            .await?;
    Ok(row.is_some_and(|(b,)| b))
}

/// The role is token text echoed in a reply: bound its length.
fn shorten(role: &str) -> String {
    role.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> RoleGuard {
        RoleGuard::new(
            ["anon", "authenticated", "service_role"]
                .map(String::from)
                .to_vec(),
            None,
        )
    }

    #[tokio::test]
    async fn only_listed_roles_pass() {
        let g = guard();
        for role in ["anon", "authenticated", "service_role"] {
            assert_eq!(g.check(role, true).await, Ok(()), "{role}");
        }
        for role in ["postgres", "supabase_admin", "Anon", ""] {
            assert_eq!(
                g.check(role, false).await,
                Err(RoleRefusal::NotAllowed(role.to_owned()))
            );
        }
        assert_eq!(
            RoleRefusal::NotAllowed("postgres".into()).join_reason(),
            "Unauthorized: Role \"postgres\" is not allowed (ALLOWED_ROLES)"
        );
        let long = "x".repeat(500);
        assert_eq!(
            g.check(&long, false).await,
            Err(RoleRefusal::NotAllowed("x".repeat(64)))
        );
    }
}
