//! One build's gRPC `Origin` service over the shared [`OriginCore`].
//!
//! Every call is admitted the same way: the build's injected fault (if any) first,
//! then the caller's credential, which must be one of the build's environment. Every
//! answer is stamped with the build's id, environment, tenant and data set — error
//! answers too, as status metadata ([`edgekv_proto::stamp`]), so the edge can tell
//! a client fault this build reports from an error of anything else.

use std::sync::Arc;
use std::time::Duration;

use edgekv_proto::convert::{namespace_from_wire, namespace_to_wire, record_to_wire};
use edgekv_proto::v1::{self, origin_server};
use edgekv_store::{ListQuery, LogEntry, NamespaceOp, SnapshotItem};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::core::{Mutation, OriginCore, WriteOutcome, WriteRequest};
use crate::credentials::Credentials;
use crate::fault::ArmedFault;
use crate::{Error, Result};

/// Log entries read per step of a watch stream.
const WATCH_BATCH: usize = 256;
/// Keys per snapshot chunk, at most.
const SNAPSHOT_CHUNK: usize = 512;
/// Bytes of values per snapshot chunk, at most: well under the gRPC message limit.
const SNAPSHOT_CHUNK_BYTES: usize = edgekv_proto::MAX_MESSAGE_BYTES / 4;

/// One build: a stamped, authenticated front of the core.
#[derive(Clone)]
pub struct Build {
    core: Arc<OriginCore>,
    stamp: v1::Stamp,
    version: String,
    credentials: Arc<Credentials>,
    fault: Option<ArmedFault>,
    progress_interval: Duration,
}

impl Build {
    /// A build of `environment`/`tenant` with id `build_id`.
    pub fn new(
        core: Arc<OriginCore>,
        stamp: v1::Stamp,
        version: String,
        credentials: Arc<Credentials>,
        fault: Option<ArmedFault>,
        progress_interval: Duration,
    ) -> Self {
        Build {
            core,
            stamp,
            version,
            credentials,
            fault,
            progress_interval,
        }
    }

    /// Applies the injected fault, then checks the caller's credential.
    async fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.check_caller(request).await.map_err(|s| self.fail(s))
    }

    async fn check_caller<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if let Some(fault) = &self.fault {
            fault.apply(&self.stamp.build_id).await?;
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(credential) if self.credentials.accepts(credential) => Ok(()),
            _ => Err(Status::unauthenticated(format!(
                "build {} of environment {} does not accept this credential",
                self.stamp.build_id, self.stamp.environment
            ))),
        }
    }

    /// Holds a ready answer back when the build injects latency.
    async fn answer<T>(&self, answer: T) -> Result<Response<T>, Status> {
        if let Some(fault) = &self.fault {
            fault.delay().await;
        }
        Ok(Response::new(answer))
    }

    fn stamp(&self) -> Option<v1::Stamp> {
        Some(self.stamp.clone())
    }

    /// Stamps an error answer with who gave it.
    fn fail(&self, status: impl Into<Status>) -> Status {
        stamped(&self.stamp, status.into())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&OriginCore) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || work(&core))
            .await
            .map_err(|e| self.fail(Status::internal(format!("origin task failed: {e}"))))?
            .map_err(|e| self.fail(e))
    }

    async fn write(
        &self,
        header: Option<v1::WriteHeader>,
        mutations: Vec<Mutation>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let written = self.write_one(header, mutations).await?;
        self.answer(written).await
    }

    /// Applies one write; its answer, or its error stamped.
    async fn write_one(
        &self,
        header: Option<v1::WriteHeader>,
        mutations: Vec<Mutation>,
    ) -> Result<v1::WriteResponse, Status> {
        let header =
            header.ok_or_else(|| self.fail(Status::invalid_argument("write has no header")))?;
        let request = WriteRequest {
            namespace: header.namespace,
            mutations,
            write_id: header.write_id.map(|id| {
                if id.incarnation.is_empty() {
                    format!("{}:{}", id.node_id, id.sequence)
                } else {
                    format!("{}:{}:{}", id.node_id, id.incarnation, id.sequence)
                }
            }),
            hlc: header.hlc,
            replay: header.replay,
        };
        let outcome: WriteOutcome =
            (self.core.write_async(request).await).map_err(|e| self.fail(e))?;
        Ok(v1::WriteResponse {
            stamp: self.stamp(),
            revision: outcome.revision,
            duplicate: outcome.duplicate,
            superseded: outcome.superseded,
            records: outcome.records.iter().map(record_to_wire).collect(),
        })
    }

    /// A BulkWrite's mutations, refused past the items one write may hold.
    fn bulk_mutations(mutations: Vec<v1::Mutation>) -> Result<Vec<Mutation>> {
        if mutations.len() > edgekv_kv::limits::MAX_BULK_ITEMS {
            return Err(Error::Kv(edgekv_kv::Error::TooManyItems {
                len: mutations.len(),
                max: edgekv_kv::limits::MAX_BULK_ITEMS,
            }));
        }
        Ok(mutations
            .into_iter()
            .map(|m| mutation(m.key, m.put))
            .collect())
    }
}

