//! Batched acknowledgements.
//!
//! Workers hand their entry ids to one task that sends them to Redis as one XACK per batch: the
//! ids that arrived while the previous XACK was in flight go out together. Under load that is
//! one command (and one write) for many entries instead of one each; when idle, an ack goes out
//! at once. Each worker still waits for its own ack's result and retries on failure.

use crate::stream::Stream;
use redis::RedisResult;
use tokio::sync::{mpsc, oneshot};

/// The most ids in one XACK.
const MAX_BATCH: usize = 512;

type Request = (String, oneshot::Sender<RedisResult<()>>);

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
                let result = stream.ack_many(&ids).await;
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { tx }
    }

    /// Acks `id`, batched with whatever else is being acked.
    pub async fn ack(&self, id: &str) -> RedisResult<()> {
        let (reply, answer) = oneshot::channel();
        let gone = || redis::RedisError::from((redis::ErrorKind::Io, "the ack task has stopped"));
        self.tx.send((id.to_string(), reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}
