//! The stress client engine used by `echo-bench` (see issue "echo-bench").
