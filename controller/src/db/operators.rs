//! Operators' rows: accounts, API tokens and browser sessions. Secrets are
//! never stored: passwords as argon2 hashes, tokens and session cookies as
//! their sha256.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::Database;

/// An account as stored, with its password hash.
#[derive(Debug, Clone, FromRow)]
pub struct AccountRecord {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// An API token as stored (its hash is never read back out).
#[derive(Debug, Clone, FromRow)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a live session or a valid token stands for.
#[derive(Debug, Clone, FromRow)]
pub struct Bearer {
    pub name: String,
    pub role: String,
    /// The session's CSRF token; `None` for an API token.
    pub csrf: Option<String>,
}

impl Database {
    /// How many accounts exist.
    pub async fn account_count(&self) -> sqlx::Result<i64> {
        on_pool!(self.pool, |c, d| sqlx::query_scalar(
            d.sql("SELECT COUNT(*) FROM accounts")
        )
        .fetch_one(c)
        .await)
    }

    /// Creates an account; `false` when the name is taken.
    pub async fn create_account(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let done = on_pool!(self.pool, |c, d| sqlx::query(d.sql(
            "INSERT INTO accounts (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO NOTHING"
        ))
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(at)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    pub async fn account(&self, name: &str) -> sqlx::Result<Option<AccountRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT id, name, role, password_hash, created_at FROM accounts WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(c)
        .await)
    }

    pub async fn accounts(&self) -> sqlx::Result<Vec<AccountRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT id, name, role, password_hash, created_at FROM accounts ORDER BY name"
        ))
        .fetch_all(c)
        .await)
    }

    /// Records a token by its hash; `false` when the name is taken.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        hash: &str,
        created_by: &str,
        at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> sqlx::Result<bool> {
        let done = on_pool!(self.pool, |c, d| sqlx::query(d.sql(
            "INSERT INTO api_tokens (name, role, hash, created_by, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        ))
        .bind(name)
        .bind(role)
        .bind(hash)
        .bind(created_by)
        .bind(at)
        .bind(expires_at)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    pub async fn tokens(&self) -> sqlx::Result<Vec<TokenRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT id, name, role, created_by, created_at, expires_at, last_used_at, revoked_at \
             FROM api_tokens ORDER BY name"
        ))
        .fetch_all(c)
        .await)
    }

    /// Revokes a token; `false` when there is no such live token.
    pub async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> sqlx::Result<bool> {
        let done = on_pool!(self.pool, |c, d| sqlx::query(d.sql(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL"
        ))
        .bind(at)
        .bind(name)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done > 0)
    }

    /// Who the token with this hash stands for, if it is valid `at`; notes
    /// its use to the minute, so that a busy token costs a read per
    /// request, not a write (SQLite has one writer).
    pub async fn token_bearer(
        &self,
        hash: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<Option<Bearer>> {
        let found: Option<(String, String, Option<DateTime<Utc>>)> =
            on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
                "SELECT name, role, last_used_at FROM api_tokens \
             WHERE hash = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
            ))
            .bind(hash)
            .bind(at)
            .fetch_optional(c)
            .await)?;
        let Some((name, role, last_used_at)) = found else {
            return Ok(None);
        };
        if last_used_at.is_none_or(|last| at - last >= chrono::Duration::minutes(1)) {
            on_pool!(self.pool, |c, d| sqlx::query(
                d.sql("UPDATE api_tokens SET last_used_at = ? WHERE hash = ?")
            )
            .bind(at)
            .bind(hash)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        }
        Ok(Some(Bearer {
            name,
            role,
            csrf: None,
        }))
    }

    /// Opens a session for an account.
    pub async fn create_session(
        &self,
        hash: &str,
        account: i64,
        csrf: &str,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        on_pool!(self.pool, |c, d| {
            sqlx::query(d.sql("INSERT INTO sessions (hash, account_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)"))
        .bind(hash)
        .bind(account)
        .bind(csrf)
        .bind(at)
        .bind(expires_at)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Who the session with this hash stands for, if it is live `at`.
    pub async fn session_bearer(
        &self,
        hash: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<Option<Bearer>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT a.name, a.role, s.csrf FROM sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.hash = ? AND s.expires_at > ?"
        ))
        .bind(hash)
        .bind(at)
        .fetch_optional(c)
        .await)
    }

    /// Ends a session.
    pub async fn end_session(&self, hash: &str) -> sqlx::Result<()> {
        on_pool!(self.pool, |c, d| sqlx::query(
            d.sql("DELETE FROM sessions WHERE hash = ?")
        )
        .bind(hash)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(())
    }
}
