//! The canary judge. Pure: no I/O, no clock, no async.
#![forbid(unsafe_code)]
