//! Several controllers on one PostgreSQL database: the lock that makes one
//! of them drive the rollouts, the relay table through which they ask each
//! other (a command for an agent connected elsewhere, an operator's action
//! for the driver), and PostgreSQL's notifications that wake them. A
//! SQLite database belongs to one controller: none of this is used there.

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};

use super::{Database, Pool};

/// The advisory lock whose holder drives the rollouts.
const DRIVER_LOCK: i64 = 7_461_731;

/// Notified with a relay's target when one is written.
pub const RELAY_CHANNEL: &str = "flotilla_relay";
/// Notified with a relay's id when it is answered.
pub const REPLY_CHANNEL: &str = "flotilla_reply";
/// Notified with what changed (servers, rollouts), for the other
/// controllers' live views and engines.
pub const NOTES_CHANNEL: &str = "flotilla_notes";

fn alone() -> sqlx::Error {
    sqlx::Error::Configuration("a SQLite database has one controller: nothing to relay".into())
}

/// Whether this controller drives the rollouts: on PostgreSQL, while a
/// session of its own holds [`DRIVER_LOCK`] (released by PostgreSQL when
/// that session ends: the controller stopped, died or lost the database);
/// on SQLite, always.
#[derive(Debug, Default)]
pub struct Driver {
    session: Option<PgConnection>,
    held: bool,
}

impl Driver {
    /// Whether this controller drives the rollouts now: keeps the lock if
    /// held (checking its session is alive), tries to take it if not.
    pub async fn hold(&mut self, db: &Database) -> bool {
        let Pool::Postgres(pool) = &db.pool else {
            return true;
        };
        if self.session.is_none() {
            match PgConnection::connect_with(&pool.connect_options()).await {
                Ok(session) => self.session = Some(session),
                Err(e) => {
                    tracing::warn!("cannot open the session that holds the rollouts' lock: {e}");
                    return false;
                }
            }
        }
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let asked = if self.held {
            sqlx::query_scalar::<_, bool>("SELECT TRUE")
                .fetch_one(&mut *session)
                .await
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(DRIVER_LOCK)
                .fetch_one(&mut *session)
                .await
        };
        match asked {
            Ok(held) => self.held = held,
            Err(e) => {
                // The session is gone, and the lock with it.
                tracing::warn!("lost the session that holds the rollouts' lock: {e}");
                self.session = None;
                self.held = false;
            }
        }
        self.held
    }
}

/// A request between controllers as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayState {
    pub taken_by: Option<String>,
    pub reply: Option<String>,
}

/// Notifications from the other controllers.
#[derive(Debug)]
pub struct Notifications(PgListener);

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A notification: its channel and payload.
    Note(String, String),
    /// The connection was lost and made again: what was sent meanwhile is
    /// lost, and must be caught up with.
    Reconnected,
}

impl Notifications {
    /// The next notification, or word that some may have been lost.
    pub async fn next(&mut self) -> sqlx::Result<Heard> {
        Ok(match self.0.try_recv().await? {
            Some(notification) => Heard::Note(
                notification.channel().to_owned(),
                notification.payload().to_owned(),
            ),
            None => Heard::Reconnected,
        })
    }
}

impl Database {
    /// Whether several controllers can share this database (PostgreSQL).
    pub fn shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Listens to the relay's, replies' and notes' channels.
    pub async fn listen(&self) -> sqlx::Result<Notifications> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([RELAY_CHANNEL, REPLY_CHANNEL, NOTES_CHANNEL])
            .await?;
        Ok(Notifications(listener))
    }

    /// Sends `payload` on `channel` to every controller listening.
    pub async fn notify(&self, channel: &str, payload: &str) -> sqlx::Result<()> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        sqlx::query("SELECT pg_notify($1, $2)::text")
            .bind(channel)
            .bind(payload)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Writes a request for `target` (and tells the controllers); `None`
    /// when it is for `server` and that server is connected nowhere.
    pub async fn relay_send(
        &self,
        target: &str,
        request: &str,
        patience: std::time::Duration,
        server: Option<&str>,
    ) -> sqlx::Result<Option<i64>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        let mut tx = pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO relay (target, request, created_at, expires_at) \
             SELECT $1, $2, now(), now() + $3 * interval '1 millisecond' \
             WHERE $4::text IS NULL OR EXISTS (SELECT 1 FROM servers WHERE id = $4 AND online) \
             RETURNING id",
        )
        .bind(target)
        .bind(request)
        .bind(i64::try_from(patience.as_millis()).unwrap_or(i64::MAX))
        .bind(server)
        .fetch_optional(&mut *tx)
        .await?;
        if id.is_some() {
            sqlx::query("SELECT pg_notify($1, $2)::text")
                .bind(RELAY_CHANNEL)
                .bind(target)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Who took a request and what they answered; `None` once forgotten.
    pub async fn relay_state(&self, id: i64) -> sqlx::Result<Option<RelayState>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT taken_by, reply FROM relay WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(taken_by, reply)| RelayState { taken_by, reply }))
    }

    /// Forgets a request: answered, or given up on.
    pub async fn relay_forget(&self, id: i64) -> sqlx::Result<()> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        sqlx::query("DELETE FROM relay WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Withdraws a request nobody took; `false` when one took it meanwhile
    /// (its answer is still to come).
    pub async fn relay_withdraw(&self, id: i64) -> sqlx::Result<bool> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        let withdrawn: Option<i64> =
            sqlx::query_scalar("DELETE FROM relay WHERE id = $1 AND taken_by IS NULL RETURNING id")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        Ok(withdrawn.is_some())
    }

    /// Takes the waiting requests for `target` for controller `me`: each
    /// is taken by one controller only.
    pub async fn relay_take(&self, target: &str, me: &str) -> sqlx::Result<Vec<(i64, String)>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        sqlx::query_as(
            "UPDATE relay SET taken_by = $2 \
             WHERE target = $1 AND taken_by IS NULL AND expires_at > now() \
             RETURNING id, request",
        )
        .bind(target)
        .bind(me)
        .fetch_all(pool)
        .await
    }

    /// The targets with requests nobody took yet, and forgets requests
    /// expired for a minute (their senders gave up).
    pub async fn relay_waiting(&self) -> sqlx::Result<Vec<String>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        sqlx::query("DELETE FROM relay WHERE expires_at < now() - interval '1 minute'")
            .execute(pool)
            .await?;
        sqlx::query_scalar(
            "SELECT DISTINCT target FROM relay WHERE taken_by IS NULL AND expires_at > now()",
        )
        .fetch_all(pool)
        .await
    }

    /// Answers a request taken, and tells its sender.
    pub async fn relay_answer(&self, id: i64, reply: &str) -> sqlx::Result<()> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(alone());
        };
        let mut tx = pool.begin().await?;
        sqlx::query("UPDATE relay SET reply = $2, replied_at = now() WHERE id = $1")
            .bind(id)
            .bind(reply)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)::text")
            .bind(REPLY_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}
