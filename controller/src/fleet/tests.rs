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
