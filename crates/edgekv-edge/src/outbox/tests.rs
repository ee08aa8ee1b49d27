#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use edgekv_kv::{Namespace, Record};
use edgekv_proto::v1;
use edgekv_store::{
    Commit, ListPage, ListQuery, LogRead, MemoryStore, SnapshotItem, Store, Write, WrittenId,
};
use prost::Message as _;

use super::{LOAD_PAGE, OUTBOX, Outbox};

const NS: &str = "0123456789abcdef0123456789abcdef";
/// Bounds no test reaches, where a test is not about them.
const ANY_WRITES: u64 = 1_000_000;
const ANY_BYTES: u64 = 1 << 40;

fn put(key: &str, value: &[u8]) -> v1::Mutation {
    v1::Mutation {
        key: Bytes::copy_from_slice(key.as_bytes()),
        put: Some(v1::Value {
            value: Bytes::copy_from_slice(value),
            metadata: None,
            expiration: None,
        }),
    }
}

fn delete(key: &str) -> v1::Mutation {
    v1::Mutation {
        key: Bytes::copy_from_slice(key.as_bytes()),
        put: None,
    }
}

fn entry(mutations: Vec<v1::Mutation>, hlc: u64, queued_ms: u64) -> v1::OutboxEntry {
    v1::OutboxEntry {
        header: Some(v1::WriteHeader {
            namespace: NS.into(),
            write_id: None,
            hlc,
            replay: false,
        }),
        mutations,
        queued_ms,
        reason: String::new(),
    }
}

fn value_of(outbox: &Outbox, store: &dyn Store, key: &str) -> Option<Record> {
    outbox.overlay(store, NS, key.as_bytes()).unwrap()
}

/// A memory store that counts and slows the outbox's batches, can fail them, and
/// notes the largest page asked of a queue.
#[derive(Default)]
struct Probe {
    inner: MemoryStore,
    /// Batches written through `queue_push_many`.
    batches: AtomicUsize,
    /// Each batch waits this long first (ms), so writes pile up behind it.
    slow_ms: AtomicU64,
    /// Each queue write fails, as on a full disk.
    failing: AtomicBool,
    /// The largest page asked of `queue_scan`.
    largest_page: AtomicUsize,
}

