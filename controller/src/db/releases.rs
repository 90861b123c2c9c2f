//! The package store's rows and the releases published from them.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::Database;

/// A module package as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PackageRecord {
    pub sha256: String,
    pub module: String,
    pub version: String,
    pub kind: String,
    pub size: Option<i64>,
    pub signature: String,
    pub url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The platform an agent package was built for (`linux-x86_64`,
    /// `windows-x86_64`); empty for a package every platform installs.
    pub platform: String,
}

/// A release as stored, with its packages.
#[derive(Debug, Clone)]
pub struct ReleaseRecord {
    pub version: String,
    pub notes: String,
    pub created_at: DateTime<Utc>,
    pub packages: Vec<PackageRecord>,
    pub withdrawn: Option<Withdrawal>,
}

/// Who withdrew a release, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

#[derive(FromRow)]
struct ReleaseRow {
    version: String,
    notes: String,
    created_at: DateTime<Utc>,
    withdrawn_at: Option<DateTime<Utc>>,
    withdrawn_by: Option<String>,
    withdrawn_reason: Option<String>,
}

/// `SELECT` of [`ReleaseRow`]s, followed by `$tail`.
macro_rules! select_releases {
    ($tail:literal) => {
        concat!(
            "SELECT version, notes, created_at, withdrawn_at, withdrawn_by, withdrawn_reason FROM releases ",
            $tail
        )
    };
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishConflict {
    #[error(
        "{module} {version}{built_for} was already published with sha256 {existing}; a module version never changes content: publish a new version"
    )]
    ModuleVersion {
        module: String,
        version: String,
        /// " for linux-x86_64" for an agent package; empty otherwise.
        built_for: String,
        existing: String,
    },
    #[error(
        "release {0} was already published with other notes or packages; publish a new release version"
    )]
    Release(String),
}

