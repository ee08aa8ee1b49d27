use edgekv_routing::validate;

use super::*;
use crate::model::Step;

fn build(id: &str) -> Build {
    Build {
        build_id: id.into(),
        version: id.into(),
        environment: "production".into(),
        tenant: "production".into(),
        artifact_digest: format!("sha256:{id}"),
        endpoints: vec![format!("http://{id}:7001")],
        data_set: String::new(),
    }
}

fn deployment(steps: &[u32]) -> Deployment {
    Deployment {
        id: "d".into(),
        environment: "production".into(),
        tenant: "production".into(),
        build_id: "v2".into(),
        known_good: Some("v1".into()),
        steps: steps
            .iter()
            .map(|w| Step {
                weight_bp: *w,
                bake_ms: 1000,
            })
            .collect(),
        phase: Phase::Running {
            step: 0,
            since_ms: 0,
        },
        created_ms: 0,
        history: vec![],
        thresholds: Default::default(),
    }
}

#[test]
fn a_healthy_rollout_climbs_each_step_after_its_bake() {
    let mut d = deployment(&[1000, 5000, 10_000]);
    assert_eq!(advance(&mut d, 999, &Health::Healthy), None, "still baking");
    assert_eq!(
        advance(&mut d, 1000, &Health::Healthy),
        Some(Transition::Stepped(1))
    );
    assert_eq!(share(&d), Some(5000));
    assert_eq!(advance(&mut d, 1500, &Health::Healthy), None);
    assert_eq!(
        advance(&mut d, 2000, &Health::Healthy),
        Some(Transition::Stepped(2))
    );
    assert_eq!(
        advance(&mut d, 3000, &Health::Healthy),
        Some(Transition::Completed)
    );
    assert_eq!(share(&d), Some(10_000));
    assert_eq!(d.history.len(), 3);
}

#[test]
fn too_few_requests_block_promotion_and_a_breach_rolls_back() {
    let mut d = deployment(&[1000, 10_000]);
    let thin = Health::Inconclusive("12 requests in the window; 100 needed".into());
    assert_eq!(advance(&mut d, 60_000, &thin), None);
    assert_eq!(
        d.phase,
        Phase::Running {
            step: 0,
            since_ms: 0
        }
    );
    let breach = Health::Breach("v2: 100% UNAUTHENTICATED over 400 requests".into());
    assert!(matches!(
        advance(&mut d, 60_001, &breach),
        Some(Transition::RolledBack(_))
    ));
    assert_eq!(share(&d), None);
    assert_eq!(
        advance(&mut d, 99_999, &Health::Healthy),
        None,
        "a rolled back deployment stays so"
    );
}

#[test]
fn tables_keep_known_good_and_pass_edge_validation() {
    let (v1, v2) = (build("v1"), build("v2"));
    let mut d = deployment(&[1000, 10_000]);
    let t = route_table(&v1, Some((&v2, &d)), 7, 0);
    assert_eq!(
        t.entries.iter().map(|e| e.weight_bp).collect::<Vec<_>>(),
        [9000, 1000]
    );
    assert!(validate(&t, "production", "production", None).is_ok());
    d.phase = Phase::Completed;
    let t = route_table(&v1, Some((&v2, &d)), 8, 0);
    assert_eq!(t.known_good_build, "v1");
    assert_eq!(
        t.entries.iter().map(|e| e.weight_bp).collect::<Vec<_>>(),
        [0, 10_000]
    );
    assert!(validate(&t, "production", "production", None).is_ok());
    d.phase = Phase::RolledBack {
        reason: "breach".into(),
    };
    let t = route_table(&v1, Some((&v2, &d)), 9, 0);
    assert_eq!(t.entries.len(), 1);
    assert_eq!(t.entries[0].weight_bp, 10_000);
    // A bootstrap deploys the known-good build itself: one entry.
    let t = route_table(&v2, Some((&v2, &d)), 1, 0);
    assert_eq!(t.entries.len(), 1);
}

#[test]
fn versions_never_go_backwards() {
    assert_eq!(next_version(10, []), Some(11));
    assert_eq!(next_version(10, [3, 12, 7]), Some(13));
    // Control lost its store: edges' reports carry it past what they hold.
    assert_eq!(next_version(0, [41, 40]), Some(42));
    // Checked: the end of the range is an error, never a wrap to 0.
    assert_eq!(next_version(1, [u64::MAX]), None);
}
