//! Strategies and calendars: validation naming the field, waves, thresholds
//! and retries, windows across days and daylight saving time.

#![allow(clippy::unwrap_used)] // a failure is a test failure

use super::*;

fn paris_weeknights() -> Calendar {
    Schedule {
        time_zone: "Europe/Paris".into(),
        windows: vec![Window {
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            start: "22:00".into(),
            end: "04:00".into(),
        }],
    }
    .calendar()
    .unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn an_open_window_starts_now_when_the_install_fits() {
    // Tuesday 2026-11-24 23:00 Paris = 22:00 UTC; the window closes Wed 04:00 Paris.
    let slot = paris_weeknights()
        .slot(utc("2026-11-24T22:00:00Z"), Duration::minutes(30))
        .unwrap();
    assert_eq!(slot.start, utc("2026-11-24T22:00:00Z"));
    assert_eq!(slot.end, Some(utc("2026-11-25T03:00:00Z")));
}

#[test]
fn an_install_that_cannot_finish_before_the_close_waits_for_the_next_window() {
    // Wed 03:45 Paris: 15 minutes left, the install needs 30.
    let slot = paris_weeknights()
        .slot(utc("2026-11-25T02:45:00Z"), Duration::minutes(30))
        .unwrap();
    assert_eq!(slot.start, utc("2026-11-25T21:00:00Z"), "Wed 22:00 Paris");
}

#[test]
fn the_weekend_is_skipped_and_the_friday_window_runs_into_saturday() {
    // Friday 2026-11-27 23:30 Paris: open until Sat 04:00.
    let cal = paris_weeknights();
    let fri = cal
        .slot(utc("2026-11-27T22:30:00Z"), Duration::hours(1))
        .unwrap();
    assert_eq!(fri.start, utc("2026-11-27T22:30:00Z"));
    // Saturday noon: next is Monday 22:00 Paris.
    let sat = cal
        .slot(utc("2026-11-28T11:00:00Z"), Duration::hours(1))
        .unwrap();
    assert_eq!(sat.start, utc("2026-11-30T21:00:00Z"));
    assert_eq!(cal.local(sat.start), "Mon 2026-11-30 22:00:00 CET");
}

#[test]
fn windows_follow_daylight_saving_time() {
    // Summer: 22:00 Paris is 20:00 UTC.
    let slot = paris_weeknights()
        .slot(utc("2026-07-01T12:00:00Z"), Duration::minutes(5))
        .unwrap();
    assert_eq!(slot.start, utc("2026-07-01T20:00:00Z"));
}

#[test]
fn a_window_closing_in_the_spring_forward_gap_closes_at_the_change() {
    // Sunday 2026-03-29, Paris: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    let cal = Schedule {
        time_zone: "Europe/Paris".into(),
        windows: vec![Window {
            days: vec![],
            start: "22:00".into(),
            end: "02:30".into(),
        }],
    }
    .calendar()
    .unwrap();
    let slot = cal
        .slot(utc("2026-03-28T21:00:00Z"), Duration::minutes(10))
        .unwrap();
    assert_eq!(slot.end, Some(utc("2026-03-29T01:00:00Z")));
    // An install of 3 h 50 min fits; 4 h 10 min does not.
    assert!(
        cal.slot(utc("2026-03-28T21:00:00Z"), Duration::minutes(240))
            .unwrap()
            .start
            == utc("2026-03-28T21:00:00Z")
    );
    assert!(
        cal.slot(utc("2026-03-28T21:00:00Z"), Duration::minutes(250))
            .unwrap()
            .start
            > utc("2026-03-29T00:00:00Z")
    );
}

#[test]
fn out_of_range_numbers_are_refused_naming_the_field() {
    let strategy = Strategy {
        notice: Some(Notice {
            webhook_url: "https://hooks.example.com".into(),
            lead_seconds: 10_000_000_000_000,
        }),
        ..Strategy::default()
    };
    assert_eq!(
        strategy.validate().unwrap_err().field,
        "notice.lead_seconds"
    );
    let strategy = Strategy {
        default_install_seconds: 0,
        ..Strategy::default()
    };
    assert_eq!(
        strategy.validate().unwrap_err().field,
        "default_install_seconds"
    );
    for budget in [4, 1800, 100_000] {
        let strategy = Strategy {
            agent_update_budget_seconds: Some(budget),
            ..Strategy::default()
        };
        assert_eq!(
            strategy.validate().unwrap_err().field,
            "agent_update_budget_seconds",
            "{budget}"
        );
    }
    let strategy = Strategy {
        agent_update_budget_seconds: Some(600),
        ..Strategy::default()
    };
    assert!(strategy.validate().is_ok());
    let mut strategy = Strategy::default();
    strategy.waves.canary = vec!["a".into(), "a".into()];
    assert_eq!(strategy.validate().unwrap_err().field, "waves.canary");
}

