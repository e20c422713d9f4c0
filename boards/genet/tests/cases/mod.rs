//! The model's tests, by what they exercise.

mod bring_up;
mod data_path;
mod link_and_reset;
mod miswired;
mod net_device;
