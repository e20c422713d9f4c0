//! NPB workloads as migratable Tern tasks.
#![no_std]
