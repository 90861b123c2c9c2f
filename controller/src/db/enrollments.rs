//! Agents' enrollment tokens (stored as their sha256), the certificates the
//! controller issued, and revocations.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{Database, Tx};

/// An enrollment token as stored (its hash is never read back out).
#[derive(Debug, Clone, FromRow)]
pub struct EnrollmentRecord {
    pub id: i64,
    pub server_id: String,
    pub site: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub used_from: Option<String>,
}

/// Why a token was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Used(DateTime<Utc>),
    Expired(DateTime<Utc>),
}

/// A certificate the controller issued.
#[derive(Debug, Clone, FromRow)]
pub struct CertificateRecord {
    pub serial: String,
    pub server_id: String,
    pub site: String,
    pub issued_at: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub how: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What is revoked: certificates by serial, and servers.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    pub serials: std::collections::HashSet<String>,
    pub servers: std::collections::HashSet<String>,
}

impl Database {
    pub async fn create_enrollment(
        &self,
        hash: &str,
        server: &str,
        site: &str,
        by: &str,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> sqlx::Result<i64> {
        on_pool!(self.pool, |c, d| sqlx::query_scalar(d.sql(
            "INSERT INTO enrollments (hash, server_id, site, created_by, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id"
        ))
        .bind(hash)
        .bind(server)
        .bind(site)
        .bind(by)
        .bind(at)
        .bind(expires_at)
        .fetch_one(c)
        .await)
    }

    /// Newest first.
    pub async fn enrollments(&self) -> sqlx::Result<Vec<EnrollmentRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT id, server_id, site, created_by, created_at, expires_at, used_at, used_from \
             FROM enrollments ORDER BY id DESC"
        ))
        .fetch_all(c)
        .await)
    }

    /// Takes the token whose hash is `hash` if it is unused and unexpired:
    /// once, even under concurrent tries. Then records the certificate
    /// `issue` makes for its server and site, and lifts a revocation of
    /// that server, in the same transaction.
    #[allow(clippy::type_complexity)]
    pub async fn enroll<T, E>(
        &self,
        hash: &str,
        from: &str,
        at: DateTime<Utc>,
        issue: impl FnOnce(&str, &str) -> Result<(T, String, DateTime<Utc>), E>,
    ) -> sqlx::Result<Result<Result<T, E>, TokenRefusal>> {
        let mut tx = self.begin().await?;
        let taken: Option<(String, String)> = on_tx!(tx, |c, d| sqlx::query_as(d.sql(
            "UPDATE enrollments SET used_at = ?, used_from = ? \
             WHERE hash = ? AND used_at IS NULL AND expires_at > ? RETURNING server_id, site"
        ))
        .bind(at)
        .bind(from)
        .bind(hash)
        .bind(at)
        .fetch_optional(c)
        .await)?;
        let Some((server, site)) = taken else {
            let known: Option<(Option<DateTime<Utc>>, DateTime<Utc>)> =
                on_tx!(tx, |c, d| sqlx::query_as(d.sql(
                    "SELECT used_at, expires_at FROM enrollments WHERE hash = ?"
                ))
                .bind(hash)
                .fetch_optional(c)
                .await)?;
            return Ok(Err(match known {
                None => TokenRefusal::Unknown,
                Some((Some(used), _)) => TokenRefusal::Used(used),
                Some((None, expired)) => TokenRefusal::Expired(expired),
            }));
        };
        let (issued, serial, not_after) = match issue(&server, &site) {
            Ok(issued) => issued,
            // Nothing taken: the token stays usable.
            Err(e) => return Ok(Ok(Err(e))),
        };
        record_certificate(&mut tx, &serial, &server, &site, at, not_after, "enrolled").await?;
        on_tx!(tx, |c, d| sqlx::query(
            d.sql("DELETE FROM revoked_servers WHERE server_id = ?")
        )
        .bind(&server)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        tx.commit().await?;
        Ok(Ok(Ok(issued)))
    }

    /// Records a certificate renewed from the certificate `from`, unless the
    /// server or that certificate was revoked: `false` then, and nothing is
    /// recorded. Alone against a revocation ([`Database::revoke_server`]), so
    /// that a renewal racing one never records a certificate after it.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_renewal(
        &self,
        serial: &str,
        from: &str,
        server: &str,
        site: &str,
        at: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin_alone().await?;
        let revoked: i64 = on_tx!(tx, |c, d| {
            sqlx::query_scalar(d.sql(
            "SELECT (SELECT COUNT(*) FROM revoked_servers WHERE server_id = ?) \
             + (SELECT COUNT(*) FROM agent_certificates WHERE serial = ? AND revoked_at IS NOT NULL)"
        ))
        .bind(server)
        .bind(from)
        .fetch_one(c)
        .await
        })?;
        if revoked > 0 {
            return Ok(false);
        }
        record_certificate(&mut tx, serial, server, site, at, not_after, "renewed").await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The certificates issued to a server, newest first.
    pub async fn certificates_of(&self, server: &str) -> sqlx::Result<Vec<CertificateRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT serial, server_id, site, issued_at, not_after, how, revoked_at \
             FROM agent_certificates WHERE server_id = ? ORDER BY issued_at DESC"
        ))
        .bind(server)
        .fetch_all(c)
        .await)
    }

    /// Revokes a server: its certificates (and `also`, the serial it is
    /// connected with, if the controller has no record of it), and the
    /// server itself until a new enrollment. `false` if it was revoked already.
    pub async fn revoke_server(
        &self,
        server: &str,
        also: Option<(&str, &str)>,
        by: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.begin_alone().await?;
        let done = on_tx!(tx, |c, d| sqlx::query(d.sql(
            "INSERT INTO revoked_servers (server_id, revoked_at, revoked_by) VALUES (?, ?, ?) \
             ON CONFLICT (server_id) DO NOTHING"
        ))
        .bind(server)
        .bind(at)
        .bind(by)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        if let Some((serial, site)) = also {
            on_tx!(tx, |c, d| {
                sqlx::query(d.sql("INSERT INTO agent_certificates (serial, server_id, site, issued_at, not_after, how, revoked_at) \
                 VALUES (?, ?, ?, ?, ?, 'unrecorded', ?) ON CONFLICT (serial) DO NOTHING"))
            .bind(serial)
            .bind(server)
            .bind(site)
            .bind(at)
            .bind(at)
            .bind(at)
            .execute(c)
            .await
    .map(|done| done.rows_affected())
            })?;
        }
        on_tx!(tx, |c, d| {
            sqlx::query(d.sql("UPDATE agent_certificates SET revoked_at = ? WHERE server_id = ? AND revoked_at IS NULL"))
        .bind(at)
        .bind(server)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        tx.commit().await?;
        Ok(done > 0)
    }

    /// Everything revoked, read at start.
    pub async fn revocations(&self) -> sqlx::Result<Revocations> {
        let serials: Vec<String> = on_pool!(self.pool, |c, d| sqlx::query_scalar(
            d.sql("SELECT serial FROM agent_certificates WHERE revoked_at IS NOT NULL")
        )
        .fetch_all(c)
        .await)?;
        let servers: Vec<String> = on_pool!(self.pool, |c, d| sqlx::query_scalar(
            d.sql("SELECT server_id FROM revoked_servers")
        )
        .fetch_all(c)
        .await)?;
        Ok(Revocations {
            serials: serials.into_iter().collect(),
            servers: servers.into_iter().collect(),
        })
    }
}

async fn record_certificate(
    tx: &mut Tx,
    serial: &str,
    server: &str,
    site: &str,
    at: DateTime<Utc>,
    not_after: DateTime<Utc>,
    how: &str,
) -> sqlx::Result<()> {
    on_tx!(*tx, |c, d| sqlx::query(d.sql(
        "INSERT INTO agent_certificates (serial, server_id, site, issued_at, not_after, how) \
         VALUES (?, ?, ?, ?, ?, ?)"
    ))
    .bind(serial)
    .bind(server)
    .bind(site)
    .bind(at)
    .bind(not_after)
    .bind(how)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}
