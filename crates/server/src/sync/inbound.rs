//! Reading a connection's frames: client messages decoded, and what a
//! frame that breaks the protocol means for the close.

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use futures::stream::SplitStream;
use protosync_protocol::wire;
use protosync_protocol::{Codec, DecodeError, Frame};

use super::close_code;

/// Reads one client message; `None` when the connection is over.
pub(super) enum Received {
    Message(wire::ClientMessage),
    /// With the request and subscription ids the frame seemed to carry, so
    /// the error reaches whoever waits on them.
    Undecodable(DecodeError, String, String),
    Closed,
    /// The client broke the WebSocket protocol: close with this code.
    Violation(u16, &'static str),
}

pub(super) async fn receive(incoming: &mut SplitStream<WebSocket>, codec: Codec) -> Received {
    loop {
        let frame = match incoming.next().await {
            None => return Received::Closed,
            Some(Err(e)) => return violation(e),
            Some(Ok(Message::Text(text))) => Frame::Text(text.to_string()),
            Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
            Some(Ok(Message::Close(_))) => return Received::Closed,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        return match codec.decode_client(&frame) {
            Ok(message) => Received::Message(message),
            Err(e) => {
                let (request_id, subscription_id) = match &frame {
                    Frame::Text(text) => ids_in(text),
                    Frame::Binary(_) => Default::default(),
                };
                Received::Undecodable(e, request_id, subscription_id)
            }
        };
    }
}

/// What a read error means for the close (RFC 6455 section 7.4.1).
fn violation(error: axum::Error) -> Received {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(_)) => {
            Received::Violation(close_code::MESSAGE_TOO_BIG, "frame too large")
        }
        Ok(Error::Utf8(_)) => Received::Violation(
            close_code::INVALID_PAYLOAD,
            "a text frame is not valid UTF-8",
        ),
        Ok(Error::Protocol(_)) => {
            Received::Violation(close_code::PROTOCOL_ERROR, "WebSocket protocol violation")
        }
        _ => Received::Closed,
    }
}

/// Best effort: the requestId of a mutate or call and the subscriptionId of a
/// subscribe or unsubscribe in a JSON frame that did not decode.
fn ids_in(text: &str) -> (String, String) {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Default::default();
    };
    let field = |message: &str, name: &str| {
        json.get(message)
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let subscription = [
        field("subscribe", "subscriptionId"),
        field("unsubscribe", "subscriptionId"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    let request = [field("mutate", "requestId"), field("call", "requestId")]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    (request, subscription)
}
