//! The gateway's listener: the answers hyper writes on its own get our JSON
//! error body.
//!
//! hyper answers a request it cannot parse (a path longer than 65,534
//! bytes, a header block over its buffer, a malformed request line) itself,
//! with `400`, `414` or `431` and an empty body, before any handler or
//! middleware runs, and then closes the connection. Clients expect every
//! error to carry `{"error": {"code", "message"}}`, so the socket's writer
//! recognizes exactly those answers and writes ours in their place.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::serve::Listener;
use protosync_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose sockets put JSON bodies on hyper's own error
/// answers (`serve` turns Nagle's algorithm off on each, in `tap_io`).
pub(crate) struct GatewayListener(pub TcpListener);

impl Listener for GatewayListener {
    type Io = JsonErrorBodies<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, peer) = Listener::accept(&mut self.0).await;
        (
            JsonErrorBodies {
                inner: tcp,
                replacement: None,
            },
            peer,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A socket that replaces hyper's empty parse-error answers (see the module
/// docs) with JSON ones; everything else passes through untouched.
pub(crate) struct JsonErrorBodies<S> {
    inner: S,
    /// Our answer and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

/// The answer to write instead of `head`, when `head` is one of hyper's
/// automatic error answers: a whole response head, no body.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    // The status line is hyper's (414 and 431 say more than the code's 413).
    let (status, code, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            ErrorCode::BadRequest,
            "the request is not valid HTTP/1.1".to_owned(),
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        (
            "414 URI Too Long",
            ErrorCode::LimitExceeded,
            "the request path is longer than 65534 bytes".to_owned(),
        )
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            ErrorCode::LimitExceeded,
            format!(
                "the request's headers are larger than {} bytes",
                crate::MAX_REQUEST_HEAD_BYTES
            ),
        )
    } else {
        return None;
    };
    // Ours always have a body; hyper's never do.
    let bodiless = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bodiless {
        return None;
    }
    let body =
        serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonErrorBodies<S> {
    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement(cx))?;
        if let Some(replacement) = replacement_for(buf) {
            self.replacement = Some((replacement, 0));
            // hyper's answer counts as written; ours goes out on flush.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each response head in one buffer,
    // which is what `replacement_for` looks at.
}

#[cfg(test)]
mod tests {
    use super::replacement_for;

    #[test]
    fn only_hypers_bodiless_error_answers_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";
        let ours = String::from_utf8(replacement_for(hyper).unwrap()).unwrap();
        assert!(ours.starts_with("HTTP/1.1 431 "), "{ours}");
        let body: serde_json::Value =
            serde_json::from_str(ours.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "LIMIT_EXCEEDED");
        let handler = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n";
        assert!(replacement_for(handler).is_none());
        assert!(replacement_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
