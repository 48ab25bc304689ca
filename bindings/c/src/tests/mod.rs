//! Tests of the C calling contract and of the generated header.

mod contract;
mod header;
