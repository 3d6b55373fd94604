//! The managed console's NetworkPolicy: the API (3780) admits the operator's pods; the engine
//! listener (40815) admits only this console's reverse-paired engines (by label), or any
//! source when the listener is exposed outside the cluster.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::controller::connection::{API_PORT, ENGINE_LISTENER_PORT};
use crate::controller::names;
use crate::crd::scan_engine::ServiceType;

fn port(p: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".into()),
        end_port: None,
    }])
}

fn selector(labels: std::collections::BTreeMap<String, String>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    })
}

pub fn network_policy(inputs: &Inputs<'_>) -> NetworkPolicy {
    let operator = NetworkPolicyPeer {
        namespace_selector: selector(
            [(
                "kubernetes.io/metadata.name".to_string(),
                inputs.settings.operator_namespace.clone(),
            )]
            .into(),
        ),
        pod_selector: selector(inputs.settings.operator_pod_labels.clone()),
        ip_block: None,
    };
    let engines_from = match inputs.spec.engine_listener_service_type.unwrap_or_default() {
        ServiceType::ClusterIP => Some(vec![NetworkPolicyPeer {
            pod_selector: selector(names::reverse_engines_of(inputs.name)),
            ..NetworkPolicyPeer::default()
        }]),
        // Exposed outside the cluster: engines dial from addresses we cannot know.
        ServiceType::NodePort | ServiceType::LoadBalancer => None,
    };
    NetworkPolicy {
        metadata: inputs.meta(names::console_objects(inputs.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: selector(names::console_selector(inputs.name)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![operator]),
                    ports: port(API_PORT),
                },
                NetworkPolicyIngressRule {
                    from: engines_from,
                    ports: port(ENGINE_LISTENER_PORT),
                },
            ]),
            egress: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::controller::scan_engine::build::testing::assert_golden;
    use crate::crd::console::ManagedConsole;

    #[test]
    fn golden_network_policy() {
        let spec = ManagedConsole::default();
        let settings = settings();
        assert_golden(
            "console-networkpolicy",
            &network_policy(&inputs(&spec, &settings)),
        );
    }
}
