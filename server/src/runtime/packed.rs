//! `on-packed-messages`: a burst as one buffer into the guest and its
//! replies as one buffer out. Lowering a `list<message>` calls into the
//! guest's allocator and copies once per message, and lifting the results
//! allocates once per reply; packed, the host copies the payloads straight
//! from the bytes they arrived in into one guest allocation, and the
//! replies come back as slices of one buffer. The layout (`heads`,
//! `payload`) is the WIT's `packed-messages`.

use std::mem::MaybeUninit;

use bytes::Bytes;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{
    ComponentExportIndex, ComponentType, Func, Instance, InstancePre, Lift, Lower, TypedFunc,
};
use wasmtime::{Store, ValRaw};

use super::burst::export_index;
use super::load_error::wit_version;
use crate::protocol::{Message, Utf8Bytes};
use crate::registry::ConnId;

/// The exported interface and function, as the WIT names them.
const INTERFACE: &str = concat!("wsgate:plugin/packed-batch-listener@", wit_version!());
const FUNCTION: &str = "on-packed-messages";

/// A result's head when the message had no reply.
const NO_REPLY: u32 = u32::MAX;

type Params<'a> = (ConnId, Burst<'a>);
type Results = (Replies,);

/// Where `on-packed-messages` is in a component, found once per plugin.
pub struct PackedIndex(ComponentExportIndex);

impl PackedIndex {
    /// `None` if the plugin does not export `on-packed-messages`.
    pub fn new<T>(pre: &InstancePre<T>) -> Option<PackedIndex> {
        export_index(pre, INTERFACE, FUNCTION).map(PackedIndex)
    }

    /// The function in one instance, its type checked against ours once.
    pub fn load<T>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
    ) -> wasmtime::Result<PackedHook> {
        let typed = instance.get_typed_func::<Params<'_>, Results>(&mut *store, &self.0)?;
        Ok(PackedHook(*typed.func()))
    }
}

/// `on-packed-messages` in one instance.
pub struct PackedHook(Func);

impl PackedHook {
    /// `None` (without calling) if a message is too long for a head.
    pub async fn call<T: Send>(
        &self,
        store: &mut Store<T>,
        conn: ConnId,
        msgs: &[Message],
    ) -> Option<wasmtime::Result<Vec<Option<Message>>>> {
        let heads = msgs
            .iter()
            .map(|msg| head(msg.payload()))
            .collect::<Option<Vec<u32>>>()?;
        let burst = Burst {
            heads: &heads,
            payload: Payload(msgs),
        };
        // SAFETY: `load` checked the function against these very types.
        let typed = unsafe { TypedFunc::<Params<'_>, Results>::new_unchecked(self.0) };
        Some(match typed.call_async(&mut *store, (conn, burst)).await {
            Ok((replies,)) => replies.unpack(),
            Err(e) => Err(e),
        })
    }
}

/// A message's head: its length times two, plus one for text.
fn head((binary, payload): (bool, &[u8])) -> Option<u32> {
    let head = u32::try_from(payload.len()).ok()?.checked_mul(2)? + u32::from(!binary);
    (head != NO_REPLY).then_some(head)
}

/// The burst as the guest gets it.
#[derive(ComponentType, Lower)]
#[component(record)]
struct Burst<'a> {
    heads: &'a [u32],
    payload: Payload<'a>,
}

/// The replies as the guest gives them.
#[derive(ComponentType, Lift)]
#[component(record)]
struct Replies {
    heads: Vec<u32>,
    payload: Vec<u8>,
}

