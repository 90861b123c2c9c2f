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
    /// When an admin disabled it; `None` while it may sign in.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Its password was set by someone else: the next sign-in must change it.
    pub must_change_password: bool,
}

/// What an admin changes of an account.
#[derive(Debug, Clone, Default)]
pub struct AccountChange<'a> {
    pub role: Option<&'a str>,
    /// `Some(true)` disables it, `Some(false)` enables it.
    pub disabled: Option<bool>,
}

/// Why a change to accounts was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRefusal {
    /// No such account.
    Unknown,
    /// It would leave no enabled admin.
    LastAdmin,
}

/// An account's columns, as [`AccountRecord`] reads them.
macro_rules! account_columns {
    () => {
        "id, name, role, password_hash, created_at, disabled_at, must_change_password"
    };
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
    /// The account must change its password before anything else.
    pub must_change_password: bool,
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
        must_change_password: bool,
        at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let done = on_pool!(self.pool, |c, d| {
            sqlx::query(d.sql(
            "INSERT INTO accounts (name, role, password_hash, must_change_password, created_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
        ))
        .bind(name)
        .bind(role)
        .bind(password_hash)
        .bind(must_change_password)
        .bind(at)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
        })?;
        Ok(done > 0)
    }

    pub async fn account(&self, name: &str) -> sqlx::Result<Option<AccountRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE name = ?"
        )))
        .bind(name)
        .fetch_optional(c)
        .await)
    }

    pub async fn accounts(&self) -> sqlx::Result<Vec<AccountRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts ORDER BY name"
        )))
        .fetch_all(c)
        .await)
    }

    /// Changes an account's role or whether it is disabled, refusing what
    /// would leave no enabled admin; disabling it ends its sessions.
    pub async fn change_account(
        &self,
        name: &str,
        change: &AccountChange<'_>,
        at: DateTime<Utc>,
    ) -> sqlx::Result<Result<AccountRecord, AccountRefusal>> {
        let mut tx = self.begin_alone().await?;
        let found: Option<AccountRecord> = on_tx!(tx, |c, d| sqlx::query_as(d.sql(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE name = ?"
        )))
        .bind(name)
        .fetch_optional(c)
        .await)?;
        let Some(account) = found else {
            return Ok(Err(AccountRefusal::Unknown));
        };
        let role = change.role.unwrap_or(&account.role);
        let disabled = change.disabled.unwrap_or(account.disabled_at.is_some());
        if account.role == "admin"
            && (role != "admin" || disabled)
            && !other_admin(&mut tx, account.id).await?
        {
            return Ok(Err(AccountRefusal::LastAdmin));
        }
        let disabled_at = match (disabled, account.disabled_at) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(at),
            (false, _) => None,
        };
        on_tx!(tx, |c, d| sqlx::query(d.sql(
            "UPDATE accounts SET role = ?, disabled_at = ? WHERE id = ?"
        ))
        .bind(role)
        .bind(disabled_at)
        .bind(account.id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        if disabled {
            end_sessions(&mut tx, account.id).await?;
        }
        // A token carries the role it was made with: a new role for the
        // account revokes the tokens it made.
        if role != account.role {
            revoke_tokens_made_by(&mut tx, name, at).await?;
        }
        tx.commit().await?;
        Ok(Ok(AccountRecord {
            role: role.to_owned(),
            disabled_at,
            ..account
        }))
    }

    /// Deletes an account, its sessions, and revokes the API tokens it
    /// made; refuses what would leave no enabled admin.
    pub async fn delete_account(
        &self,
        name: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<Result<(), AccountRefusal>> {
        let mut tx = self.begin_alone().await?;
        let found: Option<(i64, String)> = on_tx!(tx, |c, d| sqlx::query_as(
            d.sql("SELECT id, role FROM accounts WHERE name = ?")
        )
        .bind(name)
        .fetch_optional(c)
        .await)?;
        let Some((id, role)) = found else {
            return Ok(Err(AccountRefusal::Unknown));
        };
        if role == "admin" && !other_admin(&mut tx, id).await? {
            return Ok(Err(AccountRefusal::LastAdmin));
        }
        end_sessions(&mut tx, id).await?;
        revoke_tokens_made_by(&mut tx, name, at).await?;
        on_tx!(tx, |c, d| sqlx::query(
            d.sql("DELETE FROM accounts WHERE id = ?")
        )
        .bind(id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Sets an account's password hash; `must_change` when someone else set
    /// it. Ends the account's sessions but `keep` (the hash of the session
    /// that changed its own password). `false` when there is no such account.
    pub async fn set_password(
        &self,
        name: &str,
        hash: &str,
        must_change: bool,
        keep: Option<&str>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin().await?;
        let id: Option<i64> = on_tx!(tx, |c, d| sqlx::query_scalar(
            d.sql("SELECT id FROM accounts WHERE name = ?")
        )
        .bind(name)
        .fetch_optional(c)
        .await)?;
        let Some(id) = id else {
            return Ok(false);
        };
        on_tx!(tx, |c, d| sqlx::query(d.sql(
            "UPDATE accounts SET password_hash = ?, must_change_password = ? WHERE id = ?"
        ))
        .bind(hash)
        .bind(must_change)
        .bind(id)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        on_tx!(tx, |c, d| sqlx::query(d.sql(
            "DELETE FROM sessions WHERE account_id = ? AND hash <> ?"
        ))
        .bind(id)
        .bind(keep.unwrap_or(""))
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        tx.commit().await?;
        Ok(true)
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
                "SELECT name, role, last_used_at FROM api_tokens t \
             WHERE hash = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) \
               AND NOT EXISTS (SELECT 1 FROM accounts a \
                               WHERE a.name = t.created_by AND a.disabled_at IS NOT NULL)"
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
            must_change_password: false,
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
            "SELECT a.name, a.role, s.csrf, a.must_change_password \
             FROM sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.hash = ? AND s.expires_at > ? AND a.disabled_at IS NULL"
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

/// Whether an enabled admin other than `id` exists.
async fn other_admin(tx: &mut super::Tx, id: i64) -> sqlx::Result<bool> {
    let count: i64 = on_tx!(*tx, |c, d| sqlx::query_scalar(d.sql(
        "SELECT COUNT(*) FROM accounts WHERE role = 'admin' AND disabled_at IS NULL AND id <> ?"
    ))
    .bind(id)
    .fetch_one(c)
    .await)?;
    Ok(count > 0)
}

/// Ends every session of an account.
async fn end_sessions(tx: &mut super::Tx, id: i64) -> sqlx::Result<()> {
    on_tx!(*tx, |c, d| sqlx::query(
        d.sql("DELETE FROM sessions WHERE account_id = ?")
    )
    .bind(id)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// Revokes the live API tokens the account `name` made.
async fn revoke_tokens_made_by(
    tx: &mut super::Tx,
    name: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    on_tx!(*tx, |c, d| sqlx::query(d.sql(
        "UPDATE api_tokens SET revoked_at = ? WHERE created_by = ? AND revoked_at IS NULL"
    ))
    .bind(at)
    .bind(name)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}