impl Store for Probe {
    fn namespace(&self, id: &str) -> edgekv_store::Result<Option<Namespace>> {
        self.inner.namespace(id)
    }
    fn namespaces(&self) -> edgekv_store::Result<Vec<Namespace>> {
        self.inner.namespaces()
    }
    fn get(&self, namespace: &str, key: &[u8]) -> edgekv_store::Result<Option<Record>> {
        self.inner.get(namespace, key)
    }
    fn commit(&self, commit: Commit) -> edgekv_store::Result<u64> {
        self.inner.commit(commit)
    }
    fn transact(
        &self,
        reads: &edgekv_store::ReadSet,
        decide: &mut dyn FnMut(edgekv_store::ReadView) -> edgekv_store::Result<Vec<Commit>>,
    ) -> edgekv_store::Result<Vec<u64>> {
        self.inner.transact(reads, decide)
    }
    fn keep_newer(
        &self,
        writes: Vec<Write>,
        meta: Vec<(String, Vec<u8>)>,
    ) -> edgekv_store::Result<Vec<bool>> {
        self.inner.keep_newer(writes, meta)
    }
    fn list(
        &self,
        namespace: &str,
        query: &ListQuery,
        now_s: u64,
    ) -> edgekv_store::Result<ListPage> {
        self.inner.list(namespace, query, now_s)
    }
    fn purge_expired(&self, now_s: u64, max: usize) -> edgekv_store::Result<usize> {
        self.inner.purge_expired(now_s, max)
    }
    fn revision(&self) -> u64 {
        self.inner.revision()
    }
    fn log(&self, from: u64, max: usize) -> edgekv_store::Result<LogRead> {
        self.inner.log(from, max)
    }
    fn trim_log(&self, keep: u64) -> edgekv_store::Result<usize> {
        self.inner.trim_log(keep)
    }
    fn forget_write_ids(&self, now_s: u64, max: usize) -> edgekv_store::Result<usize> {
        self.inner.forget_write_ids(now_s, max)
    }
    fn written(&self, write_id: &[u8]) -> edgekv_store::Result<Option<WrittenId>> {
        self.inner.written(write_id)
    }
    fn snapshot(
        &self,
        namespaces: &[String],
        visit: &mut dyn FnMut(SnapshotItem) -> edgekv_store::Result<()>,
    ) -> edgekv_store::Result<u64> {
        self.inner.snapshot(namespaces, visit)
    }
    fn meta(&self, name: &str) -> edgekv_store::Result<Option<Vec<u8>>> {
        self.inner.meta(name)
    }
    fn set_meta(&self, name: &str, value: &[u8]) -> edgekv_store::Result<()> {
        self.inner.set_meta(name, value)
    }
    fn queue_push(&self, queue: &str, entry: &[u8]) -> edgekv_store::Result<u64> {
        self.inner.queue_push(queue, entry)
    }
    fn queue_push_many(&self, queue: &str, entries: &[Vec<u8>]) -> edgekv_store::Result<Vec<u64>> {
        std::thread::sleep(Duration::from_millis(self.slow_ms.load(Ordering::Relaxed)));
        self.batches.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Err(edgekv_store::Error::Engine(
                "no space left on device".into(),
            ));
        }
        self.inner.queue_push_many(queue, entries)
    }
    fn queue_get(&self, queue: &str, sequence: u64) -> edgekv_store::Result<Option<Vec<u8>>> {
        self.inner.queue_get(queue, sequence)
    }
    fn queue_scan(
        &self,
        queue: &str,
        after: u64,
        max: usize,
    ) -> edgekv_store::Result<Vec<(u64, Vec<u8>)>> {
        self.largest_page.fetch_max(max, Ordering::Relaxed);
        self.inner.queue_scan(queue, after, max)
    }
    fn queue_remove(
        &self,
        queue: &str,
        sequence: u64,
        move_to: Option<(&str, &[u8])>,
    ) -> edgekv_store::Result<()> {
        self.inner.queue_remove(queue, sequence, move_to)
    }
    fn queue_len(&self, queue: &str) -> edgekv_store::Result<u64> {
        self.inner.queue_len(queue)
    }
}

/// Past `outbox_max_bytes` a write is refused with a 503 that names the bound, and
/// leaves nothing; settling a write gives its bytes back.
#[tokio::test]
async fn the_byte_bound_refuses_past_it_and_names_it() {
    const MAX_BYTES: u64 = 1 << 20;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let outbox = Outbox::load(&store).unwrap();
    let value = vec![7u8; 300 * 1024];
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        outbox
            .push(
                ANY_WRITES,
                MAX_BYTES,
                entry(vec![put(key, &value)], 1, i as u64),
            )
            .await
            .unwrap();
    }
    let stored: u64 = store
        .queue_read(OUTBOX, 10)
        .unwrap()
        .iter()
        .map(|(_, raw)| raw.len() as u64)
        .sum();
    assert_eq!(outbox.stats(0).bytes, stored, "the bytes as stored");
    // A fourth write of 300 KiB would pass 1 MiB.
    let refused = outbox
        .push(ANY_WRITES, MAX_BYTES, entry(vec![put("d", &value)], 1, 3))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        refused.to_string().contains("outbox_max_bytes"),
        "the refusal names the bound: {refused}"
    );
    assert_eq!(
        store.queue_len(OUTBOX).unwrap(),
        3,
        "the refused write left nothing"
    );
    assert!(value_of(&outbox, &*store, "d").is_none());
    assert_eq!((outbox.stats(0).depth, outbox.stats(0).queued), (3, 3));
    // A small write still fits under the bound.
    outbox
        .push(ANY_WRITES, MAX_BYTES, entry(vec![put("small", b"s")], 1, 4))
        .await
        .unwrap();
    // Settling the first write gives its bytes back: the big one fits now.
    let before = outbox.stats(0).bytes;
    let first = outbox.head(&*store, 1).unwrap().remove(0).unwrap();
    outbox.settled(&store, &first, false, false).await.unwrap();
    assert_eq!(outbox.stats(0).bytes, before - first.size);
    outbox
        .push(ANY_WRITES, MAX_BYTES, entry(vec![put("d", &value)], 1, 5))
        .await
        .unwrap();
    // The count bound still holds beside it.
    let refused = outbox
        .push(4, MAX_BYTES, entry(vec![put("e", b"e")], 1, 6))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("4 writes wait"), "{refused}");
}

