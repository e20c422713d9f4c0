//! Harness for Tern system tests: QEMU nodes read through their serial console.
