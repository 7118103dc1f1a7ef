package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxNameLen is the longest DNS-1123 label.
const maxNameLen = 63

// WorkloadID returns spiffe://<td>/ns/<ns>/sa/<sa>, the identity of the
// workloads that run as service account sa in namespace ns.
func WorkloadID(td spiffeid.TrustDomain, ns, sa string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, errors.New("identity: no trust domain")
	}
	if err := checkLabel(ns); err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: namespace: %w", err)
	}
	if err := checkLabel(sa); err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: service account: %w", err)
	}
	id, err := spiffeid.FromSegments(td, "ns", ns, "sa", sa)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %w", err)
	}
	return id, nil
}

// ParseWorkloadID returns the namespace and service account of a workload
// ID. It refuses any ID whose path is not exactly /ns/<ns>/sa/<sa> with
// valid names. It does not look at the trust domain: callers that accept
// only their own compare id.TrustDomain() themselves.
func ParseWorkloadID(id spiffeid.ID) (ns, sa string, err error) {
	if id.IsZero() {
		return "", "", errors.New("identity: empty SPIFFE ID")
	}
	parts := strings.Split(id.Path(), "/")
	// A path starts with "/", so parts[0] is "".
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" {
		return "", "", fmt.Errorf("identity: %s is not a workload ID: want the path /ns/<namespace>/sa/<service account>", id)
	}
	ns, sa = parts[2], parts[4]
	if err := checkLabel(ns); err != nil {
		return "", "", fmt.Errorf("identity: %s: namespace: %w", id, err)
	}
	if err := checkLabel(sa); err != nil {
		return "", "", fmt.Errorf("identity: %s: service account: %w", id, err)
	}
	return ns, sa, nil
}

// ValidateName checks that s is a DNS-1123 label, as Kubernetes namespace
// and service account names are: 1 to 63 lower-case letters, digits and
// '-', starting and ending with a letter or digit. The error says what is
// wrong.
func ValidateName(s string) error {
	if err := checkLabel(s); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// checkLabel is ValidateName without the package prefix, for callers that
// add their own context.
func checkLabel(s string) error {
	switch {
	case s == "":
		return errors.New("name is empty")
	case len(s) > maxNameLen:
		return fmt.Errorf("name %.20q... is %d characters long, more than %d", s, len(s), maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-':
			continue
		case 'A' <= c && c <= 'Z':
			return fmt.Errorf("name %q has upper-case %q at offset %d; use lower case", s, rune(c), i)
		case c >= 0x80:
			return fmt.Errorf("name %q has a non-ASCII character at offset %d; only a-z, 0-9 and '-' are allowed", s, i)
		default:
			return fmt.Errorf("name %q has %q at offset %d; only a-z, 0-9 and '-' are allowed", s, rune(c), i)
		}
	}
	if s[0] == '-' {
		return fmt.Errorf("name %q starts with '-'", s)
	}
	if s[len(s)-1] == '-' {
		return fmt.Errorf("name %q ends with '-'", s)
	}
	return nil
}
