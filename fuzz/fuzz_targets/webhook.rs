//! The webhook parser and everything that translates its items: any signed body
//! Facebook (or an attacker with the secret) sends must parse or fail cleanly, and
//! every item must translate without panicking.
#![no_main]

use fb_openchannel::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::webhook(data);
});
