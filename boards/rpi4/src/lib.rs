//! placeholder, replaced by the board implementation
