//! What nodes say to each other on the bus: a JSON header line, then (for
//! deliveries) the message payload as raw bytes, so payloads are never
//! re-encoded (no base64, no escaping). With `cluster.secret`, every frame
//! is sealed: an HMAC-SHA256 of the rest comes first, so other software
//! sharing the Redis cannot publish to the bus in a node's name.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::protocol::{Message, Utf8Bytes};
use crate::registry::{ConnId, GroupKind, Target};

/// One frame on the bus. `node` is the sender, so a node can skip its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Header {
    /// A delivery made on `node`, to be repeated on every other node.
    Deliver {
        node: u64,
        plugin: String,
        target: WireTarget,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<ConnId>,
        binary: bool,
    },
    /// A group on `node` gained its first or lost its last member.
    Presence {
        node: u64,
        plugin: String,
        kind: GroupKind,
        name: String,
        present: bool,
    },
    /// A message recorded in a channel's history, published to the bus by
    /// the recording script, which puts the position between the header
    /// line and the message (`POSITION\n`), and, with `at`, into the
    /// message too, at that byte offset. Every node delivers it, the
    /// publisher's too: the bus is what orders a channel's messages. The
    /// seal covers the message without its position, which the script
    /// only learns.
    Recorded {
        node: u64,
        plugin: String,
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<ConnId>,
        binary: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<usize>,
    },
    /// Asks `node`'s peers with members in a group to list them to it.
    Query {
        node: u64,
        id: u64,
        plugin: String,
        kind: GroupKind,
        name: String,
    },
    /// The answer to query `id`: the members on `node`.
    Members {
        node: u64,
        id: u64,
        members: Vec<ConnId>,
    },
    /// Every group with members on `node`, replacing what was known of it.
    /// `reply` asks every other node to answer with its own snapshot (a
    /// node sends it when it (re)joins the bus).
    Snapshot {
        node: u64,
        reply: bool,
        groups: Vec<(String, GroupKind, String)>,
    },
}

/// [`Target`] with owned names, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum WireTarget {
    Channel(String),
    Tag(String),
    All,
    Route(String),
    Connections(Vec<ConnId>),
}

impl WireTarget {
    pub fn from_target(target: Target<'_>) -> WireTarget {
        match target {
            Target::Channel(n) => WireTarget::Channel(n.to_owned()),
            Target::Tag(n) => WireTarget::Tag(n.to_owned()),
            Target::All => WireTarget::All,
            Target::Route(r) => WireTarget::Route(r.to_owned()),
            Target::Connections(ids) => WireTarget::Connections(ids.to_vec()),
        }
    }

    pub fn as_target(&self) -> Target<'_> {
        match self {
            WireTarget::Channel(n) => Target::Channel(n),
            WireTarget::Tag(n) => Target::Tag(n),
            WireTarget::All => Target::All,
            WireTarget::Route(r) => Target::Route(r),
            WireTarget::Connections(ids) => Target::Connections(ids),
        }
    }
}

/// Why a frame from the bus was not understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("no header line")]
    NoHeader,
    #[error("bad header: {0}")]
    Header(String),
    #[error("text payload is not UTF-8")]
    NotUtf8,
    #[error("not sealed with this cluster's secret")]
    Unsealed,
    #[error("a recorded message without a valid position")]
    BadPosition,
}

const SEAL_LEN: usize = 32;

/// The cluster's secret, if it has one: what seals and checks frames.
#[derive(Clone)]
pub struct Seal(Option<Hmac<Sha256>>);

impl Seal {
    pub fn new(secret: Option<&str>) -> Seal {
        Seal(secret.map(|s| Hmac::new_from_slice(s.as_bytes()).expect("any key length")))
    }

    fn mac(&self) -> Option<Hmac<Sha256>> {
        self.0.clone()
    }
}

pub fn encode(seal: &Seal, header: &Header, payload: &[u8]) -> Bytes {
    let mut out = head(seal, header, &[payload]);
    out.put_slice(payload);
    out.freeze()
}