impl Database {
    pub async fn package(&self, sha256: &str) -> sqlx::Result<Option<PackageRecord>> {
        on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql("SELECT sha256, module, version, kind, size, signature, url, created_at, platform FROM packages WHERE sha256 = ?"))
        .bind(sha256)
        .fetch_optional(c)
        .await
        })
    }

    /// Records a release and its packages in one transaction. An identical
    /// re-publish changes nothing and returns `Ok(false)`; a conflicting one
    /// changes nothing and returns the conflict.
    pub async fn publish(
        &self,
        version: &str,
        notes: &str,
        packages: &[PackageRecord],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Result<bool, PublishConflict>> {
        let mut tx = self.begin_alone().await?;
        for package in packages {
            let existing: Option<(String,)> = on_tx!(tx, |c, d| sqlx::query_as(d.sql(
                "SELECT sha256 FROM packages WHERE module = ? AND version = ? AND platform = ?"
            ))
            .bind(&package.module)
            .bind(&package.version)
            .bind(&package.platform)
            .fetch_optional(c)
            .await)?;
            if let Some((existing,)) = existing
                && existing != package.sha256
            {
                return Ok(Err(PublishConflict::ModuleVersion {
                    module: package.module.clone(),
                    version: package.version.clone(),
                    built_for: match package.platform.as_str() {
                        "" => String::new(),
                        platform => format!(" for {platform}"),
                    },
                    existing,
                }));
            }
        }
        let existing: Option<ReleaseRow> = on_tx!(tx, |c, d| sqlx::query_as(
            d.sql(select_releases!("WHERE version = ?"))
        )
        .bind(version)
        .fetch_optional(c)
        .await)?;
        if let Some(existing) = existing {
            let shas: Vec<(String,)> = on_tx!(tx, |c, d| sqlx::query_as(
                d.sql("SELECT sha256 FROM release_packages WHERE release = ? ORDER BY sha256")
            )
            .bind(version)
            .fetch_all(c)
            .await)?;
            let mut wanted: Vec<&str> = packages.iter().map(|p| p.sha256.as_str()).collect();
            wanted.sort_unstable();
            let same = existing.notes == notes
                && shas
                    .iter()
                    .map(|(s,)| s.as_str())
                    .eq(wanted.iter().copied());
            return Ok(if same {
                Ok(false)
            } else {
                Err(PublishConflict::Release(version.to_owned()))
            });
        }
        for package in packages {
            on_tx!(tx, |c, d| {
                sqlx::query(d.sql("INSERT INTO packages (sha256, module, version, kind, size, signature, url, created_at, platform) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING"))
            .bind(&package.sha256)
            .bind(&package.module)
            .bind(&package.version)
            .bind(&package.kind)
            .bind(package.size)
            .bind(&package.signature)
            .bind(&package.url)
            .bind(at)
            .bind(&package.platform)
            .execute(c)
            .await
    .map(|done| done.rows_affected())
            })?;
        }
        on_tx!(tx, |c, d| sqlx::query(d.sql(
            "INSERT INTO releases (version, notes, created_at) VALUES (?, ?, ?)"
        ))
        .bind(version)
        .bind(notes)
        .bind(at)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        for package in packages {
            on_tx!(tx, |c, d| sqlx::query(d.sql(
                "INSERT INTO release_packages (release, sha256) VALUES (?, ?)"
            ))
            .bind(version)
            .bind(&package.sha256)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(Ok(true))
    }

    /// Every release, newest first, with its packages.
    pub async fn releases(&self) -> sqlx::Result<Vec<ReleaseRecord>> {
        let rows: Vec<ReleaseRow> = on_pool!(self.pool, |c, d| sqlx::query_as(
            d.sql(select_releases!("ORDER BY created_at DESC, version DESC"))
        )
        .fetch_all(c)
        .await)?;
        let mut releases = Vec::with_capacity(rows.len());
        for row in rows {
            releases.push(self.with_packages(row).await?);
        }
        Ok(releases)
    }

    pub async fn release(&self, version: &str) -> sqlx::Result<Option<ReleaseRecord>> {
        let row: Option<ReleaseRow> = on_pool!(self.pool, |c, d| sqlx::query_as(
            d.sql(select_releases!("WHERE version = ?"))
        )
        .bind(version)
        .fetch_optional(c)
        .await)?;
        match row {
            Some(row) => Ok(Some(self.with_packages(row).await?)),
            None => Ok(None),
        }
    }

    async fn with_packages(&self, row: ReleaseRow) -> sqlx::Result<ReleaseRecord> {
        let packages = on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql("SELECT p.sha256, p.module, p.version, p.kind, p.size, p.signature, p.url, p.created_at, p.platform \
             FROM release_packages r JOIN packages p ON p.sha256 = r.sha256 WHERE r.release = ? ORDER BY p.module"))
        .bind(&row.version)
        .fetch_all(c)
        .await
        })?;
        let withdrawn = row.withdrawn_at.map(|at| Withdrawal {
            at,
            by: row.withdrawn_by.unwrap_or_default(),
            reason: row.withdrawn_reason.unwrap_or_default(),
        });
        Ok(ReleaseRecord {
            version: row.version,
            notes: row.notes,
            created_at: row.created_at,
            packages,
            withdrawn,
        })
    }

    /// Withdraws a release; `None` if there is no such release, `Some(false)`
    /// if it was withdrawn already (the first withdrawal stands).
    pub async fn withdraw_release(
        &self,
        version: &str,
        withdrawal: &Withdrawal,
    ) -> sqlx::Result<Option<bool>> {
        let done = on_pool!(self.pool, |c, d| sqlx::query(d.sql(
            "UPDATE releases SET withdrawn_at = ?, withdrawn_by = ?, withdrawn_reason = ? \
             WHERE version = ? AND withdrawn_at IS NULL"
        ))
        .bind(withdrawal.at)
        .bind(&withdrawal.by)
        .bind(&withdrawal.reason)
        .bind(version)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        if done > 0 {
            return Ok(Some(true));
        }
        let exists: Option<String> = on_pool!(self.pool, |c, d| sqlx::query_scalar(
            d.sql("SELECT version FROM releases WHERE version = ?")
        )
        .bind(version)
        .fetch_optional(c)
        .await)?;
        Ok(exists.map(|_| false))
    }

    /// The sha256 of every package that only withdrawn releases hold:
    /// agents must not keep or install them.
    pub async fn withdrawn_packages(&self) -> sqlx::Result<Vec<String>> {
        on_pool!(self.pool, |c, d| {
            sqlx::query_scalar(d.sql("SELECT DISTINCT rp.sha256 FROM release_packages rp JOIN releases r ON r.version = rp.release \
             WHERE r.withdrawn_at IS NOT NULL AND NOT EXISTS ( \
               SELECT 1 FROM release_packages other JOIN releases live ON live.version = other.release \
               WHERE other.sha256 = rp.sha256 AND live.withdrawn_at IS NULL) \
             ORDER BY rp.sha256"))
        .fetch_all(c)
        .await
        })
    }
}
