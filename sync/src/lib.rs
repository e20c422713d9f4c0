//! Link monitoring, bandwidth prediction, sync-interval policies and codec selection.
#![no_std]
