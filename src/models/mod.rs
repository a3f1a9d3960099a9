//! The tutorials' models, built on the general API like any user's model: the series' tiny
//! transformer and Karpathy's microgpt. They are examples of use, not part of the engine;
//! nothing else in the crate may use them.

pub mod microgpt;
pub mod transformer;
