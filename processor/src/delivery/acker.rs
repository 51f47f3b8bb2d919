//! Batched acknowledgements.
//!
//! Deliveries hand their entry ids to one task that sends them to Redis as one ack script call
//! per batch (XACK of the ids this consumer still owns, see [`crate::stream`]): the ids that
//! arrived while the previous call was in flight go out together. Under load that is one
//! command (and one write) for many entries instead of one each; when idle, an ack goes out at
//! once. Each delivery still waits for its own ack's result and retries on failure.

use crate::stream::Stream;
use redis::RedisResult;
use tokio::sync::{mpsc, oneshot};

/// The most ids in one XACK.
const MAX_BATCH: usize = 512;

/// An id, and where to answer: `Ok(true)` acked, `Ok(false)` not this consumer's any more.
type Request = (String, oneshot::Sender<RedisResult<bool>>);

/// A handle to the ack task; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<Request>,
}

impl Acker {
    /// Starts the ack task; it ends when every handle is dropped.
    pub fn spawn(stream: Stream) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
                let result = stream.ack_owned(&ids).await;
                for (id, reply) in batch.drain(..) {
                    let _ = reply.send(result.as_ref().map(|lost| !lost.contains(&id)).map_err(Clone::clone));
                }
            }
        });
        Self { tx }
    }

    /// Acks `id` if this consumer still owns it, batched with whatever else is being acked.
    /// `Ok(true)` acked, `Ok(false)` not owned.
    pub async fn ack(&self, id: &str) -> RedisResult<bool> {
        let (reply, answer) = oneshot::channel();
        let gone = || redis::RedisError::from((redis::ErrorKind::Io, "the ack task has stopped"));
        self.tx.send((id.to_string(), reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}
