//! The sync protocol's wire contract: Rust types generated from
//! `proto/protosync/v1/sync.proto`, and the codecs for its two framings —
//! proto3 JSON text frames (the default) and binary protobuf frames (the
//! `protosync.v1.proto` subprotocol). JSON goes through the descriptor, so
//! the mapping is exactly proto3's, field for field.

mod json;

use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

pub use json::{json_to_struct, json_to_value, struct_to_json, value_to_json};

/// Generated types of package `protosync.v1`.
#[allow(clippy::all)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/protosync.v1.rs"));
}

/// The protocol versions this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The WebSocket subprotocol for binary protobuf frames.
pub const BINARY_SUBPROTOCOL: &str = "protosync.v1.proto";
/// The WebSocket subprotocol for JSON frames (also the default without one).
pub const JSON_SUBPROTOCOL: &str = "protosync.v1.json";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(
        include_bytes!(concat!(env!("OUT_DIR"), "/sync_descriptor.bin")).as_ref(),
    )
    .expect("the descriptor set built by build.rs decodes")
});

fn descriptor(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(name)
        .expect("sync.proto defines the message")
}

/// How frames are encoded on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Binary,
}

/// One encoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    #[error("expected a {expected} frame")]
    WrongFrameType { expected: &'static str },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Codec {
    pub fn encode_server(&self, message: &wire::ServerMessage) -> Frame {
        self.encode(message, "protosync.v1.ServerMessage")
    }

    pub fn encode_client(&self, message: &wire::ClientMessage) -> Frame {
        self.encode(message, "protosync.v1.ClientMessage")
    }

    pub fn decode_client(&self, frame: &Frame) -> Result<wire::ClientMessage, DecodeError> {
        self.decode(frame, "protosync.v1.ClientMessage")
    }

    pub fn decode_server(&self, frame: &Frame) -> Result<wire::ServerMessage, DecodeError> {
        self.decode(frame, "protosync.v1.ServerMessage")
    }

    fn encode<M: Message>(&self, message: &M, name: &str) -> Frame {
        let bytes = message.encode_to_vec();
        match self {
            Codec::Binary => Frame::Binary(bytes),
            Codec::Json => {
                let dynamic = DynamicMessage::decode(descriptor(name), bytes.as_slice())
                    .expect("a message encoded from its own type decodes");
                let mut json =
                    serde_json::to_value(&dynamic).expect("proto3 JSON serialization cannot fail");
                json::integral_floats_as_integers(&mut json);
                Frame::Text(json.to_string())
            }
        }
    }

    fn decode<M: Message + Default>(&self, frame: &Frame, name: &str) -> Result<M, DecodeError> {
        let bytes = match (self, frame) {
            (Codec::Binary, Frame::Binary(bytes)) => {
                return M::decode(bytes.as_slice())
                    .map_err(|e| DecodeError::Malformed(e.to_string()));
            }
            (Codec::Json, Frame::Text(text)) => {
                let mut deserializer = serde_json::Deserializer::from_str(text);
                // Unknown fields are skipped, as protobuf does: a newer peer
                // may send fields this version does not know.
                let dynamic = DynamicMessage::deserialize_with_options(
                    descriptor(name),
                    &mut deserializer,
                    &prost_reflect::DeserializeOptions::new().deny_unknown_fields(false),
                )
                .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                deserializer
                    .end()
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                dynamic.encode_to_vec()
            }
            (Codec::Binary, Frame::Text(_)) => {
                return Err(DecodeError::WrongFrameType { expected: "binary" });
            }
            (Codec::Json, Frame::Binary(_)) => {
                return Err(DecodeError::WrongFrameType { expected: "text" });
            }
        };
        M::decode(bytes.as_slice()).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    #[test]
    fn json_frames_use_the_proto3_json_mapping() {
        let message = ServerMessage {
            message: Some(server_message::Message::Transition(Transition {
                from_watermark: 3,
                to_watermark: 5,
                chunks: 1,
                updates: vec![SubscriptionUpdate {
                    subscription_id: "feed".into(),
                    upserts: vec![Document {
                        id: "w1".into(),
                        version: 2,
                        seq: 5,
                        doc: Some(json_to_struct(
                            &serde_json::json!({"title": "x", "priority": 2}),
                        )),
                    }],
                    order: Some(ResultOrder {
                        ids: vec!["w1".into()],
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        let Frame::Text(text) = Codec::Json.encode_server(&message) else {
            panic!()
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["transition"]["fromWatermark"], "3");
        assert_eq!(
            json["transition"]["updates"][0]["upserts"][0]["doc"]["title"],
            "x"
        );
        assert!(
            text.contains(r#""priority":2"#),
            "whole numbers stay integers: {text}"
        );
        assert_eq!(json["transition"]["updates"][0]["order"]["ids"][0], "w1");
        assert_eq!(
            Codec::Json.decode_server(&Frame::Text(text)).unwrap(),
            message
        );
        let binary = Codec::Binary.encode_server(&message);
        assert_eq!(Codec::Binary.decode_server(&binary).unwrap(), message);
    }

    #[test]
    fn malformed_and_unknown_input_is_rejected() {
        let bad = [
            r#"{"hello": "#,
            r#"{"hello": {"protocolVersion": "x"}}"#,
            r#"[]"#,
            r#"{"ping": {}} trailing"#,
        ];
        for text in bad {
            assert!(
                matches!(
                    Codec::Json.decode_client(&Frame::Text(text.into())),
                    Err(DecodeError::Malformed(_))
                ),
                "{text}"
            );
        }
        assert!(matches!(
            Codec::Json.decode_client(&Frame::Binary(vec![1])),
            Err(DecodeError::WrongFrameType { .. })
        ));
        let ok = Codec::Json
            .decode_client(&Frame::Text(
                r#"{"ping": {"nonce": "n", "addedInV2": true}}"#.into(),
            ))
            .unwrap();
        assert_eq!(
            ok.message,
            Some(client_message::Message::Ping(Ping { nonce: "n".into() }))
        );
    }
}
