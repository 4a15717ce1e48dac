//! The config loader: any file gives a config or errors naming file, line and key.
#![no_main]

use fb_openchannel::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::config(data);
});
