//! The thread's pool of tapes: a dropped graph gives its tape's memory back, and
//! [`Graph::new`](crate::Graph::new) takes it, so a fresh graph per call (`Graph::new()` inside the function,
//! as a newcomer writes it) allocates nothing after the first call. Uses the tape.

use std::cell::RefCell;

use super::tape::Tape;

/// How many dropped graphs' tapes a thread keeps for its next [`Graph::new`](crate::Graph::new) calls.
const POOLED_TAPES: usize = 4;
/// The largest tape (in nodes of capacity) that is kept: about 4 MiB; a larger one is freed
/// on drop, so a one-off huge graph does not pin its memory.
const POOLED_NODES: usize = 1 << 17;

std::thread_local! {
    /// Tapes of graphs dropped on this thread, emptied, for [`Graph::new`](crate::Graph::new) to reuse: a
    /// fresh graph per call (`Graph::new()` inside the function, as a newcomer writes it)
    /// then allocates nothing after the first call.
    static TAPE_POOL: RefCell<Vec<Tape>> = const { RefCell::new(Vec::new()) };
}

/// A tape given back by a dropped graph of this thread, emptied, if there is one.
pub(in crate::engine) fn take() -> Option<Tape> {
    TAPE_POOL
        .try_with(|pool| pool.borrow_mut().pop())
        .ok()
        .flatten()
}

/// Keeps `tape`'s memory for the next [`Graph::new`](crate::Graph::new) of this thread, if it is not too large
/// and the pool not full.
pub(in crate::engine) fn give_back(mut tape: Tape) {
    if tape.capacity() == 0 || tape.capacity() > POOLED_NODES {
        return;
    }
    tape.reset();
    let _ = TAPE_POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_TAPES {
            pool.push(tape);
        }
    });
}
