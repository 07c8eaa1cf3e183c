//! Wake-ups: keeping this process's commits watch at the latest seq any
//! process on the database committed. Commits ring `NOTIFY
//! protosync_commits` inside their transaction; the listener here LISTENs
//! on its own connection and re-reads the head on every notification,
//! after every reconnect and on a slow timer. A notification carries no
//! truth (it can be lost while the listener reconnects): the watch only
//! ever moves to a head read from the database, and subscribers then read
//! the log. Nothing here writes.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use super::reads::read_head;
use crate::Seq;

/// The channel commits are announced on.
pub(super) const NOTIFY_CHANNEL: &str = "protosync_commits";
/// How often the listener re-reads the head even without a notification, so
/// a lost notification delays a subscriber by at most this long.
const HEAD_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Wait before reconnecting a dropped listener connection.
const LISTEN_RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Moves `commits` to `seq` unless it already knows a later one.
pub(super) fn raise(commits: &watch::Sender<Seq>, seq: Seq) {
    commits.send_if_modified(|known| {
        let newer = seq > *known;
        if newer {
            *known = seq;
        }
        newer
    });
}

/// Keeps `commits` at the latest seq any process committed: LISTEN for
/// wake-ups, re-read the head after each (re)connect and on a timer.
pub(super) async fn listen(config: tokio_postgres::Config, commits: watch::Sender<Seq>) {
    loop {
        let connected = config.connect(NoTls).await;
        let (client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "commit listener cannot connect; retrying");
                tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
                continue;
            }
        };
        let (wakeups_tx, mut wakeups) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if wakeups_tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "commit listener connection failed");
                        break;
                    }
                }
            }
        });
        if let Err(e) = client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
        {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
            continue;
        }
        let mut poll = tokio::time::interval(HEAD_POLL_INTERVAL);
        loop {
            tokio::select! {
                wakeup = wakeups.recv() => if wakeup.is_none() { break },
                _ = poll.tick() => {}
            }
            while wakeups.try_recv().is_ok() {}
            match read_head(&client).await {
                Ok(seq) => raise(&commits, seq),
                Err(_) => break,
            }
        }
        driver.abort();
        tokio::time::sleep(LISTEN_RECONNECT_DELAY).await;
    }
}
