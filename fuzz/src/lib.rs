//! What the fuzz targets share.

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use two_state_lock::Class;

/// A [`Class`] the fuzzer can generate.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum C {
    Add,
    Block,
}

impl From<C> for Class {
    fn from(c: C) -> Class {
        match c {
            C::Add => Class::Add,
            C::Block => Class::Block,
        }
    }
}
