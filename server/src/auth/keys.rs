//! API keys: stored as a hash of their secret, checked against an
//! in-memory cache that revocations clear on every node.
