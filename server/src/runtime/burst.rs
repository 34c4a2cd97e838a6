//! `on-messages` called with a burst lowered straight from the bytes the
//! messages arrived in. Bindgen's `call_on_messages` takes its own
//! `Message`, which owns a `String`/`Vec`: a burst would be copied once into
//! those and again into the guest, an allocation and a copy per message on
//! the hottest path there is. Here a message is lowered as `string` or
//! `list<u8>` from a clone of its `Bytes` (a reference count), which is
//! what wasmtime does for a `&str` or `&[u8]`. Where the plugin exports
//! `on-packed-messages` too, that is called instead (`packed.rs`).

use std::mem::MaybeUninit;

use wasmtime::Store;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{
    ComponentExportIndex, ComponentType, Func, Instance, InstancePre, Lower, TypedFunc,
};

use super::bindings;
use super::load_error::wit_version;
use super::packed::{PackedHook, PackedIndex};
use crate::protocol::{Message, Utf8Bytes};
use crate::registry::ConnId;

/// The exported interface and function, as the WIT names them.
const INTERFACE: &str = concat!("wsgate:plugin/batch-listener@", wit_version!());
const FUNCTION: &str = "on-messages";

/// What the guest returns: one result per message it handled.
type Results = (Vec<Option<bindings::Message>>,);
/// What it is given: the connection and the burst.
type Params<'a> = (ConnId, &'a [Incoming]);

/// Where a plugin's burst hooks are, found once per plugin: `on-messages`,
/// and `on-packed-messages` ([`super::packed`]), which is preferred.
pub struct BurstIndex {
    listed: Option<ComponentExportIndex>,
    packed: Option<PackedIndex>,
}

impl BurstIndex {
    /// `None` if the plugin exports neither.
    pub fn new<T>(pre: &InstancePre<T>) -> Option<BurstIndex> {
        let listed = export_index(pre, INTERFACE, FUNCTION);
        let packed = PackedIndex::new(pre);
        (listed.is_some() || packed.is_some()).then_some(BurstIndex { listed, packed })
    }

    /// The functions in one instance, their types checked against ours once.
    pub fn load<T>(
        &self,
        store: &mut Store<T>,
        instance: &Instance,
    ) -> wasmtime::Result<BurstHook> {
        let listed = match &self.listed {
            Some(index) => {
                let typed = instance.get_typed_func::<Params<'_>, Results>(&mut *store, index)?;
                Some(*typed.func())
            }
            None => None,
        };
        let packed = match &self.packed {
            Some(index) => Some(index.load(store, instance)?),
            None => None,
        };
        Ok(BurstHook { listed, packed })
    }
}

/// Where `interface`'s `function` is in a component, if it exports it.
pub(super) fn export_index<T>(
    pre: &InstancePre<T>,
    interface: &str,
    function: &str,
) -> Option<ComponentExportIndex> {
    let component = pre.component();
    let interface = component.get_export_index(None, interface)?;
    component.get_export_index(Some(&interface), function)
}

/// A burst hook in one instance.
pub struct BurstHook {
    listed: Option<Func>,
    packed: Option<PackedHook>,
}

impl BurstHook {
    /// The results of the messages the guest handled, in order.
    pub async fn call<T: Send>(
        &self,
        store: &mut Store<T>,
        conn: ConnId,
        msgs: &[Message],
    ) -> wasmtime::Result<Vec<Option<Message>>> {
        if let Some(packed) = &self.packed
            && let Some(results) = packed.call(store, conn, msgs).await
        {
            return results;
        }
        let Some(listed) = self.listed else {
            wasmtime::bail!(
                "a message of the burst is too long to pack, and on-messages is not exported"
            );
        };
        let burst: Vec<Incoming> = msgs.iter().map(Incoming::from).collect();
        // SAFETY: `load` checked the function against these very types.
        let typed = unsafe { TypedFunc::<Params<'_>, Results>::new_unchecked(listed) };
        let (results,) = typed.call_async(&mut *store, (conn, &burst)).await?;
        Ok(results
            .into_iter()
            .map(|reply| reply.map(Message::from))
            .collect())
    }
}

/// The WIT `message` variant, lowered from the bytes a message arrived in.
#[derive(ComponentType, Lower)]
#[component(variant)]
enum Incoming {
    #[component(name = "text")]
    Text(Text),
    #[component(name = "binary")]
    Binary(Binary),
}

impl From<&Message> for Incoming {
    fn from(msg: &Message) -> Self {
        match msg {
            Message::Text(text) => Incoming::Text(Text(text.clone())),
            Message::Binary(bytes) => Incoming::Binary(Binary(bytes.clone())),
        }
    }
}

/// A text payload, lowered as a `string` exactly as a `&str` is.
struct Text(Utf8Bytes);

/// A binary payload, lowered as a `list<u8>` exactly as a `&[u8]` is.
struct Binary(bytes::Bytes);

/// Implements the lowering traits for a payload type by handing its
/// borrowed form (`$as`) to wasmtime's own implementation.
macro_rules! lowered_as {
    ($ty:ty, $as:ty, $borrow:expr) => {
        // SAFETY: every item is the borrowed type's own, so the layout,
        // type check and lowering are exactly wasmtime's for it.
        unsafe impl ComponentType for $ty {
            type Lower = <$as as ComponentType>::Lower;
            const ABI: CanonicalAbiInfo = <$as as ComponentType>::ABI;

            fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
                <$as as ComponentType>::typecheck(ty, types)
            }
        }

        // SAFETY: as above.
        unsafe impl Lower for $ty {
            fn linear_lower_to_flat<T>(
                &self,
                cx: &mut LowerContext<'_, T>,
                ty: InterfaceType,
                dst: &mut MaybeUninit<Self::Lower>,
            ) -> wasmtime::Result<()> {
                let borrow: fn(&$ty) -> &$as = $borrow;
                borrow(self).linear_lower_to_flat(cx, ty, dst)
            }

            fn linear_lower_to_memory<T>(
                &self,
                cx: &mut LowerContext<'_, T>,
                ty: InterfaceType,
                offset: usize,
            ) -> wasmtime::Result<()> {
                let borrow: fn(&$ty) -> &$as = $borrow;
                borrow(self).linear_lower_to_memory(cx, ty, offset)
            }
        }
    };
}

lowered_as!(Text, str, |text| text.0.as_str());
lowered_as!(Binary, [u8], |bytes| &bytes.0);
