//! `Health` probes of builds, made with the target environment's credential — the
//! check that would have refused the 2023 deploy: a staging build does not accept a
//! production credential.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use edgekv_proto::v1::{self, origin_client::OriginClient};

/// Probes one endpoint of a build for an environment.
pub trait Probe: Send + Sync {
    /// Calls `Health` on `endpoint` with `environment`'s credential; checks that the
    /// answer is stamped with `build_id`, `environment` and `tenant`. Returns the
    /// data set the answer is stamped with.
    fn health<'a>(
        &'a self,
        endpoint: &'a str,
        build_id: &'a str,
        environment: &'a str,
        tenant: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
}

/// Probes over gRPC, with one credential per environment (`--probe-credential ENV=FILE`).
#[derive(Debug, Clone, Default)]
pub struct GrpcProbe {
    credentials: BTreeMap<String, String>,
    timeout: Duration,
    /// The PEM CA trusted for `https://` endpoints (none: they are refused).
    tls_ca: Option<Vec<u8>>,
}

impl GrpcProbe {
    /// A probe with these environment credentials.
    pub fn new(credentials: BTreeMap<String, String>, timeout: Duration) -> Self {
        GrpcProbe {
            credentials,
            timeout,
            tls_ca: None,
        }
    }

    /// Trusts `ca` (PEM) for `https://` endpoints.
    pub fn with_tls_ca(mut self, ca: Option<Vec<u8>>) -> Self {
        self.tls_ca = ca;
        self
    }
}

impl Probe for GrpcProbe {
    fn health<'a>(
        &'a self,
        endpoint: &'a str,
        build_id: &'a str,
        environment: &'a str,
        tenant: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let credential = self.credentials.get(environment).ok_or_else(|| {
                format!("control has no probe credential for environment {environment:?}")
            })?;
            let call = async {
                let mut target = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .map_err(|e| format!("invalid endpoint: {e}"))?;
                if let Some(tls) = edgekv_proto::tls::client_for(endpoint, self.tls_ca.as_deref())?
                {
                    target = target.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
                }
                let mut client = OriginClient::new(
                    target
                        .connect()
                        .await
                        .map_err(|e| format!("cannot connect: {e}"))?,
                );
                let mut request = tonic::Request::new(v1::HealthRequest {});
                let value = format!("Bearer {credential}")
                    .parse()
                    .map_err(|_| "the probe credential is not valid header text".to_string())?;
                request.metadata_mut().insert("authorization", value);
                let answer = client
                    .health(request)
                    .await
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    .into_inner();
                let stamp = answer.stamp.ok_or("the answer carries no stamp")?;
                if stamp.build_id != build_id
                    || stamp.environment != environment
                    || stamp.tenant != tenant
                {
                    return Err(format!(
                        "answer stamped {}/{}/{}, expected {build_id}/{environment}/{tenant}",
                        stamp.build_id, stamp.environment, stamp.tenant
                    ));
                }
                if stamp.data_set.is_empty() {
                    return Err("the answer names no data set".to_string());
                }
                Ok(stamp.data_set)
            };
            tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
        })
    }
}
