//! The model: what a route is and may become, and the rules that decide
//! it. Pure: no I/O, no runtime; everything here can be read and tested on
//! its own.

pub mod cohort;
pub mod diff;
pub mod lifecycle;
pub mod path;
pub mod plan;
pub mod policy;
pub mod records;
