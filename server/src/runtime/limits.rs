//! What one instance may hold, and how far its memory has grown.
//!
//! A guest's linear memory never shrinks, and some language runtimes keep
//! a little of every call: a Python plugin built with componentize-py 0.25
//! keeps about a message's size per call (the Python echo plugin fills
//! 32 MiB within 22,000 calls with 1 KiB messages). Such an instance would
//! reach `limits.instance_memory` in the middle of some call, and that
//! call's connection would be closed with 1011. Instead, an instance whose
//! memory has grown to three quarters of the limit is retired once its call
//! is done, and the next call gets a fresh one (microseconds, from the
//! pre-linked component). The limit itself is unchanged: a single call
//! that needs more than it still fails.

use wasmtime::{ResourceLimiter, Result, StoreLimits, StoreLimitsBuilder};

/// Linear memories, tables and instances one instance may have; a plugin
/// needs one or two of each.
const MAX_PARTS: usize = 64;
const MAX_MEMORIES: usize = 16;

pub struct InstanceLimits {
    limits: StoreLimits,
    /// The largest size any of its memories has grown to, in bytes.
    grown_to: usize,
    /// Past this, the instance is retired after its call.
    retire_at: usize,
}

impl InstanceLimits {
    /// Limits for an instance whose memories may each grow to `memory`
    /// bytes.
    pub fn new(memory: usize) -> InstanceLimits {
        InstanceLimits {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(MAX_PARTS)
                .tables(MAX_PARTS)
                .memories(MAX_MEMORIES)
                .build(),
            grown_to: 0,
            retire_at: memory / 4 * 3,
        }
    }

    /// Whether the instance has grown so close to its limit that it should
    /// not take another call.
    pub fn worn_out(&self) -> bool {
        self.grown_to >= self.retire_at
    }
}

/// `StoreLimits`' decisions, with the growth that was allowed noted.
impl ResourceLimiter for InstanceLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.grown_to = self.grown_to.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn an_instance_is_worn_out_at_three_quarters_of_its_memory() {
        let mut limits = InstanceLimits::new(16 * MIB);
        assert!(limits.memory_growing(0, 11 * MIB, None).unwrap());
        assert!(!limits.worn_out());
        assert!(limits.memory_growing(11 * MIB, 12 * MIB, None).unwrap());
        assert!(limits.worn_out());
    }

    #[test]
    fn growth_past_the_limit_is_refused_and_not_counted() {
        let mut limits = InstanceLimits::new(16 * MIB);
        assert!(!limits.memory_growing(0, 17 * MIB, None).unwrap());
        assert!(!limits.worn_out());
    }
}
