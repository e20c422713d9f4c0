//! Tasks with migration points and ISA-neutral checkpoints.
#![no_std]
