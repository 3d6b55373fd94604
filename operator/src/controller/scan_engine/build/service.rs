//! The engine's Service (ConsoleToEngine only): how the console reaches the engine port.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::controller::names;
use crate::crd::Communication;

/// The Service, or `None` for EngineToConsole (nobody dials a reverse engine).
pub fn service(inputs: &Inputs<'_>) -> Option<Service> {
    if inputs.communication != Communication::ConsoleToEngine {
        return None;
    }
    Some(Service {
        metadata: inputs.meta(),
        spec: Some(ServiceSpec {
            type_: Some(inputs.service_type().as_str().into()),
            selector: Some(names::engine_selector(inputs.name)),
            // The console must reach an engine that is not "ready" yet to pair with it.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("engine".into()),
                port: inputs.port(),
                target_port: Some(IntOrString::String("engine".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The cluster DNS name the console dials by default.
pub fn cluster_dns_name(name: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", names::engine_objects(name))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::crd::scan_engine::ServiceType;

    #[test]
    fn golden_service() {
        let se = engine(Communication::ConsoleToEngine);
        let console = console_side();
        assert_golden("engine-service", &service(&inputs(&se, &console)));
    }

    #[test]
    fn port_and_type_follow_spec() {
        let mut se = engine(Communication::ConsoleToEngine);
        se.spec.port = 41000;
        se.spec.service_type = Some(ServiceType::LoadBalancer);
        let console = console_side();
        let spec = service(&inputs(&se, &console))
            .and_then(|s| s.spec)
            .unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap_or_default()[0].port, 41000);
    }

    #[test]
    fn no_service_for_reverse_engines() {
        let se = engine(Communication::EngineToConsole);
        let console = console_side();
        assert!(service(&inputs(&se, &console)).is_none());
        assert_eq!(
            cluster_dns_name("edge", "scanning"),
            "edge-scan-engine.scanning.svc"
        );
    }
}