/// The overlay keeps which write holds a key, not its value: a queued value is
/// read from the queued entry in the store (at once, and after a restart), and a
/// queued deletion from the overlay alone.
#[tokio::test]
async fn the_overlay_reads_queued_values_from_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let outbox = Outbox::load(&store).unwrap();
    let sequence = outbox
        .push(
            ANY_WRITES,
            ANY_BYTES,
            entry(vec![put("a", b"queued a"), delete("b")], 42, 1),
        )
        .await
        .unwrap();
    let check = |outbox: &Outbox| {
        let a = value_of(outbox, &*store, "a").unwrap();
        assert_eq!(
            (&a.value[..], a.hlc, a.tombstone),
            (&b"queued a"[..], 42, false)
        );
        let b = value_of(outbox, &*store, "b").unwrap();
        assert_eq!((b.hlc, b.tombstone), (42, true));
        assert!(value_of(outbox, &*store, "c").is_none());
    };
    check(&outbox);
    // A restart: a new outbox over the same store sees the same.
    drop(outbox);
    let outbox = Outbox::load(&store).unwrap();
    check(&outbox);
    assert_eq!(outbox.stats(0).depth, 1);
    // The value lives only in the store: with the entry gone (settled meanwhile)
    // the overlay has none to give, and the read falls through.
    store.queue_remove(OUTBOX, sequence, None).unwrap();
    assert!(value_of(&outbox, &*store, "a").is_none());
    // A deletion needs no value.
    assert!(value_of(&outbox, &*store, "b").unwrap().tombstone);
}

/// 64 writes queued at once all succeed and are all visible, in far fewer
/// batches (fsyncs) than writes; the writer holds the store only while it writes,
/// and stops once the outbox is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_batches_and_all_become_visible() {
    let probe = Arc::new(Probe::default());
    probe.slow_ms.store(20, Ordering::Relaxed);
    let store: Arc<dyn Store> = probe.clone();
    let outbox = Arc::new(Outbox::load(&store).unwrap());
    let mut pushes = tokio::task::JoinSet::new();
    for i in 0..64u64 {
        let outbox = outbox.clone();
        pushes.spawn(async move {
            let value = format!("value {i}");
            let written = entry(vec![put(&format!("k{i}"), value.as_bytes())], i + 1, i);
            outbox.push(ANY_WRITES, ANY_BYTES, written).await
        });
    }
    let mut sequences = Vec::new();
    while let Some(done) = pushes.join_next().await {
        sequences.push(done.unwrap().unwrap());
    }
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(sequences.len(), 64, "each write has its own sequence");
    for i in 0..64 {
        let record = value_of(&outbox, &*store, &format!("k{i}")).unwrap();
        assert_eq!(record.value, format!("value {i}").into_bytes());
    }
    assert_eq!(outbox.stats(0).depth, 64);
    let batches = probe.batches.load(Ordering::Relaxed);
    assert!(
        batches <= 16,
        "{batches} batches for 64 writes queued at once: no group commit"
    );
    // Replay reads them all, in sequence order.
    let head: Vec<u64> = outbox
        .head(&*store, 100)
        .unwrap()
        .into_iter()
        .map(|q| q.unwrap().sequence)
        .collect();
    assert_eq!(head, sequences);
    // Idle, the writer holds no reference to the store (a restarted edge reopens
    // its store at once)...
    assert_eq!(Arc::strong_count(&probe), 2, "probe and store");
    // ...and once the outbox is dropped, it stops (and lets go of its weak one).
    drop(outbox);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while Arc::weak_count(&probe) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer still runs"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A batch the store cannot keep is answered with the error to each of its
