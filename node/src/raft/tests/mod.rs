//! Unit tests of the core, one per rule of the paper's Figure 2 and per extension.
