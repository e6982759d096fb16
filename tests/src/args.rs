//! Request arguments the kernel tests build by hand (random ones are in [`crate::random`]).

use ipsec_user::model::SpAddArgs;

/// An `ipsec` policy for all traffic (any protocol, any port) from host `src` to host `dst`
/// (each a /128) in `direction` (`in` or `out`), protected by the SA named `sa`.
pub fn host_ipsec_sp(name: &str, (src, dst): (&str, &str), direction: &str, sa: &str) -> SpAddArgs {
    let any = || Some("any".to_owned());
    SpAddArgs {
        sp_source: Some(format!("{src}/128")),
        sp_destination: Some(format!("{dst}/128")),
        source_port: any(),
        destination_port: any(),
        upper_layer_protocol: any(),
        flow_direction: Some(direction.to_owned()),
        action: Some("ipsec".to_owned()),
        sa_name: Some(sa.to_owned()),
        sp_name: Some(name.to_owned()),
        ..SpAddArgs::default()
    }
}
