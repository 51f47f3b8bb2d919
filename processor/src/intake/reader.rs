//! The reader: this consumer's own pending entries first (XREADGROUP from id `0`, paged to the
//! end), then new ones (`>`), up to `BATCH_SIZE` at a time, one batch ahead: the next batch is
//! read while the last one is being handed out, so handlers do not sit idle during a read's
//! round trip. At most two batches are held unstarted (one waiting, one being handed out),
//! leased like every held entry.
//!
//! Blocking reads run on a connection of their own (a blocked socket would stall every command
//! queued behind it), whose response timeout is `BLOCK_MS` plus a margin
//! ([`crate::timing::Timing::reader_timeout`]): a Redis that falls
//! silent mid-read is noticed, and the next read opens a fresh connection.
//!
//! **After a failed read, or a failed reclaim, the own pending entries are read again first.**
//! A read whose answer was lost — Redis handed the entries to this consumer, and the answer
//! never arrived (the primary died right after serving it, the connection fell silent) —
//! leaves them pending under this consumer's name, held by nobody; so does a lost XAUTOCLAIM
//! answer. Reading from `0` again finds them at once, instead of after `CLAIM_IDLE_MS` in
//! another replica's reclaimer; entries this process holds already are skipped
//! ([`Dispatcher::hold`]). (Such a re-read counts one more delivery for each pending entry it
//! returns, the held ones included: `MAX_DELIVERIES` counts reads, not handler runs.)

use crate::intake::dispatch::{Dispatcher, HeldEntry};
use crate::stream::is_nogroup;
use crate::stream::reconnect_backoff;
use backoff::backoff::Backoff;
use shared::conn::Conn;
use std::time::Duration;
use tokio::sync::mpsc;

pub async fn run(dispatcher: &Dispatcher, reader: Conn, batch: usize, block: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Vec<HeldEntry>, bool)>(1);
    let handing_out = async {
        while let Some((entries, fresh)) = rx.recv().await {
            dispatcher.dispatch_batch(entries, fresh).await;
        }
    };
    tokio::join!(read_batches(dispatcher, reader, batch, block, tx), handing_out);
}

/// The reading half of [`run`]: sends each batch, already held, to be handed out.
async fn read_batches(
    dispatcher: &Dispatcher,
    mut reader: Conn,
    batch: usize,
    block: Duration,
    batches: mpsc::Sender<(Vec<HeldEntry>, bool)>,
) {
    let stream = dispatcher.worker.stream.clone();
    let redis = &dispatcher.worker.redis;
    let mut backoff = reconnect_backoff();
    let mut pending_from: Option<String> = Some("0".into());
    let mut group_checked = false;
    while !dispatcher.stopping() {
        if dispatcher.take_reread() {
            pending_from = Some("0".into());
        }
        if !group_checked {
            // Redis was down at start: the partition layout is checked before the first read.
            if let Err(err) = dispatcher.worker.layout.ensure(&mut stream.connection()).await {
                match err {
                    shared::layout::LayoutError::Redis(err) => redis.failed("checking the partition layout", &err),
                    refusal => tracing::error!("{refusal}; not reading"),
                }
                if !dispatcher.pause(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await {
                    break;
                }
                continue;
            }
            match stream.ensure_group().await {
                Ok(()) => group_checked = true,
                Err(err) => {
                    redis.failed("creating the consumer group", &err);
                    if !dispatcher.pause(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await {
                        break;
                    }
                    continue;
                }
            }
        }
        let (from, block_for) = match &pending_from {
            Some(id) => (id.clone(), None),
            None => (">".to_string(), Some(block)),
        };
        // Read only when there is room for the batch: one waits while one is handed out.
        let room = tokio::select! {
            room = batches.reserve() => room,
            _ = dispatcher.stopped() => break,
        };
        let Ok(room) = room else { break };
        let sent = tokio::time::Instant::now();
        let read = tokio::select! {
            read = stream.read(&mut reader, &from, batch, block_for) => read,
            _ = dispatcher.stopped() => break,
        };
        match read {
            Ok(entries) => {
                redis.ok();
                backoff.reset();
                if let Some(cursor) = pending_from.as_mut() {
                    match entries.last() {
                        Some(last) => *cursor = last.id.clone(),
                        None => {
                            pending_from = None;
                            continue;
                        }
                    }
                }
                if !entries.is_empty() {
                    room.send((dispatcher.hold(entries, sent), pending_from.is_none()));
                }
            }
            Err(err) if is_nogroup(&err) => {
                tracing::warn!(group = %stream.group, "consumer group missing; recreating it");
                group_checked = false;
            }
            Err(err) => {
                redis.failed("reading the stream", &err);
                // Its answer may be what was lost: what it delivered is pending under this
                // consumer, held by nobody. The next read starts from this consumer's own `0`.
                dispatcher.reread();
                if !dispatcher.pause(backoff.next_backoff().unwrap_or(Duration::from_secs(5))).await {
                    break;
                }
            }
        }
    }
}
