//! The edge's gRPC client of one origin build, and the classification of what goes
//! wrong into build faults (the route's fault: fall back) and client faults (the
//! request's fault: answer 4xx, never retry elsewhere).

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use edgekv_kv::{Mode, Namespace, Record};
use edgekv_proto::MAX_MESSAGE_BYTES;
use edgekv_proto::convert::{mode_to_wire, namespace_from_wire, record_from_wire};
use edgekv_proto::v1::{self, origin_client::OriginClient};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// Why an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The route failed — UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, a passed
    /// deadline, a transport error, an answer stamped by another environment, tenant
    /// or build. Never the client's fault.
    #[error("build fault: {0}")]
    Build(String),
    /// The namespace title is taken in the account (a client fault).
    #[error("{0}")]
    TitleTaken(String),
    /// The request was refused as invalid: INVALID_ARGUMENT, FAILED_PRECONDITION,
    /// NOT_FOUND, RESOURCE_EXHAUSTED.
    #[error("{message}")]
    Client {
        /// The gRPC code.
        code: Code,
        /// The origin's message.
        message: String,
    },
}

/// Sorts a status into build or client fault.
pub fn classify(status: &Status) -> UpstreamError {
    if title_taken(status) {
        return UpstreamError::TitleTaken(status.message().to_string());
    }
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::ResourceExhausted => UpstreamError::Client {
            code: status.code(),
            message: status.message().to_string(),
        },
        code => UpstreamError::Build(format!("{code:?}: {}", status.message())),
    }
}

/// Whether a status tells the edge to resync from a snapshot (its position is
/// older than the retained log, or beyond the origin's head).
pub fn needs_resync(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status
            .metadata()
            .get("edgekv-reason")
            .is_some_and(|v| v == "resync")
}

/// Whether a status says a namespace title is taken.
fn title_taken(status: &Status) -> bool {
    status
        .metadata()
        .get("edgekv-reason")
        .is_some_and(|v| v == "title-taken")
}

/// Adds the edge's credential to every call.
#[derive(Clone)]
pub struct Credential(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Credential {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// What the edge expects of the build it calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The edge's environment.
    pub environment: String,
    /// The edge's tenant.
    pub tenant: String,
}

/// A client of one build.
#[derive(Clone)]
pub struct Upstream {
    client: OriginClient<InterceptedService<Channel, Credential>>,
    url: String,
    expected: Expected,
    /// The build id, learned from its first stamped answer and then required.
    build_id: std::sync::Arc<OnceLock<String>>,
    timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.url).finish()
    }
}

/// A key's state as a build answered it, current as of `read_revision`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The record, if the key was ever written (and not purged).
    pub record: Option<Record>,
    /// The origin's revision when it read.
    pub read_revision: u64,
    /// The build that answered.
    pub build_id: String,
}

/// A write as the origin applied it.
#[derive(Debug, Clone)]
pub struct Written {
    /// The commit's revision.
    pub revision: u64,
    /// The records now held for the written keys, in order.
    pub records: Vec<Record>,
    /// The write had been applied before (same write id).
    pub duplicate: bool,
    /// Some keys lost to newer writes (replays only).
    pub superseded: bool,
}

