//! Unit tests of the core: one per rule of the paper's Figure 2, then the extensions.

mod extensions;
mod figure2;
mod forwarding;
mod harness;
mod membership;
mod reads_transfer;
mod robustness;
mod snapshots;
