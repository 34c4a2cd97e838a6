//! Which other nodes have members in which groups, learnt from their
//! presence announcements and snapshots. It lets a delivery's count say
//! "somebody elsewhere has it" (the chat's "X is not here" notice depends
//! on that) without asking Redis from inside a hook.

use std::collections::HashSet;

use dashmap::DashMap;

use crate::registry::GroupKind;

#[derive(Default)]
pub struct Presence {
    /// Group key -> the nodes with members in it.
    groups: DashMap<String, HashSet<u64>>,
}

fn key(plugin: &str, kind: GroupKind, name: &str) -> String {
    let kind = match kind {
        GroupKind::Channel => 'c',
        GroupKind::Tag => 't',
    };
    // NUL cannot occur in a plugin name, so keys cannot collide.
    format!("{plugin}\0{kind}{name}")
}

impl Presence {
    pub fn set(&self, node: u64, plugin: &str, kind: GroupKind, name: &str, present: bool) {
        let key = key(plugin, kind, name);
        if present {
            self.groups.entry(key).or_default().insert(node);
        } else {
            if let Some(mut nodes) = self.groups.get_mut(&key) {
                nodes.remove(&node);
            }
            self.groups.remove_if(&key, |_, nodes| nodes.is_empty());
        }
    }

    /// Replaces everything known of `node` with `groups`.
    pub fn replace_node(&self, node: u64, groups: &[(String, GroupKind, String)]) {
        self.drop_node(node);
        for (plugin, kind, name) in groups {
            self.set(node, plugin, *kind, name, true);
        }
    }

    /// Forgets a node that left or died.
    pub fn drop_node(&self, node: u64) {
        self.groups.retain(|_, nodes| {
            nodes.remove(&node);
            !nodes.is_empty()
        });
    }

    /// Forgets every node not in `alive`.
    pub fn keep_only(&self, alive: &HashSet<u64>) {
        self.groups.retain(|_, nodes| {
            nodes.retain(|n| alive.contains(n));
            !nodes.is_empty()
        });
    }

    /// The other nodes with members in a group.
    pub fn nodes(&self, plugin: &str, kind: GroupKind, name: &str) -> HashSet<u64> {
        self.groups
            .get(&key(plugin, kind, name))
            .map(|nodes| nodes.clone())
            .unwrap_or_default()
    }

    pub fn nodes_with(&self, plugin: &str, kind: GroupKind, name: &str) -> u32 {
        self.groups
            .get(&key(plugin, kind, name))
            .map_or(0, |nodes| nodes.len() as u32)
    }

    /// Distinct groups of one kind that any other node has, per plugin.
    pub fn names(&self, plugin: &str, kind: GroupKind) -> Vec<String> {
        let prefix = key(plugin, kind, "");
        self.groups
            .iter()
            .filter_map(|g| g.key().strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_nodes_per_group() {
        let p = Presence::default();
        p.set(1, "chat", GroupKind::Tag, "user:a@x", true);
        p.set(2, "chat", GroupKind::Tag, "user:a@x", true);
        assert_eq!(p.nodes_with("chat", GroupKind::Tag, "user:a@x"), 2);
        assert_eq!(p.nodes_with("chat", GroupKind::Channel, "user:a@x"), 0);
        assert_eq!(p.nodes_with("other", GroupKind::Tag, "user:a@x"), 0);
        p.set(1, "chat", GroupKind::Tag, "user:a@x", false);
        assert_eq!(p.nodes_with("chat", GroupKind::Tag, "user:a@x"), 1);
        p.drop_node(2);
        assert_eq!(p.nodes_with("chat", GroupKind::Tag, "user:a@x"), 0);
    }

    #[test]
    fn snapshots_replace_and_dead_nodes_vanish() {
        let p = Presence::default();
        p.set(1, "chat", GroupKind::Channel, "old", true);
        p.replace_node(1, &[("chat".into(), GroupKind::Channel, "new".into())]);
        assert_eq!(p.names("chat", GroupKind::Channel), vec!["new".to_owned()]);
        p.set(2, "chat", GroupKind::Channel, "b", true);
        p.keep_only(&HashSet::from([2]));
        assert_eq!(p.names("chat", GroupKind::Channel), vec!["b".to_owned()]);
    }
}
