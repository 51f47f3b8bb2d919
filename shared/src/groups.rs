//! The consumer groups of a stream (`XINFO GROUPS`), read one way everywhere: the ingress's
//! backlog, the processor's gauges, trim point and `processor status`.

use redis::aio::ConnectionLike;
use redis::streams::{StreamInfoGroup, StreamInfoGroupsReply};
use redis::RedisResult;

/// The consumer groups of `stream`. A stream that does not exist yet has none (Redis answers
/// "no such key": an empty list here); any other error — Redis down, a timeout — is an error.
pub async fn groups<C: ConnectionLike>(con: &mut C, stream: &str) -> RedisResult<Vec<StreamInfoGroup>> {
    let reply: RedisResult<StreamInfoGroupsReply> =
        redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(con).await;
    match reply {
        Ok(reply) => Ok(reply.groups),
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// The group `name` of `stream`, if it exists.
pub async fn group<C: ConnectionLike>(con: &mut C, stream: &str, name: &str) -> RedisResult<Option<StreamInfoGroup>> {
    Ok(groups(con, stream).await?.into_iter().find(|g| g.name == name))
}
