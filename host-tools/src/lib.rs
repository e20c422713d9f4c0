//! Shared code of the Tern host tools.
