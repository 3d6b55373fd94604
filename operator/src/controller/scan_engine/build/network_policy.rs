//! The engine's NetworkPolicy (DESIGN §4).
//!
//! - ConsoleToEngine: ingress only from its console's pods on the engine port (for an external
//!   console: from its `sourceCidrs`, or any source when none is given, on that port only);
//! - EngineToConsole: no ingress at all.
//!
//! Only ingress is restricted: engines keep the egress they need to scan and to dial the
//! console.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::controller::names;
use crate::crd::Communication;

pub fn network_policy(inputs: &Inputs<'_>) -> NetworkPolicy {
    let ingress = match inputs.communication {
        Communication::EngineToConsole => vec![],
        Communication::ConsoleToEngine => {
            let from = if inputs.console.managed {
                Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(names::console_selector(&inputs.console.name)),
                        match_expressions: None,
                    }),
                    ..NetworkPolicyPeer::default()
                }])
            } else if inputs.console.source_cidrs.is_empty() {
                None
            } else {
                Some(
                    inputs
                        .console
                        .source_cidrs
                        .iter()
                        .map(|cidr| NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: cidr.clone(),
                                except: None,
                            }),
                            ..NetworkPolicyPeer::default()
                        })
                        .collect(),
                )
            };
            vec![NetworkPolicyIngressRule {
                from,
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(inputs.port())),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]
        }
    };
    NetworkPolicy {
        metadata: inputs.meta(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::engine_selector(inputs.name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            // No rules means no ingress at all (policyTypes says Ingress). An empty list would
            // be dropped by the API server on storage, so applying `ingress: []` would look
            // like a change on every reconcile and wake the controller again: a write loop.
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn golden_console_to_engine() {
        let se = engine(Communication::ConsoleToEngine);
        let console = console_side();
        assert_golden(
            "engine-networkpolicy-console-to-engine",
            &network_policy(&inputs(&se, &console)),
        );
    }

    #[test]
    fn golden_engine_to_console() {
        let se = engine(Communication::EngineToConsole);
        let console = console_side();
        assert_golden(
            "engine-networkpolicy-engine-to-console",
            &network_policy(&inputs(&se, &console)),
        );
    }

    #[test]
    fn reverse_engine_denies_ingress_without_an_empty_rule_list() {
        let se = engine(Communication::EngineToConsole);
        let np = network_policy(&inputs(&se, &console_side()));
        let json = serde_json::to_value(&np).expect("serialises");
        assert_eq!(json["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        // The API server drops an empty `ingress` list, so sending one would make every apply a
        // change (a write loop); absent rules deny all ingress just the same.
        assert!(json["spec"].get("ingress").is_none(), "{json}");
    }

    #[test]
    fn external_console_sources() {
        let mut se = engine(Communication::ConsoleToEngine);
        se.spec.port = 41000;
        let mut console = console_side();
        console.managed = false;
        let np = network_policy(&inputs(&se, &console));
        let rule = &np.spec.clone().and_then(|s| s.ingress).unwrap_or_default()[0];
        assert!(
            rule.from.is_none(),
            "no CIDRs known: any source, engine port only"
        );
        assert_eq!(
            rule.ports.as_ref().map(|p| p[0].port.clone()),
            Some(Some(IntOrString::Int(41000)))
        );

        console.source_cidrs = vec!["192.0.2.0/24".into()];
        let np = network_policy(&inputs(&se, &console));
        let rule = &np.spec.and_then(|s| s.ingress).unwrap_or_default()[0];
        assert_eq!(
            rule.from
                .as_ref()
                .and_then(|f| f[0].ip_block.as_ref())
                .map(|b| b.cidr.as_str()),
            Some("192.0.2.0/24")
        );
    }
}
