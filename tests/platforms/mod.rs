//! Every shipped platform against a real management endpoint, through the
//! real server and the real client. The endpoints are started on loopback
//! by the tests themselves (`tests/support/`); `scripts/install-test-deps`
//! installs them. A missing endpoint fails its test: none is skipped.

mod aws;
mod azure;
mod fence;
mod ipmi;
mod libvirt;
mod redfish;