impl Replies {
    /// The guest's replies as messages sharing one buffer: a reply is a
    /// slice of it, not an allocation of its own.
    fn unpack(self) -> wasmtime::Result<Vec<Option<Message>>> {
        let payload = Bytes::from(self.payload);
        let mut at = 0;
        let mut replies = Vec::with_capacity(self.heads.len());
        for head in self.heads {
            if head == NO_REPLY {
                replies.push(None);
                continue;
            }
            let end = at + (head >> 1) as usize;
            if end > payload.len() {
                wasmtime::bail!(
                    "on-packed-messages results describe more than their {} payload bytes",
                    payload.len()
                );
            }
            let bytes = payload.slice(at..end);
            at = end;
            replies.push(Some(if head & 1 == 1 {
                Message::Text(Utf8Bytes::from_utf8(bytes).map_err(|e| {
                    wasmtime::format_err!(
                        "on-packed-messages replied with text that is not UTF-8: {e}"
                    )
                })?)
            } else {
                Message::Binary(bytes)
            }));
        }
        if at != payload.len() {
            wasmtime::bail!(
                "on-packed-messages results describe {at} bytes, with {} payload bytes left",
                payload.len() - at
            );
        }
        Ok(replies)
    }
}

/// The burst's payloads, lowered as one `list<u8>`: one guest allocation,
/// each message copied into it from the bytes it arrived in.
struct Payload<'a>(&'a [Message]);

impl Payload<'_> {
    /// Allocates the list in the guest and fills it: its pointer and length.
    fn lower<T>(&self, cx: &mut LowerContext<'_, T>) -> wasmtime::Result<(usize, usize)> {
        let len: usize = self.0.iter().map(Message::len).sum();
        let ptr = cx.realloc(0, 0, 1, len)?;
        let Some(mut dst) = cx
            .as_slice_mut()
            .get_mut(ptr..)
            .and_then(|m| m.get_mut(..len))
        else {
            wasmtime::bail!("the guest allocated {len} bytes outside its memory");
        };
        for msg in self.0 {
            let (_, bytes) = msg.payload();
            let (this, rest) = dst.split_at_mut(bytes.len());
            this.copy_from_slice(bytes);
            dst = rest;
        }
        Ok((ptr, len))
    }
}

// SAFETY: the layout and type check are a `list<u8>`'s, as wasmtime gives
// them for `[u8]`, and the lowering below writes what wasmtime's own does.
unsafe impl ComponentType for Payload<'_> {
    type Lower = [ValRaw; 2];
    const ABI: CanonicalAbiInfo = <[u8] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[u8] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: as above; pointer and length are written as wasmtime writes a
// list's (flat: two 64-bit values the guest reads as i32; in memory: two
// little-endian u32s).
unsafe impl Lower for Payload<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.lower(cx)?;
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.lower(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(heads: &[u32], payload: &[u8]) -> wasmtime::Result<Vec<Option<Message>>> {
        Replies {
            heads: heads.to_vec(),
            payload: payload.to_vec(),
        }
        .unpack()
    }

    #[test]
    fn heads_carry_length_and_kind() {
        assert_eq!(head((true, b"abc")), Some(6));
        assert_eq!(head((false, b"abc")), Some(7));
        assert_eq!(head((true, b"")), Some(0));
    }

    #[test]
    fn replies_are_slices_of_one_payload() {
        let got = replies(&[7, NO_REPLY, 4, 1], b"hi!\x00\x01").unwrap();
        assert_eq!(
            got,
            vec![
                Some(Message::text("hi!")),
                None,
                Some(Message::Binary(Bytes::from_static(b"\x00\x01"))),
                Some(Message::text("")),
            ]
        );
    }

    #[test]
    fn replies_that_do_not_add_up_are_refused() {
        let short = replies(&[8], b"abc").unwrap_err().to_string();
        assert!(short.contains("more than their 3 payload bytes"), "{short}");
        let left = replies(&[2], b"abc").unwrap_err().to_string();
        assert!(
            left.contains("1 bytes, with 2 payload bytes left"),
            "{left}"
        );
        let text = replies(&[3], b"\xff").unwrap_err().to_string();
        assert!(text.contains("not UTF-8"), "{text}");
    }
}
