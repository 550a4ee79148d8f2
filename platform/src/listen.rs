//! A dedicated Postgres connection that LISTENs on one channel and hands
//! each notification to a callback, reconnecting with backoff when the
//! connection drops. After each (re)connect the callback hears
//! [`Heard::Connected`]: notifications sent while it was away are lost, so
//! the listener's owner treats that as "anything may have changed".

use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// LISTEN is (again) in place; notifications before this may be lost.
    Connected,
    /// A notification's payload.
    Notification(String),
}

/// Listens on `channel` until `cancel` fires, calling `on` for everything
/// heard. `channel` must be a plain SQL identifier (it is one of Cascade's
/// constants, never input).
pub fn spawn(
    pg: tokio_postgres::Config,
    channel: &'static str,
    cancel: CancellationToken,
    on: impl Fn(Heard) + Send + Sync + 'static,
) {
    tokio::spawn(listen_loop(pg, channel, cancel, on));
}

async fn listen_loop(
    pg: tokio_postgres::Config,
    channel: &'static str,
    cancel: CancellationToken,
    on: impl Fn(Heard) + Send + Sync + 'static,
) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {channel}");
                let listen = client.batch_execute(&statement);
                // The connection must be polled for LISTEN to complete.
                let listened = tokio::select! {
                    r = listen => r.map_err(|e| e.to_string()),
                    _ = async { while let Some(Ok(_)) = messages.next().await {} } => {
                        Err("connection closed".to_owned())
                    }
                };
                if let Err(error) = listened {
                    tracing::warn!(channel, error = %error, "LISTEN failed; retrying");
                } else {
                    backoff = Duration::from_millis(100);
                    on(Heard::Connected);
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            message = messages.next() => match message {
                                Some(Ok(AsyncMessage::Notification(n))) => {
                                    on(Heard::Notification(n.payload().to_owned()))
                                }
                                Some(Ok(_)) => {}
                                Some(Err(error)) => {
                                    tracing::warn!(channel, error = %error, "notification connection failed; reconnecting");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(channel, error = %error, "cannot connect to LISTEN; retrying")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
