//! The RTMP server (Adobe RTMP 1.0; enhanced RTMP video): publishers go
//! live with their stream key, and this process transcodes what they send.
//!
//! The protocol (handshake, chunk stream, `connect` / `createStream` /
//! `publish`) is `scuffle-rtmp`'s: it bounds what a peer can make it hold
//! (chunk sizes, partially assembled messages, remembered chunk headers)
//! and times out silent peers. This module decides who may publish:
//!
//! - the stream key is the publish name (`rtmp://host/live/KEY`; without an
//!   app, `rtmp://host/KEY`); a query string after it is ignored;
//! - an unknown, disabled or deleted key, a stream another publisher holds,
//!   or a replica at `live.max_streams` is refused at `publish`, the
//!   connection closed, and (for a known key) the refusal recorded on the
//!   stream;
//! - a connection that has not started publishing within
//!   `live.handshake_timeout` is closed, and at most a bounded number of
//!   connections may be in that state at once;
//! - audio, video and metadata messages become FLV tags for the live
//!   session (`cascade_workers::live::session`), which runs the ladder in
//!   this process, so no frame crosses the network twice. Backpressure: a
//!   ladder that falls behind slows reading from the socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use cascade_platform::live_streams::{self, PublishRefused};
use cascade_workers::live::{flv, session, IngestStats, LiveContext, SessionEnd, SessionInput};
use scuffle_rtmp::session::server::{ServerSessionError, SessionData, SessionHandler};
use scuffle_rtmp::ServerSession;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// FLV chunks buffered between the connection and the ladder (about two
/// seconds of a 30 fps stream with audio): enough to ride out a slow
/// segment upload, small enough that a ladder that cannot keep up slows
/// the socket instead of growing memory.
const CHUNKS_IN_FLIGHT: usize = 128;

/// What every connection shares.
pub struct RtmpServer {
    live: Arc<LiveContext>,
    node: String,
    publishers: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    metrics: crate::metrics::IngestMetrics,
}

impl RtmpServer {
    /// A server running sessions in `live`, naming itself `node` on the
    /// streams it holds.
    pub fn new(
        live: Arc<LiveContext>,
        node: String,
        metrics: crate::metrics::IngestMetrics,
    ) -> Self {
        let max_streams = live.config.max_streams;
        Self {
            live,
            node,
            publishers: Arc::new(Semaphore::new(max_streams)),
            metrics,
            // Connections not yet publishing: a bounded pool, so a flood of
            // idle sockets cannot exhaust file descriptors or memory.
            handshakes: Arc::new(Semaphore::new(max_streams * 4 + 16)),
        }
    }

    /// Streams this replica is publishing now.
    pub fn active(&self) -> usize {
        self.live.config.max_streams - self.publishers.available_permits()
    }
}

/// Binds the RTMP listener (`live.rtmp_listen`), records its address in
/// `state`, and runs the server and the broadcast sweeper (dead
/// publishers, ended reconnect windows) until `shutdown`.
pub async fn start(
    state: Arc<crate::AppState>,
    live: Arc<LiveContext>,
    node: String,
    shutdown: CancellationToken,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(address) = live.config.rtmp_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let _ = state.rtmp_bound.set(bound);
    tracing::info!(address = %bound, "rtmp: listening");
    println!("cascade: rtmp listening on rtmp://{bound}/live");
    let server = Arc::new(RtmpServer::new(live.clone(), node, state.metrics.clone()));
    let sweeper = {
        let shutdown = shutdown.clone();
        let state = state.clone();
        let every = live.config.sweep_interval;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match live_streams::end_idle_broadcasts(
                    &state.pool,
                    live_streams::FINISH_MAX_ATTEMPTS,
                )
                .await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(broadcasts = n, "live: broadcasts ended");
                        state
                            .queue
                            .wake(cascade_schemas::job_kind::FINISH_BROADCAST);
                    }
                    Err(e) => tracing::warn!(error = %e, "live: cannot sweep broadcasts"),
                }
            }
        })
    };
    Ok(Some(tokio::spawn(async move {
        serve(listener, server, shutdown).await;
        let _ = sweeper.await;
    })))
}

/// Accepts connections on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, server: Arc<RtmpServer>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "rtmp: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = server.handshakes.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "rtmp: too many connections not yet publishing; closed");
            continue;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(connection(
            server.clone(),
            socket,
            peer,
            permit,
            shutdown.clone(),
        ));
    }
}

