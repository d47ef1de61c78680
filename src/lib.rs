pub mod hss;
