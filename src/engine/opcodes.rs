//! Each node's [`Op`] in one byte, the tape's `ops` column: the op codes and the table that
//! reads them back. Uses the op table only.

use super::op::{Binary, Nary, Op, Unary};

/// Each node's [`Op`] in one byte (an `Op` takes two): its index in [`ALL_OPS`]. The
/// codes left after the built-in ops number the graph's user-defined functions. Reading
/// `ops[pos]` gives the `Op` itself. On the W2 chain this byte is what keeps peak memory
/// under 48 bytes per recorded op (47, with the adjoints; it was 48).
#[derive(Debug, Default)]
pub(in crate::engine) struct OpCodes(Vec<u8>);

const N_UNARY: usize = Unary::ALL.len();
const N_BINARY: usize = Binary::ALL.len();
const NARY: [Nary; 5] = [
    Nary::Sum,
    Nary::Dot,
    Nary::LogSumExp,
    Nary::Max,
    Nary::Clamp,
];

/// Every op, in code order: the two leaves, then the unary, binary and n-ary ops in their
/// table order, fused, a block's dot ([`BLOCK_DOT_CODE`]), the user-defined functions.
static ALL_OPS: [Op; 256] = {
    let mut all = [Op::Input; 256];
    all[1] = Op::Constant;
    let mut k = 0;
    while k < N_UNARY {
        all[2 + k] = Op::Unary(Unary::ALL[k]);
        k += 1;
    }
    k = 0;
    while k < N_BINARY {
        all[2 + N_UNARY + k] = Op::Binary(Binary::ALL[k]);
        k += 1;
    }
    k = 0;
    while k < NARY.len() {
        all[2 + N_UNARY + N_BINARY + k] = Op::Nary(NARY[k]);
        k += 1;
    }
    all[FUSED_CODE] = Op::Fused;
    all[BLOCK_DOT_CODE as usize] = Op::Nary(Nary::Dot);
    k = 0;
    while k < MAX_CUSTOM {
        all[FIRST_CUSTOM + k] = Op::Custom(k as u8);
        k += 1;
    }
    all
};

/// The code of [`Op::Fused`], after the built-in ops.
const FUSED_CODE: usize = 2 + N_UNARY + N_BINARY + NARY.len();
/// The code of a [`DotBlock`]'s nodes: [`Nary::Dot`] to everyone who reads the op, a
/// node whose edges are its block's to the tape.
pub(in crate::engine) const BLOCK_DOT_CODE: u8 = (FUSED_CODE + 1) as u8;
/// The first code of [`Op::Custom`]; the rest of the byte is theirs.
const FIRST_CUSTOM: usize = BLOCK_DOT_CODE as usize + 1;
/// How many user-defined functions one graph can hold (the op codes left in a byte).
pub(in crate::engine) const MAX_CUSTOM: usize = 256 - FIRST_CUSTOM;

impl OpCodes {
    /// `op`'s index in [`ALL_OPS`]. The unary and binary tables list their ops in
    /// declaration order, so an op's discriminant is its index there.
    #[inline(always)]
    fn code(op: Op) -> u8 {
        (match op {
            Op::Input => 0,
            Op::Constant => 1,
            Op::Unary(u) => 2 + u as usize,
            Op::Binary(b) => 2 + N_UNARY + b as usize,
            // Exhaustive on purpose: a new n-ary op must be added to `NARY` too.
            Op::Nary(n) => {
                2 + N_UNARY
                    + N_BINARY
                    + match n {
                        Nary::Sum => 0,
                        Nary::Dot => 1,
                        Nary::LogSumExp => 2,
                        Nary::Max => 3,
                        Nary::Clamp => 4,
                    }
            }
            Op::Fused => FUSED_CODE,
            Op::Custom(k) => FIRST_CUSTOM + usize::from(k),
        }) as u8
    }

    /// Room for `room` nodes, the first `kept` codes kept.
    pub(in crate::engine) fn regrow(&mut self, kept: usize, room: usize) {
        if room > self.0.len() {
            let mut codes = vec![0; room];
            codes[..kept].copy_from_slice(&self.0[..kept]);
            self.0 = codes;
        }
    }

    /// Sets node `pos`'s op.
    #[inline(always)]
    pub(in crate::engine) fn set(&mut self, pos: usize, op: Op) {
        self.0[pos] = Self::code(op);
    }

    /// Sets the ops of the nodes at `positions`.
    pub(in crate::engine) fn fill(&mut self, positions: std::ops::Range<usize>, op: Op) {
        self.0[positions].fill(Self::code(op));
    }

    /// Makes the nodes at `positions` the outputs of a
    /// [`DotBlock`](super::tape::DotBlock).
    pub(in crate::engine) fn fill_block_dots(&mut self, positions: std::ops::Range<usize>) {
        self.0[positions].fill(BLOCK_DOT_CODE);
    }

    /// Makes node `pos` an ordinary dot node (a block node given its edges).
    pub(in crate::engine) fn set_dot(&mut self, pos: usize) {
        self.0[pos] = Self::code(Op::Nary(Nary::Dot));
    }

    /// Whether node `pos` is a block's (stores no edges).
    #[inline]
    pub(in crate::engine) fn is_block_dot(&self, pos: usize) -> bool {
        self.0[pos] == BLOCK_DOT_CODE
    }

    pub(in crate::engine) fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl std::ops::Index<usize> for OpCodes {
    type Output = Op;

    #[inline]
    fn index(&self, pos: usize) -> &Op {
        &ALL_OPS[self.0[pos] as usize]
    }
}

// Keep the cost of the per-node storage visible to anyone changing it.
const _: () = assert!(std::mem::size_of::<Op>() == 2);
const _: () = assert!(FIRST_CUSTOM < 256, "op codes are one byte");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op survives the trip through its one-byte code: the codes are the positions
    /// in `ALL_OPS`, which must list each op once.
    #[test]
    fn op_codes_round_trip() {
        let mut codes = OpCodes::default();
        codes.regrow(0, ALL_OPS.len());
        for (pos, &op) in ALL_OPS.iter().enumerate() {
            codes.set(pos, op);
        }
        assert_eq!(ALL_OPS[255], Op::Custom((MAX_CUSTOM - 1) as u8));
        for (pos, &op) in ALL_OPS.iter().enumerate() {
            assert_eq!(codes[pos], op);
            if pos == usize::from(BLOCK_DOT_CODE) {
                // A block's dot reads as a dot; recording a dot gives the dot's own code.
                assert_eq!(op, Op::Nary(Nary::Dot));
                assert_ne!(OpCodes::code(op), BLOCK_DOT_CODE);
            } else {
                assert_eq!(OpCodes::code(op) as usize, pos);
            }
        }
    }
}
