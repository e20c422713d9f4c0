//! Test modules (as WebAssembly text) shared by the tests of this crate and
//! of the kernel: a small task that follows the ABI, with a hook to make
//! its step trap, loop forever or grow its memory.

use alloc::format;
use alloc::string::String;

/// A task that sums `i * i mod 7` for i below the argument (a decimal
/// number) in steps of `spin` iterations, keeping its sum in a mutable
/// global and its counter in memory; the result is the sum as 8 LE bytes.
/// `{step_extra}` is spliced into the step function (to make it trap, grow
/// memory or loop).
pub fn counter(step_extra: &str) -> String {
    format!(
        r#"(module
  (import "tern" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (global $sum (mut i64) (i64.const 0))
  (global $limit (mut i64) (i64.const 0))
  (global $spin i64 (i64.const 1000))
  (data (i32.const 16) "started")
  (func (export "tern_args") (param i32) (result i32) (i32.const 1024))
  (func (export "tern_init") (param $len i32) (result i64)
    (local $i i32) (local $n i64) (local $c i32)
    (call $log (i32.const 16) (i32.const 7))
    (block $done
      (loop $digits
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (if (i32.or (i32.lt_u (local.get $c) (i32.const 48)) (i32.gt_u (local.get $c) (i32.const 57)))
          (then (return (i64.const -2))))
        (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10))
                               (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digits)))
    (global.set $limit (local.get $n))
    (i64.store (i32.const 256) (i64.const 0))
    (local.get $n))
  (func (export "tern_step") (result i64)
    (local $i i64) (local $end i64)
    {step_extra}
    (local.set $i (i64.load (i32.const 256)))
    (local.set $end (i64.add (local.get $i) (global.get $spin)))
    (if (i64.gt_u (local.get $end) (global.get $limit)) (then (local.set $end (global.get $limit))))
    (block $out
      (loop $next
        (br_if $out (i64.ge_u (local.get $i) (local.get $end)))
        (global.set $sum (i64.add (global.get $sum)
                                  (i64.rem_u (i64.mul (local.get $i) (local.get $i)) (i64.const 7))))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $next)))
    (i64.store (i32.const 256) (local.get $i))
    (local.get $i))
  (func (export "tern_result") (result i64)
    (i64.store (i32.const 512) (global.get $sum))
    (i64.or (i64.const 512) (i64.shl (i64.const 8) (i64.const 32)))))"#
    )
}

/// The sum the counter computes for `n`.
pub fn expected_sum(n: u64) -> [u8; 8] {
    (0..n).map(|i| i * i % 7).sum::<u64>().to_le_bytes()
}