/// Where a connection is.
enum Stage {
    /// Handshake, `connect`, `createStream`: not yet publishing; holds one
    /// of the slots of connections in that state.
    Waiting {
        _handshake_slot: OwnedSemaphorePermit,
    },
    /// Publishing: the FLV chunks go to the session.
    Publishing {
        chunks: mpsc::Sender<Bytes>,
        stats: Arc<IngestStats>,
    },
    /// Refused or ended: the connection closes.
    Closed,
}

struct Publisher {
    server: Arc<RtmpServer>,
    peer: SocketAddr,
    stage: Stage,
    published: Arc<tokio::sync::Notify>,
}

/// The crate's error type has no variant for "the application ends the
/// session"; any error ends `run`, and this module logs the real reason.
fn close() -> ServerSessionError {
    ServerSessionError::PlayNotSupported
}

/// The stream key in a publish request.
fn stream_key<'a>(app_name: &'a str, stream_name: &'a str) -> &'a str {
    let name = stream_name.split('?').next().unwrap_or_default().trim();
    if !name.is_empty() {
        return name;
    }
    // `rtmp://host/KEY`: ffmpeg sends the key as the app.
    app_name
        .split('?')
        .next()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim()
}

impl Publisher {
    async fn refuse(
        &self,
        stream: Option<cascade_schemas::LiveStreamId>,
        code: &str,
        message: &str,
    ) {
        tracing::info!(peer = %self.peer, live_stream_id = ?stream, code, message, "rtmp: publish refused");
        if let Some(stream) = stream {
            if let Ok(client) = self.server.live.pool.get().await {
                let _ = live_streams::record_refusal(&client, stream, code, message).await;
            }
        }
    }

    async fn publish(
        &mut self,
        app_name: &str,
        stream_name: &str,
    ) -> Result<(), ServerSessionError> {
        if !matches!(self.stage, Stage::Waiting { .. }) {
            // A second publish on one connection.
            return Err(close());
        }
        let key = stream_key(app_name, stream_name).to_owned();
        if !live_streams::key_well_formed(&key) {
            self.refuse(
                None,
                "unknown_key",
                "the stream key is not one Cascade issued",
            )
            .await;
            return Err(close());
        }
        let live = self.server.live.clone();
        let stream = match live.pool.get().await {
            Ok(client) => live_streams::find_by_key(&client, &key).await,
            Err(e) => Err(e.into()),
        };
        let stream = match stream {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                self.refuse(None, "unknown_key", "no live stream has this key")
                    .await;
                return Err(close());
            }
            Err(e) => {
                tracing::warn!(error = %e, "rtmp: cannot look up the stream key");
                return Err(close());
            }
        };
        let Ok(permit) = self.server.publishers.clone().try_acquire_owned() else {
            self.refuse(
                Some(stream.id),
                "capacity",
                "this ingest server is at its limit of live streams; try again or another server",
            )
            .await;
            return Err(close());
        };
        let publisher = uuid::Uuid::new_v4();
        let claimed = live_streams::claim_publisher(
            &live.pool,
            stream.id,
            publisher,
            &self.server.node,
            live.relay_url.as_deref(),
            live.config.publisher_lease,
            live_streams::FINISH_MAX_ATTEMPTS,
        )
        .await;
        let publish = match claimed {
            Ok(Ok(publish)) => publish,
            Ok(Err(refused)) => {
                let (code, message) = match refused {
                    PublishRefused::Disabled => ("disabled", "the live stream is disabled"),
                    PublishRefused::Busy => (
                        "already_publishing",
                        "another publisher is live on this stream key",
                    ),
                    PublishRefused::NotFound => ("unknown_key", "no live stream has this key"),
                };
                self.refuse(Some(stream.id), code, message).await;
                return Err(close());
            }
            Err(e) => {
                tracing::warn!(error = %e, "rtmp: cannot claim the stream");
                return Err(close());
            }
        };
        tracing::info!(peer = %self.peer, live_stream_id = %stream.id, session = publish.session,
            continues = publish.continues, "rtmp: publishing");
        let (chunks, received) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let stats = Arc::new(IngestStats::default());
        // The FLV header opens the byte stream the demuxer reads.
        if chunks.send(flv::header()).await.is_err() {
            return Err(close());
        }
        let input = SessionInput {
            publish: publish.clone(),
            publisher,
            flv: received,
            stats: stats.clone(),
        };
        let peer = self.peer;
        let publishing = self.server.metrics.rtmp_publishing();
        tokio::spawn(async move {
            let end = session::run(live.clone(), input).await;
            drop(publishing);
            match &end {
                SessionEnd::PublisherLeft => {
                    tracing::info!(peer = %peer, live_stream_id = %publish.stream, "rtmp: publisher left")
                }
                SessionEnd::Refused { code, message } => {
                    tracing::info!(peer = %peer, live_stream_id = %publish.stream, code, message = %message,
                        "rtmp: stream refused")
                }
                SessionEnd::LostStream => {
                    tracing::info!(peer = %peer, live_stream_id = %publish.stream,
                    "rtmp: the stream was disabled, deleted or taken over")
                }
                SessionEnd::Failed(reason) => tracing::warn!(peer = %peer,
                    live_stream_id = %publish.stream, reason = %reason, "rtmp: live session failed"),
            }
            if !matches!(end, SessionEnd::LostStream) {
                if let Err(e) = live_streams::release_publisher(
                    &live.pool,
                    publish.stream,
                    publisher,
                    live_streams::FINISH_MAX_ATTEMPTS,
                )
                .await
                {
                    // The lease runs out instead; the sweeper releases it.
                    tracing::warn!(error = %e, "rtmp: cannot release the stream");
                }
            }
            drop(permit);
        });
        // Replacing the stage returns the connection's handshake slot.
        self.stage = Stage::Publishing { chunks, stats };
        self.published.notify_one();
        Ok(())
    }

    async fn forward(
        &mut self,
        kind: flv::TagKind,
        timestamp: u32,
        body: &[u8],
    ) -> Result<(), ServerSessionError> {
        let Stage::Publishing { chunks, stats } = &self.stage else {
            return Ok(()); // Media before publish is not ours to read.
        };
        let Some(tag) = flv::tag(kind, timestamp, body) else {
            return Err(close());
        };
        stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if chunks.send(tag).await.is_err() {
            // The session ended (refused input, lost stream, failure).
            self.stage = Stage::Closed;
            return Err(close());
        }
        Ok(())
    }
}

