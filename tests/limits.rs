//! Limits, deadlines and teardown causes on the real kernel (root): each limit is proven by a job
//! that tries to break it.

mod common;