pub use edgekv_proto::{ANSWER_TOO_LARGE, MAX_WRITES_PER_CALL};

/// The most bytes of results a WriteMany answer carries; past it, a write's
/// result says [`ANSWER_TOO_LARGE`] (half the largest message: the rest of the
/// answer and its framing fit beside it).
pub const ANSWER_BUDGET: usize = edgekv_proto::MAX_MESSAGE_BYTES / 2;

/// An error answer with the stamp of the build that gives it.
pub fn stamped(stamp: &v1::Stamp, mut status: Status) -> Status {
    edgekv_proto::stamp::write(stamp, status.metadata_mut());
    status
}

fn mutation(key: bytes::Bytes, value: Option<v1::Value>) -> Mutation {
    Mutation {
        key,
        put: value.map(|v| (v.value, v.metadata, v.expiration)),
    }
}

fn namespace_response(
    stamp: Option<v1::Stamp>,
    (ns, revision): (edgekv_kv::Namespace, u64),
) -> Response<v1::NamespaceResponse> {
    Response::new(v1::NamespaceResponse {
        stamp,
        namespace: Some(namespace_to_wire(&ns)),
        revision,
    })
}

/// The watch event of one log entry.
pub fn event(stamp: &v1::Stamp, entry: LogEntry) -> v1::WatchEvent {
    v1::WatchEvent {
        stamp: Some(stamp.clone()),
        revision: entry.revision,
        keys: entry
            .writes
            .iter()
            .map(|w| v1::KeyChange {
                namespace: w.namespace.clone(),
                key: w.key.clone(),
                record: Some(record_to_wire(&w.record)),
            })
            .collect(),
        namespaces: entry
            .namespaces
            .iter()
            .map(|op| match op {
                NamespaceOp::Put(ns) => v1::NamespaceChange {
                    namespace: Some(namespace_to_wire(ns)),
                    deleted: false,
                },
                NamespaceOp::Delete(id) => v1::NamespaceChange {
                    namespace: Some(v1::Namespace {
                        id: id.clone(),
                        ..v1::Namespace::default()
                    }),
                    deleted: true,
                },
            })
            .collect(),
        progress: false,
    }
}

