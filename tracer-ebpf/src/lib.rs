//! Empty library target: lets `tracer` name this crate as a build dependency
//! (so cargo rebuilds the embedded object when it changes).
#![no_std]
