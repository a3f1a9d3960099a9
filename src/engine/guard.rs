//! Comparisons recorded as guards: which comparison, of which operands, with which outcome,
//! and where; and the raw value reads a replay cannot check ([`ReadLog`]). A
//! [`Replay`](crate::Replay) re-evaluates each guard at its new inputs and refuses to answer
//! when one flips, and refuses to be built over a read. Storage only: no graph, no handles.

use std::panic::Location;

/// The value comparisons, one row each, handed to `$callback`: the method's name, the
/// comparison, and an example `(x, y, x cmp y)`. `Scalar` and `Var` each make their six
/// methods from these rows.
macro_rules! comparisons {
    ($callback:ident) => {
        $callback! {
            /// `self < other`, by value.
            lt => Lt, (1.0, 2.0, true);
            /// `self <= other`, by value.
            le => Le, (2.0, 2.0, true);
            /// `self > other`, by value.
            gt => Gt, (1.0, 2.0, false);
            /// `self >= other`, by value.
            ge => Ge, (1.0, 2.0, false);
            /// `self == other`, by value (`Var` has no `==`: see
            /// [`Var::same_node`](crate::Var::same_node)).
            eq_value => Eq, (2.0, 2.0, true);
            /// `self != other`, by value.
            ne_value => Ne, (2.0, 2.0, false);
        }
    };
}
pub(in crate::engine) use comparisons;

/// A value comparison between two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::engine) enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Comparison {
    /// The comparison of `a` and `b`, as `f64`'s operators make it (false with a NaN,
    /// except `!=`).
    #[inline]
    pub(in crate::engine) fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Lt => a < b,
            Comparison::Le => a <= b,
            Comparison::Gt => a > b,
            Comparison::Ge => a >= b,
            Comparison::Eq => a == b,
            Comparison::Ne => a != b,
        }
    }

    /// The operator's symbol, for messages.
    pub(in crate::engine) fn symbol(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
        }
    }
}

/// One recorded comparison: `operands` are tape positions, or `CONST_ARG` with the
/// constant in `constants`.
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct Guard {
    /// The tape's length when the comparison was made: a release below it forgets it.
    pub(in crate::engine) at: u32,
    pub(in crate::engine) comparison: Comparison,
    pub(in crate::engine) operands: [u32; 2],
    pub(in crate::engine) constants: [f64; 2],
    pub(in crate::engine) outcome: bool,
    pub(in crate::engine) location: &'static Location<'static>,
}

/// The raw value reads ([`Var::value`](crate::Var::value) and its kin) made while replay
/// checks are on: the first read of each node, by position, with where it was made. A
/// replay cannot see Rust control flow on such a read, so
/// [`Replay::try_new`](crate::Replay::try_new) refuses to be built over a read of a node
/// that depends on its inputs.
///
/// A node read again costs one bit test (a per-position bit set), so reading the same
/// values in a loop (an optimizer reading its parameters) keeps the log as short as the
/// number of nodes read.
#[derive(Debug, Default)]
pub(in crate::engine) struct ReadLog {
    /// The first read of each node read, in the order of those first reads.
    reads: Vec<(u32, &'static Location<'static>)>,
    /// Bit `pos` is set when node `pos` has a read in `reads`.
    seen: Vec<u64>,
}

impl ReadLog {
    /// Whether node `pos` was read already (then a new read needs no note).
    #[inline(always)]
    pub(in crate::engine) fn has(&self, pos: u32) -> bool {
        let (word, bit) = (pos as usize / 64, pos % 64);
        self.seen.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Notes a read of node `pos` at `location`, unless it was read before.
    pub(in crate::engine) fn note(&mut self, pos: u32, location: &'static Location<'static>) {
        if self.has(pos) {
            return;
        }
        let (word, bit) = (pos as usize / 64, pos % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        self.seen[word] |= 1 << bit;
        self.reads.push((pos, location));
    }

    /// Forgets the reads of nodes at position `len` and above (released).
    pub(in crate::engine) fn truncate(&mut self, len: usize) {
        let seen = &mut self.seen;
        self.reads.retain(|&(pos, _)| {
            let kept = (pos as usize) < len;
            if !kept {
                seen[pos as usize / 64] &= !(1 << (pos % 64));
            }
            kept
        });
    }

    /// Every node read, with where its first read was made, in the order of those reads.
    pub(in crate::engine) fn iter(
        &self,
    ) -> impl Iterator<Item = (u32, &'static Location<'static>)> + '_ {
        self.reads.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_log_keeps_the_first_read_of_each_node_until_its_release() {
        let (here, there) = (Location::caller(), Location::caller());
        let mut log = ReadLog::default();
        log.note(3, here);
        log.note(200, there);
        log.note(3, there);
        assert!(log.has(3) && log.has(200) && !log.has(4) && !log.has(100_000));
        assert_eq!(log.iter().collect::<Vec<_>>(), [(3, here), (200, there)]);
        log.truncate(100);
        assert!(log.has(3) && !log.has(200));
        log.note(200, here);
        assert_eq!(log.iter().collect::<Vec<_>>(), [(3, here), (200, here)]);
    }
}
