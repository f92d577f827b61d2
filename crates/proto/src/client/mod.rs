//! The client side of SMTP as a sans-I/O state machine (owned by the client work).
