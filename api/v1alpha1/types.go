// Package v1alpha1 holds Rampart's resource types: the documents an operator
// writes, as YAML files in local mode and (later) as custom resources on
// Kubernetes. One Go type serves both.
//
// The proxy never imports this package: the controller compiles these
// resources into the control-plane protocol (internal/meshapi).
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GroupVersion is the apiVersion of every resource in this package.
const GroupVersion = "rampart.dev/v1alpha1"

// Kinds.
const (
	KindService  = "Service"
	KindWorkload = "Workload"
)

// DefaultNamespace is the namespace of a resource that names none.
const DefaultNamespace = "default"

// Protocol is what a service port speaks between the app and its proxy.
// +kubebuilder:validation:Enum=Auto;TCP;HTTP;HTTP2;GRPC
type Protocol string

// Protocols.
const (
	// ProtocolAuto detects the protocol of each connection from the first
	// bytes the client sends: HTTP/1.x and HTTP/2 prior knowledge are
	// proxied request by request, anything else as opaque bytes.
	ProtocolAuto Protocol = "Auto"
	// ProtocolTCP is opaque bytes, carried as one tunnel stream per
	// connection, with no detection: the protocol for server-first
	// protocols (MySQL, SMTP), where the client sends nothing to detect.
	ProtocolTCP Protocol = "TCP"
	// ProtocolHTTP is HTTP/1.1; requests are proxied one by one.
	ProtocolHTTP Protocol = "HTTP"
	// ProtocolHTTP2 is HTTP/2 with prior knowledge (h2c).
	ProtocolHTTP2 Protocol = "HTTP2"
	// ProtocolGRPC is gRPC, which is HTTP/2.
	ProtocolGRPC Protocol = "GRPC"
)

// Service is a named set of workloads reachable through the mesh. Its
// endpoints are the workloads of its namespace whose labels match the
// selector (and, when ServiceAccounts is set, whose identity is one of them).
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type Service struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ServiceSpec `json:"spec"`
}

// ServiceSpec describes a Service.
type ServiceSpec struct {
	// Selector picks the workloads behind the service by label. Required:
	// an empty selector would select every workload of the namespace.
	// +kubebuilder:validation:MinProperties=1
	Selector map[string]string `json:"selector"`
	// ServiceAccounts, when set, restricts the endpoints to workloads running
	// as one of these service accounts, so that a workload cannot join a
	// service by copying its labels.
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// Ports the service exposes. At least one.
	// +kubebuilder:validation:MinItems=1
	Ports []ServicePort `json:"ports"`
	// Addresses are virtual IP addresses of the service (on Kubernetes,
	// its ClusterIPs). A proxy that intercepts its app's traffic sends a
	// connection to one of them, at a service port, to the service.
	Addresses []string `json:"addresses,omitempty"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name is required when the service has more than one port.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`
	// Port is the service port (1-65535).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// TargetPort is the app's port on its workload's loopback; defaults to Port.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	TargetPort int32 `json:"targetPort,omitempty"`
	// Protocol defaults to Auto, except on the well-known ports of
	// server-first protocols (see ServerFirstPorts), where it defaults to
	// TCP.
	Protocol Protocol `json:"protocol,omitempty"`
}

// Workload is one instance of a piece of code with a mesh identity. Proxies
// register their workload when they connect; a Workload document declares
// one statically.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,categories=rampart,shortName=rwl
// +kubebuilder:printcolumn:name="Service Account",type="string",JSONPath=".spec.serviceAccount"
// +kubebuilder:printcolumn:name="Tunnel Address",type="string",JSONPath=".spec.tunnelAddress"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec WorkloadSpec `json:"spec"`
}

// WorkloadSpec describes a Workload.
type WorkloadSpec struct {
	// ServiceAccount names the workload's identity within its namespace:
	// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ServiceAccount string `json:"serviceAccount"`
	// TunnelAddress is the host:port where the workload's proxy accepts
	// tunnel connections from its peers.
	// +kubebuilder:validation:MinLength=1
	TunnelAddress string `json:"tunnelAddress"`
	// Address is the IP address of the workload itself, which apps may
	// dial directly as they dial a pod IP. Empty means the host of
	// TunnelAddress.
	Address string `json:"address,omitempty"`
}