/// writes; none is visible or counted, and their places are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_answers_every_write_with_the_error() {
    let probe = Arc::new(Probe::default());
    probe.slow_ms.store(10, Ordering::Relaxed);
    probe.failing.store(true, Ordering::Relaxed);
    let store: Arc<dyn Store> = probe.clone();
    let outbox = Arc::new(Outbox::load(&store).unwrap());
    let push_all = |outbox: &Arc<Outbox>| {
        let mut pushes = tokio::task::JoinSet::new();
        for i in 0..16u64 {
            let outbox = outbox.clone();
            pushes.spawn(async move {
                outbox
                    .push(
                        16,
                        ANY_BYTES,
                        entry(vec![put(&format!("k{i}"), b"v")], 1, i),
                    )
                    .await
            });
        }
        pushes
    };
    let mut pushes = push_all(&outbox);
    while let Some(done) = pushes.join_next().await {
        let err = done.unwrap().unwrap_err();
        assert_eq!(err.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(err.to_string().contains("no space left"), "{err}");
    }
    assert!(outbox.is_empty());
    assert_eq!((outbox.stats(0).bytes, outbox.stats(0).queued), (0, 0));
    assert!(value_of(&outbox, &*store, "k0").is_none());
    // The disk recovers: the 16 places (the whole bound) are free again.
    probe.failing.store(false, Ordering::Relaxed);
    let mut pushes = push_all(&outbox);
    while let Some(done) = pushes.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(outbox.stats(0).depth, 16);
}

/// Start-up reads a long queue page by page and keeps keys, stamps and sizes:
/// every waiting write is counted (an undecodable one too), its bytes summed, and
/// visible.
#[test]
fn load_pages_through_a_long_queue() {
    let probe = Arc::new(Probe::default());
    let entries: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| {
            entry(vec![put(&format!("k{i}"), &[b'v'; 1000])], i + 1, 1_000 + i).encode_to_vec()
        })
        .collect();
    probe.inner.queue_push_many(OUTBOX, &entries).unwrap();
    // Field 1 with wire type 7: no protobuf decodes it.
    probe.inner.queue_push(OUTBOX, b"\x0f").unwrap();
    let store: Arc<dyn Store> = probe.clone();
    let outbox = Outbox::load(&store).unwrap();
    assert!(
        probe.largest_page.load(Ordering::Relaxed) <= LOAD_PAGE,
        "load read more than a page at once"
    );
    let stats = outbox.stats(5_000);
    assert_eq!(stats.depth, 1001);
    let bytes: u64 = entries.iter().map(|e| e.len() as u64).sum::<u64>() + 1;
    assert_eq!(stats.bytes, bytes);
    assert_eq!(stats.oldest_age_ms, 4_000, "the oldest is the first queued");
    for i in [0, 15, 16, 17, 500, 999] {
        let record = value_of(&outbox, &*store, &format!("k{i}")).unwrap();
        assert_eq!((record.value.len(), record.hlc), (1000, i + 1));
    }
    // Every loaded write is booked: replay reads them, the undecodable one last.
    let head = outbox.head(&*store, 2000).unwrap();
    assert_eq!(head.len(), 1001);
    assert!(head[1000].is_err());
}
