//! see later
