//! The managed console's Services: the REST API (3780) and the engine listener (40815).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::controller::connection::{API_PORT, ENGINE_LISTENER_PORT};
use crate::controller::names;

fn service(inputs: &Inputs<'_>, name: String, type_: &str, port_name: &str, port: i32) -> Service {
    Service {
        metadata: inputs.meta(name),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(names::console_selector(inputs.name)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port,
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `c-console`: the REST API the operator calls.
pub fn api_service(inputs: &Inputs<'_>) -> Service {
    service(
        inputs,
        names::console_objects(inputs.name),
        "ClusterIP",
        "api",
        API_PORT,
    )
}

/// `c-console-engines`: where reverse engines dial in.
pub fn engine_service(inputs: &Inputs<'_>) -> Service {
    let type_ = inputs.spec.engine_listener_service_type.unwrap_or_default();
    service(
        inputs,
        names::console_engine_service(inputs.name),
        type_.as_str(),
        "engines",
        ENGINE_LISTENER_PORT,
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::controller::scan_engine::build::testing::assert_golden;
    use crate::crd::console::ManagedConsole;

    #[test]
    fn golden_services() {
        let spec = ManagedConsole::default();
        let settings = settings();
        assert_golden(
            "console-services",
            &[
                api_service(&inputs(&spec, &settings)),
                engine_service(&inputs(&spec, &settings)),
            ],
        );
    }
}
