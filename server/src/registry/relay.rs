//! The seam between one node's registry and the rest of a cluster.
//!
//! Every delivery the registry makes (publish, send to a tag, broadcast,
//! send to given connections) is described by a [`Target`], so the same
//! description can be carried to other nodes and delivered there. Without a
//! cluster there is no [`Relay`] and everything stays in-process.

use crate::protocol::Message;

use super::ConnId;

/// Who a delivery is for, within one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Channel(&'a str),
    Tag(&'a str),
    /// Every connection of the plugin.
    All,
    /// Every connection that came in on this route pattern.
    Route(&'a str),
    /// These connections (ids are unique across the cluster).
    Connections(&'a [ConnId]),
}

/// The kinds of named group a connection can be a member of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    Channel,
    Tag,
}

impl GroupKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            GroupKind::Channel => "channel",
            GroupKind::Tag => "tag",
        }
    }
}

impl std::str::FromStr for GroupKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "channel" => Ok(GroupKind::Channel),
            "tag" => Ok(GroupKind::Tag),
            _ => Err(()),
        }
    }
}

impl Target<'_> {
    /// The named group the target is, if it is one.
    pub fn group(&self) -> Option<(GroupKind, &str)> {
        match *self {
            Target::Channel(name) => Some((GroupKind::Channel, name)),
            Target::Tag(name) => Some((GroupKind::Tag, name)),
            _ => None,
        }
    }
}

/// Which deliveries from other nodes a member on this node needs: those to
/// one of its groups, or those to every connection of its plugin (`All`
/// and `Route` targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest<'a> {
    Group(GroupKind, &'a str),
    Plugin,
}

impl<'a> Interest<'a> {
    /// The interest a delivery to `target` is heard by; `None` for
    /// deliveries to given connections, which go to their nodes directly.
    pub fn of(target: Target<'a>) -> Option<Interest<'a>> {
        match target {
            Target::Channel(name) => Some(Interest::Group(GroupKind::Channel, name)),
            Target::Tag(name) => Some(Interest::Group(GroupKind::Tag, name)),
            Target::All | Target::Route(_) => Some(Interest::Plugin),
            Target::Connections(_) => None,
        }
    }
}

/// Resolves once this node hears what other nodes deliver for an interest
/// it just took up (or once waiting for that stopped being worth it: the
/// wait is bounded). A member that waits for it before it is announced,
/// or before its handshake completes, misses nothing sent after.
pub type Listening = futures_util::future::BoxFuture<'static, ()>;

/// Carries deliveries to the other nodes of a cluster. Implementations
/// never block: they are called from inside plugin hooks.
pub trait Relay: Send + Sync {
    /// Hands a delivery made on this node to every other node.
    fn forward(&self, plugin: &str, target: Target<'_>, msg: &Message, except: Option<ConnId>);

    /// A group on this node gained its first member (`present`) or lost
    /// its last one, so other nodes know whether to count it.
    fn presence(&self, plugin: &str, kind: GroupKind, name: &str, present: bool);

    /// How many other nodes have members in the group: what a delivery's
    /// count adds for them, since their exact counts are not known here.
    fn remote_nodes(&self, plugin: &str, kind: GroupKind, name: &str) -> u32;

    /// Whether a connection id belongs to another node.
    fn is_remote(&self, id: ConnId) -> bool;

    /// One more member on this node has `interest`: this node must hear
    /// the matching deliveries made elsewhere. `Some` while it does not yet.
    fn listen(&self, plugin: &str, interest: Interest<'_>) -> Option<Listening>;

    /// One member fewer has `interest`.
    fn unlisten(&self, plugin: &str, interest: Interest<'_>);

    /// Groups of one kind with members on other nodes, as those nodes
    /// announced them.
    fn remote_names(&self, plugin: &str, kind: GroupKind) -> Vec<String>;

    /// The plugin's connections on other nodes, as of their last
    /// heartbeats.
    fn remote_connections(&self, plugin: &str) -> usize;

    /// The members of a group on other nodes, asked of each node that has
    /// any; resolves with what answered within a bounded wait.
    fn remote_members(
        &self,
        plugin: &str,
        kind: GroupKind,
        name: &str,
    ) -> futures_util::future::BoxFuture<'static, Vec<ConnId>>;
}
