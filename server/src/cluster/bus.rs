//! Which Redis channel a frame travels on. A node listens only where it has
//! members, so it receives (and decodes) only the deliveries it may have to
//! make, and adding nodes adds capacity instead of adding to every node's
//! load:
//!
//! - every channel and tag of every plugin hashes to one of
//!   `cluster.partitions` partition channels (`PREFIX:p:N`), and so does
//!   each plugin's "every connection" (broadcasts, route deliveries);
//! - a send to given connections goes to their nodes' own channels
//!   (`PREFIX:n:NODE`);
//! - presence and snapshots, which every node needs, go to the control
//!   channel (`{PREFIX}:bus`).
//!
//! Partitions, not one Redis channel per group: a node's subscriptions stay
//! bounded however many groups its members join, and on a Redis Cluster the
//! partitions spread over the shards by their names' hash slots. The
//! control channel and every key carry the `{PREFIX}` hash tag, so they
//! share one slot and multi-key commands stay legal on a cluster.

use crate::registry::{GroupKind, Interest};

/// Where a frame is published, and what a node subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bus {
    Control,
    Partition(u16),
    Node(u64),
}

impl Bus {
    /// The Redis channel's name under `prefix`.
    pub fn name(self, prefix: &str) -> String {
        match self {
            Bus::Control => format!("{{{prefix}}}:bus"),
            Bus::Partition(p) => format!("{prefix}:p:{p}"),
            Bus::Node(n) => format!("{prefix}:n:{n}"),
        }
    }
}

/// A Redis key under `prefix`, in the control channel's hash slot.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{{{prefix}}}:{name}")
}

/// The partition `interest` of `plugin` hashes to, out of `partitions`.
/// Every node must compute the same one, so the hash is FNV-1a, fixed
/// here, and never a per-process random hasher.
pub fn partition(plugin: &str, interest: Interest<'_>, partitions: u16) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let kind: &[u8] = match interest {
        Interest::Group(GroupKind::Channel, _) => b"\0c",
        Interest::Group(GroupKind::Tag, _) => b"\0t",
        Interest::Plugin => b"\0*",
    };
    let name = match interest {
        Interest::Group(_, name) => name.as_bytes(),
        Interest::Plugin => b"",
    };
    let mut hash = OFFSET;
    for byte in plugin.as_bytes().iter().chain(kind).chain(name) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(PRIME);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

/// The Redis channel a delivery to `interest` of `plugin` travels on: what
/// a test or a tool needs to publish a frame where a node listens.
pub fn channel_for(prefix: &str, plugin: &str, interest: Interest<'_>, partitions: u16) -> String {
    Bus::Partition(partition(plugin, interest, partitions)).name(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        let lobby = Interest::Group(GroupKind::Channel, "lobby");
        // Fixed across processes and versions: nodes must agree.
        assert_eq!(partition("chat", lobby, 128), partition("chat", lobby, 128));
        let tag = Interest::Group(GroupKind::Tag, "lobby");
        let seen: std::collections::HashSet<u16> = (0..1000)
            .map(|i| {
                let name = format!("room-{i}");
                partition("chat", Interest::Group(GroupKind::Channel, &name), 128)
            })
            .collect();
        assert!(
            seen.len() > 120,
            "1000 names hit only {} of 128",
            seen.len()
        );
        assert!(seen.iter().all(|p| *p < 128));
        // Kinds and plugins are apart (with overwhelming likelihood here).
        let differs = ["a", "b", "c", "d"]
            .iter()
            .any(|p| partition(p, lobby, 128) != partition(p, tag, 128));
        assert!(differs);
        assert_eq!(partition("chat", lobby, 1), 0);
    }

    #[test]
    fn names_keep_keys_in_one_slot_and_partitions_apart() {
        assert_eq!(Bus::Control.name("wsgate"), "{wsgate}:bus");
        assert_eq!(key("wsgate", "node:3"), "{wsgate}:node:3");
        assert_eq!(Bus::Partition(7).name("wsgate"), "wsgate:p:7");
        assert_eq!(Bus::Node(3).name("wsgate"), "wsgate:n:3");
    }
}
