// +groupName=rampart.dev
// +kubebuilder:object:generate=true

package v1alpha1

// This file names the API group and version of the resources for
// Kubernetes, and registers their kinds in a runtime.Scheme. The markers
// (+groupName, +kubebuilder:...) drive controller-gen, which writes
// zz_generated.deepcopy.go here and the CRDs in deploy/crds (make generate).

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group is the API group of every resource in this package.
const Group = "rampart.dev"

// Version is the API version of every resource in this package.
const Version = "v1alpha1"

// SchemeGroupVersion is the group and version of this package's resources.
var SchemeGroupVersion = schema.GroupVersion{Group: Group, Version: Version}

var (
	// SchemeBuilder registers this package's kinds.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds this package's kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers every kind of the package with its list type.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&Service{}, &ServiceList{},
		&Workload{}, &WorkloadList{},
		&AuthorizationPolicy{}, &AuthorizationPolicyList{},
		&MeshTLSPolicy{}, &MeshTLSPolicyList{},
		&NamespacePolicy{}, &NamespacePolicyList{},
		&RateLimitPolicy{}, &RateLimitPolicyList{},
		&WorkloadAttestationPolicy{}, &WorkloadAttestationPolicyList{},
		&EgressPolicy{}, &EgressPolicyList{},
		&TrafficPolicy{}, &TrafficPolicyList{},
		&DetectionPolicy{}, &DetectionPolicyList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
