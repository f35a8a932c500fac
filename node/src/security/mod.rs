//! Who may call what (see [`access`]).

pub mod access;