#[tonic::async_trait]
impl origin_server::Origin for Build {
    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        self.admit(&request).await?;
        let v1::GetRequest { namespace, key } = request.into_inner();
        let (record, read_revision) = self
            .blocking(move |core| core.get(&namespace, &key))
            .await?;
        self.answer(v1::GetResponse {
            stamp: self.stamp(),
            record: record.as_ref().map(record_to_wire),
            read_revision,
        })
        .await
    }

    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        let value = r
            .value
            .ok_or_else(|| self.fail(Status::invalid_argument("put has no value")))?;
        self.write(r.header, vec![mutation(r.key, Some(value))])
            .await
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        self.write(r.header, vec![mutation(r.key, None)]).await
    }

    async fn bulk_write(
        &self,
        request: Request<v1::BulkWriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        let mutations = Self::bulk_mutations(r.mutations).map_err(|e| self.fail(e))?;
        self.write(r.header, mutations).await
    }

    async fn write_many(
        &self,
        request: Request<v1::WriteManyRequest>,
    ) -> Result<Response<v1::WriteManyResponse>, Status> {
        self.admit(&request).await?;
        let writes = request.into_inner().writes;
        if writes.len() > MAX_WRITES_PER_CALL {
            return Err(self.fail(Status::resource_exhausted(format!(
                "{} writes in one WriteMany; at most {MAX_WRITES_PER_CALL}",
                writes.len()
            ))));
        }
        // All at once: they join the writer's queue together, and commit in one
        // group where they fit.
        let mut results = futures_util::future::join_all(writes.into_iter().map(|w| async move {
            let written = match Self::bulk_mutations(w.mutations) {
                Ok(mutations) => self.write_one(w.header, mutations).await,
                Err(err) => Err(self.fail(err)),
            };
            let result = match written {
                Ok(written) => v1::write_result::Result::Written(written),
                Err(status) => v1::write_result::Result::Error(v1::WriteError {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                    reason: (status.metadata().get(crate::error::REASON_KEY))
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                }),
            };
            v1::WriteResult {
                result: Some(result),
            }
        }))
        .await;
        // An answer holds the records each key now holds, which may be far larger
        // than the write (a delete superseded by a 25 MiB value): past the budget,
        // a result says so, and the edge asks for that write alone (its id makes
        // the second asking a duplicate).
        let mut bytes = 0;
        for result in &mut results {
            bytes += result.encoded_len();
            if bytes > ANSWER_BUDGET
                && let Some(v1::write_result::Result::Written(_)) = &result.result
            {
                result.result = Some(v1::write_result::Result::Error(v1::WriteError {
                    code: Code::Unavailable as i32,
                    message: format!("the answer exceeds {ANSWER_BUDGET} bytes: ask alone"),
                    reason: ANSWER_TOO_LARGE.into(),
                }));
            }
        }
        self.answer(v1::WriteManyResponse {
            stamp: self.stamp(),
            results,
        })
        .await
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        let limit = (r.limit as usize).clamp(1, edgekv_kv::limits::MAX_LIST_LIMIT);
        let query = ListQuery {
            prefix: r.prefix.to_vec(),
            start_after: r.start_after.map(|s| s.to_vec()),
            limit,
        };
        let namespace = r.namespace;
        let (page, read_revision) = self
            .blocking(move |core| core.list(&namespace, &query))
            .await?;
        self.answer(v1::ListResponse {
            stamp: self.stamp(),
            entries: page
                .entries
                .iter()
                .map(|(key, record)| v1::ListEntry {
                    key: key.clone(),
                    // A listing shows names, expirations and metadata; values stay
                    // home, so a page of large values fits in one message.
                    record: Some(v1::Record {
                        value: bytes::Bytes::new(),
                        ..record_to_wire(record)
                    }),
                })
                .collect(),
            more: page.more,
            read_revision,
        })
        .await
    }

    async fn create_namespace(
        &self,
        request: Request<v1::CreateNamespaceRequest>,
    ) -> Result<Response<v1::NamespaceResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        let mode = namespace_from_wire(v1::Namespace {
            mode: r.mode,
            ..Default::default()
        })
        .mode;
        let created = self
            .blocking(move |core| core.create_namespace(&r.account, &r.title, mode))
            .await?;
        Ok(namespace_response(self.stamp(), created))
    }

    async fn rename_namespace(
        &self,
        request: Request<v1::RenameNamespaceRequest>,
    ) -> Result<Response<v1::NamespaceResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        let renamed = self
            .blocking(move |core| core.rename_namespace(&r.account, &r.id, &r.title))
            .await?;
        Ok(namespace_response(self.stamp(), renamed))
    }

    async fn delete_namespace(
        &self,
        request: Request<v1::DeleteNamespaceRequest>,
    ) -> Result<Response<v1::NamespaceResponse>, Status> {
        self.admit(&request).await?;
        let r = request.into_inner();
        let deleted = self
            .blocking(move |core| core.delete_namespace(&r.account, &r.id))
            .await?;
        Ok(namespace_response(self.stamp(), deleted))
    }

    async fn list_namespaces(
        &self,
        request: Request<v1::ListNamespacesRequest>,
    ) -> Result<Response<v1::ListNamespacesResponse>, Status> {
        self.admit(&request).await?;
        let (namespaces, read_revision) = self.blocking(|core| core.namespaces()).await?;
        Ok(Response::new(v1::ListNamespacesResponse {
            stamp: self.stamp(),
            namespaces: namespaces.iter().map(namespace_to_wire).collect(),
            read_revision,
        }))
    }

    type WatchStream = ReceiverStream<Result<v1::WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.admit(&request).await?;
        let from = request.into_inner().from_revision.max(1);
        // Refuse a trimmed start at once, as a status rather than a stream error.
        self.blocking(move |core| core.log(from, 1)).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow(
            self.core.clone(),
            self.stamp.clone(),
            from,
            self.progress_interval,
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SnapshotStream = ReceiverStream<Result<v1::SnapshotChunk, Status>>;

    async fn snapshot(
        &self,
        request: Request<v1::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.admit(&request).await?;
        let namespaces = request.into_inner().namespaces;
        let (tx, rx) = mpsc::channel(4);
        let core = self.core.clone();
        let stamp = self.stamp.clone();
        tokio::task::spawn_blocking(move || {
            let mut chunk = v1::SnapshotChunk {
                stamp: Some(stamp.clone()),
                ..Default::default()
            };
            let mut bytes = 0;
            // A chunk is sent before a record would take it past the byte budget
            // (not after): a 7.9 MiB value then a 25 MiB one are two messages, each
            // under the gRPC limit. One record alone (at most 25 MiB of value and
            // 1 KiB of metadata) always fits.
            let flush = |chunk: &mut v1::SnapshotChunk| {
                let full = std::mem::replace(
                    chunk,
                    v1::SnapshotChunk {
                        stamp: Some(stamp.clone()),
                        ..Default::default()
                    },
                );
                tx.blocking_send(Ok(full))
                    .map_err(|_| edgekv_store::Error::Engine("snapshot reader went away".into()))
            };
            let result = core.snapshot(&namespaces, &mut |item| {
                match item {
                    SnapshotItem::Namespace(ns) => chunk.namespaces.push(namespace_to_wire(&ns)),
                    SnapshotItem::Key(w) => {
                        let weight = w.key.len() + w.record.weight();
                        if !chunk.keys.is_empty()
                            && (chunk.keys.len() >= SNAPSHOT_CHUNK
                                || bytes + weight > SNAPSHOT_CHUNK_BYTES)
                        {
                            flush(&mut chunk)?;
                            bytes = 0;
                        }
                        bytes += weight;
                        chunk.keys.push(v1::KeyChange {
                            namespace: w.namespace,
                            key: w.key,
                            record: Some(record_to_wire(&w.record)),
                        });
                    }
                }
                Ok(())
            });
            let last = match result {
                Ok(revision) => Ok(v1::SnapshotChunk {
                    revision,
                    last: true,
                    ..chunk
                }),
                Err(err) => Err(stamped(&stamp, Status::from(err))),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn health(
        &self,
        request: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        self.admit(&request).await?;
        Ok(Response::new(v1::HealthResponse {
            stamp: self.stamp(),
            version: self.version.clone(),
            revision: self.core.revision(),
        }))
    }
}

/// Streams the log from `next` on, with progress events while caught up, until
/// the receiver goes away or the log is trimmed past the stream.
async fn follow(
    core: Arc<OriginCore>,
    stamp: v1::Stamp,
    mut next: u64,
    progress_interval: Duration,
    tx: mpsc::Sender<Result<v1::WatchEvent, Status>>,
) {
    let mut committed = core.subscribe();
    let mut closing = core.closing();
    loop {
        if *closing.borrow() {
            return;
        }
        let reader = core.clone();
        let read = tokio::task::spawn_blocking(move || reader.log(next, WATCH_BATCH)).await;
        let entries = match read {
            Ok(Ok(entries)) => entries,
            Ok(Err(err)) => {
                let _ = tx.send(Err(stamped(&stamp, Status::from(err)))).await;
                return;
            }
            Err(err) => {
                let status = Status::internal(format!("watch task failed: {err}"));
                let _ = tx.send(Err(stamped(&stamp, status))).await;
                return;
            }
        };
        if !entries.is_empty() {
            for entry in entries {
                next = entry.revision + 1;
                if tx.send(Ok(event(&stamp, entry))).await.is_err() {
                    return;
                }
            }
            continue;
        }
        // Caught up: everything up to next - 1 was sent.
        let progress = v1::WatchEvent {
            stamp: Some(stamp.clone()),
            revision: next - 1,
            progress: true,
            ..Default::default()
        };
        if tx.send(Ok(progress)).await.is_err() {
            return;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(progress_interval) => {}
            _ = tx.closed() => return,
            _ = closing.changed() => return,
        }
    }
}
