//! The all-or-nothing upgrade loop, once for both engines: the scripts run
//! in one transaction, a savepoint each, and a failure rolls back every
//! script before it. A script that cannot run in a transaction (`-- flotilla:
//! no-transaction`) commits what came before, runs alone, and a new
//! transaction starts after it. Every run, failed or not, is in the history.

use sqlx::Connection;

use super::{Error, History, Script, ScriptRun, history_of, run_of};

/// What the loop needs of an engine.
pub(crate) trait Engine: Sync {
    type Db: sqlx::Database;

    /// A connection of its own for the whole upgrade.
    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<Self::Db>, sqlx::Error>;

    /// Runs `sql` on `connection`: the rows it affected.
    async fn run(
        connection: &mut <Self::Db as sqlx::Database>::Connection,
        sql: &str,
    ) -> Result<u64, sqlx::Error>;

    /// Runs a script that cannot run in a transaction, alone.
    async fn run_alone(&self, script: &Script) -> Result<u64, sqlx::Error>;

    /// Appends a row to the history table, on `connection` (in its
    /// transaction, if it is one).
    async fn record_on(
        connection: &mut <Self::Db as sqlx::Database>::Connection,
        row: &History,
    ) -> Result<(), Error>;

    /// Appends a row to the history table, outside any transaction.
    async fn record(&self, row: &History) -> Result<(), Error>;
}

/// Runs `scripts` of `module` `version` for `who`, all or nothing: the runs
/// up to the first that failed. `rolled_back` is said of a failure inside
/// the transaction (what became of the scripts before it).
pub(crate) async fn upgrade<E: Engine>(
    engine: &E,
    module: &str,
    version: &str,
    scripts: &[Script],
    who: &str,
    rolled_back: &str,
) -> Result<Vec<ScriptRun>, Error> {
    let history = |script: &Script, run: &ScriptRun| history_of(module, version, who, script, run);
    let mut runs = Vec::new();
    let mut connection = engine.connection().await?;
    let mut tx = connection.begin().await?;
    for script in scripts {
        let started = std::time::Instant::now();
        if !script.transactional() {
            tx.commit().await?;
            let result = engine.run_alone(script).await;
            let run = run_of(script, started, result, "");
            engine.record(&history(script, &run)).await?;
            let ok = run.ok;
            runs.push(run);
            if !ok {
                return Ok(runs);
            }
            tx = connection.begin().await?;
            continue;
        }
        let result = {
            let mut savepoint = tx.begin().await?;
            match E::run(&mut savepoint, &script.sql).await {
                Ok(rows) => savepoint.commit().await.map(|()| rows),
                Err(e) => {
                    savepoint.rollback().await?;
                    Err(e)
                }
            }
        };
        let run = run_of(script, started, result, rolled_back);
        if !run.ok {
            // All or nothing: what ran before it in this transaction goes too.
            tx.rollback().await?;
            engine.record(&history(script, &run)).await?;
            runs.push(run);
            return Ok(runs);
        }
        E::record_on(&mut tx, &history(script, &run)).await?;
        runs.push(run);
    }
    tx.commit().await?;
    Ok(runs)
}
