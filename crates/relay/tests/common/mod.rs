#![allow(dead_code)]
pub mod knot;
pub mod receiver;