impl SessionHandler for Publisher {
    async fn on_publish(
        &mut self,
        _stream_id: u32,
        app_name: &str,
        stream_name: &str,
    ) -> Result<(), ServerSessionError> {
        self.publish(app_name, stream_name).await
    }

    async fn on_unpublish(&mut self, _stream_id: u32) -> Result<(), ServerSessionError> {
        // Dropping the sender ends the input: the session publishes the last
        // segments and the reconnect window starts.
        self.stage = Stage::Closed;
        Ok(())
    }

    async fn on_data(
        &mut self,
        _stream_id: u32,
        data: SessionData,
    ) -> Result<(), ServerSessionError> {
        match data {
            SessionData::Video { timestamp, data } => {
                self.forward(flv::TagKind::Video, timestamp, &data).await
            }
            SessionData::Audio { timestamp, data } => {
                self.forward(flv::TagKind::Audio, timestamp, &data).await
            }
            SessionData::Amf0 { timestamp, data } => match flv::script_body(&data) {
                Some(body) => self.forward(flv::TagKind::Script, timestamp, body).await,
                None => Ok(()),
            },
        }
    }
}

async fn connection(
    server: Arc<RtmpServer>,
    socket: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let published = Arc::new(tokio::sync::Notify::new());
    let handshake_timeout = server.live.config.handshake_timeout;
    let handler = Publisher {
        server,
        peer,
        stage: Stage::Waiting {
            _handshake_slot: permit,
        },
        published: published.clone(),
    };
    // Commands and metadata are checked before the protocol crate's AMF0
    // decoder sees them (rtmp_guard.rs).
    let guarded = crate::rtmp_guard::CommandGuard::new(socket);
    let run = ServerSession::new(guarded, handler).run();
    tokio::pin!(run);
    let deadline = tokio::time::sleep(handshake_timeout);
    tokio::pin!(deadline);
    let mut publishing = false;
    loop {
        tokio::select! {
            result = &mut run => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "rtmp: connection ended");
                }
                return;
            }
            _ = published.notified(), if !publishing => publishing = true,
            _ = &mut deadline, if !publishing => {
                tracing::info!(peer = %peer, "rtmp: no publish within the handshake timeout; closed");
                return;
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_publish_name_or_the_app() {
        assert_eq!(stream_key("live", "lsk_abc"), "lsk_abc");
        assert_eq!(stream_key("live", "lsk_abc?token=1"), "lsk_abc");
        assert_eq!(stream_key("lsk_abc", ""), "lsk_abc");
        assert_eq!(stream_key("a/b/lsk_abc?x", ""), "lsk_abc");
        assert_eq!(stream_key("", ""), "");
    }
}
