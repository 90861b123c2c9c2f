//! The checks before a site is taken down: asked of every server with work
//! there, a FAIL keeps the site untouched in `preflight_failed`, asked
//! again a minute later, or overridden by an operator.

use chrono::Duration;
use expect_test::expect;
use flotilla_proto::doctor::{Check, Report};
use serde_json::json;

use super::*;

/// Acme in its window with two servers, its preflight asked 10 s ago.
fn asked() -> World {
    world(json!({"failure": {"max_failed_sites": 1}}))
        .site("acme", 1, SiteState::Scheduled)
        .step("acme", "acme-db/database", 0, StepState::Pending)
        .step("acme", "acme-web/ecommerce", 1, StepState::Pending)
        .server("acme-db", true, &[("database", "1.0.0", Some("2.0.0"))])
        .server("acme-web", true, &[("ecommerce", "1.0.0", Some("2.0.0"))])
        .with_site("acme", |s| {
            s.preflight_at = Some(now() - Duration::seconds(10));
            s.message = Some("checking 2 server(s) before taking the site down".into());
        })
}

/// `server`'s report to the question asked 10 s ago, applied to `world`.
fn answer(world: World, server: &str, checks: Vec<Check>) -> World {
    let answer = report(&world, server, checks);
    let changes = ordered(&world.rows, &world.strategy, now(), &answer).unwrap();
    let mut world = world;
    world.rows.1 = changes.sites;
    world
}

/// `server`'s report to the question asked of `world`'s site, as the
/// engine hands it over.
fn report(world: &World, server: &str, checks: Vec<Check>) -> Answer {
    let asked = world.rows.1[0].preflight_at.unwrap();
    Answer {
        server: server.into(),
        module: String::new(),
        command_id: format!(
            "rollout-{server}-acme-{}-0-abc",
            crate::rollouts::decide::preflight::round(asked)
        ),
        kind: Ordered::Preflight,
        result: Ok("answered".into()),
        report: Some(Report {
            server: server.into(),
            at: Some(now()),
            checks,
        }),
    }
}

fn disk_full() -> Check {
    Check::fail(
        "disk",
        "/srv/apps/ecommerce",
        "not enough space beside /srv/apps/ecommerce: 12 MB free, the new version needs 300 MB",
        "free space on that volume",
    )
    .blocking()
}

