//! Fleet sessions against a real SQLite file.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use flotilla_proto::domain::SiteName;
use flotilla_proto::link::AgentCommand;

use super::*;

fn hello(id: &str) -> ServerHello {
    ServerHello {
        id: ServerId::parse(id).unwrap(),
        site: SiteName::parse("acme").unwrap(),
        hostname: id.to_owned(),
        os: "linux".to_owned(),
        agent_version: "1.0.0".to_owned(),
        protocol_version: 1,
        peer_address: None,
        agent_started_at: None,
    }
}

#[tokio::test]
async fn an_answer_counts_only_from_the_connection_the_command_went_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("controller.db"))
        .await
        .unwrap();
    let heartbeats = Heartbeats {
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(3),
    };
    let fleet = Arc::new(Fleet::new(db, heartbeats, "https://c".to_owned(), 0));
    let stop = CancellationToken::new();
    let mut real = fleet.connect(&hello("web-01"), None, &stop).await.unwrap();
    let other = fleet.connect(&hello("web-02"), None, &stop).await.unwrap();

    let id = fleet.command_id("web-01", "ecommerce");
    assert_ne!(id, fleet.command_id("web-01", "ecommerce"));
    let random = id.rsplit('-').next().unwrap();
    assert!(
        random.len() == 32 && random.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );

    let order = tokio::spawn({
        let fleet = fleet.clone();
        let id = id.clone();
        async move {
            fleet
                .order_as(
                    "web-01",
                    "ecommerce",
                    Order::Rollback {
                        to: None,
                        keep_database: false,
                    },
                    id,
                )
                .await
        }
    });
    let sent = real.commands.recv().await.unwrap();
    assert!(
        matches!(&sent, ToAgent::Command { id: sent_id, command: Some(AgentCommand::Rollback { .. }) } if *sent_id == id),
        "{sent:?}"
    );
    // Another server's connection answers first: ignored.
    let reply = |ok, message: &str| Reply::Outcome {
        ok,
        message: message.to_owned(),
    };
    fleet.answered(&other, &id, reply(true, "accepted by an impostor"));
    fleet.answered(&real, &id, reply(false, "refused by the real agent"));
    let answer = order.await.unwrap();
    assert!(
        matches!(&answer, Err(OrderError::Refused { message, .. }) if message == "refused by the real agent"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_storm_of_connections_and_disconnections_is_recorded_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("controller.db"))
        .await
        .unwrap();
    let heartbeats = Heartbeats {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
    };
    let fleet = Arc::new(Fleet::new(
        db.clone(),
        heartbeats,
        "https://c".to_owned(),
        0,
    ));
    let stop = CancellationToken::new();
    // All at once, as after a network cut: each is recorded, none lost.
    let connecting = (0..400).map(|n| {
        let fleet = fleet.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            fleet
                .connect(&hello(&format!("web-{n:03}")), None, &stop)
                .await
                .unwrap()
        })
    });
    let sessions = futures_util::future::join_all(connecting).await;
    let online = db.online_sessions().await.unwrap();
    assert_eq!(online.len(), 400);
    let leaving = sessions.into_iter().map(|session| {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            fleet
                .disconnected(&session.unwrap(), "the agent closed the connection")
                .await
        })
    });
    futures_util::future::join_all(leaving).await;
    assert_eq!(db.online_sessions().await.unwrap(), []);
}

#[tokio::test]
async fn a_server_recorded_online_with_no_connection_is_found_and_marked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("controller.db"))
        .await
        .unwrap();
    let heartbeats = Heartbeats {
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(60),
    };
    let fleet = Fleet::new(db.clone(), heartbeats, "https://c".to_owned(), 0);
    let stop = CancellationToken::new();
    let lost = fleet.connect(&hello("web-01"), None, &stop).await.unwrap();
    let _kept = fleet.connect(&hello("web-02"), None, &stop).await.unwrap();
    // Its end was never written (as when that write failed).
    fleet.forget(&lost).unwrap();
    assert_eq!(fleet.reconcile().await, 0, "not before the timeout");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fleet.reconcile().await, 1);
    let lost = db.server("web-01").await.unwrap().unwrap();
    assert!(!lost.online);
    assert_eq!(
        lost.offline_reason.as_deref(),
        Some("the connection ended (found by the controller's check)")
    );
    // The connected one stays online, however long since its last flush.
    assert!(db.server("web-02").await.unwrap().unwrap().online);
}
