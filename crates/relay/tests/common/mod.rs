pub mod knot;
