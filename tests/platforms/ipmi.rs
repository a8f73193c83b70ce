//! The shipped `ipmi` platform against real BMCs (being written).

use crate::support::ipmi_sim::IpmiSim;

/// The simulator itself: ipmitool sees and changes the state file's power,
/// and a restart is recorded (protects every IPMI test's footing).
#[test]
fn simulated_bmcs_answer_ipmitool() {
    let sim = IpmiSim::start(2);
    assert_ne!(sim.bmcs[0].addr, sim.bmcs[1].addr);
    let bmc = &sim.bmcs[1];
    assert!(!bmc.power());
    let (status, out, err) = bmc.ipmitool(&["chassis", "power", "on"]);
    assert!(status.success(), "{out}{err}");
    assert!(bmc.power());
    let (_, out, _) = bmc.ipmitool(&["chassis", "power", "status"]);
    assert_eq!(out.trim(), "Chassis Power is on");
    bmc.set_power(false);
    let (_, out, _) = bmc.ipmitool(&["chassis", "power", "status"]);
    assert_eq!(out.trim(), "Chassis Power is off");
    bmc.ipmitool(&["chassis", "power", "reset"]);
    assert!(
        bmc.set_events().contains(&"set reset 1".to_string()),
        "{:?}",
        bmc.events()
    );
    assert!(!sim.bmcs[0].power());
}
