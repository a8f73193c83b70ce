//! The `redfish` platform (drivers/redfish) against sushy-tools' Redfish
//! emulator with basic auth, through the real server and client.

use crate::support::sushy::{Sushy, REDFISH_DEADLINE};

/// The harness itself: the emulator starts, answers with credentials, and
/// applies a reset (after its random delay).
#[test]
fn sushy_emulator_applies_a_reset() {
    let sushy = Sushy::start(&["rf1"]);
    let uuid = &sushy.systems[0].uuid;
    assert_eq!(sushy.power_state(uuid), "Off");
    assert_eq!(sushy.reset(uuid, "On"), 204, "{}", sushy.log());
    sushy.wait_power_state(uuid, "On", REDFISH_DEADLINE);
    let (status, _) = sushy
        .request("GET", &sushy.system_path(uuid), None, false)
        .unwrap();
    assert_eq!(status, 401);
}
