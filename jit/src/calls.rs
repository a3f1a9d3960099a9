//! The Rust functions that compiled code calls for what it does not inline: each op's value
//! and partials from tapegrad's op table (`Unary::value`, `Unary::partial`, ...), as
//! `extern "C"` functions taking and returning `f64`s. They are the very functions the
//! interpreter calls, so a compiled node gives its numbers bit for bit. No pointers, nothing unsafe: the one trampoline that reads memory is in `native.rs`.
//!
//! Each op gets a function of its own (a const generic over its index in `Unary::ALL` or
//! `Binary::ALL`), in which the op is a constant, so the table's `match` folds away, as in
//! the interpreter's steps.

use tapegrad::{Binary, Unary};

/// The most ops of one arity the tables hold (checked at compile time below).
const MAX_OPS: usize = 64;
const _: () = assert!(Unary::ALL.len() <= MAX_OPS && Binary::ALL.len() <= MAX_OPS);

/// A function of one `f64`.
pub(crate) type Fn1 = extern "C" fn(f64) -> f64;
/// A function of two `f64`s.
pub(crate) type Fn2 = extern "C" fn(f64, f64) -> f64;
/// A function of three `f64`s.
pub(crate) type Fn3 = extern "C" fn(f64, f64, f64) -> f64;

fn unary<const K: usize>() -> Unary {
    match Unary::ALL.get(K) {
        Some(&op) => op,
        None => unreachable!("no unary op {K}"),
    }
}

fn binary<const K: usize>() -> Binary {
    match Binary::ALL.get(K) {
        Some(&op) => op,
        None => unreachable!("no binary op {K}"),
    }
}

extern "C" fn unary_value<const K: usize>(x: f64) -> f64 {
    unary::<K>().value(x)
}

extern "C" fn unary_partial<const K: usize>(x: f64, y: f64) -> f64 {
    unary::<K>().partial(x, y)
}

extern "C" fn binary_value<const K: usize>(a: f64, b: f64) -> f64 {
    binary::<K>().value(a, b)
}

/// The partial with respect to operand `I` of binary op `K`.
extern "C" fn binary_partial<const K: usize, const I: usize>(a: f64, b: f64, y: f64) -> f64 {
    binary::<K>().partial(a, b, y, I)
}

/// `[f::<0>, .., f::<63>]`, or `[f::<0, I>, .., f::<63, I>]`.
macro_rules! table {
    (@ [$ty:ty, $f:ident] $($k:literal)*) => {
        [$($f::<$k> as $ty),*]
    };
    (@ [$ty:ty, $f:ident, $i:literal] $($k:literal)*) => {
        [$($f::<$k, $i> as $ty),*]
    };
    ($($args:tt)*) => {
        table!(@ [$($args)*] 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23
            24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51
            52 53 54 55 56 57 58 59 60 61 62 63)
    };
}

static UNARY_VALUE: [Fn1; MAX_OPS] = table!(Fn1, unary_value);
static UNARY_PARTIAL: [Fn2; MAX_OPS] = table!(Fn2, unary_partial);
static BINARY_VALUE: [Fn2; MAX_OPS] = table!(Fn2, binary_value);
static BINARY_PARTIAL: [[Fn3; MAX_OPS]; 2] = [
    table!(Fn3, binary_partial, 0),
    table!(Fn3, binary_partial, 1),
];

/// `op.value(x)`.
pub(crate) fn unary_value_of(op: Unary) -> Fn1 {
    UNARY_VALUE[op as usize]
}

/// `op.partial(x, y)`.
pub(crate) fn unary_partial_of(op: Unary) -> Fn2 {
    UNARY_PARTIAL[op as usize]
}

fn binary_index(op: Binary) -> usize {
    let k = Binary::ALL.iter().position(|&b| b == op);
    k.expect("every binary op is in the table")
}

/// `op.value(a, b)`.
pub(crate) fn binary_value_of(op: Binary) -> Fn2 {
    BINARY_VALUE[binary_index(op)]
}

/// `op.partial(a, b, y, k)`.
pub(crate) fn binary_partial_of(op: Binary, k: usize) -> Fn3 {
    BINARY_PARTIAL[k][binary_index(op)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_entry_is_its_op() {
        for &op in Unary::ALL {
            for x in [-1.5, 0.0, 0.5, 2.0, f64::INFINITY] {
                let y = op.value(x);
                assert_eq!(unary_value_of(op)(x).to_bits(), y.to_bits(), "{op:?}");
                let p = op.partial(x, y);
                let q = unary_partial_of(op)(x, y);
                assert!(
                    p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                    "{op:?}"
                );
            }
        }
        for &op in Binary::ALL {
            let (a, b) = (1.5, 2.0);
            let y = op.value(a, b);
            assert_eq!(binary_value_of(op)(a, b).to_bits(), y.to_bits(), "{op:?}");
            for k in 0..2 {
                let p = op.partial(a, b, y, k);
                assert_eq!(binary_partial_of(op, k)(a, b, y).to_bits(), p.to_bits());
            }
        }
    }
}
