//! Lists the devices this build of Switchyard can see, with their capabilities.
//!
//! Run with: `cargo run --example devices`

use switchyard::AnyDevice;

fn main() {
    for device in AnyDevice::probe_all() {
        match device.status {
            Ok(info) => print!("{info}"),
            Err(reason) => println!("{}: unavailable: {reason}", device.name),
        }
    }
}
