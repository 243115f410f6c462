//! Server-Sent Events: the live streams of `$all` and of one stream
//! ([`live`]).

pub mod live;
