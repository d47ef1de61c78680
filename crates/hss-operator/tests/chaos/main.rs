//! Tier 4, at scale and under faults: crashes, restarts and HSS faults (`chaos`), and a fleet
//! of operators sharing one account (`fleet`), on a control plane of their own.

mod chaos;
mod fleet;
