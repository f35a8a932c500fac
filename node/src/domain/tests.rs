//! Domain tests, by command family, over one simulator (`sim.rs`) that
//! checks every command's events; property tests over random and hostile
//! command sequences; and the stored formats, pinned byte for byte.

use std::collections::BTreeMap;

use super::command::*;
use super::*;
use sim::{range, Sim};

mod format;
mod group;
mod handoff;
mod hostile;
mod load;
mod properties;
mod queries;
mod session;
mod sim;
mod tombstone;
