//! The database's part in what security relies on: the audit trail is
//! append-only, its retention prunes only entries exported and past their
//! age, and a renewal never records a certificate after a revocation.

#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};

use super::tests::{database, enroll_at};

#[tokio::test]
async fn the_audit_trail_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let entry = super::AuditRecord {
        seq: 0,
        at: Utc::now(),
        actor: "admin".to_owned(),
        action: "POST /api/v1/tokens".to_owned(),
        target: "/api/v1/tokens".to_owned(),
        outcome: 201,
        source: "127.0.0.1:5000".to_owned(),
        detail: None,
    };
    db.audit(&entry).await.unwrap();
    for change in [
        "UPDATE audit SET actor = 'someone else'",
        "DELETE FROM audit",
    ] {
        let error = sqlx::query(change).execute(db.sqlite()).await.unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{change}: {error}"
        );
    }
    let trail = db
        .audit_trail(&super::AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].actor, "admin");
}

/// Entries past their retention are exported to a file, oldest first, then
/// pruned; the pruning is recorded, append-only; a newer entry still
/// cannot be deleted.
#[tokio::test]
async fn entries_past_their_retention_are_exported_then_pruned_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    let entry = |at, actor: &str| super::AuditRecord {
        seq: 0,
        at,
        actor: actor.to_owned(),
        action: "POST /api/v1/tokens".to_owned(),
        target: "/api/v1/tokens".to_owned(),
        outcome: 201,
        source: "127.0.0.1:5000".to_owned(),
        detail: None,
    };
    for n in 0..2500 {
        db.audit(&entry(
            now - Duration::days(500) + Duration::seconds(n),
            "old",
        ))
        .await
        .unwrap();
    }
    db.audit(&entry(now - Duration::days(10), "recent"))
        .await
        .unwrap();
    let retention = crate::audit::Retention {
        days: 400,
        archive: dir.path().join("archive"),
    };
    let (entries, file) = retention.prune(&db, now).await.unwrap().unwrap();
    assert_eq!(entries, 2500);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2500);
    assert!(lines.iter().all(|l| l["actor"] == "old"));
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
    let left = db
        .audit_trail(&super::AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].actor, "recent");
    assert!(
        retention.prune(&db, now).await.unwrap().is_none(),
        "nothing more is that old"
    );
    for change in [
        "DELETE FROM audit",
        "UPDATE audit_pruned SET up_to_seq = 999999",
        "DELETE FROM audit_pruned",
    ] {
        let error = sqlx::query(change).execute(db.sqlite()).await.unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{change}: {error}"
        );
    }
}

/// A renewal that reaches the database after the server was revoked (it
/// was admitted before) records nothing: no certificate outlives the
/// revocation, even once the server enrolls again.
#[tokio::test]
async fn a_renewal_racing_a_revocation_records_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let now = Utc::now();
    db.create_enrollment(
        "h1",
        "web-01",
        "acme",
        "admin",
        now,
        now + Duration::hours(1),
    )
    .await
    .unwrap();
    enroll_at(&db, "h1", now).await.unwrap();
    let first = db.certificates_of("web-01").await.unwrap()[0]
        .serial
        .clone();
    let later = now + Duration::days(20);
    assert!(
        db.record_renewal(
            "r1",
            &first,
            "web-01",
            "acme",
            later,
            later + Duration::days(30)
        )
        .await
        .unwrap()
    );
    db.revoke_server("web-01", None, "admin", later)
        .await
        .unwrap();
    assert!(
        !db.record_renewal(
            "r2",
            "r1",
            "web-01",
            "acme",
            later,
            later + Duration::days(30)
        )
        .await
        .unwrap(),
        "renewed after the revocation"
    );
    let serials: Vec<String> = db
        .certificates_of("web-01")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.serial)
        .collect();
    assert!(!serials.contains(&"r2".to_owned()), "{serials:?}");
    let revoked = db.revocations().await.unwrap();
    assert!(
        serials.iter().all(|s| revoked.serials.contains(s)),
        "{serials:?}"
    );
}