#[test]
fn no_window_is_always_open_and_too_long_an_install_never_fits() {
    assert_eq!(
        Calendar::always().slot(utc("2026-11-25T10:00:00Z"), Duration::days(3)),
        Some(Slot {
            start: utc("2026-11-25T10:00:00Z"),
            end: None
        })
    );
    assert_eq!(
        paris_weeknights().slot(utc("2026-11-25T10:00:00Z"), Duration::hours(7)),
        None
    );
}

#[test]
fn bad_schedules_name_the_field() {
    let bad = |tz: &str, start: &str, day: &str| {
        Schedule {
            time_zone: tz.into(),
            windows: vec![Window {
                days: vec![day.into()],
                start: start.into(),
                end: "04:00".into(),
            }],
        }
        .calendar()
        .unwrap_err()
        .to_string()
    };
    assert!(bad("Europe/Pariss", "22:00", "mon").starts_with("time_zone: \"Europe/Pariss\""));
    assert!(bad("Europe/Paris", "25:00", "mon").starts_with("windows[0].start: \"25:00\""));
    assert!(bad("Europe/Paris", "22:00", "someday").starts_with("windows[0].days: \"someday\""));
}

#[test]
fn the_default_order_puts_the_database_first_and_the_web_modules_together() {
    let strategy = Strategy::default();
    let modules: BTreeSet<String> = [
        "database",
        "integration",
        "ecommerce",
        "phygitalapi",
        "other",
    ]
    .map(String::from)
    .into();
    let layers = strategy.layers(&modules);
    assert_eq!(layers["database"], 0);
    assert_eq!(layers["other"], 0);
    assert_eq!(layers["integration"], 1);
    assert_eq!(layers["ecommerce"], 2);
    assert_eq!(layers["phygitalapi"], 2);
    // Without integration in the release, the web modules still wait for the database.
    let modules: BTreeSet<String> = ["database", "ecommerce"].map(String::from).into();
    assert_eq!(
        strategy.dependencies(&modules)["ecommerce"],
        ["database".to_owned()].into()
    );
}

#[test]
fn a_cycle_in_the_order_is_refused_naming_it() {
    let mut strategy = Strategy::default();
    strategy
        .order
        .insert("database".into(), vec!["ecommerce".into()]);
    let error = strategy.validate().unwrap_err();
    assert_eq!(error.field, "order");
    assert!(
        error
            .message
            .contains("database -> ecommerce -> integration -> database"),
        "{error}"
    );
}

#[test]
fn waves_put_canaries_first_then_batches() {
    let sites: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    let mut strategy = Strategy::default();
    strategy.waves.canary = vec!["c".into()];
    strategy.waves.batch_percent = Some(50);
    assert_eq!(
        strategy.waves(&sites).unwrap(),
        vec![vec!["c"], vec!["a", "b"], vec!["d", "e"]]
    );
    strategy.waves.canary = vec!["z".into()];
    assert_eq!(strategy.waves(&sites).unwrap_err().field, "waves.canary");
}

#[test]
fn the_threshold_and_the_retries() {
    let mut policy = FailurePolicy::default();
    assert!(!policy.tripped(0, 3));
    assert!(
        policy.tripped(1, 3),
        "by default the first failed site pauses"
    );
    policy.max_failed_sites = Some(1);
    assert!(!policy.tripped(1, 3));
    assert!(policy.tripped(2, 3));
    policy.max_failed_sites = None;
    policy.max_failed_percent = Some(50);
    assert!(!policy.tripped(1, 3));
    assert!(policy.tripped(2, 3));
    policy.retries = 2;
    policy.retry_backoff_seconds = 10;
    assert_eq!(policy.retry_after(1), Some(Duration::seconds(10)));
    assert_eq!(policy.retry_after(2), Some(Duration::seconds(20)));
    assert_eq!(policy.retry_after(3), None);
}