#[test]
fn every_server_is_asked_before_the_site_goes_down() {
    check(
        asked().with_site("acme", |s| s.preflight_at = None),
        expect![[r#"
            site acme: scheduled
              checking 2 server(s) before taking the site down
            order preflight on acme-db
            order preflight on acme-web
        "#]],
    );
    // Waiting for the answers: nothing else happens.
    check(
        answer(asked(), "acme-db", vec![Check::ok("disk", "/srv", "room")]),
        expect![[r#"
            nothing
        "#]],
    );
    // Both answered, all clear (a warning is said, not blocking): it starts.
    let clear = answer(
        answer(asked(), "acme-db", vec![Check::ok("disk", "/srv", "room")]),
        "acme-web",
        vec![Check::warn(
            "leftovers",
            "/srv/apps/ecommerce/site.bak",
            "ecommerce holds site.bak",
            "delete it",
        )],
    );
    check(
        clear,
        expect![[r#"
            site acme: running, planned +0s to +600s
            step acme-db/database: starting, attempt 1
              ordered (attempt 1)
            step acme-web/ecommerce: pending
              waits for database
            log flotilla preflight: site acme: 2 server(s) ready; warnings: acme-web: leftovers /srv/apps/ecommerce/site.bak: ecommerce holds site.bak (fix: delete it)
            log flotilla site_started: site acme: wave 1
            order install database 2.0.0 on acme-db
        "#]],
    );
}

#[test]
fn a_failed_preflight_touches_nothing_and_is_asked_again_or_overridden() {
    let failed = || {
        answer(
            answer(asked(), "acme-db", vec![Check::ok("disk", "/srv", "room")]),
            "acme-web",
            vec![disk_full()],
        )
    };
    check(
        failed(),
        expect![[r#"
            site acme: preflight_failed
              preflight failed, nothing was touched: acme-web: disk /srv/apps/ecommerce: not enough space beside /srv/apps/ecommerce: 12 MB free, the new version needs 300 MB (fix: free space on that volume). Checked again every 60 s; retry now or override
            log flotilla preflight_failed: site acme: acme-web: disk /srv/apps/ecommerce: not enough space beside /srv/apps/ecommerce: 12 MB free, the new version needs 300 MB (fix: free space on that volume)
        "#]],
    );
    let judged = || {
        failed().with_site("acme", |s| {
            s.state = SiteState::PreflightFailed;
            s.message = None;
        })
    };
    // A minute later its servers are asked again.
    check(
        judged().with_site("acme", |s| {
            s.preflight_at = Some(now() - Duration::seconds(61))
        }),
        expect![[r#"
            site acme: preflight_failed
            order preflight on acme-db
            order preflight on acme-web
        "#]],
    );
    check_act(
        judged(),
        Action::OverridePreflight("acme".into()),
        expect![[r#"
            site acme: scheduled
              preflight overridden by carol
            log carol preflight_overridden: site acme starts despite: acme-web: disk /srv/apps/ecommerce: not enough space beside /srv/apps/ecommerce: 12 MB free, the new version needs 300 MB (fix: free space on that volume)
        "#]],
    );
    check(
        judged().with_site("acme", |s| {
            s.state = SiteState::Scheduled;
            s.preflight_override_by = Some("carol".into());
        }),
        expect![[r#"
            site acme: running, planned +0s to +600s
            step acme-db/database: starting, attempt 1
              ordered (attempt 1)
            step acme-web/ecommerce: pending
              waits for database
            log flotilla site_started: site acme: wave 1
            order install database 2.0.0 on acme-db
        "#]],
    );
    // Retry asks at once, without warning the users again.
    check_act(
        judged(),
        Action::Retry,
        expect![[r#"
            site acme: scheduled
              retried by carol
            step acme-db/database: pending
              retried by carol
            step acme-web/ecommerce: pending
              retried by carol
            log carol retried: sites acme
        "#]],
    );
}

#[test]
fn an_answer_to_an_earlier_question_or_from_an_older_agent_is_not_held_against_the_site() {
    let world = asked();
    let late = Answer {
        server: "acme-web".into(),
        module: String::new(),
        command_id: "rollout-acme-web-acme-preflight-1-0-abc".into(),
        kind: Ordered::Preflight,
        result: Ok("answered".into()),
        report: Some(Report::default()),
    };
    assert!(ordered(&world.rows, &world.strategy, now(), &late).is_none());
    let asked_at = world.rows.1[0].preflight_at.unwrap();
    let old_agent = Answer {
        command_id: format!(
            "rollout-acme-web-acme-{}-0-abc",
            crate::rollouts::decide::preflight::round(asked_at)
        ),
        result: Err(OrderError::Refused {
            server: "acme-web".into(),
            message: "this agent (version 0.1.0) does not know this command; upgrade the agent"
                .into(),
        }),
        report: None,
        ..late
    };
    let site = ordered(&world.rows, &world.strategy, now(), &old_agent)
        .unwrap()
        .sites
        .remove(0);
    let answers = crate::rollouts::decide::preflight::answers(&site);
    assert!(answers["acme-web"].failures.is_empty());
    assert!(answers["acme-web"].warnings[0].starts_with("no preflight: this agent"));
}

#[test]
fn a_server_that_does_not_answer_fails_the_preflight() {
    check(
        answer(asked(), "acme-db", vec![Check::ok("disk", "/srv", "room")])
            .with_site("acme", |s| {
                s.preflight_at = Some(now() - Duration::seconds(151))
            }),
        expect![[r#"
            site acme: preflight_failed
              preflight failed, nothing was touched: acme-db: did not answer the preflight within 150 s; acme-web: did not answer the preflight within 150 s. Checked again every 60 s; retry now or override
            log flotilla preflight_failed: site acme: acme-db: did not answer the preflight within 150 s; acme-web: did not answer the preflight within 150 s
        "#]],
    );
}

#[test]
fn answers_decided_together_leave_the_rows_as_decided_one_by_one() {
    let world = asked();
    let db = report(&world, "acme-db", vec![Check::ok("disk", "/srv", "room")]);
    let web = report(&world, "acme-web", vec![disk_full()]);
    let together = ordered_all(&world.rows, &world.strategy, now(), &[&db, &web]).unwrap();
    let one_by_one = answer(
        answer(asked(), "acme-db", vec![Check::ok("disk", "/srv", "room")]),
        "acme-web",
        vec![disk_full()],
    );
    assert_eq!(together.sites, one_by_one.rows.1);
    // Nothing to write when no answer changes anything.
    let stale = Answer {
        command_id: "rollout-acme-db-acme-0-0-old".into(),
        ..report(&world, "acme-db", Vec::new())
    };
    assert!(ordered_all(&world.rows, &world.strategy, now(), &[&stale]).is_none());
}
