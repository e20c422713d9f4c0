//! Researcher's bench for Tern's bandwidth predictors, sync policies and codecs.
fn main() {}
