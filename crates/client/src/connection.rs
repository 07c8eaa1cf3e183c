//! One WebSocket connection to a protosync server.

use futures::{SinkExt, StreamExt};
use protosync_protocol::wire::{self, client_message, server_message};
use protosync_protocol::{BINARY_SUBPROTOCOL, Codec, Frame, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The socket read buffer: tungstenite zero-fills all of it before every
/// read (128 KiB by default); a larger frame grows it as it needs.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Why a [`Connection`] (or [`Incoming`]) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The TCP connection or WebSocket upgrade failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The socket closed; with the server's close code and reason when it sent a close
    /// frame.
    #[error("the connection closed{}", .0.as_ref().map(|(c, r)| format!(" ({c}: {r})")).unwrap_or_default())]
    Closed(Option<(u16, String)>),
    /// A frame that does not decode, or a message out of order (such as no welcome first).
    #[error("the server sent something this client cannot read: {0}")]
    Protocol(String),
    /// The server answered the hello with an error instead of a welcome.
    #[error("the server refused the hello: {code}: {message}")]
    Refused {
        /// The error's stable code (`UPGRADE_REQUIRED`, `TOKEN_EXPIRED`, …).
        code: String,
        /// The error's message, for a person.
        message: String,
    },
}

/// What a connection delivers: whole messages, with chunked transitions
/// already put back together.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A whole transition, all its chunks in one.
    Transition(wire::Transition),
    /// Any other server message, as sent.
    Other(wire::ServerMessage),
}

/// One WebSocket to a server: hello and welcome, then messages out and whole messages
/// in. It neither retries nor reconnects; [`Client`](crate::Client) does.
pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    codec: Codec,
    incoming: Incoming,
}

/// What arrives on a sync connection, message by message: frames decoded,
/// transition chunks put back together. For callers with their own socket
/// (the benchmark harness); [`Connection`] uses it too.
pub struct Incoming {
    codec: Codec,
    pending_chunks: Vec<wire::Transition>,
}

impl Incoming {
    /// A reader for frames in `codec`, holding no partial transition.
    pub fn new(codec: Codec) -> Incoming {
        Incoming {
            codec,
            pending_chunks: Vec::new(),
        }
    }

    /// The message `frame` completes: `None` for control frames and for
    /// a transition chunk that is not the last; an error when the server
    /// closed the connection or broke the protocol.
    pub fn accept(&mut self, frame: Message) -> Result<Option<Received>, ConnectionError> {
        let frame = match frame {
            Message::Text(text) => Frame::Text(text.to_string()),
            Message::Binary(bytes) => Frame::Binary(bytes.to_vec()),
            Message::Close(frame) => {
                return Err(ConnectionError::Closed(
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                ));
            }
            _ => return Ok(None),
        };
        let message = self
            .codec
            .decode_server(&frame)
            .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
        match message.message {
            Some(server_message::Message::Transition(transition)) => {
                Ok(self.assemble(transition)?.map(Received::Transition))
            }
            _ => Ok(Some(Received::Other(message))),
        }
    }

    fn assemble(
        &mut self,
        chunk: wire::Transition,
    ) -> Result<Option<wire::Transition>, ConnectionError> {
        let chunks = chunk.chunks.max(1);
        if let Some(first) = self.pending_chunks.first() {
            if (first.from_watermark, first.to_watermark)
                != (chunk.from_watermark, chunk.to_watermark)
                || chunk.chunk as usize != self.pending_chunks.len()
            {
                return Err(ConnectionError::Protocol(
                    "transition chunks out of order".into(),
                ));
            }
        } else if chunk.chunk != 0 {
            return Err(ConnectionError::Protocol(
                "a transition started mid-way".into(),
            ));
        }
        self.pending_chunks.push(chunk);
        if self.pending_chunks.len() < chunks as usize {
            return Ok(None);
        }
        let mut parts = std::mem::take(&mut self.pending_chunks).into_iter();
        let mut whole = parts.next().expect("at least one chunk");
        for part in parts {
            whole.updates.extend(part.updates);
        }
        whole.chunk = 0;
        whole.chunks = 1;
        Ok(Some(whole))
    }
}

impl Connection {
    /// Opens a WebSocket to `url` (`ws://host:port/v1/sync`) without saying hello.
    pub async fn open(url: &str, codec: Codec) -> Result<Connection, ConnectionError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectionError::Connect(e.to_string()))?;
        if codec == Codec::Binary {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                BINARY_SUBPROTOCOL.parse().expect("a valid header value"),
            );
        }
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES);
        // Nagle off (`true`): a frame written behind an unacknowledged one
        // would otherwise wait for the server's delayed ACK.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .map_err(|e| ConnectionError::Connect(e.to_string()))?;
        Ok(Connection {
            socket,
            codec,
            incoming: Incoming::new(codec),
        })
    }

    /// Opens and says hello; returns the connection and the server's welcome.
    pub async fn connect(
        url: &str,
        codec: Codec,
        resume: Option<wire::Resume>,
    ) -> Result<(Connection, wire::Welcome), ConnectionError> {
        Connection::connect_with_token(url, codec, resume, None).await
    }

    /// Opens and says hello with `token`.
    pub async fn connect_with_token(
        url: &str,
        codec: Codec,
        resume: Option<wire::Resume>,
        token: Option<String>,
    ) -> Result<(Connection, wire::Welcome), ConnectionError> {
        let mut connection = Connection::open(url, codec).await?;
        let hello = wire::Hello {
            protocol_version: PROTOCOL_VERSION,
            resume,
            token: token.unwrap_or_default(),
            ..Default::default()
        };
        connection
            .send(client_message::Message::Hello(hello))
            .await?;
        match connection.receive().await? {
            Received::Other(wire::ServerMessage {
                message: Some(server_message::Message::Welcome(welcome)),
            }) => Ok((connection, welcome)),
            Received::Other(wire::ServerMessage {
                message: Some(server_message::Message::Error(e)),
            }) => Err(ConnectionError::Refused {
                code: e.code,
                message: e.message,
            }),
            other => Err(ConnectionError::Protocol(format!(
                "expected a welcome, got {other:?}"
            ))),
        }
    }

    /// Encodes and sends one client message in this connection's codec.
    pub async fn send(&mut self, message: client_message::Message) -> Result<(), ConnectionError> {
        let frame = self.codec.encode_client(&wire::ClientMessage {
            message: Some(message),
        });
        self.send_raw(frame).await
    }

    /// Sends a frame as is (tests use this to send malformed input).
    pub async fn send_raw(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let message = match frame {
            Frame::Text(text) => Message::Text(text.into()),
            Frame::Binary(bytes) => Message::Binary(bytes.into()),
        };
        self.socket
            .send(message)
            .await
            .map_err(|_| ConnectionError::Closed(None))
    }

    /// The next message; transitions only once all their chunks arrived.
    pub async fn receive(&mut self) -> Result<Received, ConnectionError> {
        loop {
            let frame = match self.socket.next().await {
                None | Some(Err(_)) => return Err(ConnectionError::Closed(None)),
                Some(Ok(frame)) => frame,
            };
            if let Some(received) = self.incoming.accept(frame)? {
                return Ok(received);
            }
        }
    }

    /// Sends a close frame; errors are ignored, since the connection is ending anyway.
    pub async fn close(&mut self) {
        let _ = self.socket.close(None).await;
    }
}