impl Upstream {
    /// A client of the build at `url`; it connects on first use, so an edge starts
    /// while its origin is down.
    pub fn new(
        url: &str,
        credential: &str,
        expected: Expected,
        timeout: Duration,
    ) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("invalid origin URL {url:?}: {e}"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let value = format!("Bearer {credential}")
            .parse()
            .map_err(|_| "the credential is not valid header text".to_string())?;
        let client = OriginClient::with_interceptor(endpoint.connect_lazy(), Credential(value))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Upstream {
            client,
            url: url.to_string(),
            expected,
            build_id: std::sync::Arc::default(),
            timeout,
        })
    }

    /// A client of a build whose id is known (from a route table): answers stamped
    /// by any other build are refused.
    pub fn for_build(
        url: &str,
        credential: &str,
        expected: Expected,
        timeout: Duration,
        build_id: &str,
    ) -> Result<Self, String> {
        let upstream = Self::new(url, credential, expected, timeout)?;
        let _ = upstream.build_id.set(build_id.to_string());
        Ok(upstream)
    }

    /// The build's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The build id, once known.
    pub fn build_id(&self) -> Option<&str> {
        self.build_id.get().map(String::as_str)
    }

    /// Checks an answer's stamp: same environment and tenant as the edge, and the
    /// build it called.
    fn check(&self, stamp: Option<&v1::Stamp>) -> Result<String, UpstreamError> {
        let stamp = stamp.ok_or_else(|| UpstreamError::Build("answer carries no stamp".into()))?;
        if stamp.environment != self.expected.environment || stamp.tenant != self.expected.tenant {
            return Err(UpstreamError::Build(format!(
                "answer stamped by environment {:?}, tenant {:?}; this edge is {:?}, {:?}",
                stamp.environment, stamp.tenant, self.expected.environment, self.expected.tenant
            )));
        }
        let expected = self.build_id.get_or_init(|| stamp.build_id.clone());
        if *expected != stamp.build_id {
            return Err(UpstreamError::Build(format!(
                "answer stamped by build {:?}; called {expected:?}",
                stamp.build_id
            )));
        }
        Ok(stamp.build_id.clone())
    }

    async fn unary<T, F>(&self, call: F) -> Result<T, UpstreamError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(UpstreamError::Build(format!(
                "no answer within {:?} from {}",
                self.timeout, self.url
            ))),
        }
    }

    /// Asks the build who it is.
    pub async fn health(&self) -> Result<v1::HealthResponse, UpstreamError> {
        let mut client = self.client.clone();
        let answer = self.unary(client.health(v1::HealthRequest {})).await?;
        self.check(answer.stamp.as_ref())?;
        Ok(answer)
    }

    /// Reads a key.
    pub async fn get(&self, namespace: &str, key: &[u8]) -> Result<Answer, UpstreamError> {
        let mut client = self.client.clone();
        let request = v1::GetRequest {
            namespace: namespace.to_string(),
            key: Bytes::copy_from_slice(key),
        };
        let answer = self.unary(client.get(request)).await?;
        let build_id = self.check(answer.stamp.as_ref())?;
        Ok(Answer {
            record: answer.record.map(record_from_wire),
            read_revision: answer.read_revision,
            build_id,
        })
    }

    /// Writes and deletes keys of one namespace.
    pub async fn write(
        &self,
        header: v1::WriteHeader,
        mutations: Vec<v1::Mutation>,
    ) -> Result<Written, UpstreamError> {
        let mut client = self.client.clone();
        let answer = if mutations.len() == 1 {
            let Some(m) = mutations.into_iter().next() else {
                return Err(UpstreamError::Build("empty write".into()));
            };
            match m.put {
                Some(value) => {
                    let request = v1::PutRequest {
                        header: Some(header),
                        key: m.key,
                        value: Some(value),
                    };
                    self.unary(client.put(request)).await?
                }
                None => {
                    let request = v1::DeleteRequest {
                        header: Some(header),
                        key: m.key,
                    };
                    self.unary(client.delete(request)).await?
                }
            }
        } else {
            let request = v1::BulkWriteRequest {
                header: Some(header),
                mutations,
            };
            self.unary(client.bulk_write(request)).await?
        };
        self.check(answer.stamp.as_ref())?;
        Ok(Written {
            revision: answer.revision,
            records: answer.records.into_iter().map(record_from_wire).collect(),
            duplicate: answer.duplicate,
            superseded: answer.superseded,
        })
    }

    /// Lists live keys.
    pub async fn list(
        &self,
        request: v1::ListRequest,
    ) -> Result<(Vec<(Bytes, Record)>, bool), UpstreamError> {
        let mut client = self.client.clone();
        let answer = self.unary(client.list(request)).await?;
        self.check(answer.stamp.as_ref())?;
        let entries = answer
            .entries
            .into_iter()
            .map(|e| (e.key, e.record.map(record_from_wire).unwrap_or_default()))
            .collect();
        Ok((entries, answer.more))
    }

    /// Creates a namespace.
    pub async fn create_namespace(
        &self,
        account: &str,
        title: &str,
        mode: Mode,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let mut client = self.client.clone();
        let request = v1::CreateNamespaceRequest {
            account: account.to_string(),
            title: title.to_string(),
            mode: mode_to_wire(mode),
        };
        let answer = self.unary(client.create_namespace(request)).await?;
        self.namespace_answer(answer)
    }

    /// Renames a namespace.
    pub async fn rename_namespace(
        &self,
        account: &str,
        id: &str,
        title: &str,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let mut client = self.client.clone();
        let request = v1::RenameNamespaceRequest {
            account: account.to_string(),
            id: id.to_string(),
            title: title.to_string(),
        };
        let answer = self.unary(client.rename_namespace(request)).await?;
        self.namespace_answer(answer)
    }

    /// Deletes a namespace.
    pub async fn delete_namespace(
        &self,
        account: &str,
        id: &str,
    ) -> Result<(Namespace, u64), UpstreamError> {
        let mut client = self.client.clone();
        let request = v1::DeleteNamespaceRequest {
            account: account.to_string(),
            id: id.to_string(),
        };
        let answer = self.unary(client.delete_namespace(request)).await?;
        self.namespace_answer(answer)
    }

    fn namespace_answer(
        &self,
        answer: v1::NamespaceResponse,
    ) -> Result<(Namespace, u64), UpstreamError> {
        self.check(answer.stamp.as_ref())?;
        let namespace = answer
            .namespace
            .ok_or_else(|| UpstreamError::Build("namespace answer without a namespace".into()))?;
        Ok((namespace_from_wire(namespace), answer.revision))
    }

    /// Every namespace, current as of the returned revision.
    pub async fn namespaces(&self) -> Result<(Vec<Namespace>, u64), UpstreamError> {
        let mut client = self.client.clone();
        let answer = self
            .unary(client.list_namespaces(v1::ListNamespacesRequest {}))
            .await?;
        self.check(answer.stamp.as_ref())?;
        let list = answer
            .namespaces
            .into_iter()
            .map(namespace_from_wire)
            .collect();
        Ok((list, answer.read_revision))
    }

    /// Opens the change feed from a revision. An OUT_OF_RANGE that asks for a resync
    /// is returned as [`WatchError::Trimmed`].
    pub async fn watch(
        &self,
        from_revision: u64,
    ) -> Result<tonic::Streaming<v1::WatchEvent>, WatchError> {
        let mut client = self.client.clone();
        match tokio::time::timeout(
            self.timeout,
            client.watch(v1::WatchRequest { from_revision }),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if needs_resync(&status) => {
                Err(WatchError::Trimmed(status.message().to_string()))
            }
            Ok(Err(status)) => Err(WatchError::Failed(classify(&status))),
            Err(_) => Err(WatchError::Failed(UpstreamError::Build(
                "watch did not open in time".into(),
            ))),
        }
    }

    /// Opens a snapshot of every namespace and of the keys of `namespaces`.
    pub async fn snapshot(
        &self,
        namespaces: Vec<String>,
    ) -> Result<tonic::Streaming<v1::SnapshotChunk>, UpstreamError> {
        let mut client = self.client.clone();
        match tokio::time::timeout(
            self.timeout,
            client.snapshot(v1::SnapshotRequest { namespaces }),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(UpstreamError::Build("snapshot did not open in time".into())),
        }
    }

    /// Checks the stamp of a streamed event.
    pub fn check_stamp(&self, stamp: Option<&v1::Stamp>) -> Result<(), UpstreamError> {
        self.check(stamp).map(drop)
    }
}

/// Why a watch could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// The asked revision is older than the retained log: resync from a snapshot.
    Trimmed(String),
    /// Any other failure.
    Failed(UpstreamError),
}
