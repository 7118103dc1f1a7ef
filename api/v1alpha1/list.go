package v1alpha1

// This file holds the list type of each kind, as the Kubernetes API
// serves collections of the resources.

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceList is a list of Services.
// +kubebuilder:object:root=true
type ServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Service `json:"items"`
}

// WorkloadList is a list of Workloads.
// +kubebuilder:object:root=true
type WorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workload `json:"items"`
}

// AuthorizationPolicyList is a list of AuthorizationPolicies.
// +kubebuilder:object:root=true
type AuthorizationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationPolicy `json:"items"`
}

// MeshTLSPolicyList is a list of MeshTLSPolicies.
// +kubebuilder:object:root=true
type MeshTLSPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshTLSPolicy `json:"items"`
}

// NamespacePolicyList is a list of NamespacePolicies.
// +kubebuilder:object:root=true
type NamespacePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NamespacePolicy `json:"items"`
}

// RateLimitPolicyList is a list of RateLimitPolicies.
// +kubebuilder:object:root=true
type RateLimitPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RateLimitPolicy `json:"items"`
}

// WorkloadAttestationPolicyList is a list of WorkloadAttestationPolicies.
// +kubebuilder:object:root=true
type WorkloadAttestationPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadAttestationPolicy `json:"items"`
}

// EgressPolicyList is a list of EgressPolicies.
// +kubebuilder:object:root=true
type EgressPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EgressPolicy `json:"items"`
}

// TrafficPolicyList is a list of TrafficPolicies.
// +kubebuilder:object:root=true
type TrafficPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPolicy `json:"items"`
}

// DetectionPolicyList is a list of DetectionPolicies.
// +kubebuilder:object:root=true
type DetectionPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DetectionPolicy `json:"items"`
}
