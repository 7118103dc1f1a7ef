package v1alpha1

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func validService() *Service {
	return &Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindService},
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", Labels: map[string]string{"app.kubernetes.io/part-of": "shop"}},
		Spec: ServiceSpec{
			Selector:        map[string]string{"app": "orders"},
			ServiceAccounts: []string{"orders"},
			Ports: []ServicePort{
				{Name: "http", Port: 80, TargetPort: 8080, Protocol: ProtocolHTTP},
				{Name: "grpc", Port: 9090, Protocol: ProtocolGRPC},
			},
		},
	}
}

func validWorkload() *Workload {
	return &Workload{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion, Kind: KindWorkload},
		ObjectMeta: metav1.ObjectMeta{Name: "orders-1", Namespace: "shop", Labels: map[string]string{"app": "orders"}},
		Spec:       WorkloadSpec{ServiceAccount: "orders", TunnelAddress: "10.0.0.7:4443"},
	}
}

// fieldErrors returns the FieldErrors inside err, failing the test if err
// is not nil and holds none.
func fieldErrors(t *testing.T, err error) FieldErrors {
	t.Helper()
	if err == nil {
		return nil
	}
	var fe FieldErrors
	if !errors.As(err, &fe) {
		t.Fatalf("Validate() error %T %v is not FieldErrors", err, err)
	}
	if !strings.HasPrefix(err.Error(), "v1alpha1: ") {
		t.Errorf("Error() = %q, want the package prefix", err)
	}
	return fe
}

func TestServiceValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Service)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*Service) {}},
		{
			name: "valid before Default",
			mutate: func(s *Service) {
				s.TypeMeta = metav1.TypeMeta{}
				s.Namespace = ""
				s.Spec.Ports = []ServicePort{{Port: 80}}
			},
		},
		{
			name:   "missing name",
			mutate: func(s *Service) { s.Name = "" },
			want:   FieldErrors{{Path: "metadata.name", Msg: "is required"}},
		},
		{
			name:   "bad name and namespace",
			mutate: func(s *Service) { s.Name = "Orders"; s.Namespace = "shop-" },
			want: FieldErrors{
				{Path: "metadata.name", Msg: `invalid name "Orders": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`},
				{Path: "metadata.namespace", Msg: `invalid name "shop-": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`},
			},
		},
		{
			name:   "name too long",
			mutate: func(s *Service) { s.Name = strings.Repeat("a", 64) },
			want:   FieldErrors{{Path: "metadata.name", Msg: `invalid name "` + strings.Repeat("a", 64) + `": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`}},
		},
		{
			name:   "wrong kind",
			mutate: func(s *Service) { s.Kind = KindWorkload },
			want:   FieldErrors{{Path: "kind", Msg: `must be "Service", not "Workload"`}},
		},
		{
			name:   "missing selector",
			mutate: func(s *Service) { s.Spec.Selector = nil },
			want:   FieldErrors{{Path: "spec.selector", Msg: "must not be empty: an empty selector would select every workload in the namespace"}},
		},
		{
			name:   "bad selector",
			mutate: func(s *Service) { s.Spec.Selector = map[string]string{"app": "orders!", "bad key": "x"} },
			want: FieldErrors{
				{Path: "spec.selector[app]", Msg: `invalid label value "orders!": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`},
				{Path: "spec.selector[bad key]", Msg: `invalid label key "bad key": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`},
			},
		},
		{
			name:   "bad metadata label",
			mutate: func(s *Service) { s.Labels = map[string]string{"/x": "y"} },
			want:   FieldErrors{{Path: "metadata.labels[/x]", Msg: `invalid label key "/x": prefix part must be non-empty`}},
		},
		{
			name:   "bad and duplicate service accounts",
			mutate: func(s *Service) { s.Spec.ServiceAccounts = []string{"orders", "Orders", "orders"} },
			want: FieldErrors{
				{Path: "spec.serviceAccounts[1]", Msg: `invalid name "Orders": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`},
				{Path: "spec.serviceAccounts[2]", Msg: `duplicate service account "orders" (also spec.serviceAccounts[0])`},
			},
		},
		{
			name:   "addresses",
			mutate: func(s *Service) { s.Spec.Addresses = []string{"10.96.0.10", "fd00::10", "::ffff:10.96.0.10"} },
			want:   FieldErrors{{Path: "spec.addresses[2]", Msg: `duplicate address ::ffff:10.96.0.10 (also spec.addresses[0])`}},
		},
		{
			name: "bad addresses",
			mutate: func(s *Service) {
				s.Spec.Addresses = []string{"orders", "127.0.0.1", "0.0.0.0", "fe80::1%eth0", "224.0.0.1"}
			},
			want: FieldErrors{
				{Path: "spec.addresses[0]", Msg: `"orders" is not an IP address`},
				{Path: "spec.addresses[1]", Msg: `"127.0.0.1" cannot be a service address: unspecified, loopback and multicast addresses are reserved`},
				{Path: "spec.addresses[2]", Msg: `"0.0.0.0" cannot be a service address: unspecified, loopback and multicast addresses are reserved`},
				{Path: "spec.addresses[3]", Msg: `"fe80::1%eth0" is not an IP address`},
				{Path: "spec.addresses[4]", Msg: `"224.0.0.1" cannot be a service address: unspecified, loopback and multicast addresses are reserved`},
			},
		},
		{
			name:   "no ports",
			mutate: func(s *Service) { s.Spec.Ports = nil },
			want:   FieldErrors{{Path: "spec.ports", Msg: "at least one port is required"}},
		},
		{
			name: "port ranges",
			mutate: func(s *Service) {
				s.Spec.Ports[0].Port = 0
				s.Spec.Ports[0].TargetPort = -1
				s.Spec.Ports[1].Port = 65536
				s.Spec.Ports[1].TargetPort = 70000
			},
			want: FieldErrors{
				{Path: "spec.ports[0].port", Msg: "must be between 1 and 65535"},
				{Path: "spec.ports[0].targetPort", Msg: "must be between 1 and 65535"},
				{Path: "spec.ports[1].port", Msg: "must be between 1 and 65535"},
				{Path: "spec.ports[1].targetPort", Msg: "must be between 1 and 65535"},
			},
		},
		{
			name: "target port defaulted from a bad port",
			mutate: func(s *Service) {
				s.Spec.Ports[1].Port = 90900
				s.Default()
			},
			want: FieldErrors{{Path: "spec.ports[1].port", Msg: "must be between 1 and 65535"}},
		},
		{
			name:   "unknown protocol",
			mutate: func(s *Service) { s.Spec.Ports[1].Protocol = "grpc" },
			want:   FieldErrors{{Path: "spec.ports[1].protocol", Msg: `unsupported protocol "grpc": must be one of Auto, TCP, HTTP, HTTP2, GRPC`}},
		},
		{
			name:   "names required with several ports",
			mutate: func(s *Service) { s.Spec.Ports[1].Name = "" },
			want:   FieldErrors{{Path: "spec.ports[1].name", Msg: "is required when the service has more than one port"}},
		},
		{
			name:   "bad port name",
			mutate: func(s *Service) { s.Spec.Ports[1].Name = "gRPC" },
			want:   FieldErrors{{Path: "spec.ports[1].name", Msg: `invalid name "gRPC": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`}},
		},
		{
			name: "duplicate port names and numbers",
			mutate: func(s *Service) {
				s.Spec.Ports[1].Name = "http"
				s.Spec.Ports[1].Port = 80
			},
			want: FieldErrors{
				{Path: "spec.ports[1].name", Msg: `duplicate port name "http" (also spec.ports[0])`},
				{Path: "spec.ports[1].port", Msg: "duplicate port 80 (also spec.ports[0])"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validService()
			tt.mutate(s)
			got := fieldErrors(t, s.Validate())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWorkloadValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Workload)
		want   FieldErrors
	}{
		{name: "valid", mutate: func(*Workload) {}},
		{name: "IPv6", mutate: func(w *Workload) { w.Spec.TunnelAddress = "[fd00::7]:4443" }},
		{name: "DNS name", mutate: func(w *Workload) { w.Spec.TunnelAddress = "Orders-1.shop.example.com.:4443" }},
		{name: "no namespace", mutate: func(w *Workload) { w.Namespace = "" }},
		{name: "address", mutate: func(w *Workload) { w.Spec.Address = "10.0.0.7" }},
		{
			name:   "bad address",
			mutate: func(w *Workload) { w.Spec.Address = "10.0.0.7:80" },
			want:   FieldErrors{{Path: "spec.address", Msg: `"10.0.0.7:80" is not a unicast IP address`}},
		},
		{
			name:   "missing service account and address",
			mutate: func(w *Workload) { w.Spec = WorkloadSpec{} },
			want: FieldErrors{
				{Path: "spec.serviceAccount", Msg: "is required: it names the workload's identity"},
				{Path: "spec.tunnelAddress", Msg: "is required: the host:port where the workload's proxy accepts tunnel connections"},
			},
		},
		{
			name:   "bad service account",
			mutate: func(w *Workload) { w.Spec.ServiceAccount = "orders_sa" },
			want:   FieldErrors{{Path: "spec.serviceAccount", Msg: `invalid name "orders_sa": use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit`}},
		},
		{
			name:   "bad label",
			mutate: func(w *Workload) { w.Labels = map[string]string{"app": strings.Repeat("x", 64)} },
			want:   FieldErrors{{Path: "metadata.labels[app]", Msg: `invalid label value "` + strings.Repeat("x", 64) + `": must be no more than 63 bytes`}},
		},
		{
			name:   "no port",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "10.0.0.7" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid address "10.0.0.7": want host:port, such as 10.0.0.7:4443, [fd00::7]:4443 or orders-1.example.com:4443`}},
		},
		{
			name:   "unbracketed IPv6",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "fd00::7:4443" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid address "fd00::7:4443": want host:port, such as 10.0.0.7:4443, [fd00::7]:4443 or orders-1.example.com:4443`}},
		},
		{
			name:   "named port",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "10.0.0.7:https" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid port "https" in "10.0.0.7:https": must be a number between 1 and 65535`}},
		},
		{
			name:   "port zero",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "10.0.0.7:0" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid port "0" in "10.0.0.7:0": must be a number between 1 and 65535`}},
		},
		{
			name:   "port too large",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "10.0.0.7:65536" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid port "65536" in "10.0.0.7:65536": must be a number between 1 and 65535`}},
		},
		{
			name:   "no host",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = ":4443" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `missing host in ":4443": want an IP address or DNS name before the port`}},
		},
		{
			name:   "bad IPv4",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "10.0.0.256:4443" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid host "10.0.0.256" in "10.0.0.256:4443": want an IP address or a DNS name`}},
		},
		{
			name:   "bad DNS name",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "orders_1.example.com:4443" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid host "orders_1.example.com" in "orders_1.example.com:4443": want an IP address or a DNS name`}},
		},
		{
			name:   "IPv6 zone",
			mutate: func(w *Workload) { w.Spec.TunnelAddress = "[fe80::1%eth0]:4443" },
			want:   FieldErrors{{Path: "spec.tunnelAddress", Msg: `invalid host "fe80::1%eth0" in "[fe80::1%eth0]:4443": IPv6 zones are not supported`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := validWorkload()
			tt.mutate(w)
			got := fieldErrors(t, w.Validate())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	s := &Service{Spec: ServiceSpec{Ports: []ServicePort{
		{Port: 80},
		{Port: 9090, TargetPort: 9091, Protocol: ProtocolGRPC},
		{Port: 3306},
		{Port: 16379, TargetPort: 6379},
		{Port: 5432, Protocol: ProtocolHTTP},
	}}}
	s.Default()
	want := &Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: DefaultNamespace},
		Spec: ServiceSpec{Ports: []ServicePort{
			{Port: 80, TargetPort: 80, Protocol: ProtocolAuto},
			{Port: 9090, TargetPort: 9091, Protocol: ProtocolGRPC},
			// Server-first ports default to opaque TCP, by port or target port.
			{Port: 3306, TargetPort: 3306, Protocol: ProtocolTCP},
			{Port: 16379, TargetPort: 6379, Protocol: ProtocolTCP},
			// A protocol that is set is kept.
			{Port: 5432, TargetPort: 5432, Protocol: ProtocolHTTP},
		}},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Service.Default() mismatch (-want +got):\n%s", diff)
	}

	w := &Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}}
	w.Default()
	if w.Namespace != "shop" {
		t.Errorf("Workload.Default() changed namespace shop to %q", w.Namespace)
	}
	w = &Workload{}
	w.Default()
	if w.Namespace != DefaultNamespace {
		t.Errorf("Workload.Default() namespace = %q, want %q", w.Namespace, DefaultNamespace)
	}
}

func TestFieldErrorsError(t *testing.T) {
	err := FieldErrors{
		{Path: "metadata.name", Msg: "is required"},
		{Path: "spec.ports[0].port", Msg: "must be between 1 and 65535"},
	}
	want := "v1alpha1: invalid resource: metadata.name: is required; spec.ports[0].port: must be between 1 and 65535"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var s *Service = validService()
	if err := s.Validate(); err != nil {
		t.Errorf("Validate() of a valid service = %v, want a nil error", err)
	}
}
