//! The POP3 source. [`codec`] is the protocol without I/O (commands, replies,
//! dot-unstuffing, fed in chunks of any size); the client drives it over any async stream.

#![warn(missing_docs)]

pub mod codec;
