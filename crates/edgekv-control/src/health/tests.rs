use edgekv_proto::v1;

use super::{Analyzer, LATENCY_BOUNDS_MS, Thresholds, Totals, z_score};
use crate::rollout::Health;

const ENV: &str = "production";

/// A build's figures: `requests`, of which `auth` failed authentication, all
/// answered within `latency_ms`.
fn build(id: &str, requests: u64, auth: u64, latency_ms: u64) -> v1::BuildHealth {
    let mut latency = vec![0; LATENCY_BOUNDS_MS.len() + 1];
    let bucket = LATENCY_BOUNDS_MS
        .iter()
        .position(|b| latency_ms <= *b)
        .unwrap_or(LATENCY_BOUNDS_MS.len());
    latency[bucket] = requests;
    v1::BuildHealth {
        build_id: id.into(),
        requests,
        errors_auth: auth,
        latency_buckets: latency,
        last_error: if auth > 0 {
            "Unauthenticated: not a credential of this environment".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

fn report(node: &str, builds: Vec<v1::BuildHealth>) -> v1::HealthReport {
    v1::HealthReport {
        node_id: node.into(),
        environment: ENV.into(),
        tenant: ENV.into(),
        builds,
        interval_ms: 1000,
        ..Default::default()
    }
}

fn verdict(analyzer: &Analyzer, now: u64) -> Health {
    analyzer.verdict(ENV, "v2", Some("v1"), &Thresholds::default(), now)
}

#[test]
fn enough_clean_requests_are_healthy() {
    let analyzer = Analyzer::default();
    for t in 0..5 {
        analyzer.record(
            1_000 * t,
            report("e1", vec![build("v1", 50, 0, 3), build("v2", 10, 0, 3)]),
        );
    }
    assert_eq!(verdict(&analyzer, 5_000), Health::Healthy);
}

#[test]
fn too_few_requests_are_inconclusive() {
    let analyzer = Analyzer::default();
    analyzer.record(1_000, report("e1", vec![build("v2", 5, 0, 3)]));
    let Health::Inconclusive(why) = verdict(&analyzer, 1_500) else {
        panic!("five requests cannot tell");
    };
    assert!(why.contains("5 requests to v2"), "{why}");
    // No edge at all is inconclusive too, unless the deployment needs no traffic.
    let empty = Analyzer::default();
    assert!(matches!(verdict(&empty, 0), Health::Inconclusive(_)));
    let lax = Thresholds {
        min_requests: 0,
        ..Thresholds::default()
    };
    assert_eq!(
        empty.verdict(ENV, "v2", Some("v1"), &lax, 0),
        Health::Healthy
    );
}

#[test]
fn an_absolute_error_rate_breach_names_its_evidence() {
    let analyzer = Analyzer::default();
    analyzer.record(
        1_000,
        report("e1", vec![build("v1", 100, 0, 3), build("v2", 40, 40, 3)]),
    );
    let Health::Breach(why) = verdict(&analyzer, 1_200) else {
        panic!("every request failing is a breach");
    };
    assert!(why.contains("error rate 100.0%"), "{why}");
    assert!(why.contains("auth 40"), "{why}");
    assert!(why.contains("Unauthenticated"), "{why}");
}

#[test]
fn the_relative_error_threshold_compares_with_known_good() {
    // 4% errors: under the 5% ceiling, but known-good has none (allowed: 0×2 + 1 point).
    let analyzer = Analyzer::default();
    analyzer.record(
        1_000,
        report("e1", vec![build("v1", 1_000, 0, 3), build("v2", 100, 4, 3)]),
    );
    let Health::Breach(why) = verdict(&analyzer, 1_100) else {
        panic!("4% against known-good's 0% is a breach");
    };
    assert!(why.contains("known-good"), "{why}");
    // The same 4% beside a known-good that fails 3% of the time is within 2× + 1.
    let noisy = Analyzer::default();
    noisy.record(
        1_000,
        report(
            "e1",
            vec![build("v1", 1_000, 30, 3), build("v2", 100, 4, 3)],
        ),
    );
    assert_eq!(verdict(&noisy, 1_100), Health::Healthy);
}

/// A build over the wrong data answers 404 to keys that exist: no build fault,
/// but its 404 rate beside known-good's is a breach that names both figures.
#[test]
fn a_404_rate_far_above_known_goods_is_a_breach() {
    let with_404 = |id: &str, requests: u64, not_found: u64| v1::BuildHealth {
        not_found,
        ..build(id, requests, 0, 3)
    };
    let analyzer = Analyzer::default();
    analyzer.record(
        1_000,
        report(
            "e1",
            vec![with_404("v1", 1_000, 20), with_404("v2", 100, 35)],
        ),
    );
    let Health::Breach(why) = verdict(&analyzer, 1_100) else {
        panic!("35% 404s against known-good's 2% is a breach");
    };
    assert!(
        why.contains("404 rate 35.0%") && why.contains("(2.0%)"),
        "{why}"
    );
    // The same mix of absent keys at both builds is healthy.
    let same = Analyzer::default();
    same.record(
        1_000,
        report(
            "e1",
            vec![with_404("v1", 1_000, 300), with_404("v2", 100, 33)],
        ),
    );
    assert_eq!(verdict(&same, 1_100), Health::Healthy);
    // Known-good's figures from before the deploying build was served do not
    // count: only reports in which both were served are compared.
    let earlier = Analyzer::default();
    earlier.record(1_000, report("e1", vec![with_404("v1", 5_000, 0)]));
    earlier.record(
        2_000,
        report("e1", vec![with_404("v1", 500, 50), with_404("v2", 50, 6)]),
    );
    assert_eq!(verdict(&earlier, 2_100), Health::Healthy);
    // A few requests over the allowance by chance are not a breach.
    let few = Analyzer::default();
    few.record(
        1_000,
        report("e1", vec![with_404("v1", 1_000, 50), with_404("v2", 20, 4)]),
    );
    assert_eq!(verdict(&few, 1_100), Health::Healthy);
    // As seen in CI (6 of 15 requests 404 at a healthy build split by key, against
    // known-good's 11.4%, rolled it back): 10 of 25 here. z is above 3 by the normal
    // approximation, which does not hold with so few requests. Not a breach.
    let small = Analyzer::default();
    small.record(
        1_000,
        report("e1", vec![with_404("v1", 615, 70), with_404("v2", 25, 10)]),
    );
    assert_eq!(verdict(&small, 1_100), Health::Healthy);
    assert!(
        z_score((10, 25), (70, 615)) > 3.0,
        "the test still means something"
    );
    // The same proportions over 60 requests are a breach.
    let enough = Analyzer::default();
    enough.record(
        1_000,
        report("e1", vec![with_404("v1", 615, 70), with_404("v2", 60, 24)]),
    );
    assert!(
        matches!(verdict(&enough, 1_100), Health::Breach(why) if why.contains("404 rate 40.0%"))
    );
    // 4xx refusals are compared the same way.
    let refusing = Analyzer::default();
    refusing.record(
        1_000,
        report(
            "e1",
            vec![
                build("v1", 1_000, 0, 3),
                v1::BuildHealth {
                    client_errors: 30,
                    ..build("v2", 100, 0, 3)
                },
            ],
        ),
    );
    assert!(matches!(verdict(&refusing, 1_100), Health::Breach(why) if why.contains("4xx rate")));
}

#[test]
fn latency_breaches_absolute_and_relative() {
    let analyzer = Analyzer::default();
    analyzer.record(
        1_000,
        report(
            "e1",
            vec![build("v1", 100, 0, 3), build("v2", 100, 0, 2_000)],
        ),
    );
    let Health::Breach(why) = verdict(&analyzer, 1_100) else {
        panic!("a 2 s p99 is above the 1 s ceiling");
    };
    assert!(why.contains("p99 latency 2500 ms"), "{why}");
    let relative = Analyzer::default();
    relative.record(
        1_000,
        report(
            "e1",
            vec![build("v1", 100, 0, 25), build("v2", 100, 0, 250)],
        ),
    );
    let Health::Breach(why) = verdict(&relative, 1_100) else {
        panic!("10× known-good's p99 is a breach");
    };
    assert!(why.contains("of known-good's"), "{why}");
}

#[test]
fn an_edge_ejecting_the_new_build_is_a_breach() {
    let analyzer = Analyzer::default();
    let mut v2 = build("v2", 0, 0, 3);
    v2.ejected = true;
    v2.last_error = "Unauthenticated: refused".into();
    analyzer.record(1_000, report("e1", vec![build("v1", 100, 0, 3), v2]));
    let Health::Breach(why) = verdict(&analyzer, 1_100) else {
        panic!("an ejection is a breach even without traffic");
    };
    assert!(why.contains("edge e1 ejected build v2"), "{why}");
}

#[test]
fn edges_failing_auth_to_known_good_are_left_out() {
    let analyzer = Analyzer::default();
    // A misconfigured edge: everything fails, known-good included.
    let mut sick = report(
        "sick",
        vec![build("v1", 100, 100, 3), build("v2", 100, 100, 3)],
    );
    sick.known_good_auth_failing = true;
    analyzer.record(1_000, sick);
    analyzer.record(
        1_000,
        report("e1", vec![build("v1", 100, 0, 3), build("v2", 50, 0, 3)]),
    );
    assert_eq!(verdict(&analyzer, 1_100), Health::Healthy);
}

#[test]
fn old_reports_leave_the_window() {
    let analyzer = Analyzer::default();
    analyzer.record(
        1_000,
        report("e1", vec![build("v1", 100, 0, 3), build("v2", 40, 40, 3)]),
    );
    analyzer.record(
        30_000,
        report("e1", vec![build("v1", 100, 0, 3), build("v2", 40, 0, 3)]),
    );
    assert_eq!(verdict(&analyzer, 30_500), Health::Healthy);
}

#[test]
fn a_pin_holds_promotion_while_it_lasts() {
    let analyzer = Analyzer::default();
    let mut pinned = report("e1", vec![build("v1", 100, 0, 3), build("v2", 100, 0, 3)]);
    pinned.pinned = "v1,9000".into();
    analyzer.record(1_000, pinned);
    let Health::Inconclusive(why) = verdict(&analyzer, 2_000) else {
        panic!("a pinned edge holds promotion");
    };
    assert!(why.contains("pinned to v1"), "{why}");
    assert_eq!(analyzer.pins(ENV, 2_000)["e1"], ("v1".to_string(), 9_000));
    assert!(analyzer.pins("staging", 2_000).is_empty());
    // Past its end the pin no longer counts.
    assert!(analyzer.pins(ENV, 9_500).is_empty());
}

#[test]
fn a_pin_never_hides_a_breach() {
    let analyzer = Analyzer::default();
    let mut pinned = report("e1", vec![build("v1", 100, 0, 3), build("v2", 100, 100, 3)]);
    pinned.pinned = "v1,9000".into();
    analyzer.record(1_000, pinned);
    assert!(matches!(verdict(&analyzer, 2_000), Health::Breach(_)));
}

#[test]
fn p99_reads_the_histogram() {
    let mut totals = Totals {
        latency: vec![0; LATENCY_BOUNDS_MS.len() + 1],
        ..Totals::default()
    };
    totals.latency[0] = 98;
    totals.latency[5] = 2;
    assert_eq!(totals.p99_ms(), 50);
    totals.latency[5] = 1;
    assert_eq!(
        totals.p99_ms(),
        50,
        "99 of 99: the 99th is in the 50 ms bucket"
    );
    totals.latency[5] = 0;
    assert_eq!(totals.p99_ms(), 1);
}

#[test]
fn thresholds_from_the_wire_fill_defaults() {
    let d = Thresholds::default();
    assert_eq!(Thresholds::from_wire(None), d);
    let zero_meant = Thresholds::from_wire(Some(&v1::HealthThresholds {
        min_requests: 0,
        min_requests_set: true,
        ..Default::default()
    }));
    assert_eq!(zero_meant.min_requests, 0);
    assert_eq!(zero_meant.max_error_bp, d.max_error_bp);
    assert_eq!(Thresholds::from_wire(Some(&d.to_wire())), d);
}

#[test]
fn z_scores_measure_a_rate_against_another() {
    use super::z_score;
    assert!(z_score((35, 100), (20, 1_000)) > 3.0);
    assert!(z_score((3, 20), (50, 1_000)) < 3.0);
    assert_eq!(z_score((0, 0), (5, 10)), 0.0);
    assert_eq!(z_score((0, 10), (0, 10)), 0.0);
    assert!(z_score((10, 10), (0, 10)).is_infinite() || z_score((10, 10), (0, 10)) > 3.0);
}