/// The seal and header line, sealing `payload` (in parts) with them.
fn head(seal: &Seal, header: &Header, payload: &[&[u8]]) -> BytesMut {
    let json = serde_json::to_vec(header).expect("headers always serialize");
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(SEAL_LEN + json.len() + 1 + len);
    if let Some(mut mac) = seal.mac() {
        mac.update(&json);
        mac.update(b"\n");
        for part in payload {
            mac.update(part);
        }
        out.put_slice(&mac.finalize().into_bytes());
    }
    out.put_slice(&json);
    out.put_u8(b'\n');
    out
}

/// The start of a [`Header::Recorded`] frame, up to where the recording
/// script adds the position: it seals the message without the position
/// (`before` and `after` it, or the whole message as `before`).
pub fn recorded_head(seal: &Seal, header: &Header, before: &[u8], after: &[u8]) -> Bytes {
    head(seal, header, &[before, after]).freeze()
}

/// A header and, for deliveries, the message it carries.
pub fn decode(seal: &Seal, mut frame: Bytes) -> Result<(Header, Option<Message>), DecodeError> {
    let sealed = match seal.mac() {
        Some(_) if frame.len() < SEAL_LEN => return Err(DecodeError::Unsealed),
        Some(_) => Some(frame.split_to(SEAL_LEN)),
        None => None,
    };
    // serde_json escapes newlines inside strings, so the first one ends
    // the header. Nothing of the header is used before the seal is checked.
    // Before the seal is checked, anything not understood is a frame
    // that is not sealed right.
    let unsealed = |e: DecodeError| match sealed {
        Some(_) => DecodeError::Unsealed,
        None => e,
    };
    let split = frame
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(DecodeError::NoHeader)
        .map_err(unsealed)?;
    let header: Result<Header, _> = serde_json::from_slice(&frame[..split]);
    let header = header.map_err(|e| unsealed(DecodeError::Header(e.to_string())))?;
    let json = frame.slice(..split);
    let mut body = frame.slice(split + 1..);
    let mut parts = [body.clone(), Bytes::new()];
    if let Header::Recorded { at, .. } = &header {
        let end = body
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(DecodeError::BadPosition)?;
        let line = body.slice(..end);
        let position = std::str::from_utf8(&line).map_err(|_| DecodeError::BadPosition)?;
        position
            .parse::<crate::history::Position>()
            .map_err(|_| DecodeError::BadPosition)?;
        let len = position.len();
        body = body.slice(end + 1..);
        parts = match *at {
            Some(at) if body.get(at..at + len) == Some(position.as_bytes()) => {
                [body.slice(..at), body.slice(at + len..)]
            }
            Some(_) => return Err(DecodeError::BadPosition),
            None => [body.clone(), Bytes::new()],
        };
    }
    if let (Some(sealed), Some(mut mac)) = (sealed, seal.mac()) {
        mac.update(&json);
        mac.update(b"\n");
        mac.update(&parts[0]);
        mac.update(&parts[1]);
        mac.verify_slice(&sealed)
            .map_err(|_| DecodeError::Unsealed)?;
    }
    let binary = match &header {
        Header::Deliver { binary, .. } | Header::Recorded { binary, .. } => binary,
        _ => return Ok((header, None)),
    };
    let msg = match binary {
        true => Message::Binary(body),
        false => Message::Text(Utf8Bytes::try_from(body).map_err(|_| DecodeError::NotUtf8)?),
    };
    Ok((header, Some(msg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(target: WireTarget, binary: bool) -> Header {
        Header::Deliver {
            node: 3,
            plugin: "chat".into(),
            target,
            except: Some(7),
            binary,
        }
    }

    #[test]
    fn deliveries_round_trip_with_raw_payloads() {
        let cases = [
            (
                WireTarget::Channel("lobby\nx".into()),
                false,
                "hi\n{\"x\":1}".as_bytes(),
            ),
            (WireTarget::Tag("user:a@b".into()), false, "".as_bytes()),
            (WireTarget::All, true, &[0u8, 10, 255][..]),
            (
                WireTarget::Route("/ws/chat/{channel}".into()),
                true,
                &[][..],
            ),
            (
                WireTarget::Connections(vec![1, 1 << 52]),
                false,
                "ü".as_bytes(),
            ),
        ];
        for (target, binary, body) in cases {
            let header = deliver(target, binary);
            let (back, msg) =
                decode(&Seal::new(None), encode(&Seal::new(None), &header, body)).unwrap();
            assert_eq!(back, header);
            let msg = msg.unwrap();
            assert_eq!(msg.payload(), (binary, body));
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        assert_eq!(
            decode(&Seal::new(None), Bytes::from_static(b"{}")),
            Err(DecodeError::NoHeader)
        );
        assert!(matches!(
            decode(&Seal::new(None), Bytes::from_static(b"{\"t\":\"nope\"}\n")),
            Err(DecodeError::Header(_))
        ));
        let text = encode(
            &Seal::new(None),
            &deliver(WireTarget::All, false),
            &[0xff, 0xfe],
        );
        assert_eq!(
            decode(&Seal::new(None), text).unwrap_err(),
            DecodeError::NotUtf8
        );
        let snapshot = Header::Snapshot {
            node: 1,
            reply: true,
            groups: vec![("chat".into(), GroupKind::Tag, "user:x@y".into())],
        };
        assert_eq!(
            decode(&Seal::new(None), encode(&Seal::new(None), &snapshot, b"")).unwrap(),
            (snapshot, None)
        );
    }

    /// What the recording script appends to the head.
    fn as_script_would(head: Bytes, position: &str, body: &[u8]) -> Bytes {
        [head.as_ref(), position.as_bytes(), b"\n", body]
            .concat()
            .into()
    }

    #[test]
    fn recorded_frames_carry_their_position_under_the_seal() {
        let seal = Seal::new(Some("s3cret"));
        let header = Header::Recorded {
            node: 2,
            plugin: "chat".into(),
            channel: "lobby".into(),
            except: None,
            binary: false,
            at: Some(8),
        };
        let head = recorded_head(&seal, &header, b"{\"pos\":\"", b"\"}");
        let frame = as_script_would(head.clone(), "ab12:7", b"{\"pos\":\"ab12:7\"}");
        let (back, msg) = decode(&seal, frame).unwrap();
        assert_eq!(back, header);
        assert_eq!(msg, Some(Message::text("{\"pos\":\"ab12:7\"}")));
        // The message changed around the position: refused.
        let changed = as_script_would(head.clone(), "ab12:7", b"{\"pos\":\"ab12:7\"!");
        assert_eq!(decode(&seal, changed).unwrap_err(), DecodeError::Unsealed);
        // A position that is not one, or not where the header says.
        let junk = as_script_would(head.clone(), "ab 12:7", b"{\"pos\":\"ab 12:7\"}");
        assert_eq!(decode(&seal, junk).unwrap_err(), DecodeError::BadPosition);
        let elsewhere = as_script_would(head, "ab12:7", b"{\"pos\":\"\"}ab12:7");
        assert_eq!(
            decode(&seal, elsewhere).unwrap_err(),
            DecodeError::BadPosition
        );
        // A plain recorded message is sealed whole.
        let plain = Header::Recorded {
            node: 2,
            plugin: "chat".into(),
            channel: "lobby".into(),
            except: None,
            binary: true,
            at: None,
        };
        let head = recorded_head(&seal, &plain, &[0, 1, 2], b"");
        let (_, msg) = decode(&seal, as_script_would(head, "ab12:8", &[0, 1, 2])).unwrap();
        assert_eq!(msg, Some(Message::Binary(Bytes::from_static(&[0, 1, 2]))));
    }

    #[test]
    fn sealed_frames_need_the_secret() {
        let seal = Seal::new(Some("s3cret"));
        let header = deliver(WireTarget::Channel("lobby".into()), false);
        let frame = encode(&seal, &header, b"hi");
        let (back, msg) = decode(&seal, frame.clone()).unwrap();
        assert_eq!((back, msg), (header.clone(), Some(Message::text("hi"))));
        // Unsealed, sealed with another secret, or tampered with: refused.
        let plain = encode(&Seal::new(None), &header, b"hi");
        assert_eq!(decode(&seal, plain).unwrap_err(), DecodeError::Unsealed);
        let other = encode(&Seal::new(Some("guess")), &header, b"hi");
        assert_eq!(decode(&seal, other).unwrap_err(), DecodeError::Unsealed);
        let mut tampered = frame.to_vec();
        *tampered.last_mut().unwrap() = b'o';
        let tampered = Bytes::from(tampered);
        assert_eq!(decode(&seal, tampered).unwrap_err(), DecodeError::Unsealed);
    }
}
