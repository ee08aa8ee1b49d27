//! Tokens over real gRPC: every token is for one environment, and `StreamTokens`
//! sends an edge only its environment's tokens, in a table that names the
//! environment and tenant, once the edge has said (with that environment's
//! credential) which environment it is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use edgekv_control::{ControlConfig, RunningControl};
use edgekv_proto::v1::{self, control_client::ControlClient};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn with_auth<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn hello(environment: &str) -> v1::TokenAck {
    v1::TokenAck {
        node_id: "edge-a".into(),
        environment: environment.into(),
        tenant: environment.into(),
        ..Default::default()
    }
}

/// An open token stream and the sender of its ACKs (kept open, as an edge's is).
type Stream = (
    tonic::Streaming<v1::TokenTable>,
    tokio::sync::mpsc::Sender<v1::TokenAck>,
);

/// Opens a token stream whose first message is `first`.
async fn stream(
    client: &mut ControlClient<Channel>,
    credential: &str,
    first: v1::TokenAck,
) -> Result<Stream, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    let request = with_auth(tokio_stream::wrappers::ReceiverStream::new(rx), credential);
    let tables = client.stream_tokens(request).await?.into_inner();
    Ok((tables, tx))
}

async fn next(tables: &mut tonic::Streaming<v1::TokenTable>) -> v1::TokenTable {
    tokio::time::timeout(Duration::from_secs(5), tables.next())
        .await
        .expect("a table within 5 s")
        .expect("the stream is open")
        .expect("a table, not an error")
}

fn names(grants: &[v1::TokenGrant]) -> Vec<&str> {
    grants.iter().map(|g| g.name.as_str()).collect()
}

#[tokio::test]
async fn each_environment_gets_only_its_own_tokens() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin"), "admin\n").unwrap();
    std::fs::write(dir.path().join("prod"), "prod-cred\n").unwrap();
    std::fs::write(dir.path().join("stg"), "stg-cred\n").unwrap();
    // A state file written before tokens had an environment: its token stays
    // valid in every environment.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state").join("control.json"),
        format!(
            r#"{{"builds": {{}}, "deployments": [], "environments": {{}},
                "tokens": {{"old": {{"hash": "{}", "account": "acct", "namespaces": [],
                                     "read_only": false, "admin": false}}}},
                "token_version": 1}}"#,
            "00".repeat(32)
        ),
    )
    .unwrap();
    let running = RunningControl::start(ControlConfig {
        grpc: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("state"),
        admin_token_file: dir.path().join("admin"),
        credentials: vec![
            ("production".into(), dir.path().join("prod")),
            ("staging".into(), dir.path().join("stg")),
        ],
        tick_ms: 20,
        break_glass_key: None,
        tls: None,
        tls_ca: None,
        state: None,
        http: None,
        http_any_port_if_taken: false,
    })
    .await
    .unwrap();
    let mut client = ControlClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap();
    let create = |name: &str, environment: &str| v1::CreateTokenRequest {
        name: name.into(),
        account: "acct".into(),
        environment: environment.into(),
        ..Default::default()
    };

    // A token names its environment, one control has a credential for.
    let refused = client
        .create_token(with_auth(create("none", ""), "admin"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("environment"), "{refused}");
    let refused = client
        .create_token(with_auth(create("typo", "prodution"), "admin"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("prodution"), "{refused}");

    let stg = client
        .create_token(with_auth(create("stg", "staging"), "admin"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stg.grant.unwrap().environment, "staging");
    let prod = client
        .create_token(with_auth(create("prod", "production"), "admin"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prod.version, 3);

    // Listings: every token, or those an environment's edges accept.
    let list = |environment: &str| v1::ListTokensRequest {
        environment: environment.into(),
    };
    let all = client
        .list_tokens(with_auth(list(""), "admin"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&all.grants), ["old", "prod", "stg"]);
    let production = client
        .list_tokens(with_auth(list("production"), "admin"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&production.grants), ["old", "prod"]);

    // A stream that does not say which environment it is gets nothing.
    let Err(refused) = stream(&mut client, "prod-cred", hello("")).await else {
        panic!("a stream that names no environment was opened");
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    // Nor does one that claims another environment than its credential's.
    let Err(refused) = stream(&mut client, "prod-cred", hello("staging")).await else {
        panic!("a production credential opened a staging stream");
    };
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");

    // A production edge: production's tokens only, in a table that says so.
    let (mut tables, _production_acks) = stream(&mut client, "prod-cred", hello("production"))
        .await
        .unwrap();
    let table = next(&mut tables).await;
    assert_eq!(
        (
            table.version,
            table.environment.as_str(),
            table.tenant.as_str()
        ),
        (3, "production", "production")
    );
    assert_eq!(names(&table.grants), ["old", "prod"]);
    assert_eq!(table.grants[1].environment, "production");
    assert_eq!(table.grants[1].hash, prod.grant.unwrap().hash);

    // A staging edge: staging's.
    let (mut staging, _staging_acks) = stream(&mut client, "stg-cred", hello("staging"))
        .await
        .unwrap();
    let table = next(&mut staging).await;
    assert_eq!(table.environment, "staging");
    assert_eq!(names(&table.grants), ["old", "stg"]);

    // A new staging token moves the one version; production's table still holds
    // no staging token. A revocation reaches the open stream.
    client
        .create_token(with_auth(create("stg-2", "staging"), "admin"))
        .await
        .unwrap();
    let table = next(&mut tables).await;
    assert_eq!(table.version, 4);
    assert_eq!(names(&table.grants), ["old", "prod"]);
    client
        .revoke_token(with_auth(
            v1::RevokeTokenRequest {
                name: "prod".into(),
            },
            "admin",
        ))
        .await
        .unwrap();
    let table = next(&mut tables).await;
    assert_eq!(table.version, 5);
    assert_eq!(names(&table.grants), ["old"]);
    assert_eq!(
        names(&next(&mut staging).await.grants),
        ["old", "stg", "stg-2"]
    );

    drop((tables, staging));
    running.shutdown().await;
}
